//! The whole server on PostgreSQL (`database_url`): the lifecycle works and
//! survives a restart. Skips without TESSERA_TEST_DATABASE_URL.

mod common;

use std::sync::Arc;

use common::{s, TestApp};
use reqwest::StatusCode;
use tessera::store::postgres::PgStore;

async fn fresh_database_url() -> Option<String> {
    let Ok(base) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
        eprintln!("skipping: TESSERA_TEST_DATABASE_URL not set (server on PostgreSQL)");
        return None;
    };
    let schema = format!(
        "tessera_server_{}_{}",
        std::process::id(),
        tessera::core::secrets::random_base32(5)
    );
    // Creates the schema; the server then migrates it itself.
    PgStore::connect_with_schema(&base, &schema)
        .await
        .expect("create schema")
        .close()
        .await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test]
async fn serves_from_postgresql_and_revocations_survive_restart() {
    let Some(url) = fresh_database_url().await else {
        return;
    };
    let pin = |st: &mut tessera::config::Settings| {
        st.database_url = Some(url.clone());
        // A restart gets a new port; the issuer, as in any deployment, stays.
        st.issuer = Some("http://tessera.test".into());
    };
    let app = TestApp::spawn_with(pin).await;
    assert!(
        !app.dir.path().join("tessera.redb").exists(),
        "no embedded store when a database is used"
    );
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let keep = app.open_session(c, "pg-user").await;
    let end = app.open_session(c, "pg-user").await;
    assert_eq!(
        app.revoke(c, &s(&end, "refresh_token"), None).await,
        StatusCode::OK
    );
    let (dir, clock) = app.stop().await;

    let app = TestApp::spawn_in(Arc::clone(&dir), clock, pin).await;
    assert!(app.active(c, &s(&keep, "access_token")).await);
    assert!(
        !app.active(c, &s(&end, "access_token")).await,
        "revocation survived the restart"
    );
    assert!(!app.active(c, &s(&end, "refresh_token")).await);
    let (status, t) = app
        .token(
            c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &s(&keep, "refresh_token")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(app.sessions_of("pg-user").await.len(), 2);
}

/// A node whose data directory already holds secrets (as every node had
/// before fleets shared them through the database) proposes them when the
/// database has none: its signed tokens, refresh-token hashes and admin
/// token stay valid.
#[tokio::test]
async fn the_first_fleet_node_keeps_the_secrets_of_its_data_directory() {
    let Some(url) = fresh_database_url().await else {
        return;
    };
    let issuer = |st: &mut tessera::config::Settings| {
        st.issuer = Some("http://tessera.test".into());
    };
    // Secrets made by a node on the embedded store.
    let app = TestApp::spawn_with(issuer).await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let old_access = s(
        &app.token(c, &[("grant_type", "client_credentials")])
            .await
            .1,
        "access_token",
    );
    let kid = |jwks: &serde_json::Value| jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let jwks = app.jwks().await;
    let admin_before = app.admin_token.clone();
    let token_key = std::fs::read_to_string(app.dir.path().join("token.key")).unwrap();
    let (dir, clock) = app.stop().await;

    let app = TestApp::spawn_in(Arc::clone(&dir), clock, |st| {
        issuer(st);
        st.database_url = Some(url.clone());
    })
    .await;
    let fleet_jwks = app.jwks().await;
    assert_eq!(
        kid(&fleet_jwks),
        kid(&jwks),
        "the local signing key became the fleet's"
    );
    assert_eq!(
        app.admin_token, admin_before,
        "the local admin token became the fleet's"
    );
    let pg = PgStore::connect(&url).await.unwrap();
    assert_eq!(
        pg.shared_value("token_key", "unused").await.unwrap(),
        token_key.trim(),
        "the local token key became the fleet's"
    );
    pg.close().await;
    // A token signed before is still a valid signature for the fleet (its
    // session lives in the embedded store, which this node no longer reads).
    assert_eq!(
        app.engine
            .verify_signature(&old_access)
            .map(|c| c.client_id.clone()),
        Ok(id.clone())
    );
}
