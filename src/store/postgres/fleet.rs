//! What the nodes of a fleet share besides sessions and clients: the
//! signing keys (`signing_keys`) and a few named secrets (`fleet_meta`).
//! Every key change notifies the fleet (`k`, see `feed`).

use async_trait::async_trait;
use sqlx::PgPool;

use super::codec::db;
use super::PgStore;
use crate::core::clock::UnixTime;
use crate::core::keys::{KeyError, KeyVault, StoredKey};
use crate::store::{StoreError, StoreResult};

/// The advisory lock of key changes (any constant of our own: "tesskey1").
const KEYS_LOCK: i64 = 0x7465_7373_6b65_7931;

/// Signing keys kept in the database, shared by every node.
#[derive(Debug, Clone)]
pub struct PgVault {
    store: PgStore,
}

impl PgStore {
    /// The key vault of this database.
    pub fn key_vault(&self) -> PgVault {
        PgVault {
            store: self.clone(),
        }
    }

    /// The value stored under `name`, storing `proposed` first if there is
    /// none: nodes starting together all end up with the first one stored.
    pub async fn shared_value(&self, name: &str, proposed: &str) -> StoreResult<String> {
        let work = async {
            sqlx::query(
                "INSERT INTO fleet_meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(proposed)
            .execute(&self.pool)
            .await
            .map_err(db("fleet_meta"))?;
            sqlx::query_scalar("SELECT value FROM fleet_meta WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(db("fleet_meta"))
        };
        self.run("shared_value", work).await
    }
}

fn key_error(e: StoreError) -> KeyError {
    KeyError::Unavailable(e.to_string())
}

type KeyRow = (String, String, i64, Option<i64>, String);

async fn load(pool: &PgPool) -> StoreResult<Vec<StoredKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT kid, alg, created_at, retire_at, private_pkcs8 FROM signing_keys ORDER BY kid",
    )
    .fetch_all(pool)
    .await
    .map_err(db("signing_keys"))?;
    Ok(rows
        .into_iter()
        .map(
            |(kid, alg, created_at, retire_at, private_pkcs8)| StoredKey {
                kid,
                alg,
                created_at,
                retire_at,
                private_pkcs8,
            },
        )
        .collect())
}

const INSERT_KEY: &str =
    "INSERT INTO signing_keys (kid, alg, created_at, retire_at, private_pkcs8) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING";
const NOTIFY_KEYS: &str = "SELECT pg_notify(tessera_channel(), 'k')";

fn insert_key(
    key: &StoredKey,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(INSERT_KEY)
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(key.created_at)
        .bind(key.retire_at)
        .bind(&key.private_pkcs8)
}

/// Key changes are serialised across nodes by a transaction-scoped
/// advisory lock: of nodes starting together on an empty database exactly
/// one stores its first keys, and of two rotations at once the second
/// retires the first one's key.
async fn lock_keys(tx: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(KEYS_LOCK)
        .execute(tx)
        .await
        .map_err(db("signing_keys"))?;
    Ok(())
}

/// Stores `keys` and tells the fleet, in the caller's transaction.
async fn insert_and_notify(tx: &mut sqlx::PgConnection, keys: &[StoredKey]) -> StoreResult<()> {
    for key in keys {
        insert_key(key)
            .execute(&mut *tx)
            .await
            .map_err(db("signing_keys"))?;
    }
    sqlx::query(NOTIFY_KEYS)
        .execute(&mut *tx)
        .await
        .map_err(db("signing_keys"))?;
    Ok(())
}

async fn create_first(pool: &PgPool, first: &[StoredKey]) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(db("signing_keys"))?;
    lock_keys(&mut tx).await?;
    let current: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retire_at IS NULL)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("signing_keys"))?;
    if !current {
        insert_and_notify(&mut tx, first).await?;
    }
    tx.commit().await.map_err(db("signing_keys"))
}

async fn rotate(pool: &PgPool, fresh: &StoredKey, retire_at: UnixTime) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(db("signing_keys"))?;
    lock_keys(&mut tx).await?;
    sqlx::query("UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL")
        .bind(retire_at)
        .execute(&mut *tx)
        .await
        .map_err(db("signing_keys"))?;
    insert_and_notify(&mut tx, std::slice::from_ref(fresh)).await?;
    tx.commit().await.map_err(db("signing_keys"))
}

async fn delete(pool: &PgPool, kids: &[String]) -> StoreResult<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM signing_keys WHERE kid = ANY($1) RETURNING kid) \
         SELECT pg_notify(tessera_channel(), 'k') FROM (SELECT count(*) AS n FROM gone) g \
         WHERE g.n > 0",
    )
    .bind(kids)
    .execute(pool)
    .await
    .map_err(db("signing_keys"))?;
    Ok(())
}

#[async_trait]
impl KeyVault for PgVault {
    async fn load(&self) -> Result<Vec<StoredKey>, KeyError> {
        let s = &self.store;
        s.run("load_keys", load(&s.pool)).await.map_err(key_error)
    }

    async fn create_first(&self, first: &[StoredKey]) -> Result<(), KeyError> {
        let s = &self.store;
        s.run("create_first_key", create_first(&s.pool, first))
            .await
            .map_err(key_error)
    }

    async fn rotate(&self, fresh: &StoredKey, retire_at: UnixTime) -> Result<(), KeyError> {
        let s = &self.store;
        s.run("rotate_keys", rotate(&s.pool, fresh, retire_at))
            .await
            .map_err(key_error)
    }

    async fn delete(&self, kids: &[String]) -> Result<(), KeyError> {
        let s = &self.store;
        s.run("delete_keys", delete(&s.pool, kids))
            .await
            .map_err(key_error)
    }
}
