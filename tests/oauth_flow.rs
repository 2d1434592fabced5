//! End-to-end lifecycle through the standard endpoints and the session API,
//! against the real server on a random port.

mod common;

use common::{s, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn client_credentials_issues_a_jwt_that_introspects_active() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let (status, body) = app
        .token(
            (&id, &secret),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read write"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read write");
    assert!(
        body.get("refresh_token").is_none(),
        "RFC 6749 §4.4.3: no refresh token"
    );
    let at = s(&body, "access_token");
    assert_eq!(at.split('.').count(), 3);

    let v = app.introspect((&id, &secret), &at).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], id.as_str());
    assert_eq!(v["sub"], id.as_str());
    assert_eq!(v["scope"], "read write");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["iss"], app.base.as_str());
    for k in ["exp", "iat", "jti", "sid"] {
        assert!(v.get(k).is_some(), "{k} missing from {v}");
    }
    assert_eq!(
        v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(),
        3600
    );

    // Form-based client authentication works too.
    let (status, body, _) = app
        .form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn introspection_inactive_for_garbage_and_requires_a_client() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    for t in [
        "garbage",
        "a.b.c",
        "x".repeat(43).as_str(),
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
    ] {
        let v = app.introspect((&id, &secret), t).await;
        assert_eq!(v, json!({"active": false}), "{t}");
    }
    let (status, v, _) = app
        .form("/oauth2/introspect", None, &[("token", "x")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "invalid_client");
}

#[tokio::test]
async fn refresh_rotates_and_the_successor_works() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "alice").await;
    let r0 = s(&opened, "refresh_token");
    assert!(app.active(c, &r0).await);

    let (status, t1) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t1}");
    let r1 = s(&t1, "refresh_token");
    assert_ne!(r0, r1);
    assert!(
        !app.active(c, &r0).await,
        "the retired token is no longer active"
    );
    assert!(app.active(c, &r1).await);
    assert!(app.active(c, &s(&t1, "access_token")).await);

    let (status, t2) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert_ne!(s(&t2, "refresh_token"), r1);
}

#[tokio::test]
async fn reusing_a_retired_refresh_token_ends_the_session() {
    let app = TestApp::spawn_with(|s| s.refresh_grace_seconds = 0).await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "bob").await;
    let (r0, at0) = (s(&opened, "refresh_token"), s(&opened, "access_token"));
    let (_, t1) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    let (r1, at1) = (s(&t1, "refresh_token"), s(&t1, "access_token"));

    let (status, err) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    for t in [&at0, &at1, &r1] {
        assert!(
            !app.active(c, t).await,
            "every token of the session is inactive"
        );
    }
    let (status, _) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let sessions = app.sessions_of("bob").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["status"], "refresh_token_reuse");
    assert_eq!(sessions[0]["ended_by"], "engine");
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_working_successor() {
    let app = TestApp::spawn().await; // default grace: 5 s
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let r0 = s(&app.open_session(c, "carol").await, "refresh_token");
    let (_, t1) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    let r1 = s(&t1, "refresh_token");

    // The response was "lost"; the client retries with r0 two seconds later.
    app.clock.advance(2);
    let (status, retry) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(
        s(&retry, "refresh_token"),
        r1,
        "the same successor comes back"
    );
    assert!(app.active(c, &s(&retry, "access_token")).await);
    assert!(
        app.active(c, &s(&t1, "access_token")).await,
        "the session was not ended"
    );

    // The successor works.
    let (status, t2) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t2}");

    // Once the successor has been used, r0 is plain reuse, grace or not.
    let (status, _) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!app.active(c, &s(&t2, "access_token")).await);
}

#[tokio::test]
async fn a_retry_after_the_grace_window_ends_the_session() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let r0 = s(&app.open_session(c, "dave").await, "refresh_token");
    let (_, t1) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    app.clock.advance(6);
    let (status, _) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!app.active(c, &s(&t1, "access_token")).await);
    assert!(!app.active(c, &s(&t1, "refresh_token")).await);
}

#[tokio::test]
async fn revoking_the_access_token_ends_the_whole_session() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "erin").await;
    let (at, rt) = (s(&opened, "access_token"), s(&opened, "refresh_token"));
    assert_eq!(
        app.revoke(c, &at, Some("access_token")).await,
        StatusCode::OK
    );
    assert!(!app.active(c, &at).await);
    assert!(!app.active(c, &rt).await);
    let (status, _) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Idempotent.
    assert_eq!(app.revoke(c, &at, None).await, StatusCode::OK);
    assert_eq!(app.sessions_of("erin").await[0]["status"], "token_revoked");
}

#[tokio::test]
async fn revoking_the_refresh_token_ends_the_whole_session_whatever_the_hint() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "frank").await;
    let (at, rt) = (s(&opened, "access_token"), s(&opened, "refresh_token"));
    // A wrong hint is only a hint (RFC 7009 §2.1).
    assert_eq!(
        app.revoke(c, &rt, Some("access_token")).await,
        StatusCode::OK
    );
    assert!(!app.active(c, &at).await);
    assert!(!app.active(c, &rt).await);
}

#[tokio::test]
async fn unknown_tokens_revoke_with_200_and_bad_hints_are_ignored() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    assert_eq!(app.revoke(c, "no-such-token", None).await, StatusCode::OK);
    assert_eq!(
        app.revoke(c, &"A".repeat(43), Some("refresh_token")).await,
        StatusCode::OK
    );
    assert_eq!(
        app.revoke(c, "a.b.c", Some("something_else")).await,
        StatusCode::OK
    );
    let (status, v, _) = app.form("/oauth2/revoke", Some(c), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_token() {
    let app = TestApp::spawn().await;
    let (a, sa) = app.new_client().await;
    let (b, sb) = app.new_client().await;
    let opened = app.open_session((&a, &sa), "gina").await;
    let (at, rt) = (s(&opened, "access_token"), s(&opened, "refresh_token"));
    assert_eq!(app.revoke((&b, &sb), &at, None).await, StatusCode::OK);
    assert_eq!(app.revoke((&b, &sb), &rt, None).await, StatusCode::OK);
    assert!(app.active((&a, &sa), &at).await, "nothing happened");
    assert!(app.active((&a, &sa), &rt).await);
    // And cannot use it as a refresh grant either.
    let (status, v) = app
        .token(
            (&b, &sb),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_grant");
}

#[tokio::test]
async fn bad_client_credentials_get_401_invalid_client() {
    let app = TestApp::spawn().await;
    let (id, _) = app.new_client().await;
    for (who, secret) in [(id.as_str(), "wrong"), ("tc_unknown", "whatever")] {
        for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
            let (status, v, headers) = app
                .form(
                    path,
                    Some((who, secret)),
                    &[("grant_type", "client_credentials"), ("token", "x")],
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(v["error"], "invalid_client");
            assert!(headers.get("www-authenticate").is_some());
        }
    }
    // No credentials at all.
    let (status, v, _) = app
        .form(
            "/oauth2/token",
            None,
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "invalid_client");
}

#[tokio::test]
async fn repeated_wrong_secrets_are_throttled() {
    let app = TestApp::spawn_with(|s| s.client_auth_max_failures = 3).await;
    let (id, secret) = app.new_client().await;
    for _ in 0..3 {
        let (status, _) = app
            .token((&id, "wrong"), &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, _, headers) = app
        .form(
            "/oauth2/token",
            Some((&id, "wrong")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert!(headers.get("retry-after").is_some());
    let (status, v) = app
        .token((&id, &secret), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    app.clock.advance(61);
    let (status, _) = app
        .token((&id, &secret), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_expire_and_never_outlive_their_session() {
    let app = TestApp::spawn_with(|s| s.session_lifetime_seconds = 100).await;
    let (id, secret) = app
        .create_client(json!({"name": "short", "access_token_ttl": 60}))
        .await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "hank").await;
    let at = s(&opened, "access_token");
    app.clock.advance(59);
    assert!(app.active(c, &at).await);
    app.clock.advance(1);
    assert!(!app.active(c, &at).await, "expired at exp");

    // At t=60 a refresh gives an access token capped at the session's end (t=100).
    let (status, t1) = app
        .token(
            c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &s(&opened, "refresh_token")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t1}");
    assert_eq!(t1["expires_in"], 40);
    app.clock.advance(40);
    assert!(!app.active(c, &s(&t1, "access_token")).await);
    assert!(!app.active(c, &s(&t1, "refresh_token")).await);
    let (status, _) = app
        .token(
            c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &s(&t1, "refresh_token")),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.sessions_of("hank").await[0]["status"], "expired");
}

#[tokio::test]
async fn the_sweeper_removes_expired_sessions() {
    let app = TestApp::spawn_with(|s| {
        s.sweep_interval_seconds = 1;
        s.ended_session_retention_seconds = 10;
    })
    .await;
    let (id, secret) = app
        .create_client(json!({"name": "sweep", "access_token_ttl": 5}))
        .await;
    let c = (id.as_str(), secret.as_str());
    let (_, cc) = app.token(c, &[("grant_type", "client_credentials")]).await;
    let ended = app.open_session(c, "ivy").await;
    assert_eq!(
        app.revoke(c, &s(&ended, "access_token"), None).await,
        StatusCode::OK
    );
    let live = app.open_session(c, "ivy").await;
    assert_eq!(app.sessions_of(&id).await.len(), 1);
    assert_eq!(app.sessions_of("ivy").await.len(), 2);

    // Past expiry plus retention for the client-credentials session and the
    // ended one; the live one (30-day lifetime) stays.
    app.clock.advance(16);
    let mut gone = false;
    for _ in 0..100 {
        if app.sessions_of(&id).await.is_empty() && app.sessions_of("ivy").await.len() == 1 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "sweeper did not remove the expired sessions within 10 s"
    );
    let left = app.sessions_of("ivy").await;
    assert_eq!(left[0]["session_id"], live["session_id"]);
    assert!(!app.active(c, &s(&cc, "access_token")).await);
}

#[tokio::test]
async fn session_api_lists_and_ends_only_the_callers_sessions() {
    let app = TestApp::spawn().await;
    let (a, sa) = app.new_client().await;
    let (b, sb) = app.new_client().await;
    let s1 = app.open_session((&a, &sa), "judy").await;
    let s2 = app.open_session((&a, &sa), "judy").await;
    let s3 = app.open_session((&b, &sb), "judy").await;

    let list = app
        .http
        .get(app.url("/v1/sessions?subject=judy"))
        .basic_auth(&a, Some(&sa))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    // B cannot end A's session.
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", s(&s1, "session_id"))))
        .basic_auth(&b, Some(&sb))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(app.active((&a, &sa), &s(&s1, "access_token")).await);

    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", s(&s1, "session_id"))))
        .basic_auth(&a, Some(&sa))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["ended"], true);
    assert!(!app.active((&a, &sa), &s(&s1, "access_token")).await);

    // A ends all of its sessions for judy; B's stays.
    let r = app
        .http
        .delete(app.url("/v1/subjects/judy/sessions"))
        .basic_auth(&a, Some(&sa))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["sessions_ended"],
        1
    );
    assert!(!app.active((&a, &sa), &s(&s2, "refresh_token")).await);
    assert!(app.active((&b, &sb), &s(&s3, "access_token")).await);
}

#[tokio::test]
async fn admin_subject_revoke_client_delete_and_key_rotation() {
    let app = TestApp::spawn().await;
    let (a, sa) = app.new_client().await;
    let (b, sb) = app.new_client().await;
    let s1 = app.open_session((&a, &sa), "kim").await;
    let s2 = app.open_session((&b, &sb), "kim").await;
    let (status, v) = app
        .admin(Method::DELETE, "/admin/subjects/kim/sessions", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["sessions_ended"], 2);
    assert!(!app.active((&a, &sa), &s(&s1, "access_token")).await);
    assert!(!app.active((&b, &sb), &s(&s2, "access_token")).await);

    let s3 = app.open_session((&a, &sa), "lee").await;
    let (status, v) = app
        .admin(Method::DELETE, &format!("/admin/clients/{a}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["sessions_ended"], 1);
    assert!(!app.active((&b, &sb), &s(&s3, "access_token")).await);
    let (status, _) = app
        .token((&a, &sa), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, before) = app
        .token((&b, &sb), &[("grant_type", "client_credentials")])
        .await;
    let (status, v) = app.admin(Method::POST, "/admin/keys/rotate", None).await;
    assert_eq!(status, StatusCode::OK);
    let jwks = app.jwks().await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(jwks["keys"][0]["kid"], v["kid"]);
    assert!(
        app.active((&b, &sb), &s(&before, "access_token")).await,
        "old key still verifies"
    );

    // Without the admin token, nothing.
    let r = app
        .http
        .get(app.url("/admin/clients"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .http
        .get(app.url("/admin/clients"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rotating_a_secret_locks_out_the_old_one() {
    let app = TestApp::spawn().await;
    let (id, old) = app.new_client().await;
    let (status, _) = app
        .token((&id, &old), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app
        .admin(
            Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new = s(&v, "client_secret");
    let (status, _) = app
        .token((&id, &old), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .token((&id, &new), &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn discovery_metrics_health_and_openapi() {
    let app = TestApp::spawn().await;
    let md: serde_json::Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(md["issuer"], app.base.as_str());
    assert_eq!(
        md["revocation_endpoint"],
        format!("{}/oauth2/revoke", app.base)
    );
    let (id, secret) = app.new_client().await;
    app.token((&id, &secret), &[("grant_type", "client_credentials")])
        .await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tessera_http_requests_total"), "{metrics}");
    assert!(metrics.contains("tessera_tokens_issued_total"));
    for p in ["/healthz", "/readyz"] {
        assert_eq!(
            app.http.get(app.url(p)).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    let api: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    assert!(api["paths"]["/v1/sessions"].is_object());
    assert!(api["paths"]["/admin/clients"].is_object());
}

/// Refresh tokens name their session (64 characters); tokens of the earlier
/// form (43 characters, written by older builds) keep working, and their
/// rotation chain keeps that form, grace retries included.
#[tokio::test]
async fn refresh_tokens_of_the_earlier_form_still_rotate_and_revoke() {
    use tessera::core::model::{RefreshRecord, RefreshState};
    use tessera::core::secrets::random_token;
    use tessera::core::SessionId;

    let app = TestApp::spawn().await;
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let opened = app.open_session(c, "grace").await;
    let rt = s(&opened, "refresh_token");
    assert_eq!(rt.len(), 64, "{rt}");

    // A session as an older build stored it: same fields, its own id, a
    // refresh record keyed by the full hash of a 43-character token.
    let store = app.engine.store();
    let sid = SessionId::parse(&s(&app.introspect(c, &rt).await, "sid")).unwrap();
    let mut old = store.get_session(&sid).await.unwrap().unwrap();
    old.id = SessionId::generate();
    let legacy = random_token(32);
    let now = app.engine.now();
    let record = RefreshRecord {
        hash: app.engine.hasher().hash("refresh", &legacy),
        session_id: old.id,
        client_id: old.client_id.clone(),
        issued_at: now,
        expires_at: now + 3600,
        state: RefreshState::Current,
    };
    store.create_session(&old, Some(&record)).await.unwrap();

    let v = app.introspect(c, &legacy).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sid"], old.id.to_string());
    let (status, t1) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &legacy)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t1}");
    let r1 = s(&t1, "refresh_token");
    assert_eq!(r1.len(), 43, "the chain keeps its form: {r1}");
    // A retry within the grace window gets the same successor.
    let (status, retry) = app
        .token(
            c,
            &[("grant_type", "refresh_token"), ("refresh_token", &legacy)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(s(&retry, "refresh_token"), r1);
    // Revoking the successor ends that session, and only that one.
    assert_eq!(
        app.revoke(c, &r1, Some("refresh_token")).await,
        StatusCode::OK
    );
    assert!(!app.active(c, &s(&t1, "access_token")).await);
    assert!(!app.active(c, &r1).await);
    assert!(app.active(c, &rt).await);
}
