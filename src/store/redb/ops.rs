//! Every write of the embedded store as data. A write is logged to the
//! write-ahead log before it is acknowledged and replayed from it after a
//! crash; the same [`WriteOp::apply`] runs in both cases, so a replay
//! reaches the state the live run reached.
//!
//! Each op is deterministic: it depends only on its own fields and on the
//! state the ops before it left (times come in as fields, never from a
//! clock), and it reports a conflict or a missing record before changing
//! anything.

use serde::Deserialize;

use super::*;

// Made once per write and moved into the queue: boxing the big variants
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum WriteOp {
    InsertClient(Client),
    UpdateClient {
        client: Client,
        expected_version: u32,
    },
    DeleteClient(ClientId),
    CreateSession {
        session: Session,
        refresh: Option<RefreshRecord>,
    },
    ExtendAccessCover {
        id: SessionId,
        until: UnixTime,
    },
    RotateRefresh {
        old: TokenHash,
        new: RefreshRecord,
        now: UnixTime,
        access_exp: UnixTime,
    },
    EndSessions {
        ids: Vec<SessionId>,
        ended: Ended,
        delete_after: UnixTime,
    },
    Sweep {
        now: UnixTime,
        audit_before: UnixTime,
        batch: usize,
    },
    PutGrant {
        id: GrantId,
        value: Vec<u8>,
        expires_at: UnixTime,
    },
    SwapGrant {
        id: GrantId,
        expected_version: u64,
        new_value: Option<Vec<u8>>,
    },
    /// Tests only: inserts a client, then fails as a damaged table would.
    #[cfg(test)]
    FailAfterInsert(Client),
}

/// What an op answers.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    Flag(bool),
    Ended(Vec<EndedSession>),
    Rotated(RotateOutcome),
    Swept(SweepStats),
}

impl WriteOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::InsertClient(_) => "insert_client",
            Self::UpdateClient { .. } => "update_client",
            Self::DeleteClient(_) => "delete_client",
            Self::CreateSession { .. } => "create_session",
            Self::ExtendAccessCover { .. } => "extend_access_cover",
            Self::RotateRefresh { .. } => "rotate_refresh",
            Self::EndSessions { .. } => "end_sessions",
            Self::Sweep { .. } => "sweep",
            Self::PutGrant { .. } => "put_grant",
            Self::SwapGrant { .. } => "swap_grant",
            #[cfg(test)]
            Self::FailAfterInsert(_) => "fail_after_insert",
        }
    }

    pub(super) fn apply(&self, t: &mut Tables<'_>) -> StoreResult<Outcome> {
        use Outcome::*;
        Ok(match self {
            Self::InsertClient(c) => insert_client(t, c).map(|()| Done)?,
            Self::UpdateClient {
                client,
                expected_version,
            } => Flag(update_client(t, client, *expected_version)?),
            Self::DeleteClient(id) => Flag(delete_client(t, id)?),
            Self::CreateSession { session, refresh } => {
                create_session(t, session, refresh.as_ref()).map(|()| Done)?
            }
            Self::ExtendAccessCover { id, until } => Flag(extend_access_cover(t, id, *until)?),
            Self::RotateRefresh {
                old,
                new,
                now,
                access_exp,
            } => Rotated(rotate_refresh(t, old, new, *now, *access_exp)?),
            Self::EndSessions {
                ids,
                ended,
                delete_after,
            } => Ended(end_sessions(t, ids, ended, *delete_after)?),
            Self::Sweep {
                now,
                audit_before,
                batch,
            } => Swept(sweep(t, *now, *audit_before, *batch)?),
            Self::PutGrant {
                id,
                value,
                expires_at,
            } => put_grant(t, *id, value, *expires_at).map(|()| Done)?,
            Self::SwapGrant {
                id,
                expected_version,
                new_value,
            } => Flag(swap_grant(t, *id, *expected_version, new_value.as_deref())?),
            #[cfg(test)]
            Self::FailAfterInsert(c) => {
                insert_client(t, c)?;
                return Err(StoreError::Corrupt {
                    table: "clients",
                    detail: "test".into(),
                });
            }
        })
    }

    /// The op as a record of the write-ahead log. An op too large for a
    /// record is refused here, before anything is written: recovery would
    /// read it as damage, and the write would be lost after its
    /// acknowledgement.
    pub(super) fn encode(&self) -> StoreResult<Vec<u8>> {
        let record = encode("write-ahead log", self)?;
        if record.len() > super::wal::MAX_RECORD {
            return Err(StoreError::Unavailable(format!(
                "a write of {} bytes is larger than the write-ahead log takes ({} bytes)",
                record.len(),
                super::wal::MAX_RECORD
            )));
        }
        Ok(record)
    }

    pub(super) fn decode(record: &[u8]) -> StoreResult<Self> {
        decode("write-ahead log", record)
    }
}

/// The answer an op's caller expects, from its [`Outcome`].
pub(super) trait FromOutcome: Sized {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self>;
}

fn mismatch(outcome: &Outcome) -> StoreError {
    tracing::error!(?outcome, "a write answered with the wrong kind of outcome");
    StoreError::Unavailable("internal error in the store writer".into())
}

impl FromOutcome for () {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self> {
        match outcome {
            Outcome::Done => Ok(()),
            other => Err(mismatch(&other)),
        }
    }
}

impl FromOutcome for bool {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self> {
        match outcome {
            Outcome::Flag(b) => Ok(b),
            other => Err(mismatch(&other)),
        }
    }
}

impl FromOutcome for Vec<EndedSession> {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self> {
        match outcome {
            Outcome::Ended(v) => Ok(v),
            other => Err(mismatch(&other)),
        }
    }
}

impl FromOutcome for RotateOutcome {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self> {
        match outcome {
            Outcome::Rotated(r) => Ok(r),
            other => Err(mismatch(&other)),
        }
    }
}

impl FromOutcome for SweepStats {
    fn from_outcome(outcome: Outcome) -> StoreResult<Self> {
        match outcome {
            Outcome::Swept(s) => Ok(s),
            other => Err(mismatch(&other)),
        }
    }
}
