//! The login application API: a login application (the built-in page, or
//! an operator's own) reads a pending login, then accepts it for a subject
//! with the user fields to hand to the client, or rejects it. Each answer
//! names the URL to send the browser to. Admin token required.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::ids::Subject;
use crate::server::error::{ApiError, ApiResult};
use crate::server::extract::{json_body, read_body, PathParam};
use crate::server::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/login/{challenge}", get(show))
        .route("/admin/login/{challenge}/accept", put(accept))
        .route("/admin/login/{challenge}/reject", put(reject))
}

use crate::server::admin::AdminAuth as Admin;

/// A pending login as the login application sees it.
#[derive(Serialize)]
struct PendingView {
    client_id: String,
    client_name: String,
    redirect_uri: String,
    scope: String,
    dialect: String,
    expires_at: i64,
}

fn gone() -> ApiError {
    ApiError::not_found("login challenge")
}

async fn show(
    _: Admin,
    State(state): State<Arc<AppState>>,
    PathParam(challenge): PathParam,
) -> ApiResult<Json<PendingView>> {
    let p = state
        .engine
        .pending_login(&challenge)
        .await?
        .ok_or_else(gone)?;
    Ok(Json(PendingView {
        client_id: p.client_id.to_string(),
        client_name: p.client_name,
        redirect_uri: p.redirect_uri,
        scope: p.scope.as_str().to_owned(),
        dialect: p.dialect,
        expires_at: p.expires_at,
    }))
}

/// Unknown fields are ignored, so a login application written for another
/// server's accept call (`remember`, `acr`, …) works unchanged.
#[derive(Deserialize)]
struct AcceptBody {
    subject: String,
    /// User fields handed to the client (e.g. `digilockerid`, `name`).
    #[serde(default)]
    claims: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct RedirectTo {
    redirect_to: String,
}

async fn accept(
    _: Admin,
    State(state): State<Arc<AppState>>,
    PathParam(challenge): PathParam,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<RedirectTo>> {
    let body: AcceptBody = json_body(&headers, body, state.max_body).await?;
    let subject =
        Subject::parse(&body.subject).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let redirect_to = state
        .engine
        .accept_login(&challenge, subject, body.claims.unwrap_or_default())
        .await?;
    Ok(Json(RedirectTo { redirect_to }))
}

#[derive(Deserialize, Default)]
struct RejectBody {
    #[serde(default)]
    error_description: Option<String>,
}

const REJECTED: &str = "The user denied the request";

async fn reject(
    _: Admin,
    State(state): State<Arc<AppState>>,
    PathParam(challenge): PathParam,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<RedirectTo>> {
    // The body is optional; an empty one takes the default description.
    let body: RejectBody = if headers.contains_key(header::CONTENT_TYPE) {
        json_body(&headers, body, state.max_body).await?
    } else {
        let bytes = read_body(body, state.max_body).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid_request(
                "a reject body must be JSON (Content-Type: application/json)",
            ));
        }
        RejectBody::default()
    };
    let description = body
        .error_description
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| REJECTED.to_owned());
    if description.len() > 512 || description.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(
            "error_description must be at most 512 printable characters",
        ));
    }
    let redirect_to = state.engine.reject_login(&challenge, &description).await?;
    Ok(Json(RedirectTo { redirect_to }))
}
