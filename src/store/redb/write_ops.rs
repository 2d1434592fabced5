//! Write operations, each run inside the writer's transaction.

use super::*;

// ---------------------------------------------------------------------------
// write operations, each run inside the writer's transaction

pub(super) fn insert_client(t: &mut Tables, c: &Client) -> StoreResult<()> {
    if t.clients()?
        .get(c.id.as_str())
        .ctx("read client")?
        .is_some()
    {
        return Err(StoreError::Conflict("client"));
    }
    t.put_client(c)
}

/// Compare-and-swap on the stored `secret_version`: the writer runs ops one
/// after another, so the check and the write cannot be split by another op.
pub(super) fn update_client(
    t: &mut Tables,
    c: &Client,
    expected_version: u32,
) -> StoreResult<bool> {
    match load_client(&*t.clients()?, c.id.as_str())? {
        Some(stored) if stored.secret_version == expected_version => {
            t.put_client(c)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub(super) fn delete_client(t: &mut Tables, id: &ClientId) -> StoreResult<bool> {
    Ok(t.clients()?
        .remove(id.as_str())
        .ctx("remove client")?
        .is_some())
}

/// Conflicts and a missing client are all detected before the first change,
/// so such an op leaves the shared transaction untouched. The client check
/// runs in the same transaction as the insert, after every earlier op of the
/// batch: a session is never created for a client whose delete came first.
pub(super) fn create_session(
    t: &mut Tables,
    s: &Session,
    refresh: Option<&RefreshRecord>,
) -> StoreResult<()> {
    if t.clients()?
        .get(s.client_id.as_str())
        .ctx("read client")?
        .is_none()
    {
        return Err(StoreError::Missing("client"));
    }
    if t.sessions()?
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
        if t.refresh()?
            .get(&r.hash)
            .ctx("read refresh token")?
            .is_some()
        {
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
pub(super) fn extend_access_cover(
    t: &mut Tables,
    id: &SessionId,
    until: UnixTime,
) -> StoreResult<bool> {
    match t.session(id.as_bytes())? {
        Some(s) if s.ended.is_none() => {
            raise_cover(t, s, until)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

pub(super) fn raise_cover(t: &mut Tables, mut s: Session, until: UnixTime) -> StoreResult<()> {
    if until > s.access_cover_until {
        s.access_cover_until = until;
        t.put_session(&s)?;
    }
    Ok(())
}

pub(super) fn rotate_refresh(
    t: &mut Tables,
    old: &TokenHash,
    new: &RefreshRecord,
    now: UnixTime,
    access_exp: UnixTime,
) -> StoreResult<RotateOutcome> {
    let Some(mut current) = load_refresh(&*t.refresh()?, old)? else {
        return Ok(RotateOutcome::NotCurrent);
    };
    if current.state != RefreshState::Current {
        return Ok(RotateOutcome::NotCurrent);
    }
    let session = match t.session(current.session_id.as_bytes())? {
        Some(s) if s.ended.is_none() => s,
        _ => return Ok(RotateOutcome::NotCurrent),
    };
    if t.refresh()?
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
    t.refresh()?
        .insert(old, bytes.as_slice())
        .ctx("write refresh token")?;
    t.put_refresh(new)?;
    raise_cover(t, session, access_exp)?;
    Ok(RotateOutcome::Rotated)
}

pub(super) fn end_one(
    t: &mut Tables,
    id: &SessionId,
    ended: &Ended,
    delete_after: UnixTime,
) -> StoreResult<Option<EndedSession>> {
    let Some(mut s) = t.session(id.as_bytes())? else {
        return Ok(None);
    };
    if s.ended.is_some() {
        return Ok(None);
    }
    // The live row stays until the session expires or is deleted (a
    // removal here would rewrite a page of the live index per end, in
    // random order a page of its own); it is counted as ended instead.
    t.remove_reference(&s)?;
    if t.has_live_row(&s)? {
        t.count_ended_live(1)?;
    }
    s.ended = Some(ended.clone());
    let keep_until = delete_after.max(s.access_cover_until);
    t.set_delete_after(&mut s, keep_until)?;
    // The record itself is left as it is (layout 5): the end is a row of
    // its own, appended with the others of the batch, and holds the
    // revocation and the audit entry too (layout 6).
    t.append_end(&s, ended, keep_until)?;
    Ok(Some(EndedSession {
        id: s.id,
        client_id: s.client_id,
        subject: s.subject,
        access_cover_until: s.access_cover_until,
    }))
}

pub(super) fn end_sessions(
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

pub(super) fn next_version(version: u64) -> StoreResult<u64> {
    version.checked_add(1).ok_or_else(|| StoreError::Corrupt {
        table: "grants",
        detail: "version overflow".into(),
    })
}

pub(super) fn put_grant(
    t: &mut Tables,
    id: GrantId,
    value: &[u8],
    expires_at: UnixTime,
) -> StoreResult<()> {
    let (kind, key) = id;
    let old = grant_head(&*t.grants()?, id)?;
    // Computed before any change, so a failure leaves the transaction as it was.
    let version = match old {
        Some((version, _)) => next_version(version)?,
        None => 1,
    };
    if let Some((_, old_expiry)) = old {
        t.grants_by_expiry()?
            .remove((old_expiry, kind, key))
            .ctx("remove grant index")?;
    }
    t.write_grant(id, version, expires_at, value)?;
    t.grants_by_expiry()?
        .insert((expires_at, kind, key), ())
        .ctx("write grant index")?;
    Ok(())
}

pub(super) fn swap_grant(
    t: &mut Tables,
    id: GrantId,
    expected_version: u64,
    new_value: Option<&[u8]>,
) -> StoreResult<bool> {
    let (kind, key) = id;
    let Some((version, expires_at)) = grant_head(&*t.grants()?, id)? else {
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
            t.grants()?.remove(id).ctx("remove grant")?;
            t.grants_by_expiry()?
                .remove((expires_at, kind, key))
                .ctx("remove grant index")?;
        }
    }
    Ok(true)
}

/// Deletes the session a deletion row (`at`, `id`) names, if its
/// retention has passed; the caller removes the row. A corrupt record is
/// deleted too (its time is up), leaving index rows that readers skip,
/// rather than blocking every later sweep. A row whose time is not the
/// record's `delete_after` is stale: the session's deletion moved after
/// the row was written (an expired session, queued by [`sweep_live`],
/// that was ended later; or a live session of a layout-1 file, which was
/// queued at its creation). Only the row goes.
pub(super) fn delete_session(t: &mut Tables, at: UnixTime, id: Id) -> StoreResult<bool> {
    match t.session(&id) {
        Ok(Some(s)) if s.delete_after != at => return Ok(false),
        Ok(Some(s)) => t.remove_indexes(&s)?,
        Ok(None) => {}
        Err(StoreError::Corrupt { .. }) => {
            tracing::error!(session = %SessionId::from_bytes(id), "sweeping corrupt session record");
        }
        Err(e) => return Err(e),
    }
    t.remove_end(id)?;
    Ok(t.sessions()?.remove(&id).ctx("remove session")?.is_some())
}

/// Returns the sessions deleted and the deletion rows gone through (a
/// stale row is gone through without deleting a session): rows of the
/// earlier layout first, at most `batch` rows in all.
pub(super) fn sweep_sessions(
    t: &mut Tables,
    now: UnixTime,
    batch: usize,
) -> StoreResult<(usize, usize)> {
    let mut deleted = 0;
    let legacy = due_keys(&*t.delete_queue()?, (now, MAX_ID), batch)?;
    for &(at, id) in &legacy {
        deleted += usize::from(delete_session(t, at, id)?);
        t.delete_queue()?
            .remove((at, id))
            .ctx("remove delete queue row")?;
    }
    let rows: Vec<((i64, u64), Id)> = {
        let rows = t
            .deletions()?
            .range(..=(now, u64::MAX))
            .ctx("scan delete queue")?;
        rows.take(batch - legacy.len())
            .map(|row| {
                row.map(|(k, v)| (k.value(), v.value()))
                    .ctx("scan delete queue")
            })
            .collect::<StoreResult<_>>()?
    };
    for &(key, id) in &rows {
        deleted += usize::from(delete_session(t, key.0, id)?);
        t.deletions()?.remove(key).ctx("remove delete queue row")?;
    }
    Ok((deleted, legacy.len() + rows.len()))
}

/// Expired sessions stay (until `delete_after`) but stop counting as
/// live: the live row gives way to a delete-queue row. The row of an
/// ended session just goes (the session was queued when it ended). A
/// corrupt record is queued at its expiry, so the session sweep deletes
/// it. Returns the sessions that expired and the rows gone through.
pub(super) fn sweep_live(
    t: &mut Tables,
    now: UnixTime,
    batch: usize,
) -> StoreResult<(usize, usize)> {
    let keys = due_keys(&*t.live()?, (now, MAX_ID), batch)?;
    // Recorded before a row goes: whatever row this sweep removes is due
    // by `now`.
    t.live_swept(now)?;
    let mut expired = 0;
    for &(expires_at, id) in &keys {
        t.live()?
            .remove((expires_at, id))
            .ctx("remove live index")?;
        match t.session(&id) {
            Ok(Some(s)) if s.ended.is_none() => {
                t.queue_delete(s.delete_after, id)?;
                expired += 1;
            }
            Ok(Some(_)) => t.count_ended_live(-1)?,
            Ok(None) => {}
            Err(StoreError::Corrupt { .. }) => {
                t.queue_delete(expires_at, id)?;
                expired += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((expired, keys.len()))
}

pub(super) fn sweep_refresh(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys = due_keys(&*t.refresh_by_expiry()?, (now, MAX_HASH), batch)?;
    for key in &keys {
        t.refresh()?.remove(&key.1).ctx("remove refresh token")?;
        t.refresh_by_expiry()?
            .remove(*key)
            .ctx("remove refresh index")?;
    }
    Ok(keys.len())
}

/// Revocation rows past their cover, at most `batch` of each table. Rows
/// of [`REVOKED_BY_END`] are in the order of their ends, not of their
/// covers, so a pass goes on from where the last one stopped (a cursor
/// in `meta`), looks at no more than [`REVOKED_SCAN_PER_BATCH`] rows per
/// row of its batch, and starts again from the first row once it has
/// reached the last: every row is looked at again within a bounded
/// number of passes, whatever the rows in front of it cover. Returns the
/// rows deleted.
pub(super) fn sweep_revoked(t: &mut Tables, now: UnixTime, batch: usize) -> StoreResult<usize> {
    let keys = due_keys(&*t.revoked()?, (now, MAX_ID), batch)?;
    for key in &keys {
        t.revoked()?.remove(*key).ctx("remove revoked row")?;
    }
    let from = read_cursor(&*t.meta()?, REVOKED_SWEPT_AT, REVOKED_SWEPT_SEQ)?;
    let limit = batch.saturating_mul(REVOKED_SCAN_PER_BATCH);
    let (due, last_seen, looked_at) = {
        let table = t.revoked_by_end()?;
        let rows = rows_after(&*table, from, Bound::Unbounded)?;
        let (mut due, mut last_seen, mut looked_at) = (Vec::new(), None, 0);
        for row in rows.take(limit) {
            let (key, value) = row.ctx("scan revoked")?;
            looked_at += 1;
            last_seen = Some(key.value());
            if value.value().1 <= now {
                due.push(key.value());
                if due.len() == batch {
                    break;
                }
            }
        }
        (due, last_seen, looked_at)
    };
    for key in &due {
        t.revoked_by_end()?.remove(*key).ctx("remove revoked row")?;
    }
    // Stopped early (a full batch, or the limit): go on from there next
    // time. Reached the last row: start again from the first.
    let stopped_early = due.len() == batch || looked_at == limit;
    let cursor = if stopped_early { last_seen } else { None };
    t.write_cursor(REVOKED_SWEPT_AT, REVOKED_SWEPT_SEQ, cursor)?;
    Ok(keys.len() + due.len())
}

/// Audit entries of ends before `before`, at most `batch` rows gone
/// through: the rows of [`AUDIT`] (earlier layouts) are deleted; the
/// [`ENDS`] rows, which stay with their session, are passed by a cursor
/// ([`AUDIT_SWEPT_AT`]) that the audit log does not read behind. Returns
/// the entries taken out and the rows gone through.
pub(super) fn sweep_audit(
    t: &mut Tables,
    before: UnixTime,
    batch: usize,
) -> StoreResult<(usize, usize)> {
    let keys: Vec<(i64, u64)> = {
        let rows = t.audit()?.range(..(before, 0u64)).ctx("scan audit")?;
        rows.take(batch)
            .map(|r| r.map(|(k, _)| k.value()).ctx("scan audit"))
            .collect::<StoreResult<_>>()?
    };
    for key in &keys {
        t.audit()?.remove(*key).ctx("remove audit row")?;
    }
    let from = t.audit_swept()?;
    let (mut entries, mut passed, mut last) = (keys.len(), keys.len(), None);
    {
        let ends = t.ends()?;
        let rows = rows_after(&*ends, from, Bound::Excluded((before, 0)))?;
        for row in rows.take(batch - keys.len()) {
            let (key, v) = row.ctx("scan ends")?;
            let (id, _, record) = v.value();
            passed += 1;
            last = Some(key.value());
            // An undecodable row (logged) is passed all the same: it
            // must not hold up every later sweep.
            let record = decode::<EndRecord>("ends", record).ok();
            entries += usize::from(record.and_then(|r| r.audit_entry(id)).is_some());
        }
    }
    if let Some(last) = last {
        t.set_audit_swept(last)?;
    }
    Ok((entries, passed))
}

/// Returns the grants deleted and the index rows gone through.
pub(super) fn sweep_grants(
    t: &mut Tables,
    now: UnixTime,
    batch: usize,
) -> StoreResult<(usize, usize)> {
    let keys: Vec<(i64, u8, TokenHash)> = {
        let rows = t
            .grants_by_expiry()?
            .range(..=(now, u8::MAX, MAX_HASH))
            .ctx("scan grant index")?;
        rows.take(batch)
            .map(|r| r.map(|(k, _)| k.value()).ctx("scan grant index"))
            .collect::<StoreResult<_>>()?
    };
    let mut deleted = 0;
    for &(expires_at, kind, key) in &keys {
        t.grants_by_expiry()?
            .remove((expires_at, kind, key))
            .ctx("remove grant index")?;
        // The index is kept in step with the rows; should a row ever be
        // stale, the grant it names is left to its own row.
        let id = (kind, key);
        if grant_head(&*t.grants()?, id)?.is_some_and(|(_, at)| at == expires_at) {
            t.grants()?.remove(id).ctx("remove grant")?;
            deleted += 1;
        }
    }
    Ok((deleted, keys.len()))
}

pub(super) fn sweep(
    t: &mut Tables,
    now: UnixTime,
    audit_before: UnixTime,
    batch: usize,
) -> StoreResult<SweepStats> {
    // The audit first: an end's entry is in the row its session's
    // deletion removes. Then expiry: a session it queues for a time
    // already past is deleted in the same pass.
    let (audit, audit_rows) = sweep_audit(t, audit_before, batch)?;
    let (expired, live_rows) = sweep_live(t, now, batch)?;
    let (sessions, queue_rows) = sweep_sessions(t, now, batch)?;
    let refresh_tokens = sweep_refresh(t, now, batch)?;
    let revocations = sweep_revoked(t, now, batch)?;
    let (grants, grant_rows) = sweep_grants(t, now, batch)?;
    let gone_through = [
        live_rows,
        queue_rows,
        refresh_tokens,
        revocations,
        audit_rows,
        grant_rows,
    ];
    Ok(SweepStats {
        sessions,
        expired,
        refresh_tokens,
        revocations,
        audit,
        grants,
        more: gone_through.iter().any(|&n| n >= batch),
    })
}
