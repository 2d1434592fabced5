//! Taxpayer sessions, one implementation for both wire styles: an OTP login
//! per (API key, GSTIN), a 6 h token renewable within 30 days, logout.
//! A missing or ended session is a taxpayer-level failure (HTTP 200,
//! `AUTH4033`), not an HTTP error: that is what the SDKs expect.

use serde_json::{Map, Value};

use super::envelope::{taxpayer_ok, GspError, TaxpayerFailure};
use crate::core::engine::OpenSession;
use crate::core::gstin::Gstin;
use crate::core::ids::Subject;
use crate::core::model::{Actor, Client, EndReason, Session};
use crate::core::{Engine, EngineError};
use crate::server::AppState;

/// The OTP purpose, as webhook receivers see it.
pub(super) const OTP_PURPOSE: &str = "gsp_taxpayer";
/// Absolute lifetime of a taxpayer session.
const SESSION_LIFETIME: i64 = 30 * 86_400;
/// Lifetime of each taxpayer token; `session/refresh` extends by as much.
const TOKEN_TTL: i64 = 6 * 3600;
const MAX_USERNAME: usize = 128;

/// What names the taxpayer session among the client's sessions. Prefixed so
/// a reference chosen in another dialect (a token-service `referenceId`
/// that happens to be a GSTIN) can never collide with it.
fn reference(gstin: &Gstin) -> String {
    format!("gsp:tax-payer:{gstin}")
}

/// The OTP login identifier; the GSTIN has a fixed length, so a username
/// containing ':' cannot make two logins collide.
fn login(gstin: &Gstin, username: &str) -> String {
    format!("{gstin}:{username}")
}

pub(super) fn parse_gstin(state: &AppState, raw: &str) -> Result<Gstin, GspError> {
    Gstin::parse(raw, state.settings.gstin_check_digit).map_err(GspError::gstin)
}

pub(super) fn parse_username(raw: Option<&str>) -> Result<String, GspError> {
    let u = raw
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            GspError::bad_request("missing username: the taxpayer's GST portal username")
        })?;
    if u.chars().count() > MAX_USERNAME || u.chars().any(char::is_control) {
        return Err(GspError::bad_request(format!(
            "username must be 1 to {MAX_USERNAME} printable characters"
        )));
    }
    Ok(u.to_owned())
}

/// An OTP as presented; it is compared, never interpreted, so anything of a
/// sane length goes to the engine (a wrong one counts as an attempt).
pub(super) fn parse_otp(raw: Option<&str>) -> Result<&str, GspError> {
    let otp = raw
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            GspError::bad_request("missing otp: the 6-digit code sent to the taxpayer")
        })?;
    if otp.len() > 32 {
        return Err(GspError::bad_request(
            "otp must be the 6-digit code sent to the taxpayer",
        ));
    }
    Ok(otp)
}

fn ms(t: i64) -> Value {
    Value::from(t.saturating_mul(1000))
}

/// The live taxpayer session of `client` for `gstin`.
async fn live_session(
    engine: &Engine,
    client: &Client,
    gstin: &Gstin,
) -> Result<Option<Session>, GspError> {
    Ok(engine
        .session_by_reference(client, &reference(gstin))
        .await?
        .filter(|s| s.dialect == "gsp" && s.subject.as_str() == gstin.as_str()))
}

/// Start (or restart) the OTP login; the engine delivers the code.
pub(super) async fn request_otp(
    state: &AppState,
    client: &Client,
    gstin: &Gstin,
    username: &str,
) -> Result<axum::response::Response, GspError> {
    state
        .engine
        .start_otp(&client.id, OTP_PURPOSE, &login(gstin, username))
        .await?;
    let mut data = Map::new();
    data.insert("message".into(), Value::from("OTP sent"));
    Ok(taxpayer_ok(data))
}

/// Check the OTP and open the taxpayer session, replacing any earlier one
/// of this API key for this GSTIN.
pub(super) async fn verify_otp(
    state: &AppState,
    client: &Client,
    gstin: &Gstin,
    username: &str,
    otp: &str,
) -> Result<axum::response::Response, GspError> {
    let engine = &state.engine;
    if let Err(rejected) = engine
        .verify_otp(&client.id, OTP_PURPOSE, &login(gstin, username), otp)
        .await?
    {
        return Ok(TaxpayerFailure::from(rejected).into_response());
    }
    let subject = Subject::parse(gstin.as_str()).map_err(EngineError::from)?;
    let mut req = OpenSession::new(subject, "gsp");
    req.with_refresh = false;
    req.reference = Some(reference(gstin));
    req.lifetime = Some(SESSION_LIFETIME);
    req.access_ttl = Some(TOKEN_TTL);
    req.claims.insert("username".into(), Value::from(username));
    req.claims
        .insert("gstin".into(), Value::from(gstin.as_str()));
    // A separate JWT whose `sub` is the GSTIN; its aud and intent keep it
    // from ever passing for an API token.
    req.token_claims
        .insert("aud".into(), Value::from("TAXPAYER"));
    req.token_claims
        .insert("intent".into(), Value::from("TAXPAYER_ACCESS_TOKEN"));
    req.token_claims
        .insert("gstin".into(), Value::from(gstin.as_str()));
    req.token_claims
        .insert("username".into(), Value::from(username));
    req.token_claims
        .insert("api_key".into(), Value::from(client.id.as_str()));
    let issued = engine.open_session_replacing(client, req).await?;
    tracing::info!(client_id = %client.id, session_id = %issued.session_id, "GSP taxpayer session opened");
    let mut data = Map::new();
    data.insert("access_token".into(), Value::from(issued.access_token));
    data.insert("session_expiry".into(), ms(issued.session_expires_at));
    data.insert("token_expiry".into(), ms(issued.expires_at));
    Ok(taxpayer_ok(data))
}

/// `{session_expiry, token_expiry}` of the live session.
pub(super) async fn session(
    state: &AppState,
    client: &Client,
    gstin: &Gstin,
) -> Result<axum::response::Response, GspError> {
    let Some(s) = live_session(&state.engine, client, gstin).await? else {
        return Ok(TaxpayerFailure::InvalidSession.into_response());
    };
    let mut data = Map::new();
    data.insert("session_expiry".into(), ms(s.expires_at));
    data.insert("token_expiry".into(), ms(s.access_cover_until));
    Ok(taxpayer_ok(data))
}

/// A fresh 6 h taxpayer token (never past the session's end).
pub(super) async fn refresh(
    state: &AppState,
    client: &Client,
    gstin: &Gstin,
) -> Result<axum::response::Response, GspError> {
    let engine = &state.engine;
    let Some(s) = live_session(engine, client, gstin).await? else {
        return Ok(TaxpayerFailure::InvalidSession.into_response());
    };
    let issued = match engine.reissue_access(client, &s.id, Some(TOKEN_TTL)).await {
        Ok(t) => t,
        // Ended or expired since the lookup.
        Err(EngineError::InvalidGrant(_)) => {
            return Ok(TaxpayerFailure::InvalidSession.into_response())
        }
        Err(e) => return Err(e.into()),
    };
    let mut data = Map::new();
    data.insert("access_token".into(), Value::from(issued.access_token));
    data.insert("session_expiry".into(), ms(issued.session_expires_at));
    data.insert("token_expiry".into(), ms(issued.expires_at));
    Ok(taxpayer_ok(data))
}

/// End the taxpayer session. Idempotent: with no live session (never
/// opened, already logged out, expired) the reply is the same success.
pub(super) async fn logout(
    state: &AppState,
    client: &Client,
    gstin: &Gstin,
) -> Result<axum::response::Response, GspError> {
    let engine = &state.engine;
    if let Some(s) = live_session(engine, client, gstin).await? {
        let by = Actor::Client(client.id.clone());
        match engine
            .end_session(&s.id, EndReason::Logout, by, Some(&client.id))
            .await
        {
            Ok(ended) => {
                tracing::info!(client_id = %client.id, session_id = %s.id, ended, "GSP taxpayer logout");
            }
            // Swept between the lookup and the end: nothing left to end.
            Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(taxpayer_ok(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(parse_username(Some(" alice ")).unwrap(), "alice");
        assert!(parse_username(None).is_err());
        assert!(parse_username(Some("  ")).is_err());
        assert!(parse_username(Some("a\u{7}b")).is_err());
        assert!(parse_username(Some(&"x".repeat(129))).is_err());
    }

    #[test]
    fn otps() {
        assert_eq!(parse_otp(Some("123456")).unwrap(), "123456");
        assert!(parse_otp(None).is_err());
        assert!(parse_otp(Some("")).is_err());
        assert!(parse_otp(Some(&"1".repeat(33))).is_err());
    }

    #[test]
    fn references_are_namespaced() {
        let g = Gstin::parse("27AAPFU0939F1ZV", true).unwrap();
        assert_eq!(reference(&g), "gsp:tax-payer:27AAPFU0939F1ZV");
        assert_eq!(login(&g, "bob"), "27AAPFU0939F1ZV:bob");
    }
}
