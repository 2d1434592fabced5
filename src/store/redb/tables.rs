//! The schema of the embedded store, the tables of one write
//! transaction, and the reads that work on a read transaction's tables
//! and a write's alike.

use super::*;

pub(super) const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
pub(super) const SESSIONS: TableDefinition<Id, &[u8]> = TableDefinition::new("sessions");
pub(super) const BY_SUBJECT: TableDefinition<(&str, Id), ()> =
    TableDefinition::new("sessions_by_subject");
pub(super) const BY_CLIENT: TableDefinition<(&str, Id), ()> =
    TableDefinition::new("sessions_by_client");
pub(super) const LIVE: TableDefinition<(i64, Id), ()> = TableDefinition::new("live_by_expiry");
/// Deletion rows of layouts before 4, keyed by (delete_after, session
/// id): read and swept until empty; no longer written.
pub(super) const DELETE_QUEUE: TableDefinition<(i64, Id), ()> =
    TableDefinition::new("delete_queue");
/// Deletion rows under (delete_after, sequence within that second): the
/// ends of a batch, which share their `delete_after`, append to one leaf.
pub(super) const DELETIONS: TableDefinition<(i64, u64), Id> = TableDefinition::new("deletions");
pub(super) const REFERENCES: TableDefinition<(&str, TokenHash), Id> =
    TableDefinition::new("references");
pub(super) const REFRESH: TableDefinition<TokenHash, &[u8]> = TableDefinition::new("refresh");
pub(super) const REFRESH_BY_EXPIRY: TableDefinition<(i64, TokenHash), ()> =
    TableDefinition::new("refresh_by_expiry");
/// Revocation rows of layouts before 4, keyed by cover: read and swept
/// until the last of them is past its cover; no longer written.
pub(super) const REVOKED: TableDefinition<(i64, Id), ()> = TableDefinition::new("revoked");
/// Revocation rows of layouts 4 and 5, under (ended at, sequence within
/// that second): read and swept until empty; no longer written (an end's
/// row in [`ENDS`] holds its cover).
pub(super) const REVOKED_BY_END: TableDefinition<(i64, u64), (Id, i64)> =
    TableDefinition::new("revoked_by_end");
/// Audit rows of layouts before 6 (JSON [`Revocation`]), under (ended at,
/// sequence): read and swept until empty; no longer written (an end's row
/// in [`ENDS`] holds its audit entry).
pub(super) const AUDIT: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("audit");
/// Ends, under (ended at, sequence within that second): (session id, the
/// session's new `delete_after`, JSON [`EndRecord`]). An end appends here
/// instead of rewriting the session record, which in random order is a
/// page of its own per end; [`EndIndex`] finds the row by session id. The
/// row goes with the session. Since layout 6 the row is also the end's
/// revocation (the session's cover) and its audit entry: one row per end.
pub(super) const ENDS: TableDefinition<(i64, u64), EndRow> = TableDefinition::new("ends");
/// A row of [`ENDS`].
pub(super) type EndRow = (Id, i64, Bytes);

/// The JSON of an [`ENDS`] row: the end (the fields of [`Ended`]) and,
/// in rows of layout 6, what its revocation and audit entry need. Rows
/// of layout 5 hold the end only; their revocation and audit rows are in
/// [`REVOKED_BY_END`] and [`AUDIT`].
#[derive(Serialize, Deserialize)]
pub(super) struct EndRecord {
    at: UnixTime,
    reason: EndReason,
    by: Actor,
    /// The session's `access_cover_until` when it ended (it never rises
    /// after), if later than the end: the end is revoked until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cover_until: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<ClientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Subject>,
}

impl EndRecord {
    fn new(s: &Session, ended: &Ended) -> Self {
        Self {
            at: ended.at,
            reason: ended.reason,
            by: ended.by.clone(),
            // A cover that ended first needs no revocation.
            cover_until: (s.access_cover_until > ended.at).then_some(s.access_cover_until),
            client_id: Some(s.client_id.clone()),
            subject: Some(s.subject.clone()),
        }
    }

    fn ended(self) -> Ended {
        Ended {
            at: self.at,
            reason: self.reason,
            by: self.by,
        }
    }

    /// The audit entry of a row of layout 6, taken out of the record.
    pub(super) fn take_audit_entry(&mut self, id: Id) -> Option<Revocation> {
        let (client_id, subject) = (self.client_id.take()?, self.subject.take()?);
        Some(Revocation {
            session_id: SessionId::from_bytes(id),
            client_id,
            subject,
            ended: Ended {
                at: self.at,
                reason: self.reason,
                by: self.by.clone(),
            },
        })
    }

    /// The audit entry of a row of layout 6.
    pub(super) fn audit_entry(mut self, id: Id) -> Option<Revocation> {
        self.take_audit_entry(id)
    }
}

/// The part of an [`EndRecord`] the load of the revocations reads.
#[derive(Deserialize)]
pub(super) struct EndCover {
    #[serde(default)]
    pub(super) cover_until: Option<UnixTime>,
}

/// Where the [`ENDS`] row of each ended session is, by session id: built
/// from the table at open, kept in step by the writer as each transaction
/// is logged (before its commit), read by every read of a session.
/// Memory: one entry (32 bytes, 40–80 with the hash table's slack) per
/// ended session, until [`END_INDEX_GRACE`] after the session is deleted.
///
/// A reader takes a session as ended only if the row the index names is
/// in its own snapshot, so an entry published before or after the commit
/// that wrote the row is seen consistently. Entries of deleted sessions
/// stay for [`END_INDEX_GRACE`], so that a reader whose snapshot still
/// holds the record still finds its end.
pub(super) type EndIndex = std::sync::RwLock<std::collections::HashMap<Id, (i64, u64)>>;
/// How long the entry of a deleted session stays in [`EndIndex`]: far
/// longer than any read transaction (a point lookup takes microseconds,
/// a scan of a million sessions about a second).
pub(super) const END_INDEX_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
pub(super) const GRANTS: TableDefinition<GrantId, GrantRow> = TableDefinition::new("grants");
pub(super) const GRANTS_BY_EXPIRY: TableDefinition<(i64, u8, TokenHash), ()> =
    TableDefinition::new("grants_by_expiry");
/// The store's own bookkeeping: [`WAL_SEQ`], [`LAYOUT`], [`ENDED_LIVE`],
/// [`LIVE_SWEPT_TO`], the revocation sweep's cursor ([`REVOKED_SWEPT_AT`],
/// [`REVOKED_SWEPT_SEQ`]) and the audit sweep's ([`AUDIT_SWEPT_AT`],
/// [`AUDIT_SWEPT_SEQ`]).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout of the store's files (its rows and its write-ahead log), as
/// the newest build that wrote them knew it (see [`LAYOUT_VERSION`]).
pub(super) const LAYOUT: &str = "layout";
/// The layout this build writes. A build refuses a store of a later
/// layout: an older build does not keep the rows a newer one relies on,
/// or cannot read its log.
///
/// - 1 (files without the row): a live session also had a delete-queue
///   row, written at its creation.
/// - 2: one time-ordered row per session (see the module docs). Builds of
///   layout 1 do not queue a session of layout 2 for deletion when it
///   expires, so it would never be deleted: the reason for the row.
/// - 3: each append to the write-ahead log starts at a block boundary,
///   padded with zeros (see `wal`). A build of layout 2 stops reading the
///   log at the first padding, so after a crash it would drop the
///   acknowledged writes behind it.
///
/// - 4: an ended session keeps its live row until it expires or is
///   deleted, counted in [`ENDED_LIVE`]; revocation rows are written to
///   [`REVOKED_BY_END`], deletion rows to [`DELETIONS`]. A build of
///   layout 3 would count those sessions as live, would never delete
///   them, and at its start would not load the revocations of that table:
///   it would accept the access tokens of ended sessions again.
/// - 5: an end is a row of [`ENDS`]; the session record is left as it
///   was. A build of layout 4 would read those sessions as not ended: it
///   would rotate their refresh tokens again.
/// - 6: the row of an end holds its cover and its audit entry
///   ([`EndRecord`]); no row of [`REVOKED_BY_END`] or [`AUDIT`] is
///   written. A build of layout 5 would not load those revocations at
///   its start: it would accept the access tokens of ended sessions
///   again.
///
/// This build reads stores of layouts 1 to 5 as they are (records that
/// say they ended are ended; rows of earlier layouts are read and swept)
/// and marks them 6.
pub(super) const LAYOUT_VERSION: u64 = 6;
/// How many rows of `live_by_expiry` belong to ended sessions: the live
/// count is the table's length less this.
pub(super) const ENDED_LIVE: &str = "ended_live";
/// The latest `now` the expiry sweep of `live_by_expiry` has used since
/// the store was opened, as the bits of the `i64`. Rows leave the table
/// only with their session, in the expiry sweep once due, or (in files of
/// layouts before 4) at the end of their session: so a session that is
/// still there, has not ended and is due after this still has its row,
/// and [`Tables::has_live_row`] needs no lookup (in random order a page of
/// its own per end). Only the sweeps since the store was opened count (a
/// build before this one, run on the file in between, sweeps without
/// recording it): the open removes it from a file that holds sessions, and
/// the next sweep records it again. Sweeps before the open are taken to
/// have used an earlier `now` (a clock that went back across a restart
/// would make the live count read low by one per end of a session swept
/// in between). A file without sessions starts at `i64::MIN`.
pub(super) const LIVE_SWEPT_TO: &str = "live_swept_to";
/// Where the sweep of [`REVOKED_BY_END`] goes on from: the key of the last
/// row it looked at, as its time (the bits of the `i64`) and its sequence.
/// Absent: from the first row.
pub(super) const REVOKED_SWEPT_AT: &str = "revoked_swept_at";
pub(super) const REVOKED_SWEPT_SEQ: &str = "revoked_swept_seq";
/// How far the audit sweep has gone through [`ENDS`]: the key of the last
/// row whose audit entry it took out. The audit log reads no entry at or
/// before it; an end whose key falls there (its time is older than the
/// retention a sweep applied) has its entry in a row of [`AUDIT`]
/// instead. Absent: none yet.
pub(super) const AUDIT_SWEPT_AT: &str = "audit_swept_at";
pub(super) const AUDIT_SWEPT_SEQ: &str = "audit_swept_seq";
/// Rows of [`REVOKED_BY_END`] one sweep pass looks at, per row of its batch.
pub(super) const REVOKED_SCAN_PER_BATCH: usize = 16;
/// The sequence number of the last op of the write-ahead log that the
/// database holds.
pub(super) const WAL_SEQ: &str = "wal_seq";

/// Upper bound on ops per transaction, so one commit never holds up the
/// callers of a long queue for long.
pub(super) const MAX_BATCH: usize = 512;
/// Callers wait (asynchronously) once this many writes are queued, which
/// bounds memory when the disk cannot keep up.
pub(super) const QUEUE_CAPACITY: usize = 4096;

pub(super) const MIN_ID: Id = [0; 16];
pub(super) const MAX_ID: Id = [0xff; 16];
pub(super) const MAX_HASH: TokenHash = [0xff; 32];

/// The on-disk code of a grant kind. It is part of stored keys: never
/// renumber, only add.
pub(super) fn kind_code(kind: GrantKind) -> u8 {
    match kind {
        GrantKind::Otp => 1,
        GrantKind::LoginChallenge => 2,
        GrantKind::AuthorizationCode => 3,
    }
}

// ---------------------------------------------------------------------------
// errors and encoding

/// Turns a redb error into `Unavailable`, logging it with what was being done.
pub(super) trait Ctx<T> {
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
pub(super) fn json_detail(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

pub(super) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "undecodable record");
        StoreError::Corrupt { table, detail }
    })
}

pub(super) fn encode<T: Serialize>(table: &'static str, value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "unencodable record");
        StoreError::Corrupt { table, detail }
    })
}

pub(super) fn writer_gone() -> StoreError {
    tracing::error!("redb writer thread is gone");
    StoreError::Unavailable("store writer stopped".into())
}

// ---------------------------------------------------------------------------
// shared reads: usable on a read transaction's tables and a write's

pub(super) fn load_client(
    t: &impl ReadableTable<&'static str, Bytes>,
    id: &str,
) -> StoreResult<Option<Client>> {
    match t.get(id).ctx("read client")? {
        Some(v) => decode("clients", v.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn load_session(
    t: &impl ReadableTable<Id, Bytes>,
    id: &Id,
) -> StoreResult<Option<Session>> {
    match t.get(id).ctx("read session")? {
        Some(v) => compact::decode_session(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Completes a session record with its end, if `key` names an [`ENDS`]
/// row of this session in `ends`. Callers look only for records that do
/// not say themselves that they ended (as those of layouts before 5 do).
pub(super) fn merge_end(
    ends: &impl ReadableTable<(i64, u64), EndRow>,
    key: (i64, u64),
    s: &mut Session,
) -> StoreResult<()> {
    if let Some(row) = ends.get(key).ctx("read end")? {
        let (id, delete_after, record) = row.value();
        if id == *s.id.as_bytes() {
            s.ended = Some(decode::<EndRecord>("ends", record)?.ended());
            s.delete_after = delete_after;
        }
    }
    Ok(())
}

/// The [`ENDS`] key of session `id` in `index`, if it has one.
pub(super) fn end_key(index: &EndIndex, id: &Id) -> Option<(i64, u64)> {
    index
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(id)
        .copied()
}

/// Sessions as a read transaction sees them, ends included.
pub(super) struct SessionReads<'a> {
    rt: &'a ReadTransaction,
    pub(super) sessions: ReadOnlyTable<Id, Bytes>,
    /// Opened for the first session that has an end.
    ends: std::cell::OnceCell<ReadOnlyTable<(i64, u64), EndRow>>,
    index: &'a EndIndex,
}

impl<'a> SessionReads<'a> {
    pub(super) fn open(rt: &'a ReadTransaction, index: &'a EndIndex) -> StoreResult<Self> {
        Ok(Self {
            rt,
            sessions: rt.open_table(SESSIONS).ctx("open sessions")?,
            ends: std::cell::OnceCell::new(),
            index,
        })
    }

    pub(super) fn complete(&self, mut s: Session) -> StoreResult<Session> {
        let Some(key) = end_key(self.index, s.id.as_bytes()).filter(|_| s.ended.is_none()) else {
            return Ok(s);
        };
        let ends = match self.ends.get() {
            Some(ends) => ends,
            None => {
                let opened = self.rt.open_table(ENDS).ctx("open ends")?;
                self.ends.get_or_init(|| opened)
            }
        };
        merge_end(ends, key, &mut s)?;
        Ok(s)
    }

    pub(super) fn get(&self, id: &Id) -> StoreResult<Option<Session>> {
        load_session(&self.sessions, id)?
            .map(|s| self.complete(s))
            .transpose()
    }

    /// Index rows may outlive a record only if the record was corrupt and
    /// swept; skipping them keeps readers working.
    pub(super) fn get_many(&self, ids: &[Id]) -> StoreResult<Vec<Session>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.get(id)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

pub(super) fn load_refresh(
    t: &impl ReadableTable<TokenHash, Bytes>,
    hash: &TokenHash,
) -> StoreResult<Option<RefreshRecord>> {
    match t.get(hash).ctx("read refresh token")? {
        Some(v) => compact::decode_refresh(hash, v.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn load_grant(
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
pub(super) fn grant_head(
    t: &impl ReadableTable<GrantId, GrantRow>,
    id: GrantId,
) -> StoreResult<Option<(u64, i64)>> {
    Ok(t.get(id).ctx("read grant")?.map(|v| {
        let (version, expires_at, _) = v.value();
        (version, expires_at)
    }))
}

/// Session ids indexed under `prefix` (a subject or a client id).
pub(super) fn ids_under(
    t: &impl ReadableTable<Keyed<Id>, ()>,
    prefix: &str,
) -> StoreResult<Vec<Id>> {
    let rows = t
        .range((prefix, MIN_ID)..=(prefix, MAX_ID))
        .ctx("scan session index")?;
    rows.map(|row| row.map(|(k, _)| k.value().1).ctx("scan session index"))
        .collect()
}

/// A position in a table keyed by (time, sequence), kept in `meta` under
/// `at_key` (the time's bits) and `seq_key`.
pub(super) fn read_cursor(
    meta: &impl ReadableTable<&'static str, u64>,
    at_key: &'static str,
    seq_key: &'static str,
) -> StoreResult<Option<(i64, u64)>> {
    let at = meta.get(at_key).ctx("read sweep cursor")?;
    let seq = meta.get(seq_key).ctx("read sweep cursor")?;
    Ok(match (at, seq) {
        (Some(at), Some(seq)) => Some((at.value() as i64, seq.value())),
        _ => None,
    })
}

/// The rows of a table keyed by (time, sequence) after `after` (all of
/// them if `None`) and before `before`.
pub(super) fn rows_after<V: redb::Value + 'static>(
    t: &impl ReadableTable<(i64, u64), V>,
    after: Option<(i64, u64)>,
    before: Bound<(i64, u64)>,
) -> StoreResult<redb::Range<'_, (i64, u64), V>> {
    let empty = match (after, before) {
        (Some(a), Bound::Excluded(b) | Bound::Included(b)) => a >= b,
        _ => false,
    };
    // An empty range where the bounds cross.
    let from = match after {
        Some(_) if empty => Bound::Excluded((i64::MAX, u64::MAX)),
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    let before = if empty { Bound::Unbounded } else { before };
    t.range::<(i64, u64)>((from, before)).ctx("scan time index")
}

/// Keys of the first `limit` rows at or before `upto` in a time-ordered index.
pub(super) fn due_keys<K>(
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

/// The tables of one write transaction, each opened on first use: a
/// batch of grants touches 7 of the 14, and every table opened costs a
/// lookup when it is opened and another when the transaction commits.
pub(super) struct Tables<'t> {
    txn: &'t WriteTransaction,
    clients: Option<Table<'t, &'static str, Bytes>>,
    sessions: Option<Table<'t, Id, Bytes>>,
    by_subject: Option<Table<'t, Keyed<Id>, ()>>,
    by_client: Option<Table<'t, Keyed<Id>, ()>>,
    live: Option<Table<'t, (i64, Id), ()>>,
    delete_queue: Option<Table<'t, (i64, Id), ()>>,
    deletions: Option<Table<'t, (i64, u64), Id>>,
    references: Option<Table<'t, Keyed<TokenHash>, Id>>,
    refresh: Option<Table<'t, TokenHash, Bytes>>,
    refresh_by_expiry: Option<Table<'t, (i64, TokenHash), ()>>,
    revoked: Option<Table<'t, (i64, Id), ()>>,
    revoked_by_end: Option<Table<'t, (i64, u64), (Id, i64)>>,
    audit: Option<Table<'t, (i64, u64), Bytes>>,
    ends: Option<Table<'t, (i64, u64), EndRow>>,
    grants: Option<Table<'t, GrantId, GrantRow>>,
    grants_by_expiry: Option<Table<'t, (i64, u8, TokenHash), ()>>,
    meta: Option<Table<'t, &'static str, u64>>,
    /// The key of the last row this transaction wrote to [`DELETIONS`]
    /// and to [`ENDS`]: ends of the same second follow it without a scan
    /// of the table.
    last_deletion: Option<(i64, u64)>,
    last_end: Option<(i64, u64)>,
    /// [`LIVE_SWEPT_TO`] once read by this transaction.
    live_swept_to: Option<Option<i64>>,
    /// [`AUDIT_SWEPT_AT`] once read by this transaction.
    audit_swept: Option<Option<(i64, u64)>>,
    /// The ends committed before this transaction.
    end_index: &'t EndIndex,
    /// What this transaction changes in [`EndIndex`], published by the
    /// writer once the transaction is logged.
    pub(super) end_changes: EndChanges,
}

/// A transaction's changes to [`EndIndex`].
#[derive(Default)]
pub(super) struct EndChanges {
    pub(super) added: std::collections::HashMap<Id, (i64, u64)>,
    pub(super) removed: Vec<Id>,
}

/// `Tables::NAME()`: the table, opened if it is not yet.
macro_rules! lazy_tables {
    ($($name:ident: $def:ident, $k:ty, $v:ty, $what:literal;)*) => {
        $(
            pub(super) fn $name(&mut self) -> StoreResult<&mut Table<'t, $k, $v>> {
                match &mut self.$name {
                    Some(table) => Ok(table),
                    slot => Ok(slot.insert(self.txn.open_table($def).ctx($what)?)),
                }
            }
        )*
    };
}

impl<'t> Tables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction, end_index: &'t EndIndex) -> StoreResult<Self> {
        Ok(Self {
            txn,
            clients: None,
            sessions: None,
            by_subject: None,
            by_client: None,
            live: None,
            delete_queue: None,
            deletions: None,
            references: None,
            refresh: None,
            refresh_by_expiry: None,
            revoked: None,
            revoked_by_end: None,
            audit: None,
            ends: None,
            grants: None,
            grants_by_expiry: None,
            meta: None,
            last_deletion: None,
            last_end: None,
            live_swept_to: None,
            audit_swept: None,
            end_index,
            end_changes: EndChanges::default(),
        })
    }

    /// Opens every table, creating the missing ones.
    pub(super) fn open_all(&mut self) -> StoreResult<()> {
        self.clients()?;
        self.sessions()?;
        self.by_subject()?;
        self.by_client()?;
        self.live()?;
        self.delete_queue()?;
        self.deletions()?;
        self.references()?;
        self.refresh()?;
        self.refresh_by_expiry()?;
        self.revoked()?;
        self.revoked_by_end()?;
        self.audit()?;
        self.ends()?;
        self.grants()?;
        self.grants_by_expiry()?;
        self.meta()?;
        Ok(())
    }

    lazy_tables! {
        clients: CLIENTS, &'static str, Bytes, "open clients";
        sessions: SESSIONS, Id, Bytes, "open sessions";
        by_subject: BY_SUBJECT, Keyed<Id>, (), "open sessions_by_subject";
        by_client: BY_CLIENT, Keyed<Id>, (), "open sessions_by_client";
        live: LIVE, (i64, Id), (), "open live_by_expiry";
        delete_queue: DELETE_QUEUE, (i64, Id), (), "open delete_queue";
        deletions: DELETIONS, (i64, u64), Id, "open deletions";
        references: REFERENCES, Keyed<TokenHash>, Id, "open references";
        refresh: REFRESH, TokenHash, Bytes, "open refresh";
        refresh_by_expiry: REFRESH_BY_EXPIRY, (i64, TokenHash), (), "open refresh_by_expiry";
        revoked: REVOKED, (i64, Id), (), "open revoked";
        revoked_by_end: REVOKED_BY_END, (i64, u64), (Id, i64), "open revoked_by_end";
        audit: AUDIT, (i64, u64), Bytes, "open audit";
        ends: ENDS, (i64, u64), EndRow, "open ends";
        grants: GRANTS, GrantId, GrantRow, "open grants";
        grants_by_expiry: GRANTS_BY_EXPIRY, (i64, u8, TokenHash), (), "open grants_by_expiry";
        meta: META, &'static str, u64, "open meta";
    }

    /// The [`ENDS`] key of session `id`: this transaction's ends first.
    fn end_key(&self, id: &Id) -> Option<(i64, u64)> {
        match self.end_changes.added.get(id) {
            Some(key) => Some(*key),
            None => end_key(self.end_index, id),
        }
    }

    /// The session, ended if it has ended (see [`merge_end`]).
    pub(super) fn session(&mut self, id: &Id) -> StoreResult<Option<Session>> {
        let Some(mut s) = load_session(&*self.sessions()?, id)? else {
            return Ok(None);
        };
        if let Some(key) = self.end_key(id).filter(|_| s.ended.is_none()) {
            merge_end(&*self.ends()?, key, &mut s)?;
        }
        Ok(Some(s))
    }

    /// Records the end of session `s` (its [`ENDS`] row, which is also
    /// its revocation and its audit entry), to be deleted at
    /// `delete_after`.
    pub(super) fn append_end(
        &mut self,
        s: &Session,
        ended: &Ended,
        delete_after: UnixTime,
    ) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        let last = self.last_end;
        let seq = next_in_second(&*self.ends()?, ended.at, last)?;
        let mut record = EndRecord::new(s, ended);
        if self
            .audit_swept()?
            .is_some_and(|swept| (ended.at, seq) <= swept)
        {
            // Behind the audit sweep's position (an end older than the
            // retention a sweep has applied: a clock set back), where the
            // audit log does not read: the entry gets a row of its own,
            // which the sweep deletes by its time.
            if let Some(entry) = record.take_audit_entry(id) {
                self.append_audit(&entry)?;
            }
        }
        let bytes = encode("ends", &record)?;
        self.ends()?
            .insert((ended.at, seq), (id, delete_after, bytes.as_slice()))
            .ctx("write end")?;
        self.last_end = Some((ended.at, seq));
        self.end_changes.added.insert(id, (ended.at, seq));
        Ok(())
    }

    /// Drops the [`ENDS`] row of session `id`, if it has one: the session
    /// is being deleted. An audit entry the audit sweep has not passed
    /// yet (its retention, counted from the end, is not over: a session
    /// deleted in the second its retention ends, or one whose deletion
    /// was set under a shorter retention) moves to a row of its own in
    /// [`AUDIT`], which the sweep deletes by its time.
    pub(super) fn remove_end(&mut self, id: Id) -> StoreResult<()> {
        let Some(key) = self.end_key(&id) else {
            return Ok(());
        };
        let unswept = self.audit_swept()?.is_none_or(|swept| key > swept);
        let held = {
            let ends = self.ends()?;
            let row = ends.get(key).ctx("read end")?;
            match row.as_ref().map(|row| row.value()) {
                Some((row_id, _, record)) if row_id == id => Some(if unswept {
                    // An undecodable row (logged) has no entry to keep.
                    decode::<EndRecord>("ends", record)
                        .ok()
                        .and_then(|r| r.audit_entry(id))
                } else {
                    None
                }),
                _ => None,
            }
        };
        if let Some(entry) = held {
            if let Some(entry) = entry {
                self.append_audit(&entry)?;
            }
            self.ends()?.remove(key).ctx("remove end")?;
        }
        self.end_changes.added.remove(&id);
        self.end_changes.removed.push(id);
        Ok(())
    }

    pub(super) fn put_client(&mut self, c: &Client) -> StoreResult<()> {
        let bytes = encode("clients", c)?;
        self.clients()?
            .insert(c.id.as_str(), bytes.as_slice())
            .ctx("write client")?;
        Ok(())
    }

    /// Writes the record only; callers keep the indexes in step.
    pub(super) fn put_session(&mut self, s: &Session) -> StoreResult<()> {
        let bytes = compact::encode_session(s)?;
        self.sessions()?
            .insert(s.id.as_bytes(), bytes.as_slice())
            .ctx("write session")?;
        Ok(())
    }

    pub(super) fn put_refresh(&mut self, r: &RefreshRecord) -> StoreResult<()> {
        let bytes = compact::encode_refresh(r);
        self.refresh()?
            .insert(&r.hash, bytes.as_slice())
            .ctx("write refresh token")?;
        self.refresh_by_expiry()?
            .insert((r.expires_at, r.hash), ())
            .ctx("write refresh index")?;
        Ok(())
    }

    /// Writes a grant row; callers keep `grants_by_expiry` in step.
    pub(super) fn write_grant(
        &mut self,
        id: GrantId,
        version: u64,
        expires_at: UnixTime,
        value: &[u8],
    ) -> StoreResult<()> {
        self.grants()?
            .insert(id, (version, expires_at, value))
            .ctx("write grant")?;
        Ok(())
    }

    /// The not-ended session holding `reference` for `client`, if its record
    /// still exists.
    pub(super) fn reference_holder(
        &mut self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Id>> {
        let key = (client.as_str(), *reference);
        let Some(id) = self
            .references()?
            .get(key)
            .ctx("read reference")?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        Ok(self.sessions()?.get(&id).ctx("read session")?.map(|_| id))
    }

    /// A session that has not ended gets its row in the live index; its
    /// delete-queue row comes when it ends or when the sweep finds it
    /// expired ([`Self::queue_delete`]). (Files of layout 1 kept both rows
    /// from the start; readers and sweeps handle either.)
    pub(super) fn insert_indexes(&mut self, s: &Session) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.by_subject()?
            .insert((s.subject.as_str(), id), ())
            .ctx("write subject index")?;
        self.by_client()?
            .insert((s.client_id.as_str(), id), ())
            .ctx("write client index")?;
        if s.ended.is_some() {
            return self.queue_delete(s.delete_after, id);
        }
        self.live()?
            .insert((s.expires_at, id), ())
            .ctx("write live index")?;
        if let Some(r) = &s.reference {
            self.references()?
                .insert((s.client_id.as_str(), *r), id)
                .ctx("write reference")?;
        }
        Ok(())
    }

    pub(super) fn queue_delete(&mut self, at: UnixTime, id: Id) -> StoreResult<()> {
        let last = self.last_deletion;
        let seq = next_in_second(&*self.deletions()?, at, last)?;
        self.deletions()?
            .insert((at, seq), id)
            .ctx("write delete queue")?;
        self.last_deletion = Some((at, seq));
        Ok(())
    }

    /// Drops the session's reference row, if it still holds it: only
    /// sessions that have not ended hold one.
    pub(super) fn remove_reference(&mut self, s: &Session) -> StoreResult<()> {
        let Some(r) = &s.reference else {
            return Ok(());
        };
        let key = (s.client_id.as_str(), *r);
        let held_by_this = self
            .references()?
            .get(key)
            .ctx("read reference")?
            .map(|v| v.value());
        if held_by_this == Some(*s.id.as_bytes()) {
            self.references()?.remove(key).ctx("remove reference")?;
        }
        Ok(())
    }

    /// Whether the session, which has not ended, still has its row in the
    /// live index. Only the expiry sweep removes the row of such a session,
    /// and only once it is due: one due after every sweep since the open
    /// ([`LIVE_SWEPT_TO`]) has it without a lookup.
    pub(super) fn has_live_row(&mut self, s: &Session) -> StoreResult<bool> {
        if self.live_swept_to()?.is_some_and(|to| s.expires_at > to) {
            return Ok(true);
        }
        Ok(self
            .live()?
            .get((s.expires_at, *s.id.as_bytes()))
            .ctx("read live index")?
            .is_some())
    }

    /// [`LIVE_SWEPT_TO`], read once per transaction.
    fn live_swept_to(&mut self) -> StoreResult<Option<i64>> {
        if let Some(to) = self.live_swept_to {
            return Ok(to);
        }
        let to = self
            .meta()?
            .get(LIVE_SWEPT_TO)
            .ctx("read live sweep position")?
            .map(|v| v.value() as i64);
        self.live_swept_to = Some(to);
        Ok(to)
    }

    /// Records that the expiry sweep has taken the rows due by `now`
    /// (those it got to: a sweep in batches leaves the rest for the next).
    pub(super) fn live_swept(&mut self, now: UnixTime) -> StoreResult<()> {
        if self.live_swept_to()?.is_some_and(|to| to >= now) {
            return Ok(());
        }
        self.meta()?
            .insert(LIVE_SWEPT_TO, now as u64)
            .ctx("write live sweep position")?;
        self.live_swept_to = Some(Some(now));
        Ok(())
    }

    /// Removes the session's live row if it has one; the row of an ended
    /// session leaves [`ENDED_LIVE`] with it.
    pub(super) fn remove_live_row(&mut self, s: &Session) -> StoreResult<()> {
        let removed = self
            .live()?
            .remove((s.expires_at, *s.id.as_bytes()))
            .ctx("remove live index")?
            .is_some();
        if removed && s.ended.is_some() {
            self.count_ended_live(-1)?;
        }
        Ok(())
    }

    /// Moves [`ENDED_LIVE`] by `delta`. (A record found corrupt by a sweep
    /// cannot say whether it had ended, so its row is never uncounted: the
    /// live count then reads one low; it never goes below zero.)
    pub(super) fn count_ended_live(&mut self, delta: i64) -> StoreResult<()> {
        let meta = self.meta()?;
        let now = meta
            .get(ENDED_LIVE)
            .ctx("read ended live count")?
            .map_or(0, |v| v.value());
        let next = now.saturating_add_signed(delta);
        meta.insert(ENDED_LIVE, next)
            .ctx("write ended live count")?;
        Ok(())
    }

    pub(super) fn remove_indexes(&mut self, s: &Session) -> StoreResult<()> {
        let id = *s.id.as_bytes();
        self.remove_live_row(s)?;
        self.remove_reference(s)?;
        self.by_subject()?
            .remove((s.subject.as_str(), id))
            .ctx("remove subject index")?;
        self.by_client()?
            .remove((s.client_id.as_str(), id))
            .ctx("remove client index")?;
        // The revoked row is left to its own sweep: it is due by now anyway
        // (retention never ends before the cover). The deletion row is the
        // sweep's to remove: it is the row being gone through.
        Ok(())
    }

    /// Queues the session's deletion at `at`. A row queued earlier at its
    /// former `delete_after` (by the expiry sweep, or at creation by an
    /// older file) is left behind: the sweep drops rows whose time is not
    /// the record's own.
    pub(super) fn set_delete_after(&mut self, s: &mut Session, at: UnixTime) -> StoreResult<()> {
        s.delete_after = at;
        self.queue_delete(at, *s.id.as_bytes())
    }

    /// [`AUDIT_SWEPT_AT`], read once per transaction.
    pub(super) fn audit_swept(&mut self) -> StoreResult<Option<(i64, u64)>> {
        if let Some(swept) = self.audit_swept {
            return Ok(swept);
        }
        let swept = read_cursor(&*self.meta()?, AUDIT_SWEPT_AT, AUDIT_SWEPT_SEQ)?;
        self.audit_swept = Some(swept);
        Ok(swept)
    }

    /// Moves the audit sweep's position to `key`.
    pub(super) fn set_audit_swept(&mut self, key: (i64, u64)) -> StoreResult<()> {
        self.write_cursor(AUDIT_SWEPT_AT, AUDIT_SWEPT_SEQ, Some(key))?;
        self.audit_swept = Some(Some(key));
        Ok(())
    }

    /// Keeps a position of [`read_cursor`]'s in `meta`; `None` removes it.
    pub(super) fn write_cursor(
        &mut self,
        at_key: &'static str,
        seq_key: &'static str,
        key: Option<(i64, u64)>,
    ) -> StoreResult<()> {
        let meta = self.meta()?;
        match key {
            Some((at, seq)) => {
                // The time's bits, stored as they are.
                meta.insert(at_key, at as u64).ctx("write sweep cursor")?;
                meta.insert(seq_key, seq).ctx("write sweep cursor")?;
            }
            None => {
                meta.remove(at_key).ctx("write sweep cursor")?;
                meta.remove(seq_key).ctx("write sweep cursor")?;
            }
        }
        Ok(())
    }

    /// A revocation row as builds of layouts 4 and 5 wrote it (tests of
    /// files those builds left).
    #[cfg(test)]
    pub(super) fn append_revoked(
        &mut self,
        ended_at: UnixTime,
        id: Id,
        cover_until: UnixTime,
    ) -> StoreResult<()> {
        let seq = next_in_second(&*self.revoked_by_end()?, ended_at, None)?;
        self.revoked_by_end()?
            .insert((ended_at, seq), (id, cover_until))
            .ctx("write revoked row")?;
        Ok(())
    }

    /// An audit row of its own, as builds of layouts before 6 wrote for
    /// every end (this one, only for an end behind the audit sweep).
    pub(super) fn append_audit(&mut self, rev: &Revocation) -> StoreResult<()> {
        let at = rev.ended.at;
        let seq = next_in_second(&*self.audit()?, at, None)?;
        let bytes = encode("audit", rev)?;
        self.audit()?
            .insert((at, seq), bytes.as_slice())
            .ctx("write audit")?;
        Ok(())
    }
}

/// The sequence number of a new row at `at` in a table keyed by (time,
/// sequence): rows of the same second keep their order. Only the writer's
/// transaction writes such a table, so after its first row of a second
/// (`last`), the next one's number is known without a scan.
fn next_in_second<V: redb::Value + 'static>(
    t: &impl ReadableTable<(i64, u64), V>,
    at: i64,
    last: Option<(i64, u64)>,
) -> StoreResult<u64> {
    if let Some((last_at, last_seq)) = last {
        if last_at == at {
            return Ok(last_seq.saturating_add(1));
        }
    }
    let mut same_second = t
        .range((at, 0u64)..=(at, u64::MAX))
        .ctx("scan time index")?;
    Ok(match same_second.next_back() {
        Some(row) => row.ctx("scan time index")?.0.value().1.saturating_add(1),
        None => 0,
    })
}
