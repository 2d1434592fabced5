//! The built-in login page, the default login URL: identifier → one-time
//! code → back to the client with an authorization code. Plain HTML forms,
//! no script.
//!
//! Against cross-site request forgery: the login challenge in every form is
//! the unguessable state (it names one pending login and dies with it), the
//! forms post only to this origin, a browser's cross-site POST
//! (`Sec-Fetch-Site`) is refused, and pages cannot be framed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{Map, Value};

use crate::core::engine::{OtpRejected, PendingLogin};
use crate::core::ids::Subject;
use crate::core::EngineError;
use crate::server::error::ApiError;
use crate::server::extract::Form;
use crate::server::oauth::{csp_source, escape_html as esc, html_page};
use crate::server::AppState;

/// What the OTP is for, as the sender's webhook sees it.
const PURPOSE: &str = "login";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/login", get(start).post(send_code))
        .route("/login/verify", post(verify))
        .route("/login/cancel", post(cancel))
}

/// The form actions, under the issuer's path (Tessera may sit below a
/// path prefix behind a proxy).
struct Actions {
    send: String,
    verify: String,
    cancel: String,
}

impl Actions {
    fn new(state: &AppState) -> Self {
        let prefix = url::Url::parse(&state.engine.settings().issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Self {
            send: format!("{prefix}/login"),
            verify: format!("{prefix}/login/verify"),
            cancel: format!("{prefix}/login/cancel"),
        }
    }
}

async fn start(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let Ok(q) = Form::parse(query.unwrap_or_default().as_bytes()) else {
        return no_request();
    };
    let Some(challenge) = q.get("login_challenge") else {
        return no_request();
    };
    let p = match pending(&state, challenge).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let hint = q.get("login_hint").unwrap_or("");
    identifier_step(&state, &p, challenge, hint, None, StatusCode::OK)
}

async fn send_code(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let (form, challenge, p) = match posted(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let identifier = form.get("identifier").unwrap_or("").trim();
    if identifier.is_empty() {
        let e = "Enter your email address, phone number or user ID.";
        return identifier_step(
            &state,
            &p,
            &challenge,
            "",
            Some(e),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    match state
        .engine
        .start_otp(&p.client_id, PURPOSE, identifier)
        .await
    {
        Ok(expires_at) => {
            let minutes = ((expires_at - state.engine.now()).max(60) + 59) / 60;
            otp_step(
                &state,
                &p,
                &challenge,
                identifier,
                minutes,
                None,
                StatusCode::OK,
            )
        }
        Err(EngineError::InvalidRequest(_)) => {
            let e = "That does not look right: use at most 256 printable characters.";
            identifier_step(
                &state,
                &p,
                &challenge,
                identifier,
                Some(e),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        // The engine has logged why.
        Err(EngineError::Delivery(_)) => {
            let e = "We could not send a code just now. Wait a moment and try again.";
            identifier_step(
                &state,
                &p,
                &challenge,
                identifier,
                Some(e),
                StatusCode::BAD_GATEWAY,
            )
        }
        Err(e) => failure(e),
    }
}

async fn verify(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let (form, challenge, p) = match posted(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let identifier = form.get("identifier").unwrap_or("").trim();
    let Ok(subject) = Subject::parse(identifier) else {
        let e = "Enter your email address, phone number or user ID.";
        return identifier_step(
            &state,
            &p,
            &challenge,
            "",
            Some(e),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let otp = form.get("otp").unwrap_or("").trim();
    let minutes = (state.engine.settings().otp_ttl + 59) / 60;
    if otp.len() != 6 || !otp.bytes().all(|b| b.is_ascii_digit()) {
        let e = "Enter the 6-digit code we sent you.";
        return otp_step(
            &state,
            &p,
            &challenge,
            identifier,
            minutes,
            Some(e),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let again = |e: &str| {
        identifier_step(
            &state,
            &p,
            &challenge,
            identifier,
            Some(e),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    match state
        .engine
        .verify_otp(&p.client_id, PURPOSE, identifier, otp)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(OtpRejected::Wrong { attempts_left })) => {
            let e = format!(
                "That code is not correct. {attempts_left} {} left.",
                if attempts_left == 1 {
                    "attempt"
                } else {
                    "attempts"
                }
            );
            return otp_step(
                &state,
                &p,
                &challenge,
                identifier,
                minutes,
                Some(&e),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        Ok(Err(OtpRejected::TooManyAttempts)) => {
            return again("Too many wrong codes. Request a new code to try again.")
        }
        Ok(Err(OtpRejected::Expired)) => return again("That code has expired. Request a new one."),
        Ok(Err(OtpRejected::NoChallenge)) => {
            return again("No code is waiting for this sign-in. Request a new one.")
        }
        Err(e) => return failure(e),
    }
    let mut claims = Map::new();
    claims.insert("login".into(), Value::from(identifier));
    match state.engine.accept_login(&challenge, subject, claims).await {
        Ok(redirect_to) => see_other(&redirect_to),
        Err(EngineError::NotFound(_)) => dead(),
        Err(e) => failure(e),
    }
}

async fn cancel(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let (_, challenge, _) = match posted(&state, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state
        .engine
        .reject_login(&challenge, "The user cancelled the sign-in")
        .await
    {
        Ok(redirect_to) => see_other(&redirect_to),
        Err(EngineError::NotFound(_)) => dead(),
        Err(e) => failure(e),
    }
}

/// Read a posted form and the live pending login it names.
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Form, String, PendingLogin), Response> {
    // Browsers say where a request comes from; only this origin may post.
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin") {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form can only be sent from the sign-in page itself.",
        ));
    }
    let form = Form::from_request(headers, body, state.max_body)
        .await
        .map_err(|e| {
            message(
                StatusCode::BAD_REQUEST,
                "Request refused",
                &format!("The form could not be read: {}.", e.description),
            )
        })?;
    let Some(challenge) = form.get("login_challenge").map(str::to_owned) else {
        return Err(no_request());
    };
    let p = pending(state, &challenge).await?;
    Ok((form, challenge, p))
}

async fn pending(state: &AppState, challenge: &str) -> Result<PendingLogin, Response> {
    match state.engine.pending_login(challenge).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(dead()),
        Err(e) => Err(failure(e)),
    }
}

fn page(status: StatusCode, title: &str, body: &str, p: &PendingLogin) -> Response {
    // The forms' answers redirect to the client, so form-action must allow
    // its origin (Chromium applies form-action to redirects after a POST).
    html_page(status, title, body, csp_source(&p.redirect_uri).as_deref())
}

/// Error text and the attributes that tie it to its input.
fn error_parts(id: &str, error: Option<&str>) -> (String, String) {
    match error {
        Some(e) => (
            format!(
                "<p class=\"error\" id=\"{id}-error\" role=\"alert\">{}</p>\n",
                esc(e)
            ),
            format!(" aria-invalid=\"true\" aria-describedby=\"{id}-hint {id}-error\""),
        ),
        None => (String::new(), format!(" aria-describedby=\"{id}-hint\"")),
    }
}

fn identifier_step(
    state: &AppState,
    p: &PendingLogin,
    challenge: &str,
    value: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let a = Actions::new(state);
    let (error_html, aria) = error_parts("identifier", error);
    let body = format!(
        "<h1>Sign in</h1>\n\
         <p>to continue to <strong>{client}</strong></p>\n\
         {error_html}\
         <form method=\"post\" action=\"{send}\">\n\
         <input type=\"hidden\" name=\"login_challenge\" value=\"{challenge}\">\n\
         <label for=\"identifier\">Email address, phone number or user ID</label>\n\
         <input id=\"identifier\" name=\"identifier\" type=\"text\" value=\"{value}\" \
         autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" \
         maxlength=\"256\" required autofocus{aria}>\n\
         <p class=\"hint\" id=\"identifier-hint\">We will send a one-time code to it.</p>\n\
         <button type=\"submit\">Send code</button>\
         <button type=\"submit\" class=\"secondary\" formaction=\"{cancel}\" formnovalidate>Cancel</button>\n\
         </form>",
        client = esc(&p.client_name),
        send = esc(&a.send),
        cancel = esc(&a.cancel),
        challenge = esc(challenge),
        value = esc(value),
    );
    page(status, "Sign in", &body, p)
}

fn otp_step(
    state: &AppState,
    p: &PendingLogin,
    challenge: &str,
    identifier: &str,
    minutes: i64,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let a = Actions::new(state);
    let (error_html, aria) = error_parts("otp", error);
    let body = format!(
        "<h1>Enter your code</h1>\n\
         <p>We sent a 6-digit code to <strong>{identifier}</strong>. \
         It works once, for {minutes} {unit}.</p>\n\
         {error_html}\
         <form method=\"post\" action=\"{verify}\">\n\
         <input type=\"hidden\" name=\"login_challenge\" value=\"{challenge}\">\n\
         <input type=\"hidden\" name=\"identifier\" value=\"{identifier}\">\n\
         <label for=\"otp\">One-time code</label>\n\
         <input id=\"otp\" name=\"otp\" type=\"text\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" \
         required autofocus{aria}>\n\
         <p class=\"hint\" id=\"otp-hint\">6 digits, sent to you for {client}.</p>\n\
         <button type=\"submit\">Sign in</button>\
         <button type=\"submit\" class=\"secondary\" formaction=\"{send}\" formnovalidate>Send a new code</button>\
         <button type=\"submit\" class=\"secondary\" formaction=\"{cancel}\" formnovalidate>Cancel</button>\n\
         </form>",
        identifier = esc(identifier),
        unit = if minutes == 1 { "minute" } else { "minutes" },
        client = esc(&p.client_name),
        verify = esc(&a.verify),
        send = esc(&a.send),
        cancel = esc(&a.cancel),
        challenge = esc(challenge),
    );
    page(status, "Enter your code", &body, p)
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<h1>{}</h1>\n<p role=\"alert\">{}</p>\n\
         <p>Go back to the application you were signing in to and start again.</p>",
        esc(title),
        esc(text)
    );
    html_page(status, title, &body, None)
}

/// The challenge is unknown, expired, used or cancelled.
fn dead() -> Response {
    message(
        StatusCode::GONE,
        "This sign-in request has expired",
        "A sign-in request works once and for a few minutes. This one has \
         expired, was already used, or was cancelled.",
    )
}

fn no_request() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "No sign-in request",
        "This page is opened by an application that asks you to sign in; \
         the link you followed does not name a sign-in request.",
    )
}

/// Not the user's fault: logged (by the error mapping) and told plainly.
fn failure(e: EngineError) -> Response {
    let e = ApiError::from(e);
    message(
        e.status,
        "Something went wrong",
        "Sign-in is not available at the moment. Wait a little and try again.",
    )
}

/// `303 See Other` after a form post: the browser follows with a GET.
fn see_other(location: &str) -> Response {
    crate::server::oauth::redirect(StatusCode::SEE_OTHER, location)
}
