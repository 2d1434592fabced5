//! Compact binary records for the embedded store's two big tables,
//! `sessions` and `refresh`: about a third of their JSON size, which is
//! most of the file with a million sessions.
//!
//! A record starts with a format byte. JSON records (written before this
//! format existed) start with `{`, so both are read; only this format is
//! written. A field added later means a new format byte, never a changed
//! layout under an old one.
//!
//! Layout of format 1 (integers are LEB128 varints, signed ones zigzag
//! first; strings and byte strings are a varint length and the bytes):
//!
//! - session: id (16 bytes), client id, subject, scope, claims (JSON, empty
//!   when there are none), token claims (likewise), dialect, reference (0,
//!   or 1 and 32 bytes), created_at, expires_at, access_cover_until,
//!   delete_after, ended (JSON, empty when live: rare, and its enums keep
//!   their serde names this way);
//! - refresh token: session id (16 bytes), client id, issued_at,
//!   expires_at, state (0 current, or 1, retired_at and the successor's 32
//!   bytes). The token's hash is the record's key and is not repeated.

use serde_json::{Map, Value};

use super::{StoreError, StoreResult};
use crate::core::clock::UnixTime;
use crate::core::ids::{ClientId, Scope, SessionId, Subject};
use crate::core::model::{Ended, RefreshRecord, RefreshState, Session, TokenHash};

/// The format byte of the layout above.
const FORMAT_1: u8 = 1;
/// The first byte of every JSON record.
const JSON: u8 = b'{';

/// What a stored record is written as.
pub(crate) fn encode_session(s: &Session) -> StoreResult<Vec<u8>> {
    let mut w = Vec::with_capacity(96);
    w.push(FORMAT_1);
    w.extend_from_slice(s.id.as_bytes());
    put_bytes(&mut w, s.client_id.as_str().as_bytes());
    put_bytes(&mut w, s.subject.as_str().as_bytes());
    put_bytes(&mut w, s.scope.as_str().as_bytes());
    put_map(&mut w, &s.claims)?;
    put_map(&mut w, &s.token_claims)?;
    put_bytes(&mut w, s.dialect.as_bytes());
    match &s.reference {
        None => w.push(0),
        Some(h) => {
            w.push(1);
            w.extend_from_slice(h);
        }
    }
    for t in [
        s.created_at,
        s.expires_at,
        s.access_cover_until,
        s.delete_after,
    ] {
        put_i64(&mut w, t);
    }
    match &s.ended {
        None => put_bytes(&mut w, b""),
        Some(e) => put_bytes(&mut w, &to_json(e)?),
    }
    Ok(w)
}

/// A `sessions` record, in either format.
pub(crate) fn decode_session(bytes: &[u8]) -> StoreResult<Session> {
    const TABLE: &str = "sessions";
    match bytes.first() {
        Some(&JSON) => from_json(TABLE, bytes),
        Some(&FORMAT_1) => {
            let mut r = Reader::new(TABLE, &bytes[1..]);
            let s = Session {
                id: SessionId::from_bytes(r.array()?),
                client_id: r.parsed(ClientId::parse)?,
                subject: r.parsed(Subject::parse)?,
                scope: r.parsed(Scope::parse)?,
                claims: r.map()?,
                token_claims: r.map()?,
                dialect: r.str()?.to_owned(),
                reference: match r.u8()? {
                    0 => None,
                    1 => Some(r.array()?),
                    _ => return Err(r.corrupt("bad reference flag")),
                },
                created_at: r.i64()?,
                expires_at: r.i64()?,
                access_cover_until: r.i64()?,
                delete_after: r.i64()?,
                ended: match r.bytes()? {
                    [] => None,
                    json => Some(from_json::<Ended>(TABLE, json)?),
                },
            };
            r.end()?;
            Ok(s)
        }
        _ => Err(corrupt(TABLE, "unknown record format")),
    }
}

pub(crate) fn encode_refresh(rec: &RefreshRecord) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    w.push(FORMAT_1);
    w.extend_from_slice(rec.session_id.as_bytes());
    put_bytes(&mut w, rec.client_id.as_str().as_bytes());
    put_i64(&mut w, rec.issued_at);
    put_i64(&mut w, rec.expires_at);
    match &rec.state {
        RefreshState::Current => w.push(0),
        RefreshState::Retired { at, successor } => {
            w.push(1);
            put_i64(&mut w, *at);
            w.extend_from_slice(successor);
        }
    }
    w
}

/// A `refresh` record, in either format; `hash` is its key.
pub(crate) fn decode_refresh(hash: &TokenHash, bytes: &[u8]) -> StoreResult<RefreshRecord> {
    const TABLE: &str = "refresh";
    match bytes.first() {
        Some(&JSON) => from_json(TABLE, bytes),
        Some(&FORMAT_1) => {
            let mut r = Reader::new(TABLE, &bytes[1..]);
            let rec = RefreshRecord {
                hash: *hash,
                session_id: SessionId::from_bytes(r.array()?),
                client_id: r.parsed(ClientId::parse)?,
                issued_at: r.i64()?,
                expires_at: r.i64()?,
                state: match r.u8()? {
                    0 => RefreshState::Current,
                    1 => RefreshState::Retired {
                        at: r.i64()?,
                        successor: r.array()?,
                    },
                    _ => return Err(r.corrupt("bad refresh state")),
                },
            };
            r.end()?;
            Ok(rec)
        }
        _ => Err(corrupt(TABLE, "unknown record format")),
    }
}

fn corrupt(table: &'static str, detail: &str) -> StoreError {
    tracing::error!(table, detail, "undecodable record");
    StoreError::Corrupt {
        table,
        detail: detail.to_owned(),
    }
}

/// serde_json messages can quote record content, so only the category and
/// position are kept.
fn from_json<T: serde::de::DeserializeOwned>(table: &'static str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        corrupt(
            table,
            &format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt {
        table: "sessions",
        detail: format!("{:?} error", e.classify()),
    })
}

fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn put_i64(w: &mut Vec<u8>, v: UnixTime) {
    put_varint(w, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_varint(w, b.len() as u64);
    w.extend_from_slice(b);
}

fn put_map(w: &mut Vec<u8>, m: &Map<String, Value>) -> StoreResult<()> {
    if m.is_empty() {
        put_bytes(w, b"");
    } else {
        put_bytes(w, &to_json(m)?);
    }
    Ok(())
}

struct Reader<'a> {
    table: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(table: &'static str, rest: &'a [u8]) -> Self {
        Self { table, rest }
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        corrupt(self.table, detail)
    }

    fn take(&mut self, n: usize) -> StoreResult<&'a [u8]> {
        if self.rest.len() < n {
            return Err(self.corrupt("record is truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> StoreResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> StoreResult<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn varint(&mut self) -> StoreResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    fn i64(&mut self) -> StoreResult<i64> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn bytes(&mut self) -> StoreResult<&'a [u8]> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.corrupt("length too large"))?;
        self.take(n)
    }

    fn str(&mut self) -> StoreResult<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("string is not UTF-8"))
    }

    fn parsed<T, E>(&mut self, parse: impl FnOnce(&str) -> Result<T, E>) -> StoreResult<T> {
        let s = self.str()?;
        parse(s).map_err(|_| self.corrupt("invalid identifier"))
    }

    fn map(&mut self) -> StoreResult<Map<String, Value>> {
        match self.bytes()? {
            [] => Ok(Map::new()),
            json => from_json(self.table, json),
        }
    }

    /// Nothing may follow the last field.
    fn end(&self) -> StoreResult<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes after the record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Actor, EndReason};
    use proptest::prelude::*;

    fn session(n: i64) -> Session {
        Session {
            id: SessionId::generate(),
            client_id: ClientId::parse("app-1").unwrap(),
            subject: Subject::parse("alice@example.com").unwrap(),
            scope: Scope::parse("read write").unwrap(),
            claims: Map::new(),
            token_claims: Map::new(),
            dialect: "native".into(),
            reference: None,
            created_at: n,
            expires_at: n + 3600,
            access_cover_until: n + 60,
            delete_after: n + 90_000,
            ended: None,
        }
    }

    #[test]
    fn sessions_round_trip_and_json_still_reads() {
        let plain = session(1_764_000_000);
        let mut full = session(-5);
        full.claims.insert("name".into(), Value::from("Alice"));
        full.token_claims
            .insert("intent".into(), Value::from("api"));
        full.reference = Some([7; 32]);
        full.ended = Some(Ended {
            at: 12,
            reason: EndReason::TokenRevoked,
            by: Actor::Client(ClientId::parse("app-1").unwrap()),
        });
        for s in [plain, full] {
            let compact = encode_session(&s).unwrap();
            let json = serde_json::to_vec(&s).unwrap();
            assert!(
                compact.len() * 2 < json.len(),
                "{} vs {}",
                compact.len(),
                json.len()
            );
            assert_eq!(decode_session(&compact).unwrap(), s);
            assert_eq!(decode_session(&json).unwrap(), s);
        }
    }

    #[test]
    fn refresh_records_round_trip_and_json_still_reads() {
        for state in [
            RefreshState::Current,
            RefreshState::Retired {
                at: 99,
                successor: [3; 32],
            },
        ] {
            let rec = RefreshRecord {
                hash: [9; 32],
                session_id: SessionId::generate(),
                client_id: ClientId::parse("app-1").unwrap(),
                issued_at: 1_764_000_000,
                expires_at: 1_766_592_000,
                state,
            };
            let compact = encode_refresh(&rec);
            assert_eq!(decode_refresh(&rec.hash, &compact).unwrap(), rec);
            let json = serde_json::to_vec(&rec).unwrap();
            assert_eq!(decode_refresh(&rec.hash, &json).unwrap(), rec);
        }
    }

    #[test]
    fn damaged_records_are_errors() {
        let good = encode_session(&session(1)).unwrap();
        for n in 0..good.len() {
            assert!(decode_session(&good[..n]).is_err(), "cut at {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode_session(&long).is_err());
        assert!(decode_session(&[2, 0, 0]).is_err());
        assert!(decode_refresh(&[0; 32], &[]).is_err());
    }

    proptest! {
        #[test]
        fn times_round_trip(a in any::<i64>(), b in any::<i64>()) {
            let mut s = session(0);
            s.created_at = a;
            s.delete_after = b;
            prop_assert_eq!(decode_session(&encode_session(&s).unwrap()).unwrap(), s);
        }
    }
}
