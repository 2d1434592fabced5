//! A session opened through a dialect is an ordinary session: the admin
//! CLI lists it, the native session API ends it, and the dialect then
//! refuses its token.

mod common;

use base64::Engine as _;
use common::{s, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_gsp_session_is_listed_by_the_cli_and_ended_by_the_native_api() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let r = app
        .http
        .post(app.url("/authenticate"))
        .header("x-api-key", &id)
        .header("x-api-secret", &secret)
        .header("x-api-version", "3.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = s(&r.json::<Value>().await.unwrap(), "access_token");
    let sid = s(&jwt_claims(&token), "sid");

    // The admin CLI lists it, with its dialect.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "session",
            "list",
            "--client-id",
            &id,
            "--json",
            "--server",
            &app.base,
        ])
        .env("TESSERA_ADMIN_TOKEN", &app.admin_token)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["session_id"] == sid.as_str())
        .expect("the GSP session is listed")
        .clone();
    assert_eq!(row["dialect"], "gsp");
    assert_eq!(row["status"], "active");

    // The native session API ends it.
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{sid}")))
        .basic_auth(&id, Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], true);

    // Refused through the dialect, with its exact message, and by introspection.
    let r = app
        .http
        .post(app.url(&format!("/authorize?request_token={token}")))
        .header("authorization", &token)
        .header("x-api-key", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Access revoked"
    );
    assert!(!app.active((&id, &secret), &token).await);
}
