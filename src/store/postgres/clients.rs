//! The `clients` table: one JSON record per client id.

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

pub(super) async fn update(pool: &PgPool, c: &Client) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE clients SET body = $2::jsonb WHERE id = $1")
        .bind(c.id.as_str())
        .bind(encode("clients", c)?)
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
    let done = sqlx::query("DELETE FROM clients WHERE id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await
        .map_err(db("clients"))?;
    Ok(done.rows_affected() > 0)
}
