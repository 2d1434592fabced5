//! Signing keys for access tokens: Ed25519, one current key plus older keys
//! still published (JWKS) until every token they signed has expired.
//!
//! Each key is a file `keys/<kid>.json` (mode 0600) in the data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::clock::UnixTime;
use super::secrets::{random_base32, random_bytes};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not a valid key: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Why a presented JWT was not accepted. Never shown in detail to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("claims do not match")]
    Claims,
}

#[derive(Clone, Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    alg: String,
    created_at: UnixTime,
    /// Set when a newer key took over: the key stays published (and keeps
    /// verifying) until then, and is deleted after.
    #[serde(default)]
    retire_at: Option<UnixTime>,
    /// PKCS#8 DER, standard base64.
    private_pkcs8: String,
}

struct LoadedKey {
    file: KeyFile,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_x: String,
}

#[derive(Default)]
struct KeySet {
    current: String,
    keys: HashMap<String, LoadedKey>,
}

/// The keys of this server. Cheap to read concurrently; every change is
/// written to disk first and then read back, so memory and files agree.
pub struct Keyring {
    dir: PathBuf,
    set: RwLock<Arc<KeySet>>,
    validation: Validation,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        // The rename is durable only once the directory entry is.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Create `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn load_key(path: &Path, file: KeyFile) -> Result<LoadedKey, KeyError> {
    let invalid = |detail: &str| KeyError::Invalid {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    if file.alg != "EdDSA" {
        return Err(invalid("only EdDSA keys are supported"));
    }
    let der = STANDARD
        .decode(&file.private_pkcs8)
        .map_err(|_| invalid("private_pkcs8 is not base64"))?;
    let sk = SigningKey::from_pkcs8_der(&der).map_err(|_| invalid("not an Ed25519 PKCS#8 key"))?;
    let public = sk.verifying_key().to_bytes();
    Ok(LoadedKey {
        encoding: EncodingKey::from_ed_der(&der),
        decoding: DecodingKey::from_ed_der(&public),
        public_x: URL_SAFE_NO_PAD.encode(public),
        file,
    })
}

fn new_key_file(now: UnixTime) -> Result<KeyFile, KeyError> {
    let sk = SigningKey::from_bytes(&random_bytes::<32>());
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| KeyError::Sign(format!("encoding a new key: {e}")))?;
    Ok(KeyFile {
        kid: format!("{}-{}", now, random_base32(5)),
        alg: "EdDSA".into(),
        created_at: now,
        retire_at: None,
        private_pkcs8: STANDARD.encode(der.as_bytes()),
    })
}

/// Every key file in `dir`; the current key is the newest one not retiring.
fn read_key_set(dir: &Path) -> Result<KeySet, KeyError> {
    let mut keys = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let key = load_key(&path, file)?;
        keys.insert(key.file.kid.clone(), key);
    }
    let current = keys
        .values()
        .filter(|k| k.file.retire_at.is_none())
        .max_by_key(|k| (k.file.created_at, k.file.kid.clone()))
        .map(|k| k.file.kid.clone())
        .unwrap_or_default();
    Ok(KeySet { current, keys })
}

impl Keyring {
    /// Load every key in `dir`, creating the first one if there is none.
    pub fn load_or_create(dir: &Path, now: UnixTime) -> Result<Self, KeyError> {
        ensure_private_dir(dir).map_err(io_err(dir))?;
        let ring = Self {
            dir: dir.to_owned(),
            set: RwLock::new(Arc::new(KeySet::default())),
            validation: Self::validation(),
        };
        ring.reload()?;
        if ring.snapshot().current.is_empty() {
            ring.write_key(&new_key_file(now)?)?;
            ring.reload()?;
        }
        Ok(ring)
    }

    fn validation() -> Validation {
        // Only EdDSA: `alg: none`, HS256 keyed with our public key, or any
        // other algorithm is refused before a key is touched. Time claims
        // are checked by the engine against its injected clock.
        let mut v = Validation::new(Algorithm::EdDSA);
        v.algorithms = vec![Algorithm::EdDSA];
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reload(&self) -> Result<(), KeyError> {
        let set = read_key_set(&self.dir)?;
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    fn write_key(&self, file: &KeyFile) -> Result<(), KeyError> {
        let path = self.dir.join(format!("{}.json", file.kid));
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| KeyError::Invalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_private_file(&path, &bytes).map_err(io_err(&path))
    }

    /// Add a new current key. The previous ones keep verifying (and stay in
    /// the JWKS) until `retire_at`, by which time every token they signed
    /// has expired.
    pub fn rotate(&self, now: UnixTime, retire_at: UnixTime) -> Result<String, KeyError> {
        let fresh = new_key_file(now)?;
        // The new key is written first: a crash in between leaves two
        // current keys, and the newer one wins at the next start.
        self.write_key(&fresh)?;
        for k in self
            .snapshot()
            .keys
            .values()
            .filter(|k| k.file.retire_at.is_none())
        {
            let mut f = k.file.clone();
            f.retire_at = Some(retire_at);
            self.write_key(&f)?;
        }
        self.reload()?;
        Ok(fresh.kid)
    }

    /// Forget (and delete) keys whose `retire_at` has passed. Returns how many.
    pub fn prune(&self, now: UnixTime) -> usize {
        let expired: Vec<String> = self
            .snapshot()
            .keys
            .values()
            .filter(|k| k.file.retire_at.is_some_and(|t| t <= now))
            .map(|k| k.file.kid.clone())
            .collect();
        for kid in &expired {
            let path = self.dir.join(format!("{kid}.json"));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(kid, error = %e, "could not delete a retired signing key file");
            }
        }
        if !expired.is_empty() {
            if let Err(e) = self.reload() {
                tracing::warn!(error = %e, "reloading keys after pruning failed");
            }
        }
        expired.len()
    }

    pub fn current_kid(&self) -> String {
        self.snapshot().current.clone()
    }

    /// The public keys as a JWK Set (RFC 7517).
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.snapshot();
        let mut keys: Vec<&LoadedKey> = set.keys.values().collect();
        // Current key first, then newest first; ties broken by kid so the
        // order is stable.
        keys.sort_by_key(|k| {
            (
                k.file.kid != set.current,
                std::cmp::Reverse(k.file.created_at),
                k.file.kid.clone(),
            )
        });
        serde_json::json!({
            "keys": keys.iter().map(|k| serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": k.file.kid,
                "x": k.public_x,
            })).collect::<Vec<_>>()
        })
    }

    /// Sign `claims` with the current key; `typ` goes into the header.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let set = self.snapshot();
        let key = set
            .keys
            .get(&set.current)
            .ok_or_else(|| KeyError::Sign("no current signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(set.current.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }

    /// Check the signature of a JWT we issued and decode its claims.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, JwtError> {
        // Cheap structural checks first, so garbage never reaches a parser
        // that might allocate for it.
        if token.len() > 8192 || token.split('.').count() != 3 {
            return Err(JwtError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(JwtError::Algorithm);
        }
        let kid = header.kid.ok_or(JwtError::UnknownKey)?;
        let set = self.snapshot();
        let key = set.keys.get(&kid).ok_or(JwtError::UnknownKey)?;
        jsonwebtoken::decode::<T>(token, &key.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
                jsonwebtoken::errors::ErrorKind::Json(_) => JwtError::Claims,
                _ => JwtError::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct C {
        sub: String,
    }

    #[test]
    fn sign_verify_rotate_prune() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 100).unwrap();
        let first = ring.current_kid();
        let t1 = ring.sign("at+jwt", &C { sub: "a".into() }).unwrap();
        assert_eq!(ring.verify::<C>(&t1).unwrap(), C { sub: "a".into() });

        let second = ring.rotate(200, 300).unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.current_kid(), second);
        // Old tokens still verify until the old key retires.
        assert!(ring.verify::<C>(&t1).is_ok());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);

        // A restart sees the same keys and the same current one.
        let again = Keyring::load_or_create(dir.path(), 250).unwrap();
        assert_eq!(again.current_kid(), second);
        assert!(again.verify::<C>(&t1).is_ok());

        assert_eq!(ring.prune(300), 1);
        assert_eq!(ring.verify::<C>(&t1), Err(JwtError::UnknownKey));
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
        assert_eq!(ring.current_kid(), second);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 1).unwrap();
        let path = dir.path().join(format!("{}.json", ring.current_kid()));
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_none_and_hs256_confusion() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 1).unwrap();
        let good = ring.sign("at+jwt", &C { sub: "a".into() }).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let kid = ring.current_kid();

        let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
        assert!(ring
            .verify::<C>(&format!("{none_header}.{}.", parts[1]))
            .is_err());

        // HS256 with the public key bytes as the HMAC secret.
        let x = ring.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid);
        let forged = jsonwebtoken::encode(
            &h,
            &C { sub: "a".into() },
            &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&x).unwrap()),
        )
        .unwrap();
        assert_eq!(ring.verify::<C>(&forged), Err(JwtError::Algorithm));
        let forged2 = jsonwebtoken::encode(
            &h,
            &C { sub: "a".into() },
            &EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert_eq!(ring.verify::<C>(&forged2), Err(JwtError::Algorithm));

        assert_eq!(ring.verify::<C>("garbage"), Err(JwtError::Malformed));
        assert!(ring.verify::<C>(&good[..good.len() - 5]).is_err());
    }
}
