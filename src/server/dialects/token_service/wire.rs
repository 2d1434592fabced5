//! The dialect's wire format: who is calling (`X-API-KEY`), reading and
//! decrypting a request body, the reply shapes, and encrypting a reply.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretBox};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::Failure;
use super::jwe::{self, UniqueObject};
use crate::core::ids::ClientId;
use crate::core::model::Client;
use crate::core::EngineError;
use crate::server::extract::{media_type, read_body};
use crate::server::AppState;

const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const MAX_REFERENCE_LEN: usize = 256;

/// Who is calling, and the key its bodies are encrypted under.
pub(super) struct Caller {
    pub(super) client: Client,
    pub(super) key: SecretBox<[u8; 32]>,
}

/// The client named by the one `X-API-KEY` header, and its payload key.
pub(super) async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Failure> {
    let id = single_header(headers, &API_KEY)
        .map_err(|()| Failure::ApiKey)?
        .and_then(|v| ClientId::parse(v).ok())
        .ok_or(Failure::ApiKey)?;
    let client = state.engine.get_client(&id).await?.ok_or(Failure::ApiKey)?;
    let key = state.engine.payload_key(&client).map_err(|e| match e {
        EngineError::InvalidRequest(_) => Failure::NoPayloadKey,
        other => other.into(),
    })?;
    Ok(Caller { client, key })
}

/// The value of a header sent at most once; `Err` if repeated, `None` if
/// absent, not visible ASCII, or empty.
pub(super) fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, ()> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(());
    }
    Ok(first
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty()))
}

/// Read and decrypt the body: a JWE compact string whose plaintext is a
/// JSON object. `text/plain` (the vendor's), `application/jose` (RFC 7516
/// §9.1.1) or no content type at all are accepted.
pub(super) async fn plaintext(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    key: &SecretBox<[u8; 32]>,
) -> Result<Map<String, Value>, Failure> {
    if headers.contains_key(header::CONTENT_TYPE)
        && !matches!(
            media_type(headers).as_deref(),
            Some("text/plain" | "application/jose")
        )
    {
        return Err(Failure::MediaType);
    }
    let bytes = read_body(body, state.max_body).await.map_err(|e| {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::TooLarge
        } else {
            Failure::BadRequest(e.description.into_owned())
        }
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| bad("the body must be a JWE compact serialization"))?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Err(bad(
            "the body is empty; send the encrypted request as a JWE compact string",
        ));
    }
    let plain = jwe::decrypt(key.expose_secret(), text)?;
    let UniqueObject(map) = serde_json::from_slice(&plain)
        .map_err(|_| bad("the decrypted payload must be a JSON object with unique member names"))?;
    Ok(map)
}

pub(super) fn bad(why: &str) -> Failure {
    Failure::BadRequest(why.to_owned())
}

/// A 200 whose body is `reply` encrypted under the caller's key.
pub(super) fn sealed(caller: &Caller, reply: &impl Serialize) -> Result<Response, Failure> {
    let bytes = serde_json::to_vec(reply).map_err(|_| Failure::Internal)?;
    let body = jwe::encrypt(caller.key.expose_secret(), &bytes).map_err(|e| {
        tracing::error!(error = %e, "reply could not be encrypted");
        Failure::Internal
    })?;
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// A reference id as text: a non-empty string (or a number, for clients
/// whose JSON mapper writes numeric ids as numbers).
pub(super) fn reference(req: &Map<String, Value>, field: &str) -> Result<String, Failure> {
    let text = match req.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err(Failure::BadRequest(format!("missing {field}"))),
        Some(_) => return Err(Failure::BadRequest(format!("{field} must be a string"))),
    };
    if text.is_empty() || text.len() > MAX_REFERENCE_LEN || text.chars().any(char::is_control) {
        return Err(Failure::BadRequest(format!(
            "{field} must be 1 to {MAX_REFERENCE_LEN} bytes without control characters"
        )));
    }
    Ok(text)
}

/// The replies, as structs so their members keep the vendor's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewTokenReply {
    pub(super) res_code: Value,
    pub(super) res_desc: &'static str,
    pub(super) reference_id: Value,
    pub(super) token: String,
    pub(super) expire_at: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RenewReply {
    pub(super) res_code: Value,
    pub(super) res_desc: &'static str,
    pub(super) data: RenewedToken,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RenewedToken {
    pub(super) token: String,
    pub(super) expiry_date: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InvalidateReply {
    pub(super) res_code: Value,
    pub(super) res_desc: &'static str,
    pub(super) data: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Status {
    pub(super) res_code: Value,
    pub(super) res_desc: &'static str,
}
