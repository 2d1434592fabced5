//! When the store cannot be written, nothing is acknowledged: revocation
//! answers 503 with Retry-After (RFC 7009 §2.2.1) and the caller must
//! assume the token still lives; checks of access tokens go on from memory.

mod common;

use std::sync::Arc;

use common::s;
use reqwest::StatusCode;
use tessera::core::clock::{Clock, ManualClock, SystemClock};
use tessera::server::Application;
use tessera::store::faulty::FaultyStore;
use tessera::store::redb::RedbStore;

#[tokio::test]
async fn store_write_failure_gives_503_and_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let redb = Arc::new(RedbStore::open(&dir.path().join("tessera.redb")).unwrap());
    let store = Arc::new(FaultyStore::new(redb));
    let settings = common::test_settings(&dir);
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let app = Application::build_with(settings, clock, Some(store.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let http = reqwest::Client::new();

    let created: serde_json::Value = http
        .post(format!("{base}/admin/clients"))
        .bearer_auth(admin.trim())
        .json(&serde_json::json!({"name": "outage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (s(&created, "client_id"), s(&created, "client_secret"));
    let session: serde_json::Value = http
        .post(format!("{base}/v1/sessions"))
        .basic_auth(&id, Some(&secret))
        .json(&serde_json::json!({"subject": "outage-user"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = s(&session, "access_token");

    store.fail_writes(true);
    let r = http
        .post(format!("{base}/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");

    // Issuing also needs a durable write.
    let r = http
        .post(format!("{base}/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The failed revocation ended nothing; checks keep working from memory.
    let v: serde_json::Value = http
        .post(format!("{base}/oauth2/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["active"], true);

    // Back up: the revocation goes through and sticks.
    store.fail_writes(false);
    let r = http
        .post(format!("{base}/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = http
        .post(format!("{base}/oauth2/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["active"], false);
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
