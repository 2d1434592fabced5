//! PostgreSQL goes down under load and comes back. Two `tessera serve`
//! processes share a private PostgreSQL server; a bounded load opens,
//! checks and revokes sessions on both while the server is stopped as in a
//! crash (`pg_ctl stop -m immediate`) and started again. Checked:
//!
//! - every answer is a 2xx or 4xx, or a 503 with `Retry-After`: no other
//!   5xx, no dropped connection;
//! - no request takes longer than the configured request timeout (plus
//!   slack for this shared machine);
//! - both nodes are ready again, with a current change feed, within 5 s of
//!   PostgreSQL's return, and take writes again;
//! - nothing acknowledged is lost: every session whose opening was
//!   answered 201 is still live on both nodes unless the test revoked it,
//!   and every revocation answered 200 is still in force on both (counted).
//!
//! Runs where the PostgreSQL tests run (TESSERA_TEST_DATABASE_URL set; the
//! server named there is not used) and the machine has PostgreSQL's
//! binaries; skips with a message otherwise.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node::Node;
use common::pg_cluster::PgCluster;
use common::s;
use reqwest::StatusCode;

/// Settings of both nodes: a database operation gives up after 1 s, a
/// request after 2 s (answered 503 either way).
const DB_TIMEOUT_MS: &str = "1000";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
const WORKERS: usize = 6;
/// Bounds on the load, whatever happens: requests per worker and time.
const MAX_REQUESTS_PER_WORKER: usize = 5000;
const BEFORE_OUTAGE: Duration = Duration::from_secs(2);
const OUTAGE: Duration = Duration::from_secs(4);
const AFTER_RECOVERY: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Tally {
    /// Sessions whose opening was acknowledged: (access, refresh).
    opened: Vec<(String, String)>,
    /// Of those, revoked with an acknowledgement.
    revoked: Vec<(String, String)>,
    /// Revocations answered 503: their outcome is unknown (the commit may
    /// have happened before the connection broke).
    unsure: Vec<(String, String)>,
    /// Answers by status.
    statuses: std::collections::BTreeMap<u16, usize>,
    /// Anything that is not a 2xx, 4xx or a 503 with Retry-After.
    bad: Vec<String>,
    slowest: Duration,
}

#[derive(Clone, Copy)]
enum Op {
    Open,
    Check,
    Revoke,
}

async fn worker(
    nodes: Arc<Vec<Node>>,
    client: (String, String),
    tally: Arc<Mutex<Tally>>,
    id: usize,
    until: Instant,
) {
    let cred = (client.0.as_str(), client.1.as_str());
    for i in 0..MAX_REQUESTS_PER_WORKER {
        if Instant::now() >= until {
            return;
        }
        let node = &nodes[(id + i) % nodes.len()];
        let op = match i % 4 {
            0 | 1 => Op::Open,
            2 => Op::Check,
            _ => Op::Revoke,
        };
        let pick =
            |list: &Vec<(String, String)>| list.get((i * 7919 + id) % list.len().max(1)).cloned();
        let target = {
            let t = tally.lock().unwrap();
            match op {
                Op::Open => None,
                Op::Check => pick(&t.opened),
                Op::Revoke => {
                    pick(&t.opened).filter(|p| !t.revoked.contains(p) && !t.unsure.contains(p))
                }
            }
        };
        let started = Instant::now();
        let request = match (op, &target) {
            (Op::Open, _) => node
                .http
                .post(node.url("/v1/sessions"))
                .basic_auth(cred.0, Some(cred.1))
                .json(&serde_json::json!({ "subject": format!("outage-{id}-{i}") })),
            (Op::Check, Some((access, _))) => node
                .http
                .post(node.url("/oauth2/introspect"))
                .basic_auth(cred.0, Some(cred.1))
                .form(&[("token", access.as_str())]),
            (Op::Revoke, Some((_, refresh))) => node
                .http
                .post(node.url("/oauth2/revoke"))
                .basic_auth(cred.0, Some(cred.1))
                .form(&[("token", refresh.as_str())]),
            _ => continue,
        };
        let answer = request.send().await;
        let took = started.elapsed();
        let (status, retry_after, body) = match answer {
            Ok(r) => {
                let status = r.status();
                let retry_after = r.headers().contains_key("retry-after");
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                (status, retry_after, body)
            }
            Err(e) => {
                let mut t = tally.lock().unwrap();
                t.slowest = t.slowest.max(took);
                t.bad.push(format!("{}: no answer: {e}", node.name));
                continue;
            }
        };
        let mut t = tally.lock().unwrap();
        t.slowest = t.slowest.max(took);
        *t.statuses.entry(status.as_u16()).or_default() += 1;
        match (op, status, target) {
            (_, StatusCode::SERVICE_UNAVAILABLE, target) => {
                if !retry_after {
                    t.bad
                        .push(format!("{}: 503 without Retry-After", node.name));
                }
                if let (Op::Revoke, Some(pair)) = (op, target) {
                    t.unsure.push(pair);
                }
            }
            (Op::Open, StatusCode::CREATED, _) => {
                t.opened
                    .push((s(&body, "access_token"), s(&body, "refresh_token")));
            }
            (Op::Revoke, StatusCode::OK, Some(pair)) => t.revoked.push(pair),
            (Op::Check, StatusCode::OK, _) => {}
            (_, status, _) => t
                .bad
                .push(format!("{}: unexpected {status} {body}", node.name)),
        }
    }
}

/// Polls until every node is ready; returns how long that took.
async fn wait_all_ready(nodes: &[Node], bound: Duration) -> Duration {
    let start = Instant::now();
    for n in nodes {
        loop {
            let (status, body) = n.ready().await;
            if status == 200 {
                break;
            }
            assert!(
                start.elapsed() < bound,
                "node {} not ready within {bound:?} of PostgreSQL's return: {status} {body}\n{}",
                n.name,
                n.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_outage_under_load() {
    if std::env::var("TESSERA_TEST_DATABASE_URL").is_err() {
        eprintln!("skipping: TESSERA_TEST_DATABASE_URL not set (PostgreSQL outage test)");
        return;
    }
    let Some(pg) = PgCluster::start_new("PostgreSQL outage test") else {
        return;
    };
    let pg = Arc::new(pg);
    let settings = [
        ("database_timeout_ms", DB_TIMEOUT_MS),
        ("request_timeout_seconds", "2"),
    ];
    let url = pg.url();
    let (a, b) = tokio::join!(
        Node::start("a", &url, &settings),
        Node::start("b", &url, &settings),
    );
    let nodes = Arc::new(vec![a, b]);
    for n in nodes.iter() {
        n.wait_ready(Duration::from_secs(10)).await;
    }
    let client = nodes[0].new_client().await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let load_until = Instant::now() + BEFORE_OUTAGE + OUTAGE + RECOVERY_BOUND + AFTER_RECOVERY;
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                nodes.clone(),
                client.clone(),
                tally.clone(),
                id,
                load_until,
            ))
        })
        .collect();

    tokio::time::sleep(BEFORE_OUTAGE).await;
    let opened_before = tally.lock().unwrap().opened.len();
    let cluster = pg.clone();
    tokio::task::spawn_blocking(move || cluster.stop_immediate())
        .await
        .unwrap();
    tokio::time::sleep(OUTAGE).await;
    // While PostgreSQL is down, no node claims to be ready.
    for n in nodes.iter() {
        let (status, body) = n.ready().await;
        assert_eq!(
            status, 503,
            "{} ready while PostgreSQL is down: {body}",
            n.name
        );
    }
    let cluster = pg.clone();
    tokio::task::spawn_blocking(move || cluster.start())
        .await
        .unwrap();
    let recovered_in = wait_all_ready(&nodes, RECOVERY_BOUND).await;
    let opened_at_return = tally.lock().unwrap().opened.len();

    for w in workers {
        w.await.unwrap();
    }
    let t = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "outage test: statuses {:?}; sessions acknowledged {} ({} before the outage, {} by PostgreSQL's return); revocations acknowledged {}, unsure {}; slowest answer {:?}; ready again {:?} after PostgreSQL's return",
        t.statuses,
        t.opened.len(),
        opened_before,
        opened_at_return,
        t.revoked.len(),
        t.unsure.len(),
        t.slowest,
        recovered_in,
    );
    assert!(
        t.bad.is_empty(),
        "answers other than 2xx/4xx/503: {:?}",
        t.bad
    );
    assert!(
        t.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was seen (some 503s)"
    );
    assert!(
        t.slowest <= REQUEST_TIMEOUT + SLACK,
        "a request hung for {:?}",
        t.slowest
    );
    assert!(
        t.opened.len() > opened_at_return,
        "sessions were opened again after recovery"
    );
    assert!(!t.revoked.is_empty(), "some revocations were acknowledged");

    // Nothing acknowledged was lost, on either node.
    let cred = (client.0.as_str(), client.1.as_str());
    let (mut live, mut ended) = (0, 0);
    for pair in &t.opened {
        let (access, _) = pair;
        let want = if t.revoked.contains(pair) {
            Some(false)
        } else if t.unsure.contains(pair) {
            None
        } else {
            Some(true)
        };
        for n in nodes.iter() {
            let active = n.active(cred, access).await;
            if let Some(want) = want {
                assert_eq!(
                    active, want,
                    "session acknowledged as {want} is {active} on {}",
                    n.name
                );
            }
        }
        match want {
            Some(true) => live += 1,
            Some(false) => ended += 1,
            None => {}
        }
    }
    for (_, refresh) in &t.revoked {
        let (status, _) = nodes[1]
            .token(
                cred,
                &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a revoked refresh token works again"
        );
    }
    eprintln!("outage test: {live} acknowledged sessions live, {ended} acknowledged revocations in force, none lost");
}
