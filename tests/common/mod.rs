//! Test harness: the real application on a random loopback port, with a
//! fresh data directory and a clock the test moves by hand.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tessera::config::Settings;
use tessera::core::clock::{Clock, ManualClock, SystemClock};
use tessera::core::Engine;
use tessera::server::Application;

pub mod node;
pub mod pg;
pub mod pg_cluster;

/// A Tessera server seen from outside: its base URL and admin token, and
/// the HTTP calls the tests make.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub admin_token: String,
}

pub struct TestApp {
    pub api: Api,
    pub clock: Arc<ManualClock>,
    pub dir: Arc<TempDir>,
    pub engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_settings(dir: &TempDir) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        sweep_interval_seconds: 3600,
        log: "warn".into(),
        ..Settings::default()
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        Self::spawn_in(dir, clock, tweak).await
    }

    /// Start on an existing data directory (a restart).
    pub async fn spawn_in(
        dir: Arc<TempDir>,
        clock: Arc<ManualClock>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::spawn_on(dir, clock, None, tweak).await
    }

    /// Start with a given store (e.g. a `FaultyStore`).
    pub async fn spawn_with_store(store: Arc<dyn tessera::store::Store>) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        Self::spawn_on(dir, clock, Some(store), |_| {}).await
    }

    async fn spawn_on(
        dir: Arc<TempDir>,
        clock: Arc<ManualClock>,
        store: Option<Arc<dyn tessera::store::Store>>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = test_settings(&dir);
        tweak(&mut settings);
        let app = Application::build_with(settings, clock.clone(), store)
            .await
            .expect("application builds");
        let base = format!("http://{}", app.addr());
        let engine = app.engine();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let admin_token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("admin.token written")
            .trim()
            .to_owned();
        Self {
            api: Api::new(base, admin_token),
            clock,
            dir,
            engine,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stop gracefully and wait until the store is closed; returns what a
    /// restart needs.
    pub async fn stop(mut self) -> (Arc<TempDir>, Arc<ManualClock>) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server ran");
        }
        let (dir, clock) = (self.dir.clone(), self.clock.clone());
        drop(self);
        // The engine (and with it the store's writer) goes with the last Arc.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (dir, clock)
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn new(base: String, admin_token: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            admin_token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// The published JWK Set.
    pub async fn jwks(&self) -> Value {
        let r = self.http.get(self.url("/.well-known/jwks.json")).send();
        r.await.expect("jwks").json().await.expect("jwks is JSON")
    }

    /// Create a client; returns (client_id, client_secret).
    pub async fn create_client(&self, body: Value) -> (String, String) {
        let (status, v) = self
            .admin(reqwest::Method::POST, "/admin/clients", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn new_client(&self) -> (String, String) {
        self.create_client(json!({"name": "test app"})).await
    }

    /// POST a form with optional Basic credentials.
    pub async fn form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut rb = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            rb = rb.basic_auth(id, Some(secret));
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, v, headers)
    }

    pub async fn token(&self, client: (&str, &str), form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (s, v, _) = self.form("/oauth2/token", Some(client), form).await;
        (s, v)
    }

    pub async fn introspect(&self, client: (&str, &str), token: &str) -> Value {
        let (s, v, _) = self
            .form("/oauth2/introspect", Some(client), &[("token", token)])
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn active(&self, client: (&str, &str), token: &str) -> bool {
        self.introspect(client, token).await["active"]
            .as_bool()
            .expect("active is a bool")
    }

    pub async fn revoke(
        &self,
        client: (&str, &str),
        token: &str,
        hint: Option<&str>,
    ) -> StatusCode {
        let mut form = vec![("token", token)];
        if let Some(h) = hint {
            form.push(("token_type_hint", h));
        }
        self.form("/oauth2/revoke", Some(client), &form).await.0
    }

    /// Open a session through the native session API.
    pub async fn open_session(&self, client: (&str, &str), subject: &str) -> Value {
        let resp = self
            .http
            .post(self.url("/v1/sessions"))
            .basic_auth(client.0, Some(client.1))
            .json(&json!({"subject": subject, "scope": "read"}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.unwrap()
    }

    pub async fn sessions_of(&self, subject: &str) -> Vec<Value> {
        let (s, v) = self
            .admin(
                reqwest::Method::GET,
                &format!("/admin/sessions?subject={subject}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["sessions"].as_array().unwrap().clone()
    }
}

pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}
