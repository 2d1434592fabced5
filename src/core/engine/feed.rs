//! Following the other nodes of a fleet. A node checks access tokens from
//! memory only while that memory is known to hold every end committed by
//! any node: while the change feed is connected and the node has caught up
//! since it (re)connected. Otherwise every check asks the store, and fails
//! (503) when the store cannot answer: a node never vouches for a token it
//! cannot be sure is still live.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Engine;
use crate::core::error::EngineResult;
use crate::store::{Change, FeedEvent};

/// Whether the in-memory revocation index can be trusted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedState {
    /// The store belongs to this node alone: every end goes through it.
    Local = 0,
    /// Listening to the fleet and caught up.
    Current = 1,
    /// Not listening yet, or listening again and catching up.
    Connecting = 2,
    /// The feed broke; checks go to the store until it is back.
    Lost = 3,
}

impl FeedState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Local,
            1 => Self::Current,
            2 => Self::Connecting,
            _ => Self::Lost,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Current => "current",
            Self::Connecting => "connecting",
            Self::Lost => "lost",
        }
    }

    /// Can checks rely on memory alone?
    pub fn is_current(&self) -> bool {
        matches!(self, Self::Local | Self::Current)
    }
}

/// How long to wait before trying a failed catch-up again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(250);
/// How long a barrier may take to come back before the catch-up is redone.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the follower is between `Connected` and `Current`.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Lost, or not connected yet: waiting for `Connected`.
    Waiting,
    /// Connected: catch up from the store at this time.
    CatchUp(Instant),
    /// Caught up: waiting for barrier `n` to come back by the deadline.
    Sync(u64, Instant),
    /// Current.
    Following,
}

/// Sets the state to `Lost` when the follower stops, however it stops:
/// without a follower, memory must not be trusted.
struct LostOnExit<'a>(&'a Engine);

impl Drop for LostOnExit<'_> {
    fn drop(&mut self) {
        self.0.set_feed_state(FeedState::Lost);
    }
}

impl Engine {
    pub fn feed_state(&self) -> FeedState {
        FeedState::from_u8(self.feed_state.load(Ordering::Acquire))
    }

    fn set_feed_state(&self, state: FeedState) {
        let before = FeedState::from_u8(self.feed_state.swap(state as u8, Ordering::AcqRel));
        if before != state {
            metrics::gauge!("tessera_change_feed_current")
                .set(f64::from(u8::from(state.is_current())));
            match state {
                FeedState::Current => {
                    tracing::info!("change feed current: checks answer from memory")
                }
                FeedState::Lost => {
                    tracing::warn!("change feed lost: checks go to the store until it is back")
                }
                _ => {}
            }
        }
    }

    /// Follow the store's change feed until `stop`, if the store has one.
    ///
    /// After every `Connected`: catch up from the store (revocations, keys,
    /// cached credentials), then ask the feed for a barrier, applying the
    /// changes that arrive before it comes back. Only then is the node
    /// current: every end committed before the barrier, including those
    /// committed while the catch-up was reading the store, has been applied.
    pub async fn follow_changes(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(mut feed) = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let _lost_on_exit = LostOnExit(self);
        let mut phase = Phase::Waiting;
        loop {
            let wake = match phase {
                Phase::CatchUp(at) | Phase::Sync(_, at) => Some(at),
                Phase::Waiting | Phase::Following => None,
            };
            let due = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
            let event = tokio::select! {
                e = feed.next() => e,
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(due), if wake.is_some() => {
                    phase = match phase {
                        Phase::CatchUp(_) => match self.catch_up().await {
                            Ok(n) => {
                                tracing::info!(revoked_sessions = n, "caught up with the fleet");
                                Phase::Sync(feed.sync(), Instant::now() + SYNC_TIMEOUT)
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "catching up with the fleet failed; retrying");
                                Phase::CatchUp(Instant::now() + CATCH_UP_RETRY)
                            }
                        },
                        // The barrier did not come back in time: again.
                        _ => Phase::CatchUp(Instant::now()),
                    };
                    continue;
                }
            };
            match event {
                FeedEvent::Connected => {
                    self.set_feed_state(FeedState::Connecting);
                    phase = Phase::CatchUp(Instant::now());
                }
                FeedEvent::Lost(reason) => {
                    tracing::warn!(%reason, "change feed lost");
                    metrics::counter!("tessera_change_feed_lost_total").increment(1);
                    self.set_feed_state(FeedState::Lost);
                    phase = Phase::Waiting;
                }
                FeedEvent::Synced(n) => {
                    if matches!(phase, Phase::Sync(want, _) if want == n) {
                        self.set_feed_state(FeedState::Current);
                        phase = Phase::Following;
                    }
                }
                FeedEvent::Change(change) => self.apply_change(change).await,
            }
        }
    }

    /// After (re)connecting: what other nodes did meanwhile is in the
    /// store. Events that arrive meanwhile are applied after it, which is
    /// fine: every change is idempotent and they commute.
    async fn catch_up(&self) -> EngineResult<usize> {
        let n = self.rebuild_index().await?;
        self.forget_all_credentials();
        self.keys.reload().await?;
        Ok(n)
    }

    /// One change committed by some node (this one included).
    pub async fn apply_change(&self, change: Change) {
        match change {
            Change::Ended(ended) => {
                let now = self.now();
                for (sid, until) in ended {
                    self.index.insert(sid, until.max(now + 1));
                }
            }
            Change::Client(id) => self.forget_credentials(&id),
            Change::Keys => {
                if let Err(e) = self.keys.reload().await {
                    tracing::warn!(error = %e, "reloading signing keys after a change failed");
                }
            }
        }
    }
}
