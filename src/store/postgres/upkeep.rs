//! Health, the revocation and audit trails, counting, and sweeping.

use sqlx::PgPool;
use uuid::Uuid;

use super::codec::{count, db, decode, rows, session_id};
use crate::core::clock::UnixTime;
use crate::core::ids::SessionId;
use crate::core::model::Revocation;
use crate::store::{StoreError, StoreResult, SweepStats};

/// Reachable, and a primary (a standby answers but cannot be written).
pub(super) async fn ping(pool: &PgPool) -> StoreResult<()> {
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .map_err(db("ping"))?;
    if standby {
        tracing::error!("connected to a PostgreSQL standby");
        return Err(StoreError::Unavailable(
            "the database is a read-only standby".into(),
        ));
    }
    Ok(())
}

pub(super) async fn active_revocations(
    pool: &PgPool,
    now: UnixTime,
) -> StoreResult<Vec<(SessionId, UnixTime)>> {
    let found: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT session_id, cover_until FROM revoked WHERE cover_until > $1 \
         ORDER BY cover_until, session_id",
    )
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(db("revoked"))?;
    Ok(found
        .into_iter()
        .map(|(id, until)| (session_id(id), until))
        .collect())
}

pub(super) async fn audit_log(pool: &PgPool, limit: usize) -> StoreResult<Vec<Revocation>> {
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT body::text FROM audit ORDER BY at DESC, id DESC LIMIT $1")
            .bind(count(limit))
            .fetch_all(pool)
            .await
            .map_err(db("audit"))?;
    bodies.iter().map(|b| decode("audit", b)).collect()
}

/// Against the database's clock, so every node counts alike. The cast
/// keeps the comparison on bigint, so it is an index-only scan of
/// `sessions_live_expiry` (which holds only sessions that are not ended).
pub(super) async fn live_count(pool: &PgPool) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions \
         WHERE ended IS NULL AND expires_at > floor(extract(epoch FROM now()))::bigint",
    )
    .fetch_one(pool)
    .await
    .map_err(db("sessions"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Each statement deletes at most `$2` rows picked by `SKIP LOCKED`: it
/// holds only the locks of the rows it deletes, never waits for a row a
/// request is using, and cannot deadlock with one. Several nodes may sweep
/// at once; they take different rows.
const SWEEPS: [(&str, &str); 5] = [
    (
        "sessions",
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE delete_after <= $1 \
         ORDER BY delete_after LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ),
    (
        "refresh",
        "DELETE FROM refresh WHERE hash IN (SELECT hash FROM refresh WHERE expires_at <= $1 \
         ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ),
    (
        "revoked",
        "DELETE FROM revoked WHERE session_id IN (SELECT session_id FROM revoked \
         WHERE cover_until <= $1 ORDER BY cover_until LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ),
    (
        "audit",
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 \
         ORDER BY at, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ),
    (
        "grants",
        "DELETE FROM grants WHERE (kind, key) IN (SELECT kind, key FROM grants \
         WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    ),
];

/// Every kind in its own short statement (and so its own transaction):
/// no lock is held across kinds.
pub(super) async fn sweep(
    pool: &PgPool,
    now: UnixTime,
    audit_before: UnixTime,
    batch: usize,
) -> StoreResult<SweepStats> {
    let mut deleted = [0usize; 5];
    for (slot, (table, sql)) in deleted.iter_mut().zip(SWEEPS) {
        let cutoff = if table == "audit" { audit_before } else { now };
        let done = sqlx::query(sql)
            .bind(cutoff)
            .bind(count(batch))
            .execute(pool)
            .await
            .map_err(db(table))?;
        *slot = rows(done.rows_affected());
    }
    // Each statement deletes every row it selects.
    let more = deleted.iter().any(|&n| n >= batch);
    let [sessions, refresh_tokens, revocations, audit, grants] = deleted;
    Ok(SweepStats {
        sessions,
        expired: 0,
        refresh_tokens,
        revocations,
        audit,
        grants,
        more,
    })
}
