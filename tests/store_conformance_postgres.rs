//! Runs the shared store conformance suite against PostgreSQL, plus the
//! checks that only matter for a fleet (several pools on one database).
//!
//! Gated on `TESSERA_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`): without it every test here
//! prints why it skipped and passes. With it, one fresh schema
//! `tessera_test_<unix time>_<pid>_<random>` is created and migrated per
//! run of this binary, and every test connects its own small pool to it
//! (each `#[tokio::test]` has its own runtime, so pools cannot be shared).
//! Schemas are not dropped at the end of a run, which Rust's test harness
//! gives no hook for; instead each run drops the test schemas older than an
//! hour, so they never pile up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use tessera::core::clock::UnixTime;
use tessera::core::ids::{ClientId, SessionId};
use tessera::core::keys::{KeyVault, StoredKey};
use tessera::core::model::{
    Actor, Client, EndReason, Ended, GrantType, RefreshRecord, RefreshState, Session,
};
use tessera::core::secrets::random_bytes;
use tessera::store::conformance::{GLOBAL, T0};
use tessera::store::postgres::{PgOptions, PgStore};
use tessera::store::{Change, ChangeFeed, FeedEvent, RotateOutcome, Store, StoreError};
use tokio::sync::OnceCell;

const URL_VAR: &str = "TESSERA_TEST_DATABASE_URL";
const SCHEMA_PREFIX: &str = "tessera_test_";
/// Test schemas older than this belong to finished runs.
const STALE_AFTER: Duration = Duration::from_secs(3600);

fn database_url() -> Option<String> {
    let url = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipping: {URL_VAR} not set (PostgreSQL conformance)");
    }
    url
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_schema_name() -> String {
    let random: String = random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{SCHEMA_PREFIX}{}_{}_{random}",
        unix_now(),
        std::process::id()
    )
}

async fn admin_connection(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but PostgreSQL cannot be reached: {e}"))
}

/// Drops the schemas of test runs that finished long ago.
async fn drop_stale_schemas(url: &str) {
    let mut conn = admin_connection(url).await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(SCHEMA_PREFIX)
            .fetch_all(&mut conn)
            .await
            .expect("list test schemas");
    let cutoff = unix_now().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name[SCHEMA_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let dropped = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut conn)
                .await;
            if let Err(e) = dropped {
                eprintln!("could not drop stale test schema {name}: {e}");
            }
        }
    }
    let _ = conn.close().await;
}

async fn drop_schema(url: &str, schema: &str) {
    let mut conn = admin_connection(url).await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .expect("drop schema");
    let _ = conn.close().await;
}

fn options(schema: &str, max_connections: u32) -> PgOptions {
    PgOptions {
        max_connections,
        schema: Some(schema.to_owned()),
        ..PgOptions::default()
    }
}

/// The run's schema, created and migrated by whichever test asks first.
async fn run_schema(url: &str) -> &'static str {
    static SCHEMA: OnceCell<String> = OnceCell::const_new();
    SCHEMA
        .get_or_init(|| async {
            drop_stale_schemas(url).await;
            let schema = new_schema_name();
            let store = PgStore::connect_with(url, options(&schema, 2))
                .await
                .expect("connect to the test database");
            store.migrate().await.expect("migrate the test schema");
            store.close().await;
            eprintln!("PostgreSQL conformance schema: {schema}");
            schema
        })
        .await
}

/// A small pool on the run's schema: one "node".
async fn node(url: &str) -> PgStore {
    let schema = run_schema(url).await;
    PgStore::connect_with(url, options(schema, 4))
        .await
        .expect("connect to the test schema")
}

async fn fresh_store() -> Option<Arc<dyn Store>> {
    let url = database_url()?;
    Some(Arc::new(node(&url).await))
}

tessera::store_conformance_tests!(fresh_store);

// ---------------------------------------------------------------------------
// a fleet: several pools on one database

// Built from JSON so that fields added to the model later (with serde
// defaults) need no change here.
fn client() -> Client {
    serde_json::from_value(serde_json::json!({
        "id": ClientId::generate(),
        "name": "fleet",
        "secret_hash": "$argon2id$test",
        "grant_types": GrantType::defaults(),
        "created_at": T0,
    }))
    .expect("a client record")
}

fn session(client: &ClientId, at: UnixTime) -> Session {
    serde_json::from_value(serde_json::json!({
        "id": SessionId::generate(),
        "client_id": client,
        "subject": format!("fleet-{}", SessionId::generate()),
        "dialect": "native",
        "created_at": at,
        "expires_at": at + 3600,
        "access_cover_until": at + 300,
        "delete_after": at + 7200,
    }))
    .expect("a session record")
}

fn refresh(s: &Session) -> RefreshRecord {
    RefreshRecord {
        hash: random_bytes::<32>(),
        session_id: s.id,
        client_id: s.client_id.clone(),
        issued_at: s.created_at,
        expires_at: s.expires_at,
        state: RefreshState::Current,
    }
}

fn admin_end(at: UnixTime) -> Ended {
    Ended {
        at,
        reason: EndReason::AdminRevoked,
        by: Actor::Admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_rotates_a_token_once() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let nodes = [node(&url).await, node(&url).await];
    let owner = client();
    nodes[0].insert_client(&owner).await.unwrap();
    let s = session(&owner.id, T0);
    let first = refresh(&s);
    nodes[0].create_session(&s, Some(&first)).await.unwrap();

    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (store, s) = (nodes[i % 2].clone(), s.clone());
            tokio::spawn(async move {
                let next = refresh(&s);
                let outcome = store
                    .rotate_refresh(&first.hash, &next, T0 + 10, T0 + 900)
                    .await
                    .expect("rotate answered");
                (outcome, next)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (outcome, next) = t.await.unwrap();
        if outcome == RotateOutcome::Rotated {
            winners.push(next);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation of a token wins");
    let retired = nodes[1].get_refresh(&first.hash).await.unwrap().unwrap();
    assert_eq!(
        retired.state,
        RefreshState::Retired {
            at: T0 + 10,
            successor: winners[0].hash
        }
    );
    let current = nodes[1].get_refresh(&winners[0].hash).await.unwrap();
    assert_eq!(current.as_ref(), Some(&winners[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_ends_overlapping_sets_once_without_deadlock() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let nodes = [node(&url).await, node(&url).await];
    let owner = client();
    nodes[0].insert_client(&owner).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        let s = session(&owner.id, T0 + i);
        nodes[0].create_session(&s, None).await.unwrap();
        ids.push(s.id);
    }
    // Every call asks for all of them, in different orders.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = nodes[i % 2].clone();
            let mut order = ids.clone();
            order.rotate_left(i * 3 % ids.len());
            if i % 2 == 1 {
                order.reverse();
            }
            tokio::spawn(async move {
                store
                    .end_sessions(&order, &admin_end(T0 + 50), T0 + 1000)
                    .await
            })
        })
        .collect();
    let mut ended = Vec::new();
    for t in tasks {
        let done = t.await.unwrap().expect("no deadlock or other failure");
        ended.extend(done.into_iter().map(|e| e.id));
    }
    ended.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(ended, expected, "each session ended by exactly one call");
    let audit = nodes[1].audit_log(100_000).await.unwrap();
    for id in &ids {
        let records = audit.iter().filter(|r| &r.session_id == id).count();
        assert_eq!(records, 1, "one audit record per end");
    }
}

/// Whichever of a rotation and an end commits first, an access token the
/// rotation allowed is inside the cover that the end reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_rotation_racing_an_end_stays_covered() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let nodes = [node(&url).await, node(&url).await];
    let owner = client();
    nodes[0].insert_client(&owner).await.unwrap();
    for round in 0..20 {
        let s = session(&owner.id, T0 + round);
        let first = refresh(&s);
        nodes[0].create_session(&s, Some(&first)).await.unwrap();
        let (rotator, ender) = (nodes[0].clone(), nodes[1].clone());
        let next = refresh(&s);
        let rotation = tokio::spawn(async move {
            rotator
                .rotate_refresh(&first.hash, &next, T0 + 10, T0 + 2000)
                .await
        });
        let end = tokio::spawn(async move {
            ender
                .end_sessions(&[s.id], &admin_end(T0 + 10), T0 + 1000)
                .await
        });
        let rotation = rotation.await.unwrap().unwrap();
        let end = end.await.unwrap().unwrap();
        assert_eq!(end.len(), 1, "the end always ends the live session");
        if rotation == RotateOutcome::Rotated {
            assert_eq!(end[0].access_cover_until, T0 + 2000, "round {round}");
        } else {
            assert_eq!(end[0].access_cover_until, T0 + round + 300);
        }
    }
}

/// What one creator of [`fleet_client_delete_racing_session_creates`] saw.
#[derive(Default)]
struct Created {
    /// Sessions whose create answered Ok.
    ok: Vec<SessionId>,
    /// Creates that began after the delete had returned, and their answers.
    after_delete: Vec<Result<(), String>>,
}

/// Creates sessions for `owner` until one is refused as `Missing("client")`.
async fn create_until_missing(
    store: PgStore,
    owner: ClientId,
    made: Arc<AtomicUsize>,
    deleted: Arc<AtomicBool>,
) -> Created {
    let mut seen = Created::default();
    for i in 0.. {
        let began_after_delete = deleted.load(Ordering::SeqCst);
        let s = session(&owner, T0 + i);
        let refresh = (i % 2 == 0).then(|| refresh(&s));
        let got = store.create_session(&s, refresh.as_ref()).await;
        if began_after_delete {
            seen.after_delete
                .push(got.as_ref().map(|_| ()).map_err(|e| format!("{e:?}")));
        }
        match got {
            Ok(()) => {
                seen.ok.push(s.id);
                made.fetch_add(1, Ordering::SeqCst);
            }
            Err(StoreError::Missing("client")) => {
                assert_eq!(store.get_session(&s.id).await.unwrap(), None);
                if let Some(r) = &refresh {
                    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), None);
                }
                return seen;
            }
            Err(e) => panic!("create_session failed: {e:?}"),
        }
    }
    unreachable!("the loop returns")
}

/// The engine deletes a client, then ends the sessions `sessions_of_client`
/// finds. With sessions being created for that client on other nodes at
/// the same time, no session may escape: every create either committed
/// before the delete (and is found right after it) or is refused, and no
/// create that starts after the delete returned succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_client_delete_racing_session_creates() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let nodes = [node(&url).await, node(&url).await];
    for round in 0..30usize {
        let owner = client();
        nodes[0].insert_client(&owner).await.unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        let deleted = Arc::new(AtomicBool::new(false));
        // One creator per node; the delete comes from the second node.
        let creators: Vec<_> = nodes
            .iter()
            .map(|n| {
                let work = create_until_missing(
                    n.clone(),
                    owner.id.clone(),
                    made.clone(),
                    deleted.clone(),
                );
                tokio::spawn(work)
            })
            .collect();
        // Let a few creates land first, so the delete meets creates in flight.
        let head_start = round % 4;
        let started = tokio::time::timeout(Duration::from_secs(10), async {
            while made.load(Ordering::SeqCst) < head_start {
                tokio::task::yield_now().await;
            }
        });
        started.await.expect("the creators make sessions");
        assert!(nodes[1].delete_client(&owner.id).await.unwrap());
        deleted.store(true, Ordering::SeqCst);
        // What the engine would end, read right after the delete committed.
        let found = nodes[1].sessions_of_client(&owner.id).await.unwrap();
        let late = session(&owner.id, T0);
        let refused = nodes[0].create_session(&late, None).await;
        assert!(
            matches!(refused, Err(StoreError::Missing("client"))),
            "round {round}: a create after the delete: {refused:?}"
        );

        let mut ok = Vec::new();
        for creator in creators {
            let seen = creator.await.expect("creator ran");
            for got in &seen.after_delete {
                assert!(
                    got.as_ref().is_err_and(|e| e.contains("Missing")),
                    "round {round}: a create begun after the delete returned {got:?}"
                );
            }
            ok.extend(seen.ok);
        }
        let (mut ok, mut found) = (ok, found);
        ok.sort();
        found.sort();
        assert_eq!(
            ok, found,
            "round {round}: every session created is found right after the delete"
        );
        let mut now = nodes[0].sessions_of_client(&owner.id).await.unwrap();
        now.sort();
        assert_eq!(now, found, "round {round}: none committed after the delete");
        nodes[0]
            .end_sessions(&found, &admin_end(T0 + 10), T0 + 1000)
            .await
            .unwrap();
        assert!(nodes[1]
            .sessions_of_client(&owner.id)
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_safe_from_many_nodes_at_once() {
    let Some(url) = database_url() else { return };
    let schema = new_schema_name();
    let starts = (0..4).map(|_| {
        let (url, schema) = (url.clone(), schema.clone());
        tokio::spawn(async move {
            let store = PgStore::connect_with(&url, options(&schema, 2)).await?;
            store.migrate().await?;
            store.ping().await?;
            store.close().await;
            Ok::<_, StoreError>(())
        })
    });
    let mut outcomes = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        outcomes.push(start.await.unwrap());
    }
    let mut conn = admin_connection(&url).await;
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}._sqlx_migrations WHERE success"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("count applied migrations");
    let _ = conn.close().await;
    drop_schema(&url, &schema).await;
    for outcome in outcomes {
        outcome.expect("every node starts");
    }
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied, files as i64, "each migration applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_path_in_the_url_is_honoured() {
    let Some(url) = database_url() else { return };
    let schema = run_schema(&url).await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let with_path = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let store = PgStore::connect(&with_path).await.expect("connect");
    let owner = client();
    store.insert_client(&owner).await.unwrap();
    let via_schema = node(&url).await;
    assert_eq!(via_schema.get_client(&owner.id).await.unwrap(), Some(owner));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_character_is_refused_not_stored() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let store = node(&url).await;
    let owner = client();
    store.insert_client(&owner).await.unwrap();
    let mut s = session(&owner.id, T0);
    s.claims.insert("nick".into(), serde_json::json!("a\u{0}b"));
    let refused = store.create_session(&s, None).await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt { .. })),
        "{refused:?}"
    );
    assert_eq!(store.get_session(&s.id).await.unwrap(), None);
}

/// Needs no server: nothing listens on port 1.
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let opts = PgOptions {
        acquire_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let started = std::time::Instant::now();
    let got = PgStore::connect_with("postgres://postgres@127.0.0.1:1/test", opts).await;
    assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let bad = PgStore::connect("not a url").await;
    assert!(matches!(bad, Err(StoreError::Unavailable(_))), "{bad:?}");
}

/// Needs no server: a listener that accepts connections and never answers
/// stands for a database that hangs. Connecting gives up in time.
#[tokio::test]
async fn a_silent_server_is_unavailable_in_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let opts = PgOptions {
        acquire_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let started = std::time::Instant::now();
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    let got = PgStore::connect_with(&url, opts).await;
    assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

// ---------------------------------------------------------------------------
// the change feed and what a fleet shares

/// The next feed event that `keep` accepts, within `within`.
async fn next_matching(
    feed: &mut Box<dyn ChangeFeed>,
    within: Duration,
    mut keep: impl FnMut(&FeedEvent) -> bool,
) -> FeedEvent {
    tokio::time::timeout(within, async {
        loop {
            let event = feed.next().await;
            if keep(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the feed reported the event in time")
}

async fn connected_feed(store: &PgStore) -> Box<dyn ChangeFeed> {
    let mut feed = store.change_feed().expect("PostgreSQL has a change feed");
    let first = next_matching(&mut feed, Duration::from_secs(10), |_| true).await;
    assert_eq!(first, FeedEvent::Connected);
    feed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_reports_ends_client_changes_and_key_changes_of_other_nodes() {
    let Some(url) = database_url() else { return };
    let _shared = GLOBAL.read().await;
    let (listening, writing) = (node(&url).await, node(&url).await);
    let mut feed = connected_feed(&listening).await;

    // 250 sessions ended in one call: more than one notification's worth.
    let owner = client();
    writing.insert_client(&owner).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..250 {
        let s = session(&owner.id, T0);
        writing.create_session(&s, None).await.unwrap();
        ids.push(s.id);
    }
    let ended = writing
        .end_sessions(&ids, &admin_end(T0 + 1), T0 + 7200)
        .await
        .unwrap();
    assert_eq!(ended.len(), 250);
    // A barrier asked for after the commit comes back after all of them.
    let barrier = feed.sync();
    let mut heard = std::collections::HashMap::new();
    loop {
        let event = next_matching(&mut feed, Duration::from_secs(5), |e| match e {
            FeedEvent::Change(Change::Ended(list)) => list.iter().any(|(id, _)| ids.contains(id)),
            FeedEvent::Synced(n) => *n == barrier,
            _ => false,
        })
        .await;
        match event {
            FeedEvent::Change(Change::Ended(list)) => {
                assert!(list.len() <= 100, "at most 100 sessions per notification");
                heard.extend(list);
            }
            _ => break,
        }
    }
    assert_eq!(
        heard.len(),
        ids.len(),
        "every end was heard before the barrier"
    );
    assert!(ids.iter().all(|id| heard.get(id) == Some(&(T0 + 300))));

    // Ending them again changes nothing and tells nobody.
    let again = writing
        .end_sessions(&ids, &admin_end(T0 + 2), T0 + 7200)
        .await
        .unwrap();
    assert!(again.is_empty());

    let mut changed = owner.clone();
    changed.secret_version += 1;
    assert!(writing.update_client(&changed, 0).await.unwrap());
    let want = FeedEvent::Change(Change::Client(owner.id.clone()));
    next_matching(&mut feed, Duration::from_secs(5), |e| *e == want).await;
    assert!(writing.delete_client(&owner.id).await.unwrap());
    next_matching(&mut feed, Duration::from_secs(5), |e| *e == want).await;

    let vault = writing.key_vault();
    let key = StoredKey {
        kid: format!("test-{}", SessionId::generate()),
        alg: "EdDSA".into(),
        created_at: T0,
        retire_at: Some(T0),
        private_pkcs8: "not used".into(),
    };
    vault.delete(std::slice::from_ref(&key.kid)).await.unwrap();
    vault
        .create_first(std::slice::from_ref(&key))
        .await
        .unwrap();
    vault.delete(std::slice::from_ref(&key.kid)).await.unwrap();
    next_matching(&mut feed, Duration::from_secs(5), |e| {
        *e == FeedEvent::Change(Change::Keys)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_share_one_first_key_and_one_value() {
    let Some(url) = database_url() else { return };
    // A schema of its own: the signing keys are one set per database.
    let schema = new_schema_name();
    let first = PgStore::connect_with(&url, options(&schema, 2))
        .await
        .unwrap();
    first.migrate().await.unwrap();
    let nodes: Vec<PgStore> =
        futures::future::join_all((0..4).map(|_| PgStore::connect_with(&url, options(&schema, 2))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let rings = futures::future::join_all(
        nodes
            .iter()
            .map(|n| tessera::core::keys::Keyring::open(std::sync::Arc::new(n.key_vault()), T0)),
    )
    .await;
    let kids: std::collections::HashSet<String> = rings
        .into_iter()
        .map(|r| r.expect("keyring opens").current_kid())
        .collect();
    assert_eq!(kids.len(), 1, "every node signs with the same first key");
    assert_eq!(first.key_vault().load().await.unwrap().len(), 1);

    let values = futures::future::join_all(
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| async move { n.shared_value("k", &format!("v{i}")).await.unwrap() }),
    )
    .await;
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    for n in nodes {
        n.close().await;
    }
    first.close().await;
    drop_schema(&url, &schema).await;
}
