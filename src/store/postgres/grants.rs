//! The `grants` table: short-lived records with compare-and-swap on
//! `version`, each a single statement, so concurrent callers on any node
//! are ordered by the row lock and exactly one swap of a version wins.

use sqlx::PgPool;

use super::codec::db;
use crate::core::clock::UnixTime;
use crate::core::model::TokenHash;
use crate::store::{Grant, GrantKind, StoreError, StoreResult};

pub(super) async fn put(
    pool: &PgPool,
    kind: GrantKind,
    key: &TokenHash,
    value: &[u8],
    expires_at: UnixTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO grants (kind, key, value, version, expires_at) VALUES ($1, $2, $3, 1, $4) \
         ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, \
             version = grants.version + 1, expires_at = EXCLUDED.expires_at",
    )
    .bind(kind.as_str())
    .bind(&key[..])
    .bind(value)
    .bind(expires_at)
    .execute(pool)
    .await
    .map_err(db("grants"))?;
    Ok(())
}

pub(super) async fn get(
    pool: &PgPool,
    kind: GrantKind,
    key: &TokenHash,
) -> StoreResult<Option<Grant>> {
    let row: Option<(Vec<u8>, i64, i64)> = sqlx::query_as(
        "SELECT value, version, expires_at FROM grants WHERE kind = $1 AND key = $2",
    )
    .bind(kind.as_str())
    .bind(&key[..])
    .fetch_optional(pool)
    .await
    .map_err(db("grants"))?;
    row.map(|(value, version, expires_at)| {
        let version = u64::try_from(version).map_err(|_| StoreError::Corrupt {
            table: "grants",
            detail: format!("negative version {version}"),
        })?;
        Ok(Grant {
            value,
            version,
            expires_at,
        })
    })
    .transpose()
}

/// `UPDATE`/`DELETE … WHERE version = $expected`: the row lock orders
/// concurrent swaps, and each re-checks the version of the row it finally
/// sees, so only the first of them changes anything.
pub(super) async fn swap(
    pool: &PgPool,
    kind: GrantKind,
    key: &TokenHash,
    expected_version: u64,
    new_value: Option<&[u8]>,
) -> StoreResult<bool> {
    // No stored version is that high.
    let Ok(expected) = i64::try_from(expected_version) else {
        return Ok(false);
    };
    let q = match new_value {
        Some(value) => sqlx::query(
            "UPDATE grants SET value = $4, version = version + 1 \
             WHERE kind = $1 AND key = $2 AND version = $3",
        )
        .bind(kind.as_str())
        .bind(&key[..])
        .bind(expected)
        .bind(value),
        None => sqlx::query("DELETE FROM grants WHERE kind = $1 AND key = $2 AND version = $3")
            .bind(kind.as_str())
            .bind(&key[..])
            .bind(expected),
    };
    let done = q.execute(pool).await.map_err(db("grants"))?;
    Ok(done.rows_affected() > 0)
}
