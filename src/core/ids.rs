//! Newtypes for the identifiers that cross the wire. Parse, don't validate:
//! a value of one of these types has already passed its checks.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct ParseIdError {
    pub what: &'static str,
    pub why: &'static str,
}

fn printable_id(s: &str, what: &'static str, max: usize) -> Result<(), ParseIdError> {
    if s.is_empty() {
        return Err(ParseIdError {
            what,
            why: "must not be empty",
        });
    }
    if s.len() > max {
        return Err(ParseIdError {
            what,
            why: "is too long",
        });
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ParseIdError {
            what,
            why: "must be printable ASCII without spaces",
        });
    }
    Ok(())
}

/// An application's identifier; also its API key in the dialects that have one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        printable_id(s, "client_id", Self::MAX_LEN)?;
        if s.contains(':') {
            // Basic auth splits on the first ':'; an id containing one could never log in.
            return Err(ParseIdError {
                what: "client_id",
                why: "must not contain ':'",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh random id: `tc_` and 26 base32 characters (128 bits).
    pub fn generate() -> Self {
        Self(format!("tc_{}", crate::core::secrets::random_base32(16)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<ClientId> for String {
    fn from(c: ClientId) -> String {
        c.0
    }
}
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a session is for: a user id, an email, a GSTIN, or a client itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    pub const MAX_LEN: usize = 256;

    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        if s.is_empty() {
            return Err(ParseIdError {
                what: "subject",
                why: "must not be empty",
            });
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseIdError {
                what: "subject",
                why: "is too long",
            });
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(ParseIdError {
                what: "subject",
                why: "must not contain control characters",
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<Subject> for String {
    fn from(c: Subject) -> String {
        c.0
    }
}
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One grant. Carried in access tokens as `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(Uuid);

impl SessionId {
    /// A UUIDv7: 48 bits of milliseconds, then 74 random bits. Time-ordered
    /// ids make every store insert keyed by them an append at the end of
    /// its B-tree (one dirty page per batch) instead of a write at a random
    /// place; they reveal only the creation time, which `iat` tells anyway.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        Uuid::try_parse(s).map(Self).map_err(|_| ParseIdError {
            what: "session_id",
            why: "is not a session id",
        })
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }
}

impl TryFrom<String> for SessionId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<SessionId> for String {
    fn from(c: SessionId) -> String {
        c.0.to_string()
    }
}
impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A space-separated list of RFC 6749 §3.3 scope tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        if s.len() > 2048 {
            return Err(ParseIdError {
                what: "scope",
                why: "is too long",
            });
        }
        let ok = s.split(' ').filter(|t| !t.is_empty()).all(|t| {
            t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        });
        if !ok {
            return Err(ParseIdError {
                what: "scope",
                why: "contains characters not allowed in a scope token",
            });
        }
        let tokens: Vec<&str> = s.split(' ').filter(|t| !t.is_empty()).collect();
        Ok(Self(tokens.join(" ")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Every token of `self` is also in `other`.
    pub fn is_subset_of(&self, other: &Scope) -> bool {
        self.0
            .split(' ')
            .filter(|t| !t.is_empty())
            .all(|t| other.0.split(' ').any(|o| o == t))
    }
}

impl TryFrom<String> for Scope {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<Scope> for String {
    fn from(c: Scope) -> String {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        assert!(ClientId::parse("MOB-APP-2001").is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse("a b").is_err());
        assert!(ClientId::parse("a:b").is_err());
        assert!(ClientId::generate().as_str().starts_with("tc_"));
    }

    #[test]
    fn scope_normalises_and_checks() {
        assert_eq!(
            Scope::parse(" read  write ").unwrap().as_str(),
            "read write"
        );
        assert!(Scope::parse("bad\"quote").is_err());
        let a = Scope::parse("read").unwrap();
        let b = Scope::parse("read write").unwrap();
        assert!(a.is_subset_of(&b));
        assert!(!b.is_subset_of(&a));
    }

    #[test]
    fn session_id_roundtrip() {
        let s = SessionId::generate();
        assert_eq!(SessionId::parse(&s.to_string()).unwrap(), s);
        assert!(SessionId::parse("nope").is_err());
    }
}
