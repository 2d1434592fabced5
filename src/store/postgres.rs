//! The PostgreSQL backend, for a fleet of Tessera nodes sharing one
//! database. Schema: `migrations/` (embedded in the binary, applied by
//! [`PgStore::migrate`]).
//!
//! Records are stored as the JSON of the same serde types the embedded
//! store writes (`body` columns); the columns beside them copy the fields
//! that queries filter, order or lock on, and every write keeps both in step.
//!
//! Many nodes write at once, so every conditional operation is decided by
//! the database, under a row lock, never by a read followed by a write:
//!
//! - `rotate_refresh` locks the refresh row (`SELECT … FOR UPDATE`), then
//!   raises the session's cover with `UPDATE … WHERE ended IS NULL`, which
//!   locks the session row and re-checks it after any concurrent end.
//! - `end_sessions` locks its rows in id order and updates only those with
//!   `ended IS NULL`, so no session is ended (or audited) twice and two
//!   overlapping calls cannot deadlock.
//! - `extend_access_cover` is one `UPDATE … WHERE ended IS NULL`.
//! - `swap_grant` is `UPDATE`/`DELETE … WHERE version = $expected`, and
//!   `update_client` is `UPDATE … WHERE secret_version = $expected` (read
//!   from `body`).
//! - `create_session` inserts only if the client row exists, locking it
//!   `FOR KEY SHARE` in the same statement: a concurrent `DELETE` of the
//!   client waits for the insert to commit (and the session is then there
//!   for the engine to end), or commits first and the insert finds no
//!   client (`Missing("client")`).
//! - Reference uniqueness among live sessions is a partial unique index.
//!
//! A write that changes more than one row is one statement or one
//! transaction. Acknowledged writes are committed (durable while the
//! server's `synchronous_commit` is not `off`; [`PgStore::connect`] turns it
//! back on for its own sessions if it is).

mod clients;
mod codec;
mod feed;
mod fleet;
mod grants;
mod sessions;
mod setup;
mod upkeep;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use super::{
    ChangeFeed, EndedSession, Grant, GrantKind, RotateOutcome, Store, StoreError, StoreResult,
    SweepStats,
};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{
    Client, Ended, RefreshRecord, Revocation, Session, SessionFilter, TokenHash,
};

pub use fleet::PgVault;
pub use setup::PgOptions;

/// The PostgreSQL store. Clones share one connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    op_timeout: Duration,
}

impl std::fmt::Debug for PgStore {
    /// The connection URL may carry a password, so only pool figures show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL; a schema may be chosen with
    /// `?options=-c%20search_path%3Dname`, and must then exist).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects with every pooled connection working in `schema`, which is
    /// created if missing (a lower-case SQL identifier: `[a-z_][a-z0-9_]*`).
    /// The `search_path` is a startup parameter of each connection, so it
    /// costs no extra round trip.
    pub async fn connect_with_schema(url: &str, schema: &str) -> StoreResult<PgStore> {
        let options = PgOptions {
            schema: Some(schema.to_owned()),
            ..PgOptions::default()
        };
        Self::connect_with(url, options).await
    }

    /// Connects with explicit pool, timeout and schema settings.
    pub async fn connect_with(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let op_timeout = options.op_timeout;
        let pool = setup::connect(url, options).await?;
        Ok(PgStore { pool, op_timeout })
    }

    /// Applies the embedded migrations that are not applied yet. Safe to run
    /// from several nodes at once: sqlx's migrator holds a PostgreSQL
    /// advisory lock while it reads and applies them, so one node applies
    /// each migration and the others wait, then find it applied.
    pub async fn migrate(&self) -> StoreResult<()> {
        setup::migrate(&self.pool).await
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one store operation, bounded by the operation timeout so that a
    /// database that stopped answering yields `Unavailable` rather than a hang.
    async fn run<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.op_timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::error!(op, timeout = ?self.op_timeout, "postgres operation timed out");
                Err(StoreError::Unavailable(format!(
                    "{op}: no answer from the database within {:?}",
                    self.op_timeout
                )))
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run("ping", upkeep::ping(&self.pool)).await
    }

    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        Some(Box::new(feed::start(&self.pool)))
    }

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.run("insert_client", clients::insert(&self.pool, client))
            .await
    }

    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool> {
        let work = clients::update(&self.pool, client, expected_version);
        self.run("update_client", work).await
    }

    async fn get_client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        self.run("get_client", clients::get(&self.pool, id)).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.run("list_clients", clients::list(&self.pool)).await
    }

    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        self.run("delete_client", clients::delete(&self.pool, id))
            .await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()> {
        let work = sessions::create_session(&self.pool, session, refresh);
        self.run("create_session", work).await
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.run("get_session", sessions::get_session(&self.pool, id))
            .await
    }

    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>> {
        let work = sessions::find_by_reference(&self.pool, client, reference);
        self.run("find_session_by_reference", work).await
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        let work = sessions::list_sessions(&self.pool, filter, now);
        self.run("list_sessions", work).await
    }

    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
        let work = sessions::extend_access_cover(&self.pool, id, until);
        self.run("extend_access_cover", work).await
    }

    async fn get_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>> {
        self.run("get_refresh", sessions::get_refresh(&self.pool, hash))
            .await
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    ) -> StoreResult<RotateOutcome> {
        let work = sessions::rotate_refresh(&self.pool, old, new, now, access_exp);
        self.run("rotate_refresh", work).await
    }

    async fn end_sessions(
        &self,
        ids: &[SessionId],
        ended: &Ended,
        delete_after: UnixTime,
    ) -> StoreResult<Vec<EndedSession>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let work = sessions::end_sessions(&self.pool, ids, ended, delete_after);
        self.run("end_sessions", work).await
    }

    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>> {
        let work = sessions::sessions_of_subject(&self.pool, subject, client);
        self.run("sessions_of_subject", work).await
    }

    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>> {
        let work = sessions::sessions_of_client(&self.pool, client);
        self.run("sessions_of_client", work).await
    }

    async fn active_revocations(&self, now: UnixTime) -> StoreResult<Vec<(SessionId, UnixTime)>> {
        let work = upkeep::active_revocations(&self.pool, now);
        self.run("active_revocations", work).await
    }

    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<Revocation>> {
        self.run("audit_log", upkeep::audit_log(&self.pool, limit))
            .await
    }

    async fn sweep(
        &self,
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    ) -> StoreResult<SweepStats> {
        let work = upkeep::sweep(&self.pool, now, audit_before, batch);
        self.run("sweep", work).await
    }

    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        let work = grants::put(&self.pool, kind, key, value, expires_at);
        self.run("put_grant", work).await
    }

    async fn get_grant(&self, kind: GrantKind, key: &TokenHash) -> StoreResult<Option<Grant>> {
        self.run("get_grant", grants::get(&self.pool, kind, key))
            .await
    }

    async fn swap_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        expected_version: u64,
        new_value: Option<&[u8]>,
    ) -> StoreResult<bool> {
        let work = grants::swap(&self.pool, kind, key, expected_version, new_value);
        self.run("swap_grant", work).await
    }

    async fn live_session_count(&self) -> StoreResult<u64> {
        self.run("live_session_count", upkeep::live_count(&self.pool))
            .await
    }
}
