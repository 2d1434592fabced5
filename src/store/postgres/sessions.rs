//! Sessions and their refresh tokens: creating, reading, rotating, ending.
//!
//! The session's `body` holds the whole record; statements that change a
//! field also copied into a column (`access_cover_until`, `ended`,
//! `delete_after`) change both in the same statement with `jsonb_set`.

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::codec::{db, decode, encode, session_id, uuid};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{Ended, RefreshRecord, RefreshState, Session, SessionFilter, TokenHash};
use crate::store::{EndedSession, RotateOutcome, StoreError, StoreResult};

const SESSION_COLUMNS: &str = "id, client_id, subject, reference, created_at, expires_at, \
     access_cover_until, delete_after, ended, body";
const SESSION_VALUES: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb";

/// Raises the cover of a session that is not ended. Being an UPDATE, it
/// takes the row lock and re-checks `ended` on the newest row version, so
/// an end that commits first wins, and an end that comes later waits for
/// this one and records the raised cover.
const RAISE_COVER: &str = "UPDATE sessions SET \
         access_cover_until = GREATEST(access_cover_until, $2), \
         body = jsonb_set(body, '{access_cover_until}', \
                          to_jsonb(GREATEST(access_cover_until, $2))) \
     WHERE id = $1 AND ended IS NULL";

fn state_name(state: &RefreshState) -> &'static str {
    match state {
        RefreshState::Current => "current",
        RefreshState::Retired { .. } => "retired",
    }
}

fn bind_session<'q>(
    q: Query<'q, Postgres, PgArguments>,
    s: &Session,
) -> StoreResult<Query<'q, Postgres, PgArguments>> {
    let ended = s
        .ended
        .as_ref()
        .map(|e| encode("sessions", e))
        .transpose()?;
    Ok(q.bind(uuid(&s.id))
        .bind(s.client_id.as_str().to_owned())
        .bind(s.subject.as_str().to_owned())
        .bind(s.reference.map(|r| r.to_vec()))
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.access_cover_until)
        .bind(s.delete_after)
        .bind(ended)
        .bind(encode("sessions", s)?))
}

/// One statement, so the session and its first refresh token land together
/// or not at all. A live reference already in use fails on the partial
/// unique index `sessions_live_reference`: `Conflict("reference")`.
///
/// The session row is inserted only if its client's row exists, and that
/// row is locked `FOR KEY SHARE` (a locking sub-SELECT is not turned into a
/// join, so the lock is taken). A `DELETE` of the client conflicts with
/// that lock: one that comes later waits until this insert commits, and
/// then finds the session when it looks for the client's sessions; one
/// that committed first leaves no row to lock (under READ COMMITTED a row
/// deleted after the statement's snapshot is skipped once the deleter
/// commits), so nothing is inserted and the answer is `Missing("client")`.
pub(super) async fn create_session(
    pool: &PgPool,
    s: &Session,
    refresh: Option<&RefreshRecord>,
) -> StoreResult<()> {
    let insert_session = format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) SELECT {SESSION_VALUES} \
         WHERE EXISTS (SELECT 1 FROM clients WHERE id = $2 FOR KEY SHARE)"
    );
    let sql = match refresh {
        None => insert_session,
        Some(_) => format!(
            "WITH s AS ({insert_session} RETURNING id) \
             INSERT INTO refresh (hash, session_id, state, expires_at, body) \
             SELECT $11, $12, $13, $14, $15::jsonb FROM s"
        ),
    };
    let mut q = bind_session(sqlx::query(&sql), s)?;
    if let Some(r) = refresh {
        q = q
            .bind(r.hash.to_vec())
            .bind(uuid(&r.session_id))
            .bind(state_name(&r.state))
            .bind(r.expires_at)
            .bind(encode("refresh", r)?);
    }
    // With a refresh token, its row is inserted exactly when the session's is.
    let done = q.execute(pool).await.map_err(db("sessions"))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Missing("client"));
    }
    Ok(())
}

fn decode_sessions(bodies: &[String]) -> StoreResult<Vec<Session>> {
    bodies.iter().map(|b| decode("sessions", b)).collect()
}

pub(super) async fn get_session(pool: &PgPool, id: &SessionId) -> StoreResult<Option<Session>> {
    let body: Option<String> = sqlx::query_scalar("SELECT body::text FROM sessions WHERE id = $1")
        .bind(uuid(id))
        .fetch_optional(pool)
        .await
        .map_err(db("sessions"))?;
    body.map(|b| decode("sessions", &b)).transpose()
}

pub(super) async fn find_by_reference(
    pool: &PgPool,
    client: &ClientId,
    reference: &TokenHash,
) -> StoreResult<Option<Session>> {
    let body: Option<String> = sqlx::query_scalar(
        "SELECT body::text FROM sessions \
         WHERE client_id = $1 AND reference = $2 AND ended IS NULL",
    )
    .bind(client.as_str())
    .bind(&reference[..])
    .fetch_optional(pool)
    .await
    .map_err(db("sessions"))?;
    body.map(|b| decode("sessions", &b)).transpose()
}

/// One statement text per filter shape (rather than `$1 IS NULL OR …`), so
/// each prepared statement gets a plan that uses the right index.
pub(super) async fn list_sessions(
    pool: &PgPool,
    filter: &SessionFilter,
    now: UnixTime,
) -> StoreResult<Vec<Session>> {
    let mut sql = String::from("SELECT body::text FROM sessions WHERE true");
    let mut n = 0;
    let mut param = || {
        n += 1;
        n
    };
    if filter.subject.is_some() {
        sql += &format!(" AND subject = ${}", param());
    }
    if filter.client_id.is_some() {
        sql += &format!(" AND client_id = ${}", param());
    }
    if !filter.include_ended {
        sql += &format!(" AND ended IS NULL AND expires_at > ${}", param());
    }
    // LIMIT NULL is no limit.
    sql += &format!(" ORDER BY created_at DESC, id DESC LIMIT ${}", param());

    let mut q = sqlx::query_scalar::<_, String>(&sql);
    if let Some(subject) = &filter.subject {
        q = q.bind(subject.as_str());
    }
    if let Some(client) = &filter.client_id {
        q = q.bind(client.as_str());
    }
    if !filter.include_ended {
        q = q.bind(now);
    }
    let limit = (filter.limit > 0).then(|| super::codec::count(filter.limit));
    let bodies = q
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(db("sessions"))?;
    decode_sessions(&bodies)
}

pub(super) async fn extend_access_cover(
    pool: &PgPool,
    id: &SessionId,
    until: UnixTime,
) -> StoreResult<bool> {
    let done = sqlx::query(RAISE_COVER)
        .bind(uuid(id))
        .bind(until)
        .execute(pool)
        .await
        .map_err(db("sessions"))?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn get_refresh(
    pool: &PgPool,
    hash: &TokenHash,
) -> StoreResult<Option<RefreshRecord>> {
    let body: Option<String> = sqlx::query_scalar("SELECT body::text FROM refresh WHERE hash = $1")
        .bind(&hash[..])
        .fetch_optional(pool)
        .await
        .map_err(db("refresh"))?;
    body.map(|b| decode("refresh", &b)).transpose()
}

/// Nothing was written, or nothing needs keeping: roll back, and report
/// only in the log if even that fails (the connection is then discarded).
async fn abandon(tx: Transaction<'_, Postgres>) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "rollback failed");
    }
}

/// Locks the old token's row first (`FOR UPDATE`): a concurrent rotation of
/// the same token, from any node, waits here and then finds it retired.
/// The session row is locked next by [`RAISE_COVER`]; nothing locks the two
/// in the other order, so rotations and ends cannot deadlock.
pub(super) async fn rotate_refresh(
    pool: &PgPool,
    old: &TokenHash,
    new: &RefreshRecord,
    now: UnixTime,
    access_exp: UnixTime,
) -> StoreResult<RotateOutcome> {
    let retired = encode(
        "refresh",
        &RefreshState::Retired {
            at: now,
            successor: new.hash,
        },
    )?;
    let new_body = encode("refresh", new)?;
    let mut tx = pool.begin().await.map_err(db("refresh"))?;
    let locked: Option<(Uuid, String)> =
        sqlx::query_as("SELECT session_id, state FROM refresh WHERE hash = $1 FOR UPDATE")
            .bind(&old[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("refresh"))?;
    let session = match locked {
        Some((session, state)) if state == "current" => session,
        _ => {
            abandon(tx).await;
            return Ok(RotateOutcome::NotCurrent);
        }
    };
    let raised = sqlx::query(RAISE_COVER)
        .bind(session)
        .bind(access_exp)
        .execute(&mut *tx)
        .await
        .map_err(db("sessions"))?;
    if raised.rows_affected() == 0 {
        abandon(tx).await;
        return Ok(RotateOutcome::NotCurrent);
    }
    sqlx::query(
        "UPDATE refresh SET state = 'retired', body = jsonb_set(body, '{state}', $2::jsonb) \
         WHERE hash = $1",
    )
    .bind(&old[..])
    .bind(retired)
    .execute(&mut *tx)
    .await
    .map_err(db("refresh"))?;
    sqlx::query(
        "INSERT INTO refresh (hash, session_id, state, expires_at, body) \
         VALUES ($1, $2, $3, $4, $5::jsonb)",
    )
    .bind(new.hash.to_vec())
    .bind(uuid(&new.session_id))
    .bind(state_name(&new.state))
    .bind(new.expires_at)
    .bind(new_body)
    .execute(&mut *tx)
    .await
    .map_err(db("refresh"))?;
    tx.commit().await.map_err(db("refresh"))?;
    Ok(RotateOutcome::Rotated)
}

/// One statement: lock the listed sessions that are not ended, in id order
/// (so overlapping calls from several nodes queue instead of deadlocking;
/// a waiter re-checks `ended IS NULL` once the holder commits), end them,
/// and append their revocation rows and audit records. The other nodes
/// hear of every ended session whose access tokens may still verify
/// through `notified` (a CTE that is evaluated because the final SELECT
/// reads it), on commit.
const END_SESSIONS: &str = "\
WITH target AS (
    SELECT id FROM sessions
    WHERE id = ANY($1) AND ended IS NULL
    ORDER BY id
    FOR UPDATE
), done AS (
    UPDATE sessions s SET
        ended = $2::jsonb,
        delete_after = GREATEST($3, s.access_cover_until),
        body = jsonb_set(jsonb_set(s.body, '{ended}', $2::jsonb),
                         '{delete_after}', to_jsonb(GREATEST($3, s.access_cover_until)))
    FROM target
    WHERE s.id = target.id AND s.ended IS NULL
    RETURNING s.id, s.client_id, s.subject, s.access_cover_until
), revoked_rows AS (
    INSERT INTO revoked (session_id, cover_until)
    SELECT id, access_cover_until FROM done WHERE access_cover_until > $4
    ON CONFLICT (session_id)
        DO UPDATE SET cover_until = GREATEST(revoked.cover_until, EXCLUDED.cover_until)
), audit_rows AS (
    INSERT INTO audit (at, body)
    SELECT $4, jsonb_build_object('session_id', id, 'client_id', client_id,
                                  'subject', subject, 'ended', $2::jsonb)
    FROM done ORDER BY id
), notified AS (
    SELECT pg_notify(tessera_channel(),
                     'e:' || string_agg(id::text || ':' || access_cover_until, ','))
    FROM (SELECT id, access_cover_until,
                 (row_number() OVER (ORDER BY id) - 1) / $5 AS chunk
          FROM done WHERE access_cover_until > $4) live
    GROUP BY chunk
)
SELECT id, client_id, subject, access_cover_until FROM done
WHERE (SELECT count(*) FROM notified) >= 0";

pub(super) async fn end_sessions(
    pool: &PgPool,
    ids: &[SessionId],
    ended: &Ended,
    delete_after: UnixTime,
) -> StoreResult<Vec<EndedSession>> {
    let ids: Vec<Uuid> = ids.iter().map(uuid).collect();
    let rows: Vec<(Uuid, String, String, i64)> = sqlx::query_as(END_SESSIONS)
        .bind(ids)
        .bind(encode("sessions", ended)?)
        .bind(delete_after)
        .bind(ended.at)
        .bind(super::feed::ENDED_PER_NOTIFY)
        .fetch_all(pool)
        .await
        .map_err(db("sessions"))?;
    rows.into_iter()
        .map(|(id, client, subject, cover)| {
            let corrupt = |e: crate::core::ids::ParseIdError| StoreError::Corrupt {
                table: "sessions",
                detail: e.to_string(),
            };
            Ok(EndedSession {
                id: session_id(id),
                client_id: ClientId::parse(&client).map_err(corrupt)?,
                subject: Subject::parse(&subject).map_err(corrupt)?,
                access_cover_until: cover,
            })
        })
        .collect()
}

pub(super) async fn sessions_of_subject(
    pool: &PgPool,
    subject: &Subject,
    client: Option<&ClientId>,
) -> StoreResult<Vec<SessionId>> {
    let ids: Vec<Uuid> = match client {
        None => sqlx::query_scalar("SELECT id FROM sessions WHERE subject = $1 AND ended IS NULL")
            .bind(subject.as_str()),
        Some(c) => sqlx::query_scalar(
            "SELECT id FROM sessions WHERE subject = $1 AND client_id = $2 AND ended IS NULL",
        )
        .bind(subject.as_str())
        .bind(c.as_str()),
    }
    .fetch_all(pool)
    .await
    .map_err(db("sessions"))?;
    Ok(ids.into_iter().map(session_id).collect())
}

pub(super) async fn sessions_of_client(
    pool: &PgPool,
    client: &ClientId,
) -> StoreResult<Vec<SessionId>> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM sessions WHERE client_id = $1 AND ended IS NULL")
            .bind(client.as_str())
            .fetch_all(pool)
            .await
            .map_err(db("sessions"))?;
    Ok(ids.into_iter().map(session_id).collect())
}
