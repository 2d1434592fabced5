//! The change feed of a fleet: PostgreSQL `LISTEN/NOTIFY`.
//!
//! Every write that other nodes must learn of sends a notification on the
//! channel `tessera_channel()` (one per database and schema) in the same
//! statement or transaction, so it is delivered if and only if the write
//! commits, after it commits. Payloads:
//!
//! - `e:<session uuid>:<cover until>,…` — sessions ended (at most
//!   [`ENDED_PER_NOTIFY`] per notification; PostgreSQL caps a payload at
//!   8000 bytes);
//! - `c:<client id>` — a client changed or was deleted;
//! - `k` — signing keys were added, retired or deleted;
//! - `h:<nonce>` — a node's heartbeat, heard only by that node;
//! - `s:<nonce>:<n>` — a node's barrier ([`ChangeFeed::sync`]): PostgreSQL
//!   delivers notifications in commit order, so when it comes back, every
//!   change committed before it was sent has been heard.
//!
//! A notification is lost if the listening connection is down when it is
//! sent, so the feed reports every loss (`Lost`) and every (re)connection
//! (`Connected`, sent once `LISTEN` is in effect), and the engine catches
//! up from the tables after each `Connected`. A connection can also die
//! silently (a network partition): each node notifies itself a heartbeat
//! every [`HEARTBEAT_EVERY`], and calls the feed lost when its own
//! heartbeat has not come back for [`HEARTBEAT_LOST_AFTER`]. Heartbeats and
//! barriers go through a second connection of the feed's own pool, so a
//! busy main pool never delays them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgNotification, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::codec::session_id;
use crate::core::ids::ClientId;
use crate::store::{Change, ChangeFeed, FeedEvent};

/// Sessions named in one `e:` notification (about 50 bytes each).
pub(super) const ENDED_PER_NOTIFY: i64 = 100;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_LOST_AFTER: Duration = Duration::from_secs(3);
/// Bound on connecting and on each heartbeat.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Events not yet taken by the engine; the listener waits when it is full
/// (PostgreSQL then queues notifications on its side).
const QUEUE: usize = 4096;

/// The feed handed to the engine. Dropping it stops the listener.
pub(super) struct PgFeed {
    events: mpsc::Receiver<FeedEvent>,
    task: JoinHandle<()>,
    pool: PgPool,
    nonce: Arc<str>,
    syncs: u64,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ChangeFeed for PgFeed {
    /// Cancel-safe: an event is either returned or still queued.
    async fn next(&mut self) -> FeedEvent {
        match self.events.recv().await {
            Some(event) => event,
            // The listener task only ends when the feed is dropped.
            None => std::future::pending().await,
        }
    }

    fn sync(&mut self) -> u64 {
        self.syncs += 1;
        let payload = format!("s:{}:{}", self.nonce, self.syncs);
        tokio::spawn(notify_self(self.pool.clone(), payload));
        self.syncs
    }
}

/// Starts listening in the background, on a pool of its own (the main
/// pool's connect options): one connection listens, one sends heartbeats
/// and barriers.
pub(super) fn start(pool: &PgPool) -> PgFeed {
    let options = pool.connect_options().as_ref().clone();
    let feed_pool = PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let nonce: Arc<str> = Uuid::new_v4().simple().to_string().into();
    let (tx, events) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(feed_pool.clone(), nonce.clone(), tx));
    PgFeed {
        events,
        task,
        pool: feed_pool,
        nonce,
        syncs: 0,
    }
}

/// Why a listening session ended.
enum Ended {
    /// Never got as far as `LISTEN`.
    NotConnected(String),
    /// Was listening; changes may have been missed since.
    Lost(String),
    /// The engine dropped the feed.
    Closed,
}

async fn run(pool: PgPool, nonce: Arc<str>, tx: mpsc::Sender<FeedEvent>) {
    let mut retry = RETRY_FIRST;
    loop {
        match listen(&pool, &nonce, &tx).await {
            Ended::Closed => return,
            Ended::Lost(reason) => {
                tracing::warn!(%reason, "change feed: lost the listening connection");
                if tx.send(FeedEvent::Lost(reason)).await.is_err() {
                    return;
                }
                retry = RETRY_FIRST;
            }
            Ended::NotConnected(reason) => {
                tracing::debug!(%reason, ?retry, "change feed: cannot listen yet");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One listening connection, from `LISTEN` until it fails.
async fn listen(pool: &PgPool, nonce: &str, tx: &mpsc::Sender<FeedEvent>) -> Ended {
    let connect = async {
        let mut listener = PgListener::connect_with(pool).await?;
        let channel: String = sqlx::query_scalar("SELECT tessera_channel()")
            .fetch_one(&mut listener)
            .await?;
        listener.listen(&channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let listener = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => return Ended::NotConnected(e.to_string()),
        Err(_) => return Ended::NotConnected("timed out".into()),
    };
    if tx.send(FeedEvent::Connected).await.is_err() {
        return Ended::Closed;
    }
    tracing::info!("change feed: listening");

    // The listener's receive is not cancel-safe, so a task of its own reads
    // it and forwards what it reads; this loop selects on that queue.
    let (heard_tx, mut heard) = mpsc::channel::<Result<PgNotification, String>>(QUEUE);
    let reader = tokio::spawn(read(listener, heard_tx));
    let _stop_reader = AbortOnDrop(reader);

    let mine = format!("h:{nonce}");
    let barrier = format!("s:{nonce}:");
    let mut last_heard = Instant::now();
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = heard.recv() => match got {
                Some(Ok(n)) => {
                    let payload = n.payload();
                    if payload == mine {
                        last_heard = Instant::now();
                    } else if let Some(n) = payload.strip_prefix(&barrier) {
                        if let Ok(n) = n.parse() {
                            if tx.send(FeedEvent::Synced(n)).await.is_err() {
                                return Ended::Closed;
                            }
                        }
                    } else if let Some(change) = parse(payload) {
                        if tx.send(FeedEvent::Change(change)).await.is_err() {
                            return Ended::Closed;
                        }
                    } else if !payload.starts_with("h:") && !payload.starts_with("s:") {
                        tracing::warn!(payload, "change feed: unknown notification");
                    }
                }
                Some(Err(reason)) => return Ended::Lost(reason),
                None => return Ended::Lost("listener stopped".into()),
            },
            _ = beat.tick() => {
                if last_heard.elapsed() > HEARTBEAT_LOST_AFTER {
                    return Ended::Lost(format!(
                        "own heartbeat not heard for {HEARTBEAT_LOST_AFTER:?}"
                    ));
                }
                tokio::spawn(notify_self(pool.clone(), mine.clone()));
            }
        }
    }
}

async fn read(mut listener: PgListener, out: mpsc::Sender<Result<PgNotification, String>>) {
    loop {
        let item = match listener.try_recv().await {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err("connection closed".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let last = item.is_err();
        if out.send(item).await.is_err() || last {
            return;
        }
    }
}

/// A notification for this node's own listener (a heartbeat or a barrier).
async fn notify_self(pool: PgPool, payload: String) {
    let send = sqlx::query("SELECT pg_notify(tessera_channel(), $1)")
        .bind(payload)
        .execute(&pool);
    // A failure shows as a heartbeat or a barrier not heard.
    if let Ok(Err(e)) = tokio::time::timeout(HEARTBEAT_EVERY, send).await {
        tracing::debug!(error = %e, "change feed: notification to self not sent");
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A notification's meaning; `None` for heartbeats and anything unknown.
fn parse(payload: &str) -> Option<Change> {
    if payload == "k" {
        return Some(Change::Keys);
    }
    if let Some(id) = payload.strip_prefix("c:") {
        return ClientId::parse(id).ok().map(Change::Client);
    }
    let list = payload.strip_prefix("e:")?;
    let mut ended = Vec::new();
    for item in list.split(',') {
        let (id, until) = item.split_once(':')?;
        ended.push((session_id(Uuid::parse_str(id).ok()?), until.parse().ok()?));
    }
    Some(Change::Ended(ended))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse("k"), Some(Change::Keys));
        assert_eq!(
            parse("c:web-app"),
            Some(Change::Client(ClientId::parse("web-app").unwrap()))
        );
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_eq!(
            parse(&format!("e:{a}:100,{b}:200")),
            Some(Change::Ended(vec![
                (session_id(a), 100),
                (session_id(b), 200)
            ]))
        );
        for bad in ["", "h:abc", "e:", "e:nope:1", "e:{a}", "x:1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
