//! JWE compact serialization (RFC 7516 §3.1, §5.1) restricted to what the
//! token-service dialect uses: `alg=dir`, `enc=A256GCM`, the client's 256-bit
//! payload key as the content-encryption key. Anything else is refused.
//!
//! `BASE64URL(header) . "" . BASE64URL(IV) . BASE64URL(ciphertext) . BASE64URL(tag)`,
//! AAD = ASCII(BASE64URL(header)) (RFC 7516 §5.1 step 14).

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::core::secrets::random_bytes;

/// The protected header of every JWE this module writes.
pub const HEADER: &str = r#"{"alg":"dir","enc":"A256GCM"}"#;

/// Longest compact JWE accepted or produced; callers bound bodies more
/// tightly (`max_body`), this keeps the module safe on its own.
pub const MAX_COMPACT_LEN: usize = 1 << 20;

/// Longest encoded protected header accepted: a real one is ~40 characters.
const MAX_HEADER_LEN: usize = 1024;

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a JWE was not accepted. Each variant is a client's mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    /// Not a JWE compact serialization this module can read.
    #[error("not a JWE compact serialization: {0}")]
    Malformed(&'static str),
    /// A well-formed JWE using something other than `dir` + `A256GCM`.
    #[error("unsupported JWE: {0}")]
    Unsupported(&'static str),
    #[error("JWE is longer than {MAX_COMPACT_LEN} bytes")]
    TooLarge,
    /// The authentication tag does not verify: a wrong key, or any part
    /// (header, IV, ciphertext, tag) was altered.
    #[error("JWE does not decrypt under this key")]
    Undecryptable,
}

/// Encrypt `plaintext` under `key` with a fresh random 96-bit IV.
pub fn encrypt(key: &[u8; 32], plaintext: &[u8]) -> Result<String, JweError> {
    encrypt_with_iv(key, &random_bytes::<IV_LEN>(), plaintext)
}

fn encrypt_with_iv(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<String, JweError> {
    // Base64 grows by 4/3; refuse what the reader would refuse.
    if plaintext.len() > MAX_COMPACT_LEN / 4 * 3 - 128 {
        return Err(JweError::TooLarge);
    }
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    let mut buf = plaintext.to_vec();
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(&Nonce::from(*iv), header.as_bytes(), &mut buf)
        .map_err(|_| JweError::TooLarge)?;
    Ok(format!(
        "{header}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(&buf),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// Decrypt a compact JWE under `key`, strictly: five parts, no encrypted
/// key, a header that is a JSON object with `alg` `dir` and `enc` `A256GCM`,
/// neither `zip` nor `crit`, a 96-bit IV and a 128-bit tag.
pub fn decrypt(key: &[u8; 32], compact: &str) -> Result<Vec<u8>, JweError> {
    if compact.len() > MAX_COMPACT_LEN {
        return Err(JweError::TooLarge);
    }
    let parts: Vec<&str> = compact.splitn(6, '.').collect();
    let [header_b64, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(JweError::Malformed("expected 5 parts separated by '.'"));
    };
    if header_b64.len() > MAX_HEADER_LEN {
        return Err(JweError::Malformed("the protected header is too long"));
    }
    check_header(&b64(header_b64, "the protected header is not base64url")?)?;
    if !encrypted_key.is_empty() {
        return Err(JweError::Unsupported(
            "the encrypted key must be empty (alg \"dir\")",
        ));
    }
    let iv: [u8; IV_LEN] = b64(iv, "the IV is not base64url")?
        .try_into()
        .map_err(|_| JweError::Malformed("the IV must be 96 bits"))?;
    let tag: [u8; TAG_LEN] = b64(tag, "the authentication tag is not base64url")?
        .try_into()
        .map_err(|_| JweError::Malformed("the authentication tag must be 128 bits"))?;
    let mut buf = b64(ciphertext, "the ciphertext is not base64url")?;
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(
            &Nonce::from(iv),
            header_b64.as_bytes(),
            &mut buf,
            &Tag::from(tag),
        )
        .map_err(|_| JweError::Undecryptable)?;
    Ok(buf)
}

/// Strict base64url: no padding, no stray characters, no non-canonical
/// trailing bits (the `base64` defaults).
fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JweError::Malformed(what))
}

fn check_header(bytes: &[u8]) -> Result<(), JweError> {
    let UniqueObject(h) = serde_json::from_slice(bytes).map_err(|_| {
        JweError::Malformed("the protected header is not a JSON object with unique members")
    })?;
    if h.get("alg").and_then(Value::as_str) != Some("dir") {
        return Err(JweError::Unsupported("alg must be \"dir\""));
    }
    if h.get("enc").and_then(Value::as_str) != Some("A256GCM") {
        return Err(JweError::Unsupported("enc must be \"A256GCM\""));
    }
    if h.contains_key("zip") {
        return Err(JweError::Unsupported("compression (zip) is not supported"));
    }
    if h.contains_key("crit") {
        // RFC 7515 §4.1.11: no extension is understood here, so any
        // critical one makes the JWE unacceptable.
        return Err(JweError::Unsupported(
            "no critical header extension is supported",
        ));
    }
    Ok(())
}

/// A JSON object whose member names are unique (RFC 7515 §5.2 allows a
/// reader to refuse duplicates; two `alg`s are how parser confusion starts).
pub struct UniqueObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueObject, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(A::Error::custom(format_args!("duplicate member {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = i as u8;
            i += 1;
        }
        k
    };

    fn enc(s: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// `parts` with part `i` replaced.
    fn with_part(jwe: &str, i: usize, part: &str) -> String {
        let mut p: Vec<&str> = jwe.split('.').collect();
        p[i] = part;
        p.join(".")
    }

    /// RFC 7516 Appendix A.1: the A256GCM content encryption with the
    /// appendix's CEK, IV and protected header gives its ciphertext and tag.
    #[test]
    fn rfc7516_a1_content_encryption() {
        let cek: [u8; 32] = [
            177, 161, 244, 128, 84, 143, 225, 115, 63, 180, 3, 255, 107, 154, 212, 246, 138, 7,
            110, 91, 112, 46, 34, 105, 47, 130, 203, 46, 122, 234, 64, 252,
        ];
        let iv = [227, 197, 117, 252, 2, 219, 233, 68, 180, 225, 77, 219];
        let header = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ";
        assert_eq!(enc(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#), header);
        let mut buf = b"The true sign of intelligence is not knowledge but imagination.".to_vec();
        let tag = Aes256Gcm::new((&cek).into())
            .encrypt_in_place_detached(&Nonce::from(iv), header.as_bytes(), &mut buf)
            .unwrap();
        assert_eq!(
            enc(&buf),
            "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A"
        );
        assert_eq!(enc(&tag), "XFBoMYUZodetZdvTiFvSkQ");
        // The same vector through this module's writer, header aside.
        let ours = encrypt_with_iv(&cek, &iv, b"x").unwrap();
        assert!(ours.starts_with("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..48V1_ALb6US04U3b."));
    }

    /// A JWE written by Python jwcrypto 1.6.1 (an independent JOSE
    /// implementation; note its header has spaces) decrypts.
    #[test]
    fn decrypts_a_jwcrypto_token() {
        let jwe = "eyJhbGciOiAiZGlyIiwgImVuYyI6ICJBMjU2R0NNIn0..EwB3cx2y4IR3A57A.\
                   M9pb86KkOKLIq_sVwbLS6khY94xdZmiuua4aKA.Hy5eY5MN-JaPXHAXKyVoHQ";
        assert_eq!(
            decrypt(&KEY, jwe).unwrap(),
            br#"{"tokenReferenceId":"ref-1"}"#
        );
    }

    #[test]
    fn round_trip_with_fresh_ivs() {
        let a = encrypt(&KEY, b"{\"a\":1}").unwrap();
        let b = encrypt(&KEY, b"{\"a\":1}").unwrap();
        assert_ne!(a, b, "each encryption draws a new IV");
        assert_eq!(decrypt(&KEY, &a).unwrap(), b"{\"a\":1}");
        assert_eq!(decrypt(&KEY, &encrypt(&KEY, b"").unwrap()).unwrap(), b"");
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[0], enc(HEADER.as_bytes()));
        assert_eq!(parts[1], "");
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 12);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[4]).unwrap().len(), 16);
    }

    #[test]
    fn wrong_key_is_undecryptable() {
        let jwe = encrypt(&KEY, b"{}").unwrap();
        assert_eq!(decrypt(&[7; 32], &jwe), Err(JweError::Undecryptable));
    }

    #[test]
    fn tampering_with_any_part_is_refused() {
        let jwe = encrypt(&KEY, b"{\"referenceId\":\"abc\"}").unwrap();
        let parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        for i in [0, 2, 3, 4] {
            let mut bytes = URL_SAFE_NO_PAD.decode(&parts[i]).unwrap();
            for pos in [0, bytes.len() / 2, bytes.len() - 1] {
                let saved = bytes[pos];
                bytes[pos] ^= 0x01;
                let tampered = with_part(&jwe, i, &enc(&bytes));
                assert!(decrypt(&KEY, &tampered).is_err(), "part {i} byte {pos}");
                bytes[pos] = saved;
            }
        }
        // The empty encrypted-key part cannot be flipped; filling it is refused.
        assert_eq!(
            decrypt(&KEY, &with_part(&jwe, 1, "AA")),
            Err(JweError::Unsupported(
                "the encrypted key must be empty (alg \"dir\")"
            ))
        );
        // A header altered into another valid one still fails the tag (AAD).
        let spaced = enc(br#"{"alg":"dir", "enc":"A256GCM"}"#);
        assert_eq!(
            decrypt(&KEY, &with_part(&jwe, 0, &spaced)),
            Err(JweError::Undecryptable)
        );
    }

    #[test]
    fn truncated_and_malformed_are_typed_errors() {
        let jwe = encrypt(&KEY, b"{\"x\":true}").unwrap();
        for n in 0..jwe.len() {
            assert!(decrypt(&KEY, &jwe[..n]).is_err(), "prefix of {n}");
        }
        let cases = [
            "",
            "....",
            "a.b.c.d.e.f",
            &format!("{jwe}."),
            &format!("{jwe}=="),
            &with_part(&jwe, 2, &enc(&[0; 16])),
            &with_part(&jwe, 4, &enc(&[0; 15])),
            &with_part(&jwe, 3, "!!"),
            &with_part(&jwe, 0, &"A".repeat(MAX_HEADER_LEN + 4)),
        ];
        for c in cases {
            assert!(
                matches!(decrypt(&KEY, c), Err(JweError::Malformed(_))),
                "{c:?}"
            );
        }
        assert_eq!(
            decrypt(&KEY, &"a".repeat(MAX_COMPACT_LEN + 1)),
            Err(JweError::TooLarge)
        );
    }

    #[test]
    fn header_rules() {
        let jwe = encrypt(&KEY, b"{}").unwrap();
        let refused = |h: &str| decrypt(&KEY, &with_part(&jwe, 0, &enc(h.as_bytes())));
        let unsupported = [
            r#"{"alg":"A256KW","enc":"A256GCM"}"#,
            r#"{"alg":"none","enc":"A256GCM"}"#,
            r#"{"enc":"A256GCM"}"#,
            r#"{"alg":"dir","enc":"A128GCM"}"#,
            r#"{"alg":"dir","enc":"A256CBC-HS512"}"#,
            r#"{"alg":"dir"}"#,
            r#"{"alg":"dir","enc":"A256GCM","zip":"DEF"}"#,
            r#"{"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1}"#,
            r#"{"alg":["dir"],"enc":"A256GCM"}"#,
        ];
        for h in unsupported {
            assert!(matches!(refused(h), Err(JweError::Unsupported(_))), "{h}");
        }
        for h in [
            r#"["dir","A256GCM"]"#,
            r#""dir""#,
            "not json",
            r#"{"alg":"dir","enc":"A256GCM","alg":"dir"}"#,
            r#"{"alg":"dir","enc":"A256GCM"} trailing"#,
        ] {
            assert!(matches!(refused(h), Err(JweError::Malformed(_))), "{h}");
        }
        // Unknown, non-critical members are allowed (RFC 7516 §4): the
        // tag then fails only because the header is the AAD.
        assert_eq!(
            refused(r#"{"alg":"dir","enc":"A256GCM","kid":"k1","cty":"JSON"}"#),
            Err(JweError::Undecryptable)
        );
    }

    proptest::proptest! {
        /// Any input is answered with a value or a typed error, never a panic.
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,300}") {
            let _ = decrypt(&KEY, &s);
        }

        #[test]
        fn arbitrary_five_part_input_never_panics(
            parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,48}", 5)
        ) {
            let _ = decrypt(&KEY, &parts.join("."));
        }
    }

    #[test]
    fn unique_object_refuses_duplicates() {
        let ok: Result<UniqueObject, _> = serde_json::from_str(r#"{"a":1,"b":{"a":2}}"#);
        assert!(ok.is_ok());
        let dup: Result<UniqueObject, _> = serde_json::from_str(r#"{"a":1,"a":1}"#);
        assert!(dup.is_err());
        let arr: Result<UniqueObject, _> = serde_json::from_str("[1]");
        assert!(arr.is_err());
    }
}
