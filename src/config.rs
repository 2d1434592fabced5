//! Typed settings, layered: defaults → TOML file → `TESSERA_<SETTING>`
//! environment variables → command-line flags.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::core::engine::EngineSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// Where the embedded store, signing keys and admin token live.
    pub data_dir: PathBuf,
    /// Page cache of the embedded store, in MiB (redb's own default is
    /// 1 GiB, which the process then keeps). Unused with `database_url`.
    pub store_cache_mib: u64,
    /// Longest time between durable commits of the embedded store; the
    /// write-ahead log holds every write in between (and is replayed after
    /// a crash). Unused with `database_url`.
    pub store_checkpoint_seconds: u64,
    /// A PostgreSQL URL: store sessions there instead of the embedded store,
    /// and share them (with clients and keys) with every node using it.
    pub database_url: Option<String>,
    /// PostgreSQL connections this node holds at most (plus one listening).
    pub database_max_connections: u32,
    /// Upper bound on one database operation, waiting for a connection
    /// included: past it, the request is answered 503.
    pub database_timeout_ms: u64,
    /// `iss` of issued tokens; derived from the listen address when unset.
    pub issuer: Option<String>,
    /// Default access-token lifetime for clients that set none.
    pub access_token_ttl_seconds: i64,
    /// Upper bound on any access-token lifetime.
    pub max_access_token_ttl_seconds: i64,
    /// Default refresh-token lifetime for clients that set none.
    pub refresh_token_ttl_seconds: i64,
    /// Absolute lifetime of a session with refresh tokens.
    pub session_lifetime_seconds: i64,
    /// Window in which a retried refresh gets its successor again instead of
    /// ending the session (RFC 9700 §4.14.2); 0 turns it off.
    pub refresh_grace_seconds: i64,
    /// How long ended and expired sessions stay listable, and audit records kept.
    pub ended_session_retention_seconds: i64,
    /// How often the sweeper deletes expired records.
    pub sweep_interval_seconds: u64,
    /// Records of each kind deleted per sweep step.
    pub sweep_batch: usize,
    /// Failed client authentications tolerated per client per window.
    pub client_auth_max_failures: u32,
    pub client_auth_window_seconds: i64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests taking longer are answered 503.
    pub request_timeout_seconds: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// Lifetime of an OTP challenge.
    pub otp_ttl_seconds: i64,
    /// Wrong attempts after which an OTP challenge is dead.
    pub otp_max_attempts: u32,
    /// How OTPs are delivered: `log` (development) or `webhook`. Unset:
    /// `webhook` if `otp_webhook` is set, else `log`.
    pub otp_sender: Option<String>,
    /// URL that receives `POST {otp, login, purpose, client_id, expires_at}`.
    pub otp_webhook: Option<String>,
    /// Where `authorize` sends the browser to log in (with `login_challenge`);
    /// default: the built-in login page, `<issuer>/login`.
    pub login_url: Option<String>,
    /// Also check the GSTIN check digit (the format is always checked).
    pub gstin_check_digit: bool,
    /// The admin API token. When unset, read from (or created in)
    /// `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let e = EngineSettings::default();
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./tessera-data"),
            store_cache_mib: 64,
            store_checkpoint_seconds: 1,
            database_url: None,
            database_max_connections: 16,
            database_timeout_ms: 5000,
            issuer: None,
            access_token_ttl_seconds: e.access_token_ttl,
            max_access_token_ttl_seconds: e.max_access_token_ttl,
            refresh_token_ttl_seconds: e.refresh_token_ttl,
            session_lifetime_seconds: e.session_lifetime,
            refresh_grace_seconds: e.refresh_grace,
            ended_session_retention_seconds: e.ended_retention,
            sweep_interval_seconds: 60,
            sweep_batch: e.sweep_batch,
            client_auth_max_failures: e.client_auth_max_failures,
            client_auth_window_seconds: e.client_auth_window,
            max_body_bytes: 64 * 1024,
            request_timeout_seconds: 30,
            log_format: "text".into(),
            log: "info".into(),
            otp_ttl_seconds: e.otp_ttl,
            otp_max_attempts: e.otp_max_attempts,
            otp_sender: None,
            otp_webhook: None,
            login_url: None,
            gstin_check_digit: false,
            admin_token: None,
        }
    }
}

/// Flags given on the command line; only those set override the layers below.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// Environment variables that belong to tools around the server (the CLI,
/// the test suite) rather than to `Settings`.
const NOT_SETTINGS: &[&str] = &["SERVER", "TEST_DATABASE_URL", "BENCH_DATABASE_URL", "BIN"];

impl Settings {
    /// Load the layers. A missing `config` file is an error; unknown keys in
    /// the file are errors too, so a typo never silently keeps a default.
    pub fn load(config: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let env = Env::prefixed("TESSERA_").filter(|k| {
            !NOT_SETTINGS
                .iter()
                .any(|n| k.as_str().eq_ignore_ascii_case(n))
        });
        let settings: Settings = fig
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// How the embedded store is opened.
    pub fn store_options(&self) -> crate::store::redb::RedbOptions {
        crate::store::redb::RedbOptions {
            cache_bytes: self.store_cache_bytes(),
            checkpoint_every: std::time::Duration::from_secs(self.store_checkpoint_seconds),
        }
    }

    /// `store_cache_mib` in bytes.
    pub fn store_cache_bytes(&self) -> usize {
        usize::try_from(self.store_cache_mib << 20).unwrap_or(usize::MAX)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("access_token_ttl_seconds", self.access_token_ttl_seconds),
            (
                "max_access_token_ttl_seconds",
                self.max_access_token_ttl_seconds,
            ),
            ("refresh_token_ttl_seconds", self.refresh_token_ttl_seconds),
            ("session_lifetime_seconds", self.session_lifetime_seconds),
        ];
        // Ten years bounds every duration, so time arithmetic cannot overflow.
        const MAX_SECS: i64 = 10 * 366 * 86_400;
        for (name, v) in positive {
            if !(1..=MAX_SECS).contains(&v) {
                return Err(ConfigError(format!(
                    "{name} must be between 1 and {MAX_SECS}"
                )));
            }
        }
        for (name, v) in [
            ("refresh_grace_seconds", self.refresh_grace_seconds),
            (
                "ended_session_retention_seconds",
                self.ended_session_retention_seconds,
            ),
            ("otp_ttl_seconds", self.otp_ttl_seconds),
        ] {
            if v > MAX_SECS {
                return Err(ConfigError(format!("{name} must be at most {MAX_SECS}")));
            }
        }
        if !(1..=MAX_SECS).contains(&self.client_auth_window_seconds)
            || self.client_auth_max_failures < 1
        {
            return Err(ConfigError(
                "client_auth_window_seconds and client_auth_max_failures must be at least 1".into(),
            ));
        }
        if self.refresh_grace_seconds < 0 || self.ended_session_retention_seconds < 0 {
            return Err(ConfigError(
                "refresh_grace_seconds and ended_session_retention_seconds must not be negative"
                    .into(),
            ));
        }
        if self.access_token_ttl_seconds > self.max_access_token_ttl_seconds {
            return Err(ConfigError(
                "access_token_ttl_seconds must not exceed max_access_token_ttl_seconds".into(),
            ));
        }
        if self.sweep_batch == 0 || self.sweep_interval_seconds == 0 {
            return Err(ConfigError(
                "sweep_batch and sweep_interval_seconds must be at least 1".into(),
            ));
        }
        // At most 1 TiB, so the byte count cannot overflow.
        if !(1..=1 << 20).contains(&self.store_cache_mib) {
            return Err(ConfigError(
                "store_cache_mib must be between 1 and 1048576".into(),
            ));
        }
        if !(1..=3600).contains(&self.store_checkpoint_seconds) {
            return Err(ConfigError(
                "store_checkpoint_seconds must be between 1 and 3600".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError(
                "log_format must be \"text\" or \"json\"".into(),
            ));
        }
        if self.otp_ttl_seconds < 1 || self.otp_max_attempts < 1 {
            return Err(ConfigError(
                "otp_ttl_seconds and otp_max_attempts must be at least 1".into(),
            ));
        }
        match (self.otp_sender.as_deref(), &self.otp_webhook) {
            (None | Some("log"), _) | (Some("webhook"), Some(_)) => {}
            (Some("webhook"), None) => {
                return Err(ConfigError(
                    "otp_sender = \"webhook\" needs otp_webhook (a URL)".into(),
                ))
            }
            (Some(other), _) => {
                return Err(ConfigError(format!(
                    "otp_sender must be \"log\" or \"webhook\", not {other:?}"
                )))
            }
        }
        if let Some(u) = &self.otp_webhook {
            if url::Url::parse(u)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return Err(ConfigError("otp_webhook must be an http(s) URL".into()));
            }
        }
        if self.database_max_connections < 1 || self.database_timeout_ms < 100 {
            return Err(ConfigError(
                "database_max_connections must be at least 1 and database_timeout_ms at least 100"
                    .into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError("max_body_bytes must be at least 1024".into()));
        }
        Ok(())
    }

    /// The engine's part of the settings; `issuer` is the resolved one.
    pub fn engine(&self, issuer: String) -> EngineSettings {
        EngineSettings {
            issuer,
            access_token_ttl: self.access_token_ttl_seconds,
            max_access_token_ttl: self.max_access_token_ttl_seconds,
            refresh_token_ttl: self.refresh_token_ttl_seconds,
            session_lifetime: self.session_lifetime_seconds,
            refresh_grace: self.refresh_grace_seconds,
            ended_retention: self.ended_session_retention_seconds,
            client_auth_max_failures: self.client_auth_max_failures,
            client_auth_window: self.client_auth_window_seconds,
            sweep_batch: self.sweep_batch,
            otp_ttl: self.otp_ttl_seconds,
            otp_max_attempts: self.otp_max_attempts,
        }
    }

    /// How the PostgreSQL store connects.
    pub fn pg_options(&self) -> crate::store::postgres::PgOptions {
        let timeout = std::time::Duration::from_millis(self.database_timeout_ms);
        crate::store::postgres::PgOptions {
            max_connections: self.database_max_connections,
            acquire_timeout: timeout,
            op_timeout: timeout,
            schema: None,
        }
    }

    /// Whether OTPs go to the webhook (else to the log).
    pub fn otp_via_webhook(&self) -> Option<&str> {
        match self.otp_sender.as_deref() {
            Some("log") => None,
            _ => self.otp_webhook.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // figment's Jail closure type is fixed by figment; its error is large.
    #[allow(clippy::result_large_err)]
    fn layers_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nrefresh_grace_seconds = 9\nsweep_batch = 7\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_REFRESH_GRACE_SECONDS", "3");
            jail.set_env("TESSERA_SERVER", "http://elsewhere");
            let o = Overrides {
                listen: Some("127.0.0.1:2".into()),
                ..Default::default()
            };
            let s = Settings::load(Some(&file), &o).unwrap();
            assert_eq!(s.listen, "127.0.0.1:2"); // flag beats file
            assert_eq!(s.refresh_grace_seconds, 3); // env beats file
            assert_eq!(s.sweep_batch, 7); // file beats default
            Ok(())
        });
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "refresh_grace_secs = 9\n").unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::write(&file, "store_cache_mib = 0\n").unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).is_err());
        std::fs::write(&file, "store_cache_mib = 16\n").unwrap();
        let s = Settings::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(s.store_cache_bytes(), 16 << 20);
        assert_eq!(Settings::default().store_cache_mib, 64);
        assert!(Settings::load(
            Some(&dir.path().join("missing.toml")),
            &Overrides::default()
        )
        .is_err());
    }
}
