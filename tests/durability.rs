//! The real binary, killed with SIGKILL right after acknowledging writes:
//! what was acknowledged is still there after a restart. Also: no client
//! secret or refresh token ever lands in the data directory or the logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    admin: String,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Start `tessera serve` on `dir`, logging at `log` level into `log_file`.
    async fn start(dir: &Path, log_file: &Path) -> Self {
        Self::start_with(dir, log_file, 1).await
    }

    /// [`Server::start`], with a durable commit of the embedded store at
    /// most every `checkpoint_seconds` (the write-ahead log holds the
    /// writes in between).
    async fn start_with(dir: &Path, log_file: &Path, checkpoint_seconds: u64) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            // A restart gets a new port; the issuer, like any real
            // deployment's, stays the same.
            .args(["--issuer", "http://tessera.test"])
            .env("RUST_LOG", "trace")
            .env(
                "TESSERA_STORE_CHECKPOINT_SECONDS",
                checkpoint_seconds.to_string(),
            )
            .env_remove("TESSERA_ADMIN_TOKEN")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tessera");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not become ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child,
            base,
            admin,
            http,
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    async fn create_client(&self) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/admin/clients", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({"name": "durable"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        (
            v["client_id"].as_str().unwrap().into(),
            v["client_secret"].as_str().unwrap().into(),
        )
    }

    async fn open(&self, c: &(String, String), subject: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .basic_auth(&c.0, Some(&c.1))
            .json(&json!({"subject": subject}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn form(
        &self,
        path: &str,
        c: &(String, String),
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(&c.0, Some(&c.1))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn active(&self, c: &(String, String), token: &str) -> bool {
        let (s, v) = self
            .form("/oauth2/introspect", c, &[("token", token)])
            .await;
        assert_eq!(s, StatusCode::OK);
        v["active"].as_bool().unwrap()
    }

    async fn sessions(&self, subject: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/admin/sessions?subject={subject}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["sessions"].as_array().unwrap().clone()
    }

    async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/.well-known/jwks.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

/// Every acknowledged write comes back after a SIGKILL: here none of them
/// reached a durable commit of the database, so all come from replaying
/// the write-ahead log.
#[tokio::test]
async fn acknowledged_revocations_and_sessions_survive_sigkill() {
    survive_sigkill(3600, false).await;
}

/// The same with a checkpoint (durable commit) between the sessions and
/// the revocations: the database holds the first, the log the second.
#[tokio::test]
async fn acknowledged_writes_survive_sigkill_across_a_checkpoint() {
    survive_sigkill(1, true).await;
}

async fn survive_sigkill(checkpoint_seconds: u64, checkpoint_between: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &log, checkpoint_seconds).await;
    let client = server.create_client().await;
    let jwks_before = server.jwks().await;

    // Many writes in flight at once, so several share a commit.
    let opened: Vec<Value> = futures::future::join_all(
        (0..40).map(|i| server.open(&client, if i % 2 == 0 { "even" } else { "odd" })),
    )
    .await;
    let mut checkpointed_at = None;
    if checkpoint_between {
        // Past the checkpoint interval, then one more write: the writer
        // checkpoints after it at the latest.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        const CHECKPOINT: &str = "checkpoint: the database holds every logged write";
        let checkpoints = || {
            std::fs::read_to_string(&log)
                .unwrap()
                .matches(CHECKPOINT)
                .count()
        };
        let before = checkpoints();
        server.open(&client, "spare").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        // A checkpoint after the spare session's write.
        while checkpoints() == before {
            assert!(Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        checkpointed_at = Some(Instant::now());
    }
    let to_end: Vec<&Value> = opened.iter().step_by(4).collect();
    let revokes = futures::future::join_all(to_end.iter().enumerate().map(|(i, v)| {
        let token = if i % 2 == 0 {
            s(v, "access_token")
        } else {
            s(v, "refresh_token")
        };
        let c = client.clone();
        let srv = &server;
        async move { srv.form("/oauth2/revoke", &c, &[("token", &token)]).await.0 }
    }))
    .await;
    assert!(revokes.iter().all(|s| *s == StatusCode::OK));
    // The last acknowledgement is in; kill without any chance to flush.
    server.kill();
    // Unless a second checkpoint may have come (a very slow machine), the
    // revocations are in the log only.
    let from_log = checkpointed_at.is_none_or(|t| t.elapsed() < Duration::from_millis(800));
    let server = Server::start_with(&data, &log, checkpoint_seconds).await;
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !from_log || log_text.contains("replayed the writes the last checkpoint did not hold"),
        "the acknowledged writes since the last checkpoint were in the log, and replayed"
    );
    assert_eq!(server.jwks().await, jwks_before, "signing keys survived");
    let ended: std::collections::HashSet<String> =
        to_end.iter().map(|v| s(v, "session_id")).collect();
    for v in &opened {
        let sid = s(v, "session_id");
        let want = !ended.contains(&sid);
        assert_eq!(
            server.active(&client, &s(v, "access_token")).await,
            want,
            "access token of {sid}"
        );
        assert_eq!(
            server.active(&client, &s(v, "refresh_token")).await,
            want,
            "refresh token of {sid}"
        );
    }
    let listed: Vec<Value> = [server.sessions("even").await, server.sessions("odd").await].concat();
    if checkpoint_between {
        assert_eq!(server.sessions("spare").await.len(), 1);
    }
    assert_eq!(
        listed.len(),
        40,
        "every acknowledged session is still there"
    );
    let revoked = listed
        .iter()
        .filter(|v| v["status"] == "token_revoked")
        .count();
    assert_eq!(revoked, ended.len());

    // The client survived too: it can still get tokens.
    let (status, _) = server
        .form(
            "/oauth2/token",
            &client,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.kill();
}

#[tokio::test]
async fn no_client_secret_or_refresh_token_in_the_data_directory_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let server = Server::start(&data, &log).await;
    let client = server.create_client().await;
    let mut secrets = vec![client.1.clone()];
    let opened = server.open(&client, "secretive").await;
    let mut rt = s(&opened, "refresh_token");
    secrets.push(rt.clone());
    for _ in 0..3 {
        let (status, v) = server
            .form(
                "/oauth2/token",
                &client,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        rt = s(&v, "refresh_token");
        secrets.push(rt.clone());
    }
    // A failed attempt with a wrong secret must not log it either.
    secrets.push("WrongSecretThatMustNotBeLogged".into());
    let bad = (
        client.0.clone(),
        "WrongSecretThatMustNotBeLogged".to_owned(),
    );
    server
        .form(
            "/oauth2/token",
            &bad,
            &[("grant_type", "client_credentials")],
        )
        .await;
    server
        .form("/oauth2/revoke", &client, &[("token", &rt)])
        .await;
    // Graceful-ish end is not needed: files are what they are after a kill.
    server.kill();

    let mut files: Vec<PathBuf> = Vec::new();
    collect_files(&data, &mut files);
    files.push(log.clone());
    assert!(files.len() >= 4, "{files:?}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("session ended"),
        "trace logging was on: {}",
        &log_text[..log_text.len().min(2000)]
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret appears in plaintext in {}",
                f.display()
            );
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
