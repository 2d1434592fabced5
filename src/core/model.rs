//! The records Tessera keeps: clients, sessions, refresh tokens and the
//! audit trail of every end. Serialized as JSON by the stores so that a
//! field added later reads back from an older file with its default.

use serde::{Deserialize, Serialize};

use super::clock::UnixTime;
use super::ids::{ClientId, Scope, SessionId, Subject};

/// A keyed hash (HMAC-SHA-256) of a token or reference id; the only form in
/// which refresh tokens and reference ids are stored.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    RefreshToken,
    AuthorizationCode,
    /// The native session API (`/v1/sessions`): a trusted back end opens
    /// sessions for its own users.
    Session,
}

impl GrantType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "client_credentials" => Self::ClientCredentials,
            "refresh_token" => Self::RefreshToken,
            "authorization_code" => Self::AuthorizationCode,
            "session" => Self::Session,
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
            Self::AuthorizationCode => "authorization_code",
            Self::Session => "session",
        }
    }
    /// What a client may do when its creator named no grant types.
    pub fn defaults() -> Vec<Self> {
        vec![Self::ClientCredentials, Self::RefreshToken, Self::Session]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    /// argon2id PHC string; the secret itself is never stored.
    pub secret_hash: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// Per-client overrides; `None` means the server default.
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    #[serde(default)]
    pub refresh_token_ttl: Option<i64>,
    pub created_at: UnixTime,
    /// The client's 256-bit payload-encryption key (token-service dialect),
    /// sealed with the server key.
    #[serde(default)]
    pub payload_key_sealed: Option<String>,
    /// Bumped on every secret rotation, so cached verifications of the old
    /// secret are recognised as stale.
    #[serde(default)]
    pub secret_version: u32,
}

impl Client {
    pub fn allows(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }
}

/// Why a session ended. Recorded with the end and shown by `session list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A token of the session was revoked (RFC 7009 or a dialect's revoke).
    TokenRevoked,
    /// The client ended the session through the session API or a logout.
    Logout,
    /// A retired refresh token was presented again (RFC 9700 §4.14.2).
    RefreshTokenReuse,
    /// An authorization code was presented twice (RFC 6749 §4.1.2).
    CodeReplay,
    /// Every session of the subject was ended.
    SubjectRevoked,
    /// An administrator ended it.
    AdminRevoked,
    /// Its client was deleted.
    ClientDeleted,
    /// Replaced by a successor session (a dialect's token refresh that
    /// starts a new session with the same lifetime).
    Superseded,
}

impl EndReason {
    /// An end its own client asked for in the course of its work (a
    /// revocation, a logout, a replacement), as opposed to one for a
    /// security reason or by an administrator. The log tells routine ends
    /// at debug level, like the openings they pair with; the audit trail
    /// records every end.
    pub fn is_routine(&self) -> bool {
        matches!(self, Self::TokenRevoked | Self::Logout | Self::Superseded)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TokenRevoked => "token_revoked",
            Self::Logout => "logout",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::CodeReplay => "code_replay",
            Self::SubjectRevoked => "subject_revoked",
            Self::AdminRevoked => "admin_revoked",
            Self::ClientDeleted => "client_deleted",
            Self::Superseded => "superseded",
        }
    }
}

/// Who asked for an end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Actor {
    Client(ClientId),
    Admin,
    Engine,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub at: UnixTime,
    pub reason: EndReason,
    pub by: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub client_id: ClientId,
    pub subject: Subject,
    #[serde(default)]
    pub scope: Scope,
    /// Free-form claims supplied when the session was opened (user fields
    /// of a dialect, for instance).
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Claims a dialect puts into every access token of the session (they
    /// may override `aud`; never `iss`, `exp`, `iat`, `jti`, `sid`,
    /// `client_id`).
    #[serde(default)]
    pub token_claims: serde_json::Map<String, serde_json::Value>,
    /// Which API opened it: `native`, `gsp`, `digilocker`, `token_service`.
    pub dialect: String,
    /// Keyed hash of a caller-chosen reference (token-service `referenceId`).
    #[serde(default)]
    pub reference: Option<TokenHash>,
    pub created_at: UnixTime,
    /// Absolute end of life; no token of the session outlives it.
    pub expires_at: UnixTime,
    /// The latest `exp` of any access token issued for the session. A
    /// revocation must be remembered in memory until then.
    pub access_cover_until: UnixTime,
    /// When the sweeper may delete the record.
    pub delete_after: UnixTime,
    #[serde(default)]
    pub ended: Option<Ended>,
}

impl Session {
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.ended.is_none() && now < self.expires_at
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RefreshState {
    Current,
    /// Rotated away at `at`; `successor` is the hash of the token that
    /// replaced it.
    Retired {
        at: UnixTime,
        successor: TokenHash,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub hash: TokenHash,
    pub session_id: SessionId,
    pub client_id: ClientId,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub state: RefreshState,
}

/// One line of the audit trail: what ended, when, why, by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub session_id: SessionId,
    pub client_id: ClientId,
    pub subject: Subject,
    pub ended: Ended,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub subject: Option<Subject>,
    pub client_id: Option<ClientId>,
    /// Also return ended and expired sessions still within retention.
    pub include_ended: bool,
    pub limit: usize,
}
