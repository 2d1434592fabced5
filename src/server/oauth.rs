//! The standard endpoints: authorization (RFC 6749 §4.1 with RFC 7636 PKCE),
//! token (RFC 6749), introspection (RFC 7662), revocation (RFC 7009).
//!
//! The authorization endpoint is shared with the DigiLocker dialect, which
//! serves the same flow under its own path; [`authorize`] takes the dialect
//! name that the resulting session will carry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::{client_credentials, Form};
use super::AppState;
use crate::core::engine::{
    with_query, AuthorizationRequest, IssuedTokens, RedirectTargetError, TokenDescription,
    TokenKind,
};
use crate::core::ids::{Scope, SessionId};
use crate::core::model::Client;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/oauth2/authorize", get(authorize_native))
        .route("/oauth2/token", post(token))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
}

/// RFC 6749 §5.1 success body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl From<IssuedTokens> for TokenResponse {
    fn from(t: IssuedTokens) -> Self {
        Self {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
            scope: t.scope.as_str().to_owned(),
        }
    }
}

/// A JSON answer that must not be cached (RFC 6749 §5.1).
pub fn no_store(body: impl Serialize) -> Response {
    match to_json(&body) {
        Some(bytes) => no_store_json(bytes),
        None => ApiError::internal().into_response(),
    }
}

/// `body` as JSON, serialised into one buffer of about the right size.
fn to_json(body: &impl Serialize) -> Option<Bytes> {
    let mut buf = Vec::with_capacity(512);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => Some(buf.into()),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a response");
            None
        }
    }
}

/// [`no_store`] for a body already serialised.
fn no_store_json(json: Bytes) -> Response {
    let mut r = Response::new(Body::from(json));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Read the form and authenticate the calling client.
pub(crate) async fn authenticated_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Arc<Client>, Form)> {
    let form = Form::from_request(headers, body, state.max_body).await?;
    let creds = client_credentials(headers, &form)?;
    let client = state
        .engine
        .authenticate_client(&creds.client_id, &creds.client_secret)
        .await?;
    Ok((client, form))
}

// The hot handlers take the whole request: the `HeaderMap` extractor
// would copy the headers.
async fn token(State(state): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let (client, form) = authenticated_form(&state, &parts.headers, body).await?;
    let issued = match form.require("grant_type")? {
        "client_credentials" => {
            let scope = Scope::parse(form.get("scope").unwrap_or("")).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            })?;
            state.engine.client_credentials(&client, scope).await?
        }
        "authorization_code" => authorization_code(&state, &client, &form).await?,
        "refresh_token" => {
            let token = form.require("refresh_token")?;
            state.engine.refresh(&client, token).await?
        }
        other => return Err(unsupported_grant_type(other)),
    };
    Ok(no_store(TokenResponse::from(issued)))
}

/// RFC 6749 §4.1.3 with the RFC 7636 §4.5 verifier.
pub(crate) async fn authorization_code(
    state: &AppState,
    client: &Client,
    form: &Form,
) -> ApiResult<IssuedTokens> {
    let code = form.require("code")?;
    let verifier = form.require("code_verifier")?;
    Ok(state
        .engine
        .redeem_code(client, code, form.get("redirect_uri"), verifier)
        .await?)
}

pub(crate) fn unsupported_grant_type(grant_type: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        format!(
            "grant_type {:?} is not supported here",
            truncate(grant_type)
        ),
    )
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// RFC 7662 §2.2. Only `active` when the token is not active.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct IntrospectionResponse<'a> {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<&'a str>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_use: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub sid: Option<&'a SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<&'a str>,
}

impl<'a> From<&'a TokenDescription> for IntrospectionResponse<'a> {
    fn from(d: &'a TokenDescription) -> Self {
        let non_empty = |s: &'a str| Some(s).filter(|s| !s.is_empty());
        match d {
            TokenDescription::Access(c) => Self {
                active: true,
                client_id: Some(&c.client_id),
                sub: Some(&c.sub),
                scope: non_empty(&c.scope),
                exp: Some(c.exp),
                iat: Some(c.iat),
                jti: Some(&c.jti),
                token_type: Some("Bearer"),
                token_use: Some(TokenKind::Access.as_str()),
                sid: Some(&c.sid),
                iss: Some(&c.iss),
                aud: Some(&c.client_id),
            },
            TokenDescription::Refresh(r) => Self {
                active: true,
                client_id: Some(&r.client_id),
                sub: Some(&r.sub),
                scope: non_empty(&r.scope),
                exp: Some(r.exp),
                iat: Some(r.iat),
                jti: None,
                token_type: Some("refresh_token"),
                token_use: Some(TokenKind::Refresh.as_str()),
                sid: Some(&r.sid),
                iss: Some(&r.iss),
                aud: Some(&r.client_id),
            },
        }
    }
}

async fn introspect(State(state): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let (caller, form) = authenticated_form(&state, &parts.headers, body).await?;
    let token = form.require("token")?;
    Ok(match state.engine.introspect(&caller.id, token).await? {
        None => no_store(IntrospectionResponse::default()),
        // The same for every caller and every check of this token, so it
        // is rendered once and kept with the verified claims.
        Some(TokenDescription::Access(claims)) => match claims.rendering.get() {
            Some(json) => no_store_json(json),
            None => {
                let d = TokenDescription::Access(claims.clone());
                let json =
                    to_json(&IntrospectionResponse::from(&d)).ok_or_else(ApiError::internal)?;
                claims.rendering.keep(json.clone());
                no_store_json(json)
            }
        },
        Some(d) => no_store(IntrospectionResponse::from(&d)),
    })
}

/// RFC 7009: 200 whether or not the token was known; the hint only orders
/// the search.
async fn revoke(State(state): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let (client, form) = authenticated_form(&state, &parts.headers, body).await?;
    let token = form.require("token")?;
    let hint = match form.get("token_type_hint") {
        Some("access_token") => Some(TokenKind::Access),
        Some("refresh_token") => Some(TokenKind::Refresh),
        _ => None,
    };
    state.engine.revoke_token(&client, token, hint).await?;
    Ok(no_store(serde_json::json!({})))
}

// --- authorization endpoint ------------------------------------------------

/// Longest `state` and `login_hint` carried through the flow.
const MAX_STATE: usize = 2048;
const MAX_LOGIN_HINT: usize = 256;

async fn authorize_native(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(&state, &headers, query.as_deref(), "native").await
}

/// RFC 6749 §4.1.1: validate the request, record a pending login and send
/// the browser to the login application. Until the client and its redirect
/// URI are known to be good, errors are shown here (never redirected, RFC
/// 6749 §4.1.2.1); after that they go back to the client by redirect.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    dialect: &'static str,
) -> Response {
    let html = wants_html(headers);
    let q = match Form::parse(query.unwrap_or("").as_bytes()) {
        Ok(q) => q,
        Err(e) => return authorize_error_page(html, e),
    };
    let Some(client_id) = q.get("client_id") else {
        return authorize_error_page(html, ApiError::invalid_request("client_id is required"));
    };
    let (client, redirect_uri) = match state
        .engine
        .redirect_target(client_id, q.get("redirect_uri"))
        .await
    {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => {
            let why = match e {
                RedirectTargetError::UnknownClient => "unknown client_id",
                RedirectTargetError::BadRedirectUri => {
                    "redirect_uri is missing or is not registered for this client"
                }
            };
            return authorize_error_page(html, ApiError::invalid_request(why));
        }
        Err(e) => return authorize_error_page(html, e.into()),
    };
    let client_state = q.get("state");
    let back = |error: &str, description: &str| {
        redirect_with_error(&redirect_uri, error, description, client_state)
    };
    if client_state.is_some_and(|s| s.len() > MAX_STATE) {
        // Not echoed back: a state this long is not the client's.
        return redirect_with_error(&redirect_uri, "invalid_request", "state is too long", None);
    }
    match q.get("response_type") {
        None => return back("invalid_request", "response_type is required"),
        Some("code") => {}
        Some(_) => {
            return back(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    let Some(code_challenge) = q.get("code_challenge") else {
        return back(
            "invalid_request",
            "code_challenge is required (PKCE, RFC 7636)",
        );
    };
    match q.get("code_challenge_method") {
        Some("S256") => {}
        None => {
            return back(
                "invalid_request",
                "code_challenge_method is required and must be S256",
            )
        }
        Some(_) => {
            return back(
                "invalid_request",
                "transform algorithm not supported: code_challenge_method must be S256",
            )
        }
    }
    let scope = match Scope::parse(q.get("scope").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return back("invalid_scope", &e.to_string()),
    };
    // Tessera keeps no browser session of its own, so it can never
    // authenticate without showing the login step.
    if q.get("prompt")
        .is_some_and(|p| p.split(' ').any(|v| v == "none"))
    {
        return back(
            "login_required",
            "prompt=none cannot be honoured: the user must log in",
        );
    }
    let login_hint = q.get("login_hint");
    if login_hint.is_some_and(|h| h.len() > MAX_LOGIN_HINT || h.chars().any(char::is_control)) {
        return back("invalid_request", "login_hint is too long or not printable");
    }
    let req = AuthorizationRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: client_state.map(str::to_owned),
        code_challenge: code_challenge.to_owned(),
        scope,
        dialect,
    };
    let challenge = match state.engine.begin_authorization(&client, req).await {
        Ok(c) => c,
        Err(e) => {
            let e = ApiError::from(e);
            return back(e.error, &e.description);
        }
    };
    let mut params = vec![("login_challenge", challenge.as_str())];
    if let Some(h) = login_hint {
        params.push(("login_hint", h));
    }
    match login_url(state).and_then(|u| with_query(&u, &params).ok()) {
        Some(location) => found(&location),
        None => {
            tracing::error!("login_url is not a URL (nor a path under the issuer)");
            back("server_error", "the login page is misconfigured")
        }
    }
}

/// The configured login URL, resolved against the issuer (so a path such
/// as `/login` works too); default: the built-in page, `<issuer>/login`.
pub(crate) fn login_url(state: &AppState) -> Option<String> {
    let issuer = url::Url::parse(&format!("{}/", state.engine.settings().issuer)).ok()?;
    let configured = state.settings.login_url.as_deref().unwrap_or("login");
    issuer.join(configured).ok().map(String::from)
}

fn redirect_with_error(
    redirect_uri: &str,
    error: &str,
    description: &str,
    client_state: Option<&str>,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    match with_query(redirect_uri, &params) {
        Ok(location) => found(&location),
        // Registered URIs are absolute; this is a corrupt client record.
        Err(_) => ApiError::internal().into_response(),
    }
}

/// A `302 Found` that no cache keeps.
pub(crate) fn found(location: &str) -> Response {
    redirect(StatusCode::FOUND, location)
}

/// A redirect (`302`, `303`) that no cache keeps and that sends no referrer.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        return ApiError::internal().into_response();
    };
    let mut r = status.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, value);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Whether the caller is a browser that asked for a page.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// An error that must not go back to the client: a page for browsers, the
/// native JSON shape for everyone else.
fn authorize_error_page(html: bool, e: ApiError) -> Response {
    if !html || e.status.is_server_error() {
        return e.into_response();
    }
    let body = format!(
        "<h1>This sign-in request cannot be processed</h1>\n\
         <p role=\"alert\">{}.</p>\n\
         <p>The application that sent you here is not set up correctly for \
         this server. Go back to it and try again, or tell its operators.</p>\n\
         <p><small>Error: <code>{}</code></small></p>",
        escape_html(&e.description),
        escape_html(e.error),
    );
    html_page(e.status, "Sign-in error", &body, None)
}

// --- HTML pages (authorization errors, the built-in login page) -----------

/// Escape text for HTML element content and quoted attribute values.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE_CSS: &str = "\
body{font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;margin:0;\
background:#f3f4f6;color:#111827}\
main{max-width:26rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px;\
box-shadow:0 1px 3px rgba(0,0,0,.2)}\
h1{font-size:1.4rem;margin:0 0 1rem}\
label{display:block;font-weight:600;margin:1rem 0 .25rem}\
input{width:100%;box-sizing:border-box;font:inherit;font-size:1.1rem;padding:.5rem;\
border:1px solid #6b7280;border-radius:4px}\
input[aria-invalid=true]{border-color:#b91c1c}\
button{font:inherit;margin:1.25rem .5rem 0 0;padding:.55rem 1.1rem;border-radius:4px;\
border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#1d4ed8}\
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}\
.error{color:#b91c1c;font-weight:600}\
.hint{color:#4b5563;font-size:.9rem;margin:.25rem 0 0}\
code{word-break:break-all}";

/// A complete HTML page with the headers every page of Tessera carries: no
/// caching, no framing, no scripts, no referrer, forms posting only to this
/// origin and to `form_target` (the origin a form's redirect leads to).
pub(crate) fn html_page(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{} – Tessera</title>\n<style>{PAGE_CSS}</style>\n</head>\n\
         <body>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        escape_html(title),
    );
    let form_action = match form_target {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    match HeaderValue::from_str(&csp) {
        Ok(v) => {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        Err(_) => {
            tracing::error!("unusable form-action origin in the content security policy");
            return ApiError::internal().into_response();
        }
    }
    r
}

/// The CSP source expression for where a redirect to `uri` leads: its
/// origin for http(s), its scheme for a private-use scheme (RFC 8252 §7.1).
pub(crate) fn csp_source(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    let source = match u.scheme() {
        "http" | "https" => u.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    };
    // A source expression cannot hold these; never let one split the policy.
    (!source.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c == '\''))
        .then_some(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn csp_sources() {
        assert_eq!(
            csp_source("http://127.0.0.1:9999/cb?x=1").as_deref(),
            Some("http://127.0.0.1:9999")
        );
        assert_eq!(
            csp_source("https://app.example/cb").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            csp_source("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(csp_source("not a url"), None);
    }
}
