//! The token-service dialect's failures and their wire shape.
//!
//! Errors are plain JSON (`application/json`), never encrypted: only a 200
//! carries an encrypted body. The status code alone tells a client which
//! kind of body it got, and the error is readable by a client that does not
//! (or no longer) share a key with us — the failures a client most needs to
//! read are exactly "unknown API key" and "wrong payload key".
//!
//! v1: `{"resCode": <HTTP status>, "resDesc": "..."}` (the vendor's outer
//! codes are HTTP-like: the seed's success envelope has `resCode: 200`).
//! v2: `{"resCode": "TOK002" | "TOK003", "resDesc": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::jwe::JweError;
use super::Version;
use crate::core::EngineError;

/// The exact text the vendor documents for a bad or ended token (seed:
/// 401 "Invalid Token Passe[d]").
pub const INVALID_TOKEN: &str = "Invalid Token Passed";

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// `X-API-KEY` missing, repeated or naming no client.
    #[error("Invalid API Key")]
    ApiKey,
    /// The client exists but may not open sessions (grant type `session`).
    #[error("API key not allowed to issue tokens")]
    NotAllowed,
    /// The client has no payload key (a record older than payload keys).
    #[error("No payload key for this API key; rotate one")]
    NoPayloadKey,
    #[error("Content-Type must be text/plain")]
    MediaType,
    #[error("Request body too large")]
    TooLarge,
    /// The request is not one this dialect can read: not a JWE we accept,
    /// or a plaintext without the fields it needs.
    #[error("Invalid Request: {0}")]
    BadRequest(String),
    /// The body is a well-formed JWE that does not decrypt under the
    /// client's key: the caller did not prove it holds the key.
    #[error("Request payload could not be decrypted")]
    Undecryptable,
    /// Unknown, ended or expired token or reference, or another client's.
    #[error("{INVALID_TOKEN}")]
    InvalidToken,
    /// Two openers raced on one reference twice in a row.
    #[error("Concurrent request for this referenceId; retry")]
    Busy,
    #[error("Too many requests; retry later")]
    RateLimited(u64),
    /// The store cannot be reached: the outcome is unknown, retry.
    #[error("Service temporarily unavailable; retry")]
    Unavailable,
    #[error("Internal Error")]
    Internal,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::ApiKey | Self::NoPayloadKey | Self::Undecryptable | Self::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotAllowed => StatusCode::FORBIDDEN,
            Self::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Busy => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The v2 code: TOK002 for anything wrong with the API key, TOK003 for
    /// every other failure.
    fn v2_code(&self) -> &'static str {
        match self {
            Self::ApiKey | Self::NotAllowed | Self::NoPayloadKey => "TOK002",
            _ => "TOK003",
        }
    }

    pub fn into_response(self, version: Version) -> Response {
        let status = self.status();
        let desc = self.to_string();
        let body = match version {
            Version::V1 => json!({"resCode": status.as_u16(), "resDesc": desc}),
            Version::V2 => json!({"resCode": self.v2_code(), "resDesc": desc}),
        };
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let retry_after = match self {
            Self::RateLimited(secs) => Some(secs),
            Self::Unavailable | Self::Busy => Some(1),
            _ => None,
        };
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            h.insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<JweError> for Failure {
    fn from(e: JweError) -> Self {
        match e {
            JweError::Undecryptable => Self::Undecryptable,
            JweError::TooLarge => Self::TooLarge,
            JweError::Malformed(_) | JweError::Unsupported(_) => Self::BadRequest(e.to_string()),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        match e {
            E::InvalidClient => Self::ApiKey,
            E::UnauthorizedClient(_) => Self::NotAllowed,
            E::InvalidGrant(_) | E::NotFound(_) => Self::InvalidToken,
            E::InvalidRequest(why) => Self::BadRequest(why),
            E::InvalidScope(why) => Self::BadRequest(why),
            E::Conflict(_) => Self::Busy,
            E::RateLimited { retry_after } => Self::RateLimited(retry_after),
            E::Unavailable(source) => {
                tracing::error!(error = %source, "store unavailable");
                Self::Unavailable
            }
            E::Delivery(detail) | E::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn shapes() {
        let r = Failure::InvalidToken.into_response(Version::V1);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            body(r).await,
            json!({"resCode": 401, "resDesc": "Invalid Token Passed"})
        );
        let r = Failure::ApiKey.into_response(Version::V2);
        assert_eq!(
            body(r).await,
            json!({"resCode": "TOK002", "resDesc": "Invalid API Key"})
        );
        let r = Failure::Undecryptable.into_response(Version::V2);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body(r).await["resCode"], "TOK003");
        let r = Failure::Unavailable.into_response(Version::V1);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn jwe_errors_are_client_errors() {
        for e in [
            JweError::Malformed("x"),
            JweError::Unsupported("y"),
            JweError::TooLarge,
            JweError::Undecryptable,
        ] {
            assert!(Failure::from(e).status().is_client_error(), "{e}");
        }
    }
}
