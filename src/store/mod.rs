//! Durable state behind one small async trait. The embedded backend
//! (`redb`) is the default; every backend passes the same conformance suite
//! in [`conformance`].
//!
//! The store holds no lifecycle rule: it offers atomic operations whose
//! outcomes the engine interprets (for example, "retire this refresh token
//! if it is still current").

mod compact;
pub mod conformance;
pub mod faulty;
pub mod postgres;
pub mod redb;

use async_trait::async_trait;

use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{
    Client, Ended, RefreshRecord, Revocation, Session, SessionFilter, TokenHash,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or written; the caller should answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be decoded: a bug or a damaged file.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A record the write depends on does not exist (e.g. the client of a
    /// new session was deleted meanwhile).
    #[error("{0} does not exist")]
    Missing(&'static str),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Outcome of [`Store::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The old token was current; it is now retired and the new one stored.
    Rotated,
    /// The old token was not current (already retired, or gone); nothing changed.
    NotCurrent,
}

/// A session that an [`Store::end_sessions`] call ended (it was live before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub id: SessionId,
    pub client_id: ClientId,
    pub subject: Subject,
    /// Until when its access tokens could still verify: the revocation
    /// index must hold the session until then.
    pub access_cover_until: UnixTime,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub sessions: usize,
    /// Sessions that passed their expiry and stopped counting as live
    /// (the embedded store; PostgreSQL counts live sessions by query).
    pub expired: usize,
    pub refresh_tokens: usize,
    pub revocations: usize,
    pub audit: usize,
    pub grants: usize,
    /// Some kind had a whole batch of due rows: another pass may find
    /// more. Decided from the rows a pass went through, not from what it
    /// deleted (a stale index row is dropped without deleting anything,
    /// and still takes its place in the batch).
    pub more: bool,
}

impl SweepStats {
    pub fn total(&self) -> usize {
        self.sessions
            + self.expired
            + self.refresh_tokens
            + self.revocations
            + self.audit
            + self.grants
    }
}

/// A short-lived, single-purpose record: an OTP challenge, a login
/// challenge, an authorization code. The engine gives `value` its meaning
/// (JSON); the store keeps it until `expires_at` and offers compare-and-swap
/// on `version` so that "use once" and "count attempts" are atomic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub value: Vec<u8>,
    /// 1 when first put; +1 on every replace or swap.
    pub version: u64,
    pub expires_at: UnixTime,
}

/// What kind of grant a key names; kinds never see each other's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantKind {
    Otp,
    LoginChallenge,
    AuthorizationCode,
}

impl GrantKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Otp => "otp",
            Self::LoginChallenge => "login_challenge",
            Self::AuthorizationCode => "authorization_code",
        }
    }
}

/// A change that some node of a fleet committed to the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These sessions ended; their access tokens verify at most until the
    /// time given with each.
    Ended(Vec<(SessionId, UnixTime)>),
    /// This client was changed (secret rotated) or deleted.
    Client(ClientId),
    /// Signing keys were added, retired or deleted.
    Keys,
}

/// What a change feed reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// Listening (again): every change committed from now on will be
    /// reported. Changes made while the feed was lost were not: the
    /// listener must catch up from the store before it trusts its memory.
    Connected,
    /// The feed broke; changes may be missed until the next `Connected`.
    Lost(String),
    Change(Change),
    /// The answer to [`ChangeFeed::sync`] with this number: every change
    /// committed before that call has been reported.
    Synced(u64),
}

/// The changes other nodes make to a shared store, as they commit.
#[async_trait]
pub trait ChangeFeed: Send + 'static {
    /// The next event. Never ends: a lost feed reconnects by itself,
    /// reporting `Lost` and then `Connected`.
    async fn next(&mut self) -> FeedEvent;

    /// Ask for a barrier: `Synced(n)` (with the number returned) will be
    /// reported after every change committed before this call. It may
    /// never come (the feed broke meanwhile); callers wait with a timeout.
    fn sync(&mut self) -> u64;
}

/// CPU work that is part of answering a write (signing the token it
/// issues), which the store may run while the write waits for the disk
/// ([`Store::offload`]). Whoever takes it first runs it: the store, or
/// the caller once its write is done.
#[derive(Clone)]
pub struct Work(std::sync::Arc<std::sync::Mutex<Option<Task>>>);

type Task = Box<dyn FnOnce() + Send + 'static>;

impl Work {
    pub fn new(work: impl FnOnce() + Send + 'static) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(
            work,
        )))))
    }

    /// Runs the work, unless it was taken already.
    pub fn run(&self) {
        let work = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(work) = work {
            work();
        }
    }
}

/// Every write returns only once it is durable (fsync'd or committed).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Is the backend reachable and writable?
    async fn ping(&self) -> StoreResult<()>;

    /// Offers `work` to run on the store's own thread while a write waits
    /// for the disk; whether it was taken. Either way the caller runs it
    /// (see [`Work::run`]) once its write is done, in case the store did
    /// not get to it. The default takes nothing.
    fn offload(&self, _work: &Work) -> bool {
        false
    }

    /// For a store that other nodes write too: a feed of their changes.
    /// `None` for a store this process owns alone (the embedded one).
    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        None
    }

    // --- clients -------------------------------------------------------
    /// Insert a new client; `Conflict` if the id is taken.
    async fn insert_client(&self, client: &Client) -> StoreResult<()>;
    /// Replace an existing client if its stored `secret_version` is still
    /// `expected_version` (compare-and-swap: two concurrent rotations cannot
    /// undo each other); false if it does not exist or changed meanwhile.
    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool>;
    async fn get_client(&self, id: &ClientId) -> StoreResult<Option<Client>>;
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Remove the client record; returns false if it did not exist. Its
    /// sessions are ended by the engine before this call.
    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool>;

    // --- sessions and refresh tokens ---------------------------------
    /// Store a new session and, if given, its first refresh token, atomically.
    /// `Conflict` if the session's `reference` is already used by a live
    /// session of the same client. `Missing("client")` if the session's
    /// client does not exist, checked in the same transaction (PostgreSQL:
    /// with the client row locked `FOR KEY SHARE`), so a session can never
    /// be created for a client whose deletion has committed — the engine
    /// deletes the client first and then ends its sessions.
    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()>;
    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>>;
    /// The live session of `client` opened with this reference hash, if any.
    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>>;
    /// Sessions matching the filter, newest first, at most `filter.limit`
    /// (0 = no limit). Without `include_ended`, only sessions that are not
    /// ended and not past `expires_at` at `now`.
    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>>;
    /// Raise the session's `access_cover_until` to at least `until` (an
    /// access token is about to be issued without a refresh rotation).
    /// Returns false, changing nothing, if the session is unknown or ended:
    /// the caller must then not issue the token. (This ordering is what
    /// keeps a token issued concurrently with an end inside the revocation
    /// index's cover.)
    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool>;

    async fn get_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>>;
    /// Atomically: if the token `old` is current and its session exists and
    /// is not ended, retire it (at `now`, naming `new.hash` as successor),
    /// store `new` as current, and raise the session's `access_cover_until`
    /// to `access_exp`. Otherwise `NotCurrent` and nothing changes.
    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    ) -> StoreResult<RotateOutcome>;

    /// End each listed session that is still not ended: set `ended`, move
    /// `delete_after` to at least `delete_after`, remember the session in
    /// the revocation table until its `access_cover_until`, and append an
    /// audit record. Returns only the sessions this call ended; sessions
    /// already ended or unknown are skipped (ending is idempotent).
    async fn end_sessions(
        &self,
        ids: &[SessionId],
        ended: &Ended,
        delete_after: UnixTime,
    ) -> StoreResult<Vec<EndedSession>>;
    /// Ids of every not-yet-ended session of `subject` (optionally only
    /// those of `client`).
    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>>;
    /// Ids of every not-yet-ended session of `client`.
    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>>;

    /// Every ended session whose access tokens may still verify at `now`,
    /// with the time until which it must be remembered. Used to rebuild the
    /// in-memory revocation index at start.
    async fn active_revocations(&self, now: UnixTime) -> StoreResult<Vec<(SessionId, UnixTime)>>;
    /// The audit trail, newest first, at most `limit`.
    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<Revocation>>;

    /// Delete at most `batch` expired records of each kind: sessions whose
    /// `delete_after` has passed (with their index rows), refresh tokens
    /// past `expires_at`, revocation rows past their cover, audit records
    /// older than `audit_before`, grants past `expires_at`.
    async fn sweep(
        &self,
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    ) -> StoreResult<SweepStats>;

    // --- grants (OTP challenges, login challenges, codes) -------------
    /// Insert, or replace an existing grant of the same kind and key (its
    /// version then goes up by one; a fresh one has version 1).
    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()>;
    /// The grant, if present (expired ones may still be returned until
    /// swept: the engine checks `expires_at`).
    async fn get_grant(&self, kind: GrantKind, key: &TokenHash) -> StoreResult<Option<Grant>>;
    /// If the grant exists with `expected_version`: replace its value (same
    /// `expires_at`, version + 1) or, with `None`, delete it; true. Otherwise
    /// false and nothing changes.
    async fn swap_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        expected_version: u64,
        new_value: Option<&[u8]>,
    ) -> StoreResult<bool>;

    /// How many sessions are live (not ended, not past expiry) — may count
    /// expired sessions the sweeper has not reached yet.
    async fn live_session_count(&self) -> StoreResult<u64>;
}
