//! The cache of verified access-token signatures saves the Ed25519 check
//! and nothing else: a cached token is still refused once its session
//! ended, once it expired, once its key is gone, and a token that differs
//! from a cached one in any byte of its signature is verified afresh.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{s, TestApp};
use ed25519_dalek::Signer;
use serde_json::json;
use tessera::core::engine::TokenRejected;

async fn issued(app: &TestApp) -> ((String, String), String) {
    let client = app
        .create_client(json!({"name": "rs", "grant_types": ["client_credentials"]}))
        .await;
    let (status, body) = app
        .token(
            (&client.0, &client.1),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert!(status.is_success(), "{body}");
    let at = s(&body, "access_token");
    (client, at)
}

/// Introspect twice: the first check verifies and caches, the second hits.
async fn cached_and_active(app: &TestApp, c: (&str, &str), at: &str) {
    assert!(app.active(c, at).await);
    assert!(app.engine.signature_cached(at), "verified token is cached");
    assert!(app.active(c, at).await);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_session_ends() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    cached_and_active(&app, (&id, &secret), &at).await;
    assert!(app.revoke((&id, &secret), &at, None).await.is_success());
    assert!(!app.active((&id, &secret), &at).await);
    assert_eq!(
        app.engine.check_access_token(&at).await.unwrap(),
        Err(TokenRejected::Revoked)
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    cached_and_active(&app, (&id, &secret), &at).await;
    app.clock.advance(3600);
    assert!(!app.active((&id, &secret), &at).await);
    assert_eq!(
        app.engine.check_access_token(&at).await.unwrap(),
        Err(TokenRejected::Expired)
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_is_gone() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    let old_kid = app.engine.keys().current_kid();
    cached_and_active(&app, (&id, &secret), &at).await;

    // A rotation changes the key set: the entry no longer counts, but the
    // old key still verifies the token until it retires.
    app.engine.rotate_keys().await.unwrap();
    assert!(!app.engine.signature_cached(&at));
    cached_and_active(&app, (&id, &secret), &at).await;

    // The old key deleted elsewhere (another node pruned it, or an
    // operator removed it) and the keys reloaded, as on a fleet's key
    // change notification: the cached verification is void.
    std::fs::remove_file(app.dir.path().join("keys").join(format!("{old_kid}.json"))).unwrap();
    app.engine.keys().reload().await.unwrap();
    assert!(!app.engine.signature_cached(&at));
    assert!(!app.active((&id, &secret), &at).await);
    assert_eq!(
        app.engine.check_access_token(&at).await.unwrap(),
        Err(TokenRejected::Invalid)
    );
}

#[tokio::test]
async fn a_cached_token_no_longer_verifies_once_its_key_is_pruned() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    cached_and_active(&app, (&id, &secret), &at).await;
    app.engine.rotate_keys().await.unwrap();
    // Signature only (expiry not judged), as revocation and the GSP
    // renewal use it: cached, and valid while the old key is kept.
    assert!(app.engine.verify_signature(&at).is_ok());
    assert!(app.engine.signature_cached(&at));
    // Past the old key's retirement, the sweeper prunes it.
    app.clock
        .advance(app.engine.settings().max_access_token_ttl + 61);
    app.engine.sweep_once().await.unwrap();
    assert_eq!(
        app.engine.verify_signature(&at).unwrap_err(),
        TokenRejected::Invalid
    );
    assert!(!app.active((&id, &secret), &at).await);
}

#[tokio::test]
async fn a_tampered_signature_is_refused_while_the_genuine_token_is_cached() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    cached_and_active(&app, (&id, &secret), &at).await;
    let (signed, signature) = at.rsplit_once('.').unwrap();

    // One character of the signature changed (in the middle, so it is not
    // just the unused bits of the last base64 character).
    let mut sig: Vec<u8> = signature.bytes().collect();
    sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{signed}.{}", String::from_utf8(sig).unwrap());

    // The same header and claims signed by a key that is not ours.
    let rogue = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let forged = format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(rogue.sign(signed.as_bytes()).to_bytes())
    );

    // A genuine signature over other claims.
    let ((_, _), other) = issued(&app).await;
    let spliced = format!("{signed}.{}", other.rsplit_once('.').unwrap().1);

    // No signature at all.
    let bare = format!("{signed}.");

    for bad in [&flipped, &forged, &spliced, &bare] {
        for _ in 0..2 {
            assert!(!app.active((&id, &secret), bad).await, "{bad}");
            assert_eq!(
                app.engine.verify_signature(bad).unwrap_err(),
                TokenRejected::Invalid
            );
            assert!(!app.engine.signature_cached(bad));
        }
    }
    // The genuine token is still cached and active.
    assert!(app.engine.signature_cached(&at));
    assert!(app.active((&id, &secret), &at).await);
}

/// The introspection answer of a cached token is rendered once and kept
/// with its claims: the kept answer is the same as the first, whoever asks,
/// and it is never served once the token is no longer active.
#[tokio::test]
async fn the_kept_introspection_answer_is_the_first_one_and_only_while_active() {
    let app = TestApp::spawn().await;
    let ((id, secret), at) = issued(&app).await;
    let other = app
        .create_client(json!({"name": "rs2", "grant_types": ["client_credentials"]}))
        .await;
    let first = app.introspect((&id, &secret), &at).await;
    assert_eq!(first["active"], true, "{first}");
    let claims = app.engine.check_access_token(&at).await.unwrap().unwrap();
    assert!(claims.rendering.get().is_some(), "rendering kept");
    assert_eq!(app.introspect((&id, &secret), &at).await, first);
    assert_eq!(app.introspect((&other.0, &other.1), &at).await, first);
    assert_eq!(first["sid"], claims.sid.to_string());
    assert_eq!(first["jti"], claims.jti);
    assert!(app.revoke((&id, &secret), &at, None).await.is_success());
    assert_eq!(
        app.introspect((&id, &secret), &at).await,
        json!({"active": false})
    );
}
