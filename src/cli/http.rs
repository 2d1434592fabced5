//! The admin API client: finds the admin token, builds `/admin/...` URLs
//! with percent-encoded path segments, sends requests and turns every
//! failure into a [`CliError`] an operator can act on.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;

use super::error::CliError;
use super::format::sanitize;

/// Admin calls are small; a server that says nothing for this long is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub const ADMIN_TOKEN_ENV: &str = "TESSERA_ADMIN_TOKEN";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

pub struct AdminClient {
    http: reqwest::Client,
    /// As given, without a trailing `/`; shown in messages.
    base: String,
    auth: HeaderValue,
}

impl AdminClient {
    /// Checks the server URL before the token so a typo in `--server` is
    /// reported even where no token is at hand.
    pub fn new(server: &str, data_dir: &Path) -> Result<Self, CliError> {
        let base = base_url(server)?;
        let token = admin_token(std::env::var(ADMIN_TOKEN_ENV).ok(), data_dir)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CliError::BadAdminToken("contains characters not allowed in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("tessera-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Transport {
                url: base.clone(),
                detail: innermost(&e),
            })?;
        Ok(Self { http, base, auth })
    }

    /// `segments` are joined under `/admin/`, each percent-encoded.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments)?;
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(http_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::BadResponse {
            url: self.base.clone(),
            detail: format!(
                "HTTP {} with a body that is not JSON ({e})",
                status.as_u16()
            ),
        })
    }

    fn url(&self, segments: &[&str]) -> Result<Url, CliError> {
        let mut s = format!("{}/admin", self.base);
        for seg in segments {
            s.push('/');
            s.push_str(&encode_segment(seg));
        }
        Url::parse(&s).map_err(|e| CliError::BadServerUrl {
            url: self.base.clone(),
            why: e.to_string(),
        })
    }

    fn transport(&self, e: reqwest::Error) -> CliError {
        let url = self.base.clone();
        if e.is_connect() {
            CliError::Unreachable {
                url,
                detail: innermost(&e),
            }
        } else if e.is_timeout() {
            CliError::Transport {
                url,
                detail: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            }
        } else {
            CliError::Transport {
                url,
                detail: innermost(&e),
            }
        }
    }
}

/// reqwest's own message is "error sending request for url (...)"; the
/// cause the operator can act on ("Connection refused") is at the bottom.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The `--server` value as a base for `/admin/...`: plain http only, since
/// this build links no TLS stack.
pub fn base_url(server: &str) -> Result<String, CliError> {
    let bad = |why: &str| CliError::BadServerUrl {
        url: server.to_owned(),
        why: why.to_owned(),
    };
    let url = Url::parse(server).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::TlsUnsupported {
                url: server.to_owned(),
            })
        }
        _ => return Err(bad("expected http://HOST:PORT")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `TESSERA_ADMIN_TOKEN` wins; otherwise the file the server writes on first
/// start. Blank values count as absent so an empty export does not shadow
/// the file.
pub fn admin_token(env: Option<String>, data_dir: &Path) -> Result<String, CliError> {
    if let Some(t) = env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().is_empty() => Err(CliError::BadAdminToken(format!(
            "{} is empty",
            path.display()
        ))),
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::NoAdminToken { path }),
        Err(e) => Err(CliError::BadAdminToken(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved
/// characters, so `@`, `/`, `?`, `%` and spaces in subjects stay inside it.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// URL parsers resolve `.` and `..` segments (even encoded ones) before the
/// request leaves, so such a value would address a different resource.
pub fn check_segment(what: &'static str, s: &str) -> Result<(), CliError> {
    let why = if s.is_empty() {
        "must not be empty"
    } else if s == "." || s == ".." {
        "cannot be addressed over the admin API"
    } else {
        return Ok(());
    };
    Err(CliError::BadArgument {
        what,
        why: why.to_owned(),
    })
}

/// The server's error body is `{"error", "error_description"}`; anything
/// else (a proxy's HTML page, say) falls back to the status text.
pub fn http_error(status: StatusCode, body: &[u8]) -> CliError {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(sanitize)
        };
        field("error_description").or_else(|| field("error"))
    });
    let message = from_json
        .or_else(|| {
            let text = std::str::from_utf8(body).ok()?.trim();
            (!text.is_empty() && text.len() <= 200 && !text.starts_with('<'))
                .then(|| sanitize(text))
        })
        .or_else(|| status.canonical_reason().map(str::to_lowercase))
        .unwrap_or_else(|| "request failed".into());
    CliError::Http {
        status: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("tc_ABC-1.2~x"), "tc_ABC-1.2~x");
        assert_eq!(encode_segment("a@b.c/d e"), "a%40b.c%2Fd%20e");
        assert_eq!(encode_segment("100%?#"), "100%25%3F%23");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn encoded_segment_stays_one_segment() {
        let url = Url::parse(&format!(
            "http://h/admin/subjects/{}/sessions",
            encode_segment("u/../x y@z")
        ))
        .unwrap();
        assert_eq!(url.path(), "/admin/subjects/u%2F..%2Fx%20y%40z/sessions");
    }

    #[test]
    fn dot_segments_are_refused() {
        assert!(check_segment("subject", "..").is_err());
        assert!(check_segment("subject", ".").is_err());
        assert!(check_segment("subject", "").is_err());
        assert!(check_segment("subject", "...").is_ok());
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(base_url("http://h:1/prefix/").unwrap(), "http://h:1/prefix");
        assert!(matches!(
            base_url("https://h"),
            Err(CliError::TlsUnsupported { .. })
        ));
        assert!(matches!(
            base_url("ftp://h"),
            Err(CliError::BadServerUrl { .. })
        ));
        assert!(matches!(
            base_url("127.0.0.1:8080"),
            Err(CliError::BadServerUrl { .. })
        ));
        assert!(matches!(
            base_url("http://h/?x=1"),
            Err(CliError::BadServerUrl { .. })
        ));
    }

    #[test]
    fn token_from_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            admin_token(Some(" t1 \n".into()), dir.path()).unwrap(),
            "t1"
        );
        let err = admin_token(None, dir.path()).unwrap_err();
        assert!(matches!(err, CliError::NoAdminToken { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("TESSERA_ADMIN_TOKEN") && msg.contains("admin.token"),
            "{msg}"
        );
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "t2\n").unwrap();
        assert_eq!(admin_token(Some("  ".into()), dir.path()).unwrap(), "t2");
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "\n").unwrap();
        assert!(matches!(
            admin_token(None, dir.path()),
            Err(CliError::BadAdminToken(_))
        ));
    }

    #[test]
    fn http_errors_prefer_description() {
        let e = http_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"not_found","error_description":"no such client"}"#,
        );
        assert_eq!(e.to_string(), "no such client (HTTP 404)");
        let e = http_error(StatusCode::UNAUTHORIZED, br#"{"error":"unauthorized"}"#);
        assert_eq!(e.to_string(), "unauthorized (HTTP 401)");
        let e = http_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(e.to_string(), "bad gateway (HTTP 502)");
        let e = http_error(StatusCode::INTERNAL_SERVER_ERROR, b"boom");
        assert_eq!(e.to_string(), "boom (HTTP 500)");
    }
}
