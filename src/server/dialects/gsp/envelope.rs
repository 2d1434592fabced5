//! The dialect's reply shapes: the success envelope
//! `{"code":200,"data":…,"timestamp":<ms>,"transaction_id":<uuid>}`, the
//! error envelope `{"code":<status>,"message":…,…}` with the same HTTP
//! status, and the taxpayer-level failure (HTTP 200, `status_cd:"0"`).
//! Engine errors are mapped here, once.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::core::engine::{OtpRejected, TokenRejected};
use crate::core::gstin::{GstinError, FORMAT_HELP};
use crate::core::EngineError;
use crate::server::error::ApiError;

/// Wall-clock time of the reply; it says when the server answered, not
/// when anything expires, so it does not follow the engine's clock.
fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn reply(status: StatusCode, mut body: Map<String, Value>, retry_after: Option<u64>) -> Response {
    body.insert("timestamp".into(), Value::from(epoch_ms()));
    body.insert(
        "transaction_id".into(),
        Value::from(uuid::Uuid::new_v4().to_string()),
    );
    let mut r = (status, Json(Value::Object(body))).into_response();
    let h = r.headers_mut();
    // Replies carry tokens or session state; no cache may keep them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// `{"code":200,"data":data,…}`.
pub(super) fn success(data: Value) -> Response {
    let mut body = Map::new();
    body.insert("code".into(), Value::from(200));
    body.insert("data".into(), data);
    reply(StatusCode::OK, body, None)
}

/// An API token, in `data.access_token` and, for older SDKs, at the top
/// level too.
pub(super) fn token_reply(access_token: &str) -> Response {
    let mut body = Map::new();
    body.insert("code".into(), Value::from(200));
    body.insert("data".into(), json!({ "access_token": access_token }));
    body.insert("access_token".into(), Value::from(access_token));
    reply(StatusCode::OK, body, None)
}

/// A taxpayer-level success: `data` with `status_cd:"1"`.
pub(super) fn taxpayer_ok(mut data: Map<String, Value>) -> Response {
    data.insert("status_cd".into(), Value::from("1"));
    success(Value::Object(data))
}

/// Taxpayer-level failures: HTTP 200, `data:{"status_cd":"0","error":{…}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaxpayerFailure {
    /// No live taxpayer session for this API key and GSTIN.
    InvalidSession,
    /// No OTP is pending for this login (never requested, already used,
    /// or killed by too many wrong attempts earlier).
    NoChallenge,
    WrongOtp {
        attempts_left: u32,
    },
    OtpExpired,
    TooManyAttempts,
}

impl TaxpayerFailure {
    pub(super) fn error_cd(self) -> &'static str {
        match self {
            // The code and message of the public samples.
            Self::InvalidSession | Self::NoChallenge => "AUTH4033",
            // Inferred (docs/gsp.md): the public material names no others.
            Self::WrongOtp { .. } => "AUTH4034",
            Self::OtpExpired => "AUTH4038",
            Self::TooManyAttempts => "AUTH4039",
        }
    }

    fn message(self) -> Cow<'static, str> {
        match self {
            Self::InvalidSession => "Invalid Session".into(),
            Self::NoChallenge => {
                "Invalid Session: no OTP is pending for this GSTIN and username; request a new OTP"
                    .into()
            }
            Self::WrongOtp { attempts_left } => {
                format!("Invalid OTP: {attempts_left} attempt(s) left").into()
            }
            Self::OtpExpired => "OTP has expired; request a new OTP".into(),
            Self::TooManyAttempts => "Too many wrong OTP attempts; request a new OTP".into(),
        }
    }

    pub(super) fn into_response(self) -> Response {
        success(json!({
            "status_cd": "0",
            "error": { "message": self.message(), "error_cd": self.error_cd() },
        }))
    }
}

impl From<OtpRejected> for TaxpayerFailure {
    fn from(r: OtpRejected) -> Self {
        match r {
            OtpRejected::NoChallenge => Self::NoChallenge,
            OtpRejected::Expired => Self::OtpExpired,
            OtpRejected::Wrong { attempts_left } => Self::WrongOtp { attempts_left },
            OtpRejected::TooManyAttempts => Self::TooManyAttempts,
        }
    }
}

/// Why an API token is refused: the four 403 messages SDKs match exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    Invalid,
    Expired,
    Revoked,
    Insufficient,
}

impl Denied {
    pub(super) const fn message(self) -> &'static str {
        match self {
            Self::Invalid => "Invalid access token",
            Self::Expired => "Access token has expired",
            Self::Revoked => "Access revoked",
            Self::Insufficient => "Insufficient privilege",
        }
    }
}

impl From<TokenRejected> for Denied {
    fn from(r: TokenRejected) -> Self {
        match r {
            TokenRejected::Invalid => Self::Invalid,
            TokenRejected::Expired => Self::Expired,
            TokenRejected::Revoked => Self::Revoked,
        }
    }
}

/// An error envelope with the same HTTP status.
#[derive(Debug)]
pub(super) struct GspError {
    status: StatusCode,
    message: Cow<'static, str>,
    retry_after: Option<u64>,
}

impl GspError {
    pub(super) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Bad or missing API key/secret: the documented 401.
    pub(super) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    pub(super) fn denied(d: Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, d.message())
    }

    pub(super) fn gstin(e: GstinError) -> Self {
        Self::bad_request(format!("Invalid GSTIN: {e}; {FORMAT_HELP}"))
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    #[cfg(test)]
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<Denied> for GspError {
    fn from(d: Denied) -> Self {
        Self::denied(d)
    }
}

impl From<EngineError> for GspError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        match e {
            E::InvalidClient => Self::unauthorized(),
            E::RateLimited { retry_after } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed authentication attempts for this API key; retry later",
            )
            .retry_after(retry_after),
            E::UnauthorizedClient(_) => Self::denied(Denied::Insufficient),
            E::InvalidGrant(why) => Self::bad_request(why),
            E::InvalidScope(why) | E::InvalidRequest(why) => Self::bad_request(why),
            E::NotFound(what) => Self::new(StatusCode::NOT_FOUND, format!("{what} not found")),
            E::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                format!("{what} was changed by a concurrent request; retry"),
            ),
            E::Unavailable(source) => {
                tracing::error!(error = %source, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service temporarily unavailable: the request had no effect that can be relied on; retry later",
                )
                .retry_after(1)
            }
            E::Delivery(detail) => {
                tracing::warn!(%detail, "OTP delivery failed");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "The OTP could not be delivered; retry later",
                )
                .retry_after(5)
            }
            E::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        }
    }
}

/// The shared request helpers (bounded bodies, strict queries) answer in
/// the native shape; re-dress their errors in this dialect's envelope.
impl From<ApiError> for GspError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status,
            message: e.description,
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for GspError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), Value::from(self.status.as_u16()));
        body.insert("message".into(), Value::from(self.message.into_owned()));
        reply(self.status, body, self.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_403_strings_are_exact() {
        assert_eq!(Denied::Invalid.message(), "Invalid access token");
        assert_eq!(Denied::Expired.message(), "Access token has expired");
        assert_eq!(Denied::Revoked.message(), "Access revoked");
        assert_eq!(Denied::Insufficient.message(), "Insufficient privilege");
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        let s = |e: EngineError| GspError::from(e).status();
        assert_eq!(s(EngineError::InvalidClient), StatusCode::UNAUTHORIZED);
        assert_eq!(
            s(EngineError::Delivery("x".into())),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            s(EngineError::Unavailable(
                crate::store::StoreError::Unavailable("x".into())
            )),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            s(EngineError::InvalidRequest("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            s(EngineError::Internal("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn invalid_session_is_auth4033() {
        assert_eq!(TaxpayerFailure::InvalidSession.error_cd(), "AUTH4033");
        assert_eq!(TaxpayerFailure::InvalidSession.message(), "Invalid Session");
    }
}
