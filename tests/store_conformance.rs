//! Runs the shared store conformance suite against the embedded redb backend,
//! one fresh database file per test.

use std::sync::Arc;

use tessera::store::faulty::FaultyStore;
use tessera::store::redb::RedbStore;
use tessera::store::Store;

/// A fresh redb store that owns its temporary directory (removed after
/// the store is dropped).
async fn fresh_store() -> Option<Arc<dyn Store>> {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = RedbStore::open(&dir.path().join("tessera.redb")).expect("open redb store");
    Some(Arc::new(FaultyStore::new(Arc::new(store)).keeping(dir)))
}

tessera::store_conformance_tests!(fresh_store);

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
        c::an_audit_entry_outlives_its_session_until_its_cutoff(s()),
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
