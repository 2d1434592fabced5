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

const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
const SESSIONS: TableDefinition<Id, &[u8]> = TableDefinition::new("sessions");
const BY_SUBJECT: TableDefinition<(&str, Id), ()> = TableDefinition::new("sessions_by_subject");
const BY_CLIENT: TableDefinition<(&str, Id), ()> = TableDefinition::new("sessions_by_client");
const LIVE: TableDefinition<(i64, Id), ()> = TableDefinition::new("live_by_expiry");
const DELETE_QUEUE: TableDefinition<(i64, Id), ()> = TableDefinition::new("delete_queue");
const REFERENCES: TableDefinition<(&str, TokenHash), Id> = TableDefinition::new("references");
const REFRESH: TableDefinition<TokenHash, &[u8]> = TableDefinition::new("refresh");
const REFRESH_BY_EXPIRY: TableDefinition<(i64, TokenHash), ()> =
    TableDefinition::new("refresh_by_expiry");
const REVOKED: TableDefinition<(i64, Id), ()> = TableDefinition::new("revoked");
const AUDIT: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("audit");
const GRANTS: TableDefinition<GrantId, GrantRow> = TableDefinition::new("grants");
const GRANTS_BY_EXPIRY: TableDefinition<(i64, u8, TokenHash), ()> =
    TableDefinition::new("grants_by_expiry");

/// Upper bound on ops per transaction, so one commit never holds up the
/// callers of a long queue for long.
const MAX_BATCH: usize = 512;
/// Callers wait (asynchronously) once this many writes are queued, which
/// bounds memory when the disk cannot keep up.
const QUEUE_CAPACITY: usize = 4096;

const MIN_ID: Id = [0; 16];
const MAX_ID: Id = [0xff; 16];
const MAX_HASH: TokenHash = [0xff; 32];

/// The on-disk code of a grant kind. It is part of stored keys: never
/// renumber, only add.
fn kind_code(kind: GrantKind) -> u8 {
    match kind {
        GrantKind::Otp => 1,
        GrantKind::LoginChallenge => 2,
        GrantKind::AuthorizationCode => 3,
    }
}

// ---------------------------------------------------------------------------
// errors and encoding

/// Turns a redb error into `Unavailable`, logging it with what was being done.
trait Ctx<T> {
    fn ctx(self, what: &'static str) -> StoreResult<T>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &'static str) -> StoreResult<T> {
        self.map_err(|e| {
            let e: redb::Error = e.into();
            tracing::error!(op = what, error = %e, "redb storage error");
            StoreError::Unavailable(format!("{what}: {e}"))
        })
    }
}

/// serde_json messages can quote record content (secret hashes, claims), so
/// only the error's category and position leave this function.
fn json_detail(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "undecodable record");
        StoreError::Corrupt { table, detail }
    })
}

fn encode<T: Serialize>(table: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "unencodable record");
        StoreError::Corrupt { table, detail }
    })
}

fn writer_gone() -> StoreError {
    tracing::error!("redb writer thread is gone");
    StoreError::Unavailable("store writer stopped".into())
}

// ---------------------------------------------------------------------------
// shared reads: usable on a read transaction's tables and a write's

fn load_client(
    t: &impl ReadableTable<&'static str, Bytes>,
    id: &str,
) -> StoreResult<Option<Client>> {
    match t.get(id).ctx("read client")? {
        Some(v) => decode("clients", v.value()).map(Some),
        None => Ok(None),
    }
}

fn load_session(t: &impl ReadableTable<Id, Bytes>, id: &Id) -> StoreResult<Option<Session>> {
    match t.get(id).ctx("read session")? {
        Some(v) => compact::decode_session(v.value()).map(Some),
        None => Ok(None),
    }
}

fn load_refresh(
    t: &impl ReadableTable<TokenHash, Bytes>,
    hash: &TokenHash,
) -> StoreResult<Option<RefreshRecord>> {
    match t.get(hash).ctx("read refresh token")? {
        Some(v) => compact::decode_refresh(hash, v.value()).map(Some),
        None => Ok(None),
    }
}

fn load_grant(
    t: &impl ReadableTable<GrantId, GrantRow>,
    id: GrantId,
) -> StoreResult<Option<Grant>> {
    Ok(t.get(id).ctx("read grant")?.map(|v| {
        let (version, expires_at, value) = v.value();
        Grant {
            value: value.to_vec(),
            version,
            expires_at,
        }
    }))
}

/// A grant's (version, expires_at), without copying its value.
fn grant_head(
    t: &impl ReadableTable<GrantId, GrantRow>,
    id: GrantId,
) -> StoreResult<Option<(u64, i64)>> {
    Ok(t.get(id).ctx("read grant")?.map(|v| {
        let (version, expires_at, _) = v.value();
        (version, expires_at)
    }))
}

/// Session ids indexed under `prefix` (a subject or a client id).
fn ids_under(t: &impl ReadableTable<Keyed<Id>, ()>, prefix: &str) -> StoreResult<Vec<Id>> {
    let rows = t
        .range((prefix, MIN_ID)..=(prefix, MAX_ID))
        .ctx("scan session index")?;
    rows.map(|row| row.map(|(k, _)| k.value().1).ctx("scan session index"))
        .collect()
}

/// Index rows may outlive a record only if the record was corrupt and
/// swept; skipping them keeps readers working.
fn load_sessions(t: &impl ReadableTable<Id, Bytes>, ids: &[Id]) -> StoreResult<Vec<Session>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = load_session(t, id)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Keys of the first `limit` rows at or before `upto` in a time-ordered index.
fn due_keys<K>(
    t: &impl ReadableTable<(i64, K), ()>,
    upto: (i64, K),
    limit: usize,
) -> StoreResult<Vec<(i64, K)>>
where
    K: redb::Key + Copy + 'static + for<'a> redb::Value<SelfType<'a> = K>,
{
    let rows = t.range(..=upto).ctx("scan time index")?;
    rows.take(limit)
        .map(|row| row.map(|(k, _)| k.value()).ctx("scan time index"))
        .collect()
}

// ---------------------------------------------------------------------------
// the write side: every table of one write transaction

struct Tables<'t> {
    clients: Table<'t, &'static str, Bytes>,
    sessions: Table<'t, Id, Bytes>,
    by_subject: Table<'t, Keyed<Id>, ()>,
    by_client: Table<'t, Keyed<Id>, ()>,
    live: Table<'t, (i64, Id), ()>,
    delete_queue: Table<'t, (i64, Id), ()>,
    references: Table<'t, Keyed<TokenHash>, Id>,
    refresh: Table<'t, TokenHash, Bytes>,
    refresh_by_expiry: Table<'t, (i64, TokenHash), ()>,
    revoked: Table<'t, (i64, Id), ()>,
    audit: Table<'t, (i64, u64), Bytes>,
    grants: Table<'t, GrantId, GrantRow>,
    grants_by_expiry: Table<'t, (i64, u8, TokenHash), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> StoreResult<Self> {
        Ok(Self {
            clients: txn.open_table(CLIENTS).ctx("open clients")?,
            sessions: txn.open_table(SESSIONS).ctx("open sessions")?,
            by_subject: txn.open_table(BY_SUBJECT).ctx("open sessions_by_subject")?,
            by_client: txn.open_table(BY_CLIENT).ctx("open sessions_by_client")?,
            live: txn.open_table(LIVE).ctx("open live_by_expiry")?,
            delete_queue: txn.open_table(DELETE_QUEUE).ctx("open delete_queue")?,
            references: txn.open_table(REFERENCES).ctx("open references")?,
            refresh: txn.open_table(REFRESH).ctx("open refresh")?,
            refresh_by_expiry: txn
                .open_table(REFRESH_BY_EXPIRY)
                .ctx("open refresh_by_expiry")?,
            revoked: txn.open_table(REVOKED).ctx("open revoked")?,
            audit: txn.open_table(AUDIT).ctx("open audit")?,
            grants: txn.open_table(GRANTS).ctx("open grants")?,
            grants_by_expiry: txn
                .open_table(GRANTS_BY_EXPIRY)
                .ctx("open grants_by_expiry")?,
        })
    }

    fn put_client(&mut self, c: &Client) -> StoreResult<()> {
        let bytes = encode("clients", c)?;
        self.clients
            .insert(c.id.as_str(), bytes.as_slice())
            .ctx("write client")?;
        Ok(())
    }

    /// Writes the record only; callers keep the indexes in step.
    fn put_session(&mut self, s: &Session) -> StoreResult<()> {
        let bytes = compact::encode_session(s)?;
        self.sessions
            .insert(s.id.as_bytes(), bytes.as_slice())
            .ctx("write session")?;
        Ok(())
    }

    fn put_refresh(&mut self, r: &RefreshRecord) -> StoreResult<()> {
        let bytes = compact::encode_refresh(r);
        self.refresh
            .insert(&r.hash, bytes.as_slice())
            .ctx("write refresh token")?;
        self.refresh_by_expiry
            .insert((r.expires_at, r.hash), ())
            .ctx("write refresh index")?;
        Ok(())
    }

    /// Writes a grant row; callers keep `grants_by_expiry` in step.
    fn write_grant(
        &mut self,
        id: GrantId,
        version: u64,
        expires_at: UnixTime,
        value: &[u8],
    ) -> StoreResult<()> {
        self.grants
            .insert(id, (version, expires_at, value))
            .ctx("write grant")?;
        Ok(())
    }

    /// The not-ended session holding `reference` for `client`, if its record
    /// still exists.
    fn reference_holder(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Id>> {
        let key = (client.as_str(), *reference);
        let Some(id) = self
            .references
            .get(key)
            .ctx("read reference")?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        Ok(self.sessions.get(&id).ctx("read session")?.map(|_| id))
    }

    fn insert_indexes(&mut self, s: &Session) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.by_subject
            .insert((s.subject.as_str(), id), ())
            .ctx("write subject index")?;
        self.by_client
            .insert((s.client_id.as_str(), id), ())
            .ctx("write client index")?;
        self.delete_queue
            .insert((s.delete_after, id), ())
            .ctx("write delete queue")?;
        if s.ended.is_none() {
            self.live
                .insert((s.expires_at, id), ())
                .ctx("write live index")?;
            if let Some(r) = &s.reference {
                self.references
                    .insert((s.client_id.as_str(), *r), id)
                    .ctx("write reference")?;
            }
        }
        Ok(())
    }

    /// Drops the rows that only a not-ended session has.
    fn remove_live_indexes(&mut self, s: &Session) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.live
            .remove((s.expires_at, id))
            .ctx("remove live index")?;
        if let Some(r) = &s.reference {
            let key = (s.client_id.as_str(), *r);
            let held_by_this = self
                .references
                .get(key)
                .ctx("read reference")?
                .map(|v| v.value());
            if held_by_this == Some(id) {
                self.references.remove(key).ctx("remove reference")?;
            }
        }
        Ok(())
    }

    fn remove_indexes(&mut self, s: &Session) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.remove_live_indexes(s)?;
        self.by_subject
            .remove((s.subject.as_str(), id))
            .ctx("remove subject index")?;
        self.by_client
            .remove((s.client_id.as_str(), id))
            .ctx("remove client index")?;
        // The revoked row is left to its own sweep: it is due by now anyway
        // (retention never ends before the cover).
        self.delete_queue
            .remove((s.delete_after, id))
            .ctx("remove delete queue row")?;
        Ok(())
    }

    fn set_delete_after(&mut self, s: &mut Session, at: UnixTime) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.delete_queue
            .remove((s.delete_after, id))
            .ctx("remove delete queue row")?;
        s.delete_after = at;
        self.delete_queue
            .insert((at, id), ())
            .ctx("write delete queue")?;
        Ok(())
    }

    fn append_audit(&mut self, rev: &Revocation) -> StoreResult<()> {
        let at = rev.ended.at;
        // Several ends can share a second; the sequence keeps their order.
        let seq = {
            let mut same_second = self
                .audit
                .range((at, 0u64)..=(at, u64::MAX))
                .ctx("scan audit")?;
            match same_second.next_back() {
                Some(row) => row.ctx("scan audit")?.0.value().1.saturating_add(1),
                None => 0,
            }
        };
        let bytes = encode("audit", rev)?;
        self.audit
            .insert((at, seq), bytes.as_slice())
            .ctx("write audit")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// write operations, each run inside the writer's transaction

fn insert_client(t: &mut Tables, c: &Client) -> StoreResult<()> {
    if t.clients.get(c.id.as_str()).ctx("read client")?.is_some() {
        return Err(StoreError::Conflict("client"));
    }
    t.put_client(c)
}

/// Compare-and-swap on the stored `secret_version`: the writer runs ops one
/// after another, so the check and the write cannot be split by another op.
fn update_client(t: &mut Tables, c: &Client, expected_version: u32) -> StoreResult<bool> {
    match load_client(&t.clients, c.id.as_str())? {
        Some(stored) if stored.secret_version == expected_version => {
            t.put_client(c)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn delete_client(t: &mut Tables, id: &ClientId) -> StoreResult<bool> {
    Ok(t.clients
        .remove(id.as_str())
        .ctx("remove client")?
        .is_some())
}

/// Conflicts and a missing client are all detected before the first change,
/// so such an op leaves the shared transaction untouched. The client check
/// runs in the same transaction as the insert, after every earlier op of the
/// batch: a session is never created for a client whose delete came first.
fn create_session(t: &mut Tables, s: &Session, refresh: Option<&RefreshRecord>) -> StoreResult<()> {
    if t.clients
        .get(s.client_id.as_str())
        .ctx("read client")?
        .is_none()
    {
        return Err(StoreError::Missing("client"));
    }
    if t.sessions
        .get(s.id.as_bytes())
        .ctx("read session")?
        .is_some()
    {
        return Err(StoreError::Conflict("session"));
    }
    if let (Some(r), None) = (&s.reference, &s.ended) {
        if t.reference_holder(&s.client_id, r)?.is_some() {
            return Err(StoreError::Conflict("reference"));
        }
    }
    if let Some(r) = refresh {
        if t.refresh.get(&r.hash).ctx("read refresh token")?.is_some() {
            return Err(StoreError::Conflict("refresh token"));
        }
    }
    t.put_session(s)?;
    t.insert_indexes(s)?;
    match refresh {
        Some(r) => t.put_refresh(r),
        None => Ok(()),
    }
}

/// Refuses ended sessions: a token issued after the end was recorded
/// would outlive the revocation row's cover.
fn extend_access_cover(t: &mut Tables, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
    match load_session(&t.sessions, id.as_bytes())? {
        Some(s) if s.ended.is_none() => {
            raise_cover(t, s, until)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn raise_cover(t: &mut Tables, mut s: Session, until: UnixTime) -> StoreResult<()> {
    if until > s.access_cover_until {
        s.access_cover_until = until;
        t.put_session(&s)?;
    }
    Ok(())
}

fn rotate_refresh(
    t: &mut Tables,
    old: &TokenHash,
    new: &RefreshRecord,
    now: UnixTime,
    access_exp: UnixTime,
) -> StoreResult<RotateOutcome> {
    let Some(mut current) = load_refresh(&t.refresh, old)? else {
        return Ok(RotateOutcome::NotCurrent);
    };
    if current.state != RefreshState::Current {
        return Ok(RotateOutcome::NotCurrent);
    }
    let session = match load_session(&t.sessions, current.session_id.as_bytes())? {
        Some(s) if s.ended.is_none() => s,
        _ => return Ok(RotateOutcome::NotCurrent),
    };
    if t.refresh
        .get(&new.hash)
        .ctx("read refresh token")?
        .is_some()
    {
        return Err(StoreError::Conflict("refresh token"));
    }
    current.state = RefreshState::Retired {
        at: now,
        successor: new.hash,
    };
    let bytes = compact::encode_refresh(&current);
    t.refresh
        .insert(old, bytes.as_slice())
        .ctx("write refresh token")?;
    t.put_refresh(new)?;
    raise_cover(t, session, access_exp)?;
    Ok(RotateOutcome::Rotated)
}

fn end_one(
    t: &mut Tables,
    id: &SessionId,
    ended: &Ended,
    delete_after: UnixTime,
) -> StoreResult<Option<EndedSession>> {
    let Some(mut s) = load_session(&t.sessions, id.as_bytes())? else {
        return Ok(None);
    };
    if s.ended.is_some() {
        return Ok(None);
    }
    t.remove_live_indexes(&s)?;
    s.ended = Some(ended.clone());
    let keep_until = delete_after.max(s.access_cover_until);
    t.set_delete_after(&mut s, keep_until)?;
    if s.access_cover_until > ended.at {
        t.revoked
            .insert((s.access_cover_until, *id.as_bytes()), ())
            .ctx("write revoked row")?;
    }
    t.append_audit(&Revocation {
        session_id: s.id,
        client_id: s.client_id.clone(),
        subject: s.subject.clone(),
        ended: ended.clone(),
    })?;
    t.put_session(&s)?;
    Ok(Some(EndedSession {
        id: s.id,
        client_id: s.client_id,
        subject: s.subject,
        access_cover_until: s.access_cover_until,
    }))
}

fn end_sessions(
    t: &mut Tables,
    ids: &[SessionId],
    ended: &Ended,
    delete_after: UnixTime,
) -> StoreResult<Vec<EndedSession>> {
    let mut out = Vec::new();
    // Each end is visible to the next lookup, so a repeated id is skipped.
    for id in ids {
        if let Some(e) = end_one(t, id, ended, delete_after)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn next_version(version: u64) -> StoreResult<u64> {
    version.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        table: "grants",
        detail: "version overflow".into(),
    })
}

fn put_grant(t: &mut Tables, id: GrantId, value: &[u8], expires_at: UnixTime) -> StoreResult<()> {
    let (kind, key) = id;
    let old = grant_head(&t.grants, id)?;
    // Computed before any change, so a failure leaves the transaction as it was.
    let version = match old {
        Some((version, _)) => next_version(version)?,
        None => 1,
    };
    if let Some((_, old_expiry)) = old {
        t.grants_by_expiry
            .remove((old_expiry, kind, key))
            .ctx("remove grant index")?;
    }
    t.write_grant(id, version, expires_at, value)?;
    t.grants_by_expiry
        .insert((expires_at, kind, key), ())
        .ctx("write grant index")?;
    Ok(())
}

fn swap_grant(
    t: &mut Tables,
    id: GrantId,
    expected_version: u64,
    new_value: Option<&[u8]>,
) -> StoreResult<bool> {
    let (kind, key) = id;
    let Some((version, expires_at)) = grant_head(&t.grants, id)? else {
        return Ok(false);
    };
    if version != expected_version {
        return Ok(false);
    }
    match new_value {
        Some(value) => {
            let version = next_version(version)?;
            t.write_grant(id, version, expires_at, value)?;
        }
        None => {
            t.grants.remove(id).ctx("remove grant")?;
            t.grants_by_expiry
                .remove((expires_at, kind, key))
                .ctx("remove grant index")?;
        }
    }
    Ok(true)
}

/// Deletes one session whose retention has passed. A corrupt record is
/// deleted too (its time is up), leaving index rows that readers skip,
/// rather than blocking every later sweep.
fn delete_session(t: &mut Tables, key: (i64, Id)) -> StoreResult<bool> {
    let id = key.1;
    match load_session(&t.sessions, &id) {
        Ok(Some(s)) => t.remove_indexes(&s)?,
        Ok(None) => {}
        Err(StoreError::Corrupt { .. }) => {
            tracing::error!(session = %SessionId::from_bytes(id), "sweeping corrupt session record");
        }
        Err(e) => return Err(e),
    }
    t.delete_queue.remove(key).ctx("remove delete queue row")?;
    Ok(t.sessions.remove(&id).ctx("remove session")?.is_some())
}

fn sweep_sessions(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let mut deleted = 0;
    for key in due_keys(&t.delete_queue, (now, MAX_ID), batch)? {
        if delete_session(t, key)? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Expired sessions stay (until `delete_after`) but stop counting as live.
fn sweep_live(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<()> {
    for key in due_keys(&t.live, (now, MAX_ID), batch)? {
        t.live.remove(key).ctx("remove live index")?;
    }
    Ok(())
}

fn sweep_refresh(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys = due_keys(&t.refresh_by_expiry, (now, MAX_HASH), batch)?;
    for key in &keys {
        t.refresh.remove(&key.1).ctx("remove refresh token")?;
        t.refresh_by_expiry
            .remove(*key)
            .ctx("remove refresh index")?;
    }
    Ok(keys.len())
}

fn sweep_revoked(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys = due_keys(&t.revoked, (now, MAX_ID), batch)?;
    for key in &keys {
        t.revoked.remove(*key).ctx("remove revoked row")?;
    }
    Ok(keys.len())
}

fn sweep_audit(t: &mut Tables, before: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys: Vec<(i64, u64)> = {
        let rows = t.audit.range(..(before, 0u64)).ctx("scan audit")?;
        rows.take(batch)
            .map(|r| r.map(|(k, _)| k.value()).ctx("scan audit"))
            .collect::<StoreResult<_>>()?
    };
    for key in &keys {
        t.audit.remove(*key).ctx("remove audit row")?;
    }
    Ok(keys.len())
}

fn sweep_grants(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys: Vec<(i64, u8, TokenHash)> = {
        let rows = t
            .grants_by_expiry
            .range(..=(now, u8::MAX, MAX_HASH))
            .ctx("scan grant index")?;
        rows.take(batch)
            .map(|r| r.map(|(k, _)| k.value()).ctx("scan grant index"))
            .collect::<StoreResult<_>>()?
    };
    let mut deleted = 0;
    for (expires_at, kind, key) in keys {
        t.grants_by_expiry
            .remove((expires_at, kind, key))
            .ctx("remove grant index")?;
        // The index is kept in step with the rows; should a row ever be
        // stale, the grant it names is left to its own row.
        let id = (kind, key);
        if grant_head(&t.grants, id)?.is_some_and(|(_, at)| at == expires_at) {
            t.grants.remove(id).ctx("remove grant")?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn sweep(
    t: &mut Tables,
    now: UnixTime,
    audit_before: UnixTime,
    batch: usize,
) -> StoreResult<SweepStats> {
    let sessions = sweep_sessions(t, now, batch)?;
    sweep_live(t, now, batch)?;
    Ok(SweepStats {
        sessions,
        refresh_tokens: sweep_refresh(t, now, batch)?,
        revocations: sweep_revoked(t, now, batch)?,
        audit: sweep_audit(t, audit_before, batch)?,
        grants: sweep_grants(t, now, batch)?,
    })
}

// ---------------------------------------------------------------------------
// read operations, each on its own read transaction

fn read_list_clients(rt: &ReadTransaction) -> StoreResult<Vec<Client>> {
    let t = rt.open_table(CLIENTS).ctx("open clients")?;
    let rows = t.iter().ctx("scan clients")?;
    rows.map(|row| {
        let (_, v) = row.ctx("scan clients")?;
        decode("clients", v.value())
    })
    .collect()
}

fn read_by_reference(
    rt: &ReadTransaction,
    client: &ClientId,
    reference: &TokenHash,
) -> StoreResult<Option<Session>> {
    let refs = rt.open_table(REFERENCES).ctx("open references")?;
    let Some(id) = refs
        .get((client.as_str(), *reference))
        .ctx("read reference")?
    else {
        return Ok(None);
    };
    let sessions = rt.open_table(SESSIONS).ctx("open sessions")?;
    let found = load_session(&sessions, &id.value())?;
    Ok(found.filter(|s| s.ended.is_none()))
}

/// Candidates from the narrowest index the filter allows; the full scan
/// only happens when the caller asked for everything.
fn candidate_sessions(rt: &ReadTransaction, filter: &SessionFilter) -> StoreResult<Vec<Session>> {
    let sessions = rt.open_table(SESSIONS).ctx("open sessions")?;
    let ids = match (&filter.subject, &filter.client_id) {
        (Some(sub), _) => ids_under(
            &rt.open_table(BY_SUBJECT).ctx("open sessions_by_subject")?,
            sub.as_str(),
        )?,
        (None, Some(c)) => ids_under(
            &rt.open_table(BY_CLIENT).ctx("open sessions_by_client")?,
            c.as_str(),
        )?,
        (None, None) => {
            let rows = sessions.iter().ctx("scan sessions")?;
            return rows
                .map(|row| compact::decode_session(row.ctx("scan sessions")?.1.value()))
                .collect();
        }
    };
    load_sessions(&sessions, &ids)
}

fn read_list_sessions(
    rt: &ReadTransaction,
    filter: &SessionFilter,
    now: UnixTime,
) -> StoreResult<Vec<Session>> {
    let mut out: Vec<Session> = candidate_sessions(rt, filter)?
        .into_iter()
        .filter(|s| filter.client_id.as_ref().is_none_or(|c| &s.client_id == c))
        .filter(|s| filter.include_ended || s.is_live(now))
        .collect();
    out.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    if filter.limit > 0 {
        out.truncate(filter.limit);
    }
    Ok(out)
}

fn read_not_ended(
    rt: &ReadTransaction,
    index: TableDefinition<(&str, Id), ()>,
    prefix: &str,
    client: Option<&ClientId>,
) -> StoreResult<Vec<SessionId>> {
    let ids = ids_under(&rt.open_table(index).ctx("open session index")?, prefix)?;
    let sessions = rt.open_table(SESSIONS).ctx("open sessions")?;
    Ok(load_sessions(&sessions, &ids)?
        .into_iter()
        .filter(|s| s.ended.is_none())
        .filter(|s| client.is_none_or(|c| &s.client_id == c))
        .map(|s| s.id)
        .collect())
}

fn read_active_revocations(
    rt: &ReadTransaction,
    now: UnixTime,
) -> StoreResult<Vec<(SessionId, UnixTime)>> {
    let t = rt.open_table(REVOKED).ctx("open revoked")?;
    let rows = t
        .range::<(i64, Id)>((Bound::Excluded((now, MAX_ID)), Bound::Unbounded))
        .ctx("scan revoked")?;
    rows.map(|row| {
        let (k, _) = row.ctx("scan revoked")?;
        let (until, id) = k.value();
        Ok((SessionId::from_bytes(id), until))
    })
    .collect()
}

fn read_audit_log(rt: &ReadTransaction, limit: usize) -> StoreResult<Vec<Revocation>> {
    let t = rt.open_table(AUDIT).ctx("open audit")?;
    let rows = t.iter().ctx("scan audit")?;
    rows.rev()
        .take(limit)
        .map(|row| decode("audit", row.ctx("scan audit")?.1.value()))
        .collect()
}

// ---------------------------------------------------------------------------
// the writer thread and its group commit

/// A queued write: applied inside a shared transaction, answered after the
/// commit (or failed if the commit fails).
trait PendingOp: Send {
    fn name(&self) -> &'static str;
    /// Runs the op, keeping its answer. `Err` means the op may have changed
    /// the transaction partway, so the transaction must be thrown away.
    fn apply(&mut self, t: &mut Tables<'_>) -> StoreResult<()>;
    fn answer(self: Box<Self>);
    fn fail(self: Box<Self>, err: StoreError);
}

struct Op<T, F> {
    name: &'static str,
    run: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> PendingOp for Op<T, F>
where
    T: Send,
    F: FnMut(&mut Tables<'_>) -> StoreResult<T> + Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn apply(&mut self, t: &mut Tables<'_>) -> StoreResult<()> {
        match (self.run)(t) {
            // Ops report a conflict or a missing record before changing anything.
            Err(e) if !matches!(e, StoreError::Conflict(_) | StoreError::Missing(_)) => Err(e),
            outcome => {
                self.result = Some(outcome);
                Ok(())
            }
        }
    }

    fn answer(self: Box<Self>) {
        let outcome = self
            .result
            .unwrap_or_else(|| Err(StoreError::Unavailable("write was not applied".into())));
        // The caller may have gone away (timeout, disconnect); the write stands.
        let _ = self.reply.send(outcome);
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

type Job = Box<dyn PendingOp>;

/// Packages `run` as a job for the writer, with the receiver of its answer.
fn job<T, F>(name: &'static str, run: F) -> (Job, oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnMut(&mut Tables<'_>) -> StoreResult<T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    (
        Box::new(Op {
            name,
            run,
            result: None,
            reply,
        }),
        answer,
    )
}

enum BatchError {
    /// An op failed; the transaction was aborted.
    Op(StoreError),
    /// No transaction could be opened or committed: nothing was written.
    Storage(StoreError),
}

/// Applies every op in one transaction and commits it durably once.
fn apply_and_commit(
    db: &Database,
    batch: &mut [Job],
    commits: &AtomicU64,
) -> Result<(), BatchError> {
    let mut txn = db
        .begin_write()
        .ctx("begin write")
        .map_err(BatchError::Storage)?;
    txn.set_durability(Durability::Immediate)
        .ctx("set durability")
        .map_err(BatchError::Storage)?;
    let applied = apply_all(&txn, batch);
    if let Err(e) = applied {
        if let Err(abort) = txn.abort().ctx("abort write") {
            tracing::warn!(error = %abort, "abort after a failed op failed");
        }
        return Err(e);
    }
    let started = std::time::Instant::now();
    txn.commit().ctx("commit").map_err(BatchError::Storage)?;
    metrics::histogram!("tessera_store_commit_seconds").record(started.elapsed().as_secs_f64());
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn apply_all(txn: &WriteTransaction, batch: &mut [Job]) -> Result<(), BatchError> {
    let mut tables = Tables::open(txn).map_err(BatchError::Storage)?;
    for op in batch.iter_mut() {
        if let Err(e) = op.apply(&mut tables) {
            tracing::warn!(op = op.name(), error = %e, "write op failed; transaction aborted");
            return Err(BatchError::Op(e));
        }
    }
    Ok(())
}

/// Runs a batch; if one op fails, the others are retried one per
/// transaction so that a single bad op cannot fail its neighbours.
fn run_batch(db: &Database, mut batch: Vec<Job>, commits: &AtomicU64) {
    match apply_and_commit(db, &mut batch, commits) {
        Ok(()) => batch.into_iter().for_each(|op| op.answer()),
        Err(BatchError::Op(e)) if batch.len() == 1 => {
            if let Some(op) = batch.pop() {
                op.fail(e);
            }
        }
        Err(BatchError::Op(_)) => {
            for op in batch {
                run_batch(db, vec![op], commits);
            }
        }
        Err(BatchError::Storage(e)) => {
            let msg = e.to_string();
            for op in batch {
                op.fail(StoreError::Unavailable(msg.clone()));
            }
        }
    }
}

fn writer_loop(db: Arc<Database>, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    // For operators: how full the group commits are and how long each
    // takes (apply, write and fsync), which bound every durable write.
    let batch_ops = metrics::histogram!("tessera_store_batch_ops");
    let batch_seconds = metrics::histogram!("tessera_store_batch_seconds");
    // Ends once every sender is dropped and the queue is drained.
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        batch_ops.record(batch.len() as f64);
        run_batch(&db, batch, &commits);
        batch_seconds.record(started.elapsed().as_secs_f64());
    }
}

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

#[cfg(test)]
mod tests {
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

    fn bare_db(dir: &tempfile::TempDir) -> Database {
        let db = Database::create(dir.path().join("bare.redb")).unwrap();
        create_tables(&db).unwrap();
        db
    }

    fn client_job(name: &'static str, c: Client) -> (Job, oneshot::Receiver<StoreResult<()>>) {
        job(name, move |t| insert_client(t, &c))
    }

    #[test]
    fn ops_of_one_batch_see_each_other_and_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = bare_db(&dir);
        let commits = AtomicU64::new(0);
        let (first, mut first_rx) = client_job("first", client("dup"));
        let (second, mut second_rx) = client_job("second", client("dup"));
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
        let (update, mut update_rx) = job("update", move |t| update_client(t, &renamed, 0));
        let (stale, mut stale_rx) = job("stale", move |t| update_client(t, &stale_copy, 0));
        run_batch(&db, vec![first, second, update, stale], &commits);
        assert!(matches!(first_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(
            second_rx.try_recv(),
            Ok(Err(StoreError::Conflict("client")))
        ));
        assert!(
            matches!(update_rx.try_recv(), Ok(Ok(true))),
            "sees the insert"
        );
        assert!(
            matches!(stale_rx.try_recv(), Ok(Ok(false))),
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
        let commits = AtomicU64::new(0);
        let owner = client("owner");
        let (before, after) = (session(&owner.id, 1000), session(&owner.id, 1000));
        let (before_r, after_r) = (refresh(&before), refresh(&after));
        let gone_id = owner.id.clone();
        let (insert, mut insert_rx) = client_job("insert", owner);
        let (first, mut first_rx) = job("first", move |t| {
            create_session(t, &before, Some(&before_r))
        });
        let (delete, mut delete_rx) = job("delete", move |t| delete_client(t, &gone_id));
        let (late, mut late_rx) = {
            let (after, after_r) = (after.clone(), after_r.clone());
            job("late", move |t| create_session(t, &after, Some(&after_r)))
        };
        run_batch(&db, vec![insert, first, delete, late], &commits);
        assert!(matches!(insert_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(first_rx.try_recv(), Ok(Ok(()))), "sees the insert");
        assert!(matches!(delete_rx.try_recv(), Ok(Ok(true))));
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
        let commits = AtomicU64::new(0);
        let (a, mut a_rx) = client_job("a", client("a"));
        let (bad, mut bad_rx) = job("bad", |t: &mut Tables<'_>| -> StoreResult<()> {
            insert_client(t, &client("half-done"))?;
            Err(StoreError::Corrupt {
                table: "clients",
                detail: "test".into(),
            })
        });
        let (b, mut b_rx) = client_job("b", client("b"));
        run_batch(&db, vec![a, bad, b], &commits);
        assert!(matches!(a_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(
            bad_rx.try_recv(),
            Ok(Err(StoreError::Corrupt { .. }))
        ));
        assert!(matches!(b_rx.try_recv(), Ok(Ok(()))));
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
    }

    #[test]
    fn grant_ops_of_one_batch_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = bare_db(&dir);
        let commits = AtomicU64::new(0);
        let id = (kind_code(GrantKind::Otp), [7; 32]);
        let gone = (kind_code(GrantKind::AuthorizationCode), [7; 32]);
        let (put, mut put_rx) = job("put", move |t| put_grant(t, id, b"a", 100));
        let (swap, mut swap_rx) = job("swap", move |t| swap_grant(t, id, 1, Some(b"b".as_slice())));
        let (stale, mut stale_rx) = job("stale", move |t| {
            swap_grant(t, id, 1, Some(b"c".as_slice()))
        });
        let (replace, mut replace_rx) = job("replace", move |t| put_grant(t, id, b"d", 200));
        let (made, mut made_rx) = job("made", move |t| put_grant(t, gone, b"x", 100));
        let (used, mut used_rx) = job("used", move |t| swap_grant(t, gone, 1, None));
        run_batch(&db, vec![put, swap, stale, replace, made, used], &commits);
        assert!(matches!(put_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(swap_rx.try_recv(), Ok(Ok(true))), "sees the put");
        assert!(
            matches!(stale_rx.try_recv(), Ok(Ok(false))),
            "sees the swap"
        );
        assert!(matches!(replace_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(made_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(used_rx.try_recv(), Ok(Ok(true))));
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
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let owner = client("owner");
        store.insert_client(&owner).await.unwrap();
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

    /// Files written before the compact format hold JSON records: they
    /// read, rotate, end and list as before, and are rewritten compact.
    #[tokio::test]
    async fn json_records_of_older_files_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let owner = client("owner");
        store.insert_client(&owner).await.unwrap();
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
            let mut t = Tables::open(&txn).unwrap();
            let json = serde_json::to_vec(&s).unwrap();
            t.sessions.insert(s.id.as_bytes(), json.as_slice()).unwrap();
            let json = serde_json::to_vec(&r).unwrap();
            t.refresh.insert(&r.hash, json.as_slice()).unwrap();
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

        let mut next = refresh(&s);
        next.issued_at = 1100;
        assert_eq!(
            store
                .rotate_refresh(&r.hash, &next, 1100, 1400)
                .await
                .unwrap(),
            RotateOutcome::Rotated
        );
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
    fn plant_garbage(store: &RedbStore, id: &SessionId, delete_after: i64) {
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            t.sessions
                .insert(id.as_bytes(), b"{not json".as_slice())
                .unwrap();
            t.delete_queue
                .insert((delete_after, *id.as_bytes()), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn corrupt_record_is_reported_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let id = SessionId::generate();
        plant_garbage(&store, &id, 500);
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

    fn row_counts(store: &RedbStore) -> Vec<u64> {
        let txn = store.inner.db.begin_write().unwrap();
        let t = Tables::open(&txn).unwrap();
        let counts = vec![
            t.sessions.len().unwrap(),
            t.by_subject.len().unwrap(),
            t.by_client.len().unwrap(),
            t.live.len().unwrap(),
            t.delete_queue.len().unwrap(),
            t.references.len().unwrap(),
            t.refresh.len().unwrap(),
            t.refresh_by_expiry.len().unwrap(),
            t.revoked.len().unwrap(),
            t.audit.len().unwrap(),
            t.grants.len().unwrap(),
            t.grants_by_expiry.len().unwrap(),
        ];
        drop(t);
        txn.abort().unwrap();
        counts
    }

    #[tokio::test]
    async fn sweeping_everything_leaves_no_index_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        let owner = client("owner");
        store.insert_client(&owner).await.unwrap();
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
        assert!(row_counts(&store).iter().all(|&n| n > 0));
        while store.sweep(1_000_000, 1_000_000, 7).await.unwrap().total() > 0 {}
        assert_eq!(row_counts(&store), vec![0; 12]);
    }
}
