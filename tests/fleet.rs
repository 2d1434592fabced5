//! A fleet: three `tessera serve` processes on one fresh PostgreSQL
//! database. What one node does, the others honour: sessions ended on one
//! are refused on the others, clients, secrets and signing keys are shared.
//! Skips without TESSERA_TEST_DATABASE_URL.

mod common;

use std::time::Duration;

use common::node::{tessera_command, Node};
use common::pg::FreshDatabase;
use common::s;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long a change may take to reach another node before the test calls
/// it lost. Generous: the machine is shared; the benchmark measures speed.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

/// Polls `check` until it holds, within [`PROPAGATION_BOUND`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PROPAGATION_BOUND;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PROPAGATION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn migrate(url: &str) -> std::process::Output {
    tessera_command()
        .args(["migrate", "--database-url", url])
        .output()
        .await
        .expect("run tessera migrate")
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut k: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| s(k, "kid"))
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_clients_and_keys() {
    let Some(db) = FreshDatabase::create("tessera_fleet", "fleet test").await else {
        return;
    };

    // Migrations by hand first, twice: the second run finds nothing to do.
    for _ in 0..2 {
        let out = migrate(&db.url).await;
        assert!(
            out.status.success(),
            "tessera migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    }
    let bad = migrate("postgres://127.0.0.1:1/nothing").await;
    assert!(!bad.status.success(), "migrate against no server fails");

    // Three nodes starting at once on the same database.
    let (a, b, c) = tokio::join!(
        Node::start("a", &db.url, &[]),
        Node::start("b", &db.url, &[]),
        Node::start("c", &db.url, &[]),
    );
    for n in [&a, &b, &c] {
        n.wait_ready(Duration::from_secs(10)).await;
        let (_, body) = n.ready().await;
        assert_eq!(body["change_feed"], "current", "{body}");
    }
    assert_eq!(a.admin_token, b.admin_token, "one admin token per fleet");
    assert_eq!(a.admin_token, c.admin_token, "one admin token per fleet");
    assert_eq!(kids(&a.jwks().await), kids(&b.jwks().await));
    assert_eq!(kids(&a.jwks().await), kids(&c.jwks().await));

    // A client created on A works on B and C at once (no cache to warm).
    let (id, secret) = a.new_client().await;
    let cred = (id.as_str(), secret.as_str());
    for n in [&b, &c] {
        let (status, v) = n.token(cred, &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(a.active(cred, &s(&v, "access_token")).await);
    }

    // A session opened on A, ended on B, is refused on C (and on A).
    let session = a.open_session(cred, "fleet-user").await;
    let access = s(&session, "access_token");
    let refresh = s(&session, "refresh_token");
    assert!(c.active(cred, &access).await, "live on C before the end");
    assert_eq!(b.revoke(cred, &refresh, None).await, StatusCode::OK);
    eventually("C refuses the ended session's access token", || async {
        !c.active(cred, &access).await
    })
    .await;
    eventually("A refuses it too", || async {
        !a.active(cred, &access).await
    })
    .await;
    let (status, _) = c
        .token(
            cred,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "its refresh token is dead on C"
    );

    // Every session of a subject, ended by the admin API on C, is refused on A.
    let one = a.open_session(cred, "subject-x").await;
    let two = b.open_session(cred, "subject-x").await;
    let (status, v) = c
        .admin(Method::DELETE, "/admin/subjects/subject-x/sessions", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for t in [&one, &two] {
        let at = s(t, "access_token");
        eventually("a subject-wide end reaches A", || async {
            !a.active(cred, &at).await
        })
        .await;
    }

    // A secret rotated on B: the old secret is refused on A, the new works.
    let (status, v) = b
        .admin(
            Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let new_secret = s(&v, "client_secret");
    eventually("the old secret is refused on A", || async {
        a.token(cred, &[("grant_type", "client_credentials")])
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await;
    let cred = (id.as_str(), new_secret.as_str());
    let (status, v) = a.token(cred, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Keys rotated on A: B and C publish the new key and accept its tokens.
    let (status, v) = a.admin(Method::POST, "/admin/keys/rotate", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let kid = s(&v, "kid");
    for n in [&b, &c] {
        eventually("the new key is published everywhere", || async {
            kids(&n.jwks().await).contains(&kid)
        })
        .await;
    }
    let fresh = a.open_session(cred, "after-rotation").await;
    let fresh_access = s(&fresh, "access_token");
    for n in [&b, &c] {
        assert!(
            n.active(cred, &fresh_access).await,
            "new-key token on {}",
            n.name
        );
    }

    // A client deleted on C: its tokens die on A, its secret on B.
    let (status, v) = c
        .admin(Method::DELETE, &format!("/admin/clients/{id}"), None)
        .await;
    assert!(status.is_success(), "{status} {v}");
    let (other_id, other_secret) = b.new_client().await;
    let other = (other_id.as_str(), other_secret.as_str());
    eventually("a deleted client's tokens are refused on A", || async {
        !a.active(other, &fresh_access).await
    })
    .await;
    eventually("a deleted client cannot authenticate on B", || async {
        b.token(cred, &[("grant_type", "client_credentials")])
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await;

    for n in [a, b, c] {
        n.kill().await;
    }
    db.drop_now().await;
}
