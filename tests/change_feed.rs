//! How a node of a fleet follows the change feed, with the feed scripted
//! by the test (playing the other nodes) and ends written straight into
//! the shared store, as another node would write them:
//!
//! - while the feed is current, checks answer from memory, and an end
//!   reported by the feed is refused at once;
//! - while it is not (not yet connected, or lost), checks ask the store,
//!   and fail with 503 when the store cannot answer;
//! - after reconnecting, the node catches up from the store: an end it was
//!   never told of is refused from memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{s, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use tessera::core::clock::Clock;
use tessera::core::ids::SessionId;
use tessera::core::model::{Actor, EndReason, Ended};
use tessera::store::faulty::FaultyStore;
use tessera::store::redb::RedbStore;
use tessera::store::{Change, FeedEvent, Store};

async fn ready(app: &TestApp) -> (StatusCode, Value) {
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    (r.status(), r.json().await.unwrap_or_default())
}

/// Waits until `/readyz` reports the feed state `want`.
async fn wait_feed(app: &TestApp, want: &str) {
    for _ in 0..200 {
        if ready(app).await.1["change_feed"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("change_feed never became {want}: {:?}", ready(app).await);
}

/// Ends a session behind the node's back, as another node would.
async fn end_elsewhere(store: &FaultyStore, app: &TestApp, session: &Value) -> (SessionId, i64) {
    let id = SessionId::parse(&s(session, "session_id")).unwrap();
    let now = app.clock.now();
    let ended = Ended {
        at: now,
        reason: EndReason::AdminRevoked,
        by: Actor::Admin,
    };
    let done = store.end_sessions(&[id], &ended, now + 7200).await.unwrap();
    assert_eq!(done.len(), 1);
    (id, done[0].access_cover_until)
}

async fn introspect_status(app: &TestApp, c: (&str, &str), token: &str) -> StatusCode {
    app.form("/oauth2/introspect", Some(c), &[("token", token)])
        .await
        .0
}

#[tokio::test]
async fn checks_trust_memory_only_while_the_feed_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("tessera.redb")).unwrap();
    let (store, feed) = FaultyStore::new(Arc::new(redb))
        .keeping(dir)
        .scripted_feed();
    let store = Arc::new(store);
    let app = TestApp::spawn_with_store(store.clone()).await;

    // Not connected yet: not ready, and checks go to the store.
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["change_feed"], "connecting");
    let (id, secret) = app.new_client().await;
    let c = (id.as_str(), secret.as_str());
    let first = app.open_session(c, "feed-user").await;
    end_elsewhere(&store, &app, &first).await;
    assert!(
        !app.active(c, &s(&first, "access_token")).await,
        "before the feed is current, an end written by another node is seen"
    );

    feed.send(FeedEvent::Connected).unwrap();
    wait_feed(&app, "current").await;
    assert_eq!(ready(&app).await.0, StatusCode::OK);

    // Current: memory is trusted. An end the feed has not reported yet is
    // not seen; once reported, it is refused.
    let second = app.open_session(c, "feed-user").await;
    let at = s(&second, "access_token");
    let (sid, cover) = end_elsewhere(&store, &app, &second).await;
    assert!(app.active(c, &at).await, "checks answer from memory");
    feed.send(FeedEvent::Change(Change::Ended(vec![(sid, cover)])))
        .unwrap();
    let mut refused = false;
    for _ in 0..200 {
        if !app.active(c, &at).await {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "an end reported by the feed is refused");

    // Lost: checks ask the store, and fail closed when it cannot answer.
    feed.send(FeedEvent::Lost("test".into())).unwrap();
    wait_feed(&app, "lost").await;
    let (status, body) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let live = app.open_session(c, "feed-user").await;
    let missed = app.open_session(c, "feed-user").await;
    end_elsewhere(&store, &app, &missed).await;
    assert!(!app.active(c, &s(&missed, "access_token")).await);
    assert!(app.active(c, &s(&live, "access_token")).await);
    store.fail_reads(true);
    let (status, body, headers) = app
        .form(
            "/oauth2/introspect",
            Some(c),
            &[("token", &s(&live, "access_token"))],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    store.fail_reads(false);

    // Back: the node catches up from the store, then trusts memory again,
    // which now holds the end it was never told of.
    feed.send(FeedEvent::Connected).unwrap();
    wait_feed(&app, "current").await;
    // The catch-up also dropped cached client credentials: one request
    // with the store up caches them again.
    assert!(app.active(c, &s(&live, "access_token")).await);
    store.fail_reads(true);
    assert!(
        !app.active(c, &s(&missed, "access_token")).await,
        "the catch-up found the end made while the feed was lost"
    );
    assert!(app.active(c, &s(&live, "access_token")).await);
    assert_eq!(
        introspect_status(&app, c, &s(&live, "access_token")).await,
        StatusCode::OK
    );
    store.fail_reads(false);
}
