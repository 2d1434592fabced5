//! The `clients` table: one JSON record per client id. Updates and
//! deletes notify the fleet (`c:<id>`, see `feed`), which drops its cached
//! credentials of the client.

use sqlx::PgPool;

use super::codec::{db, decode, encode};
use crate::core::ids::ClientId;
use crate::core::model::Client;
use crate::store::StoreResult;

/// A duplicate id fails on `clients_pkey`, which maps to `Conflict("client")`.
pub(super) async fn insert(pool: &PgPool, c: &Client) -> StoreResult<()> {
    sqlx::query("INSERT INTO clients (id, body) VALUES ($1, $2::jsonb)")
        .bind(c.id.as_str())
        .bind(encode("clients", c)?)
        .execute(pool)
        .await
        .map_err(db("clients"))?;
    Ok(())
}

/// Compare-and-swap on the stored `secret_version` (a record written before
/// the field existed reads as 0, as serde's default does). Being an UPDATE,
/// it takes the row lock and re-checks the condition on the newest row
/// version, so of two updates from the same version, the second to commit
/// finds the first one's version and changes nothing.
pub(super) async fn update(pool: &PgPool, c: &Client, expected_version: u32) -> StoreResult<bool> {
    let done = sqlx::query(
        "WITH changed AS ( \
             UPDATE clients SET body = $2::jsonb \
             WHERE id = $1 AND COALESCE((body->>'secret_version')::bigint, 0) = $3 \
             RETURNING id) \
         SELECT pg_notify(tessera_channel(), 'c:' || id) FROM changed",
    )
    .bind(c.id.as_str())
    .bind(encode("clients", c)?)
    .bind(i64::from(expected_version))
    .execute(pool)
    .await
    .map_err(db("clients"))?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn get(pool: &PgPool, id: &ClientId) -> StoreResult<Option<Client>> {
    let body: Option<String> = sqlx::query_scalar("SELECT body::text FROM clients WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db("clients"))?;
    body.map(|b| decode("clients", &b)).transpose()
}

/// In id order (byte order, as the embedded store lists them).
pub(super) async fn list(pool: &PgPool) -> StoreResult<Vec<Client>> {
    let bodies: Vec<String> =
        sqlx::query_scalar(r#"SELECT body::text FROM clients ORDER BY id COLLATE "C""#)
            .fetch_all(pool)
            .await
            .map_err(db("clients"))?;
    bodies.iter().map(|b| decode("clients", b)).collect()
}

pub(super) async fn delete(pool: &PgPool, id: &ClientId) -> StoreResult<bool> {
    let done = sqlx::query(
        "WITH gone AS (DELETE FROM clients WHERE id = $1 RETURNING id) \
         SELECT pg_notify(tessera_channel(), 'c:' || id) FROM gone",
    )
    .bind(id.as_str())
    .execute(pool)
    .await
    .map_err(db("clients"))?;
    Ok(done.rows_affected() > 0)
}
