//! A real `tessera serve` process on a loopback port, for tests of a fleet
//! of nodes. Killed when dropped.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Api;

/// Lines of a node's log kept for a failure message.
const LOG_TAIL: usize = 200;

pub struct Node {
    pub name: String,
    pub api: Api,
    pub dir: TempDir,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl std::ops::Deref for Node {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The `tessera` binary cargo built for these tests.
pub fn tessera_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// A `tessera` command with none of this environment's `TESSERA_*`
/// variables (the test's own settings must not leak into the node).
pub fn tessera_command() -> Command {
    let mut cmd = Command::new(tessera_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TESSERA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

impl Node {
    /// Starts a node on `database_url` with extra `settings` (as
    /// `TESSERA_<NAME>` variables) and waits until it serves.
    pub async fn start(name: &str, database_url: &str, settings: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = tessera_command();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--database-url", database_url])
            .args(["--issuer", "http://fleet.test"])
            .env("TESSERA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in settings {
            cmd.env(format!("TESSERA_{}", k.to_uppercase()), v);
        }
        let mut child = cmd.spawn().expect("spawn tessera");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&log, &line);
                if line.contains("tessera ready") {
                    return field(&line, "addr");
                }
            }
            None
        })
        .await;
        let addr = match ready {
            Ok(Some(addr)) => addr,
            _ => panic!(
                "node {name} did not start:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        // Keep draining the log, so the node never blocks on a full pipe.
        let tail = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&tail, &line);
            }
        });
        let admin_token = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("the node wrote admin.token")
            .trim()
            .to_owned();
        Node {
            name: name.to_owned(),
            api: Api::new(format!("http://{addr}"), admin_token),
            dir,
            child,
            log,
        }
    }

    /// The last lines the node logged.
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `/readyz`: status and body.
    pub async fn ready(&self) -> (u16, serde_json::Value) {
        match self.http.get(self.url("/readyz")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or_default())
            }
            Err(e) => (0, serde_json::json!({ "error": e.to_string() })),
        }
    }

    /// Waits until `/readyz` says ready (the change feed is current).
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, body) = self.ready().await;
            if status == 200 {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "node {} not ready after {within:?}: {status} {body}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn remember(log: &Mutex<Vec<String>>, line: &str) {
    let mut log = log.lock().unwrap();
    if log.len() >= LOG_TAIL {
        log.remove(0);
    }
    log.push(line.to_owned());
}

/// `name=value` in a compact log line.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}
