//! The standard endpoints: token (RFC 6749), introspection (RFC 7662),
//! revocation (RFC 7009).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{client_credentials, Form};
use super::AppState;
use crate::core::engine::{IssuedTokens, TokenKind};
use crate::core::ids::Scope;
use crate::core::model::Client;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
}

/// RFC 6749 §5.1 success body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl From<IssuedTokens> for TokenResponse {
    fn from(t: IssuedTokens) -> Self {
        Self {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
            scope: t.scope.as_str().to_owned(),
        }
    }
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub fn no_store(body: impl Serialize) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Read the form and authenticate the calling client.
async fn authenticated_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Arc<Client>, Form)> {
    let form = Form::from_request(headers, body, state.max_body).await?;
    let creds = client_credentials(headers, &form)?;
    let client = state
        .engine
        .authenticate_client(&creds.client_id, &creds.client_secret)
        .await?;
    Ok((client, form))
}

async fn token(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let (client, form) = authenticated_form(&state, &headers, body).await?;
    let issued = match form.require("grant_type")? {
        "client_credentials" => {
            let scope = Scope::parse(form.get("scope").unwrap_or(""))
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()))?;
            state.engine.client_credentials(&client, scope).await?
        }
        "refresh_token" => {
            let token = form.require("refresh_token")?;
            state.engine.refresh(&client, token).await?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {:?} is not supported here", truncate(other)),
            ))
        }
    };
    Ok(no_store(TokenResponse::from(issued)))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// RFC 7662 §2.2. Only `active` when the token is not active.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_use: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

async fn introspect(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let (_caller, form) = authenticated_form(&state, &headers, body).await?;
    let token = form.require("token")?;
    let body = match state.engine.introspect(token).await? {
        None => IntrospectionResponse::default(),
        Some(d) => IntrospectionResponse {
            active: true,
            aud: Some(d.client_id.clone()),
            client_id: Some(d.client_id),
            sub: Some(d.sub),
            scope: Some(d.scope).filter(|s| !s.is_empty()),
            exp: Some(d.exp),
            iat: Some(d.iat),
            jti: d.jti,
            token_type: Some(match d.kind {
                TokenKind::Access => "Bearer",
                TokenKind::Refresh => "refresh_token",
            }),
            token_use: Some(d.kind.as_str()),
            sid: Some(d.sid.to_string()),
            iss: Some(d.iss),
        },
    };
    Ok(no_store(body))
}

/// RFC 7009: 200 whether or not the token was known; the hint only orders
/// the search.
async fn revoke(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let (client, form) = authenticated_form(&state, &headers, body).await?;
    let token = form.require("token")?;
    let hint = match form.get("token_type_hint") {
        Some("access_token") => Some(TokenKind::Access),
        Some("refresh_token") => Some(TokenKind::Refresh),
        _ => None,
    };
    state.engine.revoke_token(&client, token, hint).await?;
    Ok(no_store(serde_json::json!({})))
}
