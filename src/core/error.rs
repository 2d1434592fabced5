//! Engine errors. Each dialect maps them to its own status codes and shapes.

use crate::store::StoreError;

use super::ids::ParseIdError;
use super::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Client authentication failed (unknown client or wrong secret).
    #[error("client authentication failed")]
    InvalidClient,
    /// Too many failed authentications for this client; retry after the
    /// given number of seconds.
    #[error("too many failed attempts")]
    RateLimited { retry_after: u64 },
    /// The client is not allowed to use this grant or API.
    #[error("client is not allowed to use {0}")]
    UnauthorizedClient(&'static str),
    /// A presented grant (refresh token, code) is invalid, expired, ended or
    /// belongs to another client.
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    /// The request is malformed in a way the adapter did not catch.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The store cannot be read or written: answer 503, the outcome is unknown.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// An OTP could not be delivered; the user never got it.
    #[error("OTP delivery failed: {0}")]
    Delivery(String),
    /// A bug or damaged data; answered with a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict(what) => Self::Conflict(what),
            // The only dependency a write checks is the client: it was
            // deleted while this request was in flight.
            StoreError::Missing(_) => Self::InvalidClient,
            StoreError::Corrupt { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl From<KeyError> for EngineError {
    fn from(e: KeyError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<ParseIdError> for EngineError {
    fn from(e: ParseIdError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
