//! The CLI's error type: every way a command can fail, worded for the
//! operator who typed it. `main` prints it as `error: ...` and exits 1.

use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("logging: {0}")]
    Logging(String),

    #[error("{0:#}")]
    Server(anyhow::Error),

    #[error(
        "no admin token: set TESSERA_ADMIN_TOKEN or point --data-dir at the server's data \
         directory ({} not found)",
        .path.display()
    )]
    NoAdminToken { path: PathBuf },

    #[error("admin token: {0}")]
    BadAdminToken(String),

    #[error("invalid --server URL {url:?}: {why}")]
    BadServerUrl { url: String, why: String },

    #[error(
        "{url}: TLS is not supported by this CLI build; terminate TLS in front of Tessera \
         and reach it over http:// (for example from the same host or through a tunnel)"
    )]
    TlsUnsupported { url: String },

    #[error("invalid {what}: {why}")]
    BadArgument { what: &'static str, why: String },

    #[error("cannot reach Tessera at {url}: is it running? ({detail})")]
    Unreachable { url: String, detail: String },

    #[error("request to Tessera at {url} failed: {detail}")]
    Transport { url: String, detail: String },

    #[error("{message} (HTTP {status})")]
    Http { status: u16, message: String },

    #[error("unexpected response from Tessera at {url}: {detail}")]
    BadResponse { url: String, detail: String },

    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}
