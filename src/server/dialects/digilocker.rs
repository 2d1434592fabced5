//! The DigiLocker OAuth 2.0 dialect (paths under `/public/oauth2/1/`):
//! authorization code with PKCE S256, the token endpoint whose answer
//! carries the user fields the login step supplied, RFC 7009 revocation
//! that ends the whole grant (the seed), and the user endpoint.
//!
//! The login step is not hard-wired: `authorize` sends the browser to the
//! configured login URL with a `login_challenge`, and a login application
//! answers through the admin login API ([`login_api`]). The built-in login
//! page ([`login_page`], identifier → OTP) is the default login URL. Both
//! serve the native `/oauth2/authorize` flow as well; they live here
//! because this dialect is the one whose clients need them.

mod login_api;
mod login_page;
mod token;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::server::oauth;
use crate::server::AppState;

/// The dialect name sessions opened here carry.
const DIALECT: &str = "digilocker";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/public/oauth2/1/authorize", get(authorize))
        .merge(token::router())
        .merge(login_page::router())
        .merge(login_api::router())
}

/// The standard authorization endpoint; sessions it leads to are
/// DigiLocker sessions.
async fn authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    oauth::authorize(&state, &headers, query.as_deref(), DIALECT).await
}
