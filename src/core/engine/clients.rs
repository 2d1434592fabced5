//! Clients: registration, secret rotation, deletion, and authentication.
//!
//! Verifying an argon2id hash costs tens of milliseconds by design, far too
//! much for every introspection call. A successful verification is cached
//! as a keyed digest of the secret, tied to the client's secret version, so
//! later calls compare 32 bytes in constant time.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::Engine;
use crate::core::clock::UnixTime;
use crate::core::error::{EngineError, EngineResult};
use crate::core::ids::ClientId;
use crate::core::model::{Actor, Client, EndReason, GrantType, TokenHash};
use crate::core::secrets::{ct_eq, hash_password, random_token, verify_password};

/// How long a cached client record is trusted before it is read again.
const CREDENTIAL_CACHE_SECS: i64 = 30;
/// How long a verified secret digest is remembered (per secret version).
const VERIFIED_DIGEST_SECS: i64 = 3600;

pub(super) struct CachedCredential {
    digest: TokenHash,
    secret_version: u32,
    client: Arc<Client>,
    fetched_at: UnixTime,
}

pub(super) struct Failures {
    window_start: UnixTime,
    count: u32,
}

/// What an administrator asks for when registering a client.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// A chosen id (e.g. an existing API key); generated when `None`.
    pub id: Option<ClientId>,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// Empty means [`GrantType::defaults`].
    pub grant_types: Vec<GrantType>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
}

fn new_secret() -> SecretString {
    SecretString::from(random_token(32))
}

fn check_redirect_uri(uri: &str) -> EngineResult<()> {
    // RFC 6749 §3.1.2: absolute, no fragment. Loopback http is allowed for
    // native apps (RFC 8252); everything else must be https or a private
    // scheme (contains a '.' per RFC 8252 §7.1) .
    let bad = |why: &str| {
        Err(EngineError::InvalidRequest(format!(
            "redirect_uri {uri:?} {why}"
        )))
    };
    if uri.len() > 2048 || uri.chars().any(|c| c.is_control() || c == ' ') {
        return bad("is not a valid URI");
    }
    if uri.contains('#') {
        return bad("must not contain a fragment");
    }
    if url::Url::parse(uri).is_err() {
        return bad("is not a valid absolute URI");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("must be absolute");
    };
    if scheme.is_empty() || rest.is_empty() {
        return bad("must be absolute");
    }
    if scheme.eq_ignore_ascii_case("http") {
        let host = rest.trim_start_matches("//");
        let loopback = ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| {
            host.starts_with(h)
                && matches!(host[h.len()..].chars().next(), None | Some(':' | '/' | '?'))
        });
        if !loopback {
            return bad("must use https (plain http is allowed only for loopback)");
        }
    }
    Ok(())
}

fn check_ttl(what: &str, ttl: Option<i64>, max: i64) -> EngineResult<()> {
    match ttl {
        Some(t) if t < 1 || t > max => Err(EngineError::InvalidRequest(format!(
            "{what} must be between 1 and {max} seconds"
        ))),
        _ => Ok(()),
    }
}

impl Engine {
    fn secret_digest(&self, secret: &str) -> TokenHash {
        self.hasher.hash("client-secret-cache", secret)
    }

    /// Register a client. The secret is returned once and stored only as an
    /// argon2id hash.
    pub async fn create_client(&self, req: NewClient) -> EngineResult<(Client, SecretString)> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(EngineError::InvalidRequest(
                "name must be 1 to 200 printable characters".into(),
            ));
        }
        for uri in &req.redirect_uris {
            check_redirect_uri(uri)?;
        }
        check_ttl(
            "access_token_ttl",
            req.access_token_ttl,
            self.settings.max_access_token_ttl,
        )?;
        check_ttl(
            "refresh_token_ttl",
            req.refresh_token_ttl,
            self.settings.session_lifetime,
        )?;
        let mut grant_types = if req.grant_types.is_empty() {
            GrantType::defaults()
        } else {
            req.grant_types
        };
        grant_types.dedup();
        if grant_types.contains(&GrantType::AuthorizationCode) && req.redirect_uris.is_empty() {
            return Err(EngineError::InvalidRequest(
                "authorization_code needs at least one redirect_uri".into(),
            ));
        }
        let secret = new_secret();
        let secret_hash = hash_blocking(secret.clone()).await?;
        let id = req.id.unwrap_or_else(ClientId::generate);
        let client = Client {
            payload_key_sealed: Some(self.new_payload_key(&id)),
            id,
            name,
            secret_hash,
            redirect_uris: req.redirect_uris,
            grant_types,
            access_token_ttl: req.access_token_ttl,
            refresh_token_ttl: req.refresh_token_ttl,
            created_at: self.now(),
            secret_version: 0,
        };
        self.store.insert_client(&client).await?;
        tracing::info!(client_id = %client.id, name = %client.name, "client created");
        Ok((client, secret))
    }

    /// Apply `change` to a client as a compare-and-swap on its
    /// `secret_version`, retrying if a concurrent update won, so two
    /// rotations can never undo each other. Every update bumps the version,
    /// which also invalidates cached verifications.
    async fn update_client_with(
        &self,
        id: &ClientId,
        change: impl Fn(&mut Client),
    ) -> EngineResult<Client> {
        for _ in 0..8 {
            let mut client = self
                .store
                .get_client(id)
                .await?
                .ok_or(EngineError::NotFound("client"))?;
            let expected = client.secret_version;
            change(&mut client);
            client.secret_version = expected.wrapping_add(1);
            if self.store.update_client(&client, expected).await? {
                self.forget_credentials(id);
                return Ok(client);
            }
        }
        Err(EngineError::Conflict("a concurrent update of this client"))
    }

    /// Drop cached verifications of `id`. The epoch bump first: an
    /// authentication that read the old record cannot re-insert it after.
    pub(super) fn forget_credentials(&self, id: &ClientId) {
        self.cred_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.creds.remove(id);
    }

    /// Drop every cached verification (after the change feed was lost,
    /// changes to clients may have been missed).
    pub(super) fn forget_all_credentials(&self) {
        self.cred_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.creds.clear();
    }

    /// Replace a client's secret; the old one stops working at once.
    pub async fn rotate_client_secret(
        &self,
        id: &ClientId,
    ) -> EngineResult<(Client, SecretString)> {
        let secret = new_secret();
        let hash = hash_blocking(secret.clone()).await?;
        let client = self
            .update_client_with(id, |c| c.secret_hash = hash.clone())
            .await?;
        tracing::info!(client_id = %id, "client secret rotated");
        Ok((client, secret))
    }

    /// Delete a client and end every one of its sessions. The record goes
    /// first, so no new session can be opened for it meanwhile (the store
    /// refuses sessions of a missing client); a retry after a failure
    /// finishes ending the sessions. Returns how many were ended.
    pub async fn delete_client(&self, id: &ClientId) -> EngineResult<usize> {
        let deleted = self.store.delete_client(id).await?;
        self.forget_credentials(id);
        let ids = self.store.sessions_of_client(id).await?;
        if !deleted && ids.is_empty() {
            return Err(EngineError::NotFound("client"));
        }
        let ended = self
            .end_sessions(&ids, EndReason::ClientDeleted, Actor::Admin)
            .await?;
        tracing::info!(client_id = %id, sessions_ended = ended, "client deleted");
        Ok(ended)
    }

    fn new_payload_key(&self, id: &ClientId) -> String {
        self.hasher.seal(
            &format!("payload-key:{id}"),
            &crate::core::secrets::random_bytes::<32>(),
        )
    }

    /// The client's 256-bit payload key (token-service dialect).
    pub fn payload_key(&self, client: &Client) -> EngineResult<SecretBox<[u8; 32]>> {
        let sealed = client
            .payload_key_sealed
            .as_deref()
            .ok_or(EngineError::InvalidRequest(
                "this client has no payload key; rotate one".into(),
            ))?;
        let bytes = self
            .hasher
            .open(&format!("payload-key:{}", client.id), sealed)
            .ok_or_else(|| {
                EngineError::Internal(format!("payload key of {} does not unseal", client.id))
            })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| EngineError::Internal("payload key has the wrong length".into()))?;
        Ok(SecretBox::new(Box::new(key)))
    }

    /// Replace a client's payload key; the old one stops working at once.
    pub async fn rotate_payload_key(&self, id: &ClientId) -> EngineResult<Client> {
        let sealed = self.new_payload_key(id);
        let client = self
            .update_client_with(id, |c| c.payload_key_sealed = Some(sealed.clone()))
            .await?;
        tracing::info!(client_id = %id, "client payload key rotated");
        Ok(client)
    }

    pub async fn list_clients(&self) -> EngineResult<Vec<Client>> {
        let mut clients = self.store.list_clients().await?;
        clients.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(clients)
    }

    pub async fn get_client(&self, id: &ClientId) -> EngineResult<Option<Client>> {
        Ok(self.store.get_client(id).await?)
    }

    /// Authenticate a client by id and secret. Unknown ids and wrong secrets
    /// give the same error; failures are throttled per client, but never
    /// ahead of a secret already known to be right (so guessing cannot lock
    /// out the real client), and at most a few argon2 checks run at once.
    pub async fn authenticate_client(&self, id: &str, secret: &str) -> EngineResult<Arc<Client>> {
        let id = ClientId::parse(id).map_err(|_| EngineError::InvalidClient)?;
        if secret.is_empty() || secret.len() > 512 {
            return Err(EngineError::InvalidClient);
        }
        let now = self.now();
        let digest = self.secret_digest(secret);
        // Another node may rotate the secret: trust the cache only while
        // this node hears of such changes (the change feed is current).
        if self.feed_state().is_current() {
            if let Some(c) = self.creds.get(&id) {
                if now - c.fetched_at < CREDENTIAL_CACHE_SECS && ct_eq(&c.digest, &digest) {
                    return Ok(c.client.clone());
                }
            }
        }
        let epoch = self.cred_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let Some(client) = self.store.get_client(&id).await? else {
            return Err(EngineError::InvalidClient);
        };
        let known_good = self.creds.get(&id).is_some_and(|c| {
            c.secret_version == client.secret_version && ct_eq(&c.digest, &digest)
        });
        if !known_good {
            let ok = self
                .verify_once(&id, &digest, secret, &client.secret_hash, now)
                .await?;
            if !ok {
                tracing::info!(client_id = %id, "client authentication failed");
                return Err(EngineError::InvalidClient);
            }
            self.failures.remove(&id);
        }
        let client = Arc::new(client);
        if self.cred_epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch {
            self.creds.insert(
                id,
                CachedCredential {
                    digest,
                    secret_version: client.secret_version,
                    client: client.clone(),
                    fetched_at: now,
                },
            );
        }
        Ok(client)
    }

    /// Verify `secret` against the stored hash, once for all concurrent
    /// callers presenting the same secret (single flight): a burst of
    /// identical requests costs one argon2 check and one attempt, while
    /// each distinct guess is counted before its check, so concurrent
    /// guesses cannot slip under the limit.
    async fn verify_once(
        &self,
        id: &ClientId,
        digest: &TokenHash,
        secret: &str,
        phc: &str,
        now: UnixTime,
    ) -> EngineResult<bool> {
        let key = (id.clone(), *digest);
        let cell = self
            .verifying
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::OnceCell::new()))
            .clone();
        let result = cell
            .get_or_try_init(|| async {
                self.reserve_attempt(id, now)?;
                let _permit = self
                    .argon2_permits
                    .acquire()
                    .await
                    .map_err(|_| EngineError::Internal("argon2 limiter closed".into()))?;
                verify_blocking(secret.to_owned(), phc.to_owned()).await
            })
            .await
            .copied();
        self.verifying.remove_if(&key, |_, c| Arc::ptr_eq(c, &cell));
        result
    }

    /// Count one more attempt for `id`, or refuse if the window is full.
    fn reserve_attempt(&self, id: &ClientId, now: UnixTime) -> EngineResult<()> {
        let window = self.settings.client_auth_window;
        let mut f = self.failures.entry(id.clone()).or_insert(Failures {
            window_start: now,
            count: 0,
        });
        if now >= f.window_start.saturating_add(window) {
            f.window_start = now;
            f.count = 0;
        }
        if f.count >= self.settings.client_auth_max_failures {
            let retry_after = (f.window_start.saturating_add(window) - now).max(1) as u64;
            return Err(EngineError::RateLimited { retry_after });
        }
        f.count += 1;
        Ok(())
    }

    pub(super) fn prune_failures(&self, now: UnixTime) {
        let window = self.settings.client_auth_window;
        self.failures.retain(|_, f| now < f.window_start + window);
        // Verified digests outlive the 30 s record cache: they are what lets
        // the real client in while someone else is being throttled.
        self.creds
            .retain(|_, c| now - c.fetched_at < VERIFIED_DIGEST_SECS);
    }
}

async fn hash_blocking(secret: SecretString) -> EngineResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&secret))
        .await
        .map_err(|e| EngineError::Internal(format!("hashing task failed: {e}")))
}

async fn verify_blocking(secret: String, phc: String) -> EngineResult<bool> {
    tokio::task::spawn_blocking(move || {
        let secret = SecretString::from(secret);
        verify_password(secret.expose_secret(), &phc)
    })
    .await
    .map_err(|e| EngineError::Internal(format!("verification task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::check_redirect_uri;

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:9000/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/cb").is_ok());
        assert!(check_redirect_uri("http://example.com/cb").is_err());
        assert!(check_redirect_uri("http://localhost.evil.com/cb").is_err());
        assert!(check_redirect_uri("https://app.example/cb#x").is_err());
        assert!(check_redirect_uri("relative/path").is_err());
    }
}
