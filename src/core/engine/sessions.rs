//! Opening and ending sessions. Ending any token of a session ends the
//! session, and ending it ends every token of it: the store records the end
//! durably, then the revocation index learns of it, then the caller hears.

use super::tokens::IssuedTokens;
use super::Engine;
use crate::core::clock::UnixTime;
use crate::core::error::{EngineError, EngineResult};
use crate::core::ids::{ClientId, Scope, SessionId, Subject};
use crate::core::model::{
    Actor, Client, EndReason, Ended, RefreshRecord, RefreshState, Session, SessionFilter,
};

/// What a dialect asks for when it opens a session.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub subject: Subject,
    pub scope: Scope,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `native`, `gsp`, `digilocker`, `token_service`.
    pub dialect: &'static str,
    /// Issue a refresh token (and give the session its long lifetime).
    pub with_refresh: bool,
    /// A caller-chosen reference naming the session (stored as a keyed hash).
    pub reference: Option<String>,
    /// Override of the absolute lifetime (seconds); capped by the setting.
    pub lifetime: Option<i64>,
    /// Override of the access-token lifetime (seconds); capped by the setting.
    pub access_ttl: Option<i64>,
    /// A pre-chosen session id (an authorization code records it before
    /// the session exists); generated when `None`.
    pub id: Option<SessionId>,
    /// Claims a dialect wants in every access token of the session.
    pub token_claims: serde_json::Map<String, serde_json::Value>,
}

impl OpenSession {
    pub fn new(subject: Subject, dialect: &'static str) -> Self {
        Self {
            subject,
            scope: Scope::default(),
            claims: Default::default(),
            dialect,
            with_refresh: true,
            reference: None,
            lifetime: None,
            access_ttl: None,
            id: None,
            token_claims: Default::default(),
        }
    }
}

/// Claims are kept as JSON by every store; NUL cannot be stored in
/// PostgreSQL's jsonb, and is never meaningful in a claim.
fn check_claims(claims: &serde_json::Map<String, serde_json::Value>) -> EngineResult<()> {
    let text = serde_json::to_string(claims).map_err(|e| EngineError::Internal(e.to_string()))?;
    if text.contains("\\u0000") {
        return Err(EngineError::InvalidRequest(
            "claims must not contain NUL characters".into(),
        ));
    }
    if text.len() > 16 * 1024 {
        return Err(EngineError::InvalidRequest(
            "claims must be at most 16 KiB of JSON".into(),
        ));
    }
    Ok(())
}

impl Engine {
    pub(super) fn access_ttl(&self, client: &Client, wanted: Option<i64>) -> i64 {
        wanted
            .or(client.access_token_ttl)
            .unwrap_or(self.settings.access_token_ttl)
            .clamp(1, self.settings.max_access_token_ttl)
    }

    pub(super) fn refresh_ttl(&self, client: &Client) -> i64 {
        client
            .refresh_token_ttl
            .unwrap_or(self.settings.refresh_token_ttl)
            .max(1)
    }

    pub fn reference_hash(&self, reference: &str) -> [u8; 32] {
        self.hasher.hash("reference", reference)
    }

    /// Open a session for `req.subject` and issue its first tokens.
    pub async fn open_session(
        &self,
        client: &Client,
        req: OpenSession,
    ) -> EngineResult<IssuedTokens> {
        check_claims(&req.claims)?;
        check_claims(&req.token_claims)?;
        let now = self.now();
        let access_ttl = self.access_ttl(client, req.access_ttl);
        // A dialect may fix the lifetime its wire format promises (the GSP
        // API session lives 365 days); otherwise refresh-token sessions live
        // `session_lifetime`, and the others as long as their access token.
        const MAX_LIFETIME: i64 = 10 * 366 * 86_400;
        let lifetime = match (req.lifetime, req.with_refresh) {
            (Some(l), _) => l.clamp(1, MAX_LIFETIME),
            (None, true) => self.settings.session_lifetime,
            (None, false) => access_ttl,
        };
        let expires_at = now + lifetime;
        let access_exp = (now + access_ttl).min(expires_at);
        let session = Session {
            id: req.id.unwrap_or_else(SessionId::generate),
            client_id: client.id.clone(),
            subject: req.subject,
            scope: req.scope,
            claims: req.claims,
            token_claims: req.token_claims,
            dialect: req.dialect.to_owned(),
            reference: req.reference.as_deref().map(|r| self.reference_hash(r)),
            created_at: now,
            expires_at,
            access_cover_until: access_exp,
            delete_after: expires_at + self.settings.ended_retention,
            ended: None,
        };
        let refresh = req.with_refresh.then(|| {
            let (token, hash) = self.hasher.new_refresh(&session.id);
            let record = RefreshRecord {
                hash,
                session_id: session.id,
                client_id: client.id.clone(),
                issued_at: now,
                expires_at: (now + self.refresh_ttl(client)).min(expires_at),
                state: RefreshState::Current,
            };
            (token, record)
        });
        let create = self
            .store
            .create_session(&session, refresh.as_ref().map(|(_, r)| r));
        let ((), access_token) = self
            .write_and_sign(create, &session, now, access_exp)
            .await?;
        metrics::counter!("tessera_sessions_opened_total", "dialect" => req.dialect).increment(1);
        tracing::debug!(session_id = %session.id, client_id = %client.id, dialect = req.dialect, "session opened");
        Ok(self.issued(
            &session,
            now,
            access_exp,
            access_token,
            refresh.map(|(t, _)| t),
        ))
    }

    /// The live session `client` opened with `reference`, if any.
    pub async fn session_by_reference(
        &self,
        client: &Client,
        reference: &str,
    ) -> EngineResult<Option<Session>> {
        let now = self.now();
        Ok(self
            .store
            .find_session_by_reference(&client.id, &self.reference_hash(reference))
            .await?
            .filter(|s| s.is_live(now)))
    }

    /// Open a session named by `req.reference`, first ending (as
    /// `superseded`) any live session of the client with the same reference:
    /// one live session per reference, the newest wins.
    pub async fn open_session_replacing(
        &self,
        client: &Client,
        req: OpenSession,
    ) -> EngineResult<IssuedTokens> {
        let reference = req.reference.clone().ok_or_else(|| {
            EngineError::Internal("open_session_replacing needs a reference".into())
        })?;
        // Twice at most: a concurrent opener may slip in between the end
        // and the create; the second round ends that one too.
        let hash = self.reference_hash(&reference);
        for _ in 0..2 {
            // Any holder that is not ended, expired ones included: the store
            // keeps a reference taken until its session is ended.
            if let Some(old) = self
                .store
                .find_session_by_reference(&client.id, &hash)
                .await?
            {
                self.end_sessions(
                    &[old.id],
                    EndReason::Superseded,
                    Actor::Client(client.id.clone()),
                )
                .await?;
            }
            match self.open_session(client, req.clone()).await {
                Err(EngineError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(EngineError::Conflict("reference"))
    }

    /// A live session of `client`, or `InvalidGrant`.
    pub async fn live_session_of(&self, client: &Client, id: &SessionId) -> EngineResult<Session> {
        self.store
            .get_session(id)
            .await?
            .filter(|s| s.client_id == client.id && s.is_live(self.now()))
            .ok_or(EngineError::InvalidGrant(
                "the session has ended or expired",
            ))
    }

    /// A fresh access token for a live session of `client`, without a
    /// refresh token (dialects whose "refresh" extends the token).
    pub async fn reissue_access(
        &self,
        client: &Client,
        id: &SessionId,
        access_ttl: Option<i64>,
    ) -> EngineResult<IssuedTokens> {
        let session = self.live_session_of(client, id).await?;
        let now = self.now();
        let exp = (now + self.access_ttl(client, access_ttl)).min(session.expires_at);
        // Cover first: an end that commits before this refuses the token;
        // one that commits after sees the raised cover.
        let cover = self.store.extend_access_cover(id, exp);
        let (covered, access_token) = self.write_and_sign(cover, &session, now, exp).await?;
        if !covered {
            return Err(EngineError::InvalidGrant(
                "the session has ended or expired",
            ));
        }
        Ok(self.issued(&session, now, exp, access_token, None))
    }

    /// Replace a live session by a successor with the same subject, claims
    /// and absolute end, then end the old one (`superseded`). For dialects
    /// where refreshing hands out a new token and the old one must stop
    /// working at once.
    pub async fn supersede_session(
        &self,
        client: &Client,
        id: &SessionId,
        access_ttl: Option<i64>,
    ) -> EngineResult<IssuedTokens> {
        let old = self.live_session_of(client, id).await?;
        // End first, and open the successor only if this call ended the old
        // session: a logout that wins the race is never undone by a token
        // minted after it was acknowledged.
        let ended = self
            .end_sessions(
                &[old.id],
                EndReason::Superseded,
                Actor::Client(client.id.clone()),
            )
            .await?;
        if ended == 0 {
            return Err(EngineError::InvalidGrant(
                "the session has ended or expired",
            ));
        }
        let mut next = OpenSession::new(
            old.subject.clone(),
            super::authorize::dialect_name(&old.dialect),
        );
        next.scope = old.scope.clone();
        next.claims = old.claims.clone();
        next.token_claims = old.token_claims.clone();
        next.access_ttl = access_ttl;
        self.open_session_until(client, next, old.expires_at).await
    }

    /// Open a session whose absolute end is fixed at `expires_at` and which
    /// has no refresh token.
    async fn open_session_until(
        &self,
        client: &Client,
        mut req: OpenSession,
        expires_at: UnixTime,
    ) -> EngineResult<IssuedTokens> {
        req.with_refresh = false;
        req.lifetime = Some(expires_at - self.now());
        self.open_session(client, req).await
    }

    /// End one session. With `owner`, only a session of that client may be
    /// ended (another client's session reads as not found). Returns whether
    /// this call ended it (false: it had already ended).
    pub async fn end_session(
        &self,
        id: &SessionId,
        reason: EndReason,
        by: Actor,
        owner: Option<&ClientId>,
    ) -> EngineResult<bool> {
        let session = self
            .store
            .get_session(id)
            .await?
            .ok_or(EngineError::NotFound("session"))?;
        if owner.is_some_and(|o| *o != session.client_id) {
            return Err(EngineError::NotFound("session"));
        }
        Ok(self.end_sessions(&[*id], reason, by).await? > 0)
    }

    /// End every live session of `subject` (only `client`'s, if given).
    pub async fn end_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
        reason: EndReason,
        by: Actor,
    ) -> EngineResult<usize> {
        let ids = self.store.sessions_of_subject(subject, client).await?;
        self.end_sessions(&ids, reason, by).await
    }

    /// The one place sessions end. Durable first, then in memory, then the
    /// caller is answered.
    pub(super) async fn end_sessions(
        &self,
        ids: &[SessionId],
        reason: EndReason,
        by: Actor,
    ) -> EngineResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let ended = Ended {
            at: now,
            reason,
            by,
        };
        let mut total = 0;
        // Chunked so ending a subject with many sessions never builds one
        // huge transaction.
        for chunk in ids.chunks(256) {
            let done = self
                .store
                .end_sessions(chunk, &ended, now + self.settings.ended_retention)
                .await?;
            for s in &done {
                self.index.insert(s.id, s.access_cover_until.max(now + 1));
                let (id, client, why) = (&s.id, &s.client_id, reason.as_str());
                if reason.is_routine() {
                    tracing::debug!(
                        session_id = %id,
                        client_id = %client,
                        reason = why,
                        "session ended"
                    );
                } else {
                    tracing::info!(
                        session_id = %id,
                        client_id = %client,
                        reason = why,
                        "session ended"
                    );
                }
            }
            total += done.len();
        }
        metrics::counter!("tessera_revocations_total", "reason" => reason.as_str())
            .increment(total as u64);
        Ok(total)
    }

    /// Sessions matching `filter`, newest first.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> EngineResult<Vec<Session>> {
        Ok(self.store.list_sessions(filter, self.now()).await?)
    }

    pub async fn get_session(&self, id: &SessionId) -> EngineResult<Option<Session>> {
        Ok(self.store.get_session(id).await?)
    }

    /// The status word shown for a session.
    pub fn session_status(&self, s: &Session, now: UnixTime) -> &'static str {
        match &s.ended {
            Some(e) => e.reason.as_str(),
            None if now >= s.expires_at => "expired",
            None => "active",
        }
    }
}
