//! Connecting (pool, schema, durability settings) and migrating.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use super::codec::{db, from_sqlx};
use crate::store::{StoreError, StoreResult};

/// How a [`PgStore`](super::PgStore) connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Pool size. Each node holds at most this many server connections.
    pub max_connections: u32,
    /// How long an operation waits for a free (or new) connection.
    pub acquire_timeout: Duration,
    /// Upper bound on any one operation, waiting for a connection included.
    pub op_timeout: Duration,
    /// Work in this schema (created if missing) instead of the URL's
    /// `search_path`.
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
            schema: None,
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    tracing::error!(error = %e, "{what}");
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// A schema name that needs no quoting anywhere (also inside the startup
/// `options` string, which has no quoting of its own).
fn check_schema_name(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes"
        )))
    }
}

/// One connection before the pool: creates the schema if asked, and tells
/// whether the server would acknowledge commits before they are durable.
async fn bootstrap(options: &PgConnectOptions, schema: Option<&str>) -> StoreResult<bool> {
    let mut conn: PgConnection = options
        .connect()
        .await
        .map_err(|e| unavailable("cannot connect to PostgreSQL", e))?;
    if let Some(schema) = schema {
        if !schema_exists(&mut conn, schema).await? {
            let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut conn)
                .await;
            // Nodes starting together can race even on IF NOT EXISTS: the
            // loser sees a unique violation, and the schema exists.
            if let Err(e) = created {
                let raced = matches!(e, sqlx::Error::Database(_))
                    && schema_exists(&mut conn, schema).await?;
                if !raced {
                    return Err(from_sqlx("schema", e));
                }
            }
        }
    }
    let sync: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut conn)
        .await
        .map_err(db("settings"))?;
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the bootstrap connection failed");
    }
    Ok(sync == "off")
}

async fn schema_exists(conn: &mut PgConnection, schema: &str) -> StoreResult<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(conn)
        .await
        .map_err(db("schema"))
}

pub(super) async fn connect(url: &str, options: PgOptions) -> StoreResult<PgPool> {
    // The parse error names the problem, not the URL (which may hold a password).
    let mut connect = PgConnectOptions::from_str(url)
        .map_err(|e| unavailable("invalid database URL", e))?
        .application_name("tessera");
    if let Some(schema) = &options.schema {
        check_schema_name(schema)?;
    }
    let bootstrap = bootstrap(&connect, options.schema.as_deref());
    let sync_off = tokio::time::timeout(options.acquire_timeout, bootstrap)
        .await
        .map_err(|_| unavailable("cannot connect to PostgreSQL", "timed out"))??;
    if let Some(schema) = &options.schema {
        // A startup parameter, so every pooled connection (and the
        // migrator's) works in the schema without an extra round trip.
        connect = connect.options([("search_path", schema.as_str())]);
    }
    if sync_off {
        tracing::warn!("server has synchronous_commit=off; turning it on for Tessera's sessions");
        connect = connect.options([("synchronous_commit", "on")]);
    }
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|e| unavailable("cannot connect to PostgreSQL", e))
}

/// Applies the embedded migrations. sqlx's migrator takes a session-level
/// advisory lock (`pg_advisory_lock`, keyed on the database name) before it
/// reads `_sqlx_migrations`, so nodes starting together apply each migration
/// once: the others wait, then find it applied. Each migration runs in its
/// own transaction with its bookkeeping row.
///
/// The migrator does not release that lock when a migration fails, so it
/// runs on a connection taken out of the pool and closed afterwards, which
/// releases the lock in every case. Migrations newer than this binary are
/// tolerated (`ignore_missing`), so an older node can start during a
/// rolling upgrade.
pub(super) async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    let mut conn = pool.acquire().await.map_err(db("migrations"))?.detach();
    // `run_direct` rather than `run`: `run` goes through `Acquire`, whose
    // lifetimes make the future not `Send` (sqlx's own comment on it).
    let outcome = migrator.run_direct(&mut conn).await;
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the migration connection failed");
    }
    outcome.map_err(|e| match e {
        MigrateError::Execute(e) => from_sqlx("migrations", e),
        MigrateError::ExecuteMigration(e, version) => {
            tracing::error!(version, "migration failed");
            from_sqlx("migrations", e)
        }
        other => unavailable("cannot migrate the database", other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["tessera", "tessera_test_1_2", "_x"] {
            assert!(check_schema_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Tessera",
            "1abc",
            "a-b",
            "a b",
            "a;drop",
            &"x".repeat(64),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
