//! Regression tests for defects a security review found: races that let a
//! token outlive an acknowledged end, and throttling that could be bypassed
//! or turned against the real client.

mod common;

use common::{s, TestApp};
use reqwest::StatusCode;
use tessera::core::engine::OpenSession;
use tessera::core::ids::{ClientId, Subject};
use tessera::core::model::{Actor, EndReason};
use tessera::core::EngineError;

async fn client_of(app: &TestApp, id: &str) -> tessera::core::model::Client {
    app.engine
        .get_client(&ClientId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn superseding_an_ended_session_mints_nothing() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let opened = app.open_session((&id, &secret), "sup").await;
    let sid = tessera::core::ids::SessionId::parse(&s(&opened, "session_id")).unwrap();
    let client = client_of(&app, &id).await;
    app.engine
        .end_session(&sid, EndReason::Logout, Actor::Admin, None)
        .await
        .unwrap();
    let r = app.engine.supersede_session(&client, &sid, None).await;
    assert!(matches!(r, Err(EngineError::InvalidGrant(_))), "{r:?}");
    // Superseding a live one ends it and hands out a working successor.
    let opened = app.open_session((&id, &secret), "sup").await;
    let sid = tessera::core::ids::SessionId::parse(&s(&opened, "session_id")).unwrap();
    let next = app
        .engine
        .supersede_session(&client, &sid, None)
        .await
        .unwrap();
    assert!(
        !app.active((&id, &secret), &s(&opened, "access_token"))
            .await
    );
    assert!(app.active((&id, &secret), &next.access_token).await);
}

#[tokio::test]
async fn a_code_redeemed_twice_at_once_leaves_no_working_token() {
    let app = TestApp::spawn().await;
    let (id, secret) = app
        .create_client(serde_json::json!({
            "name": "race",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": ["http://127.0.0.1:9/cb"]
        }))
        .await;
    let client = client_of(&app, &id).await;
    let verifier = "v".repeat(50);
    for round in 0..5 {
        let req = tessera::core::engine::AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            state: None,
            code_challenge: tessera::core::engine::s256(&verifier),
            scope: Default::default(),
            dialect: "native",
        };
        let challenge = app.engine.begin_authorization(&client, req).await.unwrap();
        let redirect = app
            .engine
            .accept_login(
                &challenge,
                Subject::parse("racer").unwrap(),
                Default::default(),
            )
            .await
            .unwrap();
        let code = url::Url::parse(&redirect)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
        ];
        let (a, b) = tokio::join!(
            app.token((&id, &secret), &form),
            app.token((&id, &secret), &form)
        );
        let winners: Vec<_> = [a, b]
            .into_iter()
            .filter(|(st, _)| *st == StatusCode::OK)
            .collect();
        assert!(
            winners.len() <= 1,
            "round {round}: both redemptions succeeded"
        );
        for (_, body) in winners {
            // Whichever order they ran in, the loser's replay ended the winner.
            assert!(
                !app.active((&id, &secret), &s(&body, "access_token")).await,
                "round {round}: a token from a replayed code still works"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_wrong_secrets_cannot_exceed_the_limit_nor_lock_out_the_real_client() {
    let app = TestApp::spawn_with(|s| s.client_auth_max_failures = 3).await;
    let (id, secret) = app.new_client().await;
    // The real client authenticates once: its digest is now known good.
    let (status, _) = app
        .token((&id, &secret), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK);
    // Twenty distinct guesses at once (identical ones share one check).
    let guesses: Vec<String> = (0..20).map(|i| format!("wrong-{i}")).collect();
    let attempts = guesses
        .iter()
        .map(|g| app.token((&id, g), &[("grant_type", "client_credentials")]));
    let results = futures::future::join_all(attempts).await;
    let checked = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::UNAUTHORIZED)
        .count();
    let refused = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        checked, 3,
        "only the allowed number of guesses reached argon2"
    );
    assert_eq!(refused, 17);
    // Past the 30 s record cache, the real client still gets in.
    app.clock.advance(45);
    let (status, body) = app
        .token((&id, &secret), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_burst_of_identical_first_requests_is_one_check_not_a_lockout() {
    let app = TestApp::spawn_with(|s| s.client_auth_max_failures = 3).await;
    let (id, secret) = app.new_client().await;
    let burst = (0..30).map(|_| app.token((&id, &secret), &[("grant_type", "client_credentials")]));
    for (status, body) in futures::future::join_all(burst).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn a_reference_of_an_expired_session_can_be_reused() {
    let app = TestApp::spawn().await;
    let (id, _) = app.new_client().await;
    let client = client_of(&app, &id).await;
    let open = |lifetime| {
        let mut o = OpenSession::new(Subject::parse("ref-user").unwrap(), "token_service");
        o.reference = Some("login-42".into());
        o.with_refresh = false;
        o.lifetime = Some(lifetime);
        o
    };
    app.engine
        .open_session_replacing(&client, open(10))
        .await
        .unwrap();
    app.clock.advance(11);
    let again = app.engine.open_session_replacing(&client, open(10)).await;
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test]
async fn refresh_tokens_are_described_only_to_their_own_client() {
    let app = TestApp::spawn().await;
    let (a, sa) = app.new_client().await;
    let (b, sb) = app.new_client().await;
    let opened = app.open_session((&a, &sa), "private").await;
    let rt = s(&opened, "refresh_token");
    assert!(app.active((&a, &sa), &rt).await);
    assert_eq!(
        app.introspect((&b, &sb), &rt).await,
        serde_json::json!({"active": false})
    );
    // Access tokens stay introspectable by any client (resource servers).
    assert!(app.active((&b, &sb), &s(&opened, "access_token")).await);
}

#[tokio::test]
async fn a_redirect_uri_that_is_not_a_url_is_refused_at_registration() {
    let app = TestApp::spawn().await;
    let (status, v) = app
        .admin(
            reqwest::Method::POST,
            "/admin/clients",
            Some(serde_json::json!({"name": "x", "redirect_uris": ["https://[::1"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
