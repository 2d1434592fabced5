//! Bad input on every endpoint gets a 4xx in the native error shape
//! (`{"error", "error_description"}`): never a 5xx, never a panic, never a
//! body that is not JSON. Introspection of an unusable token answers
//! `200 {"active": false}` (RFC 7662) and revocation of an unknown token
//! `200 {}` (RFC 7009); for those two endpoints the rule is "200 with the
//! right body, or a 4xx in the error shape".
//!
//! Three parts: a table of bad requests for every route, forged and damaged
//! JWTs against introspection, revocation and the refresh grant, and a
//! property-based run throwing arbitrary bytes, strings and JSON at the
//! token, introspection, revocation and session endpoints.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{s, TestApp};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::Signer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
/// Over the 64 KiB default body limit by a wide margin.
const TWO_MIB: usize = 2 * 1024 * 1024;
const MAX_BODY: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// requests and verdicts

/// Besides a 4xx in the error shape, which 200 answer is correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Also200 {
    /// Only a 4xx is right.
    Never,
    /// `200 {"active": false}` (RFC 7662 §2.2).
    Inactive,
    /// `200 {}` (RFC 7009 §2.2).
    Revoked,
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    method: Method,
    path: String,
    auth: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    body: Option<Vec<u8>>,
    also: Also200,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            method,
            path: path.into(),
            auth: None,
            content_type: None,
            body: None,
            also: Also200::Never,
        }
    }
    fn auth(mut self, v: Option<HeaderValue>) -> Self {
        self.auth = v;
        self
    }
    fn ct(mut self, ct: &str) -> Self {
        self.content_type = Some(HeaderValue::from_str(ct).expect("valid content type"));
        self
    }
    fn ct_value(mut self, ct: HeaderValue) -> Self {
        self.content_type = Some(ct);
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Some(b.into());
        self
    }
    fn form(self, b: impl Into<Vec<u8>>) -> Self {
        self.ct(FORM).body(b)
    }
    fn json(self, b: impl Into<Vec<u8>>) -> Self {
        self.ct(JSON).body(b)
    }
    fn also(mut self, a: Also200) -> Self {
        self.also = a;
        self
    }
}

fn hv(s: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(s).expect("valid header value"))
}

fn basic(id: &str, secret: &str) -> Option<HeaderValue> {
    hv(&format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))))
}

fn basic_raw(bytes: &[u8]) -> Option<HeaderValue> {
    hv(&format!("Basic {}", STANDARD.encode(bytes)))
}

fn bearer(t: &str) -> Option<HeaderValue> {
    hv(&format!("Bearer {t}"))
}

fn preview(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    if t.chars().count() > 240 {
        format!("{}…", t.chars().take(240).collect::<String>())
    } else {
        t.into_owned()
    }
}

/// Never 5xx; the body is JSON; a 4xx has string `error` and
/// `error_description`; a 200 is accepted only where `also` allows it and
/// only with the RFC-mandated body.
fn verdict(also: Also200, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status.is_server_error() {
        return Err(format!("{status} (server error): {}", preview(body)));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{status}: body is not JSON ({e}): {:?}", preview(body)))?;
    if status.is_client_error() {
        return error_shape(&v).map_err(|why| format!("{status}: {why}: {v}"));
    }
    match (status, also) {
        (StatusCode::OK, Also200::Inactive) if v == json!({"active": false}) => Ok(()),
        (StatusCode::OK, Also200::Revoked) if v == json!({}) => Ok(()),
        _ => Err(format!("expected a 4xx{}, got {status}: {}", also_text(also), preview(body))),
    }
}

fn also_text(also: Also200) -> &'static str {
    match also {
        Also200::Never => "",
        Also200::Inactive => r#" or 200 {"active": false}"#,
        Also200::Revoked => " or 200 {}",
    }
}

fn error_shape(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("error body is not a JSON object")?;
    match obj.get("error").and_then(Value::as_str) {
        Some(e) if !e.is_empty() => {}
        _ => return Err("no string \"error\"".into()),
    }
    if !obj.get("error_description").is_some_and(Value::is_string) {
        return Err("no string \"error_description\"".into());
    }
    Ok(())
}

