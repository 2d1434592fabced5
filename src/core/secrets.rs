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

    /// The refresh token that succeeds `token`. Derived, not random, so that
    /// a client retrying a refresh whose answer it lost gets the same
    /// successor back (see the grace window in the engine); unguessable
    /// without the server key.
    pub fn successor(&self, token: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac(
            self.successor_key.expose_secret(),
            &[token.as_bytes()],
        ))
    }
}

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
        assert_eq!(a.successor("t"), a.successor("t"));
        assert_ne!(a.successor("t"), a.successor("u"));
        assert_eq!(a.successor("t").len(), 43);
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
