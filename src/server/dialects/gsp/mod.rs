//! The GSP taxpayer dialect (Sandbox style, protocols.md §1).
//!
//! Two layers of session, both ordinary engine sessions of dialect `gsp`:
//! - the *API session*: `POST /authenticate` with the API key and secret
//!   opens it (subject = the API key), and `POST /authorize` replaces it
//!   with a successor (the old token stops working at once);
//! - the *taxpayer session*: an OTP login for one GSTIN, keyed by
//!   (API key, GSTIN), opened by `…/otp/verify` and ended by `…/logout`.
//!
//! Every reply uses the dialect's envelope (`envelope`); API-token checks
//! live in `api`, the taxpayer operations (shared by the path style and the
//! body style) in `taxpayer`, the HTTP handlers of both styles in `routes`.

mod api;
mod envelope;
mod routes;
mod taxpayer;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::server::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/authenticate", post(api::authenticate))
        .route("/authorize", post(api::authorize))
        // Path style (the seed's).
        .route("/gsp/tax-payer/{gstin}/otp", post(routes::path_otp))
        .route(
            "/gsp/tax-payer/{gstin}/otp/verify",
            post(routes::path_verify),
        )
        .route("/gsp/tax-payer/{gstin}/session", get(routes::path_session))
        .route(
            "/gsp/tax-payer/{gstin}/session/refresh",
            get(routes::path_refresh).post(routes::path_refresh),
        )
        .route("/gsp/tax-payer/{gstin}/logout", post(routes::path_logout))
        // Body style.
        .route("/gst/compliance/tax-payer/otp", post(routes::body_otp))
        .route(
            "/gst/compliance/tax-payer/otp/verify",
            post(routes::body_verify),
        )
        .route(
            "/gst/compliance/tax-payer/session/refresh",
            post(routes::body_refresh),
        )
        .route(
            "/gst/compliance/tax-payer/logout",
            post(routes::body_logout),
        )
}
