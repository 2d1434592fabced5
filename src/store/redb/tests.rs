//! Unit tests of the embedded store's internals.

use super::ops::Outcome;
use super::*;
use crate::core::ids::Scope;
use crate::core::model::{Actor, EndReason, GrantType};

fn client(id: &str) -> Client {
    Client {
        id: ClientId::parse(id).unwrap(),
        name: id.into(),
        secret_hash: "$argon2id$test".into(),
        payload_key_sealed: None,
        redirect_uris: Vec::new(),
        grant_types: GrantType::defaults(),
        access_token_ttl: None,
        refresh_token_ttl: None,
        created_at: 1,
        secret_version: 0,
    }
}

fn session(client: &ClientId, at: UnixTime) -> Session {
    Session {
        id: SessionId::generate(),
        client_id: client.clone(),
        subject: Subject::parse("alice").unwrap(),
        scope: Scope::default(),
        claims: serde_json::Map::new(),
        token_claims: serde_json::Map::new(),
        dialect: "native".into(),
        reference: None,
        created_at: at,
        expires_at: at + 3600,
        access_cover_until: at + 300,
        delete_after: at + 7200,
        ended: None,
    }
}

fn refresh(s: &Session) -> RefreshRecord {
    RefreshRecord {
        hash: crate::core::secrets::random_bytes::<32>(),
        session_id: s.id,
        client_id: s.client_id.clone(),
        issued_at: s.created_at,
        expires_at: s.expires_at,
        state: RefreshState::Current,
    }
}

fn bare_db(dir: &tempfile::TempDir) -> Arc<Database> {
    let db = Database::create(dir.path().join("bare.redb")).unwrap();
    create_tables(&db).unwrap();
    Arc::new(db)
}

/// A writer on `db`, logging to a fresh log in `dir`, and its commit count.
fn writer(dir: &tempfile::TempDir, db: &Arc<Database>) -> (Writer, Arc<AtomicU64>) {
    let (wal, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    assert!(found.records.is_empty());
    let commits = Arc::new(AtomicU64::new(0));
    let w = Writer::new(
        db.clone(),
        Arc::new(EndIndex::default()),
        wal,
        1,
        commits.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    (w, commits)
}

type Answer = oneshot::Receiver<StoreResult<Outcome>>;

fn job(op: WriteOp) -> (Job, Answer) {
    Job::new(op).unwrap()
}

fn client_job(c: Client) -> (Job, Answer) {
    job(WriteOp::InsertClient(c))
}

#[test]
fn ops_of_one_batch_see_each_other_and_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, commits) = writer(&dir, &db);
    let (first, mut first_rx) = client_job(client("dup"));
    let (second, mut second_rx) = client_job(client("dup"));
    let renamed = Client {
        name: "renamed".into(),
        secret_version: 1,
        ..client("dup")
    };
    let stale_copy = Client {
        name: "stale".into(),
        secret_version: 1,
        ..client("dup")
    };
    let (update, mut update_rx) = job(WriteOp::UpdateClient {
        client: renamed,
        expected_version: 0,
    });
    let (stale, mut stale_rx) = job(WriteOp::UpdateClient {
        client: stale_copy,
        expected_version: 0,
    });
    w.run_batch(vec![first, second, update, stale]);
    assert!(matches!(first_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(matches!(
        second_rx.try_recv(),
        Ok(Err(StoreError::Conflict("client")))
    ));
    assert!(
        matches!(update_rx.try_recv(), Ok(Ok(Outcome::Flag(true)))),
        "sees the insert"
    );
    assert!(
        matches!(stale_rx.try_recv(), Ok(Ok(Outcome::Flag(false)))),
        "sees the update's version"
    );
    assert_eq!(commits.load(Ordering::Relaxed), 1);
    let rt = db.begin_read().unwrap();
    let stored = load_client(&rt.open_table(CLIENTS).unwrap(), "dup").unwrap();
    assert_eq!(stored.map(|c| c.name), Some("renamed".to_owned()));
}

#[test]
fn a_session_after_its_clients_delete_in_one_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, commits) = writer(&dir, &db);
    let owner = client("owner");
    let (before, after) = (session(&owner.id, 1000), session(&owner.id, 1000));
    let (before_r, after_r) = (refresh(&before), refresh(&after));
    let gone_id = owner.id.clone();
    let (insert, mut insert_rx) = client_job(owner);
    let (first, mut first_rx) = job(WriteOp::CreateSession {
        session: before,
        refresh: Some(before_r),
    });
    let (delete, mut delete_rx) = job(WriteOp::DeleteClient(gone_id));
    let (late, mut late_rx) = job(WriteOp::CreateSession {
        session: after.clone(),
        refresh: Some(after_r.clone()),
    });
    w.run_batch(vec![insert, first, delete, late]);
    assert!(matches!(insert_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(
        matches!(first_rx.try_recv(), Ok(Ok(Outcome::Done))),
        "sees the insert"
    );
    assert!(matches!(delete_rx.try_recv(), Ok(Ok(Outcome::Flag(true)))));
    assert!(
        matches!(late_rx.try_recv(), Ok(Err(StoreError::Missing("client")))),
        "sees the delete"
    );
    assert_eq!(
        commits.load(Ordering::Relaxed),
        1,
        "a refused session does not fail its batch"
    );
    let rt = db.begin_read().unwrap();
    let sessions = rt.open_table(SESSIONS).unwrap();
    assert!(load_session(&sessions, after.id.as_bytes())
        .unwrap()
        .is_none());
    let refresh_t = rt.open_table(REFRESH).unwrap();
    assert!(load_refresh(&refresh_t, &after_r.hash).unwrap().is_none());
    let by_client = rt.open_table(BY_CLIENT).unwrap();
    assert_eq!(ids_under(&by_client, "owner").unwrap().len(), 1);
}

#[test]
fn a_failing_op_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, commits) = writer(&dir, &db);
    let (a, mut a_rx) = client_job(client("a"));
    let (bad, mut bad_rx) = job(WriteOp::FailAfterInsert(client("half-done")));
    let (b, mut b_rx) = client_job(client("b"));
    w.run_batch(vec![a, bad, b]);
    assert!(matches!(a_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(matches!(
        bad_rx.try_recv(),
        Ok(Err(StoreError::Corrupt { .. }))
    ));
    assert!(matches!(b_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert_eq!(
        commits.load(Ordering::Relaxed),
        2,
        "the two good ops, one each"
    );
    let rt = db.begin_read().unwrap();
    let clients = rt.open_table(CLIENTS).unwrap();
    assert!(load_client(&clients, "a").unwrap().is_some());
    assert!(load_client(&clients, "b").unwrap().is_some());
    assert!(
        load_client(&clients, "half-done").unwrap().is_none(),
        "failed op rolled back"
    );
    // Only the two ops that changed something were logged, in order.
    drop(w);
    let (mut wal, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    let logged: Vec<String> = found
        .records
        .iter()
        .map(|(_, r)| WriteOp::decode(r).unwrap().name().to_owned())
        .collect();
    assert_eq!(logged, ["insert_client", "insert_client"]);
    assert_eq!(
        found.records.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2]
    );
    // Replayed on an empty database, the log gives what the writer gave.
    let other = tempfile::tempdir().unwrap();
    let fresh = bare_db(&other);
    assert_eq!(
        recover(&fresh, &EndIndex::default(), &mut wal, found).unwrap(),
        3
    );
    let rt = fresh.begin_read().unwrap();
    let clients = rt.open_table(CLIENTS).unwrap();
    assert!(load_client(&clients, "a").unwrap().is_some());
    assert!(load_client(&clients, "b").unwrap().is_some());
    assert!(load_client(&clients, "half-done").unwrap().is_none());
}

#[test]
fn grant_ops_of_one_batch_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, commits) = writer(&dir, &db);
    let id = (kind_code(GrantKind::Otp), [7; 32]);
    let gone = (kind_code(GrantKind::AuthorizationCode), [7; 32]);
    let put_op = |id, value: &[u8], expires_at| WriteOp::PutGrant {
        id,
        value: value.to_vec(),
        expires_at,
    };
    let swap_op = |id, expected_version, new_value: Option<&[u8]>| WriteOp::SwapGrant {
        id,
        expected_version,
        new_value: new_value.map(<[u8]>::to_vec),
    };
    let (put, mut put_rx) = job(put_op(id, b"a", 100));
    let (swap, mut swap_rx) = job(swap_op(id, 1, Some(b"b")));
    let (stale, mut stale_rx) = job(swap_op(id, 1, Some(b"c")));
    let (replace, mut replace_rx) = job(put_op(id, b"d", 200));
    let (made, mut made_rx) = job(put_op(gone, b"x", 100));
    let (used, mut used_rx) = job(swap_op(gone, 1, None));
    w.run_batch(vec![put, swap, stale, replace, made, used]);
    assert!(matches!(put_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(
        matches!(swap_rx.try_recv(), Ok(Ok(Outcome::Flag(true)))),
        "sees the put"
    );
    assert!(
        matches!(stale_rx.try_recv(), Ok(Ok(Outcome::Flag(false)))),
        "sees the swap"
    );
    assert!(matches!(replace_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(matches!(made_rx.try_recv(), Ok(Ok(Outcome::Done))));
    assert!(matches!(used_rx.try_recv(), Ok(Ok(Outcome::Flag(true)))));
    assert_eq!(commits.load(Ordering::Relaxed), 1);

    let rt = db.begin_read().unwrap();
    let grants = rt.open_table(GRANTS).unwrap();
    let expected = Grant {
        value: b"d".to_vec(),
        version: 3,
        expires_at: 200,
    };
    assert_eq!(load_grant(&grants, id).unwrap(), Some(expected));
    assert_eq!(load_grant(&grants, gone).unwrap(), None);
    let index = rt.open_table(GRANTS_BY_EXPIRY).unwrap();
    let rows: Vec<(i64, u8, TokenHash)> = index
        .iter()
        .unwrap()
        .map(|r| r.unwrap().0.value())
        .collect();
    assert_eq!(
        rows,
        vec![(200, id.0, id.1)],
        "one row per grant, current expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_writes() {
    let (_dir, store, owner) = store_with_owner().await;
    let before = store.commit_count();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (store, s) = (store.clone(), session(&owner.id, 1000 + i));
            tokio::spawn(async move {
                store
                    .create_session(&s, Some(&refresh(&s)))
                    .await
                    .map(|()| s)
            })
        })
        .collect();
    let mut made = Vec::new();
    for t in tasks {
        made.push(t.await.unwrap().unwrap());
    }
    let used = store.commit_count() - before;
    assert!(used < 200, "200 writes took {used} commits");
    for s in &made {
        assert_eq!(store.get_session(&s.id).await.unwrap().as_ref(), Some(s));
    }
}

/// Work handed to the writer runs exactly once: on the writer while a
/// log append is under way, or by the caller afterwards, never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_work_runs_once_whoever_takes_it() {
    use crate::store::Work;
    use std::sync::atomic::AtomicUsize;
    let (_dir, store, owner) = store_with_owner().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (store, s, runs) = (store.clone(), session(&owner.id, 1000 + i), runs.clone());
            tokio::spawn(async move {
                let work = Work::new(move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                });
                let offered = store.offload(&work);
                store.create_session(&s, None).await.unwrap();
                work.run();
                offered
            })
        })
        .collect();
    let mut offered = 0;
    for t in tasks {
        offered += usize::from(t.await.unwrap());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 200);
    // Offered wherever the log appends in the background (io_uring).
    assert_eq!(offered > 0, store.inner.offload.load(Ordering::SeqCst));
}

/// A batch that logs nothing (every op refused) leaves handed-over work
/// to its callers.
#[tokio::test]
async fn work_of_a_batch_that_logs_nothing_stays_with_its_caller() {
    use crate::store::Work;
    use std::sync::atomic::AtomicUsize;
    let (_dir, store, _owner) = store_with_owner().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let work = Work::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    store.offload(&work);
    // A session of a client that does not exist: refused, nothing logged.
    let orphan = session(&ClientId::parse("nobody").unwrap(), 1000);
    assert!(store.create_session(&orphan, None).await.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no append, no work");
    work.run();
    work.run();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let store = RedbStore::open(&path).unwrap();
    let owner = client("owner");
    let (kept, ended) = (session(&owner.id, 1000), session(&owner.id, 1000));
    let r = refresh(&kept);
    store.insert_client(&owner).await.unwrap();
    store.create_session(&kept, Some(&r)).await.unwrap();
    store.create_session(&ended, None).await.unwrap();
    let end = Ended {
        at: 1010,
        reason: EndReason::Logout,
        by: Actor::Client(owner.id.clone()),
    };
    store.end_sessions(&[ended.id], &end, 2000).await.unwrap();
    let code = [9; 32];
    store
        .put_grant(GrantKind::AuthorizationCode, &code, b"{\"n\":1}", 5000)
        .await
        .unwrap();
    drop(store);

    let store = RedbStore::open(&path).unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.get_client(&owner.id).await.unwrap(), Some(owner));
    assert_eq!(store.get_session(&kept.id).await.unwrap(), Some(kept));
    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), Some(r));
    assert_eq!(
        store
            .get_session(&ended.id)
            .await
            .unwrap()
            .and_then(|s| s.ended),
        Some(end)
    );
    assert_eq!(store.live_session_count().await.unwrap(), 1);
    assert_eq!(
        store.active_revocations(1010).await.unwrap(),
        vec![(ended.id, 1300)]
    );
    assert_eq!(store.audit_log(10).await.unwrap().len(), 1);
    let grant = Grant {
        value: b"{\"n\":1}".to_vec(),
        version: 1,
        expires_at: 5000,
    };
    assert_eq!(
        store
            .get_grant(GrantKind::AuthorizationCode, &code)
            .await
            .unwrap(),
        Some(grant)
    );
}

/// The first byte of a stored session or refresh record.
fn stored_format(store: &RedbStore, id: &SessionId, hash: &TokenHash) -> (u8, u8) {
    let rt = store.inner.db.begin_read().unwrap();
    let s = rt.open_table(SESSIONS).unwrap();
    let r = rt.open_table(REFRESH).unwrap();
    let first = |v: Option<redb::AccessGuard<'_, Bytes>>| v.unwrap().value()[0];
    (
        first(s.get(id.as_bytes()).unwrap()),
        first(r.get(hash).unwrap()),
    )
}

/// Rotates `old` to a new refresh token of `s` issued at `at`.
async fn rotate_at(
    store: &RedbStore,
    s: &Session,
    old: &TokenHash,
    at: UnixTime,
    access_exp: UnixTime,
) -> (RefreshRecord, RotateOutcome) {
    let mut next = refresh(s);
    next.issued_at = at;
    let outcome = store
        .rotate_refresh(old, &next, at, access_exp)
        .await
        .unwrap();
    (next, outcome)
}

/// Files written before the compact format hold JSON records: they
/// read, rotate, end and list as before, and are rewritten compact.
#[tokio::test]
async fn json_records_of_older_files_still_work() {
    let (_dir, store, owner) = store_with_owner().await;
    let mut s = session(&owner.id, 1000);
    s.claims
        .insert("name".into(), serde_json::Value::from("Alice"));
    s.reference = Some([5; 32]);
    let r = refresh(&s);
    store.create_session(&s, Some(&r)).await.unwrap();
    assert_eq!(stored_format(&store, &s.id, &r.hash), (1, 1));
    // Replace the records with JSON, as an older version wrote them.
    let txn = store.inner.db.begin_write().unwrap();
    {
        let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
        let json = serde_json::to_vec(&s).unwrap();
        t.sessions()
            .unwrap()
            .insert(s.id.as_bytes(), json.as_slice())
            .unwrap();
        let json = serde_json::to_vec(&r).unwrap();
        t.refresh()
            .unwrap()
            .insert(&r.hash, json.as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(stored_format(&store, &s.id, &r.hash), (b'{', b'{'));

    assert_eq!(store.get_session(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(store.get_refresh(&r.hash).await.unwrap(), Some(r.clone()));
    let listed = store
        .list_sessions(&SessionFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(listed, vec![s.clone()]);

    let (next, rotated) = rotate_at(&store, &s, &r.hash, 1100, 1400).await;
    assert_eq!(rotated, RotateOutcome::Rotated);
    let retired = store.get_refresh(&r.hash).await.unwrap().unwrap();
    assert_eq!(
        retired.state,
        RefreshState::Retired {
            at: 1100,
            successor: next.hash
        }
    );
    let end = Ended {
        at: 1200,
        reason: EndReason::Logout,
        by: Actor::Client(owner.id.clone()),
    };
    assert_eq!(
        store.end_sessions(&[s.id], &end, 5000).await.unwrap().len(),
        1
    );
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.ended, Some(end));
    assert_eq!(got.claims, s.claims);
    assert_eq!(got.reference, s.reference);
    assert_eq!(stored_format(&store, &s.id, &r.hash), (1, 1));
}

#[cfg(unix)]
#[test]
fn file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    drop(RedbStore::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Plants bytes that are not JSON where a session belongs.
/// An undecodable session record under `id`, with a row at `at` in the
/// time index `index` (the live index or the delete queue).
fn plant_garbage(
    store: &RedbStore,
    id: &SessionId,
    index: TableDefinition<(i64, Id), ()>,
    at: i64,
) {
    let txn = store.inner.db.begin_write().unwrap();
    {
        let mut sessions = txn.open_table(SESSIONS).unwrap();
        sessions
            .insert(id.as_bytes(), b"{not json".as_slice())
            .unwrap();
        let mut rows = txn.open_table(index).unwrap();
        rows.insert((at, *id.as_bytes()), ()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn corrupt_record_is_reported_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
    let id = SessionId::generate();
    plant_garbage(&store, &id, DELETE_QUEUE, 500);
    let got = store.get_session(&id).await;
    assert!(matches!(
        got,
        Err(StoreError::Corrupt {
            table: "sessions",
            ..
        })
    ));
    let end = Ended {
        at: 10,
        reason: EndReason::AdminRevoked,
        by: Actor::Admin,
    };
    let ended = store.end_sessions(&[id], &end, 100).await;
    assert!(matches!(ended, Err(StoreError::Corrupt { .. })));
    // The writer carries on after a failed op.
    store.insert_client(&client("after")).await.unwrap();
    assert_eq!(store.sweep(1000, 0, 10).await.unwrap().sessions, 1);
    assert_eq!(store.get_session(&id).await.unwrap(), None);
}

/// A fresh store (its directory is removed when the first value drops)
/// with one client, `owner`.
async fn store_with_owner() -> (tempfile::TempDir, RedbStore, Client) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
    let owner = client("owner");
    store.insert_client(&owner).await.unwrap();
    (dir, store, owner)
}

fn row_counts(store: &RedbStore) -> Vec<u64> {
    let txn = store.inner.db.begin_write().unwrap();
    let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
    let counts = vec![
        t.sessions().unwrap().len().unwrap(),
        t.by_subject().unwrap().len().unwrap(),
        t.by_client().unwrap().len().unwrap(),
        t.live().unwrap().len().unwrap(),
        t.delete_queue().unwrap().len().unwrap() + t.deletions().unwrap().len().unwrap(),
        t.references().unwrap().len().unwrap(),
        t.refresh().unwrap().len().unwrap(),
        t.refresh_by_expiry().unwrap().len().unwrap(),
        t.revoked().unwrap().len().unwrap(),
        t.revoked_by_end().unwrap().len().unwrap(),
        t.audit().unwrap().len().unwrap(),
        t.grants().unwrap().len().unwrap(),
        t.grants_by_expiry().unwrap().len().unwrap(),
        t.ends().unwrap().len().unwrap(),
    ];
    drop(t);
    txn.abort().unwrap();
    counts
}

#[tokio::test]
async fn sweeping_everything_leaves_no_index_rows() {
    let (_dir, store, owner) = store_with_owner().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let s = Session {
            reference: Some([i as u8; 32]),
            ..session(&owner.id, 1000 + i)
        };
        let r = refresh(&s);
        store.create_session(&s, Some(&r)).await.unwrap();
        let next = RefreshRecord {
            hash: [0xa0 + i as u8; 32],
            ..r.clone()
        };
        store
            .rotate_refresh(&r.hash, &next, 1100, 1500)
            .await
            .unwrap();
        ids.push(s.id);
        let kind = [GrantKind::Otp, GrantKind::LoginChallenge][i as usize % 2];
        let key = [0x40 + i as u8; 32];
        store.put_grant(kind, &key, b"{}", 1000 + i).await.unwrap();
        if i % 3 == 0 {
            // A replace moves the index row; a swap keeps it.
            store.put_grant(kind, &key, b"{}", 2000 + i).await.unwrap();
            assert!(store.swap_grant(kind, &key, 2, Some(b"[]")).await.unwrap());
        }
    }
    let end = Ended {
        at: 1200,
        reason: EndReason::AdminRevoked,
        by: Actor::Admin,
    };
    store.end_sessions(&ids[..10], &end, 3000).await.unwrap();
    // Revocation and audit rows of earlier layouts, which the sweep
    // drains too.
    {
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
            let id = *ids[10].as_bytes();
            t.revoked().unwrap().insert((1300, id), ()).unwrap();
            t.append_revoked(1200, id, 1300).unwrap();
            t.append_audit(&Revocation {
                session_id: ids[10],
                client_id: owner.id.clone(),
                subject: Subject::parse("alice").unwrap(),
                ended: end.clone(),
            })
            .unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(row_counts(&store).iter().all(|&n| n > 0));
    while store.sweep(1_000_000, 1_000_000, 7).await.unwrap().total() > 0 {}
    assert_eq!(row_counts(&store), vec![0; 14]);
}

/// The time-ordered rows of a session: (live index, delete queue), the
/// queue's rows of both layouts.
fn time_rows(store: &RedbStore, id: &SessionId) -> (Vec<i64>, Vec<i64>) {
    let rt = store.inner.db.begin_read().unwrap();
    let times = |def| -> Vec<i64> {
        let table = rt.open_table(def).unwrap();
        let rows = table.iter().unwrap();
        rows.map(|r| r.unwrap().0.value())
            .filter(|(_, row_id)| row_id == id.as_bytes())
            .map(|(at, _)| at)
            .collect()
    };
    let mut queued = times(DELETE_QUEUE);
    let deletions = rt.open_table(DELETIONS).unwrap();
    for row in deletions.iter().unwrap() {
        let (k, v) = row.unwrap();
        if v.value() == *id.as_bytes() {
            queued.push(k.value().0);
        }
    }
    queued.sort();
    (times(LIVE), queued)
}

#[tokio::test]
async fn a_session_keeps_its_live_row_until_it_expires_and_is_queued_once_it_ends() {
    let (_dir, store, owner) = store_with_owner().await;
    let expiring = session(&owner.id, 1000);
    let ending = session(&owner.id, 1000);
    for s in [&expiring, &ending] {
        store.create_session(s, None).await.unwrap();
        assert_eq!(time_rows(&store, &s.id), (vec![4600], vec![]));
    }
    let end = logout(1100);
    store.end_sessions(&[ending.id], &end, 5000).await.unwrap();
    // The end leaves the live row to the expiry sweep, counted as ended.
    assert_eq!(time_rows(&store, &ending.id), (vec![4600], vec![5000]));
    assert_eq!(store.live_session_count().await.unwrap(), 1);
    assert_eq!(ended_live(&store), 1);
    // Expiry: the live row gives way to the record's own delete_after;
    // the ended session's row just goes.
    let stats = store.sweep(4600, 0, 100).await.unwrap();
    assert_eq!((stats.expired, stats.sessions), (1, 0));
    assert_eq!(time_rows(&store, &expiring.id), (vec![], vec![8200]));
    assert_eq!(time_rows(&store, &ending.id), (vec![], vec![5000]));
    assert_eq!(store.live_session_count().await.unwrap(), 0);
    assert_eq!(ended_live(&store), 0);
    assert_eq!(store.sweep(5000, 0, 100).await.unwrap().sessions, 1);
    assert!(store.get_session(&ending.id).await.unwrap().is_none());
    assert!(store.get_session(&expiring.id).await.unwrap().is_some());
    assert_eq!(store.sweep(8200, 0, 100).await.unwrap().sessions, 1);
    assert!(store.get_session(&expiring.id).await.unwrap().is_none());
    assert_eq!(row_counts(&store)[..6], [0; 6]);
}

/// An end by logout at `at`.
fn logout(at: UnixTime) -> Ended {
    Ended {
        at,
        reason: EndReason::Logout,
        by: Actor::Admin,
    }
}

/// (the live count, the rows of ended sessions in the live index).
async fn live_and_ended(store: &RedbStore) -> (u64, u64) {
    (store.live_session_count().await.unwrap(), ended_live(store))
}

fn ended_live(store: &RedbStore) -> u64 {
    let rt = store.inner.db.begin_read().unwrap();
    let meta = rt.open_table(META).unwrap();
    let n = meta.get(ENDED_LIVE).unwrap().map_or(0, |v| v.value());
    n
}

/// A session deleted before it expires takes its live row with it, and
/// the row stops counting as ended; a session ended after the sweep took
/// its live row was never counted.
#[tokio::test]
async fn the_ended_live_count_follows_each_way_a_live_row_goes() {
    let (dir, store, owner) = store_with_owner().await;
    let short = session(&owner.id, 1000); // expires at 4600
    let lapsed = session(&owner.id, 1000);
    let live = session(&owner.id, 2000); // expires at 5600
    for s in [&short, &lapsed, &live] {
        store.create_session(s, None).await.unwrap();
    }
    // Kept only until 2000, long before its expiry.
    store
        .end_sessions(&[short.id], &logout(1100), 2000)
        .await
        .unwrap();
    assert_eq!(live_and_ended(&store).await, (2, 1));
    assert_eq!(store.sweep(2000, 0, 100).await.unwrap().sessions, 1);
    assert_eq!(time_rows(&store, &short.id), (vec![], vec![]));
    assert_eq!(live_and_ended(&store).await, (2, 0));
    // Expired, swept, then ended: no live row to count.
    assert_eq!(store.sweep(4600, 0, 100).await.unwrap().expired, 1);
    store
        .end_sessions(&[lapsed.id], &logout(4700), 9000)
        .await
        .unwrap();
    assert_eq!(live_and_ended(&store).await, (1, 0));
    // A restart reads the same count.
    let path = dir.path().join("t.redb");
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.live_session_count().await.unwrap(), 1);
    store
        .end_sessions(&[live.id], &logout(4800), 9000)
        .await
        .unwrap();
    assert_eq!(live_and_ended(&store).await, (0, 1));
}

fn live_swept_to(store: &RedbStore) -> Option<i64> {
    let rt = store.inner.db.begin_read().unwrap();
    let meta = rt.open_table(META).unwrap();
    let to = meta.get(LIVE_SWEPT_TO).unwrap().map(|v| v.value() as i64);
    to
}

fn remove_live_row(db: &Database, s: &Session) {
    let txn = db.begin_write().unwrap();
    let removed = txn
        .open_table(LIVE)
        .unwrap()
        .remove((s.expires_at, *s.id.as_bytes()))
        .unwrap()
        .is_some();
    txn.commit().unwrap();
    assert!(removed);
}

/// The expiry sweep records how far it has gone since the open, so that
/// an end of a session due later counts its live row without reading
/// it; before that, and for sessions due by then, the row is read. A
/// sweep that stops at its batch leaves rows due by its time, and a
/// build before this one may sweep the file between two opens.
#[tokio::test]
async fn the_live_sweep_position_stands_for_the_lookup_only_where_it_holds() {
    let (dir, store, owner) = store_with_owner().await;
    assert_eq!(live_swept_to(&store), Some(i64::MIN), "a new file");
    let lapsed = session(&owner.id, 1000); // expires at 4600
    let left = session(&owner.id, 1050); // at 4650
    let later = session(&owner.id, 2000); // at 5600
    let last = session(&owner.id, 3000); // at 6600
    for s in [&lapsed, &left, &later, &last] {
        store.create_session(s, None).await.unwrap();
    }
    // One row a pass: `left` is due but keeps its row.
    assert_eq!(store.sweep(4700, 0, 1).await.unwrap().expired, 1);
    assert_eq!(live_swept_to(&store), Some(4700));
    store.sweep(4000, 0, 100).await.unwrap();
    assert_eq!(live_swept_to(&store), Some(4700), "never moves back");
    store
        .end_sessions(&[left.id, lapsed.id], &logout(4700), 9000)
        .await
        .unwrap();
    assert_eq!(
        live_and_ended(&store).await,
        (2, 1),
        "only `left` has a row"
    );
    // A build before this one sweeps `later` between two opens.
    let path = dir.path().join("t.redb");
    drop(store);
    remove_live_row(&Database::open(&path).unwrap(), &later);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(live_swept_to(&store), None, "a file with sessions");
    store
        .end_sessions(&[later.id], &logout(4800), 9000)
        .await
        .unwrap();
    assert_eq!(live_and_ended(&store).await, (1, 1), "its row was swept");
    store.sweep(4800, 0, 100).await.unwrap();
    assert_eq!(live_swept_to(&store), Some(4800));
    assert_eq!(live_and_ended(&store).await, (1, 0), "`left`'s row went");
    // Due after the position, `last`'s row is not read: taken away behind
    // the writer's back, it is still counted.
    remove_live_row(&store.inner.db, &last);
    store
        .end_sessions(&[last.id], &logout(4900), 9000)
        .await
        .unwrap();
    assert_eq!(ended_live(&store), 1);
}

/// Files written before one row per session gave a live session its
/// delete-queue row at creation; ending it now leaves that row behind,
/// and the sweep drops it without deleting the session early.
#[tokio::test]
async fn delete_queue_rows_of_older_files_are_swept_by_the_records_own_time() {
    let (_dir, store, owner) = store_with_owner().await;
    let old = session(&owner.id, 1000);
    store.create_session(&old, None).await.unwrap();
    {
        let txn = store.inner.db.begin_write().unwrap();
        txn.open_table(DELETE_QUEUE)
            .unwrap()
            .insert((old.delete_after, *old.id.as_bytes()), ())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(time_rows(&store, &old.id), (vec![4600], vec![8200]));
    let end = logout(1100);
    store.end_sessions(&[old.id], &end, 9000).await.unwrap();
    assert_eq!(time_rows(&store, &old.id), (vec![4600], vec![8200, 9000]));
    let stats = store.sweep(8200, 0, 100).await.unwrap();
    assert_eq!(stats.sessions, 0, "the stale row goes, the session stays");
    assert_eq!(time_rows(&store, &old.id), (vec![], vec![9000]));
    assert!(store.get_session(&old.id).await.unwrap().is_some());
    assert_eq!(store.sweep(9000, 0, 100).await.unwrap().sessions, 1);
    assert_eq!(row_counts(&store)[..6], [0; 6]);
}

/// Ending a session that the sweep already queued at its expiry moves its
/// deletion later and leaves the earlier queue row behind. A pass over a
/// whole batch of such rows deletes nothing, yet must say that more may
/// be due, or the engine's sweep loop stops early.
#[tokio::test]
async fn a_pass_over_stale_queue_rows_only_still_reports_more() {
    let (_dir, store, owner) = store_with_owner().await;
    let made: Vec<Session> = (0..3).map(|_| session(&owner.id, 1000)).collect();
    for s in &made {
        store.create_session(s, None).await.unwrap();
    }
    let ids: Vec<SessionId> = made.iter().map(|s| s.id).collect();
    let stats = store.sweep(4600, 0, 100).await.unwrap();
    assert_eq!((stats.expired, stats.sessions, stats.more), (3, 0, false));
    let end = Ended {
        at: 5000,
        reason: EndReason::Logout,
        by: Actor::Admin,
    };
    assert_eq!(
        store.end_sessions(&ids, &end, 9000).await.unwrap().len(),
        3,
        "expired sessions can still be ended"
    );
    for id in &ids {
        assert_eq!(time_rows(&store, id), (vec![], vec![8200, 9000]));
    }
    let stats = store.sweep(8200, 0, 3).await.unwrap();
    assert_eq!(stats.total(), 0, "stale rows only: nothing deleted");
    assert!(stats.more, "but a whole batch of rows was gone through");
    let stats = store.sweep(8200, 0, 3).await.unwrap();
    assert_eq!((stats.total(), stats.more), (0, false));
    let stats = store.sweep(9000, 0, 3).await.unwrap();
    assert_eq!((stats.sessions, stats.more), (3, true));
    assert_eq!(row_counts(&store)[..6], [0; 6]);
}

/// The sweep's order within one pass: expiry first, so a session whose
/// retention is also past goes in the same pass; a corrupt record is
/// queued at its expiry and so goes too.
#[tokio::test]
async fn an_expired_session_past_its_retention_goes_in_one_pass_even_if_corrupt() {
    let (_dir, store, owner) = store_with_owner().await;
    let whole = session(&owner.id, 1000);
    store.create_session(&whole, None).await.unwrap();
    let corrupt = SessionId::generate();
    plant_garbage(&store, &corrupt, LIVE, 4000);
    assert_eq!(store.live_session_count().await.unwrap(), 2);
    let stats = store.sweep(8200, 0, 100).await.unwrap();
    assert_eq!((stats.expired, stats.sessions), (2, 2));
    assert!(store.get_session(&whole.id).await.unwrap().is_none());
    assert!(store.get_session(&corrupt).await.unwrap().is_none());
    assert_eq!(row_counts(&store)[..6], [0; 6]);
}

fn layout_of(path: &Path) -> Option<u64> {
    let db = Database::open(path).unwrap();
    let rt = db.begin_read().unwrap();
    let meta = rt.open_table(META).unwrap();
    let layout = meta.get(LAYOUT).unwrap().map(|v| v.value());
    layout
}

fn set_layout(path: &Path, layout: Option<u64>) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        match layout {
            Some(v) => meta.insert(LAYOUT, v).unwrap(),
            None => meta.remove(LAYOUT).unwrap(),
        };
    }
    txn.commit().unwrap();
}

/// A file records its layout; one of a later layout than this build's is
/// refused with a message that says so, and an older one is marked.
#[tokio::test]
async fn the_file_records_its_layout_and_a_later_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let owner = client("owner");
    {
        let store = RedbStore::open(&path).unwrap();
        store.insert_client(&owner).await.unwrap();
    }
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION));
    // A file from before the row: read as it is, and marked.
    set_layout(&path, None);
    {
        let store = RedbStore::open(&path).unwrap();
        assert!(store.get_client(&owner.id).await.unwrap().is_some());
    }
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION));
    set_layout(&path, Some(LAYOUT_VERSION + 1));
    match RedbStore::open(&path) {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("newer Tessera"), "{msg}")
        }
        other => panic!("a later layout must be refused: {other:?}"),
    }
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION + 1), "left as it was");
}

/// A log file in `dir` holding `ops` under their sequence numbers, with a
/// torn record after them, as a crash in the middle of an append leaves.
fn write_log(dir: &tempfile::TempDir, ops: &[(u64, WriteOp)]) -> Wal {
    let path = dir.path().join("bare.wal");
    let (mut wal, _) = Wal::open(&path).unwrap();
    let mut buf = Vec::new();
    for (seq, op) in ops {
        wal::put_record(&mut buf, *seq, &op.encode().unwrap());
    }
    let mut torn = Vec::new();
    wal::put_record(&mut torn, 99, b"never acknowledged");
    buf.extend_from_slice(&torn[..torn.len() - 3]);
    wal.append_durably(&buf).unwrap();
    drop(wal);
    Wal::open(&path).unwrap().0
}

fn log_position(db: &Database) -> Option<u64> {
    let rt = db.begin_read().unwrap();
    let meta = rt.open_table(META).unwrap();
    let seq = meta.get(WAL_SEQ).unwrap();
    seq.map(|v| v.value())
}

#[test]
fn recovery_replays_what_the_last_checkpoint_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let owner = client("owner");
    let s = session(&owner.id, 1000);
    let ended = Ended {
        at: 1100,
        reason: EndReason::Logout,
        by: Actor::Admin,
    };
    // The checkpoint holds op 1 (the client) and says so.
    {
        let txn = db.begin_write().unwrap();
        let no_ends = EndIndex::default();
        let mut t = Tables::open(&txn, &no_ends).unwrap();
        insert_client(&mut t, &owner).unwrap();
        t.meta().unwrap().insert(WAL_SEQ, 1).unwrap();
        drop(t);
        txn.commit().unwrap();
    }
    let ops = vec![
        (1, WriteOp::InsertClient(owner.clone())),
        (
            2,
            WriteOp::CreateSession {
                session: s.clone(),
                refresh: Some(refresh(&s)),
            },
        ),
        (
            3,
            WriteOp::EndSessions {
                ids: vec![s.id],
                ended: ended.clone(),
                delete_after: 9000,
            },
        ),
    ];
    let mut wal = write_log(&dir, &ops);
    let (_, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    assert_eq!(found.records.len(), 3);
    assert!(found.unreadable > 0, "the torn record");
    let ends = EndIndex::default();
    assert_eq!(recover(&db, &ends, &mut wal, found).unwrap(), 4);
    assert_eq!(log_position(&db), Some(3));
    assert_eq!(wal.len(), 0, "the log is emptied once replayed");
    assert_eq!(std::fs::metadata(wal.path()).unwrap().len(), 0);
    assert!(
        !dir.path().join("bare.wal.unreadable").exists(),
        "a torn end is what a crash leaves: nothing to keep"
    );
    let rt = db.begin_read().unwrap();
    let stored = read_session(&rt, &ends, &s.id).unwrap().unwrap();
    assert_eq!(stored.ended, Some(ended));
    assert_eq!(stored.delete_after, 9000);
    // Since layout 5 the end is a row of its own; the record is as it was.
    let record = load_session(&rt.open_table(SESSIONS).unwrap(), s.id.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(record.ended, None);
    let revoked = read_active_revocations(&rt, 1000).unwrap();
    assert_eq!(revoked, vec![(s.id, s.access_cover_until)]);
    drop(rt);
    // Nothing is left to replay, and numbering goes on.
    let (mut wal, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    assert_eq!(
        recover(&db, &EndIndex::default(), &mut wal, found).unwrap(),
        4
    );
}

#[test]
fn a_log_with_whole_records_after_a_break_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let path = dir.path().join("bare.wal");
    let (mut wal, _) = Wal::open(&path).unwrap();
    let mut buf = Vec::new();
    let ops = [client("one"), client("two"), client("three")].map(WriteOp::InsertClient);
    let mut ends = Vec::new();
    for (seq, op) in (1..).zip(&ops) {
        wal::put_record(&mut buf, seq, &op.encode().unwrap());
        ends.push(buf.len());
    }
    buf[ends[0] + 20] ^= 1; // damage inside record 2
    wal.append_durably(&buf).unwrap();
    drop(wal);
    let (mut wal, found) = Wal::open(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(found.stray_seq, Some(3));
    assert_eq!(
        recover(&db, &EndIndex::default(), &mut wal, found).unwrap(),
        2
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("bare.wal.unreadable"))
            .map(|m| m.len())
            .ok(),
        Some(size),
        "kept aside, whole"
    );
    let rt = db.begin_read().unwrap();
    let clients = rt.open_table(CLIENTS).unwrap();
    assert!(load_client(&clients, "one").unwrap().is_some());
    assert!(
        load_client(&clients, "three").unwrap().is_none(),
        "not past the break"
    );
}

#[test]
fn a_log_that_skips_ops_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let mut wal = write_log(&dir, &[(3, WriteOp::InsertClient(client("late")))]);
    let (_, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    match recover(&db, &EndIndex::default(), &mut wal, found) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("ops 1 to 2 are missing"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log_position(&db), None, "nothing applied");
}

/// Every batch's commit records the log position, though it is not
/// synced: a crash leaves the database at its last checkpoint, but a
/// close without one (a writer stopped by a storage error, say) keeps
/// the unsynced commits, and replay must then skip exactly their ops.
/// (Recording the position at checkpoints only would replay them twice.)
#[test]
fn a_database_closed_without_a_checkpoint_holds_its_batches_and_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, _) = writer(&dir, &db);
    let owner = client("owner");
    let (insert, _) = client_job(owner.clone());
    w.run_batch(vec![insert]);
    w.checkpoint();
    assert_eq!(log_position(&db), Some(1));
    let s = session(&owner.id, 1000);
    let grant_id = (kind_code(GrantKind::Otp), [7; 32]);
    let (first, _) = job(WriteOp::CreateSession {
        session: s.clone(),
        refresh: None,
    });
    let (second, _) = job(WriteOp::PutGrant {
        id: grant_id,
        value: b"v".to_vec(),
        expires_at: 5000,
    });
    w.run_batch(vec![first, second]);
    drop(w);
    drop(db);
    let db = Database::open(dir.path().join("bare.redb")).unwrap();
    assert_eq!(log_position(&db), Some(3), "the unsynced commits were kept");
    let (mut wal, found) = Wal::open(&dir.path().join("bare.wal")).unwrap();
    assert_eq!(found.records.len(), 2, "the ops after the checkpoint");
    assert_eq!(
        recover(&db, &EndIndex::default(), &mut wal, found).unwrap(),
        4
    );
    let rt = db.begin_read().unwrap();
    let sessions = rt.open_table(SESSIONS).unwrap();
    assert_eq!(load_session(&sessions, s.id.as_bytes()).unwrap(), Some(s));
    let grant = load_grant(&rt.open_table(GRANTS).unwrap(), grant_id)
        .unwrap()
        .unwrap();
    assert_eq!(grant.version, 1, "not replayed over itself");
}

#[tokio::test]
async fn writes_are_logged_until_a_checkpoint_and_a_clean_close_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let options = RedbOptions {
        checkpoint_every: Duration::from_secs(3600),
        ..RedbOptions::default()
    };
    let store = RedbStore::open_with(&path, options.clone()).unwrap();
    let owner = client("owner");
    store.insert_client(&owner).await.unwrap();
    let s = session(&owner.id, 1000);
    store.create_session(&s, None).await.unwrap();
    let (_, logged) = Wal::open(&wal_path(&path)).unwrap();
    assert_eq!(
        logged.records.len(),
        2,
        "acknowledged writes are in the log"
    );
    drop(store);
    assert_eq!(std::fs::metadata(wal_path(&path)).unwrap().len(), 0);
    let store = RedbStore::open_with(&path, options).unwrap();
    assert_eq!(store.get_session(&s.id).await.unwrap(), Some(s));
}

#[tokio::test]
async fn an_op_too_large_for_the_log_is_refused_and_nothing_else_is_hurt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let store = RedbStore::open(&path).unwrap();
    let mut huge = client("huge");
    huge.name = "x".repeat(wal::MAX_RECORD + 1);
    let err = store.insert_client(&huge).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("larger than the write-ahead log takes")),
        "{err}"
    );
    let fine = client("fine");
    store.insert_client(&fine).await.unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get_client(&huge.id).await.unwrap(), None);
    assert_eq!(store.get_client(&fine.id).await.unwrap(), Some(fine));
}

/// The rows of [`REVOKED_BY_END`] (layouts 4 and 5) are swept each by its
/// own cover: a row behind a longer-covering one goes when its own cover
/// has passed. The revocations read at a start leave out rows past their
/// cover, in that table, in the earlier layout's (keyed by cover) and in
/// the ends of layout 6; those stay until their session is deleted.
#[tokio::test]
async fn revocation_rows_are_swept_by_their_own_cover() {
    let (_dir, store, owner) = store_with_owner().await;
    let [long, short, older] = [(); 3].map(|_| SessionId::generate());
    let ended = Session {
        access_cover_until: 1700,
        ..session(&owner.id, 1000)
    };
    store.create_session(&ended, None).await.unwrap();
    store
        .end_sessions(&[ended.id], &logout(1100), 2500)
        .await
        .unwrap();
    {
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
            t.append_revoked(1100, *long.as_bytes(), 5000).unwrap();
            t.append_revoked(1200, *short.as_bytes(), 1500).unwrap();
            t.revoked()
                .unwrap()
                .insert((1800, *older.as_bytes()), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let active = |now| {
        let store = &store;
        async move {
            let mut rows = store.active_revocations(now).await.unwrap();
            rows.sort();
            rows
        }
    };
    let sorted = |mut v: Vec<(SessionId, UnixTime)>| {
        v.sort();
        v
    };
    assert_eq!(
        active(1400).await,
        sorted(vec![
            (long, 5000),
            (short, 1500),
            (older, 1800),
            (ended.id, 1700)
        ])
    );
    assert_eq!(
        active(1600).await,
        sorted(vec![(long, 5000), (older, 1800), (ended.id, 1700)])
    );

    // A batch of one from each table: the earlier layout's row, and the
    // short row behind the long one.
    let stats = store.sweep(2000, 0, 1).await.unwrap();
    assert_eq!((stats.revocations, stats.more), (2, true));
    assert_eq!(revoked_rows(&store), (0, 1));
    assert_eq!(active(2000).await, vec![(long, 5000)]);
    assert_eq!(store.sweep(2000, 0, 1).await.unwrap().revocations, 0);
    assert_eq!(end_rows(&store), 1, "past its cover, before its deletion");
    // The end of layout 6 goes with its session.
    assert_eq!(store.sweep(2500, 0, 10).await.unwrap().sessions, 1);
    assert_eq!(store.sweep(5000, 0, 10).await.unwrap().revocations, 1);
    assert_eq!(revoked_rows(&store), (0, 0));
    assert!(active(0).await.is_empty());
}

/// More long-covering rows of [`REVOKED_BY_END`] in front than a pass
/// looks at: the sweep goes on from where it stopped, reaches the row
/// behind them, then starts again from the first row.
#[tokio::test]
async fn the_revocation_sweep_goes_on_from_where_it_stopped() {
    let (_dir, store, _owner) = store_with_owner().await;
    let txn = store.inner.db.begin_write().unwrap();
    {
        let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
        for cover in [5000; 40].into_iter().chain([1500]) {
            let id = SessionId::generate();
            t.append_revoked(1100, *id.as_bytes(), cover).unwrap();
        }
    }
    txn.commit().unwrap();
    assert_eq!(revoked_rows(&store), (0, 41));
    // A batch of one looks at 16 rows a pass: 16, 32, then the short row.
    let mut removed = Vec::new();
    for _ in 0..4 {
        removed.push(store.sweep(2000, 0, 1).await.unwrap().revocations);
    }
    assert_eq!(removed, vec![0, 0, 1, 0]);
    assert_eq!(revoked_rows(&store), (0, 40));
    // The last pass reached the end: the next starts from the first row.
    assert_eq!(store.sweep(5000, 0, 100).await.unwrap().revocations, 40);
    assert_eq!(revoked_rows(&store), (0, 0));
}

fn end_rows(store: &RedbStore) -> u64 {
    let rt = store.inner.db.begin_read().unwrap();
    let ends = rt.open_table(ENDS).unwrap();
    ends.len().unwrap()
}

fn audit_rows(store: &RedbStore) -> u64 {
    let rt = store.inner.db.begin_read().unwrap();
    let audit = rt.open_table(AUDIT).unwrap();
    audit.len().unwrap()
}

/// Rows in (`revoked`, `revoked_by_end`).
fn revoked_rows(store: &RedbStore) -> (u64, u64) {
    let rt = store.inner.db.begin_read().unwrap();
    let old = rt.open_table(REVOKED).unwrap().len().unwrap();
    let new = rt.open_table(REVOKED_BY_END).unwrap().len().unwrap();
    (old, new)
}

/// Rows keyed by (time, sequence) never overwrite one another: ends of the
/// same second in separate transactions, and several in one, each keep
/// their deletion row and their end row (with its revocation and audit
/// entry).
#[tokio::test]
async fn ends_of_one_second_keep_a_row_each() {
    let (_dir, store, owner) = store_with_owner().await;
    let made: Vec<Session> = (0..5).map(|_| session(&owner.id, 1000)).collect();
    for s in &made {
        store.create_session(s, None).await.unwrap();
    }
    let end = logout(1100);
    let ids: Vec<SessionId> = made.iter().map(|s| s.id).collect();
    store.end_sessions(&ids[..1], &end, 9000).await.unwrap();
    // The audit sweep passes that end's row: the next ends of the same
    // second take keys after it, and their entries are not passed.
    assert_eq!(store.sweep(0, 1101, 100).await.unwrap().audit, 1);
    store.end_sessions(&ids[1..2], &end, 9000).await.unwrap();
    store.end_sessions(&ids[2..], &end, 9000).await.unwrap();
    assert_eq!(end_rows(&store), 5);
    assert_eq!(audit_rows(&store), 0, "every entry is in its end row");
    let mut audited: Vec<SessionId> = store
        .audit_log(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.session_id)
        .collect();
    audited.sort();
    let mut later = ids[1..].to_vec();
    later.sort();
    assert_eq!(audited, later);
    let mut active = store.active_revocations(1100).await.unwrap();
    active.sort();
    let mut expected: Vec<_> = ids.iter().map(|id| (*id, 1300)).collect();
    expected.sort();
    assert_eq!(active, expected);
    for id in &ids {
        assert_eq!(time_rows(&store, id), (vec![4600], vec![9000]));
    }
    assert_eq!(store.sweep(9000, 0, 100).await.unwrap().sessions, 5);
}

/// A reader takes a session as ended only once its own snapshot holds
/// the end's row, whatever the index says by then.
#[tokio::test]
async fn a_reader_sees_an_end_only_once_its_snapshot_holds_it() {
    let (_dir, store, owner) = store_with_owner().await;
    let s = session(&owner.id, 1000);
    store.create_session(&s, None).await.unwrap();
    let before = store.inner.db.begin_read().unwrap();
    store
        .end_sessions(&[s.id], &logout(1100), 9000)
        .await
        .unwrap();
    let old = read_session(&before, &store.inner.ends, &s.id)
        .unwrap()
        .unwrap();
    assert_eq!(old.ended, None, "that snapshot predates the end");
    let now = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(now.ended, Some(logout(1100)));
    assert_eq!(now.delete_after, 9000);
}

/// Records of layouts before 5 say themselves that they ended.
#[tokio::test]
async fn sessions_ended_under_an_older_layout_stay_ended() {
    let (_dir, store, owner) = store_with_owner().await;
    let mut s = session(&owner.id, 1000);
    let r = refresh(&s);
    store.create_session(&s, Some(&r)).await.unwrap();
    s.ended = Some(logout(1100));
    s.delete_after = 9000;
    // As a build of layout 4 ended it: the record rewritten, a deletion row.
    let txn = store.inner.db.begin_write().unwrap();
    {
        let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
        t.put_session(&s).unwrap();
        t.queue_delete(9000, *s.id.as_bytes()).unwrap();
    }
    txn.commit().unwrap();
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.ended, Some(logout(1100)));
    let again = store.end_sessions(&[s.id], &logout(1200), 9000).await;
    assert_eq!(again.unwrap(), vec![]);
    let (_, rotated) = rotate_at(&store, &s, &r.hash, 1200, 1500).await;
    assert_eq!(rotated, RotateOutcome::NotCurrent);
    assert!(store
        .sessions_of_client(&owner.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.sweep(9000, 0, 100).await.unwrap().sessions, 1);
    assert_eq!(store.get_session(&s.id).await.unwrap(), None);
}

/// A file of layout 5: its ends have rows of their own in
/// [`REVOKED_BY_END`] and [`AUDIT`], which are read and swept beside the
/// entries that the ends of layout 6 hold; the audit sweep passes the
/// earlier end's row without counting an entry for it.
#[tokio::test]
async fn ends_of_layout_5_keep_their_revocation_and_audit_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let owner = client("owner");
    let (a, b) = (session(&owner.id, 1000), session(&owner.id, 1000));
    {
        let store = RedbStore::open(&path).unwrap();
        store.insert_client(&owner).await.unwrap();
        store.create_session(&a, None).await.unwrap();
        store.create_session(&b, None).await.unwrap();
        // `a` ended as a build of layout 5 ended it.
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
            let id = *a.id.as_bytes();
            let json = serde_json::to_vec(&logout(1100)).unwrap();
            t.ends()
                .unwrap()
                .insert((1100, 0), (id, 9000, json.as_slice()))
                .unwrap();
            t.append_revoked(1100, id, 1300).unwrap();
            t.append_audit(&Revocation {
                session_id: a.id,
                client_id: owner.id.clone(),
                subject: a.subject.clone(),
                ended: logout(1100),
            })
            .unwrap();
            t.queue_delete(9000, id).unwrap();
            t.count_ended_live(1).unwrap();
        }
        txn.commit().unwrap();
    }
    set_layout(&path, Some(5));
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.get_session(&a.id).await.unwrap().unwrap().ended,
        Some(logout(1100))
    );
    store
        .end_sessions(&[b.id], &logout(1200), 9000)
        .await
        .unwrap();
    assert_eq!(revoked_rows(&store), (0, 1), "no new revocation row");
    let audited = |limit| {
        let store = &store;
        async move {
            let log = store.audit_log(limit).await.unwrap();
            log.iter().map(|r| r.session_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(audited(10).await, vec![b.id, a.id]);
    assert_eq!(audited(1).await, vec![b.id]);
    let mut active = store.active_revocations(1250).await.unwrap();
    active.sort();
    let mut expected = vec![(a.id, 1300), (b.id, 1300)];
    expected.sort();
    assert_eq!(active, expected);

    let stats = store.sweep(0, 1150, 100).await.unwrap();
    assert_eq!(stats.audit, 1, "the audit row of `a`");
    assert_eq!(audited(10).await, vec![b.id]);
    assert_eq!(store.sweep(0, 1150, 100).await.unwrap().audit, 0);
    assert_eq!(store.sweep(0, 1250, 100).await.unwrap().audit, 1);
    assert!(audited(10).await.is_empty());
    // The entry is out of the audit log; the end and its revocation stay.
    assert!(store
        .get_session(&b.id)
        .await
        .unwrap()
        .unwrap()
        .ended
        .is_some());
    assert_eq!(store.active_revocations(1250).await.unwrap().len(), 2);
    drop(store);
    assert_eq!(layout_of(&path), Some(LAYOUT_VERSION));
    let store = RedbStore::open(&path).unwrap();
    let log = store.audit_log(10).await.unwrap();
    assert!(log.is_empty(), "the audit sweep's position is kept");
    let stats = store.sweep(9000, 0, 100).await.unwrap();
    assert_eq!((stats.sessions, stats.revocations), (2, 1));
    assert_eq!((end_rows(&store), revoked_rows(&store)), (0, (0, 0)));
    assert!(store.active_revocations(0).await.unwrap().is_empty());
}

/// An end whose time is behind the audit sweep's position (a clock set
/// back by more than the retention) still has its audit entry, in a row
/// of its own that the sweep deletes by its time; its revocation is in
/// its end row as any other.
#[tokio::test]
async fn an_end_behind_the_audit_sweep_keeps_its_entry() {
    let (_dir, store, owner) = store_with_owner().await;
    let (x, y) = (session(&owner.id, 1000), session(&owner.id, 1000));
    for s in [&x, &y] {
        store.create_session(s, None).await.unwrap();
    }
    store
        .end_sessions(&[x.id], &logout(2000), 9000)
        .await
        .unwrap();
    assert_eq!(store.sweep(0, 2500, 100).await.unwrap().audit, 1);
    store
        .end_sessions(&[y.id], &logout(1200), 9000)
        .await
        .unwrap();
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].session_id, log[0].ended.at), (y.id, 1200));
    assert_eq!(end_rows(&store), 2);
    assert_eq!(
        store.active_revocations(1250).await.unwrap(),
        vec![(y.id, 1300)]
    );
    assert_eq!(store.sweep(0, 1100, 100).await.unwrap().audit, 0);
    assert_eq!(store.sweep(0, 1201, 100).await.unwrap().audit, 1);
    assert!(store.audit_log(10).await.unwrap().is_empty());
}

/// A sweep and an end in one transaction: the end sees the position the
/// sweep has just moved to (the transaction's cached copy), so an end
/// behind it keeps its audit entry in a row of its own.
#[test]
fn an_end_batched_after_a_sweep_sees_the_sweeps_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, _) = writer(&dir, &db);
    let owner = client("owner");
    let (x, y) = (session(&owner.id, 1000), session(&owner.id, 1000));
    let mut first = vec![client_job(owner.clone()).0];
    for s in [&x, &y] {
        first.push(
            job(WriteOp::CreateSession {
                session: s.clone(),
                refresh: None,
            })
            .0,
        );
    }
    first.push(
        job(WriteOp::EndSessions {
            ids: vec![x.id],
            ended: logout(2000),
            delete_after: 9000,
        })
        .0,
    );
    w.run_batch(first);
    let (sweep, mut sweep_rx) = job(WriteOp::Sweep {
        now: 0,
        audit_before: 2500,
        batch: 100,
    });
    let (end, mut end_rx) = job(WriteOp::EndSessions {
        ids: vec![y.id],
        ended: logout(1200),
        delete_after: 9000,
    });
    w.run_batch(vec![sweep, end]);
    assert!(matches!(sweep_rx.try_recv(), Ok(Ok(Outcome::Swept(s))) if s.audit == 1));
    assert!(matches!(end_rx.try_recv(), Ok(Ok(Outcome::Ended(e))) if e.len() == 1));
    let rt = db.begin_read().unwrap();
    let log = read_audit_log(&rt, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].session_id, log[0].ended.at), (y.id, 1200));
    assert_eq!(rt.open_table(AUDIT).unwrap().len().unwrap(), 1);
}

/// An end row that cannot be decoded neither stops the start nor lets its
/// session's tokens through: its revocation lasts until the row's own
/// deletion time. The audit log leaves it out; the audit sweep passes it.
#[tokio::test]
async fn an_undecodable_end_row_counts_as_revoked_until_its_deletion() {
    let (_dir, store, _owner) = store_with_owner().await;
    let id = SessionId::generate();
    let txn = store.inner.db.begin_write().unwrap();
    {
        let mut t = Tables::open(&txn, &store.inner.ends).unwrap();
        t.ends()
            .unwrap()
            .insert((1100, 0), (*id.as_bytes(), 9000, b"{not json".as_slice()))
            .unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(
        store.active_revocations(1000).await.unwrap(),
        vec![(id, 9000)]
    );
    assert!(store.audit_log(10).await.unwrap().is_empty());
    let stats = store.sweep(0, 2000, 100).await.unwrap();
    assert_eq!(stats.audit, 0);
    assert!(!stats.more);
}

/// The index entry of a deleted session outlives it by the grace period,
/// for readers whose snapshot still holds the record; then it goes.
#[test]
fn a_deleted_sessions_index_entry_goes_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let db = bare_db(&dir);
    let (mut w, _) = writer(&dir, &db);
    let owner = client("owner");
    let s = session(&owner.id, 1000);
    let (first, _) = client_job(owner.clone());
    let (create, _) = job(WriteOp::CreateSession {
        session: s.clone(),
        refresh: None,
    });
    let (end, _) = job(WriteOp::EndSessions {
        ids: vec![s.id],
        ended: logout(1100),
        delete_after: 2000,
    });
    w.run_batch(vec![first, create, end]);
    let indexed = |w: &Writer| w.ends.read().unwrap().contains_key(s.id.as_bytes());
    assert!(indexed(&w));
    let (sweep, answer) = job(WriteOp::Sweep {
        now: 2000,
        audit_before: 0,
        batch: 100,
    });
    w.run_batch(vec![sweep]);
    match answer.blocking_recv().unwrap().unwrap() {
        Outcome::Swept(stats) => assert_eq!(stats.sessions, 1),
        _ => panic!("a sweep answers with its stats"),
    }
    let rt = db.begin_read().unwrap();
    assert_eq!(rt.open_table(ENDS).unwrap().len().unwrap(), 0);
    assert!(indexed(&w), "kept for the grace period");
    w.bury();
    assert!(indexed(&w), "not yet due");
    for (at, _) in w.graveyard.iter_mut() {
        *at = at.checked_sub(END_INDEX_GRACE).unwrap();
    }
    w.bury();
    assert!(!indexed(&w));
}
