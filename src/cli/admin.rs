//! The admin commands (`client`, `session`, `subject`, `keys`): each maps
//! its arguments onto one admin API call and renders the answer, either as
//! the server's JSON verbatim (`--json`) or as text for a person.

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::error::CliError;
use super::format::{object, rows, sanitize, table};
use super::http::{check_segment, AdminClient};
use super::{AdminArgs, AdminCommand, ClientCommand, KeysCommand, SessionCommand, SubjectCommand};

const ONCE: &str = "The client secret is shown only once: store it now. \
                    `tessera client rotate-secret` issues a new one.";
const CREATED_ONCE: &str = "The client secret and payload key are shown only once: store them \
                            now. `tessera client rotate-secret` and `rotate-payload-key` issue \
                            new ones.";
const KEY_ONCE: &str = "The payload key is shown only once: store it now. \
                        `tessera client rotate-payload-key` issues a new one.";

/// What a command prints: `stdout` for the result, `notice` for stderr
/// (kept off stdout under `--json` so scripts can parse stdout whole).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub notice: Option<String>,
}

/// Runs one admin command against the server named in its arguments.
pub async fn run(cmd: &AdminCommand) -> Result<Output, CliError> {
    let args = cmd.args();
    let api = AdminClient::new(&args.server, &args.data_dir)?;
    let none: Option<&Value> = None;
    let (answer, view) = match cmd {
        AdminCommand::Client(ClientCommand::Create {
            name,
            client_id,
            redirect_uri,
            grant_type,
            access_token_ttl,
            refresh_token_ttl,
            ..
        }) => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if let Some(id) = client_id {
                body.insert("client_id".into(), json!(id));
            }
            if !redirect_uri.is_empty() {
                body.insert("redirect_uris".into(), json!(redirect_uri));
            }
            if !grant_type.is_empty() {
                body.insert("grant_types".into(), json!(grant_type));
            }
            if let Some(t) = access_token_ttl {
                body.insert("access_token_ttl".into(), json!(t));
            }
            if let Some(t) = refresh_token_ttl {
                body.insert("refresh_token_ttl".into(), json!(t));
            }
            let body = Value::Object(body);
            let v = api
                .call(Method::POST, &["clients"], &[], Some(&body))
                .await?;
            (v, View::CreatedClient)
        }
        AdminCommand::Client(ClientCommand::List { .. }) => (
            api.call(Method::GET, &["clients"], &[], none).await?,
            View::Clients,
        ),
        AdminCommand::Client(ClientCommand::Delete { client_id, .. }) => {
            check_segment("client id", client_id)?;
            let v = api
                .call(Method::DELETE, &["clients", client_id], &[], none)
                .await?;
            (v, View::DeletedClient)
        }
        AdminCommand::Client(ClientCommand::RotateSecret { client_id, .. }) => {
            check_segment("client id", client_id)?;
            let v = api
                .call(
                    Method::POST,
                    &["clients", client_id, "rotate-secret"],
                    &[],
                    none,
                )
                .await?;
            (v, View::RotatedSecret)
        }
        AdminCommand::Client(ClientCommand::RotatePayloadKey { client_id, .. }) => {
            check_segment("client id", client_id)?;
            let v = api
                .call(
                    Method::POST,
                    &["clients", client_id, "rotate-payload-key"],
                    &[],
                    none,
                )
                .await?;
            (v, View::RotatedPayloadKey)
        }
        AdminCommand::Session(SessionCommand::List {
            subject,
            client_id,
            live_only,
            limit,
            ..
        }) => {
            let mut query = Vec::new();
            if let Some(s) = subject {
                query.push(("subject", s.clone()));
            }
            if let Some(c) = client_id {
                query.push(("client_id", c.clone()));
            }
            query.push(("include_ended", (!live_only).to_string()));
            if let Some(n) = limit {
                query.push(("limit", n.to_string()));
            }
            let v = api.call(Method::GET, &["sessions"], &query, none).await?;
            let whom = match (subject, client_id) {
                (Some(s), _) => format!("subject {}", sanitize(s)),
                (None, Some(c)) => format!("client {}", sanitize(c)),
                (None, None) => String::new(),
            };
            (v, View::Sessions { whom })
        }
        AdminCommand::Session(SessionCommand::Revoke { session_id, .. }) => {
            check_segment("session id", session_id)?;
            let v = api
                .call(Method::DELETE, &["sessions", session_id], &[], none)
                .await?;
            (v, View::RevokedSession)
        }
        AdminCommand::Subject(SubjectCommand::Revoke {
            subject, client_id, ..
        }) => {
            check_segment("subject", subject)?;
            let query: Vec<(&str, String)> =
                client_id.iter().map(|c| ("client_id", c.clone())).collect();
            let v = api
                .call(
                    Method::DELETE,
                    &["subjects", subject, "sessions"],
                    &query,
                    none,
                )
                .await?;
            (v, View::RevokedSubject)
        }
        AdminCommand::Keys(KeysCommand::Rotate { .. }) => (
            api.call(Method::POST, &["keys", "rotate"], &[], none)
                .await?,
            View::RotatedKey,
        ),
    };
    Ok(render(&answer, &view, args))
}

/// How to show a successful answer without `--json`.
pub enum View {
    CreatedClient,
    Clients,
    DeletedClient,
    RotatedSecret,
    RotatedPayloadKey,
    /// `whom` names the filter for the "no sessions" line.
    Sessions {
        whom: String,
    },
    RevokedSession,
    RevokedSubject,
    RotatedKey,
}

pub fn render(v: &Value, view: &View, args: &AdminArgs) -> Output {
    let notice = match view {
        View::CreatedClient => Some(CREATED_ONCE),
        View::RotatedSecret => Some(ONCE),
        View::RotatedPayloadKey => Some(KEY_ONCE),
        _ => None,
    };
    if args.json {
        // Pretty-printing re-serialises the server's value unchanged; the
        // contract is "one JSON value on stdout".
        let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        return Output {
            stdout: format!("{text}\n"),
            notice: notice.map(str::to_owned),
        };
    }
    let stdout = match view {
        View::CreatedClient => {
            let fields = [
                "client_id",
                "client_secret",
                "payload_key",
                "name",
                "redirect_uris",
                "grant_types",
                "access_token_ttl",
                "refresh_token_ttl",
                "created_at",
            ];
            format!("{}\n{CREATED_ONCE}\n", object(v, &fields))
        }
        View::RotatedSecret => format!("{}\n{ONCE}\n", object(v, &["client_id", "client_secret"])),
        View::RotatedPayloadKey => {
            format!("{}\n{KEY_ONCE}\n", object(v, &["client_id", "payload_key"]))
        }
        View::Clients => list(v, "clients", "no clients\n".into(), CLIENT_COLUMNS),
        View::Sessions { whom } => list(
            v,
            "sessions",
            format!("no sessions for {whom}\n"),
            SESSION_COLUMNS,
        ),
        View::DeletedClient => object(v, &["client_id", "deleted", "sessions_ended"]),
        View::RevokedSession => {
            let mut out = object(v, &["session_id", "ended"]);
            if v.get("ended") == Some(&Value::Bool(false)) {
                out.push_str("(the session had already ended)\n");
            }
            out
        }
        View::RevokedSubject => object(v, &["subject", "sessions_ended"]),
        View::RotatedKey => object(v, &["kid"]),
    };
    Output {
        stdout,
        notice: None,
    }
}

/// (header, JSON key) per column; the widest, least useful ones last.
const CLIENT_COLUMNS: &[(&str, &str)] = &[
    ("CLIENT_ID", "client_id"),
    ("NAME", "name"),
    ("GRANT_TYPES", "grant_types"),
    ("ACCESS_TTL", "access_token_ttl"),
    ("REFRESH_TTL", "refresh_token_ttl"),
    ("CREATED", "created_at"),
    ("REDIRECT_URIS", "redirect_uris"),
];

const SESSION_COLUMNS: &[(&str, &str)] = &[
    ("SESSION_ID", "session_id"),
    ("CLIENT_ID", "client_id"),
    ("STATUS", "status"),
    ("DIALECT", "dialect"),
    ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"),
    ("ENDED", "ended_at"),
    ("ENDED_BY", "ended_by"),
    ("SCOPE", "scope"),
];

fn list(v: &Value, field: &str, empty: String, columns: &[(&str, &str)]) -> String {
    let items = v
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if items.is_empty() {
        return empty;
    }
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let keys: Vec<&str> = columns.iter().map(|(_, k)| *k).collect();
    table(&headers, &rows(items, &keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args(json: bool) -> AdminArgs {
        AdminArgs {
            server: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from("x"),
            json,
        }
    }

    #[test]
    fn json_mode_prints_one_value_and_keeps_the_warning_off_stdout() {
        let v = json!({"client_id": "tc_1", "client_secret": "s3cret"});
        let out = render(&v, &View::RotatedSecret, &args(true));
        let back: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(back, v);
        assert!(out.stdout.ends_with("}\n"));
        assert!(out.notice.unwrap().contains("only once"));
    }

    #[test]
    fn created_client_as_text() {
        let v = json!({
            "client_id": "tc_1", "client_secret": "s", "payload_key": "k", "name": "App",
            "redirect_uris": [], "grant_types": ["session", "refresh_token"],
            "access_token_ttl": null, "refresh_token_ttl": 600, "created_at": 0
        });
        let out = render(&v, &View::CreatedClient, &args(false));
        assert_eq!(
            out.stdout,
            "client_id:          tc_1\n\
             client_secret:      s\n\
             payload_key:        k\n\
             name:               App\n\
             redirect_uris:      -\n\
             grant_types:        session,refresh_token\n\
             access_token_ttl:   server default\n\
             refresh_token_ttl:  600s\n\
             created_at:         1970-01-01 00:00:00Z\n\
             \n"
            .to_owned()
                + CREATED_ONCE
                + "\n"
        );
        assert_eq!(out.notice, None);
    }

    #[test]
    fn rotated_payload_key() {
        let v = json!({"client_id": "MOB-APP-2001", "payload_key": "k3y"});
        let out = render(&v, &View::RotatedPayloadKey, &args(false));
        assert!(out
            .stdout
            .starts_with("client_id:    MOB-APP-2001\npayload_key:  k3y\n"));
        assert!(out.stdout.contains("rotate-payload-key"));
        let out = render(&v, &View::RotatedPayloadKey, &args(true));
        assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), v);
        assert!(out
            .notice
            .unwrap()
            .contains("payload key is shown only once"));
        use clap::Parser as _;
        let cli =
            crate::cli::Cli::try_parse_from(["tessera", "client", "rotate-payload-key", "C1"])
                .unwrap();
        assert!(matches!(
            cli.command,
            crate::cli::Command::Admin(AdminCommand::Client(ClientCommand::RotatePayloadKey { ref client_id, .. }))
                if client_id == "C1"
        ));
    }

    #[test]
    fn sessions_as_table() {
        let v = json!({"sessions": [
            {"session_id": "s1", "client_id": "c1", "subject": "u", "scope": "a b",
             "dialect": "native", "created_at": 0, "expires_at": 60, "status": "active"},
            {"session_id": "s2", "client_id": "c1", "subject": "u", "scope": "",
             "dialect": "gsp", "created_at": 0, "expires_at": 60, "status": "logout",
             "ended_at": 30, "end_reason": "logout", "ended_by": {"kind": "client", "id": "c1"}}
        ]});
        let out = render(
            &v,
            &View::Sessions {
                whom: "subject u".into(),
            },
            &args(false),
        )
        .stdout;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SESSION_ID  CLIENT_ID  STATUS  DIALECT  CREATED"));
        assert!(
            lines[2].contains("1970-01-01 00:00:30Z  client:c1  -"),
            "{out}"
        );
        assert!(lines[1].ends_with("a b"));
    }

    #[test]
    fn empty_lists_say_so() {
        let out = render(&json!({"clients": []}), &View::Clients, &args(false));
        assert_eq!(out.stdout, "no clients\n");
        let out = render(
            &json!({"sessions": []}),
            &View::Sessions {
                whom: "subject a@b".into(),
            },
            &args(false),
        );
        assert_eq!(out.stdout, "no sessions for subject a@b\n");
    }

    #[test]
    fn already_ended_session_is_noted() {
        let out = render(
            &json!({"session_id": "s", "ended": false}),
            &View::RevokedSession,
            &args(false),
        );
        assert!(out.stdout.contains("already ended"));
    }
}
