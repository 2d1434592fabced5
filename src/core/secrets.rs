//! Randomness, keyed hashing and password hashing. Every comparison of a
//! secret is constant-time; every secret type redacts itself in `Debug`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ids::SessionId;
use super::model::TokenHash;

type HmacSha256 = Hmac<Sha256>;

/// Fill `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // getrandom only fails if the OS has no entropy source at all; there is
    // no safe way to go on issuing tokens then.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill_random(&mut b);
    b
}

/// `n` random bytes as unpadded base64url.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// `n` random bytes as lowercase RFC 4648 base32 without padding.
pub fn random_base32(n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    let mut out = String::with_capacity(n * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in b {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The server's keyed hash for tokens and reference ids. Its key lives in
/// the data directory; without it a stolen store file reveals nothing that
/// can be presented as a token.
pub struct TokenHasher {
    key: SecretBox<[u8; 32]>,
    successor_key: SecretBox<[u8; 32]>,
    /// Wraps secrets that must be read back (per-client payload keys), so
    /// that the store alone (a backup, a dump) does not reveal them.
    seal_key: SecretBox<[u8; 32]>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher([redacted])")
    }
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl TokenHasher {
    pub fn new(key: [u8; 32]) -> Self {
        let successor_key = hmac(&key, &[b"tessera/refresh-successor/v1"]);
        let seal_key = hmac(&key, &[b"tessera/seal/v1"]);
        Self {
            key: SecretBox::new(Box::new(key)),
            successor_key: SecretBox::new(Box::new(successor_key)),
            seal_key: SecretBox::new(Box::new(seal_key)),
        }
    }

    /// AES-256-GCM under the server's sealing key: base64url(nonce ‖ ciphertext).
    /// `label` is bound as associated data, so a sealed value cannot be
    /// moved to another record.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> String {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        use aes_gcm::{Aes256Gcm, Nonce};
        let cipher = Aes256Gcm::new(self.seal_key.expose_secret().into());
        let nonce = random_bytes::<12>();
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: label.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The inverse of [`seal`](Self::seal); `None` if tampered or not ours.
    pub fn open(&self, label: &str, sealed: &str) -> Option<Vec<u8>> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        use aes_gcm::{Aes256Gcm, Nonce};
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        Aes256Gcm::new(self.seal_key.expose_secret().into())
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: label.as_bytes(),
                },
            )
            .ok()
    }

    /// The stored form of a token: HMAC-SHA-256 under the server key, with
    /// a domain label so a hash of one kind never matches another kind.
    pub fn hash(&self, domain: &str, token: &str) -> TokenHash {
        hmac(
            self.key.expose_secret(),
            &[domain.as_bytes(), b"\0", token.as_bytes()],
        )
    }

    /// A new refresh token of `session` and its key in the store.
    ///
    /// A refresh token is base64url(session id ‖ 32 random bytes), 64
    /// characters, and its key is the session id followed by the first 16
    /// bytes of its keyed hash. Session ids are time-ordered, so a
    /// session's tokens are stored side by side, in the order sessions were
    /// opened: the lookups and writes of a refresh or a revocation land on
    /// the recent pages that are in memory, not on a random page of the
    /// whole table. The id is no secret (access tokens carry it as `sid`);
    /// the hash covers it, so a token whose id was changed has no key that
    /// any record holds. Tokens of the earlier form (32 random bytes, 43
    /// characters, keyed by their full hash) are still read; see
    /// [`Self::refresh_key`].
    pub fn new_refresh(&self, session: &SessionId) -> (String, TokenHash) {
        self.refresh_of(session, &random_bytes::<32>())
    }

    fn refresh_of(&self, session: &SessionId, secret: &[u8; 32]) -> (String, TokenHash) {
        let mut raw = [0u8; REFRESH_RAW_LEN];
        raw[..16].copy_from_slice(session.as_bytes());
        raw[16..].copy_from_slice(secret);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let key = self.session_refresh_key(session.as_bytes(), &token);
        (token, key)
    }

    fn session_refresh_key(&self, session: &[u8; 16], token: &str) -> TokenHash {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(session);
        key[16..].copy_from_slice(&self.hash("refresh", token)[..16]);
        key
    }

    /// The store key of a refresh token, or `None` if `token` has the shape
    /// of neither form (it then names no record). A key does not say the
    /// token is valid: only a record stored under it does.
    pub fn refresh_key(&self, token: &str) -> Option<TokenHash> {
        Some(match refresh_form(token)? {
            RefreshForm::OfSession(session) => self.session_refresh_key(&session, token),
            RefreshForm::Legacy => self.hash("refresh", token),
        })
    }

    /// The refresh token that succeeds `token` (of the same form) and its
    /// key; `None` if `token` has neither form. Derived, not random, so
    /// that a client retrying a refresh whose answer it lost gets the same
    /// successor back (see the grace window in the engine); unguessable
    /// without the server key.
    pub fn refresh_successor(&self, token: &str) -> Option<(String, TokenHash)> {
        let form = refresh_form(token)?;
        let next = hmac(self.successor_key.expose_secret(), &[token.as_bytes()]);
        Some(match form {
            RefreshForm::OfSession(session) => {
                self.refresh_of(&SessionId::from_bytes(session), &next)
            }
            RefreshForm::Legacy => {
                let successor = URL_SAFE_NO_PAD.encode(next);
                let key = self.hash("refresh", &successor);
                (successor, key)
            }
        })
    }
}

/// The two forms of refresh token, told apart by their length.
enum RefreshForm {
    /// base64url(session id ‖ 32 random bytes): the session id.
    OfSession([u8; 16]),
    /// 32 random bytes, from builds before tokens named their session.
    Legacy,
}

fn refresh_form(token: &str) -> Option<RefreshForm> {
    match token.len() {
        REFRESH_TOKEN_LEN => {
            let mut raw = [0u8; REFRESH_RAW_LEN];
            let n = URL_SAFE_NO_PAD.decode_slice(token, &mut raw).ok()?;
            let session = raw[..16].try_into().ok()?;
            (n == REFRESH_RAW_LEN).then_some(RefreshForm::OfSession(session))
        }
        LEGACY_REFRESH_TOKEN_LEN
            if token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(RefreshForm::Legacy)
        }
        _ => None,
    }
}

/// Bytes of a refresh token: the session id and 32 random bytes.
const REFRESH_RAW_LEN: usize = 48;
/// Characters of a refresh token (unpadded base64url of 48 bytes).
pub const REFRESH_TOKEN_LEN: usize = 64;
/// Characters of a refresh token of the earlier form (32 random bytes).
pub const LEGACY_REFRESH_TOKEN_LEN: usize = 43;

/// argon2id with the crate's default (OWASP-recommended) parameters.
pub fn hash_password(secret: &SecretString) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(secret.expose_secret().as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail on a valid salt")
        .to_string()
}

/// Constant-time check of `secret` against a PHC string. A malformed stored
/// hash verifies nothing.
pub fn verify_password(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip() {
        let s = SecretString::from("correct horse");
        let h = hash_password(&s);
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn hashes_are_domain_separated_and_keyed() {
        let a = TokenHasher::new([1; 32]);
        let b = TokenHasher::new([2; 32]);
        assert_ne!(a.hash("refresh", "t"), a.hash("reference", "t"));
        assert_ne!(a.hash("refresh", "t"), b.hash("refresh", "t"));
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let a = TokenHasher::new([1; 32]);
        let sid = SessionId::generate();
        let (token, key) = a.new_refresh(&sid);
        assert_eq!(token.len(), REFRESH_TOKEN_LEN);
        assert_eq!(
            &key[..16],
            sid.as_bytes(),
            "the key starts with the session id"
        );
        assert_eq!(a.refresh_key(&token), Some(key));
        assert_ne!(a.new_refresh(&sid).1, key, "each token is random");
        // Another server key, or any change to the token, gives another key.
        assert_ne!(TokenHasher::new([2; 32]).refresh_key(&token), Some(key));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[0] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(&raw);
        assert_ne!(a.refresh_key(&moved).unwrap()[16..], key[16..]);
        // The successor is derived (a retry gets it again), of the same
        // session, and different for each token.
        let (next, next_key) = a.refresh_successor(&token).unwrap();
        assert_eq!(a.refresh_successor(&token), Some((next.clone(), next_key)));
        assert_eq!(a.refresh_key(&next), Some(next_key));
        assert_eq!(&next_key[..16], sid.as_bytes());
        assert_ne!(next, token);
        assert_ne!(a.refresh_successor(&next).unwrap().0, next);
    }

    #[test]
    fn refresh_tokens_of_the_earlier_form_are_still_read() {
        let a = TokenHasher::new([1; 32]);
        let old = random_token(32);
        assert_eq!(a.refresh_key(&old), Some(a.hash("refresh", &old)));
        let (next, key) = a.refresh_successor(&old).unwrap();
        assert_eq!(
            next.len(),
            LEGACY_REFRESH_TOKEN_LEN,
            "the chain keeps its form"
        );
        assert_eq!(a.refresh_key(&next), Some(key));
    }

    #[test]
    fn malformed_refresh_tokens_have_no_key() {
        let a = TokenHasher::new([1; 32]);
        for bad in [
            String::new(),
            "x".repeat(42),
            "x".repeat(44),
            "x".repeat(63),
            "x".repeat(65),
            format!("{}!", "A".repeat(42)),
            format!("{}=", "A".repeat(63)),
            "é".repeat(32),
        ] {
            assert_eq!(a.refresh_key(&bad), None, "{bad:?}");
            assert_eq!(a.refresh_successor(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn seal_roundtrip_and_binding() {
        let a = TokenHasher::new([1; 32]);
        let sealed = a.seal("client:x", b"payload");
        assert_eq!(a.open("client:x", &sealed).unwrap(), b"payload");
        assert!(a.open("client:y", &sealed).is_none());
        assert!(TokenHasher::new([2; 32])
            .open("client:x", &sealed)
            .is_none());
        assert!(a.open("client:x", "garbage").is_none());
    }

    #[test]
    fn base32_length() {
        assert_eq!(random_base32(16).len(), 26);
        assert_eq!(random_token(32).len(), 43);
    }
}
