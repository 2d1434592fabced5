//! Delivering one-time passwords: a pluggable sender chosen in config.
//! `log` (development) writes the OTP to the log, clearly marked; `webhook`
//! POSTs it as JSON to an operator's endpoint (which sends the SMS or mail).
//! A delivery failure is an error to the caller, never a silent success.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::clock::UnixTime;

/// What a sender is asked to deliver.
pub struct OtpMessage<'a> {
    pub otp: &'a SecretString,
    /// The identifier the user logs in with (username, phone, GSTIN…).
    pub login: &'a str,
    /// What the OTP is for, e.g. `gsp_taxpayer` or `login`.
    pub purpose: &'a str,
    pub client_id: &'a str,
    pub expires_at: UnixTime,
}

#[derive(Debug, thiserror::Error)]
#[error("OTP delivery failed: {0}")]
pub struct DeliveryError(pub String);

#[async_trait]
pub trait OtpSender: Send + Sync + 'static {
    async fn send(&self, msg: &OtpMessage<'_>) -> Result<(), DeliveryError>;
}

/// Development sender: the OTP goes to the log at info level.
pub struct LogSender;

#[async_trait]
impl OtpSender for LogSender {
    async fn send(&self, msg: &OtpMessage<'_>) -> Result<(), DeliveryError> {
        // The one place an OTP is logged, on purpose and marked as such;
        // production deployments use the webhook sender.
        tracing::info!(
            target: "tessera::otp_delivery",
            login = msg.login,
            purpose = msg.purpose,
            client_id = msg.client_id,
            otp = msg.otp.expose_secret(),
            "DEVELOPMENT OTP SENDER (otp_sender = \"log\"): deliver this OTP to the user"
        );
        Ok(())
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    otp: &'a str,
    login: &'a str,
    purpose: &'a str,
    client_id: &'a str,
    expires_at: UnixTime,
}

/// Production sender: POST JSON `{otp, login, purpose, client_id, expires_at}`
/// to a URL; any non-2xx answer or network error is a delivery failure.
pub struct WebhookSender {
    url: String,
    http: reqwest::Client,
}

impl WebhookSender {
    pub fn new(url: String) -> Result<Self, DeliveryError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| DeliveryError(format!("building the HTTP client: {e}")))?;
        Ok(Self { url, http })
    }
}

#[async_trait]
impl OtpSender for WebhookSender {
    async fn send(&self, msg: &OtpMessage<'_>) -> Result<(), DeliveryError> {
        let body = WebhookBody {
            otp: msg.otp.expose_secret(),
            login: msg.login,
            purpose: msg.purpose,
            client_id: msg.client_id,
            expires_at: msg.expires_at,
        };
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| DeliveryError(format!("webhook unreachable: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(DeliveryError(format!(
                "webhook answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        Ok(())
    }
}
