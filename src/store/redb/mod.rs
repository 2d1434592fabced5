//! The embedded backend: one redb file, written by a single thread that
//! group-commits concurrent writes with a durable (fsync) commit.
//!
//! Layout (sessions and refresh tokens are compact binary records, see
//! `store::compact`, which also reads the JSON they were written as
//! before; other records are JSON so that fields added later read back
//! with their defaults; every other table is an index kept in step with
//! the records inside the same write transaction):
//!
//! | table                 | key                          | value        |
//! |-----------------------|------------------------------|--------------|
//! | `clients`             | client id                    | JSON client  |
//! | `sessions`            | session id                   | session      |
//! | `sessions_by_subject` | (subject, session id)        | ()           |
//! | `sessions_by_client`  | (client id, session id)      | ()           |
//! | `live_by_expiry`      | (expires_at, session id)     | ()           |
//! | `delete_queue`        | (delete_after, session id)   | ()           |
//! | `references`          | (client id, reference hash)  | session id   |
//! | `refresh`             | token hash                   | record       |
//! | `refresh_by_expiry`   | (expires_at, token hash)     | ()           |
//! | `revoked`             | (cover_until, session id)    | ()           |
//! | `audit`               | (at, sequence)               | JSON record  |
//! | `grants`              | (kind code, key)             | (version, expires_at, value) |
//! | `grants_by_expiry`    | (expires_at, kind code, key) | ()           |
//!
//! `live_by_expiry` holds only sessions that are not ended, and loses a row
//! when the sweeper passes its expiry, so its length is the live count.
//! `references` holds only sessions that are not ended.
//! A grant's value is opaque bytes (the engine's JSON), so its row is a
//! tuple rather than a JSON record; `grants_by_expiry` holds exactly one row
//! per grant, under its current `expires_at`.

mod read_ops;
mod tables;
#[cfg(test)]
mod tests;
mod write_ops;
mod writer;

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::compact;
use super::{
    EndedSession, Grant, GrantKind, RotateOutcome, Store, StoreError, StoreResult, SweepStats,
};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{
    Client, Ended, RefreshRecord, RefreshState, Revocation, Session, SessionFilter, TokenHash,
};

type Id = [u8; 16];
type Bytes = &'static [u8];
type Keyed<K> = (&'static str, K);
/// A grant's key: (kind code, key).
type GrantId = (u8, TokenHash);
/// A grant's row: (version, expires_at, value).
type GrantRow = (u64, i64, Bytes);

use read_ops::*;
use tables::*;
use write_ops::*;
use writer::*;

// ---------------------------------------------------------------------------
// the store

struct Inner {
    db: Arc<Database>,
    queue: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Drop for Inner {
    /// Waits for the writer to drain and drop its handle on the database,
    /// so the file can be opened again as soon as the store is gone.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("redb writer thread panicked");
            }
        }
    }
}

/// The embedded store. Clones share one database and one writer.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("commits", &self.commit_count())
            .finish_non_exhaustive()
    }
}

/// Creates the file owner-only before redb opens it: it holds client secret
/// hashes and token hashes.
fn prepare_file(path: &Path) -> StoreResult<()> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).ctx("create database file")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .ctx("restrict database file mode")?;
    }
    Ok(())
}

fn create_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().ctx("begin write")?;
    Tables::open(&txn).map(drop)?;
    txn.commit().ctx("commit table creation")
}

/// Page cache of [`RedbStore::open`]: 64 MiB, which holds the interior
/// B-tree pages of a multi-gigabyte file.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl RedbStore {
    /// Opens the database at `path`, creating the file and its tables if
    /// missing, with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: &Path) -> StoreResult<RedbStore> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes`. redb's own
    /// default is 1 GiB, which it fills under sustained writes and the
    /// allocator then keeps: the process's memory grows to that size.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> StoreResult<RedbStore> {
        prepare_file(path)?;
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(cache_bytes)
                .create(path)
                .ctx("open database")?,
        );
        create_tables(&db)?;
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = {
            let (db, commits) = (db.clone(), commits.clone());
            std::thread::Builder::new()
                .name("tessera-redb-writer".into())
                .spawn(move || writer_loop(db, rx, commits))
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot start redb writer thread");
                    StoreError::Unavailable(format!("start writer: {e}"))
                })?
        };
        let inner = Inner {
            db,
            queue: Some(queue),
            writer: Some(writer),
            commits,
        };
        Ok(RedbStore {
            inner: Arc::new(inner),
        })
    }

    /// Write transactions committed so far (one per group commit).
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    async fn write<T, F>(&self, name: &'static str, run: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Tables<'_>) -> StoreResult<T> + Send + 'static,
    {
        let queue = self.inner.queue.as_ref().ok_or_else(writer_gone)?;
        let (op, answer) = job(name, run);
        queue.send(op).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// A point lookup (one record, or one index row and its record), run
    /// on the calling task. It reads a few B-tree pages, nearly always in
    /// redb's page cache or the OS's: microseconds. Handing it to the
    /// blocking pool, as [`RedbStore::read`] does for scans, costs two
    /// thread wake-ups, which under load took more CPU than the lookup
    /// itself (`bench/profile 10 revoke`). A read transaction never waits
    /// for the writer's commit.
    fn lookup<T>(&self, run: impl FnOnce(&ReadTransaction) -> StoreResult<T>) -> StoreResult<T> {
        let rt = self.inner.db.begin_read().ctx("begin read")?;
        run(&rt)
    }

    async fn read<T, F>(&self, name: &'static str, run: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> StoreResult<T> + Send + 'static,
    {
        let db = self.inner.db.clone();
        let task = tokio::task::spawn_blocking(move || {
            let rt = db.begin_read().ctx("begin read")?;
            run(&rt)
        });
        task.await.map_err(|e| {
            tracing::error!(op = name, error = %e, "redb read task failed");
            StoreError::Unavailable(format!("{name}: {e}"))
        })?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn ping(&self) -> StoreResult<()> {
        if self.inner.queue.as_ref().is_none_or(|q| q.is_closed()) {
            return Err(writer_gone());
        }
        self.read("ping", |rt| {
            let t = rt.open_table(CLIENTS).ctx("open clients")?;
            t.first().ctx("ping read")?;
            Ok(())
        })
        .await
    }

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        let c = client.clone();
        self.write("insert_client", move |t| insert_client(t, &c))
            .await
    }

    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool> {
        let c = client.clone();
        self.write("update_client", move |t| {
            update_client(t, &c, expected_version)
        })
        .await
    }

    async fn get_client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        self.lookup(|rt| load_client(&rt.open_table(CLIENTS).ctx("open clients")?, id.as_str()))
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read("list_clients", read_list_clients).await
    }

    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        let id = id.clone();
        self.write("delete_client", move |t| delete_client(t, &id))
            .await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()> {
        let (s, r) = (session.clone(), refresh.cloned());
        self.write("create_session", move |t| create_session(t, &s, r.as_ref()))
            .await
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.lookup(|rt| {
            load_session(
                &rt.open_table(SESSIONS).ctx("open sessions")?,
                id.as_bytes(),
            )
        })
    }

    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>> {
        self.lookup(|rt| read_by_reference(rt, client, reference))
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        let filter = filter.clone();
        self.read("list_sessions", move |rt| {
            read_list_sessions(rt, &filter, now)
        })
        .await
    }

    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
        let id = *id;
        self.write("extend_access_cover", move |t| {
            extend_access_cover(t, &id, until)
        })
        .await
    }

    async fn get_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>> {
        self.lookup(|rt| load_refresh(&rt.open_table(REFRESH).ctx("open refresh")?, hash))
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    ) -> StoreResult<RotateOutcome> {
        let (old, new) = (*old, new.clone());
        self.write("rotate_refresh", move |t| {
            rotate_refresh(t, &old, &new, now, access_exp)
        })
        .await
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
        let (ids, ended) = (ids.to_vec(), ended.clone());
        self.write("end_sessions", move |t| {
            end_sessions(t, &ids, &ended, delete_after)
        })
        .await
    }

    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>> {
        let (subject, client) = (subject.clone(), client.cloned());
        self.read("sessions_of_subject", move |rt| {
            read_not_ended(rt, BY_SUBJECT, subject.as_str(), client.as_ref())
        })
        .await
    }

    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>> {
        let client = client.clone();
        self.read("sessions_of_client", move |rt| {
            read_not_ended(rt, BY_CLIENT, client.as_str(), None)
        })
        .await
    }

    async fn active_revocations(&self, now: UnixTime) -> StoreResult<Vec<(SessionId, UnixTime)>> {
        self.read("active_revocations", move |rt| {
            read_active_revocations(rt, now)
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<Revocation>> {
        self.read("audit_log", move |rt| read_audit_log(rt, limit))
            .await
    }

    async fn sweep(
        &self,
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    ) -> StoreResult<SweepStats> {
        self.write("sweep", move |t| sweep(t, now, audit_before, batch))
            .await
    }

    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        let (id, value) = ((kind_code(kind), *key), value.to_vec());
        self.write("put_grant", move |t| put_grant(t, id, &value, expires_at))
            .await
    }

    async fn get_grant(&self, kind: GrantKind, key: &TokenHash) -> StoreResult<Option<Grant>> {
        let id = (kind_code(kind), *key);
        self.lookup(|rt| load_grant(&rt.open_table(GRANTS).ctx("open grants")?, id))
    }

    async fn swap_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        expected_version: u64,
        new_value: Option<&[u8]>,
    ) -> StoreResult<bool> {
        let (id, new_value) = ((kind_code(kind), *key), new_value.map(<[u8]>::to_vec));
        self.write("swap_grant", move |t| {
            swap_grant(t, id, expected_version, new_value.as_deref())
        })
        .await
    }

    async fn live_session_count(&self) -> StoreResult<u64> {
        self.read("live_session_count", |rt| {
            rt.open_table(LIVE)
                .ctx("open live_by_expiry")?
                .len()
                .ctx("count live sessions")
        })
        .await
    }
}
