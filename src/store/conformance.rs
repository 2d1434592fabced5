//! The behaviour every [`Store`] backend must show, written once: each
//! `pub async fn` here is one test body, and [`store_conformance_tests!`]
//! turns them into `#[tokio::test]`s for a backend's factory.
//!
//! Bodies build their own data with fresh ids, so they may share one
//! database. Those that observe global state (sweeping, the live count,
//! the newest audit records) take [`GLOBAL`] exclusively; every other body
//! holds it shared. Times are chosen so the bodies cannot disturb each
//! other: ordinary data lives around [`T0`] (far in the future, so a
//! backend that compares with the real clock sees it as live), sweeping
//! bodies only use times up to [`SWEEP_WINDOW_END`].
//!
//! `SweepStats::revocations` is only bounded, not counted exactly: a
//! backend may keep the revocation with the session record and so delete
//! it together with the session.
//!
//! [`store_conformance_tests!`]: crate::store_conformance_tests

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::RwLock;

use super::{EndedSession, Grant, GrantKind, RotateOutcome, Store, StoreError};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, Scope, SessionId, Subject};
use crate::core::model::{
    Actor, Client, EndReason, Ended, GrantType, RefreshRecord, RefreshState, Revocation, Session,
    SessionFilter, TokenHash,
};
use crate::core::secrets::random_bytes;

pub type SharedStore = Arc<dyn Store>;

/// Ordinary test time: year 2065, later than any real clock a backend reads.
pub const T0: UnixTime = 3_000_000_000;
/// Audit records that must be the newest of the whole trail.
const T_LATEST: UnixTime = 3_500_000_000;
/// Sweeping bodies keep all their expiring data below this.
pub const SWEEP_WINDOW_END: UnixTime = 1_000_000;
/// The `now` that sweeping bodies pass to `sweep`.
const SWEEP_NOW: UnixTime = 50_000;

/// Shared by ordinary bodies, exclusive for bodies that count or sweep.
pub static GLOBAL: RwLock<()> = RwLock::const_new(());

/// Expands to one `#[tokio::test]` per body of [`conformance`]. The factory
/// is a closure or function of no arguments returning a future of
/// `Option<Arc<dyn Store>>`, called once per test; `None` skips the test,
/// so a backend that needs a server can be skipped where none is set up.
///
/// ```ignore
/// tessera::store_conformance_tests!(|| async { Some(make_store().await) });
/// ```
///
/// [`conformance`]: crate::store::conformance
#[macro_export]
macro_rules! store_conformance_tests {
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let factory = $factory;
                match factory().await {
                    Some(store) => $crate::store::conformance::$case(store).await,
                    None => eprintln!(
                        "skipping {}: the store factory returned None \
                         (e.g. TESSERA_TEST_DATABASE_URL not set)",
                        stringify!($case)
                    ),
                }
            }
        )+
    };
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            clients_crud,
            client_update_compares_version,
            client_concurrent_updates_one_wins,
            session_create_and_get,
            session_for_missing_client_is_refused,
            list_sessions_filters_and_orders,
            reference_unique_among_live_sessions,
            rotate_refresh_once,
            rotate_refresh_refuses_ended_session,
            extend_access_cover_raises_only,
            end_sessions_is_idempotent,
            sessions_of_subject_and_client_exclude_ended,
            audit_log_is_newest_first,
            sweep_deletes_what_expired,
            sweep_respects_batch,
            an_audit_entry_outlives_its_session_until_its_cutoff,
            live_session_count_tracks_lifecycle,
            concurrent_creates_all_land,
            grant_put_and_get,
            grant_kinds_are_separate,
            grant_swap_compares_version,
            grant_concurrent_swaps_one_wins,
            grant_sweep_deletes_only_expired,
            grant_sweep_respects_batch,
        );
    };
}

// ---------------------------------------------------------------------------
// fixtures

fn client_record(name: &str) -> Client {
    Client {
        id: ClientId::generate(),
        name: name.to_owned(),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        payload_key_sealed: None,
        redirect_uris: Vec::new(),
        grant_types: GrantType::defaults(),
        access_token_ttl: None,
        refresh_token_ttl: None,
        created_at: T0,
        secret_version: 0,
    }
}

/// A stored client, since a backend may enforce that sessions name one.
async fn new_client(store: &dyn Store) -> ClientId {
    let c = client_record("conformance");
    store.insert_client(&c).await.expect("insert client");
    c.id
}

fn new_subject() -> Subject {
    Subject::parse(&format!("user-{}", SessionId::generate())).expect("valid subject")
}

fn hash() -> TokenHash {
    random_bytes::<32>()
}

/// A live session created at `at`: one hour of life, five minutes of
/// access cover, a day of retention after expiry. `client` must be stored
/// ([`new_client`]): a backend refuses sessions of unknown clients.
fn session(client: &ClientId, subject: &Subject, at: UnixTime) -> Session {
    Session {
        id: SessionId::generate(),
        client_id: client.clone(),
        subject: subject.clone(),
        scope: Scope::parse("read write").expect("valid scope"),
        claims: serde_json::Map::new(),
        token_claims: Default::default(),
        dialect: "native".into(),
        reference: None,
        created_at: at,
        expires_at: at + 3600,
        access_cover_until: at + 300,
        delete_after: at + 3600 + 86_400,
        ended: None,
    }
}

/// A session that expires and may be deleted inside the sweep window.
fn short_session(client: &ClientId, subject: &Subject, at: UnixTime) -> Session {
    Session {
        expires_at: at + 500,
        access_cover_until: at + 300,
        delete_after: at + 1000,
        ..session(client, subject, at)
    }
}

fn refresh_for(s: &Session, issued_at: UnixTime) -> RefreshRecord {
    RefreshRecord {
        hash: hash(),
        session_id: s.id,
        client_id: s.client_id.clone(),
        issued_at,
        expires_at: s.expires_at,
        state: RefreshState::Current,
    }
}

fn ended_at(at: UnixTime) -> Ended {
    Ended {
        at,
        reason: EndReason::AdminRevoked,
        by: Actor::Admin,
    }
}

async fn create(store: &dyn Store, s: &Session, r: Option<&RefreshRecord>) {
    store.create_session(s, r).await.expect("create session");
}

async fn fetch(store: &dyn Store, id: &SessionId) -> Session {
    store
        .get_session(id)
        .await
        .expect("get session")
        .expect("session exists")
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

fn set(ids: impl IntoIterator<Item = SessionId>) -> BTreeSet<SessionId> {
    ids.into_iter().collect()
}

async fn list(store: &dyn Store, filter: SessionFilter, now: UnixTime) -> Vec<SessionId> {
    ids(&store
        .list_sessions(&filter, now)
        .await
        .expect("list sessions"))
}

/// Clears whatever earlier sweeping bodies left in the sweep window, so a
/// body's counts are its own.
async fn drain_sweep_window(store: &dyn Store) {
    loop {
        let done = store
            .sweep(SWEEP_WINDOW_END, SWEEP_WINDOW_END, 1000)
            .await
            .expect("sweep");
        if done.total() == 0 {
            return;
        }
    }
}

async fn audit_of(store: &dyn Store, id: &SessionId) -> Vec<Revocation> {
    let log = store.audit_log(100_000).await.expect("audit log");
    log.into_iter().filter(|r| &r.session_id == id).collect()
}

// ---------------------------------------------------------------------------
// clients

pub async fn clients_crud(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let c = client_record("crud");
    store.insert_client(&c).await.expect("insert");
    assert!(matches!(
        store.insert_client(&c).await,
        Err(StoreError::Conflict("client"))
    ));
    assert_eq!(store.get_client(&c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(store.get_client(&ClientId::generate()).await.unwrap(), None);
    assert!(store.list_clients().await.unwrap().contains(&c));

    let changed = Client {
        name: "renamed".into(),
        secret_version: 1,
        redirect_uris: vec!["https://app.example/cb".into()],
        access_token_ttl: Some(60),
        ..c.clone()
    };
    assert!(store.update_client(&changed, 0).await.unwrap());
    assert_eq!(store.get_client(&c.id).await.unwrap(), Some(changed));

    let ghost = client_record("ghost");
    assert!(!store.update_client(&ghost, 0).await.unwrap());
    assert_eq!(
        store.get_client(&ghost.id).await.unwrap(),
        None,
        "update must not insert"
    );

    assert!(store.delete_client(&c.id).await.unwrap());
    assert_eq!(store.get_client(&c.id).await.unwrap(), None);
    assert!(!store.delete_client(&c.id).await.unwrap());
    assert!(!store
        .list_clients()
        .await
        .unwrap()
        .iter()
        .any(|x| x.id == c.id));
}

/// `c` with the version bumped, as the engine writes it.
fn bumped(c: &Client, name: &str) -> Client {
    Client {
        name: name.to_owned(),
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        secret_version: c.secret_version.wrapping_add(1),
        ..c.clone()
    }
}

pub async fn client_update_compares_version(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let s = &*store;
    let c = client_record("cas");
    s.insert_client(&c).await.expect("insert");

    let v1 = bumped(&c, "v1");
    assert!(
        !s.update_client(&v1, 1).await.unwrap(),
        "expected version ahead of the stored one"
    );
    assert_eq!(s.get_client(&c.id).await.unwrap(), Some(c.clone()));
    assert!(
        s.update_client(&v1, 0).await.unwrap(),
        "stored version is 0"
    );
    assert_eq!(
        s.get_client(&c.id).await.unwrap(),
        Some(v1.clone()),
        "the new record replaces the old"
    );

    let stale = bumped(&c, "stale");
    assert!(
        !s.update_client(&stale, 0).await.unwrap(),
        "a writer that read version 0 lost to v1"
    );
    assert_eq!(
        s.get_client(&c.id).await.unwrap(),
        Some(v1.clone()),
        "a failed update changes nothing"
    );

    let v2 = bumped(&v1, "v2");
    assert!(s.update_client(&v2, 1).await.unwrap());
    assert_eq!(s.get_client(&c.id).await.unwrap(), Some(v2.clone()));

    // The full u32 range counts: a backend must not truncate the version.
    let top = Client {
        secret_version: u32::MAX,
        ..client_record("top")
    };
    s.insert_client(&top).await.expect("insert");
    assert!(!s.update_client(&bumped(&top, "x"), 0).await.unwrap());
    assert!(!s
        .update_client(&bumped(&top, "x"), i32::MAX as u32)
        .await
        .unwrap());
    let wrapped = bumped(&top, "wrapped");
    assert_eq!(wrapped.secret_version, 0);
    assert!(s.update_client(&wrapped, u32::MAX).await.unwrap());
    assert_eq!(s.get_client(&top.id).await.unwrap(), Some(wrapped));

    let ghost = client_record("ghost");
    assert!(!s.update_client(&bumped(&ghost, "g"), 0).await.unwrap());
    assert_eq!(
        s.get_client(&ghost.id).await.unwrap(),
        None,
        "update must not insert"
    );
    s.delete_client(&c.id).await.unwrap();
    assert!(
        !s.update_client(&bumped(&v2, "v3"), 2).await.unwrap(),
        "deleted"
    );
    assert_eq!(s.get_client(&c.id).await.unwrap(), None);
}

pub async fn client_concurrent_updates_one_wins(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let c = client_record("race");
    store.insert_client(&c).await.expect("insert");
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let (store, mine) = (store.clone(), bumped(&c, &format!("writer-{i}")));
        tasks.push(tokio::spawn(async move {
            let won = store.update_client(&mine, 0).await;
            won.map(|won| (won, mine))
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (won, mine) = task.await.expect("task ran").expect("update answered");
        if won {
            winners.push(mine);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update from version 0 wins");
    assert_eq!(
        store.get_client(&c.id).await.unwrap().as_ref(),
        Some(&winners[0]),
        "the winner's record, written once"
    );
}

// ---------------------------------------------------------------------------
// sessions

pub async fn session_create_and_get(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let subject = new_subject();

    let bare = session(&client, &subject, T0);
    create(&*store, &bare, None).await;
    assert_eq!(fetch(&*store, &bare.id).await, bare);

    let mut rich = session(&client, &subject, T0 + 1);
    rich.reference = Some(hash());
    rich.dialect = "gsp".into();
    rich.claims
        .insert("email".into(), serde_json::json!("a@example.com"));
    let r = refresh_for(&rich, T0 + 1);
    create(&*store, &rich, Some(&r)).await;
    assert_eq!(fetch(&*store, &rich.id).await, rich);
    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), Some(r));

    assert_eq!(
        store.get_session(&SessionId::generate()).await.unwrap(),
        None
    );
    assert_eq!(store.get_refresh(&hash()).await.unwrap(), None);
}

/// Nothing of a refused session is stored: no record, no refresh token, no
/// row in any index.
async fn check_nothing_of(store: &dyn Store, s: &Session, r: &RefreshRecord) {
    assert_eq!(store.get_session(&s.id).await.unwrap(), None);
    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), None);
    let everything = |subject: Option<&Subject>, client: Option<&ClientId>| SessionFilter {
        subject: subject.cloned(),
        client_id: client.cloned(),
        include_ended: true,
        limit: 0,
    };
    for filter in [
        everything(Some(&s.subject), None),
        everything(None, Some(&s.client_id)),
        everything(Some(&s.subject), Some(&s.client_id)),
    ] {
        assert!(
            !list(store, filter, T0).await.contains(&s.id),
            "listed though refused"
        );
    }
    assert!(!store
        .sessions_of_subject(&s.subject, None)
        .await
        .unwrap()
        .contains(&s.id));
    assert!(!store
        .sessions_of_client(&s.client_id)
        .await
        .unwrap()
        .contains(&s.id));
    if let Some(reference) = &s.reference {
        assert_eq!(
            store
                .find_session_by_reference(&s.client_id, reference)
                .await
                .unwrap(),
            None
        );
    }
}

pub async fn session_for_missing_client_is_refused(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let subject = new_subject();
    let ghost = ClientId::generate();
    for with_refresh in [true, false] {
        let s = Session {
            reference: Some(hash()),
            ..session(&ghost, &subject, T0)
        };
        let r = refresh_for(&s, T0);
        let got = store.create_session(&s, with_refresh.then_some(&r)).await;
        assert!(
            matches!(got, Err(StoreError::Missing("client"))),
            "never-stored client: {got:?}"
        );
        check_nothing_of(&*store, &s, &r).await;
    }
    assert!(list(
        &*store,
        SessionFilter {
            subject: Some(subject.clone()),
            include_ended: true,
            ..Default::default()
        },
        T0
    )
    .await
    .is_empty());

    // A deleted client: the sessions it had stay (the engine ends them);
    // no new one can be made.
    let client = new_client(&*store).await;
    let kept = session(&client, &subject, T0);
    create(&*store, &kept, Some(&refresh_for(&kept, T0))).await;
    assert!(store.delete_client(&client).await.unwrap());
    let late = Session {
        reference: Some(hash()),
        ..session(&client, &subject, T0 + 1)
    };
    let late_refresh = refresh_for(&late, T0 + 1);
    let got = store.create_session(&late, Some(&late_refresh)).await;
    assert!(
        matches!(got, Err(StoreError::Missing("client"))),
        "deleted client: {got:?}"
    );
    check_nothing_of(&*store, &late, &late_refresh).await;
    assert_eq!(
        set(store.sessions_of_client(&client).await.unwrap()),
        set([kept.id])
    );
}

pub async fn list_sessions_filters_and_orders(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let (c1, c2) = (new_client(&*store).await, new_client(&*store).await);
    let subject = new_subject();
    let s1 = session(&c1, &subject, T0);
    let s2 = session(&c1, &subject, T0 + 10);
    let s3 = session(&c2, &subject, T0 + 20);
    let expired = Session {
        expires_at: T0 + 40,
        ..session(&c1, &subject, T0 + 30)
    };
    let ended = session(&c1, &subject, T0 + 50);
    for s in [&s1, &s2, &s3, &expired, &ended] {
        create(&*store, s, None).await;
    }
    store
        .end_sessions(&[ended.id], &ended_at(T0 + 60), T0 + 1000)
        .await
        .unwrap();
    let now = T0 + 100;
    let by = |subject: Option<&Subject>, client: Option<&ClientId>, include_ended, limit| {
        SessionFilter {
            subject: subject.cloned(),
            client_id: client.cloned(),
            include_ended,
            limit,
        }
    };

    let live = list(&*store, by(Some(&subject), None, false, 0), now).await;
    assert_eq!(live, vec![s3.id, s2.id, s1.id], "live only, newest first");
    let all = list(&*store, by(Some(&subject), None, true, 0), now).await;
    assert_eq!(all, vec![ended.id, expired.id, s3.id, s2.id, s1.id]);
    let of_c1 = list(&*store, by(Some(&subject), Some(&c1), false, 0), now).await;
    assert_eq!(of_c1, vec![s2.id, s1.id]);
    let of_c1_all = list(&*store, by(Some(&subject), Some(&c1), true, 0), now).await;
    assert_eq!(of_c1_all, vec![ended.id, expired.id, s2.id, s1.id]);
    assert_eq!(
        list(&*store, by(None, Some(&c1), false, 0), now).await,
        vec![s2.id, s1.id]
    );
    assert_eq!(
        list(&*store, by(None, Some(&c2), false, 0), now).await,
        vec![s3.id]
    );
    assert_eq!(
        list(&*store, by(Some(&subject), None, false, 2), now).await,
        vec![s3.id, s2.id]
    );
    let limited = list(&*store, by(Some(&subject), None, true, 3), now).await;
    assert_eq!(limited, vec![ended.id, expired.id, s3.id]);
    assert!(list(&*store, by(Some(&new_subject()), None, true, 0), now)
        .await
        .is_empty());
}

pub async fn reference_unique_among_live_sessions(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let (client, other) = (new_client(&*store).await, new_client(&*store).await);
    let subject = new_subject();
    let reference = hash();
    let with_ref = |at| Session {
        reference: Some(reference),
        ..session(&client, &subject, at)
    };

    let first = with_ref(T0);
    create(&*store, &first, None).await;
    let clash = with_ref(T0 + 1);
    let r = refresh_for(&clash, T0 + 1);
    assert!(matches!(
        store.create_session(&clash, Some(&r)).await,
        Err(StoreError::Conflict("reference"))
    ));
    assert_eq!(
        store.get_session(&clash.id).await.unwrap(),
        None,
        "a conflict stores nothing"
    );
    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), None);

    let elsewhere = Session {
        reference: Some(reference),
        ..session(&other, &subject, T0 + 2)
    };
    create(&*store, &elsewhere, None).await;
    let found = store
        .find_session_by_reference(&client, &reference)
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.id), Some(first.id));

    store
        .end_sessions(&[first.id], &ended_at(T0 + 3), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_session_by_reference(&client, &reference)
            .await
            .unwrap(),
        None
    );
    let reuse = with_ref(T0 + 4);
    create(&*store, &reuse, None).await;
    let found = store
        .find_session_by_reference(&client, &reference)
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.id), Some(reuse.id));
    assert_eq!(
        store
            .find_session_by_reference(&client, &hash())
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------
// refresh rotation and access cover

pub async fn rotate_refresh_once(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let s = session(&client, &new_subject(), T0);
    let r1 = refresh_for(&s, T0);
    create(&*store, &s, Some(&r1)).await;

    let r2 = refresh_for(&s, T0 + 10);
    let outcome = store
        .rotate_refresh(&r1.hash, &r2, T0 + 10, T0 + 900)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Rotated);
    let retired = store
        .get_refresh(&r1.hash)
        .await
        .unwrap()
        .expect("old token kept");
    assert_eq!(
        retired.state,
        RefreshState::Retired {
            at: T0 + 10,
            successor: r2.hash
        }
    );
    assert_eq!(store.get_refresh(&r2.hash).await.unwrap(), Some(r2.clone()));
    assert_eq!(fetch(&*store, &s.id).await.access_cover_until, T0 + 900);

    let r3 = refresh_for(&s, T0 + 20);
    let again = store
        .rotate_refresh(&r1.hash, &r3, T0 + 20, T0 + 1200)
        .await
        .unwrap();
    assert_eq!(
        again,
        RotateOutcome::NotCurrent,
        "second rotation of the same token"
    );
    assert_eq!(store.get_refresh(&r3.hash).await.unwrap(), None);
    assert_eq!(fetch(&*store, &s.id).await.access_cover_until, T0 + 900);
    assert_eq!(store.get_refresh(&r1.hash).await.unwrap(), Some(retired));

    let r4 = refresh_for(&s, T0 + 30);
    let lower = store
        .rotate_refresh(&r2.hash, &r4, T0 + 30, T0 + 500)
        .await
        .unwrap();
    assert_eq!(lower, RotateOutcome::Rotated);
    assert_eq!(
        fetch(&*store, &s.id).await.access_cover_until,
        T0 + 900,
        "cover never drops"
    );

    let r5 = refresh_for(&s, T0 + 40);
    let unknown = store
        .rotate_refresh(&hash(), &r5, T0 + 40, T0 + 2000)
        .await
        .unwrap();
    assert_eq!(unknown, RotateOutcome::NotCurrent);
    assert_eq!(store.get_refresh(&r5.hash).await.unwrap(), None);
}

pub async fn rotate_refresh_refuses_ended_session(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let s = session(&client, &new_subject(), T0);
    let r1 = refresh_for(&s, T0);
    create(&*store, &s, Some(&r1)).await;
    store
        .end_sessions(&[s.id], &ended_at(T0 + 5), T0 + 1000)
        .await
        .unwrap();

    let r2 = refresh_for(&s, T0 + 10);
    let outcome = store
        .rotate_refresh(&r1.hash, &r2, T0 + 10, T0 + 900)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::NotCurrent);
    assert_eq!(
        store.get_refresh(&r1.hash).await.unwrap().map(|r| r.state),
        Some(RefreshState::Current)
    );
    assert_eq!(store.get_refresh(&r2.hash).await.unwrap(), None);
    assert_eq!(
        fetch(&*store, &s.id).await.access_cover_until,
        s.access_cover_until
    );
}

pub async fn extend_access_cover_raises_only(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let s = session(&client, &new_subject(), T0);
    create(&*store, &s, None).await;

    assert!(store.extend_access_cover(&s.id, T0 + 600).await.unwrap());
    assert_eq!(fetch(&*store, &s.id).await.access_cover_until, T0 + 600);
    assert!(store.extend_access_cover(&s.id, T0 + 400).await.unwrap());
    assert_eq!(
        fetch(&*store, &s.id).await.access_cover_until,
        T0 + 600,
        "cover never drops"
    );
    assert!(!store
        .extend_access_cover(&SessionId::generate(), T0 + 600)
        .await
        .unwrap());

    store
        .end_sessions(&[s.id], &ended_at(T0 + 10), T0 + 1000)
        .await
        .unwrap();
    assert!(
        !store.extend_access_cover(&s.id, T0 + 900).await.unwrap(),
        "ended"
    );
    assert_eq!(fetch(&*store, &s.id).await.access_cover_until, T0 + 600);
}

// ---------------------------------------------------------------------------
// ending

pub async fn end_sessions_is_idempotent(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let subject = new_subject();
    let s1 = session(&client, &subject, T0);
    let s2 = Session {
        access_cover_until: T0 + 600,
        ..session(&client, &subject, T0)
    };
    let uncovered = Session {
        access_cover_until: T0,
        ..session(&client, &subject, T0)
    };
    for s in [&s1, &s2, &uncovered] {
        create(&*store, s, None).await;
    }
    let end = ended_at(T0 + 50);
    let request = [s1.id, s1.id, s2.id, SessionId::generate(), uncovered.id];
    let mut done = store.end_sessions(&request, &end, T0 + 400).await.unwrap();
    done.sort_by_key(|e| e.id);
    let expect = |s: &Session| EndedSession {
        id: s.id,
        client_id: s.client_id.clone(),
        subject: s.subject.clone(),
        access_cover_until: s.access_cover_until,
    };
    let mut expected = vec![expect(&s1), expect(&s2), expect(&uncovered)];
    expected.sort_by_key(|e| e.id);
    assert_eq!(done, expected);

    for (s, delete_after) in [(&s1, T0 + 400), (&s2, T0 + 600), (&uncovered, T0 + 400)] {
        let stored = fetch(&*store, &s.id).await;
        assert_eq!(stored.ended, Some(end.clone()));
        assert_eq!(
            stored.delete_after, delete_after,
            "max(argument, access cover)"
        );
        assert_eq!(
            audit_of(&*store, &s.id).await.len(),
            1,
            "one audit record per end"
        );
    }
    let later = ended_at(T0 + 70);
    assert!(store
        .end_sessions(&[s1.id, s2.id], &later, T0 + 9000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        fetch(&*store, &s1.id).await.ended,
        Some(end.clone()),
        "first end stands"
    );
    assert_eq!(
        audit_of(&*store, &s1.id).await,
        vec![Revocation {
            session_id: s1.id,
            client_id: client.clone(),
            subject: subject.clone(),
            ended: end,
        }]
    );
    assert!(store
        .end_sessions(&[], &later, T0)
        .await
        .unwrap()
        .is_empty());
    check_revocation_rows(&*store, &s1, &s2, &uncovered).await;
}

async fn active_among(
    store: &dyn Store,
    now: UnixTime,
    mine: &[SessionId],
) -> BTreeSet<(SessionId, UnixTime)> {
    let rows = store
        .active_revocations(now)
        .await
        .expect("active revocations");
    rows.into_iter()
        .filter(|(id, _)| mine.contains(id))
        .collect()
}

/// A session stays in `active_revocations` while its cover is in the future.
async fn check_revocation_rows(store: &dyn Store, s1: &Session, s2: &Session, uncovered: &Session) {
    let mine = [s1.id, s2.id, uncovered.id];
    let both = [
        (s1.id, s1.access_cover_until),
        (s2.id, s2.access_cover_until),
    ];
    assert_eq!(
        active_among(store, T0 + 50, &mine).await,
        both.into_iter().collect()
    );
    let only_s2 = [(s2.id, T0 + 600)].into_iter().collect();
    assert_eq!(active_among(store, T0 + 300, &mine).await, only_s2);
    assert!(active_among(store, T0 + 600, &mine).await.is_empty());
}

pub async fn sessions_of_subject_and_client_exclude_ended(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let (c1, c2) = (new_client(&*store).await, new_client(&*store).await);
    let subject = new_subject();
    let a = session(&c1, &subject, T0);
    let b = session(&c2, &subject, T0);
    let gone = session(&c1, &subject, T0);
    let stranger = session(&c1, &new_subject(), T0);
    for s in [&a, &b, &gone, &stranger] {
        create(&*store, s, None).await;
    }
    store
        .end_sessions(&[gone.id], &ended_at(T0 + 1), T0 + 1000)
        .await
        .unwrap();

    let of_subject = store.sessions_of_subject(&subject, None).await.unwrap();
    assert_eq!(set(of_subject), set([a.id, b.id]));
    let of_subject_c1 = store
        .sessions_of_subject(&subject, Some(&c1))
        .await
        .unwrap();
    assert_eq!(set(of_subject_c1), set([a.id]));
    assert_eq!(
        set(store.sessions_of_client(&c1).await.unwrap()),
        set([a.id, stranger.id])
    );
    assert_eq!(
        set(store.sessions_of_client(&c2).await.unwrap()),
        set([b.id])
    );
    assert!(store
        .sessions_of_subject(&new_subject(), None)
        .await
        .unwrap()
        .is_empty());
}

pub async fn audit_log_is_newest_first(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    let client = new_client(&*store).await;
    let subject = new_subject();
    let sessions: Vec<Session> = (0..3).map(|_| session(&client, &subject, T0)).collect();
    for s in &sessions {
        create(&*store, s, None).await;
    }
    // The last two share a second: the later end is still the newer record.
    for (s, at) in sessions
        .iter()
        .zip([T_LATEST + 1, T_LATEST + 2, T_LATEST + 2])
    {
        store
            .end_sessions(&[s.id], &ended_at(at), at + 1000)
            .await
            .unwrap();
    }
    let log = store.audit_log(3).await.unwrap();
    let newest: Vec<SessionId> = log.iter().map(|r| r.session_id).collect();
    assert_eq!(newest, vec![sessions[2].id, sessions[1].id, sessions[0].id]);
    assert_eq!(log[0].ended, ended_at(T_LATEST + 2));
    assert_eq!(store.audit_log(1).await.unwrap().len(), 1);

    // Three ends of one call, in the second that already has a record:
    // each gets its own record, all newer than the earlier ones.
    let more: Vec<Session> = (0..3).map(|_| session(&client, &subject, T0)).collect();
    for s in &more {
        create(&*store, s, None).await;
    }
    let ids: Vec<SessionId> = more.iter().map(|s| s.id).collect();
    let at = T_LATEST + 2;
    let ended = store
        .end_sessions(&ids, &ended_at(at), at + 1000)
        .await
        .unwrap();
    assert_eq!(ended.len(), 3);
    let log = store.audit_log(6).await.unwrap();
    let newest: Vec<SessionId> = log.iter().map(|r| r.session_id).collect();
    let mut last_three = newest[..3].to_vec();
    last_three.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(last_three, expected, "one record per end: {newest:?}");
    assert_eq!(
        newest[3..],
        [sessions[2].id, sessions[1].id, sessions[0].id]
    );
}

// ---------------------------------------------------------------------------
// sweeping and counting

/// What `sweep_deletes_what_expired` creates: one of each fate.
struct SweepScene {
    client: ClientId,
    subject: Subject,
    reference: TokenHash,
    /// Expired and past retention: deleted with its refresh token.
    expired: Session,
    expired_refresh: RefreshRecord,
    /// Live far beyond the window: kept with its refresh token.
    kept: Session,
    kept_refresh: RefreshRecord,
    /// Ended inside the window: deleted, its revocation and audit row too.
    ended: Session,
    /// Ended inside the window with a cover beyond it: kept, row kept.
    covered: Session,
}

async fn build_sweep_scene(store: &dyn Store) -> SweepScene {
    let client = new_client(store).await;
    let subject = new_subject();
    let reference = hash();
    let expired = Session {
        reference: Some(reference),
        ..short_session(&client, &subject, 10_000)
    };
    let expired_refresh = refresh_for(&expired, 10_000);
    let kept = session(&client, &subject, T0);
    let kept_refresh = refresh_for(&kept, T0);
    let ended = short_session(&client, &subject, 11_000);
    let covered = Session {
        access_cover_until: T0,
        ..short_session(&client, &subject, 11_000)
    };
    create(store, &expired, Some(&expired_refresh)).await;
    create(store, &kept, Some(&kept_refresh)).await;
    create(store, &ended, None).await;
    create(store, &covered, None).await;
    store
        .end_sessions(&[ended.id], &ended_at(11_100), 11_500)
        .await
        .unwrap();
    store
        .end_sessions(&[covered.id], &ended_at(11_200), 11_500)
        .await
        .unwrap();
    SweepScene {
        client,
        subject,
        reference,
        expired,
        expired_refresh,
        kept,
        kept_refresh,
        ended,
        covered,
    }
}

pub async fn sweep_deletes_what_expired(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let scene = build_sweep_scene(&*store).await;

    let stats = store.sweep(SWEEP_NOW, 11_150, 100).await.unwrap();
    assert_eq!(
        (stats.sessions, stats.refresh_tokens, stats.audit),
        (2, 1, 1)
    );
    assert!(
        stats.revocations <= 1,
        "see the module docs on revocation counts"
    );
    assert_eq!(
        store.sweep(SWEEP_NOW, 11_150, 100).await.unwrap().total(),
        0,
        "nothing left"
    );

    let s = &*store;
    assert_eq!(s.get_session(&scene.expired.id).await.unwrap(), None);
    assert_eq!(s.get_session(&scene.ended.id).await.unwrap(), None);
    assert_eq!(fetch(s, &scene.kept.id).await, scene.kept);
    assert!(fetch(s, &scene.covered.id).await.ended.is_some());
    assert_eq!(
        s.get_refresh(&scene.expired_refresh.hash).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_refresh(&scene.kept_refresh.hash).await.unwrap(),
        Some(scene.kept_refresh.clone())
    );

    let revoked: Vec<SessionId> = s
        .active_revocations(0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(revoked.contains(&scene.covered.id) && !revoked.contains(&scene.ended.id));
    assert!(
        audit_of(s, &scene.ended.id).await.is_empty(),
        "audit before the cutoff is gone"
    );
    assert_eq!(audit_of(s, &scene.covered.id).await.len(), 1);
    check_swept_indexes(s, &scene).await;
}

/// A deleted session leaves no trace in any listing or reference lookup.
async fn check_swept_indexes(store: &dyn Store, scene: &SweepScene) {
    let filter = SessionFilter {
        subject: Some(scene.subject.clone()),
        include_ended: true,
        ..Default::default()
    };
    let listed = set(list(store, filter, 10_000).await);
    assert_eq!(listed, set([scene.kept.id, scene.covered.id]));
    let by_client = SessionFilter {
        client_id: Some(scene.client.clone()),
        include_ended: true,
        ..Default::default()
    };
    assert_eq!(set(list(store, by_client, 10_000).await), listed);
    assert_eq!(
        set(store
            .sessions_of_subject(&scene.subject, None)
            .await
            .unwrap()),
        set([scene.kept.id])
    );
    assert_eq!(
        set(store.sessions_of_client(&scene.client).await.unwrap()),
        set([scene.kept.id])
    );
    assert_eq!(
        store
            .find_session_by_reference(&scene.client, &scene.reference)
            .await
            .unwrap(),
        None
    );
    let reuse = Session {
        reference: Some(scene.reference),
        ..session(&scene.client, &scene.subject, T0)
    };
    create(store, &reuse, None).await;
}

pub async fn sweep_respects_batch(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let client = new_client(&*store).await;
    let subject = new_subject();
    let mut made = Vec::new();
    for i in 0..5 {
        let s = short_session(&client, &subject, 10_000 + i);
        create(&*store, &s, Some(&refresh_for(&s, 10_000))).await;
        made.push(s.id);
    }
    // Covers end at 10_300+, after the end at 10_200: each leaves a revoked row.
    store
        .end_sessions(&made, &ended_at(10_200), 10_500)
        .await
        .unwrap();

    let mut revocations = 0;
    for expected in [3, 2, 0] {
        let stats = store.sweep(SWEEP_NOW, 10_201, 3).await.unwrap();
        assert_eq!(
            (stats.sessions, stats.refresh_tokens, stats.audit),
            (expected, expected, expected)
        );
        assert!(stats.revocations <= 3, "at most `batch` of each kind");
        assert_eq!(
            stats.more,
            expected == 3 || stats.revocations == 3,
            "more is due exactly when a kind filled its batch"
        );
        revocations += stats.revocations;
    }
    assert!(revocations <= 5);
    for id in &made {
        assert_eq!(store.get_session(id).await.unwrap(), None);
    }
    assert!(active_among(&*store, 0, &made).await.is_empty());
}

/// An end's audit entry stays until the audit cutoff passes it, even when
/// its session is deleted first (a deletion due in the very second the
/// retention ends, or one set under a shorter retention).
pub async fn an_audit_entry_outlives_its_session_until_its_cutoff(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let client = new_client(&*store).await;
    let s = short_session(&client, &new_subject(), 12_000);
    create(&*store, &s, None).await;
    store
        .end_sessions(&[s.id], &ended_at(12_100), 12_500)
        .await
        .unwrap();
    let stats = store.sweep(12_500, 12_100, 100).await.unwrap();
    assert_eq!((stats.sessions, stats.audit), (1, 0));
    assert_eq!(store.get_session(&s.id).await.unwrap(), None);
    assert_eq!(
        audit_of(&*store, &s.id).await.len(),
        1,
        "kept until its cutoff"
    );
    assert_eq!(store.sweep(12_500, 12_101, 100).await.unwrap().audit, 1);
    assert!(audit_of(&*store, &s.id).await.is_empty());
}

async fn live(store: &dyn Store) -> u64 {
    store.live_session_count().await.expect("live count")
}

pub async fn live_session_count_tracks_lifecycle(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let client = new_client(&*store).await;
    let subject = new_subject();
    let base = live(&*store).await;

    let (a, b) = (
        session(&client, &subject, T0),
        session(&client, &subject, T0),
    );
    create(&*store, &a, None).await;
    create(&*store, &b, None).await;
    assert_eq!(live(&*store).await, base + 2);
    store
        .end_sessions(&[a.id, a.id], &ended_at(T0 + 1), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(live(&*store).await, base + 1);
    store
        .end_sessions(&[a.id], &ended_at(T0 + 2), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(live(&*store).await, base + 1, "ending twice counts once");

    // Expires inside the window but is kept (retention beyond it).
    let lapsed = Session {
        expires_at: 20_000,
        delete_after: T0,
        ..session(&client, &subject, 10_000)
    };
    create(&*store, &lapsed, None).await;
    let with_lapsed = live(&*store).await;
    assert!(
        with_lapsed == base + 1 || with_lapsed == base + 2,
        "an unswept expired session may count"
    );
    store.sweep(SWEEP_NOW, 0, 100).await.unwrap();
    assert_eq!(
        live(&*store).await,
        base + 1,
        "the sweeper stops counting the expired session"
    );
    assert_eq!(
        fetch(&*store, &lapsed.id).await,
        lapsed,
        "yet keeps its record"
    );
}

// ---------------------------------------------------------------------------
// concurrency

pub async fn concurrent_creates_all_land(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let client = new_client(&*store).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, client) = (store.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let s = session(&client, &new_subject(), T0 + i);
            let r = refresh_for(&s, T0 + i);
            store.create_session(&s, Some(&r)).await.map(|()| (s, r))
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.expect("task ran").expect("create succeeded"));
    }
    for (s, r) in &created {
        assert_eq!(&fetch(&*store, &s.id).await, s);
        assert_eq!(store.get_refresh(&r.hash).await.unwrap().as_ref(), Some(r));
    }
    let of_client = set(store.sessions_of_client(&client).await.unwrap());
    assert_eq!(of_client, set(created.iter().map(|(s, _)| s.id)));
}

// ---------------------------------------------------------------------------
// grants

async fn grant_of(store: &dyn Store, kind: GrantKind, key: &TokenHash) -> Option<Grant> {
    store.get_grant(kind, key).await.expect("get grant")
}

fn grant(value: &[u8], version: u64, expires_at: UnixTime) -> Grant {
    Grant {
        value: value.to_vec(),
        version,
        expires_at,
    }
}

pub async fn grant_put_and_get(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let s = &*store;
    let key = hash();
    let kind = GrantKind::Otp;
    assert_eq!(grant_of(s, kind, &key).await, None);

    s.put_grant(kind, &key, br#"{"n":1}"#, T0 + 300)
        .await
        .unwrap();
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(br#"{"n":1}"#, 1, T0 + 300)),
        "a fresh grant has version 1"
    );

    s.put_grant(kind, &key, br#"{"n":2}"#, T0 + 600)
        .await
        .unwrap();
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(br#"{"n":2}"#, 2, T0 + 600)),
        "a put replaces value and expiry and bumps the version"
    );
    s.put_grant(kind, &key, b"", T0 + 60).await.unwrap();
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(b"", 3, T0 + 60)),
        "an empty value is a value"
    );

    // An expired grant is still returned until swept: the engine decides.
    let old = hash();
    s.put_grant(kind, &old, b"old", T0 - 1_000_000)
        .await
        .unwrap();
    assert_eq!(
        grant_of(s, kind, &old).await,
        Some(grant(b"old", 1, T0 - 1_000_000))
    );
    assert_eq!(grant_of(s, kind, &hash()).await, None);
}

pub async fn grant_kinds_are_separate(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let s = &*store;
    let key = hash();
    s.put_grant(GrantKind::Otp, &key, b"otp", T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        grant_of(s, GrantKind::LoginChallenge, &key).await,
        None,
        "a kind does not see another kind's key"
    );
    assert_eq!(grant_of(s, GrantKind::AuthorizationCode, &key).await, None);
    assert!(
        !s.swap_grant(GrantKind::LoginChallenge, &key, 1, None)
            .await
            .unwrap(),
        "nor swap it"
    );

    s.put_grant(GrantKind::LoginChallenge, &key, b"login", T0 + 2)
        .await
        .unwrap();
    s.put_grant(GrantKind::AuthorizationCode, &key, b"code", T0 + 3)
        .await
        .unwrap();
    assert_eq!(
        grant_of(s, GrantKind::LoginChallenge, &key).await,
        Some(grant(b"login", 1, T0 + 2)),
        "a fresh grant of its kind, whatever other kinds hold"
    );
    assert!(s
        .swap_grant(GrantKind::AuthorizationCode, &key, 1, None)
        .await
        .unwrap());
    assert_eq!(grant_of(s, GrantKind::AuthorizationCode, &key).await, None);
    assert_eq!(
        grant_of(s, GrantKind::Otp, &key).await,
        Some(grant(b"otp", 1, T0 + 1)),
        "untouched by the other kinds' writes"
    );
    assert_eq!(
        grant_of(s, GrantKind::LoginChallenge, &key).await,
        Some(grant(b"login", 1, T0 + 2))
    );
}

pub async fn grant_swap_compares_version(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let s = &*store;
    let kind = GrantKind::LoginChallenge;
    let key = hash();
    s.put_grant(kind, &key, b"v1", T0 + 300).await.unwrap();

    assert!(s.swap_grant(kind, &key, 1, Some(b"v2")).await.unwrap());
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(b"v2", 2, T0 + 300)),
        "version + 1, same expiry"
    );

    assert!(
        !s.swap_grant(kind, &key, 1, Some(b"stale")).await.unwrap(),
        "stale version"
    );
    assert!(!s.swap_grant(kind, &key, 3, Some(b"ahead")).await.unwrap());
    assert!(!s.swap_grant(kind, &key, 1, None).await.unwrap());
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(b"v2", 2, T0 + 300)),
        "a failed swap changes nothing"
    );

    // A put in between moves the version on: a swap of the old one fails.
    s.put_grant(kind, &key, b"v3", T0 + 900).await.unwrap();
    assert!(!s.swap_grant(kind, &key, 2, Some(b"late")).await.unwrap());
    assert!(s.swap_grant(kind, &key, 3, Some(b"v4")).await.unwrap());
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(b"v4", 4, T0 + 900))
    );

    assert!(s.swap_grant(kind, &key, 4, None).await.unwrap(), "delete");
    assert_eq!(grant_of(s, kind, &key).await, None);
    assert!(
        !s.swap_grant(kind, &key, 4, None).await.unwrap(),
        "already gone"
    );
    assert!(!s.swap_grant(kind, &key, 5, Some(b"x")).await.unwrap());
    assert_eq!(grant_of(s, kind, &key).await, None, "a swap never inserts");

    let missing = hash();
    assert!(!s.swap_grant(kind, &missing, 1, Some(b"x")).await.unwrap());
    assert!(!s.swap_grant(kind, &missing, 0, None).await.unwrap());
    assert_eq!(grant_of(s, kind, &missing).await, None);

    // After a delete, a put starts afresh.
    s.put_grant(kind, &key, b"again", T0 + 60).await.unwrap();
    assert_eq!(
        grant_of(s, kind, &key).await,
        Some(grant(b"again", 1, T0 + 60))
    );
}

pub async fn grant_concurrent_swaps_one_wins(store: SharedStore) {
    let _shared = GLOBAL.read().await;
    let kind = GrantKind::AuthorizationCode;
    let key = hash();
    store
        .put_grant(kind, &key, b"fresh", T0 + 60)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let value = format!("used by {i}").into_bytes();
            let won = store.swap_grant(kind, &key, 1, Some(&value)).await;
            won.map(|won| (won, value))
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (won, value) = task.await.expect("task ran").expect("swap answered");
        if won {
            winners.push(value);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one swap of version 1 wins");
    assert_eq!(
        grant_of(&*store, kind, &key).await,
        Some(grant(&winners[0], 2, T0 + 60)),
        "the winner's value, swapped once"
    );
}

/// Sweeps with `now` = [`SWEEP_NOW`]; only this body's grants are due.
async fn sweep_grants(store: &dyn Store, batch: usize) -> usize {
    let stats = store.sweep(SWEEP_NOW, 0, batch).await.expect("sweep");
    assert_eq!(stats.total(), stats.grants, "only grants were due");
    stats.grants
}

pub async fn grant_sweep_deletes_only_expired(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let s = &*store;
    let (otp, login, code) = (
        GrantKind::Otp,
        GrantKind::LoginChallenge,
        GrantKind::AuthorizationCode,
    );
    // Due: expired, its twin of another kind, one expiring exactly at
    // `now`, and one swapped (a swap keeps the expiry).
    let (expired, at_now, swapped) = (hash(), hash(), hash());
    s.put_grant(otp, &expired, b"e", 10_000).await.unwrap();
    s.put_grant(login, &expired, b"twin", 10_001).await.unwrap();
    s.put_grant(code, &at_now, b"n", SWEEP_NOW).await.unwrap();
    s.put_grant(otp, &swapped, b"s1", 10_002).await.unwrap();
    assert!(s.swap_grant(otp, &swapped, 1, Some(b"s2")).await.unwrap());
    // Not due: expiring just after `now`, far in the future, re-put with a
    // later expiry, and deleted by a swap (nothing left to count).
    let (after, live, extended, deleted) = (hash(), hash(), hash(), hash());
    s.put_grant(otp, &after, b"a", SWEEP_NOW + 1).await.unwrap();
    s.put_grant(code, &live, b"l", T0).await.unwrap();
    s.put_grant(login, &extended, b"x1", 10_003).await.unwrap();
    s.put_grant(login, &extended, b"x2", T0).await.unwrap();
    s.put_grant(code, &deleted, b"d", 10_004).await.unwrap();
    assert!(s.swap_grant(code, &deleted, 1, None).await.unwrap());

    assert_eq!(sweep_grants(s, 100).await, 4);
    assert_eq!(sweep_grants(s, 100).await, 0, "nothing left");
    for (kind, key) in [
        (otp, &expired),
        (login, &expired),
        (code, &at_now),
        (otp, &swapped),
        (code, &deleted),
    ] {
        assert_eq!(grant_of(s, kind, key).await, None, "{kind:?} swept");
    }
    assert_eq!(
        grant_of(s, otp, &after).await,
        Some(grant(b"a", 1, SWEEP_NOW + 1))
    );
    assert_eq!(grant_of(s, code, &live).await, Some(grant(b"l", 1, T0)));
    assert_eq!(
        grant_of(s, login, &extended).await,
        Some(grant(b"x2", 2, T0))
    );
    // A swept key can be put again, afresh.
    s.put_grant(otp, &expired, b"new", T0).await.unwrap();
    assert_eq!(grant_of(s, otp, &expired).await, Some(grant(b"new", 1, T0)));
}

pub async fn grant_sweep_respects_batch(store: SharedStore) {
    let _exclusive = GLOBAL.write().await;
    drain_sweep_window(&*store).await;
    let s = &*store;
    let mut made = Vec::new();
    for i in 0..5 {
        let key = hash();
        s.put_grant(GrantKind::Otp, &key, b"{}", 10_000 + i)
            .await
            .unwrap();
        made.push(key);
    }
    let live = hash();
    s.put_grant(GrantKind::Otp, &live, b"{}", T0).await.unwrap();

    for expected in [3, 2, 0] {
        assert_eq!(sweep_grants(s, 3).await, expected, "at most `batch`");
    }
    for key in &made {
        assert_eq!(grant_of(s, GrantKind::Otp, key).await, None);
    }
    assert!(grant_of(s, GrantKind::Otp, &live).await.is_some());
}
