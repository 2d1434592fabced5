//! The GSP taxpayer dialect (protocols.md §1) end to end, against the real
//! server. OTPs go to a small in-test webhook that records them.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{s, TestApp};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tessera::config::Settings;
use tessera::core::clock::Clock;

/// The seed's GSTIN: valid format, wrong check digit.
const SEED_GSTIN: &str = "24AAACJ3770E2ZZ";
/// A GSTIN whose check digit is right.
const GOOD_GSTIN: &str = "27AAPFU0939F1ZV";

// ---- a webhook that records the OTPs it is sent ----

#[derive(Clone, Default)]
struct Inbox {
    sent: Arc<Mutex<Vec<Value>>>,
    fail: Arc<AtomicBool>,
}

async fn record(
    axum::extract::State(inbox): axum::extract::State<Inbox>,
    axum::Json(v): axum::Json<Value>,
) -> axum::http::StatusCode {
    if inbox.fail.load(Ordering::SeqCst) {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox.sent.lock().unwrap().push(v);
    axum::http::StatusCode::OK
}

impl Inbox {
    async fn start() -> (Self, String) {
        let inbox = Inbox::default();
        let router = axum::Router::new()
            .route("/otp", axum::routing::post(record))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/otp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (inbox, url)
    }

    /// The latest OTP sent for `login` (`<gstin>:<username>`).
    fn otp_for(&self, login: &str) -> String {
        let sent = self.sent.lock().unwrap();
        let msg = sent
            .iter()
            .rev()
            .find(|m| m["login"] == login)
            .unwrap_or_else(|| panic!("no OTP was sent for {login}: {sent:?}"));
        assert_eq!(msg["purpose"], "gsp_taxpayer");
        s(msg, "otp")
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

// ---- harness ----

struct Gsp {
    app: TestApp,
    inbox: Inbox,
    key: String,
    secret: String,
}

async fn send(rb: RequestBuilder) -> (StatusCode, Value) {
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The payload of a JWT, not verified (what SDKs do).
fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON payload")
}

/// The success envelope, returning `data`.
fn ok_data(status: StatusCode, v: &Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["code"], 200, "{v}");
    assert!(
        v["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
        "epoch ms: {v}"
    );
    let tx = v["transaction_id"].as_str().expect("transaction_id");
    assert_eq!(uuid::Uuid::parse_str(tx).unwrap().get_version_num(), 4);
    v["data"].clone()
}

/// The error envelope with the same HTTP status.
fn assert_error(status: StatusCode, v: &Value, want: StatusCode, message: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["code"], want.as_u16(), "{v}");
    assert_eq!(v["message"], message, "{v}");
    assert!(
        v["timestamp"].is_i64() && v["transaction_id"].is_string(),
        "{v}"
    );
    assert!(v.get("data").is_none(), "{v}");
}

/// A taxpayer-level failure: HTTP 200, status_cd "0", the given code.
fn assert_taxpayer_failure(status: StatusCode, v: &Value, error_cd: &str) -> String {
    let data = ok_data(status, v);
    assert_eq!(data["status_cd"], "0", "{v}");
    assert_eq!(data["error"]["error_cd"], error_cd, "{v}");
    s(&data["error"], "message")
}

impl Gsp {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let (inbox, url) = Inbox::start().await;
        let app = TestApp::spawn_with(|s| {
            s.otp_webhook = Some(url);
            tweak(s);
        })
        .await;
        let (key, secret) = app.new_client().await;
        Self {
            app,
            inbox,
            key,
            secret,
        }
    }

    async fn authenticate_as(
        &self,
        key: Option<&str>,
        secret: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .app
            .http
            .post(self.app.url("/authenticate"))
            .header("x-api-version", "3.3");
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        if let Some(sec) = secret {
            rb = rb.header("x-api-secret", sec);
        }
        send(rb).await
    }

    /// A fresh API token for this client.
    async fn authenticate(&self) -> String {
        let (status, v) = self
            .authenticate_as(Some(&self.key), Some(&self.secret))
            .await;
        let data = ok_data(status, &v);
        let token = s(&data, "access_token");
        assert_eq!(v["access_token"], token.as_str(), "also at the top level");
        token
    }

    /// A request with the three headers every taxpayer route needs.
    fn req(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.app
            .http
            .request(method, self.app.url(path))
            .header("authorization", token)
            .header("x-api-key", &self.key)
            .header("x-api-version", "3.3")
    }

    async fn call(&self, method: Method, path: &str, token: &str) -> (StatusCode, Value) {
        send(self.req(method, path, token)).await
    }

    async fn request_otp(&self, token: &str, gstin: &str, user: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/gsp/tax-payer/{gstin}/otp?username={user}"),
            token,
        )
        .await
    }

    async fn verify(&self, token: &str, gstin: &str, user: &str, otp: &str) -> (StatusCode, Value) {
        let path = format!("/gsp/tax-payer/{gstin}/otp/verify?username={user}&otp={otp}");
        self.call(Method::POST, &path, token).await
    }

    /// A full OTP login (path style); returns `data` of the verify reply.
    async fn login(&self, token: &str, gstin: &str, user: &str) -> Value {
        let (status, v) = self.request_otp(token, gstin, user).await;
        assert_eq!(ok_data(status, &v)["status_cd"], "1", "{v}");
        let otp = self.inbox.otp_for(&format!("{gstin}:{user}"));
        let (status, v) = self.verify(token, gstin, user, &otp).await;
        let data = ok_data(status, &v);
        assert_eq!(data["status_cd"], "1", "{v}");
        data
    }

    fn creds(&self) -> (&str, &str) {
        (&self.key, &self.secret)
    }
}

fn wrong(otp: &str) -> String {
    format!("{:06}", (otp.parse::<u32>().unwrap() + 1) % 1_000_000)
}

// ---- the seed ----

#[tokio::test]
async fn seed_logout_replayed_ends_every_token_of_the_taxpayer_session() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let login = gsp.login(&api, SEED_GSTIN, "taxpayer.one").await;
    let first = s(&login, "access_token");
    assert_eq!(jwt_payload(&first)["sub"], SEED_GSTIN);

    // A second taxpayer token of the same session, through refresh.
    let (status, v) = gsp
        .call(
            Method::POST,
            &format!("/gsp/tax-payer/{SEED_GSTIN}/session/refresh"),
            &api,
        )
        .await;
    let second = s(&ok_data(status, &v), "access_token");
    for t in [&first, &second] {
        assert!(gsp.app.active(gsp.creds(), t).await);
    }

    // The seed's curl, host and credentials swapped for the test server's.
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url(&format!("/gsp/tax-payer/{SEED_GSTIN}/logout")))
            .header("Authorization", &api)
            .header("x-api-key", &gsp.key)
            .header("x-api-version", "3.3"),
    )
    .await;
    assert_eq!(ok_data(status, &v), json!({"status_cd": "1"}));

    // Refused through the dialect…
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{SEED_GSTIN}/session"),
            &api,
        )
        .await;
    assert_eq!(
        assert_taxpayer_failure(status, &v, "AUTH4033"),
        "Invalid Session"
    );
    for method in [Method::GET, Method::POST] {
        let (status, v) = gsp
            .call(
                method,
                &format!("/gsp/tax-payer/{SEED_GSTIN}/session/refresh"),
                &api,
            )
            .await;
        assert_taxpayer_failure(status, &v, "AUTH4033");
    }
    // …through introspection…
    for t in [&first, &second] {
        assert!(
            !gsp.app.active(gsp.creds(), t).await,
            "taxpayer token still active after logout"
        );
    }
    // …and in the session list.
    let sessions = gsp.app.sessions_of(SEED_GSTIN).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["status"], "logout");
    assert!(sessions.iter().all(|x| x["status"] != "active"));

    // The API session is a different session and lives on.
    assert!(gsp.app.active(gsp.creds(), &api).await);
    let (status, v) = gsp.request_otp(&api, SEED_GSTIN, "taxpayer.one").await;
    ok_data(status, &v);
}

#[tokio::test]
async fn logout_twice_is_harmless_and_so_is_logout_without_a_session() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let path = format!("/gsp/tax-payer/{GOOD_GSTIN}/logout");
    // Never logged in.
    let (status, v) = gsp.call(Method::POST, &path, &api).await;
    assert_eq!(ok_data(status, &v), json!({"status_cd": "1"}));

    gsp.login(&api, GOOD_GSTIN, "u").await;
    for _ in 0..2 {
        let (status, v) = gsp.call(Method::POST, &path, &api).await;
        assert_eq!(ok_data(status, &v), json!({"status_cd": "1"}));
    }
    let sessions = gsp.app.sessions_of(GOOD_GSTIN).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["status"], "logout");
    // Logging in again afterwards works.
    gsp.login(&api, GOOD_GSTIN, "u").await;
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
            &api,
        )
        .await;
    assert_eq!(ok_data(status, &v)["status_cd"], "1");
}

// ---- /authenticate and /authorize ----

#[tokio::test]
async fn authenticate_returns_an_api_token_with_the_documented_claims() {
    let gsp = Gsp::start().await;
    let token = gsp.authenticate().await;
    let c = jwt_payload(&token);
    assert_eq!(c["aud"], "API");
    assert_eq!(c["intent"], "ACCESS_TOKEN");
    assert_eq!(c["api_key"], gsp.key.as_str());
    assert_eq!(c["sub"], gsp.key.as_str());
    assert_eq!(c["iss"], gsp.app.base.as_str());
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 86_400, "SDKs decode exp to schedule the refresh");
    assert_eq!(iat, gsp.app.clock.now());

    let nested = jwt_payload(c["refresh_token"].as_str().expect("nested refresh_token"));
    assert_eq!(nested["intent"], "REFRESH_TOKEN");
    assert_eq!(nested["aud"], "API");
    assert_eq!(nested["api_key"], gsp.key.as_str());
    assert_eq!(nested["sub"], gsp.key.as_str());
    let lifetime = nested["exp"].as_i64().unwrap() - nested["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 366 * 86_400);

    assert!(gsp.app.active(gsp.creds(), &token).await);
    let sessions = gsp.app.sessions_of(&gsp.key).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["status"], "active");
}

#[tokio::test]
async fn wrong_or_missing_api_credentials_are_a_401_envelope() {
    let gsp = Gsp::start().await;
    let cases = [
        (Some(gsp.key.as_str()), Some("not-the-secret")),
        (Some("no-such-key"), Some(gsp.secret.as_str())),
        (None, Some(gsp.secret.as_str())),
        (Some(gsp.key.as_str()), None),
        (None, None),
    ];
    for (key, secret) in cases {
        let (status, v) = gsp.authenticate_as(key, secret).await;
        assert_error(status, &v, StatusCode::UNAUTHORIZED, "Unauthorized");
    }
}

#[tokio::test]
async fn authorize_renews_the_token_and_the_old_one_is_revoked() {
    let gsp = Gsp::start().await;
    let old = gsp.authenticate().await;
    gsp.app.clock.advance(3600);
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url(&format!("/authorize?request_token={old}")))
            .header("authorization", &old)
            .header("x-api-key", &gsp.key)
            .header("x-api-version", "3.3"),
    )
    .await;
    let new = s(&ok_data(status, &v), "access_token");
    assert_eq!(v["access_token"], new.as_str());
    let (o, n) = (jwt_payload(&old), jwt_payload(&new));
    assert_eq!(
        n["exp"].as_i64().unwrap() - n["iat"].as_i64().unwrap(),
        86_400
    );
    assert_eq!(
        n["iat"].as_i64().unwrap(),
        o["iat"].as_i64().unwrap() + 3600
    );
    for k in ["aud", "intent", "api_key", "sub", "refresh_token"] {
        assert_eq!(n[k], o[k], "{k} carried over");
    }
    assert_ne!(n["sid"], o["sid"]);

    // The old token is refused at once, everywhere; the new one works.
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
            &old,
        )
        .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "Access revoked");
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url(&format!("/authorize?request_token={old}")))
            .header("x-api-key", &gsp.key),
    )
    .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "Access revoked");
    assert!(!gsp.app.active(gsp.creds(), &old).await);
    assert!(gsp.app.active(gsp.creds(), &new).await);
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
            &new,
        )
        .await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
    let statuses: Vec<Value> = gsp
        .app
        .sessions_of(&gsp.key)
        .await
        .iter()
        .map(|x| x["status"].clone())
        .collect();
    assert!(
        statuses.contains(&json!("superseded")) && statuses.contains(&json!("active")),
        "{statuses:?}"
    );

    // `Bearer ` is accepted, and the header alone is enough.
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url("/authorize"))
            .header("authorization", format!("Bearer {new}"))
            .header("x-api-key", &gsp.key),
    )
    .await;
    ok_data(status, &v);
}

#[tokio::test]
async fn an_expired_api_token_is_refused_and_authorize_still_renews_it() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    gsp.app.clock.advance(86_400 + 1);
    let (status, v) = gsp.request_otp(&api, GOOD_GSTIN, "u").await;
    assert_error(
        status,
        &v,
        StatusCode::FORBIDDEN,
        "Access token has expired",
    );
    assert!(!gsp.app.active(gsp.creds(), &api).await);

    // What the SDKs do on that message: authorize with the same token.
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url(&format!("/authorize?request_token={api}")))
            .header("authorization", &api)
            .header("x-api-key", &gsp.key),
    )
    .await;
    let renewed = s(&ok_data(status, &v), "access_token");
    let (status, v) = gsp.request_otp(&renewed, GOOD_GSTIN, "u").await;
    ok_data(status, &v);
}

#[tokio::test]
async fn garbage_foreign_and_other_clients_tokens_are_refused_with_the_exact_strings() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let path = format!("/gsp/tax-payer/{GOOD_GSTIN}/session");
    let nested = s(&jwt_payload(&api), "refresh_token");
    let native = s(
        &gsp.app
            .token(gsp.creds(), &[("grant_type", "client_credentials")])
            .await
            .1,
        "access_token",
    );
    let taxpayer = s(&gsp.login(&api, GOOD_GSTIN, "u").await, "access_token");
    let mut tampered = api.clone();
    tampered.push('x');
    for bad in [
        "garbage",
        "a.b.c",
        nested.as_str(),
        native.as_str(),
        taxpayer.as_str(),
        tampered.as_str(),
    ] {
        let (status, v) = gsp.call(Method::GET, &path, bad).await;
        assert_error(status, &v, StatusCode::FORBIDDEN, "Invalid access token");
        let (status, v) = send(
            gsp.app
                .http
                .post(gsp.app.url("/authorize"))
                .query(&[("request_token", bad)])
                .header("x-api-key", &gsp.key),
        )
        .await;
        assert_error(status, &v, StatusCode::FORBIDDEN, "Invalid access token");
    }

    // Another client's token with this client's key, and the other way round.
    let (other_key, other_secret) = gsp.app.new_client().await;
    let (status, v) = gsp
        .authenticate_as(Some(&other_key), Some(&other_secret))
        .await;
    let other = s(&ok_data(status, &v), "access_token");
    let (status, v) = gsp.call(Method::GET, &path, &other).await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "Insufficient privilege");
    let (status, v) = send(
        gsp.app
            .http
            .post(gsp.app.url("/authorize"))
            .header("authorization", &other)
            .header("x-api-key", &gsp.key),
    )
    .await;
    assert_error(status, &v, StatusCode::FORBIDDEN, "Insufficient privilege");
}

#[tokio::test]
async fn missing_headers_are_400_envelopes_naming_the_header() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let url = gsp.app.url(&format!("/gsp/tax-payer/{GOOD_GSTIN}/logout"));
    let cases = [
        (
            "x-api-version",
            gsp.app
                .http
                .post(&url)
                .header("authorization", &api)
                .header("x-api-key", &gsp.key),
        ),
        (
            "x-api-key",
            gsp.app
                .http
                .post(&url)
                .header("authorization", &api)
                .header("x-api-version", "3.3"),
        ),
        (
            "authorization",
            gsp.app
                .http
                .post(&url)
                .header("x-api-key", &gsp.key)
                .header("x-api-version", "3.3"),
        ),
    ];
    for (name, rb) in cases {
        let (status, v) = send(rb).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {v}");
        assert_eq!(v["code"], 400);
        let msg = s(&v, "message");
        assert!(msg.contains(name), "{name}: {msg}");
    }
}

// ---- GSTINs ----

#[tokio::test]
async fn a_malformed_gstin_is_a_400_naming_the_format() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    for bad in [
        "24AAACJ3770E2Z",
        "99AAACJ3770E2ZZ",
        "24aaacj3770e2zz",
        "24AAADJ3770E2ZZ",
        "24AAACJ3770E2YZ",
    ] {
        for path in [
            format!("/gsp/tax-payer/{bad}/otp?username=u"),
            format!("/gsp/tax-payer/{bad}/logout"),
        ] {
            let (status, v) = gsp.call(Method::POST, &path, &api).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
            let msg = s(&v, "message");
            assert!(
                msg.starts_with("Invalid GSTIN") && msg.contains("15 characters"),
                "{msg}"
            );
        }
    }
    let (status, v) = send(
        gsp.req(Method::POST, "/gst/compliance/tax-payer/logout", &api)
            .json(&json!({"gstin": "not-a-gstin"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(gsp.inbox.count(), 0);
}

#[tokio::test]
async fn with_the_check_digit_setting_the_public_example_is_refused() {
    let gsp = Gsp::start_with(|s| s.gstin_check_digit = true).await;
    let api = gsp.authenticate().await;
    let (status, v) = gsp.request_otp(&api, SEED_GSTIN, "u").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(s(&v, "message").contains("check character"), "{v}");
    gsp.login(&api, GOOD_GSTIN, "u").await;
}

// ---- OTP limits ----

#[tokio::test]
async fn five_wrong_otps_kill_the_challenge() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let (status, v) = gsp.request_otp(&api, GOOD_GSTIN, "u").await;
    ok_data(status, &v);
    let otp = gsp.inbox.otp_for(&format!("{GOOD_GSTIN}:u"));
    for left in (1..=4).rev() {
        let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &wrong(&otp)).await;
        let msg = assert_taxpayer_failure(status, &v, "AUTH4034");
        assert!(msg.contains(&format!("{left} attempt")), "{msg}");
    }
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &wrong(&otp)).await;
    assert_taxpayer_failure(status, &v, "AUTH4039");
    // The right code no longer works: the challenge is dead.
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &otp).await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
    assert!(gsp.app.sessions_of(GOOD_GSTIN).await.is_empty());
}

#[tokio::test]
async fn an_otp_expires_after_five_minutes() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    gsp.request_otp(&api, GOOD_GSTIN, "u").await;
    let otp = gsp.inbox.otp_for(&format!("{GOOD_GSTIN}:u"));
    gsp.app.clock.advance(301);
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &otp).await;
    assert_taxpayer_failure(status, &v, "AUTH4038");
    assert!(gsp.app.sessions_of(GOOD_GSTIN).await.is_empty());
}

#[tokio::test]
async fn a_new_otp_replaces_the_old_one() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let login = format!("{GOOD_GSTIN}:u");
    gsp.request_otp(&api, GOOD_GSTIN, "u").await;
    let first = gsp.inbox.otp_for(&login);
    // Until the replacement arrives, force distinct codes.
    let mut second = first.clone();
    while second == first {
        gsp.request_otp(&api, GOOD_GSTIN, "u").await;
        second = gsp.inbox.otp_for(&login);
    }
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &first).await;
    assert_taxpayer_failure(status, &v, "AUTH4034");
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &second).await;
    assert_eq!(ok_data(status, &v)["status_cd"], "1");
    // An OTP is single-use.
    let (status, v) = gsp.verify(&api, GOOD_GSTIN, "u", &second).await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
}

#[tokio::test]
async fn an_otp_delivery_failure_is_a_502() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    gsp.inbox.fail.store(true, Ordering::SeqCst);
    let (status, v) = gsp.request_otp(&api, GOOD_GSTIN, "u").await;
    assert_error(
        status,
        &v,
        StatusCode::BAD_GATEWAY,
        "The OTP could not be delivered; retry later",
    );
}

// ---- taxpayer sessions ----

#[tokio::test]
async fn session_and_refresh_report_and_extend_the_token() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let t0 = gsp.app.clock.now();
    let login = gsp.login(&api, GOOD_GSTIN, "u").await;
    assert_eq!(login["token_expiry"], (t0 + 6 * 3600) * 1000);
    assert_eq!(login["session_expiry"], (t0 + 30 * 86_400) * 1000);
    let tp = jwt_payload(&s(&login, "access_token"));
    assert_eq!(tp["sub"], GOOD_GSTIN);
    assert_eq!(tp["gstin"], GOOD_GSTIN);
    assert_eq!(tp["username"], "u");
    assert_ne!(tp["aud"], "API");

    let session = format!("/gsp/tax-payer/{GOOD_GSTIN}/session");
    let (status, v) = gsp.call(Method::GET, &session, &api).await;
    let data = ok_data(status, &v);
    assert_eq!(data["token_expiry"], login["token_expiry"]);
    assert_eq!(data["session_expiry"], login["session_expiry"]);

    gsp.app.clock.advance(3600);
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session/refresh"),
            &api,
        )
        .await;
    let refreshed = ok_data(status, &v);
    assert_eq!(refreshed["token_expiry"], (t0 + 3600 + 6 * 3600) * 1000);
    assert_eq!(refreshed["session_expiry"], login["session_expiry"]);
    assert!(
        gsp.app
            .active(gsp.creds(), &s(&refreshed, "access_token"))
            .await
    );
    let (status, v) = gsp.call(Method::GET, &session, &api).await;
    assert_eq!(
        ok_data(status, &v)["token_expiry"],
        refreshed["token_expiry"]
    );
}

#[tokio::test]
async fn a_second_login_supersedes_the_first() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let first = s(&gsp.login(&api, GOOD_GSTIN, "u").await, "access_token");
    let second = s(&gsp.login(&api, GOOD_GSTIN, "u").await, "access_token");
    assert!(!gsp.app.active(gsp.creds(), &first).await);
    assert!(gsp.app.active(gsp.creds(), &second).await);
    let mut statuses: Vec<String> = gsp
        .app
        .sessions_of(GOOD_GSTIN)
        .await
        .iter()
        .map(|x| s(x, "status"))
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["active", "superseded"]);
}

#[tokio::test]
async fn login_works_again_after_the_taxpayer_session_expired() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    gsp.login(&api, GOOD_GSTIN, "u").await;
    gsp.app.clock.advance(30 * 86_400 + 1);
    let api = gsp.authenticate().await;
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
            &api,
        )
        .await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
    gsp.login(&api, GOOD_GSTIN, "u").await;
}

#[tokio::test]
async fn taxpayer_sessions_belong_to_one_api_key() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let mine = s(&gsp.login(&api, GOOD_GSTIN, "u").await, "access_token");

    let (other_key, other_secret) = gsp.app.new_client().await;
    let (status, v) = gsp
        .authenticate_as(Some(&other_key), Some(&other_secret))
        .await;
    let other = s(&ok_data(status, &v), "access_token");
    let as_other = |method: Method, path: &str| {
        gsp.app
            .http
            .request(method, gsp.app.url(path))
            .header("authorization", &other)
            .header("x-api-key", &other_key)
            .header("x-api-version", "3.3")
    };
    let (status, v) = send(as_other(
        Method::GET,
        &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
    ))
    .await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
    let (status, v) = send(as_other(
        Method::POST,
        &format!("/gsp/tax-payer/{GOOD_GSTIN}/logout"),
    ))
    .await;
    ok_data(status, &v);
    assert!(
        gsp.app.active(gsp.creds(), &mine).await,
        "another API key's logout ended my session"
    );
}

#[tokio::test]
async fn body_style_flow_end_to_end() {
    let gsp = Gsp::start().await;
    let api = gsp.authenticate().await;
    let who = json!({"username": "body.user", "gstin": GOOD_GSTIN});
    let (status, v) = send(
        gsp.req(Method::POST, "/gst/compliance/tax-payer/otp", &api)
            .header("x-source", "primary")
            .json(&who),
    )
    .await;
    assert_eq!(ok_data(status, &v)["status_cd"], "1");
    let otp = gsp.inbox.otp_for(&format!("{GOOD_GSTIN}:body.user"));

    let (status, v) = send(
        gsp.req(
            Method::POST,
            &format!("/gst/compliance/tax-payer/otp/verify?otp={}", wrong(&otp)),
            &api,
        )
        .json(&who),
    )
    .await;
    assert_taxpayer_failure(status, &v, "AUTH4034");
    let (status, v) = send(
        gsp.req(
            Method::POST,
            &format!("/gst/compliance/tax-payer/otp/verify?otp={otp}"),
            &api,
        )
        .json(&who),
    )
    .await;
    let data = ok_data(status, &v);
    assert_eq!(data["status_cd"], "1");
    let t1 = s(&data, "access_token");
    assert!(data["session_expiry"].is_i64() && data["token_expiry"].is_i64());
    assert_eq!(jwt_payload(&t1)["sub"], GOOD_GSTIN);

    // The same session is seen through the path style.
    let (status, v) = gsp
        .call(
            Method::GET,
            &format!("/gsp/tax-payer/{GOOD_GSTIN}/session"),
            &api,
        )
        .await;
    assert_eq!(ok_data(status, &v)["token_expiry"], data["token_expiry"]);

    let gstin = json!({"gstin": GOOD_GSTIN});
    let (status, v) = send(
        gsp.req(
            Method::POST,
            "/gst/compliance/tax-payer/session/refresh",
            &api,
        )
        .json(&gstin),
    )
    .await;
    let t2 = s(&ok_data(status, &v), "access_token");

    for _ in 0..2 {
        let (status, v) = send(
            gsp.req(Method::POST, "/gst/compliance/tax-payer/logout", &api)
                .json(&gstin),
        )
        .await;
        assert_eq!(ok_data(status, &v), json!({"status_cd": "1"}));
    }
    let (status, v) = send(
        gsp.req(
            Method::POST,
            "/gst/compliance/tax-payer/session/refresh",
            &api,
        )
        .json(&gstin),
    )
    .await;
    assert_taxpayer_failure(status, &v, "AUTH4033");
    for t in [&t1, &t2] {
        assert!(!gsp.app.active(gsp.creds(), t).await);
    }
    assert_eq!(gsp.app.sessions_of(GOOD_GSTIN).await[0]["status"], "logout");

    // A body that is not the documented JSON is a 4xx envelope, not a 500.
    let (status, v) = send(
        gsp.req(Method::POST, "/gst/compliance/tax-payer/logout", &api)
            .header("content-type", "application/json")
            .body("[1,2]"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], 400);
    let (status, v) = send(
        gsp.req(Method::POST, "/gst/compliance/tax-payer/otp", &api)
            .json(&json!({"gstin": GOOD_GSTIN})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(s(&v, "message").contains("username"));
}

#[tokio::test]
async fn store_outage_is_a_503_envelope_and_the_session_survives() {
    use tessera::core::clock::{ManualClock, SystemClock};
    use tessera::server::Application;
    use tessera::store::faulty::FaultyStore;
    use tessera::store::redb::RedbStore;

    let (inbox, url) = Inbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let redb = Arc::new(RedbStore::open(&dir.path().join("tessera.redb")).unwrap());
    let store = Arc::new(FaultyStore::new(redb));
    let mut settings = common::test_settings(&dir);
    settings.otp_webhook = Some(url);
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let app = Application::build_with(settings, clock, Some(store.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::new();
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let (_, created) = send(
        http.post(format!("{base}/admin/clients"))
            .bearer_auth(admin.trim())
            .json(&json!({"name": "outage"})),
    )
    .await;
    let (key, secret) = (s(&created, "client_id"), s(&created, "client_secret"));
    let (status, v) = send(
        http.post(format!("{base}/authenticate"))
            .header("x-api-key", &key)
            .header("x-api-secret", &secret),
    )
    .await;
    let api = s(&ok_data(status, &v), "access_token");
    let call = |path: String| {
        http.post(format!("{base}{path}"))
            .header("authorization", &api)
            .header("x-api-key", &key)
            .header("x-api-version", "3.3")
    };
    let (status, v) = send(call(format!("/gsp/tax-payer/{GOOD_GSTIN}/otp?username=u"))).await;
    ok_data(status, &v);
    let otp = inbox.otp_for(&format!("{GOOD_GSTIN}:u"));
    let (status, v) = send(call(format!(
        "/gsp/tax-payer/{GOOD_GSTIN}/otp/verify?username=u&otp={otp}"
    )))
    .await;
    let tp = s(&ok_data(status, &v), "access_token");

    store.fail_writes(true);
    let (status, v) = send(call(format!("/gsp/tax-payer/{GOOD_GSTIN}/logout"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], 503);
    store.fail_writes(false);

    // Nothing was acknowledged, so nothing ended.
    let (status, v) = send(
        http.post(format!("{base}/oauth2/introspect"))
            .basic_auth(&key, Some(&secret))
            .form(&[("token", tp.as_str())]),
    )
    .await;
    assert_eq!((status, v["active"].clone()), (StatusCode::OK, json!(true)));
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
