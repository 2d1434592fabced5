//! The native error shape — RFC 6749 §5.2 JSON, `{"error", "error_description"}`
//! — used by the standard endpoints, the session API and the admin API, and
//! how engine errors map onto it. Unexpected errors are logged with context
//! and answered with a generic body.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::core::EngineError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: Cow<'static, str>,
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// An RFC 6749 error code, e.g. `invalid_request`, `invalid_client`.
    error: &'a str,
    error_description: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the store cannot be reached; the request had no effect that can be relied on, retry later",
        );
        e.retry_after = Some(1);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        match e {
            E::InvalidClient => Self::invalid_client(),
            E::RateLimited { retry_after } => {
                let mut err = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_client",
                    "too many failed authentication attempts for this client; retry later",
                );
                err.retry_after = Some(retry_after);
                err
            }
            E::UnauthorizedClient(what) => Self::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                format!("this client is not allowed to use {what}"),
            ),
            E::InvalidGrant(why) => Self::new(StatusCode::BAD_REQUEST, "invalid_grant", why),
            E::InvalidScope(why) => Self::new(StatusCode::BAD_REQUEST, "invalid_scope", why),
            E::InvalidRequest(why) => Self::invalid_request(why),
            E::NotFound(what) => Self::not_found(what),
            E::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            E::Unavailable(source) => {
                tracing::error!(error = %source, "store unavailable");
                Self::unavailable()
            }
            E::Delivery(detail) => {
                tracing::warn!(%detail, "OTP delivery failed");
                let mut e = Self::new(
                    StatusCode::BAD_GATEWAY,
                    "temporarily_unavailable",
                    "the one-time password could not be delivered; retry later",
                );
                e.retry_after = Some(5);
                e
            }
            E::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            error_description: &self.description,
        };
        let mut resp = (self.status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a 401 names the authentication scheme to use.
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""),
            );
        }
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
