//! `POST token`, `POST revoke` (the seed) and `GET user` of the DigiLocker
//! dialect. Grants and revocation are the engine's; this module only shapes
//! requests and answers the way DigiLocker clients expect: user fields at
//! the top level of the token response, `{"revoked": true}`, and revocation
//! bodies as a form or as JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::core::engine::{IssuedTokens, TokenKind};
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{client_credentials, media_type, read_body, Form};
use crate::server::oauth::{self, no_store};
use crate::server::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/public/oauth2/1/token", post(token))
        .route("/public/oauth2/1/revoke", post(revoke))
        .route("/public/oauth2/1/user", get(user))
}

/// Fields of the token response that a login claim never replaces.
const STANDARD_FIELDS: &[&str] = &[
    "access_token",
    "expires_in",
    "token_type",
    "scope",
    "refresh_token",
    "id_token",
    "error",
    "error_description",
];

async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (client, form) = oauth::authenticated_form(&state, &headers, body).await?;
    let issued = match form.require("grant_type")? {
        "authorization_code" => oauth::authorization_code(&state, &client, &form).await?,
        "refresh_token" => {
            let token = form.require("refresh_token")?;
            state.engine.refresh(&client, token).await?
        }
        other => return Err(oauth::unsupported_grant_type(other)),
    };
    let claims = state
        .engine
        .get_session(&issued.session_id)
        .await?
        .map(|s| s.claims)
        .unwrap_or_default();
    Ok(no_store(token_body(issued, claims)))
}

/// RFC 6749 §5.1 fields, then every claim the login step supplied.
fn token_body(t: IssuedTokens, claims: Map<String, Value>) -> Value {
    let mut body = Map::new();
    body.insert("access_token".into(), t.access_token.into());
    body.insert("expires_in".into(), t.expires_in.into());
    body.insert("token_type".into(), "Bearer".into());
    body.insert("scope".into(), t.scope.as_str().into());
    if let Some(r) = t.refresh_token {
        body.insert("refresh_token".into(), r.into());
    }
    for (k, v) in claims {
        if !STANDARD_FIELDS.contains(&k.as_str()) {
            body.entry(k).or_insert(v);
        }
    }
    Value::Object(body)
}

/// RFC 7009, ending the whole grant. 200 `{"revoked": true}` for unknown
/// tokens too; the hint only orders the search.
async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let form = match media_type(&headers).as_deref() {
        Some("application/json") => json_as_form(&read_body(body, state.max_body).await?)?,
        Some("application/x-www-form-urlencoded") => {
            Form::from_request(&headers, body, state.max_body).await?
        }
        _ => {
            return Err(ApiError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            ))
        }
    };
    let creds = client_credentials(&headers, &form)?;
    let client = state
        .engine
        .authenticate_client(&creds.client_id, &creds.client_secret)
        .await?;
    let token = form.require("token")?;
    let hint = match form.get("token_type_hint") {
        Some("access_token") => Some(TokenKind::Access),
        Some("refresh_token") => Some(TokenKind::Refresh),
        _ => None,
    };
    state.engine.revoke_token(&client, token, hint).await?;
    Ok(no_store(json!({ "revoked": true })))
}

/// The fields of a JSON revocation body, read as the equivalent form so
/// that form and JSON go through the same client-authentication rules.
fn json_as_form(bytes: &[u8]) -> ApiResult<Form> {
    // The seed's request carries a JSON content type and no body at all.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Form::default());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid_request("JSON body must be an object"));
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for key in ["token", "token_type_hint", "client_id", "client_secret"] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => {
                form.append_pair(key, v);
            }
            Some(_) => return Err(ApiError::invalid_request(format!("{key} must be a string"))),
        }
    }
    Form::parse(form.finish().as_bytes())
}

/// The user fields of the session an access token belongs to: `sub` and
/// the claims the login step supplied.
async fn user(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer_token(&headers) else {
        // RFC 6750 §3.1: no error code when no credentials were sent.
        return bearer_error(
            "invalid_request",
            "an access token is required: Authorization: Bearer <token>",
            "Bearer realm=\"tessera\"",
        );
    };
    let claims = match state.engine.check_access_token(token).await {
        Ok(Ok(claims)) => claims,
        Ok(Err(_)) => return invalid_token(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let session = match state.engine.get_session(&claims.sid).await {
        Ok(Some(s)) if s.is_live(state.engine.now()) => s,
        Ok(_) => return invalid_token(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut body = Map::new();
    body.insert("sub".into(), session.subject.as_str().into());
    for (k, v) in session.claims {
        body.entry(k).or_insert(v);
    }
    no_store(Value::Object(body))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The exact answer DigiLocker clients look for once a token is revoked.
fn invalid_token() -> Response {
    bearer_error(
        "invalid_token",
        "The access token is invalid",
        "Bearer error=\"invalid_token\"",
    )
}

fn bearer_error(
    error: &'static str,
    description: &'static str,
    challenge: &'static str,
) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, error, description).into_response();
    // Replaces the Basic challenge of the native error shape (RFC 6750 §3).
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{Scope, SessionId};

    #[test]
    fn claims_never_replace_standard_fields() {
        let t = IssuedTokens {
            session_id: SessionId::generate(),
            access_token: "at".into(),
            expires_in: 3600,
            expires_at: 0,
            refresh_token: None,
            scope: Scope::parse("openid").unwrap(),
            session_expires_at: 0,
        };
        let claims = json!({"name": "Asha", "token_type": "MAC", "refresh_token": "x"});
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let body = token_body(t, claims);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["name"], "Asha");
        assert!(body.get("refresh_token").is_none());
    }

    #[test]
    fn json_bodies_read_as_forms() {
        let f =
            json_as_form(br#"{"token":"a+b c","client_id":"id","token_type_hint":null}"#).unwrap();
        assert_eq!(f.get("token"), Some("a+b c"));
        assert_eq!(f.get("client_id"), Some("id"));
        assert_eq!(f.get("token_type_hint"), None);
        assert!(json_as_form(b"  ").unwrap().get("token").is_none());
        assert!(json_as_form(br#"{"token":1}"#).is_err());
        assert!(json_as_form(b"[1]").is_err());
        assert!(json_as_form(b"{").is_err());
    }
}
