//! When the store cannot be written, nothing is acknowledged: revocation
//! answers 503 with Retry-After (RFC 7009 §2.2.1) and the caller must
//! assume the token still lives; checks of access tokens go on from memory.

mod common;

use std::sync::Arc;

use common::{s, TestApp};
use reqwest::StatusCode;
use tessera::store::faulty::FaultyStore;
use tessera::store::redb::RedbStore;

#[tokio::test]
async fn store_write_failure_gives_503_and_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("tessera.redb")).unwrap();
    let store = Arc::new(FaultyStore::new(Arc::new(redb)).keeping(dir));
    let app = TestApp::spawn_with_store(store.clone()).await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "outage-user").await;
    let at = s(&opened, "access_token");
    let rt = s(&opened, "refresh_token");

    store.fail_writes(true);
    let (status, body, headers) = app.form("/oauth2/revoke", Some(c), &[("token", &at)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"], "temporarily_unavailable");
    // Issuing also needs a durable write.
    let (status, _) = app.token(c, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // So does a refresh: its rotation is not written, no token is handed
    // out (the access token is signed while the write is tried), and the
    // refresh token stays current.
    let (status, body) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.get("access_token").is_none(), "{body}");
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The failed revocation ended nothing; checks keep working from memory.
    assert!(app.active(c, &at).await);

    // Back up: the revocation goes through and sticks.
    store.fail_writes(false);
    let (status, body) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = s(&body, "access_token");
    assert!(app.active(c, &fresh).await);
    assert_eq!(app.revoke(c, &at, None).await, StatusCode::OK);
    assert!(!app.active(c, &at).await);
}
