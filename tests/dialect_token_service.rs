//! Token-service dialect (Wibmo style) end to end, against the real server.
//!
//! Every request body is encrypted, and every response body decrypted, by
//! Python jwcrypto (`tests/python/jwe_peer.py`), an independent JOSE
//! implementation — never by the server's own JWE code. Without jwcrypto the
//! tests skip, except under CI, where they fail.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{s, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/jwe_peer.py");
const NEW: &str = "/token-service/client/server/new/token";
const NEW_V2: &str = "/token-service/client/server/new/v2/token";
const RENEW: &str = "/token-service/client/app/renew/token";
const RENEW_V2: &str = "/token-service/client/app/renew/v2/token";
const INVALIDATE: &str = "/token-service/client/server/invalidate/token";
const INVALIDATE_V2: &str = "/token-service/client/server/invalidate/v2/token";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the JOSE peer can run; under CI its absence is a failure.
async fn peer_ready() -> bool {
    let ok = tokio::process::Command::new(python())
        .args([PEER, "check"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "the token-service tests need Python jwcrypto: \
                   python3 -m pip install -r tests/python/requirements.txt";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        // Straight to stderr: the test harness would swallow eprintln!.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    }
    ok
}

/// One `jwe_peer.py serve` for the whole test binary (Python's start-up
/// and jwcrypto's import cost more than every operation together).
struct PeerProcess {
    _child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

static PEER_PROCESS: std::sync::Mutex<Option<PeerProcess>> = std::sync::Mutex::new(None);

/// `encrypt` or `decrypt` `input` under `key` with jwcrypto. Blocking, but
/// only for the millisecond the warm peer takes; no request is in flight.
fn peer(op: &str, key: &str, input: &str) -> Result<String, String> {
    use std::io::{BufRead, Write};
    let mut guard = PEER_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let p = guard.get_or_insert_with(|| {
        let mut child = std::process::Command::new(python())
            .args([PEER, "serve"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        PeerProcess {
            stdin: child.stdin.take().unwrap(),
            stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    });
    let line = json!({"op": op, "key": key, "input": input}).to_string();
    writeln!(p.stdin, "{line}")
        .and_then(|()| p.stdin.flush())
        .expect("peer alive");
    let mut answer = String::new();
    p.stdout.read_line(&mut answer).expect("peer answers");
    let v: Value = serde_json::from_str(&answer).expect("peer answers JSON");
    match v["ok"].as_bool() {
        Some(true) => Ok(s(&v, "output")),
        _ => Err(v["error"].to_string()),
    }
}

fn encrypt(key: &str, plaintext: &str) -> String {
    peer("encrypt", key, plaintext).unwrap_or_else(|e| panic!("jwcrypto could not encrypt: {e}"))
}

/// A 32-byte key no client has.
fn stranger_key() -> String {
    URL_SAFE_NO_PAD.encode([0x5a; 32])
}

/// A client of the dialect: its API key (client id), secret and payload key.
struct Ts {
    id: String,
    secret: String,
    key: String,
}

async fn ts_client(app: &TestApp, body: Value) -> Ts {
    let (status, v) = app.admin(Method::POST, "/admin/clients", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let key = s(&v, "payload_key");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&key).unwrap().len(),
        32,
        "a 256-bit key"
    );
    Ts {
        id: s(&v, "client_id"),
        secret: s(&v, "client_secret"),
        key,
    }
}

/// What came back: the status and the JSON body, decrypted by jwcrypto if
/// it was a 200 (which must be encrypted), read as plain JSON otherwise
/// (errors are never encrypted).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
}

struct Req<'a> {
    method: Method,
    path: &'a str,
    api_key: Option<&'a str>,
    content_type: Option<&'a str>,
    api_token: Option<&'a str>,
    body: String,
}

impl<'a> Req<'a> {
    fn post(path: &'a str, api_key: &'a str, body: String) -> Self {
        Self {
            method: Method::POST,
            path,
            api_key: Some(api_key),
            content_type: Some("text/plain"),
            api_token: None,
            body,
        }
    }
}

async fn send(app: &TestApp, key: &str, req: Req<'_>) -> Reply {
    let mut rb = app
        .http
        .request(req.method, app.url(req.path))
        .body(req.body);
    if let Some(k) = req.api_key {
        rb = rb.header("X-API-KEY", k);
    }
    if let Some(ct) = req.content_type {
        rb = rb.header("Content-Type", ct);
    }
    if let Some(t) = req.api_token {
        rb = rb.header("X-API-TOKEN", t);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    assert!(
        status.as_u16() < 500,
        "never a 5xx for a client's request: {status}"
    );
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = resp.text().await.unwrap();
    let body = if status == StatusCode::OK {
        assert!(ct.starts_with("text/plain"), "{ct}");
        let plain = peer("decrypt", key, &text)
            .unwrap_or_else(|e| panic!("jwcrypto could not decrypt the reply {text:?}: {e}"));
        serde_json::from_str(&plain).unwrap()
    } else {
        assert!(ct.starts_with("application/json"), "{ct}");
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text:?}"))
    };
    Reply { status, body }
}

impl Ts {
    /// POST `plaintext`, encrypted by jwcrypto under this client's key.
    async fn call(&self, app: &TestApp, path: &str, plaintext: Value) -> Reply {
        let body = encrypt(&self.key, &plaintext.to_string());
        send(app, &self.key, Req::post(path, &self.id, body)).await
    }

    /// `new/token` for `reference`; returns the access token.
    async fn open(&self, app: &TestApp, reference: &str, user: Option<&str>) -> String {
        let mut p = json!({"referenceId": reference});
        if let Some(u) = user {
            p["userId"] = json!(u);
        }
        let r = self.call(app, NEW, p).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        s(&r.body, "token")
    }

    async fn renew(&self, app: &TestApp, token: &str) -> Reply {
        let body = encrypt(&self.key, &json!({ "token": token }).to_string());
        let mut req = Req::post(RENEW, &self.id, body);
        req.api_token = Some(token);
        send(app, &self.key, req).await
    }

    fn creds(&self) -> (&str, &str) {
        (&self.id, &self.secret)
    }
}

fn invalid_token_v1() -> Value {
    json!({"resCode": 401, "resDesc": "Invalid Token Passed"})
}

#[tokio::test]
async fn seed_curl_invalidates_the_session_and_every_token_of_it() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(
        &app,
        json!({"name": "Mobile app", "client_id": "MOB-APP-2001"}),
    )
    .await;
    assert_eq!(ts.id, "MOB-APP-2001");

    // A real session: new/token, then a renew, so it has two tokens.
    let opened = ts
        .call(
            &app,
            NEW,
            json!({"referenceId": "login-7f3a", "userId": "cust-42", "mobileNo": "9999999999"}),
        )
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.body);
    let b = &opened.body;
    assert_eq!(b["resCode"], 100);
    assert_eq!(b["resDesc"], "SUCCESS");
    assert_eq!(b["referenceId"], "login-7f3a");
    let t1 = s(b, "token");
    assert_eq!(t1.split('.').count(), 3, "a JWT");
    let intro = app.introspect(ts.creds(), &t1).await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["sub"], "cust-42");
    assert_eq!(
        b["expireAt"],
        json!(intro["exp"].as_i64().unwrap() * 1000),
        "epoch ms"
    );
    let renewed = ts.renew(&app, &t1).await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.body);
    let t2 = s(&renewed.body["data"], "token");
    assert!(app.active(ts.creds(), &t2).await);

    // The seed's curl, host swapped: text/plain, X-API-KEY, and the
    // (encrypted) JSON exactly as the seed lays it out.
    let seed_body = "{\n    \"tokenReferenceId\": \"login-7f3a\"\n}";
    let encrypted = encrypt(&ts.key, seed_body);
    let resp = app
        .http
        .post(app.url("/token-service/client/server/invalidate/token"))
        .header("Content-Type", "text/plain")
        .header("X-API-KEY", "MOB-APP-2001")
        .body(encrypted)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let plain = peer("decrypt", &ts.key, &resp.text().await.unwrap()).unwrap();
    assert!(
        plain.starts_with(r#"{"resCode":200,"resDesc":"SUCCESS","data":{"resCode":100"#),
        "members in the vendor's order: {plain}"
    );
    let reply: Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(
        reply,
        json!({"resCode": 200, "resDesc": "SUCCESS", "data": {"resCode": 100, "resDesc": "Success"}})
    );

    // Every token of the session is refused: through the dialect...
    for t in [&t1, &t2] {
        let r = ts.renew(&app, t).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.body, invalid_token_v1());
    }
    // ...through introspection, by the same client and by another one...
    let (other_id, other_secret) = app.new_client().await;
    for t in [&t1, &t2] {
        assert!(!app.active(ts.creds(), t).await);
        assert!(!app.active((&other_id, &other_secret), t).await);
    }
    // ...and in the session list.
    let sessions = app.sessions_of("cust-42").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["dialect"], "token_service");
    assert_eq!(sessions[0]["status"], "logout");
    assert_eq!(sessions[0]["ended_by"], "client:MOB-APP-2001");
}

#[tokio::test]
async fn replayed_or_unknown_reference_ends_nothing_else() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let other = ts_client(&app, json!({"name": "B"})).await;
    let a = ts.open(&app, "ref-a", Some("u1")).await;
    let b = ts.open(&app, "ref-b", Some("u1")).await;
    // Another client using the same reference has its own session.
    let theirs = other.open(&app, "ref-a", Some("u1")).await;

    let ok = ts
        .call(&app, INVALIDATE, json!({"tokenReferenceId": "ref-a"}))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    for reference in ["ref-a", "never-issued"] {
        let r = ts
            .call(&app, INVALIDATE, json!({"tokenReferenceId": reference}))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reference}");
        assert_eq!(r.body, invalid_token_v1());
    }
    assert!(!app.active(ts.creds(), &a).await);
    assert!(
        app.active(ts.creds(), &b).await,
        "the other reference is untouched"
    );
    assert!(
        app.active(ts.creds(), &theirs).await,
        "another client's session is untouched"
    );
    let live: Vec<_> = app
        .sessions_of("u1")
        .await
        .into_iter()
        .filter(|s| s["status"] == "active")
        .collect();
    assert_eq!(live.len(), 2, "{live:?}");
}

#[tokio::test]
async fn a_repeated_reference_replaces_the_previous_session() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let first = ts.open(&app, "same-ref", None).await;
    let second = ts.open(&app, "same-ref", None).await;
    assert!(!app.active(ts.creds(), &first).await);
    assert!(app.active(ts.creds(), &second).await);
    // Without userId the subject is the client itself.
    let sessions = app.sessions_of(&ts.id).await;
    let mut statuses: Vec<_> = sessions
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["active", "superseded"]);
    // One invalidate ends the one live session of the reference.
    let r = ts
        .call(&app, INVALIDATE, json!({"tokenReferenceId": "same-ref"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!app.active(ts.creds(), &second).await);
}

#[tokio::test]
async fn renew_issues_a_fresh_token_for_the_same_session() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let t0 = ts.open(&app, "r1", Some("carol")).await;
    let exp0 = app.introspect(ts.creds(), &t0).await["exp"]
        .as_i64()
        .unwrap();
    app.clock.advance(1800);

    let r = ts.renew(&app, &t0).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["resCode"], 100);
    assert_eq!(r.body["resDesc"], "SUCCESS");
    let t1 = s(&r.body["data"], "token");
    let intro = app.introspect(ts.creds(), &t1).await;
    assert_eq!(intro["active"], true);
    assert_eq!(
        r.body["data"]["expiryDate"],
        json!(intro["exp"].as_i64().unwrap() * 1000)
    );
    assert!(
        intro["exp"].as_i64().unwrap() > exp0,
        "the renewed token outlives the first"
    );
    let sid = app.introspect(ts.creds(), &t0).await["sid"].clone();
    assert_eq!(intro["sid"], sid, "same session");

    // The token only in the header works too; two different ones do not.
    let body = encrypt(&ts.key, "{}");
    let mut req = Req::post(RENEW, &ts.id, body);
    req.api_token = Some(&t1);
    assert_eq!(send(&app, &ts.key, req).await.status, StatusCode::OK);
    let body = encrypt(&ts.key, &json!({ "token": t0 }).to_string());
    let mut req = Req::post(RENEW, &ts.id, body);
    req.api_token = Some(&t1);
    assert_eq!(
        send(&app, &ts.key, req).await.status,
        StatusCode::BAD_REQUEST
    );

    // Another client cannot renew this client's token.
    let other = ts_client(&app, json!({"name": "B"})).await;
    assert_eq!(other.renew(&app, &t1).await.body, invalid_token_v1());
    // Nor can anyone renew garbage or an expired token.
    assert_eq!(ts.renew(&app, "a.b.c").await.body, invalid_token_v1());
    app.clock.advance(3601);
    assert_eq!(ts.renew(&app, &t1).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn v2_paths_answer_with_tok_codes() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let r = ts
        .call(&app, NEW_V2, json!({"referenceId": "v2-ref"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["resCode"], "TOK200");
    assert_eq!(r.body["referenceId"], "v2-ref");
    let token = s(&r.body, "token");

    let body = encrypt(&ts.key, &json!({ "token": token }).to_string());
    let r = send(&app, &ts.key, Req::post(RENEW_V2, &ts.id, body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["resCode"], "TOK200");
    assert!(r.body["data"]["token"].is_string());

    let r = ts
        .call(&app, INVALIDATE_V2, json!({"tokenReferenceId": "v2-ref"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"resCode": "TOK200", "resDesc": "SUCCESS", "data": {"resCode": "TOK200", "resDesc": "Success"}})
    );
    let r = ts
        .call(&app, INVALIDATE_V2, json!({"tokenReferenceId": "v2-ref"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({"resCode": "TOK003", "resDesc": "Invalid Token Passed"})
    );

    let body = encrypt(&ts.key, r#"{"referenceId":"x"}"#);
    let r = send(&app, &ts.key, Req::post(NEW_V2, "no-such-client", body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({"resCode": "TOK002", "resDesc": "Invalid API Key"})
    );
    let body = encrypt(&stranger_key(), r#"{"referenceId":"x"}"#);
    let r = send(&app, &ts.key, Req::post(NEW_V2, &ts.id, body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["resCode"], "TOK003");
}

#[tokio::test]
async fn new_token_by_get() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let body = encrypt(&ts.key, r#"{"referenceId":"by-get","userId":"dave"}"#);
    let mut req = Req::post(NEW, &ts.id, body);
    req.method = Method::GET;
    let r = send(&app, &ts.key, req).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(app.active(ts.creds(), &s(&r.body, "token")).await);
    // Renew and invalidate are POST only.
    let resp = app.http.get(app.url(INVALIDATE)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// `jwe` with one byte of part `i` flipped (or the empty part filled).
fn tamper(jwe: &str, i: usize) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[i]).unwrap();
    if bytes.is_empty() {
        bytes.push(0);
    } else {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
    }
    parts[i] = URL_SAFE_NO_PAD.encode(bytes);
    parts.join(".")
}

#[tokio::test]
async fn tampered_or_wrongly_keyed_bodies_are_refused_and_change_nothing() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let token = ts.open(&app, "keep-me", Some("erin")).await;

    let good = encrypt(&ts.key, r#"{"tokenReferenceId":"keep-me"}"#);
    for i in 0..5 {
        let r = send(
            &app,
            &ts.key,
            Req::post(INVALIDATE, &ts.id, tamper(&good, i)),
        )
        .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 401),
            "part {i}: {} {:?}",
            r.status,
            r.body
        );
        assert_eq!(r.body["resCode"], r.status.as_u16(), "part {i}");
    }
    let r = send(
        &app,
        &ts.key,
        Req::post(INVALIDATE, &ts.id, tamper(&good, 3)),
    )
    .await;
    assert_eq!(
        r.body,
        json!({"resCode": 401, "resDesc": "Request payload could not be decrypted"})
    );
    // Truncated.
    let r = send(
        &app,
        &ts.key,
        Req::post(INVALIDATE, &ts.id, good[..good.len() - 5].into()),
    )
    .await;
    assert!(r.status.is_client_error());

    // A body encrypted under another key (another client's, or none's).
    let other = ts_client(&app, json!({"name": "B"})).await;
    for key in [other.key.clone(), stranger_key()] {
        let body = encrypt(&key, r#"{"tokenReferenceId":"keep-me"}"#);
        let r = send(&app, &ts.key, Req::post(INVALIDATE, &ts.id, body)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert!(app.active(ts.creds(), &token).await, "nothing was ended");

    // A tampered new/token opens nothing.
    let open = encrypt(&ts.key, r#"{"referenceId":"x","userId":"frank"}"#);
    for i in 0..5 {
        let r = send(&app, &ts.key, Req::post(NEW, &ts.id, tamper(&open, i))).await;
        assert!(r.status.is_client_error());
    }
    assert!(app.sessions_of("frank").await.is_empty());
}

#[tokio::test]
async fn api_key_failures_are_401() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let body = encrypt(&ts.key, r#"{"referenceId":"r"}"#);
    for key in ["MOB-APP-9999", "has space", ""] {
        let r = send(&app, &ts.key, Req::post(NEW, key, body.clone())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(
            r.body,
            json!({"resCode": 401, "resDesc": "Invalid API Key"})
        );
    }
    let mut req = Req::post(NEW, &ts.id, body.clone());
    req.api_key = None;
    assert_eq!(
        send(&app, &ts.key, req).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Repeated X-API-KEY headers are refused, not guessed between.
    let resp = app
        .http
        .post(app.url(NEW))
        .header("Content-Type", "text/plain")
        .header("X-API-KEY", &ts.id)
        .header("X-API-KEY", "other")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn payload_key_rotation_retires_the_old_key() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let token = ts.open(&app, "before", Some("gina")).await;
    let path = format!("/admin/clients/{}/rotate-payload-key", ts.id);
    let (status, v) = app.admin(Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new_key = s(&v, "payload_key");
    assert_ne!(new_key, ts.key);

    let r = ts.call(&app, NEW, json!({"referenceId": "after"})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the old key is refused");
    let rotated = Ts { key: new_key, ..ts };
    // Sessions survive a key rotation; the new key reaches them.
    let r = rotated
        .call(&app, INVALIDATE, json!({"tokenReferenceId": "before"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(!app.active(rotated.creds(), &token).await);
    rotated.open(&app, "after", None).await;
}

#[tokio::test]
async fn malformed_requests_are_4xx_in_the_dialect_shape() {
    if !peer_ready().await {
        return;
    }
    let app = TestApp::spawn().await;
    let ts = ts_client(&app, json!({"name": "A"})).await;
    let bad = |status: u16| {
        move |r: Reply| {
            assert_eq!(r.status.as_u16(), status, "{:?}", r.body);
            assert_eq!(r.body["resCode"], status);
            assert!(r.body["resDesc"].is_string());
        }
    };
    let valid = encrypt(&ts.key, r#"{"referenceId":"ct"}"#);

    // Content types: text/plain (with parameters), application/jose or
    // none are read; anything else is 415.
    for ct in [
        Some("text/plain; charset=UTF-8"),
        Some("application/jose"),
        None,
    ] {
        let mut req = Req::post(NEW, &ts.id, valid.clone());
        req.content_type = ct;
        assert_eq!(
            send(&app, &ts.key, req).await.status,
            StatusCode::OK,
            "{ct:?}"
        );
    }
    let mut req = Req::post(NEW, &ts.id, valid.clone());
    req.content_type = Some("application/json");
    bad(415)(send(&app, &ts.key, req).await);

    // Surrounding whitespace (a file sent with --data-binary) is fine.
    let padded = format!("\n{valid}\r\n");
    assert_eq!(
        send(&app, &ts.key, Req::post(NEW, &ts.id, padded))
            .await
            .status,
        StatusCode::OK
    );

    // Larger than max_body (64 KiB by default).
    let huge = "A".repeat(70 * 1024);
    bad(413)(send(&app, &ts.key, Req::post(NEW, &ts.id, huge)).await);

    for body in ["", "not a jwe", "{\"referenceId\":\"plain\"}", "a.b.c.d.e"] {
        bad(400)(send(&app, &ts.key, Req::post(NEW, &ts.id, body.into())).await);
    }
    // Well encrypted, but not what the route needs.
    for (path, plain) in [
        (NEW, "[1,2]"),
        (NEW, "{}"),
        (NEW, r#"{"referenceId":""}"#),
        (NEW, r#"{"referenceId":{"a":1}}"#),
        (NEW, r#"{"referenceId":"a","referenceId":"b"}"#),
        (NEW, r#"{"referenceId":"a","userId":[1]}"#),
        (INVALIDATE, r#"{"referenceId":"a"}"#),
        (RENEW, "{}"),
    ] {
        let body = encrypt(&ts.key, plain);
        bad(400)(send(&app, &ts.key, Req::post(path, &ts.id, body)).await);
    }

    // A client not allowed to open sessions may not use new/token.
    let cc = ts_client(
        &app,
        json!({"name": "C", "grant_types": ["client_credentials"]}),
    )
    .await;
    let body = encrypt(&cc.key, r#"{"referenceId":"r"}"#);
    bad(403)(send(&app, &cc.key, Req::post(NEW, &cc.id, body)).await);
}
