//! Signing keys for access tokens: Ed25519, one current key plus older keys
//! still published (JWKS) until every token they signed has expired.
//!
//! Where the keys are kept is a [`KeyVault`]: files `keys/<kid>.json`
//! (mode 0600) in the data directory of a single node ([`DirVault`]), or
//! the database that a fleet of nodes shares (so every node signs with, and
//! verifies, the same keys).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
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
    #[error("key storage unavailable: {0}")]
    Unavailable(String),
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

/// A signing key as a vault stores it.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub created_at: UnixTime,
    /// Set when a newer key took over: the key stays published (and keeps
    /// verifying) until then, and is deleted after.
    #[serde(default)]
    pub retire_at: Option<UnixTime>,
    /// PKCS#8 DER, standard base64.
    pub private_pkcs8: String,
}

impl std::fmt::Debug for StoredKey {
    /// Never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// Durable storage of signing keys. Every change is written here first and
/// then read back, so what a node holds in memory is what the vault holds.
#[async_trait]
pub trait KeyVault: Send + Sync + 'static {
    /// Every stored key.
    async fn load(&self) -> Result<Vec<StoredKey>, KeyError>;
    /// Store the keys `first` unless some key without `retire_at` exists
    /// already (nodes starting together then agree on one set of first
    /// keys, or at worst publish two, the newer of which is current
    /// everywhere).
    async fn create_first(&self, first: &[StoredKey]) -> Result<(), KeyError>;
    /// Store `fresh` and set `retire_at` on every other key that has none.
    async fn rotate(&self, fresh: &StoredKey, retire_at: UnixTime) -> Result<(), KeyError>;
    /// Delete these keys (missing ones are fine).
    async fn delete(&self, kids: &[String]) -> Result<(), KeyError>;
}

/// Keys as files in a directory of the data directory (one node).
#[derive(Debug)]
pub struct DirVault {
    dir: PathBuf,
}

impl DirVault {
    /// Use `dir`, creating it (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        ensure_private_dir(dir).map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn write(&self, key: &StoredKey) -> Result<(), KeyError> {
        let path = self.dir.join(format!("{}.json", key.kid));
        let bytes = serde_json::to_vec_pretty(key).map_err(|e| KeyError::Invalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_private_file(&path, &bytes).map_err(io_err(&path))
    }
}

#[async_trait]
impl KeyVault for DirVault {
    async fn load(&self) -> Result<Vec<StoredKey>, KeyError> {
        let dir = &self.dir;
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            keys.push(
                serde_json::from_slice(&bytes).map_err(|e| KeyError::Invalid {
                    path: path.clone(),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(keys)
    }

    async fn create_first(&self, first: &[StoredKey]) -> Result<(), KeyError> {
        // One node owns a data directory, so checking first is enough.
        if self.load().await?.iter().any(|k| k.retire_at.is_none()) {
            return Ok(());
        }
        first.iter().try_for_each(|k| self.write(k))
    }

    async fn rotate(&self, fresh: &StoredKey, retire_at: UnixTime) -> Result<(), KeyError> {
        // The new key is written first: a crash in between leaves two
        // current keys, and the newer one wins at the next start.
        self.write(fresh)?;
        for mut k in self.load().await? {
            if k.kid != fresh.kid && k.retire_at.is_none() {
                k.retire_at = Some(retire_at);
                self.write(&k)?;
            }
        }
        Ok(())
    }

    async fn delete(&self, kids: &[String]) -> Result<(), KeyError> {
        for kid in kids {
            let path = self.dir.join(format!("{kid}.json"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(KeyError::Io { path, source: e }),
            }
        }
        Ok(())
    }
}

struct LoadedKey {
    file: StoredKey,
    /// Parsed once: parsing PKCS#8 and deriving the public key on every
    /// signature (as `jsonwebtoken::encode` does) was half of the CPU of
    /// issuing a token. aws-lc's Ed25519, which signs in about half the
    /// time of ed25519-dalek (the same signature: Ed25519 is
    /// deterministic); dalek still reads and writes the key files.
    signing: aws_lc_rs::signature::Ed25519KeyPair,
    decoding: DecodingKey,
    public_x: String,
}

#[derive(Default)]
struct KeySet {
    current: String,
    keys: HashMap<String, LoadedKey>,
    /// Changes whenever the keys that verify change (one added, pruned or
    /// replaced): a verification done with another generation's keys may
    /// no longer hold, so caches of verified tokens compare it.
    generation: u64,
}

impl KeySet {
    /// Do both sets verify with exactly the same keys?
    fn same_verifying_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().all(|(kid, k)| {
                other
                    .keys
                    .get(kid)
                    .is_some_and(|o| o.public_x == k.public_x)
            })
    }
}

/// The keys of this server. Cheap to read concurrently; every change is
/// written to the vault first and then read back, so memory and vault agree.
pub struct Keyring {
    vault: Arc<dyn KeyVault>,
    set: RwLock<Arc<KeySet>>,
    /// `set`'s generation, readable without touching the lock or the Arc
    /// (read on every token check).
    generation: AtomicU64,
    validation: Validation,
    /// When a reload for an unknown `kid` last ran: a token signed by a key
    /// another node just made triggers one, random kids cannot trigger more
    /// than one per [`UNKNOWN_KID_RELOAD_EVERY`].
    last_unknown_reload: tokio::sync::Mutex<Option<Instant>>,
    /// Held from reading the vault to installing what was read.
    reloading: tokio::sync::Mutex<()>,
}

/// At most one vault read per this interval for tokens naming unknown keys.
const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.snapshot().current)
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

fn load_key(file: StoredKey) -> Result<LoadedKey, KeyError> {
    let invalid = |detail: &str| KeyError::Invalid {
        path: PathBuf::from(&file.kid),
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
    let signing =
        aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&sk.to_bytes(), &public)
            .map_err(|_| invalid("not a usable Ed25519 key"))?;
    Ok(LoadedKey {
        signing,
        decoding: DecodingKey::from_ed_der(&public),
        public_x: URL_SAFE_NO_PAD.encode(public),
        file,
    })
}

fn new_key(now: UnixTime) -> Result<StoredKey, KeyError> {
    let sk = SigningKey::from_bytes(&random_bytes::<32>());
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| KeyError::Sign(format!("encoding a new key: {e}")))?;
    Ok(StoredKey {
        kid: format!("{}-{}", now, random_base32(5)),
        alg: "EdDSA".into(),
        created_at: now,
        retire_at: None,
        private_pkcs8: STANDARD.encode(der.as_bytes()),
    })
}

/// The loaded keys; the current key is the newest one not retiring.
fn key_set(stored: Vec<StoredKey>) -> Result<KeySet, KeyError> {
    let mut keys = HashMap::new();
    for file in stored {
        let key = load_key(file)?;
        keys.insert(key.file.kid.clone(), key);
    }
    let current = keys
        .values()
        .filter(|k| k.file.retire_at.is_none())
        .max_by_key(|k| (k.file.created_at, k.file.kid.clone()))
        .map(|k| k.file.kid.clone())
        .unwrap_or_default();
    Ok(KeySet {
        current,
        keys,
        // Set by `Keyring::reload`.
        generation: 0,
    })
}

impl Keyring {
    /// Load every key of `vault`, creating the first one if there is none.
    pub async fn open(vault: Arc<dyn KeyVault>, now: UnixTime) -> Result<Self, KeyError> {
        Self::open_seeded(vault, now, Vec::new()).await
    }

    /// Load every key of `vault`. If it holds no current key, store `seed`
    /// first (keys a node already signed with, so that its tokens stay
    /// valid), with a new key added if `seed` has no current one either.
    pub async fn open_seeded(
        vault: Arc<dyn KeyVault>,
        now: UnixTime,
        seed: Vec<StoredKey>,
    ) -> Result<Self, KeyError> {
        let ring = Self {
            vault,
            set: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            validation: Self::validation(),
            last_unknown_reload: tokio::sync::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        };
        let found = key_set(ring.vault.load().await?)?;
        if found.current.is_empty() {
            let mut first = seed;
            if key_set(first.clone())?.current.is_empty() {
                first.push(new_key(now)?);
            }
            ring.vault.create_first(&first).await?;
        }
        // Errors if there is still no current key.
        ring.reload().await?;
        Ok(ring)
    }

    /// Load the keys of the files in `dir` (one node's data directory),
    /// creating the first one if there is none.
    pub async fn load_or_create(dir: &Path, now: UnixTime) -> Result<Self, KeyError> {
        Self::open(Arc::new(DirVault::open(dir)?), now).await
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

    /// Read the vault again (another node may have rotated or pruned).
    pub async fn reload(&self) -> Result<(), KeyError> {
        // One reload at a time, so a slow one never installs a set older
        // than what a later one installed.
        let _one = self.reloading.lock().await;
        let mut set = key_set(self.vault.load().await?)?;
        if set.current.is_empty() {
            // Never drop to no signing key: keep what we have.
            return Err(KeyError::Sign("the key vault holds no current key".into()));
        }
        let mut held = self.set.write().unwrap_or_else(|p| p.into_inner());
        // Under the lock, so generations only grow. A reload that finds
        // the same keys (an unknown kid that is not ours, a catch-up after
        // a reconnection) keeps the generation and the caches keyed on it.
        set.generation = if held.same_verifying_keys(&set) {
            held.generation
        } else {
            held.generation + 1
        };
        // Published after the new set, still under the lock: a reader
        // that sees the new generation verifies with the new keys.
        let generation = set.generation;
        *held = Arc::new(set);
        self.generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// The generation of the keys that verify now; see
    /// [`Keyring::verify_with_generation`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Does `token`'s header name a key this ring does not hold?
    pub fn names_unknown_key(&self, token: &str) -> bool {
        match jsonwebtoken::decode_header(token) {
            Ok(h) => h
                .kid
                .is_some_and(|kid| !self.snapshot().keys.contains_key(&kid)),
            Err(_) => false,
        }
    }

    /// Reload because a token named an unknown key, unless a reload for
    /// that reason ran less than a second ago. True if it reloaded.
    pub async fn reload_for_unknown_key(&self) -> bool {
        let mut last = self.last_unknown_reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "reloading signing keys failed");
                false
            }
        }
    }

    /// Add a new current key. The previous ones keep verifying (and stay in
    /// the JWKS) until `retire_at`, by which time every token they signed
    /// has expired.
    pub async fn rotate(&self, now: UnixTime, retire_at: UnixTime) -> Result<String, KeyError> {
        let fresh = new_key(now)?;
        self.vault.rotate(&fresh, retire_at).await?;
        self.reload().await?;
        Ok(fresh.kid)
    }

    /// Forget (and delete) keys whose `retire_at` has passed. Returns how many.
    pub async fn prune(&self, now: UnixTime) -> Result<usize, KeyError> {
        let expired: Vec<String> = self
            .snapshot()
            .keys
            .values()
            .filter(|k| k.file.retire_at.is_some_and(|t| t <= now))
            .map(|k| k.file.kid.clone())
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.vault.delete(&expired).await?;
        self.reload().await?;
        Ok(expired.len())
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
        // RFC 7515 compact serialisation: BASE64URL(header) "."
        // BASE64URL(claims), signed (RFC 8037: Ed25519 over those bytes).
        #[derive(Serialize)]
        struct JwsHeader<'a> {
            typ: &'a str,
            alg: &'static str,
            kid: &'a str,
        }
        let header = JwsHeader {
            typ,
            alg: "EdDSA",
            kid: &set.current,
        };
        let json_error = |e: serde_json::Error| KeyError::Sign(e.to_string());
        let header = serde_json::to_vec(&header).map_err(json_error)?;
        let claims = serde_json::to_vec(claims).map_err(json_error)?;
        let mut jws = String::with_capacity((header.len() + claims.len()) * 4 / 3 + 90);
        URL_SAFE_NO_PAD.encode_string(header, &mut jws);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = key.signing.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }

    /// Check the signature of a JWT we issued and decode its claims.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, JwtError> {
        self.verify_with_generation(token).map(|(claims, _)| claims)
    }

    /// [`Keyring::verify`], also saying which generation of keys verified
    /// the token: the verification holds while [`Keyring::generation`] is
    /// still that one.
    pub fn verify_with_generation<T: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<(T, u64), JwtError> {
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
            .map(|d| (d.claims, set.generation))
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
    use jsonwebtoken::{EncodingKey, Header};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct C {
        sub: String,
    }

    #[tokio::test]
    async fn sign_verify_rotate_prune() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 100).await.unwrap();
        let first = ring.current_kid();
        let t1 = ring.sign("at+jwt", &C { sub: "a".into() }).unwrap();
        assert_eq!(ring.verify::<C>(&t1).unwrap(), C { sub: "a".into() });

        let second = ring.rotate(200, 300).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.current_kid(), second);
        // Old tokens still verify until the old key retires.
        assert!(ring.verify::<C>(&t1).is_ok());
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);

        // A restart sees the same keys and the same current one.
        let again = Keyring::load_or_create(dir.path(), 250).await.unwrap();
        assert_eq!(again.current_kid(), second);
        assert!(again.verify::<C>(&t1).is_ok());

        assert_eq!(ring.prune(300).await.unwrap(), 1);
        assert_eq!(ring.verify::<C>(&t1), Err(JwtError::UnknownKey));
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
        assert_eq!(ring.current_kid(), second);
    }

    /// Tokens are signed with aws-lc and verified through jsonwebtoken;
    /// the signature must also be the one ed25519-dalek makes from the key
    /// file (Ed25519 is deterministic) and verify with the published key.
    #[tokio::test]
    async fn signatures_match_an_independent_ed25519() {
        use ed25519_dalek::{Signer, Verifier};
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 100).await.unwrap();
        let t = ring.sign("at+jwt", &C { sub: "a".into() }).unwrap();
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let set = ring.snapshot();
        let key = &set.keys[&set.current];
        let der = STANDARD.decode(&key.file.private_pkcs8).unwrap();
        let dalek = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(
            dalek.sign(signed.as_bytes()).to_bytes().as_slice(),
            sig.as_slice()
        );
        let x = URL_SAFE_NO_PAD
            .decode(ring.jwks()["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        assert!(public.verify(signed.as_bytes(), &sig).is_ok());
    }

    #[tokio::test]
    async fn generation_changes_only_with_the_verifying_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 100).await.unwrap();
        let g0 = ring.generation();
        let t = ring.sign("at+jwt", &C { sub: "a".into() }).unwrap();
        assert_eq!(ring.verify_with_generation::<C>(&t).unwrap().1, g0);
        // Same keys: same generation.
        ring.reload().await.unwrap();
        assert_eq!(ring.generation(), g0);
        ring.rotate(200, 300).await.unwrap();
        let g1 = ring.generation();
        assert!(g1 > g0);
        assert_eq!(ring.verify_with_generation::<C>(&t).unwrap().1, g1);
        assert_eq!(ring.prune(300).await.unwrap(), 1);
        assert!(ring.generation() > g1);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 1).await.unwrap();
        let path = dir.path().join(format!("{}.json", ring.current_kid()));
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn refuses_none_and_hs256_confusion() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path(), 1).await.unwrap();
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

    /// Two rings on one vault, as two nodes of a fleet: a rotation on one
    /// is picked up by the other when a token names the new key.
    #[tokio::test]
    async fn a_second_ring_learns_a_rotation_from_an_unknown_kid() {
        let dir = tempfile::tempdir().unwrap();
        let vault: Arc<dyn KeyVault> = Arc::new(DirVault::open(dir.path()).unwrap());
        let a = Keyring::open(vault.clone(), 10).await.unwrap();
        let b = Keyring::open(vault, 10).await.unwrap();
        assert_eq!(a.current_kid(), b.current_kid());
        a.rotate(20, 1000).await.unwrap();
        let token = a.sign("at+jwt", &C { sub: "x".into() }).unwrap();
        assert_eq!(b.verify::<C>(&token), Err(JwtError::UnknownKey));
        assert!(b.names_unknown_key(&token));
        assert!(b.reload_for_unknown_key().await);
        assert!(b.verify::<C>(&token).is_ok());
        assert_eq!(b.current_kid(), a.current_kid());
        // Rate limited: a second unknown kid within the second reloads nothing.
        assert!(!b.reload_for_unknown_key().await);
    }
}
