//! How fast an end reaches the rest of a fleet, for `bench/fleet`.
//!
//! ```text
//! fleet_propagation --node URL --node URL --node URL --admin-token T \
//!     [--sessions 1000] [--workers 4] [--out FILE] [--client-out FILE]
//! ```
//!
//! Registers a client on the first node and opens `--sessions` sessions
//! there, checking that every other node sees each one live. Then
//! `--workers` tasks take the sessions one at a time: end it on the first
//! node (`DELETE /admin/sessions/{id}`), and from the moment the end is
//! acknowledged, introspect its access token on every other node, each
//! node in a loop of its own, until it answers `active: false`. The delay
//! recorded for a node is acknowledgement → first inactive answer, so it
//! includes one introspection round trip (which this tool also measures
//! on its own, as `check_ms`). A session not seen ended within 10 s is a
//! failure. Prints a JSON summary and writes it to `--out`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

/// A node that has not seen an end after this long has lost it.
const GIVE_UP: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Args {
    /// Base URLs; the first ends sessions, the others are watched.
    #[arg(long = "node", required = true, num_args = 1)]
    nodes: Vec<String>,
    #[arg(long)]
    admin_token: String,
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Also write the client's `id:secret` here (for `loadgen --basic-file`).
    #[arg(long)]
    client_out: Option<std::path::PathBuf>,
}

type Cred = (String, String);

struct Bench {
    http: reqwest::Client,
    nodes: Vec<String>,
    admin_token: String,
    cred: Cred,
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("fleet_propagation: {what}");
    std::process::exit(1)
}

impl Bench {
    async fn introspect(&self, node: &str, token: &str) -> bool {
        let r = self
            .http
            .post(format!("{node}/oauth2/introspect"))
            .basic_auth(&self.cred.0, Some(&self.cred.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap_or_else(|e| fail(format!("introspect on {node}: {e}")));
        if !r.status().is_success() {
            fail(format!("introspect on {node}: {}", r.status()));
        }
        let v: Value = r.json().await.unwrap_or_else(|e| fail(e));
        v["active"]
            .as_bool()
            .unwrap_or_else(|| fail(format!("no active in {v}")))
    }

    async fn open(&self, i: usize) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/v1/sessions", self.nodes[0]))
            .basic_auth(&self.cred.0, Some(&self.cred.1))
            .json(&json!({ "subject": format!("propagation-{i}") }))
            .send()
            .await
            .unwrap_or_else(|e| fail(format!("open session: {e}")));
        if r.status().as_u16() != 201 {
            fail(format!("open session: {}", r.status()));
        }
        let v: Value = r.json().await.unwrap_or_else(|e| fail(e));
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| fail(format!("{k} missing")))
                .to_owned()
        };
        (field("session_id"), field("access_token"))
    }

    /// Ends the session on the first node; the time of the acknowledgement
    /// and how long the end took.
    async fn end(&self, session_id: &str) -> (Instant, Duration) {
        let start = Instant::now();
        let r = self
            .http
            .delete(format!("{}/admin/sessions/{session_id}", self.nodes[0]))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap_or_else(|e| fail(format!("end session: {e}")));
        let acked = Instant::now();
        if !r.status().is_success() {
            fail(format!("end session: {}", r.status()));
        }
        (acked, acked - start)
    }

    /// Milliseconds from `acked` until `node` says the token is inactive.
    async fn watch(&self, node: &str, token: &str, acked: Instant) -> f64 {
        loop {
            if !self.introspect(node, token).await {
                return acked.elapsed().as_secs_f64() * 1e3;
            }
            if acked.elapsed() > GIVE_UP {
                fail(format!(
                    "{node} still accepts a token {GIVE_UP:?} after its end"
                ));
            }
        }
    }
}

fn percentiles(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        (ms[i] * 100.0).round() / 100.0
    };
    json!({
        "count": ms.len(),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.nodes.len() < 2 || args.sessions == 0 || args.workers == 0 {
        fail("need at least two --node, and --sessions and --workers ≥ 1");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap_or_else(|e| fail(e));
    let r = http
        .post(format!("{}/admin/clients", args.nodes[0]))
        .bearer_auth(&args.admin_token)
        .json(&json!({ "name": "fleet propagation bench" }))
        .send()
        .await
        .unwrap_or_else(|e| fail(format!("create client: {e}")));
    if r.status().as_u16() != 201 {
        fail(format!("create client: {}", r.status()));
    }
    let v: Value = r.json().await.unwrap_or_else(|e| fail(e));
    let cred = (
        v["client_id"].as_str().unwrap_or_default().to_owned(),
        v["client_secret"].as_str().unwrap_or_default().to_owned(),
    );
    if let Some(path) = &args.client_out {
        std::fs::write(path, format!("{}:{}\n", cred.0, cred.1))
            .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    }
    let bench = Arc::new(Bench {
        http,
        nodes: args.nodes.clone(),
        admin_token: args.admin_token.clone(),
        cred,
    });

    eprintln!("opening {} sessions on {}", args.sessions, bench.nodes[0]);
    let sessions: Vec<(String, String)> = futures::stream::iter(0..args.sessions)
        .map(|i| {
            let b = bench.clone();
            async move { b.open(i).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Every watched node sees every session live (this also warms their
    // client-credential caches), and one introspection's cost is measured.
    let mut check_ms = Vec::new();
    for (_, access) in &sessions {
        for node in &bench.nodes[1..] {
            let t = Instant::now();
            if !bench.introspect(node, access).await {
                fail(format!("{node} does not see a new session live"));
            }
            check_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    eprintln!(
        "ending them on {} with {} workers, watching {} other node(s)",
        bench.nodes[0],
        args.workers,
        bench.nodes.len() - 1
    );
    let next = Arc::new(AtomicUsize::new(0));
    let sessions = Arc::new(sessions);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let (b, next, sessions) = (bench.clone(), next.clone(), sessions.clone());
            tokio::spawn(async move {
                let mut seen: Vec<Vec<f64>> = vec![Vec::new(); b.nodes.len() - 1];
                let mut end_ms = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, access)) = sessions.get(i) else {
                        return (seen, end_ms);
                    };
                    let (acked, took) = b.end(id).await;
                    end_ms.push(took.as_secs_f64() * 1e3);
                    let watches = b.nodes[1..].iter().map(|n| b.watch(n, access, acked));
                    for (k, ms) in futures::future::join_all(watches)
                        .await
                        .into_iter()
                        .enumerate()
                    {
                        seen[k].push(ms);
                    }
                }
            })
        })
        .collect();
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); bench.nodes.len() - 1];
    let mut end_ms = Vec::new();
    for w in workers {
        let (s, e) = w.await.unwrap_or_else(|e| fail(e));
        for (k, v) in s.into_iter().enumerate() {
            seen[k].extend(v);
        }
        end_ms.extend(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let all: Vec<f64> = seen.iter().flatten().copied().collect();
    let per_node: Vec<Value> = seen
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            let mut p = percentiles(v);
            p["node"] = json!(bench.nodes[k + 1]);
            p
        })
        .collect();
    let summary = json!({
        "sessions": args.sessions,
        "workers": args.workers,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "propagation": percentiles(all),
        "per_node": per_node,
        "end_ms": percentiles(end_ms),
        "check_ms": percentiles(check_ms),
    });
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).unwrap_or_else(|e| fail(format!("{}: {e}", out.display())));
    }
}
