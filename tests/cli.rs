//! Runs the built `tessera` binary for what needs no server: help, usage,
//! unreachable servers, missing admin token, bad configuration.

use std::path::Path;
use std::process::{Command, Output};

/// The binary with no inherited Tessera settings, so a developer's shell
/// cannot change what these tests see.
fn tessera(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("TESSERA_")
            || k.eq_ignore_ascii_case("http_proxy")
            || k.eq_ignore_ascii_case("all_proxy")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run tessera");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn data_dir_with_token() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "test-admin-token\n").unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn help_lists_the_commands() {
    let (out, stdout, _) = run(&mut tessera(&["--help"]));
    assert!(out.status.success());
    for c in ["serve", "migrate", "client", "session", "subject", "keys"] {
        assert!(stdout.contains(c), "{c} missing from:\n{stdout}");
    }
    let (out, stdout, _) = run(&mut tessera(&["client", "--help"]));
    assert!(out.status.success());
    for c in ["create", "list", "delete", "rotate-secret"] {
        assert!(stdout.contains(c), "{c} missing from:\n{stdout}");
    }
}

#[test]
fn migrate_needs_a_database_and_names_an_unreachable_one() {
    let (out, _, stderr) = run(&mut tessera(&["migrate"]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--database-url"), "{stderr}");
    let (out, _, stderr) = run(&mut tessera(&[
        "migrate",
        "--database-url",
        "postgres://tessera:secret-pw@127.0.0.1:1/none",
    ]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("secret-pw"),
        "the password is never printed: {stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let (out, _, _) = run(&mut tessera(&["client", "create"]));
    assert_eq!(out.status.code(), Some(2));
    let (out, _, _) = run(&mut tessera(&["no-such-command"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_server_is_named() {
    let dir = data_dir_with_token();
    let (out, stdout, stderr) = run(&mut tessera(&[
        "client",
        "list",
        "--server",
        "http://127.0.0.1:1",
        "--data-dir",
        path(dir.path()),
    ]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("error: cannot reach Tessera at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("test-admin-token"));
}

#[test]
fn env_token_beats_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(tessera(&[
        "keys",
        "rotate",
        "--server",
        "http://127.0.0.1:1",
        "--data-dir",
        path(dir.path()),
    ])
    .env("TESSERA_ADMIN_TOKEN", "from-env"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn missing_admin_token_names_both_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, stderr) = run(&mut tessera(&[
        "session",
        "list",
        "--subject",
        "a@b",
        "--server",
        "http://127.0.0.1:1",
        "--data-dir",
        path(dir.path()),
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.starts_with("error: no admin token"), "{stderr}");
    assert!(stderr.contains("TESSERA_ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
}

#[test]
fn https_is_refused_clearly() {
    let dir = data_dir_with_token();
    let (out, _, stderr) = run(&mut tessera(&[
        "client",
        "list",
        "--server",
        "https://127.0.0.1:1",
        "--data-dir",
        path(dir.path()),
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("TLS is not supported"), "{stderr}");
}

#[test]
fn server_url_from_env() {
    let dir = data_dir_with_token();
    let (out, _, stderr) = run(tessera(&["client", "list", "--data-dir", path(dir.path())])
        .env("TESSERA_SERVER", "http://127.0.0.1:1"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot reach Tessera at http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_reported() {
    let (out, _, stderr) = run(&mut tessera(&["serve", "--config", "/nonexistent.toml"]));
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
    assert!(stderr.contains("config"), "{stderr}");
}

#[test]
fn bad_config_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
    let (out, _, stderr) = run(&mut tessera(&["serve", "--config", path(&file)]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("log_format"), "{stderr}");
}

/// A real server on a random loopback port, stopped when dropped.
struct Server {
    base: String,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = tessera::config::Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            log: "warn".into(),
            ..Default::default()
        };
        let app = tessera::server::Application::build(settings)
            .await
            .expect("server builds");
        let base = format!("http://{}", app.addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Self {
            base,
            dir,
            stop: Some(tx),
        }
    }

    /// Runs an admin command against this server off the runtime's threads.
    async fn admin(&self, args: &[&str]) -> (Output, String, String) {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        argv.extend(["--server".into(), self.base.clone()]);
        argv.extend(["--data-dir".into(), path(self.dir.path()).to_owned()]);
        tokio::task::spawn_blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run(&mut tessera(&argv))
        })
        .await
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_lifecycle_against_a_running_server() {
    let server = Server::start().await;

    let (out, stdout, stderr) = server
        .admin(&[
            "client",
            "create",
            "--name",
            "Billing",
            "--client-id",
            "billing@acme",
            "--json",
        ])
        .await;
    assert!(out.status.success(), "{stderr}");
    let created: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is one JSON value");
    assert_eq!(created["client_id"], "billing@acme");
    assert!(created["client_secret"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(stderr.contains("only once"), "{stderr}");

    let (out, stdout, _) = server.admin(&["client", "list"]).await;
    assert!(out.status.success());
    assert!(stdout.starts_with("CLIENT_ID"), "{stdout}");
    assert!(stdout.contains("billing@acme  Billing"), "{stdout}");

    let (out, stdout, _) = server
        .admin(&["session", "list", "--subject", "a b/c@d"])
        .await;
    assert!(out.status.success());
    assert_eq!(stdout, "no sessions for subject a b/c@d\n");

    let (out, stdout, _) = server
        .admin(&["subject", "revoke", "a b/c@d", "--json"])
        .await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["subject"], "a b/c@d");

    let (out, stdout, _) = server.admin(&["client", "delete", "billing@acme"]).await;
    assert!(out.status.success());
    assert!(stdout.contains("deleted:"), "{stdout}");

    let (out, _, stderr) = server.admin(&["client", "delete", "billing@acme"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("(HTTP 404)"),
        "{stderr}"
    );

    let (out, _, stderr) = run(tessera(&[
        "keys",
        "rotate",
        "--server",
        &server.base,
        "--data-dir",
        path(server.dir.path()),
    ])
    .env("TESSERA_ADMIN_TOKEN", "not-the-token-7f3a"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("(HTTP 401)"), "{stderr}");
    assert!(!stderr.contains("not-the-token-7f3a"), "{stderr}");
}
