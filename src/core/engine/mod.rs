//! The engine: every lifecycle rule, once. Dialect adapters call it; it
//! calls the store. Opening, refreshing, checking and ending sessions live
//! here and nowhere else.

mod authorize;
mod clients;
mod feed;
mod otp;
mod sessions;
mod tokens;

use std::sync::Arc;

use dashmap::DashMap;

pub use authorize::{
    dialect_name, s256, valid_challenge, with_query, AuthorizationRequest, PendingLogin,
    RedirectTargetError,
};
pub use clients::NewClient;
pub use feed::FeedState;
pub use otp::OtpRejected;
pub use sessions::OpenSession;
pub use tokens::{
    AccessClaims, IssuedTokens, RefreshDescription, TokenDescription, TokenKind, TokenRejected,
};

use super::clock::{Clock, UnixTime};
use super::delivery::OtpSender;
use super::error::EngineResult;
use super::ids::ClientId;
use super::keys::Keyring;
use super::revocation::RevocationIndex;
use super::secrets::TokenHasher;
use crate::store::{ChangeFeed, Store, SweepStats};

/// Lifetimes and limits, all in seconds.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `iss` of every access token.
    pub issuer: String,
    /// Default access-token lifetime for clients without their own.
    pub access_token_ttl: i64,
    /// Upper bound on any client's access-token lifetime; also how long a
    /// rotated-out signing key stays published.
    pub max_access_token_ttl: i64,
    /// Default refresh-token lifetime for clients without their own.
    pub refresh_token_ttl: i64,
    /// Absolute lifetime of a session opened with a refresh token.
    pub session_lifetime: i64,
    /// How long a retired refresh token may be retried without being taken
    /// for theft; 0 turns the grace window off.
    pub refresh_grace: i64,
    /// How long ended and expired sessions (and audit records) are kept
    /// for `session list` and audit.
    pub ended_retention: i64,
    /// Failed client authentications tolerated per client per window.
    pub client_auth_max_failures: u32,
    pub client_auth_window: i64,
    /// How many records of each kind one sweep step deletes.
    pub sweep_batch: usize,
    /// Lifetime of an OTP challenge.
    pub otp_ttl: i64,
    /// Wrong attempts after which an OTP challenge is dead.
    pub otp_max_attempts: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            access_token_ttl: 3600,
            max_access_token_ttl: 86_400,
            refresh_token_ttl: 30 * 86_400,
            session_lifetime: 30 * 86_400,
            refresh_grace: 5,
            ended_retention: 86_400,
            client_auth_max_failures: 10,
            client_auth_window: 60,
            sweep_batch: 500,
            otp_ttl: 300,
            otp_max_attempts: 5,
        }
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<Keyring>,
    hasher: TokenHasher,
    index: RevocationIndex,
    settings: EngineSettings,
    creds: DashMap<ClientId, clients::CachedCredential>,
    failures: DashMap<ClientId, clients::Failures>,
    otp_sender: Arc<dyn OtpSender>,
    /// Bumped whenever a client's credentials change, so a verification
    /// that raced with the change is not cached.
    cred_epoch: std::sync::atomic::AtomicU64,
    /// argon2 costs ~19 MiB and tens of ms per check: cap how many run at once.
    argon2_permits: tokio::sync::Semaphore,
    /// Verifications in flight, by client and secret digest (single flight).
    verifying: DashMap<(ClientId, super::model::TokenHash), Arc<tokio::sync::OnceCell<bool>>>,
    /// A [`FeedState`]: can checks trust the in-memory index alone?
    feed_state: std::sync::atomic::AtomicU8,
    /// The store's change feed until [`Engine::follow_changes`] takes it.
    feed: std::sync::Mutex<Option<Box<dyn ChangeFeed>>>,
    /// Access tokens whose signature verified, by SHA-256 of the token.
    verified: tokens::VerifiedCache,
}

/// What the engine is built from.
pub struct EngineDeps {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<Keyring>,
    pub hasher: TokenHasher,
    pub otp_sender: Arc<dyn OtpSender>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Build the engine and load what it must hold in memory (the
    /// revocation index) from the store.
    pub async fn start(deps: EngineDeps, settings: EngineSettings) -> EngineResult<Self> {
        let feed = deps.store.change_feed();
        // With a shared store, memory is not trusted until the feed is
        // listening and this node has caught up (`follow_changes`).
        let feed_state = if feed.is_some() {
            FeedState::Connecting
        } else {
            FeedState::Local
        };
        let engine = Self {
            store: deps.store,
            clock: deps.clock,
            keys: deps.keys,
            hasher: deps.hasher,
            index: RevocationIndex::new(),
            settings,
            creds: DashMap::new(),
            failures: DashMap::new(),
            otp_sender: deps.otp_sender,
            cred_epoch: std::sync::atomic::AtomicU64::new(0),
            verifying: DashMap::new(),
            argon2_permits: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .max(2),
            ),
            feed_state: std::sync::atomic::AtomicU8::new(feed_state as u8),
            feed: std::sync::Mutex::new(feed),
            verified: tokens::VerifiedCache::new(tokens::VERIFIED_CACHE_ENTRIES),
        };
        let n = engine.rebuild_index().await?;
        tracing::info!(revoked_sessions = n, "revocation index loaded");
        Ok(engine)
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    pub fn hasher(&self) -> &TokenHasher {
        &self.hasher
    }

    /// How many ended sessions the in-memory index remembers.
    pub fn revoked_in_memory(&self) -> usize {
        self.index.len()
    }

    /// Reload the revocation index from the store.
    pub async fn rebuild_index(&self) -> EngineResult<usize> {
        let now = self.now();
        let rows = self.store.active_revocations(now).await?;
        let n = rows.len();
        for (sid, until) in rows {
            self.index.insert(sid, until);
        }
        Ok(n)
    }

    /// Add a new current signing key; the old ones stay published until
    /// every token they signed has expired.
    pub async fn rotate_keys(&self) -> EngineResult<String> {
        let now = self.now();
        // A minute of slack for clocks of verifiers that cache the JWKS.
        let retire_at = now + self.settings.max_access_token_ttl + 60;
        let kid = self.keys.rotate(now, retire_at).await?;
        tracing::info!(kid, retire_previous_at = retire_at, "signing key rotated");
        Ok(kid)
    }

    /// One maintenance pass: delete expired records in batches (bounded),
    /// forget revocations whose tokens have all expired, drop retired keys.
    pub async fn sweep_once(&self) -> EngineResult<SweepStats> {
        // Bounded so one pass never monopolises the writer; the next tick
        // continues where this one stopped.
        const MAX_BATCHES_PER_PASS: usize = 20;
        let mut total = SweepStats::default();
        for _ in 0..MAX_BATCHES_PER_PASS {
            let now = self.now();
            let stats = self
                .store
                .sweep(
                    now,
                    now - self.settings.ended_retention,
                    self.settings.sweep_batch,
                )
                .await?;
            total.sessions += stats.sessions;
            total.expired += stats.expired;
            total.refresh_tokens += stats.refresh_tokens;
            total.revocations += stats.revocations;
            total.audit += stats.audit;
            total.grants += stats.grants;
            if !stats.more {
                break;
            }
            tokio::task::yield_now().await;
        }
        let now = self.now();
        self.index.prune(now);
        if let Err(e) = self.keys.prune(now).await {
            tracing::warn!(error = %e, "pruning retired signing keys failed; will retry");
        }
        self.prune_failures(now);
        if let Ok(live) = self.store.live_session_count().await {
            metrics::gauge!("tessera_sessions_live").set(live as f64);
        }
        metrics::gauge!("tessera_revocation_index_entries").set(self.index.len() as f64);
        Ok(total)
    }
}
