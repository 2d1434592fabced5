//! The admin API (`/admin/...`): clients, sessions, subjects, keys, audit.
//! Every route requires the admin token as a Bearer token.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{json_body, PathParam, QueryParams};
use super::sessions::{
    parse_session_id, parse_subject, SessionEnded, SessionList, SessionView, SubjectEnded,
};
use super::AppState;
use crate::core::engine::NewClient;
use crate::core::ids::ClientId;
use crate::core::model::{Actor, Client, EndReason, GrantType, SessionFilter};
use crate::core::secrets::ct_eq;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route("/admin/clients/{client_id}", delete(delete_client))
        .route(
            "/admin/clients/{client_id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/admin/clients/{client_id}/rotate-payload-key",
            post(rotate_payload_key),
        )
        .route("/admin/sessions", get(list_sessions))
        .route("/admin/sessions/{id}", delete(revoke_session))
        .route("/admin/subjects/{subject}/sessions", delete(revoke_subject))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/revocations", get(audit))
        .route_layer(middleware::from_extractor_with_state::<AdminAuth, _>(state))
}

/// Proof that the caller presented the admin token (as a Bearer token).
/// The one admin check: the admin router requires it as a layer, and other
/// admin routes (the login API) take it as an argument.
pub struct AdminAuth;

impl FromRequestParts<Arc<AppState>> for AdminAuth {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        if is_admin(state, &parts.headers) {
            return Ok(AdminAuth);
        }
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the admin token is missing or wrong",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tessera-admin\""),
        );
        Err(r)
    }
}

fn is_admin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = v.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && ct_eq(
            &state.engine.hasher().hash("admin-token", token.trim()),
            state.admin_token_hash.expose_secret(),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    pub name: String,
    /// A chosen id (for example an existing API key); generated if absent.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Any of `client_credentials`, `refresh_token`, `authorization_code`,
    /// `session`; default: `client_credentials`, `refresh_token`, `session`.
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub refresh_token_ttl: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<&'static str>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub created_at: i64,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        Self {
            client_id: c.id.to_string(),
            name: c.name.clone(),
            redirect_uris: c.redirect_uris.clone(),
            grant_types: c.grant_types.iter().map(GrantType::as_str).collect(),
            access_token_ttl: c.access_token_ttl,
            refresh_token_ttl: c.refresh_token_ttl,
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    pub client: ClientView,
    /// Shown once; only its argon2id hash is stored.
    pub client_secret: String,
    /// The client's 256-bit payload-encryption key (token-service dialect:
    /// JWE `dir` + `A256GCM`), base64url. Shown once.
    pub payload_key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedPayloadKey {
    pub client_id: String,
    pub payload_key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientDeleted {
    pub client_id: String,
    pub deleted: bool,
    pub sessions_ended: usize,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedKey {
    pub kid: String,
}

fn parse_client_id(s: &str) -> ApiResult<ClientId> {
    ClientId::parse(s).map_err(|e| ApiError::invalid_request(e.to_string()))
}

/// Register a client; its secret is in the answer, once.
#[utoipa::path(post, path = "/admin/clients", tag = "admin", request_body = CreateClientRequest,
    responses((status = 201, body = CreatedClient), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create_client(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let req: CreateClientRequest = json_body(&headers, body, state.max_body).await?;
    let grant_types = req
        .grant_types
        .iter()
        .map(|g| {
            GrantType::parse(g)
                .ok_or_else(|| ApiError::invalid_request(format!("unknown grant type {g:?}")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let new = NewClient {
        id: req.client_id.as_deref().map(parse_client_id).transpose()?,
        name: req.name,
        redirect_uris: req.redirect_uris,
        grant_types,
        access_token_ttl: req.access_token_ttl,
        refresh_token_ttl: req.refresh_token_ttl,
    };
    let (client, secret) = state.engine.create_client(new).await?;
    let body = CreatedClient {
        client: ClientView::from(&client),
        client_secret: secret.expose_secret().to_owned(),
        payload_key: payload_key_b64(&state, &client)?,
    };
    let mut r = super::oauth::no_store(body);
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

#[utoipa::path(get, path = "/admin/clients", tag = "admin",
    responses((status = 200, body = ClientList)), security(("admin_token" = [])))]
pub async fn list_clients(State(state): State<Arc<AppState>>) -> ApiResult<Json<ClientList>> {
    let clients = state.engine.list_clients().await?;
    Ok(Json(ClientList {
        clients: clients.iter().map(ClientView::from).collect(),
    }))
}

/// Delete a client, ending every one of its sessions first.
#[utoipa::path(delete, path = "/admin/clients/{client_id}", tag = "admin", params(("client_id" = String, Path)),
    responses((status = 200, body = ClientDeleted), (status = 404, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete_client(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam,
) -> ApiResult<Json<ClientDeleted>> {
    let id = parse_client_id(&id).map_err(|_| ApiError::not_found("client"))?;
    let n = state.engine.delete_client(&id).await?;
    Ok(Json(ClientDeleted {
        client_id: id.to_string(),
        deleted: true,
        sessions_ended: n,
    }))
}

#[utoipa::path(post, path = "/admin/clients/{client_id}/rotate-secret", tag = "admin", params(("client_id" = String, Path)),
    responses((status = 200, body = RotatedSecret), (status = 404, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam,
) -> ApiResult<Response> {
    let id = parse_client_id(&id).map_err(|_| ApiError::not_found("client"))?;
    let (client, secret) = state.engine.rotate_client_secret(&id).await?;
    Ok(super::oauth::no_store(RotatedSecret {
        client_id: client.id.to_string(),
        client_secret: secret.expose_secret().to_owned(),
    }))
}

fn payload_key_b64(state: &AppState, client: &Client) -> ApiResult<String> {
    use base64::Engine as _;
    let key = state.engine.payload_key(client)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.expose_secret()))
}

/// Replace a client's payload-encryption key; the old one stops working.
#[utoipa::path(post, path = "/admin/clients/{client_id}/rotate-payload-key", tag = "admin", params(("client_id" = String, Path)),
    responses((status = 200, body = RotatedPayloadKey), (status = 404, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn rotate_payload_key(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam,
) -> ApiResult<Response> {
    let id = parse_client_id(&id).map_err(|_| ApiError::not_found("client"))?;
    let client = state.engine.rotate_payload_key(&id).await?;
    Ok(super::oauth::no_store(RotatedPayloadKey {
        client_id: client.id.to_string(),
        payload_key: payload_key_b64(&state, &client)?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AdminSessionQuery {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// Default true: ended sessions are listed with their reason.
    pub include_ended: Option<bool>,
    pub limit: Option<usize>,
}

pub async fn session_list(state: &AppState, filter: &SessionFilter) -> ApiResult<SessionList> {
    let now = state.engine.now();
    let sessions = state.engine.list_sessions(filter).await?;
    Ok(SessionList {
        sessions: sessions
            .iter()
            .map(|s| SessionView::new(s, state.engine.session_status(s, now)))
            .collect(),
    })
}

/// Sessions of a subject and/or client, ended ones with their reason.
#[utoipa::path(get, path = "/admin/sessions", tag = "admin", params(AdminSessionQuery),
    responses((status = 200, body = SessionList), (status = 400, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_sessions(
    State(state): State<Arc<AppState>>,
    QueryParams(q): QueryParams<AdminSessionQuery>,
) -> ApiResult<Json<SessionList>> {
    if q.subject.is_none() && q.client_id.is_none() {
        return Err(ApiError::invalid_request("give subject or client_id"));
    }
    let filter = SessionFilter {
        subject: q.subject.as_deref().map(parse_subject).transpose()?,
        client_id: q.client_id.as_deref().map(parse_client_id).transpose()?,
        include_ended: q.include_ended.unwrap_or(true),
        limit: q.limit.unwrap_or(1000).min(10_000),
    };
    Ok(Json(session_list(&state, &filter).await?))
}

#[utoipa::path(delete, path = "/admin/sessions/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = SessionEnded), (status = 404, body = super::error::ErrorBody)),
    security(("admin_token" = [])))]
pub async fn revoke_session(
    State(state): State<Arc<AppState>>,
    PathParam(id): PathParam,
) -> ApiResult<Json<SessionEnded>> {
    let sid = parse_session_id(&id)?;
    let ended = state
        .engine
        .end_session(&sid, EndReason::AdminRevoked, Actor::Admin, None)
        .await?;
    Ok(Json(SessionEnded {
        session_id: sid.to_string(),
        ended,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct SubjectQuery {
    pub client_id: Option<String>,
}

/// End every session of a subject (optionally only one client's).
#[utoipa::path(delete, path = "/admin/subjects/{subject}/sessions", tag = "admin",
    params(("subject" = String, Path), SubjectQuery),
    responses((status = 200, body = SubjectEnded)), security(("admin_token" = [])))]
pub async fn revoke_subject(
    State(state): State<Arc<AppState>>,
    PathParam(subject): PathParam,
    QueryParams(q): QueryParams<SubjectQuery>,
) -> ApiResult<Json<SubjectEnded>> {
    let subject = parse_subject(&subject)?;
    let client = q.client_id.as_deref().map(parse_client_id).transpose()?;
    let n = state
        .engine
        .end_subject(
            &subject,
            client.as_ref(),
            EndReason::SubjectRevoked,
            Actor::Admin,
        )
        .await?;
    Ok(Json(SubjectEnded {
        subject: subject.to_string(),
        sessions_ended: n,
    }))
}

/// Add a new current signing key; older keys stay published until their
/// tokens have expired.
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin",
    responses((status = 200, body = RotatedKey)), security(("admin_token" = [])))]
pub async fn rotate_keys(State(state): State<Arc<AppState>>) -> ApiResult<Json<RotatedKey>> {
    Ok(Json(RotatedKey {
        kid: state.engine.rotate_keys().await?,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    pub limit: Option<usize>,
}

/// The audit trail of ends, newest first.
#[utoipa::path(get, path = "/admin/revocations", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "`{\"revocations\": [...]}`")), security(("admin_token" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let rows = state
        .engine
        .store()
        .audit_log(q.limit.unwrap_or(100).min(10_000))
        .await
        .map_err(crate::core::EngineError::from)?;
    Ok(Json(serde_json::json!({ "revocations": rows })))
}
