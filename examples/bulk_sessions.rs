//! Fills a Tessera data directory for `bench/run`: registers a client and
//! opens sessions through the engine, many at a time, so that the store's
//! group commit batches them exactly as it batches concurrent HTTP callers.
//! Nothing is written by hand: every record is the engine's own.
//!
//! ```text
//! bulk_sessions --data-dir D --issuer URL --out DIR \
//!     [--pool NAME=COUNT]... [--ended-pool NAME=COUNT]... \
//!     [--bulk COUNT] [--bulk-end COUNT] [--concurrency N]
//! ```
//!
//! - `OUT/client.txt`: `client_id:client_secret` of the new client;
//! - `--pool`: live sessions, written to `OUT/NAME.tsv` as
//!   `session_id<TAB>access_token<TAB>refresh_token`;
//! - `--ended-pool`: the same, then ended (their tokens must be refused);
//! - `--bulk`: sessions that are not written out (size and restart figures),
//!   `--bulk-end` of which are then ended (revocation records).
//!
//! Run it while no server uses the data directory; start the server after,
//! with the same `--issuer` (tokens carry it). A JSON summary goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use futures::StreamExt;
use secrecy::ExposeSecret;
use tessera::config::Settings;
use tessera::core::engine::{NewClient, OpenSession};
use tessera::core::ids::{Scope, SessionId, Subject};
use tessera::core::model::{Actor, Client, EndReason};
use tessera::core::Engine;
use tessera::server::Application;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    /// The `iss` the server will run with (`tessera serve --issuer`).
    #[arg(long)]
    issuer: String,
    #[arg(long)]
    out: PathBuf,
    /// `NAME=COUNT`: live sessions written to OUT/NAME.tsv.
    #[arg(long)]
    pool: Vec<String>,
    /// `NAME=COUNT`: sessions written to OUT/NAME.tsv, then ended.
    #[arg(long)]
    ended_pool: Vec<String>,
    /// Sessions opened and not written out.
    #[arg(long, default_value_t = 0)]
    bulk: usize,
    /// How many of the bulk sessions to end afterwards.
    #[arg(long, default_value_t = 0)]
    bulk_end: usize,
    /// Openings in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Lifetime of the access tokens issued (Tessera's default otherwise).
    #[arg(long)]
    access_token_ttl: Option<i64>,
}

fn pool_spec(s: &str) -> anyhow::Result<(String, usize)> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("pool {s:?} is not NAME=COUNT"))?;
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "pool name {name:?}"
    );
    Ok((name.to_owned(), n.parse()?))
}

struct Opened {
    id: SessionId,
    access: String,
    refresh: String,
}

/// Open `n` sessions, `concurrency` at a time; `keep` decides whether the
/// tokens are returned (bulk runs keep only the ids they will end).
async fn open_many(
    engine: &Arc<Engine>,
    client: &Arc<Client>,
    prefix: &str,
    n: usize,
    concurrency: usize,
    keep_tokens: bool,
    keep_ids: usize,
) -> anyhow::Result<Vec<Opened>> {
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let mut out = Vec::with_capacity(if keep_tokens { n } else { keep_ids });
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let engine = engine.clone();
            let client = client.clone();
            let subject = format!("{prefix}-{i}");
            async move {
                let mut req = OpenSession::new(Subject::parse(&subject)?, "native");
                req.scope = Scope::parse("read")?;
                let t = engine.open_session(&client, req).await?;
                anyhow::Ok(Opened {
                    id: t.session_id,
                    access: t.access_token,
                    refresh: t.refresh_token.unwrap_or_default(),
                })
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = stream.next().await {
        let o = r?;
        if keep_tokens || out.len() < keep_ids {
            out.push(o);
        }
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if d % 100_000 == 0 {
            eprintln!(
                "bulk_sessions: {prefix}: {d}/{n} opened, {:.0}/s",
                d as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(out)
}

async fn end_many(
    engine: &Arc<Engine>,
    ids: Vec<SessionId>,
    concurrency: usize,
) -> anyhow::Result<usize> {
    let mut stream = futures::stream::iter(ids)
        .map(|id| {
            let engine = engine.clone();
            async move {
                engine
                    .end_session(&id, EndReason::AdminRevoked, Actor::Admin, None)
                    .await
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut n = 0;
    while let Some(r) = stream.next().await {
        if r? {
            n += 1;
        }
    }
    Ok(n)
}

fn write_pool(args: &Args, name: &str, sessions: &[Opened]) -> anyhow::Result<()> {
    let path = args.out.join(format!("{name}.tsv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for s in sessions {
        writeln!(f, "{}\t{}\t{}", s.id, s.access, s.refresh)?;
    }
    f.flush()?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: args.data_dir.clone(),
        issuer: Some(args.issuer.clone()),
        sweep_interval_seconds: 3600,
        access_token_ttl_seconds: args
            .access_token_ttl
            .unwrap_or(Settings::default().access_token_ttl_seconds),
        ..Settings::default()
    };
    // Builds exactly what `tessera serve` builds (store, keys, engine); the
    // listener it binds is never served.
    let app = Application::build(settings).await?;
    let engine = app.engine();
    let (client, secret) = engine
        .create_client(NewClient {
            name: "bench".into(),
            ..NewClient::default()
        })
        .await?;
    std::fs::write(
        args.out.join("client.txt"),
        format!("{}:{}\n", client.id, secret.expose_secret()),
    )?;
    let client = Arc::new(client);
    let started = Instant::now();
    let mut opened = 0usize;
    let mut ended = 0usize;
    for spec in &args.pool {
        let (name, n) = pool_spec(spec)?;
        let s = open_many(&engine, &client, &name, n, args.concurrency, true, 0).await?;
        opened += s.len();
        write_pool(&args, &name, &s)?;
    }
    for spec in &args.ended_pool {
        let (name, n) = pool_spec(spec)?;
        let s = open_many(&engine, &client, &name, n, args.concurrency, true, 0).await?;
        opened += s.len();
        ended += end_many(&engine, s.iter().map(|o| o.id).collect(), args.concurrency).await?;
        write_pool(&args, &name, &s)?;
    }
    let bulk_started = Instant::now();
    let mut bulk_secs = 0.0;
    if args.bulk > 0 {
        let s = open_many(
            &engine,
            &client,
            "bulk",
            args.bulk,
            args.concurrency,
            false,
            args.bulk_end,
        )
        .await?;
        opened += args.bulk;
        bulk_secs = bulk_started.elapsed().as_secs_f64();
        ended += end_many(
            &engine,
            s.into_iter().map(|o| o.id).collect(),
            args.concurrency,
        )
        .await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "opened": opened,
            "ended": ended,
            "secs": secs,
            "bulk_open_secs": bulk_secs,
            "rate": if secs > 0.0 { opened as f64 / secs } else { 0.0 },
            "bulk_rate": if bulk_secs > 0.0 { args.bulk as f64 / bulk_secs } else { 0.0 },
            "revoked_in_memory": engine.revoked_in_memory(),
        })
    );
    drop(engine);
    drop(app);
    // Let the store's writer thread close the database file.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}
