//! Between Rust values and PostgreSQL: JSON bodies, ids, integer widths,
//! and the mapping of database errors onto [`StoreError`].

use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::core::ids::SessionId;
use crate::store::StoreError;

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE for a character the database cannot store (`\u0000` in jsonb).
const UNTRANSLATABLE_CHARACTER: &str = "22P05";

/// Which record a unique index protects, by the index's name (see the
/// migrations): what `Conflict` reports when an insert collides.
fn conflict_of(constraint: &str) -> &'static str {
    match constraint {
        "clients_pkey" => "client",
        "sessions_pkey" => "session",
        "sessions_live_reference" => "reference",
        "refresh_pkey" => "refresh token",
        _ => "record",
    }
}

/// `map_err` adapter: the error of a query on `table`.
pub(super) fn db(table: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| from_sqlx(table, e)
}

/// Conflicts are named; undecodable rows are `Corrupt`; everything else
/// (no connection, pool exhausted, server shutting down, a failed
/// statement) is `Unavailable`, which callers answer with a 503.
pub(super) fn from_sqlx(table: &'static str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            if code == UNIQUE_VIOLATION {
                return StoreError::Conflict(d.constraint().map_or("record", conflict_of));
            }
            // The message names the constraint or the problem, never the
            // row's values (those are in the detail field, not shown).
            let message = d.message().to_owned();
            if code == UNTRANSLATABLE_CHARACTER {
                tracing::error!(table, code, %message, "record not storable");
                return StoreError::Corrupt {
                    table,
                    detail: message,
                };
            }
            tracing::error!(table, code, %message, "postgres error");
            StoreError::Unavailable(format!("{table}: database error {code}: {message}"))
        }
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => {
            let detail = e.to_string();
            tracing::error!(table, %detail, "undecodable row");
            StoreError::Corrupt { table, detail }
        }
        other => {
            tracing::error!(table, error = %other, "postgres unavailable");
            StoreError::Unavailable(format!("{table}: {other}"))
        }
    }
}

/// serde_json messages can quote record content (secret hashes, claims), so
/// only the error's category and position leave this function.
fn json_detail(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

pub(super) fn decode<T: DeserializeOwned>(
    table: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "undecodable record");
        StoreError::Corrupt { table, detail }
    })
}

/// The record as JSON text, bound as `$n::jsonb`. jsonb cannot hold the
/// character U+0000 (which the embedded store would keep), so such a record
/// is refused here, with a clear message, rather than by the server.
pub(super) fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<String, StoreError> {
    let text = serde_json::to_string(value).map_err(|e| {
        let detail = json_detail(&e);
        tracing::error!(table, %detail, "unencodable record");
        StoreError::Corrupt { table, detail }
    })?;
    if has_nul_escape(&text) {
        tracing::error!(table, "record holds a NUL character");
        return Err(StoreError::Corrupt {
            table,
            detail: "record holds a NUL character (U+0000), which PostgreSQL cannot store".into(),
        });
    }
    Ok(text)
}

/// Does this serde_json output contain the escape `\u0000`? Escapes are
/// skipped pairwise so that an escaped backslash followed by `u0000` (the
/// literal text) does not count.
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

pub(super) fn uuid(id: &SessionId) -> Uuid {
    Uuid::from_bytes(*id.as_bytes())
}

pub(super) fn session_id(u: Uuid) -> SessionId {
    SessionId::from_bytes(*u.as_bytes())
}

/// A `usize` count or limit as a bind value (PostgreSQL has no unsigned types).
pub(super) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row count read back from the database.
pub(super) fn rows(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(has_nul_escape(r#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(&serde_json::to_string("\0").unwrap()));
        assert!(!has_nul_escape(&serde_json::to_string("\\u0000").unwrap()));
        assert!(!has_nul_escape(r#"{"a":"\u0001\n"}"#));
        assert!(!has_nul_escape(r"\"));
    }

    #[test]
    fn constraint_names_map_to_conflicts() {
        assert_eq!(conflict_of("clients_pkey"), "client");
        assert_eq!(conflict_of("sessions_live_reference"), "reference");
        assert_eq!(conflict_of("something_else"), "record");
    }
}
