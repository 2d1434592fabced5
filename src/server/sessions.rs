//! The native session API for trusted back ends: open, list and end
//! sessions of their own users. Clients authenticate with HTTP Basic.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{basic_credentials, json_body, PathParam, QueryParams};
use super::AppState;
use crate::core::engine::OpenSession;
use crate::core::ids::{Scope, SessionId, Subject};
use crate::core::model::{Actor, Client, EndReason, GrantType, Session, SessionFilter};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/sessions", get(list).post(open))
        .route("/v1/sessions/{id}", delete(end_one))
        .route("/v1/subjects/{subject}/sessions", delete(end_subject))
}

/// A session as the session and admin APIs show it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    pub dialect: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// `active`, `expired`, or why it ended (`token_revoked`, `logout`, …).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<&'static str>,
    /// `admin`, `engine`, or `client:<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

impl SessionView {
    pub fn new(s: &Session, status: &'static str) -> Self {
        Self {
            session_id: s.id.to_string(),
            client_id: s.client_id.to_string(),
            subject: s.subject.to_string(),
            scope: s.scope.as_str().to_owned(),
            dialect: s.dialect.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            status,
            ended_at: s.ended.as_ref().map(|e| e.at),
            end_reason: s.ended.as_ref().map(|e| e.reason.as_str()),
            ended_by: s.ended.as_ref().map(|e| match &e.by {
                Actor::Admin => "admin".to_owned(),
                Actor::Engine => "engine".to_owned(),
                Actor::Client(c) => format!("client:{c}"),
            }),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionEnded {
    pub session_id: String,
    /// False when the session had already ended (ending is idempotent).
    pub ended: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubjectEnded {
    pub subject: String,
    pub sessions_ended: usize,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSessionRequest {
    /// Who the session is for.
    pub subject: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// Free-form claims kept with the session.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenSessionResponse {
    pub session_id: String,
    pub access_token: String,
    pub token_type: &'static str,
    pub refresh_token: Option<String>,
    pub expires_in: i64,
    pub expires_at: i64,
    pub session_expires_at: i64,
    pub scope: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Whose sessions to list.
    pub subject: String,
    /// Also list ended and expired sessions still within retention.
    #[serde(default)]
    pub include_ended: Option<bool>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The session API authenticates with HTTP Basic only (its bodies are JSON).
async fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<Arc<Client>> {
    let creds = basic_credentials(headers)?.ok_or_else(ApiError::invalid_client)?;
    let client = state
        .engine
        .authenticate_client(&creds.client_id, &creds.client_secret)
        .await?;
    if !client.allows(GrantType::Session) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "this client is not allowed to use the session API (grant type \"session\")",
        ));
    }
    Ok(client)
}

pub fn parse_subject(s: &str) -> ApiResult<Subject> {
    Subject::parse(s).map_err(|e| ApiError::invalid_request(e.to_string()))
}

pub fn parse_session_id(s: &str) -> ApiResult<SessionId> {
    // A malformed id cannot name any session: the same answer as unknown.
    SessionId::parse(s).map_err(|_| ApiError::not_found("session"))
}

/// Open a session and issue its first tokens.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body = OpenSessionRequest,
    responses((status = 201, body = OpenSessionResponse), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody)),
    security(("client_basic" = [])))]
pub async fn open(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let client = caller(&state, &headers).await?;
    let req: OpenSessionRequest = json_body(&headers, body, state.max_body).await?;
    let mut open = OpenSession::new(parse_subject(&req.subject)?, "native");
    open.scope = Scope::parse(req.scope.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()))?;
    open.claims = req.claims.unwrap_or_default();
    let t = state.engine.open_session(&client, open).await?;
    let body = OpenSessionResponse {
        session_id: t.session_id.to_string(),
        access_token: t.access_token,
        token_type: "Bearer",
        refresh_token: t.refresh_token,
        expires_in: t.expires_in,
        expires_at: t.expires_at,
        session_expires_at: t.session_expires_at,
        scope: t.scope.as_str().to_owned(),
    };
    let mut resp = super::oauth::no_store(body);
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

/// List the calling client's sessions of one subject (live ones by default).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(ListQuery),
    responses((status = 200, body = SessionList), (status = 401, body = super::error::ErrorBody)),
    security(("client_basic" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<SessionList>> {
    let client = caller(&state, &headers).await?;
    let filter = SessionFilter {
        subject: Some(parse_subject(&q.subject)?),
        client_id: Some(client.id.clone()),
        include_ended: q.include_ended.unwrap_or(false),
        limit: q.limit.unwrap_or(1000).min(10_000),
    };
    Ok(Json(super::admin::session_list(&state, &filter).await?))
}

/// End one of the calling client's sessions.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = SessionEnded), (status = 404, body = super::error::ErrorBody)),
    security(("client_basic" = [])))]
pub async fn end_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    PathParam(id): PathParam,
) -> ApiResult<Json<SessionEnded>> {
    let client = caller(&state, &headers).await?;
    let sid = parse_session_id(&id)?;
    let ended = state
        .engine
        .end_session(
            &sid,
            EndReason::Logout,
            Actor::Client(client.id.clone()),
            Some(&client.id),
        )
        .await?;
    Ok(Json(SessionEnded {
        session_id: sid.to_string(),
        ended,
    }))
}

/// End every session of a subject that the calling client opened.
#[utoipa::path(delete, path = "/v1/subjects/{subject}/sessions", tag = "sessions",
    params(("subject" = String, Path)),
    responses((status = 200, body = SubjectEnded)),
    security(("client_basic" = [])))]
pub async fn end_subject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    PathParam(subject): PathParam,
) -> ApiResult<impl IntoResponse> {
    let client = caller(&state, &headers).await?;
    let subject = parse_subject(&subject)?;
    let n = state
        .engine
        .end_subject(
            &subject,
            Some(&client.id),
            EndReason::SubjectRevoked,
            Actor::Client(client.id.clone()),
        )
        .await?;
    Ok(Json(SubjectEnded {
        subject: subject.to_string(),
        sessions_ended: n,
    }))
}
