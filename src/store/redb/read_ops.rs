//! Read operations, each on its own read transaction.

use super::*;

// ---------------------------------------------------------------------------
// read operations, each on its own read transaction

pub(super) fn read_list_clients(rt: &ReadTransaction) -> StoreResult<Vec<Client>> {
    let t = rt.open_table(CLIENTS).ctx("open clients")?;
    let rows = t.iter().ctx("scan clients")?;
    rows.map(|row| {
        let (_, v) = row.ctx("scan clients")?;
        decode("clients", v.value())
    })
    .collect()
}

pub(super) fn read_session(
    rt: &ReadTransaction,
    ends: &EndIndex,
    id: &SessionId,
) -> StoreResult<Option<Session>> {
    SessionReads::open(rt, ends)?.get(id.as_bytes())
}

pub(super) fn read_by_reference(
    rt: &ReadTransaction,
    ends: &EndIndex,
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
    let found = SessionReads::open(rt, ends)?.get(&id.value())?;
    Ok(found.filter(|s| s.ended.is_none()))
}

/// Candidates from the narrowest index the filter allows; the full scan
/// only happens when the caller asked for everything.
pub(super) fn candidate_sessions(
    rt: &ReadTransaction,
    ends: &EndIndex,
    filter: &SessionFilter,
) -> StoreResult<Vec<Session>> {
    let reads = SessionReads::open(rt, ends)?;
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
            let rows = reads.sessions.iter().ctx("scan sessions")?;
            return rows
                .map(|row| {
                    reads.complete(compact::decode_session(
                        row.ctx("scan sessions")?.1.value(),
                    )?)
                })
                .collect();
        }
    };
    reads.get_many(&ids)
}

pub(super) fn read_list_sessions(
    rt: &ReadTransaction,
    ends: &EndIndex,
    filter: &SessionFilter,
    now: UnixTime,
) -> StoreResult<Vec<Session>> {
    let mut out: Vec<Session> = candidate_sessions(rt, ends, filter)?
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

pub(super) fn read_not_ended(
    rt: &ReadTransaction,
    ends: &EndIndex,
    index: TableDefinition<(&str, Id), ()>,
    prefix: &str,
    client: Option<&ClientId>,
) -> StoreResult<Vec<SessionId>> {
    let ids = ids_under(&rt.open_table(index).ctx("open session index")?, prefix)?;
    Ok(SessionReads::open(rt, ends)?
        .get_many(&ids)?
        .into_iter()
        .filter(|s| s.ended.is_none())
        .filter(|s| client.is_none_or(|c| &s.client_id == c))
        .map(|s| s.id)
        .collect())
}

pub(super) fn read_active_revocations(
    rt: &ReadTransaction,
    now: UnixTime,
) -> StoreResult<Vec<(SessionId, UnixTime)>> {
    // Rows of earlier layouts, keyed by cover: only those still covering.
    let t = rt.open_table(REVOKED).ctx("open revoked")?;
    let rows = t
        .range::<(i64, Id)>((Bound::Excluded((now, MAX_ID)), Bound::Unbounded))
        .ctx("scan revoked")?;
    let mut out = rows
        .map(|row| {
            let (k, _) = row.ctx("scan revoked")?;
            let (until, id) = k.value();
            Ok((SessionId::from_bytes(id), until))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // Rows in the order of their ends: rows past their cover that the
    // sweep's cursor has not reached yet are left out here.
    let t = rt.open_table(REVOKED_BY_END).ctx("open revoked_by_end")?;
    for row in t.iter().ctx("scan revoked")? {
        let (_, v) = row.ctx("scan revoked")?;
        let (id, until) = v.value();
        if until > now {
            out.push((SessionId::from_bytes(id), until));
        }
    }
    // Ends of layout 6 hold their cover; they stay until the session is
    // deleted, which is never before the cover has passed. An undecodable
    // row (logged) counts as covering until the session's deletion, which
    // is never earlier than its cover: the load neither fails nor lets the
    // session's access tokens through.
    let t = rt.open_table(ENDS).ctx("open ends")?;
    for row in t.iter().ctx("scan ends")? {
        let (_, v) = row.ctx("scan ends")?;
        let (id, delete_after, record) = v.value();
        let cover = match decode::<EndCover>("ends", record) {
            Ok(record) => record.cover_until,
            Err(_) => Some(delete_after),
        };
        if let Some(until) = cover.filter(|&until| until > now) {
            out.push((SessionId::from_bytes(id), until));
        }
    }
    Ok(out)
}

/// The newest entries first (by the time of the end; of one time, those
/// in end rows first): the entries of end rows after the audit sweep's
/// position, and the audit rows of their own (of earlier layouts, or of
/// ends behind that position).
pub(super) fn read_audit_log(rt: &ReadTransaction, limit: usize) -> StoreResult<Vec<Revocation>> {
    let swept = read_cursor(
        &rt.open_table(META).ctx("open meta")?,
        AUDIT_SWEPT_AT,
        AUDIT_SWEPT_SEQ,
    )?;
    let ends = rt.open_table(ENDS).ctx("open ends")?;
    let mut out = Vec::new();
    for row in rows_after(&ends, swept, Bound::Unbounded)?.rev() {
        if out.len() >= limit {
            break;
        }
        let (_, v) = row.ctx("scan ends")?;
        let (id, _, record) = v.value();
        // An undecodable row (logged) is left out rather than failing the
        // whole log.
        let record = decode::<EndRecord>("ends", record).ok();
        out.extend(record.and_then(|r| r.audit_entry(id)));
    }
    let t = rt.open_table(AUDIT).ctx("open audit")?;
    for row in t.iter().ctx("scan audit")?.rev().take(limit) {
        out.push(decode("audit", row.ctx("scan audit")?.1.value())?);
    }
    // Both parts are newest first already; the sort is stable.
    out.sort_by_key(|r| std::cmp::Reverse(r.ended.at));
    out.truncate(limit);
    Ok(out)
}
