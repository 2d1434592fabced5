//! Dialect adapters: wire-compatible versions of public APIs. Each adapter
//! translates its wire format to engine calls and engine errors back to its
//! own error shape; it holds no lifecycle rule.

mod digilocker;
mod gsp;
mod token_service;

use std::sync::Arc;

use axum::Router;

use super::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(gsp::router())
        .merge(digilocker::router())
        .merge(token_service::router())
}
