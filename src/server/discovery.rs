//! Discovery: RFC 8414 authorization-server metadata and the JWK Set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/jwks.json", get(jwks))
}

async fn metadata(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let iss = &state.engine.settings().issuer;
    let auth = ["client_secret_basic", "client_secret_post"];
    Json(serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth,
        "introspection_endpoint_auth_methods_supported": auth,
        "revocation_endpoint_auth_methods_supported": auth,
        "token_endpoint_auth_signing_alg_values_supported": [],
        "service_documentation": format!("{iss}/openapi.json"),
    }))
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut r = Json(state.engine.keys().jwks()).into_response();
    // Short, so a rotation is seen within a minute by caching verifiers.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}
