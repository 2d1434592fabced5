//! A store wrapper that can be told to fail, for outage tests (and that
//! can own what the wrapped store needs, such as a test's temporary
//! directory): with writes
//! (or reads) switched off, every such call answers `Unavailable` exactly as
//! a backend that lost its disk or its database would. It can also hand
//! the engine a change feed that the test scripts ([`FaultyStore::scripted_feed`]),
//! to play the other nodes of a fleet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    ChangeFeed, EndedSession, FeedEvent, Grant, GrantKind, RotateOutcome, Store, StoreError,
    StoreResult, SweepStats,
};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, SessionId, Subject};
use crate::core::model::{
    Client, Ended, RefreshRecord, Revocation, Session, SessionFilter, TokenHash,
};

/// A feed that reports what the test sends, and then nothing. A barrier
/// is answered after whatever the test sent before it was asked for.
struct ScriptedFeed {
    events: tokio::sync::mpsc::UnboundedReceiver<FeedEvent>,
    queue: tokio::sync::mpsc::UnboundedSender<FeedEvent>,
    syncs: u64,
}

#[async_trait]
impl ChangeFeed for ScriptedFeed {
    async fn next(&mut self) -> FeedEvent {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }

    fn sync(&mut self) -> u64 {
        self.syncs += 1;
        let _ = self.queue.send(FeedEvent::Synced(self.syncs));
        self.syncs
    }
}

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    feed: std::sync::Mutex<Option<Box<dyn ChangeFeed>>>,
    fail_writes: AtomicBool,
    fail_reads: AtomicBool,
    /// Dropped after `inner` (fields drop in order): e.g. the temporary
    /// directory of a test store, removed once the store has closed.
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            feed: std::sync::Mutex::new(None),
            fail_writes: AtomicBool::new(false),
            fail_reads: AtomicBool::new(false),
            _guard: None,
        }
    }

    /// Keep `guard` alive as long as the store, and drop it after.
    pub fn keeping(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// Give the engine a change feed whose events the test sends through
    /// the returned sender (instead of the wrapped store's feed).
    pub fn scripted_feed(self) -> (Self, tokio::sync::mpsc::UnboundedSender<FeedEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let feed = ScriptedFeed {
            events: rx,
            queue: tx.clone(),
            syncs: 0,
        };
        *self.feed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(feed));
        (self, tx)
    }

    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    pub fn fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }

    fn write(&self) -> StoreResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        Ok(())
    }

    fn read(&self) -> StoreResult<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read()?;
        self.write()?;
        self.inner.ping().await
    }
    fn change_feed(&self) -> Option<Box<dyn ChangeFeed>> {
        let scripted = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        scripted.or_else(|| self.inner.change_feed())
    }
    fn offload(&self, work: &super::Work) -> bool {
        self.inner.offload(work)
    }
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        self.write()?;
        self.inner.insert_client(client).await
    }
    async fn update_client(&self, client: &Client, expected_version: u32) -> StoreResult<bool> {
        self.write()?;
        self.inner.update_client(client, expected_version).await
    }
    async fn get_client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        self.read()?;
        self.inner.get_client(id).await
    }
    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read()?;
        self.inner.list_clients().await
    }
    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        self.write()?;
        self.inner.delete_client(id).await
    }
    async fn create_session(
        &self,
        session: &Session,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<()> {
        self.write()?;
        self.inner.create_session(session, refresh).await
    }
    async fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner.get_session(id).await
    }
    async fn find_session_by_reference(
        &self,
        client: &ClientId,
        reference: &TokenHash,
    ) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner
            .find_session_by_reference(client, reference)
            .await
    }
    async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.read()?;
        self.inner.list_sessions(filter, now).await
    }
    async fn extend_access_cover(&self, id: &SessionId, until: UnixTime) -> StoreResult<bool> {
        self.write()?;
        self.inner.extend_access_cover(id, until).await
    }
    async fn get_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>> {
        self.read()?;
        self.inner.get_refresh(hash).await
    }
    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    ) -> StoreResult<RotateOutcome> {
        self.write()?;
        self.inner.rotate_refresh(old, new, now, access_exp).await
    }
    async fn end_sessions(
        &self,
        ids: &[SessionId],
        ended: &Ended,
        delete_after: UnixTime,
    ) -> StoreResult<Vec<EndedSession>> {
        self.write()?;
        self.inner.end_sessions(ids, ended, delete_after).await
    }
    async fn sessions_of_subject(
        &self,
        subject: &Subject,
        client: Option<&ClientId>,
    ) -> StoreResult<Vec<SessionId>> {
        self.read()?;
        self.inner.sessions_of_subject(subject, client).await
    }
    async fn sessions_of_client(&self, client: &ClientId) -> StoreResult<Vec<SessionId>> {
        self.read()?;
        self.inner.sessions_of_client(client).await
    }
    async fn active_revocations(&self, now: UnixTime) -> StoreResult<Vec<(SessionId, UnixTime)>> {
        self.read()?;
        self.inner.active_revocations(now).await
    }
    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<Revocation>> {
        self.read()?;
        self.inner.audit_log(limit).await
    }
    async fn sweep(
        &self,
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    ) -> StoreResult<SweepStats> {
        self.write()?;
        self.inner.sweep(now, audit_before, batch).await
    }
    async fn put_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        value: &[u8],
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        self.write()?;
        self.inner.put_grant(kind, key, value, expires_at).await
    }
    async fn get_grant(&self, kind: GrantKind, key: &TokenHash) -> StoreResult<Option<Grant>> {
        self.read()?;
        self.inner.get_grant(kind, key).await
    }
    async fn swap_grant(
        &self,
        kind: GrantKind,
        key: &TokenHash,
        expected_version: u64,
        new_value: Option<&[u8]>,
    ) -> StoreResult<bool> {
        self.write()?;
        self.inner
            .swap_grant(kind, key, expected_version, new_value)
            .await
    }
    async fn live_session_count(&self) -> StoreResult<u64> {
        self.read()?;
        self.inner.live_session_count().await
    }
}
