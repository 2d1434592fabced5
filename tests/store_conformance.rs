//! Runs the shared store conformance suite against the embedded redb backend,
//! one fresh database file per test.

use std::sync::Arc;

use async_trait::async_trait;
use tempfile::TempDir;
use tessera::core::clock::UnixTime;
use tessera::core::ids::{ClientId, SessionId, Subject};
use tessera::core::model::{
    Client, Ended, RefreshRecord, Revocation, Session, SessionFilter, TokenHash,
};
use tessera::store::redb::RedbStore;
use tessera::store::{
    EndedSession, Grant, GrantKind, RotateOutcome, Store, StoreResult, SweepStats,
};

/// A redb store that owns its temporary directory. Fields drop in order:
/// the store (closing the file) before the directory is removed.
struct TempRedb {
    store: RedbStore,
    _dir: TempDir,
}

async fn fresh_store() -> Option<Arc<dyn Store>> {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = RedbStore::open(&dir.path().join("tessera.redb")).expect("open redb store");
    Some(Arc::new(TempRedb { store, _dir: dir }))
}

tessera::store_conformance_tests!(fresh_store);

#[async_trait]
impl Store for TempRedb {
    async fn ping(&self) -> StoreResult<()> {
        self.store.ping().await
    }
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.store.insert_client(client).await
    }
    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool> {
        self.store.update_client(client, expected_version).await
    }
    async fn get_client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        self.store.get_client(id).await
    }
    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.store.list_clients().await
    }
    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        self.store.delete_client(id).await
    }
    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()> {
        self.store.create_session(session, refresh).await
    }
    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.store.get_session(id).await
    }
    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>> {
        self.store
            .find_session_by_reference(client, reference)
            .await
    }
    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.store.list_sessions(filter, now).await
    }
    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
        self.store.extend_access_cover(id, until).await
    }
    async fn get_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>> {
        self.store.get_refresh(hash).await
    }
    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    ) -> StoreResult<RotateOutcome> {
        self.store.rotate_refresh(old, new, now, access_exp).await
    }
    async fn end_sessions(
        &self,
        ids: &[SessionId],
        ended: &Ended,
        delete_after: UnixTime,
    ) -> StoreResult<Vec<EndedSession>> {
        self.store.end_sessions(ids, ended, delete_after).await
    }
    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>> {
        self.store.sessions_of_subject(subject, client).await
    }
    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>> {
        self.store.sessions_of_client(client).await
    }
    async fn active_revocations(&self, now: UnixTime) -> StoreResult<Vec<(SessionId, UnixTime)>> {
        self.store.active_revocations(now).await
    }
    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<Revocation>> {
        self.store.audit_log(limit).await
    }
    async fn sweep(
        &self,
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    ) -> StoreResult<SweepStats> {
        self.store.sweep(now, audit_before, batch).await
    }
    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        self.store.put_grant(kind, key, value, expires_at).await
    }
    async fn get_grant(&self, kind: GrantKind, key: &TokenHash) -> StoreResult<Option<Grant>> {
        self.store.get_grant(kind, key).await
    }
    async fn swap_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        expected_version: u64,
        new_value: Option<&[u8]>,
    ) -> StoreResult<bool> {
        self.store
            .swap_grant(kind, key, expected_version, new_value)
            .await
    }
    async fn live_session_count(&self) -> StoreResult<u64> {
        self.store.live_session_count().await
    }
}

/// The suite's bodies can also share one database, as a PostgreSQL run
/// would: run them all, concurrently, against a single store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_suite_on_one_shared_store() {
    use tessera::store::conformance as c;
    let store = fresh_store().await.expect("store");
    let s = || store.clone();
    tokio::join!(
        c::clients_crud(s()),
        c::client_update_compares_version(s()),
        c::client_concurrent_updates_one_wins(s()),
        c::session_create_and_get(s()),
        c::session_for_missing_client_is_refused(s()),
        c::list_sessions_filters_and_orders(s()),
        c::reference_unique_among_live_sessions(s()),
        c::rotate_refresh_once(s()),
        c::rotate_refresh_refuses_ended_session(s()),
        c::extend_access_cover_raises_only(s()),
        c::end_sessions_is_idempotent(s()),
        c::sessions_of_subject_and_client_exclude_ended(s()),
        c::audit_log_is_newest_first(s()),
        c::sweep_deletes_what_expired(s()),
        c::sweep_respects_batch(s()),
        c::live_session_count_tracks_lifecycle(s()),
        c::concurrent_creates_all_land(s()),
        c::grant_put_and_get(s()),
        c::grant_kinds_are_separate(s()),
        c::grant_swap_compares_version(s()),
        c::grant_concurrent_swaps_one_wins(s()),
        c::grant_sweep_deletes_only_expired(s()),
        c::grant_sweep_respects_batch(s()),
    );
}
