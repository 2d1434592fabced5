//! HTTP handlers of both wire styles. Each reads its style's inputs (GSTIN
//! in the path and username/otp in the query; or a JSON body
//! `{"gstin","username"}` with `?otp=`), authenticates the caller, and
//! calls the one implementation in `taxpayer`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::api::caller;
use super::envelope::GspError;
use super::taxpayer::{self, parse_gstin, parse_otp, parse_username};
use crate::core::gstin::Gstin;
use crate::server::extract::{json_body, Form};
use crate::server::AppState;

type Reply = Result<Response, GspError>;
type GstinPath = Result<Path<String>, PathRejection>;

fn query(uri: &Uri) -> Result<Form, GspError> {
    Ok(Form::parse(uri.query().unwrap_or("").as_bytes())?)
}

fn path_gstin(state: &AppState, path: GstinPath) -> Result<Gstin, GspError> {
    let Path(raw) = path.map_err(|e| GspError::bad_request(e.body_text()))?;
    parse_gstin(state, &raw)
}

// ---- path style: /gsp/tax-payer/{gstin}/… ----

pub(super) async fn path_otp(
    State(state): State<Arc<AppState>>,
    path: GstinPath,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = path_gstin(&state, path)?;
    let q = query(&uri)?;
    let username = parse_username(q.get("username"))?;
    taxpayer::request_otp(&state, &client, &gstin, &username).await
}

pub(super) async fn path_verify(
    State(state): State<Arc<AppState>>,
    path: GstinPath,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = path_gstin(&state, path)?;
    let q = query(&uri)?;
    let username = parse_username(q.get("username"))?;
    let otp = parse_otp(q.get("otp"))?;
    taxpayer::verify_otp(&state, &client, &gstin, &username, otp).await
}

pub(super) async fn path_session(
    State(state): State<Arc<AppState>>,
    path: GstinPath,
    headers: HeaderMap,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = path_gstin(&state, path)?;
    taxpayer::session(&state, &client, &gstin).await
}

pub(super) async fn path_refresh(
    State(state): State<Arc<AppState>>,
    path: GstinPath,
    headers: HeaderMap,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = path_gstin(&state, path)?;
    taxpayer::refresh(&state, &client, &gstin).await
}

/// The seed: `POST /gsp/tax-payer/{gstin}/logout`.
pub(super) async fn path_logout(
    State(state): State<Arc<AppState>>,
    path: GstinPath,
    headers: HeaderMap,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = path_gstin(&state, path)?;
    taxpayer::logout(&state, &client, &gstin).await
}

// ---- body style: /gst/compliance/tax-payer/… ----

/// An OTP given in the body, as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum OtpValue {
    Text(String),
    Number(u32),
}

/// Unknown fields are ignored: SDKs add their own.
#[derive(Deserialize)]
struct TaxpayerBody {
    gstin: Option<String>,
    username: Option<String>,
    otp: Option<OtpValue>,
}

impl TaxpayerBody {
    fn gstin(&self, state: &AppState) -> Result<Gstin, GspError> {
        let raw = self
            .gstin
            .as_deref()
            .ok_or_else(|| GspError::bad_request("missing gstin in the JSON body"))?;
        parse_gstin(state, raw)
    }
}

async fn body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<TaxpayerBody, GspError> {
    Ok(json_body(headers, body, state.max_body).await?)
}

pub(super) async fn body_otp(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Body,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let b = body(&state, &headers, b).await?;
    let gstin = b.gstin(&state)?;
    let username = parse_username(b.username.as_deref())?;
    taxpayer::request_otp(&state, &client, &gstin, &username).await
}

pub(super) async fn body_verify(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    b: Body,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let q = query(&uri)?;
    let b = body(&state, &headers, b).await?;
    let gstin = b.gstin(&state)?;
    let username = parse_username(b.username.as_deref())?;
    // `?otp=` as documented; an `otp` in the body is accepted too. A number
    // lost its leading zeros on the way: the code is always 6 digits.
    let from_body = match &b.otp {
        Some(OtpValue::Text(t)) => Some(t.clone()),
        Some(OtpValue::Number(n)) => Some(format!("{n:06}")),
        None => None,
    };
    let otp = parse_otp(q.get("otp").or(from_body.as_deref()))?;
    taxpayer::verify_otp(&state, &client, &gstin, &username, otp).await
}

pub(super) async fn body_refresh(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Body,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = body(&state, &headers, b).await?.gstin(&state)?;
    taxpayer::refresh(&state, &client, &gstin).await
}

pub(super) async fn body_logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Body,
) -> Reply {
    let client = caller(&state, &headers).await?;
    let gstin = body(&state, &headers, b).await?.gstin(&state)?;
    taxpayer::logout(&state, &client, &gstin).await
}
