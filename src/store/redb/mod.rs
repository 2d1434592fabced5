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
//! | `deletions`           | (delete_after, sequence)     | session id   |
//! | `delete_queue`        | (delete_after, session id)   | () (layouts before 4) |
//! | `references`          | (client id, reference hash)  | session id   |
//! | `refresh`             | token hash                   | record       |
//! | `refresh_by_expiry`   | (expires_at, token hash)     | ()           |
//! | `revoked`             | (cover_until, session id)    | () (layouts before 4) |
//! | `revoked_by_end`      | (ended at, sequence)         | (session id, cover_until) (layouts 4–5) |
//! | `audit`               | (at, sequence)               | JSON record (layouts before 6) |
//! | `ends`                | (ended at, sequence)         | (session id, delete_after, JSON end, cover and audit entry) |
//! | `grants`              | (kind code, key)             | (version, expires_at, value) |
//! | `grants_by_expiry`    | (expires_at, kind code, key) | ()           |
//!
//! `live_by_expiry` holds every session that has not expired, ended or
//! not: an end leaves the row to the expiry sweep (or the deletion), and
//! `meta`/`ended_live` counts such rows, so the table's length less that
//! count is the live count; `meta`/`live_swept_to`, the latest time the
//! expiry sweep has used since the open, spares an end the lookup of the
//! row of a session due after it. A session is queued in `deletions` once it
//! has ended or expired. A queue row whose time is not the record's
//! `delete_after` is stale (the deletion moved later) and the sweep drops
//! it without deleting the session.
//! Rows written on every end are keyed by time and a sequence within the
//! second, so the ends of one batch append to the same leaf of each table
//! (a key with the session id would put each end, in random order, on a
//! page of its own): the deletion row under its `delete_after`, and the
//! end itself under the end's time (layout 5): the session record is not
//! rewritten, which in random order would put each end on a page of its
//! own; an index in memory (`tables::EndIndex`, built from `ends` at
//! open) finds a session's end row, and every read of a session goes
//! through it. The end's row is also its revocation (the session's cover,
//! loaded at start while it lasts; the row goes with the session, never
//! before the cover) and its audit entry (layout 6; the audit sweep
//! passes the entries older than the retention with a cursor, behind
//! which the audit log does not read). Tables of earlier layouts
//! (`revoked_by_end` and `audit` rows of their own) are read and swept
//! until they are empty.
//! `references` holds only sessions that are not ended.
//! A grant's value is opaque bytes (the engine's JSON), so its row is a
//! tuple rather than a JSON record; `grants_by_expiry` holds exactly one row
//! per grant, under its current `expires_at`.

mod ops;
mod read_ops;
mod tables;
#[cfg(test)]
mod tests;
mod wal;
mod write_ops;
mod writer;

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::compact;
use super::{
    EndedSession, Grant, GrantKind, RotateOutcome, Store, StoreError, StoreResult, SweepStats,
};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{
    Actor, Client, EndReason, Ended, RefreshRecord, RefreshState, Revocation, Session,
    SessionFilter, TokenHash,
};

type Id = [u8; 16];
type Bytes = &'static [u8];
type Keyed<K> = (&'static str, K);
/// A grant's key: (kind code, key).
type GrantId = (u8, TokenHash);
/// A grant's row: (version, expires_at, value).
type GrantRow = (u64, i64, Bytes);

use ops::{FromOutcome, WriteOp};
use read_ops::*;
use tables::*;
use wal::{Recovered, Wal};
use write_ops::*;
pub use writer::DEFAULT_CHECKPOINT_EVERY;
use writer::*;

// ---------------------------------------------------------------------------
// the store

struct Inner {
    db: Arc<Database>,
    /// Shared with the writer.
    ends: Arc<EndIndex>,
    queue: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    /// See [`Writer`]: set after a storage error that a restart repairs.
    broken: Arc<AtomicBool>,
    /// Whether the writer's log appends run in the background, so that
    /// work handed over ([`Store::offload`]) fills their wait.
    offload: Arc<AtomicBool>,
}

impl Drop for Inner {
    /// Waits for the writer to drain, checkpoint and drop its handle on the
    /// database, so the file can be opened again as soon as the store is
    /// gone.
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

/// Creates the missing tables and checks the file's layout
/// ([`LAYOUT_VERSION`]): a file of a later layout is refused, an earlier
/// one is marked as this build's.
fn create_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().ctx("begin write")?;
    {
        let no_ends = EndIndex::default();
        let mut tables = Tables::open(&txn, &no_ends)?;
        tables.open_all()?;
        let meta = tables.meta()?;
        let layout = meta.get(LAYOUT).ctx("read layout")?.map(|v| v.value());
        match layout {
            Some(found) if found > LAYOUT_VERSION => {
                return Err(StoreError::Unavailable(format!(
                    "the database was written by a newer Tessera (layout {found}; this build \
                     knows layouts up to {LAYOUT_VERSION}): run that version or a later one"
                )));
            }
            Some(found) if found == LAYOUT_VERSION => {}
            _ => {
                meta.insert(LAYOUT, LAYOUT_VERSION).ctx("write layout")?;
            }
        }
        // Only the sweeps since this open count ([`LIVE_SWEPT_TO`]): a file
        // without sessions has no live row a sweep took.
        if tables.sessions()?.is_empty().ctx("count sessions")? {
            tables
                .meta()?
                .insert(LIVE_SWEPT_TO, i64::MIN as u64)
                .ctx("write live sweep position")?;
        } else {
            tables
                .meta()?
                .remove(LIVE_SWEPT_TO)
                .ctx("clear live sweep position")?;
        }
    }
    txn.commit().ctx("commit table creation")
}

/// The write-ahead log of the database at `path`: `tessera.redb` →
/// `tessera.wal`.
pub fn wal_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("wal")
}

fn wal_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// Replays the ops of the log that the last checkpoint does not hold, in
/// one durable transaction, then empties the log. Returns the sequence
/// number of the next op.
fn recover(db: &Database, ends: &EndIndex, wal: &mut Wal, found: Recovered) -> StoreResult<u64> {
    let applied = {
        let rt = db.begin_read().ctx("begin read")?;
        let meta = rt.open_table(META).ctx("open meta")?;
        let seq = meta.get(WAL_SEQ).ctx("read log position")?;
        seq.map(|v| v.value()).unwrap_or(0)
    };
    let last_seen = found.records.last().map_or(0, |(seq, _)| *seq);
    if found.stray_seq.is_some_and(|s| s > applied.max(last_seen)) {
        // Kept for an operator: records numbered past the readable ones
        // mean damage, or an append a crash cut short in an unlucky order
        // (never acknowledged).
        let copy = wal.path().with_extension("wal.unreadable");
        let kept = std::fs::copy(wal.path(), &copy).map(|_| ());
        tracing::warn!(
            bytes = found.unreadable,
            wal = %wal.path().display(),
            copy = %copy.display(),
            copied = kept.is_ok(),
            "the write-ahead log holds whole records after a break in it: damage, or a write \
             cut short by a crash (never acknowledged); they are ignored, and the whole log is \
             copied aside"
        );
    } else if found.unreadable > 0 {
        tracing::info!(
            bytes = found.unreadable,
            wal = %wal.path().display(),
            "ignoring the end of the write-ahead log after its last record: older records of \
             the reused file, or a write cut short by a crash (never acknowledged)"
        );
    }
    let pending: Vec<(u64, Vec<u8>)> = found
        .records
        .into_iter()
        .filter(|(seq, _)| *seq > applied)
        .collect();
    if let Some((first, _)) = pending.first() {
        if *first != applied + 1 {
            tracing::error!(
                applied,
                first,
                wal = %wal.path().display(),
                "the write-ahead log does not continue from the database's last checkpoint"
            );
            return Err(StoreError::Corrupt {
                table: "write-ahead log",
                detail: format!(
                    "ops {} to {} are missing from {}; move it aside to start without its ops",
                    applied + 1,
                    first - 1,
                    wal.path().display()
                ),
            });
        }
        let mut txn = db.begin_write().ctx("begin write")?;
        txn.set_durability(Durability::Immediate)
            .ctx("set durability")?;
        let changes = {
            let mut tables = Tables::open(&txn, ends)?;
            for (seq, record) in &pending {
                let op = WriteOp::decode(record)?;
                match op.apply(&mut tables) {
                    Ok(_) | Err(StoreError::Conflict(_) | StoreError::Missing(_)) => {}
                    Err(e) => {
                        tracing::error!(seq, op = op.name(), error = %e, "replaying the write-ahead log failed");
                        return Err(e);
                    }
                }
            }
            let last = pending.last().map_or(applied, |(seq, _)| *seq);
            tables
                .meta()?
                .insert(WAL_SEQ, last)
                .ctx("write log position")?;
            std::mem::take(&mut tables.end_changes)
        };
        let removed = publish_ends(ends, changes);
        txn.commit().ctx("commit replayed writes")?;
        // No reader yet: deleted sessions leave the index at once.
        let mut map = ends
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in removed {
            map.remove(&id);
        }
        tracing::info!(
            ops = pending.len(),
            wal = %wal.path().display(),
            "replayed the writes the last checkpoint did not hold"
        );
    }
    if wal.len() > 0 || found.unreadable > 0 {
        // Synced, unlike a checkpoint's emptying: what follows the records
        // may hold records with the sequence numbers the new ones will take.
        wal.clear_durably()
            .map_err(|e| wal_error(wal.path(), "emptying the write-ahead log", e))?;
    }
    Ok(applied.max(last_seen) + 1)
}

/// [`EndIndex`] from the [`ENDS`] rows the database holds.
fn load_end_index(db: &Database) -> StoreResult<EndIndex> {
    let rt = db.begin_read().ctx("begin read")?;
    let t = rt.open_table(ENDS).ctx("open ends")?;
    let mut index = std::collections::HashMap::with_capacity(t.len().ctx("count ends")? as usize);
    for row in t.iter().ctx("scan ends")? {
        let (key, row) = row.ctx("scan ends")?;
        index.insert(row.value().0, key.value());
    }
    Ok(std::sync::RwLock::new(index))
}

/// Puts the new ends of a logged transaction into `index`, and returns
/// the sessions it deleted: their entries are for the caller to remove
/// once no reader needs them (see [`EndIndex`]).
fn publish_ends(index: &EndIndex, changes: EndChanges) -> Vec<Id> {
    if !changes.added.is_empty() {
        index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(changes.added);
    }
    changes.removed
}

/// The shortest interval between checkpoints [`RedbStore::open_with`]
/// accepts (a shorter one is raised to it).
const MIN_CHECKPOINT_EVERY: Duration = Duration::from_millis(10);

/// Page cache of [`RedbStore::open`]: 64 MiB, which holds the interior
/// B-tree pages of a multi-gigabyte file.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// redb's page cache. Its own default is 1 GiB, which it fills under
    /// sustained writes and the allocator then keeps: the process's memory
    /// grows to that size.
    pub cache_bytes: usize,
    /// Longest time between durable commits (checkpoints); the
    /// write-ahead log holds the writes in between.
    pub checkpoint_every: Duration,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating the file and its tables if
    /// missing, with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: &Path) -> StoreResult<RedbStore> {
        Self::open_with(path, RedbOptions::default())
    }

    /// [`RedbStore::open`] with `options`. Replays the write-ahead log
    /// ([`wal_path`]) if a crash left writes in it that the database does
    /// not hold.
    pub fn open_with(path: &Path, options: RedbOptions) -> StoreResult<RedbStore> {
        prepare_file(path)?;
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(options.cache_bytes)
                .create(path)
                .ctx("open database")?,
        );
        create_tables(&db)?;
        let ends = Arc::new(load_end_index(&db)?);
        let log = wal_path(path);
        let (mut wal, found) =
            Wal::open(&log).map_err(|e| wal_error(&log, "opening the write-ahead log", e))?;
        let next_seq = recover(&db, &ends, &mut wal, found)?;
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        // Started first: should it fail, no writer is left running.
        spawn_ticker(
            queue.downgrade(),
            options.checkpoint_every.max(MIN_CHECKPOINT_EVERY),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start redb checkpoint ticker");
            StoreError::Unavailable(format!("start ticker: {e}"))
        })?;
        let offload = wal.appends_in_background();
        let writer = {
            let mut w = Writer::new(
                db.clone(),
                ends.clone(),
                wal,
                next_seq,
                commits.clone(),
                broken.clone(),
            );
            w.checkpoint_every = options.checkpoint_every.max(MIN_CHECKPOINT_EVERY);
            std::thread::Builder::new()
                .name("tessera-redb-writer".into())
                .spawn(move || w.run(rx))
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot start redb writer thread");
                    StoreError::Unavailable(format!("start writer: {e}"))
                })?
        };
        let inner = Inner {
            db,
            ends,
            queue: Some(queue),
            writer: Some(writer),
            commits,
            broken,
            offload,
        };
        Ok(RedbStore {
            inner: Arc::new(inner),
        })
    }

    /// Write transactions committed so far (one per group commit).
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    async fn write<T: FromOutcome>(&self, op: WriteOp) -> StoreResult<T> {
        let queue = self.inner.queue.as_ref().ok_or_else(writer_gone)?;
        let (job, answer) = Job::new(op)?;
        queue
            .send(Msg::Write(job))
            .await
            .map_err(|_| writer_gone())?;
        T::from_outcome(answer.await.map_err(|_| writer_gone())??)
    }

    /// A point lookup (one record, or one index row and its record), run
    /// on the calling task. It reads a few B-tree pages, nearly always in
    /// redb's page cache or the OS's: microseconds. Handing it to the
    /// blocking pool, as [`RedbStore::read`] does for scans, costs two
    /// thread wake-ups, which under load took more CPU than the lookup
    /// itself (`bench/profile 10 revoke`). A read transaction never waits
    /// for the writer's commit (the writer locks the index of ends only
    /// to add a batch's ends, or to drop those of sessions long deleted).
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
    /// Taken only where log appends run in the background (io_uring): the
    /// writer runs such work while its next append is on its way to the
    /// disk, on a core that would otherwise wait, and stops when the disk
    /// is done.
    fn offload(&self, work: &crate::store::Work) -> bool {
        self.inner.offload.load(Ordering::Relaxed)
            && self
                .inner
                .queue
                .as_ref()
                .is_some_and(|q| q.try_send(Msg::Meanwhile(work.clone())).is_ok())
    }

    async fn ping(&self) -> StoreResult<()> {
        if self.inner.queue.as_ref().is_none_or(|q| q.is_closed()) {
            return Err(writer_gone());
        }
        if self.inner.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the store stopped writing after a storage error; restart Tessera".into(),
            ));
        }
        self.read("ping", |rt| {
            let t = rt.open_table(CLIENTS).ctx("open clients")?;
            t.first().ctx("ping read")?;
            Ok(())
        })
        .await
    }

    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.write(WriteOp::InsertClient(client.clone())).await
    }

    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool> {
        self.write(WriteOp::UpdateClient {
            client: client.clone(),
            expected_version,
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
        self.write(WriteOp::DeleteClient(id.clone())).await
    }

    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()> {
        self.write(WriteOp::CreateSession {
            session: session.clone(),
            refresh: refresh.cloned(),
        })
        .await
    }

    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.lookup(|rt| read_session(rt, &self.inner.ends, id))
    }

    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>> {
        self.lookup(|rt| read_by_reference(rt, &self.inner.ends, client, reference))
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        let (filter, ends) = (filter.clone(), self.inner.ends.clone());
        self.read("list_sessions", move |rt| {
            read_list_sessions(rt, &ends, &filter, now)
        })
        .await
    }

    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
        self.write(WriteOp::ExtendAccessCover { id: *id, until })
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
        self.write(WriteOp::RotateRefresh {
            old: *old,
            new: new.clone(),
            now,
            access_exp,
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
        self.write(WriteOp::EndSessions {
            ids: ids.to_vec(),
            ended: ended.clone(),
            delete_after,
        })
        .await
    }

    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>> {
        let (subject, client) = (subject.clone(), client.cloned());
        let ends = self.inner.ends.clone();
        self.read("sessions_of_subject", move |rt| {
            read_not_ended(rt, &ends, BY_SUBJECT, subject.as_str(), client.as_ref())
        })
        .await
    }

    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>> {
        let (client, ends) = (client.clone(), self.inner.ends.clone());
        self.read("sessions_of_client", move |rt| {
            read_not_ended(rt, &ends, BY_CLIENT, client.as_str(), None)
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
        self.write(WriteOp::Sweep {
            now,
            audit_before,
            batch,
        })
        .await
    }

    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        self.write(WriteOp::PutGrant {
            id: (kind_code(kind), *key),
            value: value.to_vec(),
            expires_at,
        })
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
        self.write(WriteOp::SwapGrant {
            id: (kind_code(kind), *key),
            expected_version,
            new_value: new_value.map(<[u8]>::to_vec),
        })
        .await
    }

    async fn live_session_count(&self) -> StoreResult<u64> {
        self.read("live_session_count", |rt| {
            let rows = rt
                .open_table(LIVE)
                .ctx("open live_by_expiry")?
                .len()
                .ctx("count live sessions")?;
            let ended = rt
                .open_table(META)
                .ctx("open meta")?
                .get(ENDED_LIVE)
                .ctx("read ended live count")?
                .map_or(0, |v| v.value());
            Ok(rows.saturating_sub(ended))
        })
        .await
    }
}
