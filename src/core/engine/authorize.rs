//! The authorization-code flow (RFC 6749 §4.1 with RFC 7636 PKCE, S256
//! only): a pending login waits for a login application to accept it; the
//! code it yields is single-use and short-lived, and a replayed code ends
//! the session it produced (RFC 6749 §4.1.2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sessions::OpenSession;
use super::tokens::IssuedTokens;
use super::Engine;
use crate::core::clock::UnixTime;
use crate::core::error::{EngineError, EngineResult};
use crate::core::ids::{ClientId, Scope, SessionId, Subject};
use crate::core::model::{Actor, Client, EndReason, GrantType};
use crate::core::secrets::{ct_eq, random_token};
use crate::store::GrantKind;

/// How long a user has to log in, and how long a code lives.
const LOGIN_TTL: i64 = 600;
const CODE_TTL: i64 = 60;

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Scope,
    pub dialect: &'static str,
}

/// A login waiting to be accepted, as the login application sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub client_id: ClientId,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Scope,
    pub dialect: String,
    pub expires_at: UnixTime,
}

#[derive(Serialize, Deserialize)]
struct CodeRecord {
    client_id: ClientId,
    redirect_uri: String,
    code_challenge: String,
    subject: Subject,
    claims: serde_json::Map<String, serde_json::Value>,
    scope: Scope,
    dialect: String,
    /// Set when the code is redeemed: the session it produced.
    redeemed: Option<SessionId>,
}

/// Why an authorization request cannot even be answered by redirect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectTargetError {
    #[error("unknown client_id")]
    UnknownClient,
    #[error("redirect_uri is not registered for this client")]
    BadRedirectUri,
}

/// `BASE64URL(SHA256(verifier))`, RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A code challenge must be an S256 hash: 43 base64url characters.
pub fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> EngineResult<T> {
    serde_json::from_slice(bytes).map_err(|e| EngineError::Internal(format!("{what} record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> EngineResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EngineError::Internal(e.to_string()))
}

/// `uri` with `params` appended to its query.
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> EngineResult<String> {
    let mut url = url::Url::parse(uri)
        .map_err(|_| EngineError::InvalidRequest("redirect_uri is not a URL".into()))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    Ok(url.into())
}

impl Engine {
    /// The client and the redirect URI to answer with. Only when both are
    /// good may errors go back to the client by redirect (RFC 6749 §4.1.2.1).
    /// Without a `redirect_uri`, a client with exactly one registered URI
    /// uses that one.
    pub async fn redirect_target(
        &self,
        client_id: &str,
        redirect_uri: Option<&str>,
    ) -> EngineResult<Result<(Client, String), RedirectTargetError>> {
        let Ok(id) = ClientId::parse(client_id) else {
            return Ok(Err(RedirectTargetError::UnknownClient));
        };
        let Some(client) = self.store.get_client(&id).await? else {
            return Ok(Err(RedirectTargetError::UnknownClient));
        };
        let uri = match redirect_uri {
            // Exact string comparison (RFC 9700 §4.1.3).
            Some(u) if client.redirect_uris.iter().any(|r| r == u) => u.to_owned(),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            _ => return Ok(Err(RedirectTargetError::BadRedirectUri)),
        };
        Ok(Ok((client, uri)))
    }

    /// Record a pending login; returns the login challenge to hand to the
    /// login application.
    pub async fn begin_authorization(
        &self,
        client: &Client,
        req: AuthorizationRequest,
    ) -> EngineResult<String> {
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(EngineError::UnauthorizedClient("authorization_code"));
        }
        if !valid_challenge(&req.code_challenge) {
            return Err(EngineError::InvalidRequest(
                "code_challenge must be the S256 hash of a code verifier (43 base64url characters)"
                    .into(),
            ));
        }
        let challenge = random_token(32);
        let expires_at = self.now() + LOGIN_TTL;
        let pending = PendingLogin {
            client_id: req.client_id,
            client_name: client.name.clone(),
            redirect_uri: req.redirect_uri,
            state: req.state,
            code_challenge: req.code_challenge,
            scope: req.scope,
            dialect: req.dialect.to_owned(),
            expires_at,
        };
        let key = self.hasher.hash("login-challenge", &challenge);
        self.store
            .put_grant(
                GrantKind::LoginChallenge,
                &key,
                &encode(&pending)?,
                expires_at,
            )
            .await?;
        Ok(challenge)
    }

    /// The pending login named by `challenge`, if it is still waiting.
    pub async fn pending_login(&self, challenge: &str) -> EngineResult<Option<PendingLogin>> {
        if challenge.is_empty() || challenge.len() > 128 {
            return Ok(None);
        }
        let key = self.hasher.hash("login-challenge", challenge);
        let Some(g) = self
            .store
            .get_grant(GrantKind::LoginChallenge, &key)
            .await?
        else {
            return Ok(None);
        };
        let p: PendingLogin = decode(&g.value, "login challenge")?;
        Ok((p.expires_at > self.now()).then_some(p))
    }

    /// Take the pending login out of the store, once.
    async fn take_login(&self, challenge: &str) -> EngineResult<PendingLogin> {
        const GONE: EngineError = EngineError::NotFound("login challenge");
        if challenge.is_empty() || challenge.len() > 128 {
            return Err(GONE);
        }
        let key = self.hasher.hash("login-challenge", challenge);
        let g = self
            .store
            .get_grant(GrantKind::LoginChallenge, &key)
            .await?
            .ok_or(GONE)?;
        let p: PendingLogin = decode(&g.value, "login challenge")?;
        if p.expires_at <= self.now()
            || !self
                .store
                .swap_grant(GrantKind::LoginChallenge, &key, g.version, None)
                .await?
        {
            return Err(GONE);
        }
        Ok(p)
    }

    /// The login application vouches for `subject`: issue a code and return
    /// the URL to send the browser to.
    pub async fn accept_login(
        &self,
        challenge: &str,
        subject: Subject,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> EngineResult<String> {
        let p = self.take_login(challenge).await?;
        let code = random_token(32);
        let record = CodeRecord {
            client_id: p.client_id,
            redirect_uri: p.redirect_uri.clone(),
            code_challenge: p.code_challenge,
            subject,
            claims,
            scope: p.scope,
            dialect: p.dialect,
            redeemed: None,
        };
        let key = self.hasher.hash("authorization-code", &code);
        self.store
            .put_grant(
                GrantKind::AuthorizationCode,
                &key,
                &encode(&record)?,
                self.now() + CODE_TTL,
            )
            .await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &p.state {
            params.push(("state", s));
        }
        with_query(&p.redirect_uri, &params)
    }

    /// The login application refuses: the browser goes back with
    /// `error=access_denied`.
    pub async fn reject_login(&self, challenge: &str, description: &str) -> EngineResult<String> {
        let p = self.take_login(challenge).await?;
        let mut params = vec![
            ("error", "access_denied"),
            ("error_description", description),
        ];
        if let Some(s) = &p.state {
            params.push(("state", s));
        }
        with_query(&p.redirect_uri, &params)
    }

    /// Exchange a code for tokens (RFC 6749 §4.1.3, RFC 7636 §4.6).
    pub async fn redeem_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> EngineResult<IssuedTokens> {
        const INVALID: EngineError =
            EngineError::InvalidGrant("authorization code is invalid or expired");
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(EngineError::UnauthorizedClient("authorization_code"));
        }
        if code.is_empty() || code.len() > 128 {
            return Err(INVALID);
        }
        let key = self.hasher.hash("authorization-code", code);
        let g = self
            .store
            .get_grant(GrantKind::AuthorizationCode, &key)
            .await?
            .ok_or(INVALID)?;
        let mut rec: CodeRecord = decode(&g.value, "authorization code")?;
        if g.expires_at <= self.now() || rec.client_id != client.id {
            return Err(INVALID);
        }
        if let Some(sid) = rec.redeemed {
            return Err(self.code_replayed(sid).await);
        }
        if redirect_uri.is_some_and(|u| u != rec.redirect_uri) {
            return Err(EngineError::InvalidGrant(
                "redirect_uri does not match the authorization request",
            ));
        }
        if !valid_verifier(verifier)
            || !ct_eq(s256(verifier).as_bytes(), rec.code_challenge.as_bytes())
        {
            // Burn the code: whoever holds it without the verifier gets nothing.
            self.store
                .swap_grant(GrantKind::AuthorizationCode, &key, g.version, None)
                .await?;
            return Err(EngineError::InvalidGrant(
                "PKCE verification failed (code_verifier does not match)",
            ));
        }
        // The session exists before the code is marked redeemed, so a replay
        // that sees the mark always finds a session to end.
        let sid = SessionId::generate();
        let mut open = OpenSession::new(rec.subject.clone(), dialect_name(&rec.dialect));
        open.id = Some(sid);
        open.scope = rec.scope.clone();
        open.claims = rec.claims.clone();
        let tokens = self.open_session(client, open).await?;
        rec.redeemed = Some(sid);
        let marked = self
            .store
            .swap_grant(
                GrantKind::AuthorizationCode,
                &key,
                g.version,
                Some(&encode(&rec)?),
            )
            .await;
        match marked {
            Ok(true) => Ok(tokens),
            Ok(false) => {
                // A concurrent redemption (or a burn) changed the code first:
                // neither redemption may stand.
                let mut ids = vec![sid];
                if let Some(g) = self
                    .store
                    .get_grant(GrantKind::AuthorizationCode, &key)
                    .await?
                {
                    if let Ok(CodeRecord {
                        redeemed: Some(other),
                        ..
                    }) = serde_json::from_slice(&g.value)
                    {
                        ids.push(other);
                    }
                }
                tracing::warn!(session_id = %sid, "authorization code redeemed twice at once; ending both sessions");
                self.end_sessions(&ids, EndReason::CodeReplay, Actor::Engine)
                    .await?;
                Err(EngineError::InvalidGrant(
                    "authorization code was already used; the session it produced has been ended",
                ))
            }
            Err(e) => {
                // Unknown whether the mark landed: end the session we will not hand out.
                let _ = self
                    .end_sessions(&[sid], EndReason::CodeReplay, Actor::Engine)
                    .await;
                Err(e.into())
            }
        }
    }

    async fn code_replayed(&self, sid: SessionId) -> EngineError {
        tracing::warn!(session_id = %sid, "authorization code replayed; ending the session it produced");
        match self
            .end_sessions(&[sid], EndReason::CodeReplay, Actor::Engine)
            .await
        {
            Ok(_) => EngineError::InvalidGrant(
                "authorization code was already used; the session it produced has been ended",
            ),
            Err(e) => e,
        }
    }
}

/// Dialect names are a closed set; map stored strings back to them.
pub fn dialect_name(s: &str) -> &'static str {
    match s {
        "digilocker" => "digilocker",
        "gsp" => "gsp",
        "token_service" => "token_service",
        _ => "native",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_verifier("short"));
    }

    #[test]
    fn query_is_appended() {
        let u = with_query(
            "https://app.example/cb?x=1",
            &[("code", "a b"), ("state", "s")],
        )
        .unwrap();
        assert_eq!(u, "https://app.example/cb?x=1&code=a+b&state=s");
    }
}
