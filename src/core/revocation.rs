//! The in-memory revocation index: which sessions ended while some of their
//! access tokens could still verify. Checking a JWT consults only this, so
//! the hot path needs no store read.
//!
//! Bounded by expiry: an entry leaves once every access token it covers has
//! expired, since from then on the token's own `exp` refuses it.

use dashmap::DashMap;

use super::clock::UnixTime;
use super::ids::SessionId;

#[derive(Debug, Default)]
pub struct RevocationIndex {
    /// Session → the `exp` of its longest-lived access token.
    ended: DashMap<SessionId, UnixTime>,
}

impl RevocationIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember that `sid` ended; its access tokens live at most until `until`.
    pub fn insert(&self, sid: SessionId, until: UnixTime) {
        self.ended
            .entry(sid)
            .and_modify(|u| *u = (*u).max(until))
            .or_insert(until);
    }

    pub fn is_revoked(&self, sid: &SessionId) -> bool {
        self.ended.contains_key(sid)
    }

    /// Drop entries whose tokens have all expired. Returns how many left.
    pub fn prune(&self, now: UnixTime) -> usize {
        let before = self.ended.len();
        self.ended.retain(|_, until| *until > now);
        before - self.ended.len()
    }

    pub fn len(&self) -> usize {
        self.ended.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ended.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_expiry() {
        let idx = RevocationIndex::new();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        idx.insert(a, 10);
        idx.insert(b, 20);
        idx.insert(a, 5); // never shortens
        assert!(idx.is_revoked(&a) && idx.is_revoked(&b));
        assert_eq!(idx.prune(10), 1);
        assert!(!idx.is_revoked(&a));
        assert!(idx.is_revoked(&b));
        assert_eq!(idx.prune(20), 1);
        assert!(idx.is_empty());
    }
}
