//! Tokens: signing and checking access tokens, refresh rotation with reuse
//! detection, introspection and revocation.
//!
//! Checking an access token touches no store: signature, claims, then the
//! in-memory revocation index. Successful signature checks are cached (see
//! [`VerifiedCache`]); expiry and the index are checked on every request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sessions::OpenSession;
use super::Engine;
use crate::core::clock::UnixTime;
use crate::core::error::{EngineError, EngineResult};
use crate::core::ids::{ClientId, Scope, SessionId, Subject};
use crate::core::keys::JwtError;
use crate::core::model::{
    Actor, Client, EndReason, GrantType, RefreshRecord, RefreshState, Session,
};

/// The claims of every access token (RFC 9068 layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub jti: String,
    pub sid: SessionId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Dialect claims (e.g. the GSP `intent`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Not a claim: see [`Rendering`].
    #[serde(skip)]
    pub rendering: Rendering,
}

/// A slot where an adapter may keep its serialised answer about a token
/// (the introspection response), which is a function of the claims alone.
/// It lives with the claims in the verified-signature cache, so a token
/// checked again and again is described once. Whether the token is still
/// active is decided on every request, before the slot is read.
#[derive(Clone, Default)]
pub struct Rendering(std::sync::OnceLock<bytes::Bytes>);

impl Rendering {
    pub fn get(&self) -> Option<bytes::Bytes> {
        self.0.get().cloned()
    }

    /// Keep `rendered`, unless a rendering is already kept.
    pub fn keep(&self, rendered: bytes::Bytes) {
        let _ = self.0.set(rendered);
    }
}

impl std::fmt::Debug for Rendering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendering(kept)"
        } else {
            "Rendering(none)"
        })
    }
}

/// Derived data: never a difference between two sets of claims.
impl PartialEq for Rendering {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendering {}

/// How many verified access tokens [`VerifiedCache`] holds at most
/// (≈ 0.5 KB each).
pub const VERIFIED_CACHE_ENTRIES: usize = 100_000;

/// Access tokens whose Ed25519 signature verified, keyed by the SHA-256 of
/// the whole token (header, claims and signature: a token with any byte
/// changed is another key and is verified afresh), with the claims it
/// carries and the [`Keyring`](crate::core::keys::Keyring) generation that
/// verified it. An entry counts only while the keyring is still at that
/// generation, so adding, rotating or pruning a key invalidates every
/// entry. It holds the result of the signature check and nothing else:
/// issuer, expiry and the revocation index are judged on every request.
/// The signature check is most of the CPU of an introspection (≈ 45 µs of
/// ≈ 80 µs), and an access token is normally checked many times in its life.
pub(super) type VerifiedCache = quick_cache::sync::Cache<[u8; 32], Verified>;

/// The key of `token` in [`VerifiedCache`]: SHA-256 of all of it.
fn verified_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
pub(super) struct Verified {
    generation: u64,
    claims: Arc<AccessClaims>,
}

/// What a grant or session opening hands back.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub session_id: SessionId,
    pub access_token: String,
    pub expires_in: i64,
    pub expires_at: UnixTime,
    pub refresh_token: Option<String>,
    pub scope: Scope,
    pub session_expires_at: UnixTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::Refresh => "refresh_token",
        }
    }
}

/// Why an access token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("token is malformed or its signature does not verify")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token's session has ended")]
    Revoked,
}

/// An active token, as introspection describes it (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDescription {
    /// An access token: its verified claims, shared with the
    /// verified-signature cache.
    Access(Arc<AccessClaims>),
    Refresh(RefreshDescription),
}

/// An active refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshDescription {
    pub client_id: String,
    pub sub: String,
    pub scope: String,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub sid: SessionId,
    pub iss: String,
}

impl Engine {
    /// Runs `write` and signs the session's access token meanwhile. The
    /// token is handed out only once the write has succeeded (durably),
    /// but signing (≈ 10 µs of CPU) need not wait for the store: the
    /// embedded store's writer may sign it while the write's log append
    /// is on the disk ([`crate::store::Store::offload`]), and what it did
    /// not get to is signed here once the write is answered; with other
    /// stores the write is queued first and the signature made here while
    /// the store works on it. If the write fails, the token is dropped
    /// unseen.
    pub(super) async fn write_and_sign<T>(
        &self,
        write: impl std::future::Future<Output = crate::store::StoreResult<T>>,
        session: &Session,
        now: UnixTime,
        exp: UnixTime,
    ) -> EngineResult<(T, String)> {
        let claims = self.access_claims(session, now, exp);
        let keys = self.keys.clone();
        let (signed, token) = tokio::sync::oneshot::channel();
        let sign = crate::store::Work::new(move || {
            let _ = signed.send(keys.sign("at+jwt", &claims));
        });
        // The embedded store's writer may sign while the write waits for
        // the disk, on a core the request's workers are not using: then
        // the signature is made here only if it did not get to it.
        // Otherwise it is made here while the write is under way (`join!`
        // polls in order: the write is queued first).
        let (written, token) = if self.store.offload(&sign) {
            let written = write.await?;
            sign.run();
            (written, token.await)
        } else {
            let (written, token) = tokio::join!(write, async {
                sign.run();
                token.await
            });
            (written?, token)
        };
        let token = token.map_err(|_| EngineError::Internal("the token was not signed".into()))?;
        Ok((written, token?))
    }

    /// What a grant hands back, with `access_token` signed by
    /// [`Engine::write_and_sign`] for `session` until `access_exp`.
    pub(super) fn issued(
        &self,
        session: &Session,
        now: UnixTime,
        access_exp: UnixTime,
        access_token: String,
        refresh_token: Option<String>,
    ) -> IssuedTokens {
        metrics::counter!("tessera_tokens_issued_total", "kind" => "access_token").increment(1);
        IssuedTokens {
            session_id: session.id,
            access_token,
            expires_in: access_exp - now,
            expires_at: access_exp,
            refresh_token,
            scope: session.scope.clone(),
            session_expires_at: session.expires_at,
        }
    }

    /// The claims of `session`'s access token, valid from `now` to `exp`.
    fn access_claims(
        &self,
        session: &Session,
        now: UnixTime,
        exp: UnixTime,
    ) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        // Dialect claims first, so the claims the engine relies on always win.
        let mut claims = session.token_claims.clone();
        claims
            .entry("aud")
            .or_insert_with(|| Value::from(session.client_id.as_str()));
        claims.insert("iss".into(), Value::from(self.settings.issuer.as_str()));
        claims.insert("sub".into(), Value::from(session.subject.as_str()));
        claims.insert("client_id".into(), Value::from(session.client_id.as_str()));
        claims.insert("exp".into(), Value::from(exp));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("jti".into(), Value::from(uuid::Uuid::new_v4().to_string()));
        claims.insert("sid".into(), Value::from(session.id.to_string()));
        if !session.scope.is_empty() {
            claims.insert("scope".into(), Value::from(session.scope.as_str()));
        }
        claims
    }

    /// Verify an access token: signature, issuer, expiry, then the
    /// revocation index. No store access while the index is known to be
    /// complete; otherwise (a fleet node whose change feed is lost or
    /// catching up) the store says whether the session ended, and an
    /// unreachable store is an error (503), never a guess.
    pub async fn check_access_token(
        &self,
        token: &str,
    ) -> EngineResult<Result<Arc<AccessClaims>, TokenRejected>> {
        let claims = match self.verify_signature(token) {
            Ok(c) => c,
            // Signed by a key another node made moments ago?
            Err(TokenRejected::Invalid)
                if self.keys.names_unknown_key(token)
                    && self.keys.reload_for_unknown_key().await =>
            {
                match self.verify_signature(token) {
                    Ok(c) => c,
                    Err(r) => return Ok(Err(r)),
                }
            }
            Err(r) => return Ok(Err(r)),
        };
        if claims.exp <= self.now() {
            return Ok(Err(TokenRejected::Expired));
        }
        // Read before the index: if memory was not trusted when the check
        // began, an end the catch-up adds meanwhile must not be skipped.
        let trusted = self.feed_state().is_current();
        if self.index.is_revoked(&claims.sid) {
            return Ok(Err(TokenRejected::Revoked));
        }
        if !trusted {
            metrics::counter!("tessera_checks_from_store_total").increment(1);
            match self.store.get_session(&claims.sid).await? {
                Some(s) if s.ended.is_none() => {}
                _ => return Ok(Err(TokenRejected::Revoked)),
            }
        }
        Ok(Ok(claims))
    }

    /// Signature and issuer only, expiry and revocation NOT checked: for
    /// revocation, and for dialects that renew an expired token while its
    /// session lives (they must check the session themselves).
    pub fn verify_signature(&self, token: &str) -> Result<Arc<AccessClaims>, TokenRejected> {
        let digest = verified_key(token);
        let claims = match self.verified.get(&digest) {
            Some(hit) if hit.generation == self.keys.generation() => hit.claims.clone(),
            _ => {
                let (claims, generation) = self
                    .keys
                    .verify_with_generation::<AccessClaims>(token)
                    .map_err(|e: JwtError| {
                        tracing::debug!(reason = %e, "access token refused");
                        TokenRejected::Invalid
                    })?;
                let claims = Arc::new(claims);
                self.verified.insert(
                    digest,
                    Verified {
                        generation,
                        claims: claims.clone(),
                    },
                );
                claims
            }
        };
        if claims.iss != self.settings.issuer {
            return Err(TokenRejected::Invalid);
        }
        Ok(claims)
    }

    /// Is the verified signature of `token` in the cache, for the keys
    /// that verify now? (For tests and diagnostics.)
    pub fn signature_cached(&self, token: &str) -> bool {
        let digest = verified_key(token);
        self.verified
            .get(&digest)
            .is_some_and(|hit| hit.generation == self.keys.generation())
    }

    /// RFC 6749 §4.4: a session for the client itself, no refresh token.
    pub async fn client_credentials(
        &self,
        client: &Client,
        scope: Scope,
    ) -> EngineResult<IssuedTokens> {
        if !client.allows(GrantType::ClientCredentials) {
            return Err(EngineError::UnauthorizedClient("client_credentials"));
        }
        let subject = Subject::parse(client.id.as_str())?;
        let mut req = OpenSession::new(subject, "native");
        req.scope = scope;
        req.with_refresh = false;
        self.open_session(client, req).await
    }

    /// RFC 6749 §6 with RFC 9700 §4.14.2 rotation: each use retires the
    /// token and hands out its successor; presenting a retired token again
    /// ends the whole session, except for a retry within the grace window
    /// while the successor is still unused, which gets that same successor.
    pub async fn refresh(&self, client: &Client, token: &str) -> EngineResult<IssuedTokens> {
        if !client.allows(GrantType::RefreshToken) {
            return Err(EngineError::UnauthorizedClient("refresh_token"));
        }
        const INVALID: EngineError =
            EngineError::InvalidGrant("refresh token is invalid, expired or revoked");
        let hash = self.hasher.refresh_key(token).ok_or(INVALID)?;
        // Two rounds at most: a lost race with a concurrent rotation of the
        // same token is decided on the state the winner left.
        for _ in 0..2 {
            let now = self.now();
            let rec = self.store.get_refresh(&hash).await?.ok_or(INVALID)?;
            if rec.client_id != client.id || rec.expires_at <= now {
                return Err(INVALID);
            }
            let session = self
                .store
                .get_session(&rec.session_id)
                .await?
                .filter(|s| s.is_live(now))
                .ok_or(INVALID)?;
            let (successor, successor_hash) =
                self.hasher.refresh_successor(token).ok_or(INVALID)?;
            match rec.state {
                RefreshState::Current => {
                    let access_exp = (now + self.access_ttl(client, None)).min(session.expires_at);
                    let new = RefreshRecord {
                        hash: successor_hash,
                        session_id: session.id,
                        client_id: client.id.clone(),
                        issued_at: now,
                        expires_at: (now + self.refresh_ttl(client)).min(session.expires_at),
                        state: RefreshState::Current,
                    };
                    let rotate = self.store.rotate_refresh(&hash, &new, now, access_exp);
                    let (outcome, access_token) = self
                        .write_and_sign(rotate, &session, now, access_exp)
                        .await?;
                    match outcome {
                        crate::store::RotateOutcome::Rotated => {
                            metrics::counter!("tessera_tokens_issued_total", "kind" => "refresh_token")
                                .increment(1);
                            return Ok(self.issued(
                                &session,
                                now,
                                access_exp,
                                access_token,
                                Some(successor),
                            ));
                        }
                        crate::store::RotateOutcome::NotCurrent => continue,
                    }
                }
                RefreshState::Retired {
                    at,
                    successor: recorded,
                } => {
                    if self.within_grace(now, at) && recorded == successor_hash {
                        if let Some(tokens) = self
                            .grace_retry(client, &session, &recorded, successor, now)
                            .await?
                        {
                            return Ok(tokens);
                        }
                    }
                    tracing::warn!(
                        session_id = %session.id,
                        client_id = %client.id,
                        "retired refresh token presented again; ending the session"
                    );
                    self.end_sessions(&[session.id], EndReason::RefreshTokenReuse, Actor::Engine)
                        .await?;
                    return Err(EngineError::InvalidGrant(
                        "refresh token was already used; the session has been ended",
                    ));
                }
            }
        }
        Err(INVALID)
    }

    fn within_grace(&self, now: UnixTime, retired_at: UnixTime) -> bool {
        self.settings.refresh_grace > 0 && now - retired_at <= self.settings.refresh_grace
    }

    /// A retry of a refresh whose answer was lost: if the successor is still
    /// unused, answer with it again and a fresh access token.
    async fn grace_retry(
        &self,
        client: &Client,
        session: &Session,
        successor_hash: &[u8; 32],
        successor: String,
        now: UnixTime,
    ) -> EngineResult<Option<IssuedTokens>> {
        let still_current = self
            .store
            .get_refresh(successor_hash)
            .await?
            .is_some_and(|r| r.state == RefreshState::Current);
        if !still_current {
            return Ok(None);
        }
        let access_exp = (now + self.access_ttl(client, None)).min(session.expires_at);
        let cover = self.store.extend_access_cover(&session.id, access_exp);
        let (covered, access_token) = self.write_and_sign(cover, session, now, access_exp).await?;
        if !covered {
            return Err(EngineError::InvalidGrant(
                "refresh token is invalid, expired or revoked",
            ));
        }
        tracing::info!(session_id = %session.id, "refresh retried within the grace window");
        Ok(Some(self.issued(
            session,
            now,
            access_exp,
            access_token,
            Some(successor),
        )))
    }

    /// RFC 7662: describe an active token, or `None` if it is not active
    /// (unknown, malformed, expired, or its session ended). Any client may
    /// introspect access tokens (resource servers do); a refresh token is
    /// described only to the client it was issued to (RFC 7662 §4).
    pub async fn introspect(
        &self,
        caller: &ClientId,
        token: &str,
    ) -> EngineResult<Option<TokenDescription>> {
        if token.contains('.') {
            return Ok(self
                .check_access_token(token)
                .await?
                .ok()
                .map(TokenDescription::Access));
        }
        let Some(key) = self.hasher.refresh_key(token) else {
            return Ok(None);
        };
        let now = self.now();
        let Some(rec) = self.store.get_refresh(&key).await? else {
            return Ok(None);
        };
        if rec.state != RefreshState::Current || rec.expires_at <= now || rec.client_id != *caller {
            return Ok(None);
        }
        let Some(session) = self
            .store
            .get_session(&rec.session_id)
            .await?
            .filter(|s| s.is_live(now))
        else {
            return Ok(None);
        };
        Ok(Some(TokenDescription::Refresh(RefreshDescription {
            client_id: rec.client_id.to_string(),
            sub: session.subject.to_string(),
            scope: session.scope.as_str().to_owned(),
            exp: rec.expires_at,
            iat: rec.issued_at,
            sid: session.id,
            iss: self.settings.issuer.clone(),
        })))
    }

    /// The session a token belongs to and the client it was issued to, if
    /// the token is one of ours (expired or ended tokens included).
    async fn session_of_token(
        &self,
        token: &str,
        hint: Option<TokenKind>,
    ) -> EngineResult<Option<(SessionId, ClientId)>> {
        let order = match hint {
            Some(TokenKind::Refresh) => [TokenKind::Refresh, TokenKind::Access],
            _ => [TokenKind::Access, TokenKind::Refresh],
        };
        for kind in order {
            match kind {
                TokenKind::Access if token.contains('.') => {
                    if let Ok(c) = self.verify_signature(token) {
                        if let Ok(client) = ClientId::parse(&c.client_id) {
                            return Ok(Some((c.sid, client)));
                        }
                    }
                }
                TokenKind::Refresh => {
                    let Some(key) = self.hasher.refresh_key(token) else {
                        continue;
                    };
                    if let Some(rec) = self.store.get_refresh(&key).await? {
                        return Ok(Some((rec.session_id, rec.client_id)));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// RFC 7009: end the session of `token` if `client` owns it. Unknown
    /// tokens and other clients' tokens are silently accepted (the caller
    /// answers 200 either way).
    pub async fn revoke_token(
        &self,
        client: &Client,
        token: &str,
        hint: Option<TokenKind>,
    ) -> EngineResult<()> {
        let Some((sid, owner)) = self.session_of_token(token, hint).await? else {
            tracing::debug!(client_id = %client.id, "revocation of an unknown token");
            return Ok(());
        };
        if owner != client.id {
            tracing::info!(client_id = %client.id, "client tried to revoke another client's token; ignored");
            return Ok(());
        }
        self.end_sessions(
            &[sid],
            EndReason::TokenRevoked,
            Actor::Client(client.id.clone()),
        )
        .await?;
        Ok(())
    }
}
