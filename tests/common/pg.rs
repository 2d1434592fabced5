//! A fresh PostgreSQL database per test, on the server named by
//! `TESSERA_TEST_DATABASE_URL`. Tests that need one skip (with a message)
//! when the variable is unset.
#![allow(dead_code)]

use sqlx::{Connection, PgConnection};

pub const URL_VAR: &str = "TESSERA_TEST_DATABASE_URL";

pub struct FreshDatabase {
    /// The server's URL, connected to the maintenance database.
    admin_url: String,
    pub name: String,
    /// The URL of the fresh database.
    pub url: String,
}

/// The URL with its database (the path) replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("a postgres:// URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

impl FreshDatabase {
    /// A new empty database named `<prefix>_<pid>_<random>`, or `None`
    /// (after saying why) when no server is configured.
    pub async fn create(prefix: &str, why: &str) -> Option<FreshDatabase> {
        let Some(admin_url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipping: {URL_VAR} not set ({why})");
            return None;
        };
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            tessera::core::secrets::random_base32(5)
        );
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{URL_VAR} is set but PostgreSQL cannot be reached: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        Some(FreshDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_now(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let dropped = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
            if let Err(e) = dropped {
                eprintln!("could not drop test database {}: {e}", self.name);
            }
            let _ = conn.close().await;
        }
    }
}
