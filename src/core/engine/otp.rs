//! One-time passwords: 6 digits, short-lived, at most a few wrong attempts
//! per challenge, stored only as a keyed hash. A new challenge for the same
//! login replaces the old one.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::core::clock::UnixTime;
use crate::core::delivery::OtpMessage;
use crate::core::error::{EngineError, EngineResult};
use crate::core::ids::ClientId;
use crate::core::model::TokenHash;
use crate::core::secrets::{ct_eq, random_bytes};
use crate::store::GrantKind;

#[derive(Serialize, Deserialize)]
struct OtpRecord {
    code_hash: TokenHash,
    attempts: u32,
    expires_at: UnixTime,
}

/// Why an OTP was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpRejected {
    #[error("no OTP was requested, or it was already used")]
    NoChallenge,
    #[error("the OTP has expired")]
    Expired,
    #[error("wrong OTP; {attempts_left} attempts left")]
    Wrong { attempts_left: u32 },
    #[error("too many wrong attempts; request a new OTP")]
    TooManyAttempts,
}

/// A uniformly random 6-digit code.
fn six_digits() -> String {
    // Rejection sampling: 4_294_000_000 is the largest multiple of 10^6
    // below 2^32, so every code is equally likely.
    loop {
        let n = u32::from_le_bytes(random_bytes::<4>());
        if n < 4_294_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

impl Engine {
    fn otp_key(&self, client: &ClientId, purpose: &str, login: &str) -> TokenHash {
        self.hasher
            .hash("otp-challenge", &format!("{client}\0{purpose}\0{login}"))
    }

    fn otp_hash(&self, key: &TokenHash, otp: &str) -> TokenHash {
        // Bound to the challenge key, so equal codes of different challenges
        // hash differently.
        let mut material = String::with_capacity(70);
        for b in key {
            material.push_str(&format!("{b:02x}"));
        }
        material.push(':');
        material.push_str(otp);
        self.hasher.hash("otp-code", &material)
    }

    /// Start (or restart) an OTP login for `login` and deliver the code.
    /// Returns when the challenge expires.
    pub async fn start_otp(
        &self,
        client: &ClientId,
        purpose: &str,
        login: &str,
    ) -> EngineResult<UnixTime> {
        if login.is_empty() || login.len() > 256 || login.chars().any(char::is_control) {
            return Err(EngineError::InvalidRequest(
                "login must be 1 to 256 printable characters".into(),
            ));
        }
        let now = self.now();
        let key = self.otp_key(client, purpose, login);
        let otp = SecretString::from(six_digits());
        let expires_at = now + self.settings.otp_ttl;
        let record = OtpRecord {
            code_hash: self.otp_hash(&key, otp.expose_secret()),
            attempts: 0,
            expires_at,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.store
            .put_grant(GrantKind::Otp, &key, &bytes, expires_at)
            .await?;
        let msg = OtpMessage {
            otp: &otp,
            login,
            purpose,
            client_id: client.as_str(),
            expires_at,
        };
        if let Err(e) = self.otp_sender.send(&msg).await {
            tracing::warn!(error = %e, purpose, "OTP delivery failed");
            return Err(EngineError::Delivery(e.to_string()));
        }
        metrics::counter!("tessera_otp_sent_total", "purpose" => purpose.to_owned()).increment(1);
        Ok(expires_at)
    }

    /// Check an OTP. Success consumes the challenge; each wrong attempt is
    /// counted atomically, and the last allowed one kills the challenge.
    pub async fn verify_otp(
        &self,
        client: &ClientId,
        purpose: &str,
        login: &str,
        otp: &str,
    ) -> EngineResult<Result<(), OtpRejected>> {
        let key = self.otp_key(client, purpose, login);
        let presented = self.otp_hash(&key, otp);
        // Compare-and-swap retries: only concurrent attempts on the same
        // challenge make a swap fail, and each retry sees their effect.
        for _ in 0..16 {
            let Some(grant) = self.store.get_grant(GrantKind::Otp, &key).await? else {
                return Ok(Err(OtpRejected::NoChallenge));
            };
            let mut rec: OtpRecord = serde_json::from_slice(&grant.value)
                .map_err(|e| EngineError::Internal(format!("OTP record: {e}")))?;
            if rec.expires_at <= self.now() {
                self.store
                    .swap_grant(GrantKind::Otp, &key, grant.version, None)
                    .await?;
                return Ok(Err(OtpRejected::Expired));
            }
            if rec.attempts >= self.settings.otp_max_attempts {
                self.store
                    .swap_grant(GrantKind::Otp, &key, grant.version, None)
                    .await?;
                return Ok(Err(OtpRejected::TooManyAttempts));
            }
            if ct_eq(&presented, &rec.code_hash) {
                if self
                    .store
                    .swap_grant(GrantKind::Otp, &key, grant.version, None)
                    .await?
                {
                    return Ok(Ok(()));
                }
                continue;
            }
            rec.attempts += 1;
            let left = self.settings.otp_max_attempts.saturating_sub(rec.attempts);
            let (new, outcome) = if left == 0 {
                (None, OtpRejected::TooManyAttempts)
            } else {
                let bytes =
                    serde_json::to_vec(&rec).map_err(|e| EngineError::Internal(e.to_string()))?;
                (
                    Some(bytes),
                    OtpRejected::Wrong {
                        attempts_left: left,
                    },
                )
            };
            if self
                .store
                .swap_grant(GrantKind::Otp, &key, grant.version, new.as_deref())
                .await?
            {
                tracing::info!(purpose, attempts_left = left, "wrong OTP");
                return Ok(Err(outcome));
            }
        }
        Err(EngineError::Unavailable(
            crate::store::StoreError::Unavailable("OTP challenge under contention".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn six_digit_codes() {
        for _ in 0..1000 {
            let c = super::six_digits();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
