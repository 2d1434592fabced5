//! Plain-text rendering for the admin commands: aligned tables, `key: value`
//! blocks, UTC timestamps, and neutralising control characters in values
//! that came from the server.

use serde_json::Value;

/// Column separator in tables and between key and value.
const GAP: &str = "  ";

/// Server-supplied strings (client names, subjects) may hold anything; an
/// escape sequence must not reach the operator's terminal, and a newline
/// must not break a table row.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Width as the operator sees it, close enough for the ASCII-dominated
/// values Tessera lists (no crate for East Asian widths).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Columns padded to their widest cell; the last column is not padded so no
/// line ends in spaces. Rows shorter than the header are filled with blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w.saturating_sub(width(cell))));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - width(k);
        let line = format!("{k}:{}{GAP}{v}", " ".repeat(pad));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC, proleptic Gregorian).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month,
/// day). Works on 400-year eras so leap rules need no special cases.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A JSON value as one table cell or `key: value` value. `key` decides the
/// reading: `*_at` fields are times, `*_ttl` fields fall back to the server
/// default when null.
pub fn cell(key: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) if key.ends_with("_ttl") => "server default".into(),
        None | Some(Value::Null) => "-".into(),
        Some(Value::Number(n)) if key.ends_with("_at") => match n.as_i64() {
            Some(secs) => utc(secs),
            None => n.to_string(),
        },
        Some(Value::Number(n)) if key.ends_with("_ttl") => format!("{n}s"),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => sanitize(s),
        Some(Value::Array(items)) if items.is_empty() => "-".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| cell("", Some(i)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(o)) => {
            actor(o).unwrap_or_else(|| sanitize(&Value::Object(o.clone()).to_string()))
        }
        Some(other) => other.to_string(),
    }
}

/// Who ended a session, if the server sends it as the tagged record the
/// store keeps (`{"kind": "client", "id": "..."}`).
fn actor(o: &serde_json::Map<String, Value>) -> Option<String> {
    let kind = o.get("kind")?.as_str()?;
    Some(match o.get("id").and_then(Value::as_str) {
        Some(id) => format!("{}:{}", sanitize(kind), sanitize(id)),
        None => sanitize(kind),
    })
}

/// The fields of one JSON object as `key: value` lines: `order` first, then
/// any field the server added that this CLI does not know yet.
pub fn object(v: &Value, order: &[&str]) -> String {
    let Some(o) = v.as_object() else {
        return format!("{}\n", cell("", Some(v)));
    };
    let mut pairs: Vec<(String, String)> = order
        .iter()
        .filter(|k| o.contains_key(**k))
        .map(|k| ((*k).to_owned(), cell(k, o.get(*k))))
        .collect();
    for (k, val) in o {
        if !order.contains(&k.as_str()) {
            pairs.push((sanitize(k), cell(k, Some(val))));
        }
    }
    key_values(&pairs)
}

/// Table rows from a list of JSON objects, one column per key.
pub fn rows(items: &[Value], keys: &[&str]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|item| keys.iter().map(|k| cell(k, item.get(*k))).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utc_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31 23:59:59Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(951_868_800), "2000-03-01 00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00Z");
        assert_eq!(utc(253_402_300_799), "9999-12-31 23:59:59Z");
    }

    #[test]
    fn utc_survives_extremes() {
        // Garbage from a server must not panic the CLI.
        let _ = utc(i64::MAX);
        let _ = utc(i64::MIN);
    }

    #[test]
    fn civil_from_days_round_trips_every_day_of_a_leap_cycle() {
        let mut prev = civil_from_days(-1);
        for d in 0..146_097 * 2 {
            let cur = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                cur == next_day || cur == next_month || cur == next_year,
                "{prev:?} -> {cur:?}"
            );
            prev = cur;
        }
    }

    #[test]
    fn table_pads_columns_and_trims_lines() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "first".into()],
                vec!["longer".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID      NAME\na       first\nlonger  x\n");
    }

    #[test]
    fn table_handles_short_rows_and_wide_chars() {
        let t = table(
            &["A", "B", "C"],
            &[vec!["é".into()], vec!["xy".into(), "z".into()]],
        );
        assert_eq!(t, "A   B  C\né\nxy  z\n");
    }

    #[test]
    fn key_values_align() {
        let kv = key_values(&[
            ("id".into(), "1".into()),
            ("client_secret".into(), "s".into()),
        ]);
        assert_eq!(kv, "id:             1\nclient_secret:  s\n");
    }

    #[test]
    fn sanitize_escapes_controls() {
        assert_eq!(sanitize("plain é"), "plain é");
        assert_eq!(sanitize("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }

    #[test]
    fn cells_read_keys() {
        assert_eq!(cell("created_at", Some(&json!(0))), "1970-01-01 00:00:00Z");
        assert_eq!(
            cell("access_token_ttl", Some(&Value::Null)),
            "server default"
        );
        assert_eq!(cell("access_token_ttl", Some(&json!(60))), "60s");
        assert_eq!(cell("ended_at", None), "-");
        assert_eq!(cell("grant_types", Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(cell("redirect_uris", Some(&json!([]))), "-");
        assert_eq!(
            cell("ended_by", Some(&json!({"kind": "client", "id": "c1"}))),
            "client:c1"
        );
        assert_eq!(cell("ended_by", Some(&json!({"kind": "admin"}))), "admin");
        assert_eq!(cell("deleted", Some(&json!(true))), "true");
    }

    #[test]
    fn object_orders_known_fields_then_extras() {
        let v = json!({"z_extra": 1, "kid": "k1", "client_id": "c"});
        assert_eq!(
            object(&v, &["kid", "client_id"]),
            "kid:        k1\nclient_id:  c\nz_extra:    1\n"
        );
    }
}
