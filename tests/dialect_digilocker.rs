//! The DigiLocker OAuth 2.0 dialect and the native authorization-code flow,
//! end to end against the real server: authorize → login (the login
//! application API, the built-in page over HTTP, and a real browser) →
//! token → user → refresh → revoke (the seed's own request), and every
//! token of the grant refused afterwards, through the dialect, through
//! `/oauth2/introspect` and in the admin session list.
//!
//! Two tests run third-party clients written in Python: authlib
//! (`tests/python/digilocker_client.py`) and headless Chromium through
//! selenium (`tests/python/login_browser.py`). Without those packages they
//! skip with a message, except under CI (`CI` set), where they fail.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{s, TestApp};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tessera::config::Settings;
use tessera::core::engine::s256;
use tessera::core::secrets::random_token;
use tessera::core::Clock;

const DL: &str = "/public/oauth2/1";
const REDIRECT: &str = "http://127.0.0.1:9999/cb";

// ---------------------------------------------------------------------------
// helpers

/// The OTP webhook: records every delivery and serves the latest code of a
/// login at `GET /otp?login=…` (`{"otp", "count"}`) for the Python drivers.
#[derive(Clone, Default)]
struct OtpSink {
    sent: Arc<Mutex<Vec<Value>>>,
}

impl OtpSink {
    async fn start() -> (Self, String) {
        let sink = Self::default();
        let app = Router::new()
            .route("/otp", post(record).get(latest))
            .with_state(sink.clone());
        let addr = serve(app).await;
        (sink, format!("http://{addr}/otp"))
    }

    fn latest(&self, login: &str) -> Option<Value> {
        let sent = self.sent.lock().unwrap();
        sent.iter().rev().find(|m| m["login"] == login).cloned()
    }

    fn otp(&self, login: &str) -> String {
        let m = self
            .latest(login)
            .unwrap_or_else(|| panic!("no OTP sent to {login}"));
        s(&m, "otp")
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

async fn record(State(sink): State<OtpSink>, Json(v): Json<Value>) -> StatusCode {
    sink.sent.lock().unwrap().push(v);
    StatusCode::NO_CONTENT
}

async fn latest(
    State(sink): State<OtpSink>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let login = q.get("login").ok_or(StatusCode::BAD_REQUEST)?;
    let count = {
        let sent = sink.sent.lock().unwrap();
        sent.iter().filter(|m| m["login"] == login.as_str()).count()
    };
    let m = sink.latest(login).ok_or(StatusCode::NOT_FOUND)?;
    Ok(Json(json!({"otp": m["otp"], "count": count})))
}

/// A client's redirect target: records each query string and shows a page.
#[derive(Clone, Default)]
struct Callback {
    hits: Arc<Mutex<Vec<String>>>,
}

impl Callback {
    async fn start() -> (Self, String) {
        let cb = Self::default();
        let app = Router::new()
            .route("/cb", get(callback))
            .with_state(cb.clone());
        let addr = serve(app).await;
        (cb, format!("http://{addr}/cb"))
    }
}

async fn callback(
    State(cb): State<Callback>,
    RawQuery(q): RawQuery,
) -> axum::response::Html<&'static str> {
    cb.hits.lock().unwrap().push(q.unwrap_or_default());
    axum::response::Html("<!doctype html><title>client</title><h1>callback received</h1>")
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url:?} is not a URL: {e}"))
        .query_pairs()
        .into_owned()
        .collect()
}

fn location(h: &HeaderMap) -> String {
    h.get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

fn pkce() -> (String, String) {
    let verifier = random_token(48);
    let challenge = s256(&verifier);
    (verifier, challenge)
}

/// A server, a client registered for the code flow, and an HTTP client
/// that does not follow redirects.
struct Flow {
    app: TestApp,
    nr: reqwest::Client,
    id: String,
    secret: String,
    redirect: String,
}

/// One authorization request in progress.
struct Started {
    challenge: String,
    verifier: String,
    state: String,
}

impl Flow {
    async fn new() -> Self {
        Self::with(|_| {}, REDIRECT).await
    }

    async fn with(tweak: impl FnOnce(&mut Settings), redirect: &str) -> Self {
        let app = TestApp::spawn_with(tweak).await;
        let (id, secret) = app
            .create_client(json!({
                "name": "Asha's <Locker> & Co",
                "redirect_uris": [redirect, "http://127.0.0.1:9999/other"],
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .await;
        let nr = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            app,
            nr,
            id,
            secret,
            redirect: redirect.to_owned(),
        }
    }

    fn c(&self) -> (&str, &str) {
        (&self.id, &self.secret)
    }

    /// GET an authorization endpoint with these parameters.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
        let url = url::Url::parse_with_params(&self.app.url(path), params).unwrap();
        self.nr.get(url).send().await.expect("request")
    }

    /// The usual parameters of a good request, with `extra` replacing or
    /// adding some (an empty value removes one).
    fn params<'a>(
        &'a self,
        challenge: &'a str,
        state: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut p = vec![
            ("response_type", "code"),
            ("client_id", self.id.as_str()),
            ("redirect_uri", self.redirect.as_str()),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("scope", "openid"),
        ];
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        p
    }

    /// Start an authorization at `path`; returns the login challenge.
    async fn start_at(&self, path: &str, extra: &[(&str, &str)]) -> Started {
        let (verifier, challenge) = pkce();
        let state = random_token(12);
        let resp = self
            .get(path, &self.params(&challenge, &state, extra))
            .await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{:?}", resp.text().await);
        let loc = location(resp.headers());
        assert!(
            loc.starts_with(&format!("{}/login?", self.app.base)),
            "{loc}"
        );
        let q = query_of(&loc);
        Started {
            challenge: q["login_challenge"].clone(),
            verifier,
            state,
        }
    }

    async fn start(&self) -> Started {
        self.start_at(&format!("{DL}/authorize"), &[]).await
    }

    async fn accept(&self, challenge: &str, subject: &str, claims: Value) -> (StatusCode, Value) {
        self.app
            .admin(
                Method::PUT,
                &format!("/admin/login/{challenge}/accept"),
                Some(json!({"subject": subject, "claims": claims})),
            )
            .await
    }

    /// Authorize and log in through the admin API; returns (code, verifier).
    async fn code(&self, subject: &str, claims: Value) -> (String, String) {
        let st = self.start().await;
        let (status, v) = self.accept(&st.challenge, subject, claims).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let back = s(&v, "redirect_to");
        assert!(back.starts_with(&format!("{}?", self.redirect)), "{back}");
        let q = query_of(&back);
        assert_eq!(q["state"], st.state);
        (q["code"].clone(), st.verifier)
    }

    /// POST the DigiLocker token endpoint with Basic client auth.
    async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (status, v, _) = self
            .app
            .form(&format!("{DL}/token"), Some(self.c()), form)
            .await;
        (status, v)
    }

    async fn redeem(&self, code: &str, verifier: &str) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// A whole grant: the token response.
    async fn open(&self, subject: &str) -> Value {
        let (code, verifier) = self.code(subject, claims()).await;
        let (status, t) = self.redeem(&code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        t
    }

    async fn user(&self, token: &str) -> (StatusCode, Value, HeaderMap) {
        let resp = self
            .nr
            .get(self.app.url(&format!("{DL}/user")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, resp.json().await.unwrap_or(Value::Null), headers)
    }

    async fn refresh(&self, rt: &str) -> (StatusCode, Value) {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
            .await
    }

    /// Every way a token of a revoked grant must be refused.
    async fn assert_all_refused(&self, subject: &str, access: &[&str], refresh: &[&str]) {
        for at in access {
            let (status, v, h) = self.user(at).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
            assert_eq!(
                v,
                json!({"error": "invalid_token", "error_description": "The access token is invalid"})
            );
            assert_eq!(h["www-authenticate"], "Bearer error=\"invalid_token\"");
            assert!(
                !self.app.active(self.c(), at).await,
                "access token inactive"
            );
        }
        for rt in refresh {
            let (status, v) = self.refresh(rt).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
            assert_eq!(v["error"], "invalid_grant");
            assert!(
                !self.app.active(self.c(), rt).await,
                "refresh token inactive"
            );
        }
        let sessions = self.app.sessions_of(subject).await;
        assert!(!sessions.is_empty());
        for s in &sessions {
            assert_ne!(s["status"], "active", "{s}");
        }
    }
}

fn claims() -> Value {
    json!({
        "digilockerid": "8c0f0e6a-1a5b-4a59-9d2f-0a1c9e8b7d66",
        "name": "Asha Verma",
        "dob": "01011990",
        "gender": "F",
        "eaadhaar": "Y",
        "reference_key": "2a3b",
    })
}

// ---------------------------------------------------------------------------
// the flow

#[tokio::test]
async fn full_flow_through_the_login_application_api() {
    let f = Flow::new().await;
    let st = f.start().await;

    // The login application reads what it is asked to approve.
    let (status, pending) = f
        .app
        .admin(Method::GET, &format!("/admin/login/{}", st.challenge), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    assert_eq!(pending["client_id"], f.id.as_str());
    assert_eq!(pending["client_name"], "Asha's <Locker> & Co");
    assert_eq!(pending["scope"], "openid");
    assert_eq!(pending["dialect"], "digilocker");
    assert!(pending["expires_at"].as_i64().unwrap() > f.app.clock.now());

    let (status, v) = f.accept(&st.challenge, "asha", claims()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let q = query_of(&s(&v, "redirect_to"));
    assert_eq!(q["state"], st.state);
    assert_eq!(q.len(), 2, "code and state only: {q:?}");

    let (status, t) = f.redeem(&q["code"], &st.verifier).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "openid");
    for (k, v) in claims().as_object().unwrap() {
        assert_eq!(&t[k], v, "{k} in {t}");
    }
    let (at, rt) = (s(&t, "access_token"), s(&t, "refresh_token"));

    let (status, user, _) = f.user(&at).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["sub"], "asha");
    assert_eq!(user["name"], "Asha Verma");
    assert_eq!(user["digilockerid"], claims()["digilockerid"]);

    // Refresh: new access and refresh tokens, the user fields again.
    let (status, t2) = f.refresh(&rt).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert_ne!(s(&t2, "refresh_token"), rt);
    assert_ne!(s(&t2, "access_token"), at);
    assert_eq!(t2["eaadhaar"], "Y");
    assert!(f.app.active(f.c(), &s(&t2, "access_token")).await);

    let sessions = f.app.sessions_of("asha").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["dialect"], "digilocker");
    assert_eq!(sessions[0]["status"], "active");

    // The challenge is spent.
    let (status, v) = f.accept(&st.challenge, "asha", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "not_found");
}

#[tokio::test]
async fn the_seeds_revoke_request_ends_every_token_of_the_grant() {
    let f = Flow::new().await;
    let t = f.open("seed-user").await;
    let (at0, rt0) = (s(&t, "access_token"), s(&t, "refresh_token"));
    let (_, t1) = f.refresh(&rt0).await;
    let (at1, rt1) = (s(&t1, "access_token"), s(&t1, "refresh_token"));
    assert!(f.app.active(f.c(), &at1).await);

    // The seed: curl --request POST --url …/public/oauth2/1/revoke
    //   --header 'accept: application/json' --header 'content-type: application/json'
    // with the documented fields as its JSON body.
    let resp = f
        .app
        .http
        .post(f.app.url(&format!("{DL}/revoke")))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(
            json!({
                "token": at1,
                "token_type_hint": "access_token",
                "client_id": f.id,
                "client_secret": f.secret,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"revoked": true})
    );

    f.assert_all_refused("seed-user", &[&at0, &at1], &[&rt0, &rt1])
        .await;
    let sessions = f.app.sessions_of("seed-user").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["status"], "token_revoked");
    assert_eq!(sessions[0]["ended_by"], format!("client:{}", f.id));

    // Revoking again, or the refresh token of the ended grant: still 200.
    for token in [&at1, &rt1] {
        let (status, v, _) = f
            .app
            .form(&format!("{DL}/revoke"), Some(f.c()), &[("token", token)])
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"revoked": true}));
    }
}

#[tokio::test]
async fn revoke_accepts_form_with_basic_form_with_secret_and_json() {
    let f = Flow::new().await;
    let url = f.app.url(&format!("{DL}/revoke"));
    let http = &f.app.http;

    // Form + Basic, revoking the refresh token: the access token dies too.
    let t = f.open("rv-basic").await;
    let (status, v, _) = f
        .app
        .form(
            &format!("{DL}/revoke"),
            Some(f.c()),
            &[
                ("token", &s(&t, "refresh_token")),
                ("token_type_hint", "refresh_token"),
            ],
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"revoked": true})));
    f.assert_all_refused(
        "rv-basic",
        &[&s(&t, "access_token")],
        &[&s(&t, "refresh_token")],
    )
    .await;

    // Form + client_id/client_secret, with a wrong hint (ignored).
    let t = f.open("rv-post").await;
    let (status, v, _) = f
        .app
        .form(
            &format!("{DL}/revoke"),
            None,
            &[
                ("token", &s(&t, "access_token")),
                ("token_type_hint", "refresh_token"),
                ("client_id", &f.id),
                ("client_secret", &f.secret),
            ],
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"revoked": true})));
    f.assert_all_refused(
        "rv-post",
        &[&s(&t, "access_token")],
        &[&s(&t, "refresh_token")],
    )
    .await;

    // JSON + Basic, with a hint nobody knows (ignored).
    let t = f.open("rv-json-basic").await;
    let resp = http
        .post(&url)
        .basic_auth(&f.id, Some(&f.secret))
        .json(&json!({"token": s(&t, "refresh_token"), "token_type_hint": "id_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"revoked": true})
    );
    f.assert_all_refused(
        "rv-json-basic",
        &[&s(&t, "access_token")],
        &[&s(&t, "refresh_token")],
    )
    .await;

    // JSON with the credentials inside.
    let t = f.open("rv-json").await;
    let resp = http
        .post(&url)
        .json(
            &json!({"token": s(&t, "access_token"), "client_id": f.id, "client_secret": f.secret}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    f.assert_all_refused(
        "rv-json",
        &[&s(&t, "access_token")],
        &[&s(&t, "refresh_token")],
    )
    .await;

    // Unknown tokens: 200 as well (RFC 7009 §2.2).
    let (status, v, _) = f
        .app
        .form(
            &format!("{DL}/revoke"),
            Some(f.c()),
            &[("token", "no-such-token")],
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"revoked": true})));

    // Missing token: 400 invalid_request; bad client: 401 invalid_client.
    let (status, v, _) = f
        .app
        .form(
            &format!("{DL}/revoke"),
            Some(f.c()),
            &[("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_request");
    let resp = http
        .post(&url)
        .json(&json!({"client_id": f.id, "client_secret": f.secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let t = f.open("rv-bad-client").await;
    for (basic, body) in [
        (
            Some((f.id.as_str(), "wrong")),
            json!({"token": s(&t, "access_token")}),
        ),
        (
            None,
            json!({"token": s(&t, "access_token"), "client_id": f.id, "client_secret": "wrong"}),
        ),
        (None, json!({"token": s(&t, "access_token")})),
    ] {
        let mut rb = http.post(&url).json(&body);
        if let Some((id, secret)) = basic {
            rb = rb.basic_auth(id, Some(secret));
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_client"
        );
    }
    // The seed's request exactly as printed (no body, no credentials).
    let resp = http
        .post(&url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        f.app.active(f.c(), &s(&t, "access_token")).await,
        "nothing was ended"
    );

    // Another client cannot end this client's grant (and learns nothing).
    let (other_id, other_secret) = f.app.new_client().await;
    let (status, v, _) = f
        .app
        .form(
            &format!("{DL}/revoke"),
            Some((&other_id, &other_secret)),
            &[("token", &s(&t, "access_token"))],
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"revoked": true})));
    assert!(f.app.active(f.c(), &s(&t, "access_token")).await);
}

#[tokio::test]
async fn a_wrong_code_verifier_is_invalid_grant_and_burns_the_code() {
    let f = Flow::new().await;
    let (code, verifier) = f.code("pkce-user", json!({})).await;
    let (other, _) = pkce();
    let (status, v) = f.redeem(&code, &other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_grant");
    let (status, v) = f.redeem(&code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_grant");
    assert!(f.app.sessions_of("pkce-user").await.is_empty());

    // A missing verifier is a malformed request; the code survives it.
    let (code, verifier) = f.code("pkce-user", json!({})).await;
    let (status, v) = f
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_request");
    let (status, v) = f.redeem(&code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_ends_the_session_it_produced() {
    let f = Flow::new().await;
    let (code, verifier) = f.code("replay-user", claims()).await;
    let (status, t) = f.redeem(&code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let (at, rt) = (s(&t, "access_token"), s(&t, "refresh_token"));
    assert!(f.app.active(f.c(), &at).await);

    let (status, v) = f.redeem(&code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_grant");
    f.assert_all_refused("replay-user", &[&at], &[&rt]).await;
    let sessions = f.app.sessions_of("replay-user").await;
    assert_eq!(sessions[0]["status"], "code_replay");
}

#[tokio::test]
async fn codes_and_login_challenges_expire() {
    let f = Flow::new().await;
    let (code, verifier) = f.code("slow-user", json!({})).await;
    f.app.clock.advance(61);
    let (status, v) = f.redeem(&code, &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_grant");

    let st = f.start().await;
    f.app.clock.advance(601);
    let (status, v) = f.accept(&st.challenge, "slow-user", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, _) = f
        .app
        .admin(Method::GET, &format!("/admin/login/{}", st.challenge), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp =
        f.nr.get(
            f.app
                .url(&format!("/login?login_challenge={}", st.challenge)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GONE);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("This sign-in request has expired"));

    // An access token past its expiry is refused by the user endpoint.
    let t = f.open("slow-user").await;
    f.app.clock.advance(3601);
    let (status, v, _) = f.user(&s(&t, "access_token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "invalid_token");
}

// ---------------------------------------------------------------------------
// authorization request errors

#[tokio::test]
async fn bad_client_or_redirect_uri_gets_a_400_and_no_redirect() {
    let f = Flow::new().await;
    let (_, challenge) = pkce();
    let path = format!("{DL}/authorize");
    for extra in [
        vec![("redirect_uri", "http://127.0.0.1:9999/cb/extra")],
        vec![("redirect_uri", "https://evil.example/cb")],
        vec![("client_id", "tc_nobody")],
        vec![("client_id", "")],
        vec![("client_id", "bad id with spaces")],
    ] {
        let resp = f.get(&path, &f.params(&challenge, "st", &extra)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{extra:?}");
        assert!(resp.headers().get(LOCATION).is_none(), "{extra:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request", "{v}");
    }

    // A browser gets a page, with the page headers.
    let url = url::Url::parse_with_params(
        &f.app.url(&path),
        f.params(
            &challenge,
            "st",
            &[("redirect_uri", "https://evil.example/<cb>")],
        ),
    )
    .unwrap();
    let resp =
        f.nr.get(url)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(LOCATION).is_none());
    assert!(resp.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("redirect_uri is missing or is not registered"),
        "{html}"
    );
    assert!(!html.contains("<cb>"));

    // A client with one registered URI may leave redirect_uri out.
    let one = Flow::new_single().await;
    let st = one.start_at(&path, &[("redirect_uri", "")]).await;
    let (status, v) = one.accept(&st.challenge, "u", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(s(&v, "redirect_to").starts_with(REDIRECT));
}

impl Flow {
    /// A client with a single redirect URI.
    async fn new_single() -> Self {
        let mut f = Self::new().await;
        let (id, secret) = f
            .app
            .create_client(json!({
                "name": "single",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .await;
        f.id = id;
        f.secret = secret;
        f
    }
}

#[tokio::test]
async fn a_redirect_uri_other_than_the_authorized_one_is_invalid_grant() {
    let f = Flow::new().await;
    let (code, verifier) = f.code("mismatch-user", json!({})).await;
    let (status, v) = f
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9999/other"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "invalid_grant");
}

#[tokio::test]
async fn request_errors_go_back_to_the_client_by_redirect() {
    let f = Flow::new().await;
    let (_, challenge) = pkce();
    let path = format!("{DL}/authorize");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("code_challenge_method", "")], "invalid_request"),
        (&[("code_challenge_method", "plain")], "invalid_request"),
        (&[("code_challenge_method", "s256")], "invalid_request"),
        (&[("code_challenge", "")], "invalid_request"),
        (&[("code_challenge", "too-short")], "invalid_request"),
        (&[("response_type", "token")], "unsupported_response_type"),
        (&[("response_type", "")], "invalid_request"),
        (&[("scope", "a\\b")], "invalid_scope"),
        (&[("prompt", "none")], "login_required"),
    ];
    for (extra, error) in cases {
        let resp = f.get(&path, &f.params(&challenge, "xyz 1", extra)).await;
        assert_eq!(resp.status(), StatusCode::FOUND, "{extra:?}");
        let loc = location(resp.headers());
        assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
        let q = query_of(&loc);
        assert_eq!(q["error"], *error, "{extra:?}: {loc}");
        assert!(!q["error_description"].is_empty());
        assert_eq!(q["state"], "xyz 1", "state comes back: {loc}");
        assert!(!q.contains_key("code"));
    }

    // Without state, none comes back.
    let resp = f
        .get(
            &path,
            &f.params(&challenge, "", &[("response_type", "token")]),
        )
        .await;
    assert!(!query_of(&location(resp.headers())).contains_key("state"));

    // A client not allowed the code flow: unauthorized_client, by redirect.
    let (id, _) = f
        .app
        .create_client(json!({
            "name": "no code flow",
            "redirect_uris": [REDIRECT],
            "grant_types": ["client_credentials"],
        }))
        .await;
    let resp = f
        .get(&path, &f.params(&challenge, "s", &[("client_id", &id)]))
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        query_of(&location(resp.headers()))["error"],
        "unauthorized_client"
    );
}

#[tokio::test]
async fn reject_sends_access_denied_and_the_login_api_needs_the_admin_token() {
    let f = Flow::new().await;
    let st = f.start().await;
    let (status, v) = f
        .app
        .admin(
            Method::PUT,
            &format!("/admin/login/{}/reject", st.challenge),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let q = query_of(&s(&v, "redirect_to"));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], st.state);
    let (status, _) = f.accept(&st.challenge, "x", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let st = f.start().await;
    let (status, v) = f
        .app
        .admin(
            Method::PUT,
            &format!("/admin/login/{}/reject", st.challenge),
            Some(json!({"error_description": "Consent withheld"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        query_of(&s(&v, "redirect_to"))["error_description"],
        "Consent withheld"
    );

    // Unknown challenges: 404 in the native shape.
    for (method, path) in [
        (Method::GET, "/admin/login/nope"),
        (Method::PUT, "/admin/login/nope/reject"),
    ] {
        let (status, v) = f.app.admin(method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"], "not_found");
    }
    let (status, v) = f.accept("nope", "x", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");

    // Bad bodies: 400.
    let st = f.start().await;
    for body in [
        json!({"claims": {}}),
        json!({"subject": ""}),
        json!({"subject": "x", "claims": [1]}),
    ] {
        let (status, v) = f
            .app
            .admin(
                Method::PUT,
                &format!("/admin/login/{}/accept", st.challenge),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"], "invalid_request");
    }

    // No admin token, or a client's secret instead: 401, nothing accepted.
    for auth in [
        None,
        Some(format!("Bearer {}", f.secret)),
        Some("Basic Zm9vOmJhcg==".into()),
    ] {
        let mut rb =
            f.nr.put(f.app.url(&format!("/admin/login/{}/accept", st.challenge)))
                .json(&json!({"subject": "mallory"}));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "invalid_token"
        );
    }
    let (status, v) = f.accept(&st.challenge, "still-pending", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_login_url_is_configurable_and_keeps_its_query() {
    let f = Flow::with(
        |s| s.login_url = Some("https://login.example/sign-in?tenant=7".into()),
        REDIRECT,
    )
    .await;
    let (_, challenge) = pkce();
    let resp = f
        .get(
            &format!("{DL}/authorize"),
            &f.params(&challenge, "s", &[("login_hint", "asha@example.in")]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = location(resp.headers());
    assert!(
        loc.starts_with("https://login.example/sign-in?tenant=7&login_challenge="),
        "{loc}"
    );
    assert_eq!(query_of(&loc)["login_hint"], "asha@example.in");
}

// ---------------------------------------------------------------------------
// the user endpoint

#[tokio::test]
async fn the_user_endpoint_refuses_missing_and_garbage_tokens() {
    let f = Flow::new().await;
    let resp =
        f.nr.get(f.app.url(&format!("{DL}/user")))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"tessera\""
    );
    for token in ["garbage", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
        let (status, v, h) = f.user(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(
            v,
            json!({"error": "invalid_token", "error_description": "The access token is invalid"})
        );
        assert_eq!(h["www-authenticate"], "Bearer error=\"invalid_token\"");
    }
    // Claims never replace `sub`.
    let (code, verifier) = f
        .code("real-sub", json!({"sub": "forged", "name": "N"}))
        .await;
    let (_, t) = f.redeem(&code, &verifier).await;
    let (status, user, _) = f.user(&s(&t, "access_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user, json!({"sub": "real-sub", "name": "N"}));
}

// ---------------------------------------------------------------------------
// the native flow

#[tokio::test]
async fn the_native_authorization_code_flow() {
    let f = Flow::new().await;
    let (status, meta) = {
        let r =
            f.nr.get(f.app.url("/.well-known/oauth-authorization-server"))
                .send()
                .await
                .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{}/oauth2/authorize", f.app.base)
    );
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert!(meta["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code")));

    let st = f.start_at("/oauth2/authorize", &[]).await;
    let (status, v) = f
        .accept(&st.challenge, "native-user", json!({"name": "N"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let q = query_of(&s(&v, "redirect_to"));
    let (status, t, _) = f
        .app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &st.verifier),
                ("client_id", &f.id),
                ("client_secret", &f.secret),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(
        t.get("name").is_none(),
        "the native response is plain RFC 6749: {t}"
    );
    assert!(f.app.active(f.c(), &s(&t, "access_token")).await);
    let sessions = f.app.sessions_of("native-user").await;
    assert_eq!(sessions[0]["dialect"], "native");

    // Replay at the native endpoint ends the session too.
    let (status, v, _) = f
        .app
        .form(
            "/oauth2/token",
            Some(f.c()),
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("code_verifier", &st.verifier),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(!f.app.active(f.c(), &s(&t, "access_token")).await);

    // The native revocation endpoint ends a DigiLocker grant as well.
    let t = f.open("cross-user").await;
    assert_eq!(
        f.app.revoke(f.c(), &s(&t, "access_token"), None).await,
        StatusCode::OK
    );
    f.assert_all_refused(
        "cross-user",
        &[&s(&t, "access_token")],
        &[&s(&t, "refresh_token")],
    )
    .await;
}

// ---------------------------------------------------------------------------
// the built-in login page, over plain HTTP

/// A flow whose OTPs go to an in-test webhook; also returns the URL that
/// serves the latest code of a login.
async fn page_flow_at(redirect: &str) -> (Flow, OtpSink, String) {
    let (sink, url) = OtpSink::start().await;
    let f = Flow::with(|s| s.otp_webhook = Some(url.clone()), redirect).await;
    (f, sink, url)
}

async fn page_flow(redirect: &str) -> (Flow, OtpSink) {
    let (f, sink, _) = page_flow_at(redirect).await;
    (f, sink)
}

impl Flow {
    async fn post_page(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, HeaderMap) {
        let resp = self
            .nr
            .post(self.app.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, resp.text().await.unwrap(), headers)
    }
}

#[tokio::test]
async fn the_login_page_logs_in_with_a_one_time_code() {
    let (f, otps) = page_flow(REDIRECT).await;
    let st = f
        .start_at(
            &format!("{DL}/authorize"),
            &[("login_hint", "\"><script>x</script>")],
        )
        .await;

    let resp =
        f.nr.get(f.app.url(&format!(
            "/login?login_challenge={}&login_hint=%22%3E%3Cscript%3Ex%3C%2Fscript%3E",
            st.challenge
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://127.0.0.1:9999"
        ),
        "{csp}"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("<label for=\"identifier\">"), "{html}");
    assert!(html.contains("autocomplete=\"username\""));
    assert!(
        html.contains("Asha&#39;s &lt;Locker&gt; &amp; Co"),
        "client name escaped"
    );
    assert!(!html.contains("<Locker>"));
    assert!(!html.contains("<script>"), "login_hint escaped");
    assert!(html.contains("&quot;&gt;&lt;script&gt;"));
    assert!(!html.contains("<script"), "no script at all");

    // Step 1: identifier → the OTP goes to the webhook.
    let (status, html, _) = f
        .post_page(
            "/login",
            &[
                ("login_challenge", &st.challenge),
                ("identifier", " asha@example.in "),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("autocomplete=\"one-time-code\""), "{html}");
    assert!(html.contains("<label for=\"otp\">"));
    let sent = otps.latest("asha@example.in").expect("OTP delivered");
    assert_eq!(sent["purpose"], "login");
    assert_eq!(sent["client_id"], f.id.as_str());
    let otp = otps.otp("asha@example.in");
    assert_eq!(otp.len(), 6);

    // A wrong code: the form again, with the attempts left.
    let wrong = format!("{:06}", (otp.parse::<u32>().unwrap() + 1) % 1_000_000);
    let verify = |code: String| {
        let challenge = st.challenge.clone();
        let f = &f;
        async move {
            f.post_page(
                "/login/verify",
                &[
                    ("login_challenge", challenge.as_str()),
                    ("identifier", "asha@example.in"),
                    ("otp", code.as_str()),
                ],
            )
            .await
        }
    };
    let (status, html, _) = verify(wrong.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("role=\"alert\""), "{html}");
    assert!(html.contains("4 attempts left"), "{html}");
    assert!(html.contains("aria-invalid=\"true\""));

    // The right code: 303 to the client with a code and the state.
    let (status, _, h) = verify(otp.clone()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h["referrer-policy"], "no-referrer");
    let q = query_of(&location(&h));
    assert_eq!(q["state"], st.state);
    let (status, t) = f.redeem(&q["code"], &st.verifier).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["login"], "asha@example.in");
    let (_, user, _) = f.user(&s(&t, "access_token")).await;
    assert_eq!(
        user,
        json!({"sub": "asha@example.in", "login": "asha@example.in"})
    );

    // The challenge is spent: a clear page.
    let (status, html, _) = verify(otp).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("This sign-in request has expired"), "{html}");
}

#[tokio::test]
async fn the_login_page_handles_too_many_wrong_codes_cancel_and_forgery() {
    let (f, otps) = page_flow(REDIRECT).await;
    let st = f.start().await;
    let send = [
        ("login_challenge", st.challenge.as_str()),
        ("identifier", "ravi"),
    ];
    let (status, _, _) = f.post_page("/login", &send).await;
    assert_eq!(status, StatusCode::OK);
    let otp = otps.otp("ravi");
    let wrong = format!("{:06}", (otp.parse::<u32>().unwrap() + 1) % 1_000_000);
    let attempt = |code: &str| {
        let form = vec![
            ("login_challenge", st.challenge.clone()),
            ("identifier", "ravi".to_owned()),
            ("otp", code.to_owned()),
        ];
        let f = &f;
        async move {
            let resp =
                f.nr.post(f.app.url("/login/verify"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    for left in [4, 3, 2, 1] {
        let (_, html) = attempt(&wrong).await;
        let unit = if left == 1 { "attempt" } else { "attempts" };
        assert!(html.contains(&format!("{left} {unit} left")), "{html}");
    }
    let (status, html) = attempt(&wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Too many wrong codes"), "{html}");
    assert!(html.contains("name=\"identifier\""), "back to step 1");
    // The dead code no longer works; a new one does.
    let (_, html) = attempt(&otp).await;
    assert!(html.contains("Request a new one"), "{html}");
    let before = otps.count();
    f.post_page("/login", &send).await;
    assert_eq!(otps.count(), before + 1);
    let (status, _) = attempt(&otps.otp("ravi")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Not six digits: asked again, no attempt spent.
    let st = f.start().await;
    f.post_page(
        "/login",
        &[("login_challenge", &st.challenge), ("identifier", "ravi")],
    )
    .await;
    let (status, html, _) = f
        .post_page(
            "/login/verify",
            &[
                ("login_challenge", &st.challenge),
                ("identifier", "ravi"),
                ("otp", "12ab"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Enter the 6-digit code"), "{html}");

    // A cross-site post is refused; the challenge stays usable.
    let resp =
        f.nr.post(f.app.url("/login/cancel"))
            .header("sec-fetch-site", "cross-site")
            .form(&[("login_challenge", &st.challenge)])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Cancel: back to the client with access_denied.
    let (status, _, h) = f
        .post_page("/login/cancel", &[("login_challenge", &st.challenge)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let q = query_of(&location(&h));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], st.state);

    // No challenge, an unknown one, an empty identifier, a JSON body.
    let resp = f.nr.get(f.app.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp =
        f.nr.get(f.app.url("/login?login_challenge=nope"))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::GONE);
    let st = f.start().await;
    let (status, html, _) = f
        .post_page(
            "/login",
            &[("login_challenge", &st.challenge), ("identifier", "  ")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Enter your email address"), "{html}");
    let resp =
        f.nr.post(f.app.url("/login"))
            .json(&json!({"login_challenge": st.challenge}))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_failed_otp_delivery_is_reported_on_the_page() {
    // Nothing listens on port 9 of loopback (discard); delivery fails.
    let f = Flow::with(
        |s| s.otp_webhook = Some("http://127.0.0.1:9/otp".into()),
        REDIRECT,
    )
    .await;
    let st = f.start().await;
    let (status, html, _) = f
        .post_page(
            "/login",
            &[("login_challenge", &st.challenge), ("identifier", "ravi")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(html.contains("could not send a code"), "{html}");
}

// ---------------------------------------------------------------------------
// never a 5xx for a client mistake

#[tokio::test]
async fn client_mistakes_never_get_a_5xx() {
    let f = Flow::new().await;
    let base = &f.app.base;
    let big = "a".repeat(5_000);
    let gets = [
        format!("{DL}/authorize"),
        format!("{DL}/authorize?%ff=1"),
        format!("{DL}/authorize?client_id=a&client_id=b"),
        format!("{DL}/authorize?client_id={}&state={big}", f.id),
        format!(
            "{DL}/authorize?client_id={}&redirect_uri={REDIRECT}&login_hint={big}",
            f.id
        ),
        "/oauth2/authorize?response_type=code".to_owned(),
        "/login?login_challenge=%ff".to_owned(),
        format!("/login?login_challenge={big}"),
        format!("{DL}/user"),
    ];
    for path in &gets {
        let resp = f.nr.get(format!("{base}{path}")).send().await.unwrap();
        assert!(
            resp.status().as_u16() < 500,
            "GET {path}: {}",
            resp.status()
        );
    }
    let posts: Vec<(String, &str, Vec<u8>)> = vec![
        (format!("{DL}/token"), "application/json", b"{}".to_vec()),
        (
            format!("{DL}/token"),
            "application/x-www-form-urlencoded",
            b"grant_type=password".to_vec(),
        ),
        (
            format!("{DL}/token"),
            "application/x-www-form-urlencoded",
            b"%ff".to_vec(),
        ),
        (format!("{DL}/revoke"), "text/plain", b"token=x".to_vec()),
        (
            format!("{DL}/revoke"),
            "application/json",
            b"[1,2]".to_vec(),
        ),
        (
            format!("{DL}/revoke"),
            "application/json",
            b"{\"token\":".to_vec(),
        ),
        (
            format!("{DL}/revoke"),
            "application/json",
            vec![b'{'; 2 * 1024 * 1024],
        ),
        (
            "/login".into(),
            "application/x-www-form-urlencoded",
            b"login_challenge=a&login_challenge=b".to_vec(),
        ),
        (
            "/login/verify".into(),
            "application/x-www-form-urlencoded",
            b"otp=1".to_vec(),
        ),
        (
            "/login/cancel".into(),
            "application/x-www-form-urlencoded",
            vec![b'a'; 2 * 1024 * 1024],
        ),
    ];
    for (path, ct, body) in posts {
        let resp =
            f.nr.post(format!("{base}{path}"))
                .basic_auth(&f.id, Some(&f.secret))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
        assert!(
            resp.status().as_u16() < 500,
            "POST {path} ({ct}): {}",
            resp.status()
        );
    }
    for (method, path) in [
        (Method::PUT, "/admin/login/x/accept"),
        (Method::PUT, "/admin/login/%ff/reject"),
        (Method::POST, "/admin/login/x/accept"),
        (Method::DELETE, "/public/oauth2/1/user"),
    ] {
        let resp =
            f.nr.request(method.clone(), format!("{base}{path}"))
                .bearer_auth(&f.app.admin_token)
                .header("content-type", "application/json")
                .body("not json")
                .send()
                .await
                .unwrap();
        assert!(
            resp.status().as_u16() < 500,
            "{method} {path}: {}",
            resp.status()
        );
    }
}

// ---------------------------------------------------------------------------
// third-party clients (Python)

/// Whether the Python modules (and, for the browser, Chromium) are here.
/// Under CI their absence is a failure; elsewhere the test is skipped.
async fn python_ready(modules: &str, also: &[&str], install: &str) -> bool {
    let python = python();
    let ok = tokio::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false);
    let missing: Vec<&str> = also
        .iter()
        .copied()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if ok && missing.is_empty() {
        return true;
    }
    let why = if ok {
        format!("{} missing", missing.join(", "))
    } else {
        format!("`{python} -c 'import {modules}'` failed")
    };
    if std::env::var_os("CI").is_some() {
        panic!("{why}: install with `{install}`");
    }
    eprintln!("SKIPPED: {why}; install with `{install}` to run this test");
    false
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

const PIP: &str = "python3 -m pip install -r tests/python/requirements.txt";

/// Command-line options for a script, each as one `--name=value` argument:
/// a value that begins with `-` (a random secret can) would otherwise be
/// taken by argparse for the next option.
fn options(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(name, value)| format!("--{name}={value}"))
        .collect()
}

/// Run a script of tests/python; its output is shown when it fails.
async fn run_python(script: &str, args: &[String], limit: Duration) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = tokio::process::Command::new(python())
        .arg(&path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .expect("python3 ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test]
async fn authlib_runs_the_digilocker_flow() {
    if !python_ready("authlib, requests", &[], PIP).await {
        return;
    }
    let (f, _otps, otp_url) = page_flow_at(REDIRECT).await;
    for (subject, login) in [("authlib-admin", "admin"), ("authlib-page", "page")] {
        let args = options(&[
            ("base", &f.app.base),
            ("admin-token", &f.app.admin_token),
            ("client-id", &f.id),
            ("client-secret", &f.secret),
            ("redirect-uri", REDIRECT),
            ("subject", subject),
            ("login", login),
            ("otp-url", &otp_url),
        ]);
        let out = run_python("digilocker_client.py", &args, Duration::from_secs(90)).await;
        assert!(out.contains("\"ok\": true"), "{out}");
        // What the client saw, the server agrees with.
        let sessions = f.app.sessions_of(subject).await;
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0]["status"], "token_revoked");
        assert_eq!(sessions[0]["dialect"], "digilocker");
        assert_eq!(sessions[0]["ended_by"], format!("client:{}", f.id));
    }
}

#[tokio::test]
async fn chromium_signs_in_through_the_built_in_login_page() {
    if !python_ready(
        "selenium, requests",
        &["/usr/bin/chromium", "/usr/bin/chromedriver"],
        &format!("apt-get install -y chromium chromium-driver && {PIP}"),
    )
    .await
    {
        return;
    }
    // The client's redirect URI is a real page on another origin, so the
    // browser must be allowed (CSP form-action) to follow the 303 there.
    let (cb, redirect) = Callback::start().await;
    let (f, _otps, otp_url) = page_flow_at(&redirect).await;
    let (verifier, challenge) = pkce();
    let state = random_token(12);
    let authorize = url::Url::parse_with_params(
        &f.app.url(&format!("{DL}/authorize")),
        f.params(&challenge, &state, &[]),
    )
    .unwrap();
    let mut args = options(&[
        ("authorize-url", authorize.as_str()),
        ("redirect-uri", &redirect),
        ("identifier", "asha@example.in"),
        ("otp-url", &otp_url),
    ]);
    if let Some(dir) = std::env::var_os("DIGILOCKER_SCREENSHOTS") {
        args.extend(options(&[("screenshots", &dir.to_string_lossy())]));
    }
    let out = run_python("login_browser.py", &args, Duration::from_secs(120)).await;
    let last: Value =
        serde_json::from_str(out.lines().last().unwrap_or("")).expect("JSON last line");
    let q = query_of(last["redirect"].as_str().unwrap());
    assert_eq!(q["state"], state);

    // The client's server saw the same callback; the code redeems once.
    let hits = cb.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].contains(&format!("code={}", q["code"])), "{hits:?}");
    let (status, t) = f.redeem(&q["code"], &verifier).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["login"], "asha@example.in");
    let sessions = f.app.sessions_of("asha@example.in").await;
    assert_eq!(sessions[0]["dialect"], "digilocker");
}
