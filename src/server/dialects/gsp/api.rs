//! The API session: `POST /authenticate` (API key + secret → 24 h JWT),
//! `POST /authorize` (that JWT → its successor, the old one refused at
//! once), and the check every taxpayer route makes of the JWT it carries.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::envelope::{token_reply, Denied, GspError};
use crate::core::engine::{AccessClaims, IssuedTokens, OpenSession};
use crate::core::ids::{ClientId, Subject};
use crate::core::model::{Client, GrantType};
use crate::core::{Engine, EngineError};
use crate::server::extract::Form;
use crate::server::AppState;

/// `aud` of API tokens (and of their nested refresh token).
const AUDIENCE: &str = "API";
const ACCESS_INTENT: &str = "ACCESS_TOKEN";
const REFRESH_INTENT: &str = "REFRESH_TOKEN";
/// SDKs decode `exp` to know when to call `/authorize`: exactly 24 h.
const API_TOKEN_TTL: i64 = 86_400;
/// How long `/authorize` can keep renewing after `/authenticate`.
const API_SESSION_LIFETIME: i64 = 365 * 86_400;
/// The nested refresh token's lifetime, as in the documented sample.
const REFRESH_JWT_LIFETIME: i64 = 366 * 86_400;

/// A header's value, if present, readable and not blank.
pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The token of an `authorization` header: sent raw by the SDKs, accepted
/// with a `Bearer ` prefix too.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = header(headers, "authorization")?;
    let token = match v.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        // "Bearer " with nothing after it, trimmed.
        _ if v.eq_ignore_ascii_case("bearer") => "",
        _ => v,
    };
    (!token.is_empty()).then_some(token)
}

fn require<'a>(headers: &'a HeaderMap, name: &str, why: &str) -> Result<&'a str, GspError> {
    header(headers, name)
        .ok_or_else(|| GspError::bad_request(format!("missing header {name}: {why}")))
}

/// Check the headers every taxpayer route requires and the API token they
/// carry; the caller is the token's client. No store access for the token
/// itself (the engine's revocation index answers); the client record is
/// read to act on its behalf.
pub(super) async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Arc<Client>, GspError> {
    let token = bearer(headers).ok_or_else(|| {
        GspError::bad_request(
            "missing header authorization: send the access token from POST /authenticate",
        )
    })?;
    let api_key = require(headers, "x-api-key", "send your API key")?;
    require(
        headers,
        "x-api-version",
        "send the API version, for example 3.3",
    )?;
    let claims = state
        .engine
        .check_access_token(token)
        .await?
        .map_err(|r| GspError::denied(r.into()))?;
    check_api_claims(&claims, api_key)?;
    load_client(&state.engine, &claims.client_id).await
}

/// An API token of this dialect (not a taxpayer token, not another
/// dialect's token) issued to the client named by `x-api-key`.
fn check_api_claims(claims: &AccessClaims, api_key: &str) -> Result<(), Denied> {
    let intent = claims.extra.get("intent").and_then(Value::as_str);
    if claims.aud != AUDIENCE || intent != Some(ACCESS_INTENT) {
        return Err(Denied::Invalid);
    }
    if claims.client_id != api_key {
        return Err(Denied::Insufficient);
    }
    Ok(())
}

async fn load_client(engine: &Engine, id: &str) -> Result<Arc<Client>, GspError> {
    let id = ClientId::parse(id).map_err(|_| Denied::Invalid)?;
    // A deleted client's sessions were all ended with it.
    match engine.get_client(&id).await? {
        Some(c) => Ok(Arc::new(c)),
        None => Err(Denied::Revoked.into()),
    }
}

/// `POST /authenticate`: `x-api-key` + `x-api-secret`, empty body.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, GspError> {
    // Missing credentials are bad credentials: the documented 401, which
    // SDKs report as "check your key and secret".
    let (Some(key), Some(secret)) = (
        header(&headers, "x-api-key"),
        header(&headers, "x-api-secret"),
    ) else {
        return Err(GspError::unauthorized());
    };
    let client = state.engine.authenticate_client(key, secret).await?;
    // The API session is the client acting for itself: the same permission
    // as RFC 6749's client_credentials grant.
    if !client.allows(GrantType::ClientCredentials) {
        return Err(Denied::Insufficient.into());
    }
    let issued = open_api_session(&state.engine, &client).await?;
    tracing::info!(client_id = %client.id, session_id = %issued.session_id, "GSP API session opened");
    Ok(token_reply(&issued.access_token))
}

async fn open_api_session(engine: &Engine, client: &Client) -> Result<IssuedTokens, EngineError> {
    let now = engine.now();
    let id = client.id.as_str();
    let refresh = json!({
        "aud": AUDIENCE,
        "sub": id,
        "api_key": id,
        "iss": engine.settings().issuer.as_str(),
        "iat": now,
        "exp": now + REFRESH_JWT_LIFETIME,
        "intent": REFRESH_INTENT,
    });
    let refresh_token = engine.keys().sign("JWT", &refresh)?;
    let mut token_claims = Map::new();
    token_claims.insert("aud".into(), Value::from(AUDIENCE));
    token_claims.insert("api_key".into(), Value::from(id));
    token_claims.insert("intent".into(), Value::from(ACCESS_INTENT));
    token_claims.insert("refresh_token".into(), Value::from(refresh_token));
    let mut req = OpenSession::new(Subject::parse(id)?, "gsp");
    req.with_refresh = false;
    req.lifetime = Some(API_SESSION_LIFETIME);
    req.access_ttl = Some(API_TOKEN_TTL);
    req.token_claims = token_claims;
    engine.open_session(client, req).await
}

/// The token to renew: `?request_token=` and/or the `authorization` header
/// (SDKs send both, equal).
fn presented_token<'a>(query: &'a Form, headers: &'a HeaderMap) -> Result<&'a str, GspError> {
    match (query.get("request_token"), bearer(headers)) {
        (Some(q), Some(h)) if q != h => Err(GspError::bad_request(
            "request_token and the authorization header carry different tokens; send the same access token in both",
        )),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(GspError::bad_request(
            "missing request_token: send the access token from POST /authenticate as ?request_token= and in the authorization header",
        )),
    }
}

/// `POST /authorize?request_token=<token>`: a new 24 h token for the same
/// API session lifetime; the presented one is refused from now on.
///
/// An *expired* token is accepted here while its session lives: SDKs call
/// this endpoint precisely when told "Access token has expired".
pub(super) async fn authorize(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GspError> {
    let query = Form::parse(uri.query().unwrap_or("").as_bytes())?;
    let token = presented_token(&query, &headers)?;
    let api_key = require(&headers, "x-api-key", "send your API key")?;
    let engine = &state.engine;
    // Signature and issuer only: expiry is judged by the session below.
    let claims = engine
        .verify_signature(token)
        .map_err(|_| Denied::Invalid)?;
    check_api_claims(&claims, api_key)?;
    let now = engine.now();
    let Some(session) = engine.get_session(&claims.sid).await? else {
        // Swept long after its end, or never ours.
        let why = if claims.exp <= now {
            Denied::Expired
        } else {
            Denied::Invalid
        };
        return Err(why.into());
    };
    if session.ended.is_some() {
        return Err(Denied::Revoked.into());
    }
    if now >= session.expires_at {
        return Err(Denied::Expired.into());
    }
    let client = load_client(engine, &claims.client_id).await?;
    if session.client_id != client.id {
        return Err(Denied::Insufficient.into());
    }
    match engine
        .supersede_session(&client, &session.id, Some(API_TOKEN_TTL))
        .await
    {
        Ok(issued) => {
            tracing::info!(client_id = %client.id, session_id = %issued.session_id, "GSP API token renewed");
            Ok(token_reply(&issued.access_token))
        }
        // Ended by a concurrent request between the check and the renewal.
        Err(EngineError::InvalidGrant(_)) => Err(Denied::Revoked.into()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn authorization_header_raw_or_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("abc.def.ghi"));
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        h.insert("authorization", HeaderValue::from_static("bearer  abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("  "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn request_token_and_header_must_agree() {
        let mut h = HeaderMap::new();
        let q = Form::parse(b"request_token=a.b.c").unwrap();
        assert_eq!(presented_token(&q, &h).unwrap(), "a.b.c");
        h.insert("authorization", HeaderValue::from_static("a.b.c"));
        assert_eq!(presented_token(&q, &h).unwrap(), "a.b.c");
        h.insert("authorization", HeaderValue::from_static("x.y.z"));
        assert!(presented_token(&q, &h).is_err());
        let empty = Form::parse(b"").unwrap();
        assert_eq!(presented_token(&empty, &h).unwrap(), "x.y.z");
        assert!(presented_token(&empty, &HeaderMap::new()).is_err());
    }
}
