//! The `tessera` command line: argument definitions (clap derive) and
//! [`run`], which `main` calls with the parsed arguments.
//!
//! `serve` runs the server; the other commands are a client of the admin
//! HTTP API of a running server.

mod admin;
mod error;
mod format;
mod http;
mod serve;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use admin::Output;
pub use error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Self-hosted token and session service: sessions you can end."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Tessera server.
    Serve(ServeArgs),
    /// Apply the PostgreSQL schema migrations and exit (`serve` applies
    /// them too; this is for operators who run them by hand).
    Migrate(MigrateArgs),
    #[command(flatten)]
    Admin(AdminCommand),
}

/// Flags of `serve`. No `env` attributes: `Settings::load` reads the
/// `TESSERA_*` variables itself, and a flag filled from the environment here
/// would land in the flag layer and beat the config file wrongly.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, host:port (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the embedded store, signing keys and admin token.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `iss` claim of issued tokens.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Deliver OTPs by POSTing them to this URL (instead of the log).
    #[arg(long, value_name = "URL")]
    pub otp_webhook: Option<String>,
    /// Keep sessions in this PostgreSQL database instead of the embedded store.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `migrate`. The URL may also come from the config file or
/// `TESSERA_DATABASE_URL`, as for `serve`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The PostgreSQL database to migrate.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Options shared by every admin command.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the Tessera server (plain http).
    #[arg(
        long,
        value_name = "URL",
        env = "TESSERA_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The server's data directory; only `admin.token` is read from it, and
    /// only when TESSERA_ADMIN_TOKEN is unset.
    #[arg(long, value_name = "DIR", default_value = "./tessera-data")]
    pub data_dir: PathBuf,
    /// Print the server's JSON response instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage client applications.
    #[command(subcommand)]
    Client(ClientCommand),
    /// List and end sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// End every session of a subject.
    #[command(subcommand)]
    Subject(SubjectCommand),
    /// Manage token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its secret and payload key, once.
    Create {
        /// Human-readable name.
        #[arg(long)]
        name: String,
        /// Choose the id instead of letting the server generate one.
        #[arg(long, value_name = "ID")]
        client_id: Option<String>,
        /// Allowed redirect URI (repeatable).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uri: Vec<String>,
        /// Allowed grant type (repeatable): client_credentials, refresh_token,
        /// authorization_code, session. Server default when none.
        #[arg(long = "grant-type", value_name = "T", value_parser = parse_grant_type)]
        grant_type: Vec<String>,
        /// Access-token lifetime in seconds (server default when unset).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(i64).range(1..))]
        access_token_ttl: Option<i64>,
        /// Refresh-token lifetime in seconds (server default when unset).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(i64).range(1..))]
        refresh_token_ttl: Option<i64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List clients.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a client and end all its sessions.
    Delete {
        client_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Issue a new client secret; the old one stops working.
    RotateSecret {
        client_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Issue a new payload-encryption key (token-service dialect); the old
    /// one stops working.
    RotatePayloadKey {
        client_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List a subject's (or a client's) sessions, ended ones included unless
    /// --live-only.
    List {
        #[arg(long, value_name = "S", required_unless_present = "client_id")]
        subject: Option<String>,
        #[arg(long, value_name = "C")]
        client_id: Option<String>,
        /// Leave out ended and expired sessions.
        #[arg(long)]
        live_only: bool,
        /// At most this many sessions.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// End one session and every token of it.
    Revoke {
        session_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubjectCommand {
    /// End every session of SUBJECT (optionally only those of one client).
    Revoke {
        subject: String,
        #[arg(long, value_name = "C")]
        client_id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Start signing with a new key; tokens signed with the old one stay valid.
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

impl AdminCommand {
    pub fn args(&self) -> &AdminArgs {
        match self {
            Self::Client(
                ClientCommand::Create { admin, .. }
                | ClientCommand::List { admin }
                | ClientCommand::Delete { admin, .. }
                | ClientCommand::RotateSecret { admin, .. }
                | ClientCommand::RotatePayloadKey { admin, .. },
            )
            | Self::Session(
                SessionCommand::List { admin, .. } | SessionCommand::Revoke { admin, .. },
            )
            | Self::Subject(SubjectCommand::Revoke { admin, .. })
            | Self::Keys(KeysCommand::Rotate { admin }) => admin,
        }
    }
}

/// Rejects unknown grant types before a round trip, with the model as the
/// one list of what exists.
fn parse_grant_type(s: &str) -> Result<String, String> {
    crate::core::model::GrantType::parse(s)
        .map(|g| g.as_str().to_owned())
        .ok_or_else(|| {
            "expected client_credentials, refresh_token, authorization_code or session".to_owned()
        })
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate(args) => {
            serve::migrate(args).await?;
            print("database schema is up to date\n")
        }
        Command::Admin(cmd) => {
            let out = admin::run(&cmd).await?;
            if let Some(notice) = &out.notice {
                eprintln!("{notice}");
            }
            print(&out.stdout)
        }
    }
}

/// `println!` panics when stdout is a closed pipe (`tessera ... | head`);
/// a reader that stopped listening is not an error worth reporting.
fn print(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_are_optional_overrides() {
        let cli = Cli::try_parse_from(["tessera", "serve", "--listen", "0.0.0.0:1"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.listen.as_deref(), Some("0.0.0.0:1"));
        assert!(a.data_dir.is_none() && a.issuer.is_none() && a.config.is_none());
    }

    #[test]
    fn admin_options_parse_on_leaves() {
        let cli = Cli::try_parse_from([
            "tessera",
            "client",
            "create",
            "--name",
            "A",
            "--grant-type",
            "session",
            "--redirect-uri",
            "http://a/cb",
            "--redirect-uri",
            "http://b/cb",
            "--json",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        let Command::Admin(cmd) = cli.command else {
            panic!("not admin")
        };
        assert!(cmd.args().json);
        assert_eq!(cmd.args().server, "http://h:1");
        let AdminCommand::Client(ClientCommand::Create {
            redirect_uri,
            grant_type,
            ..
        }) = cmd
        else {
            panic!("not create")
        };
        assert_eq!(redirect_uri.len(), 2);
        assert_eq!(grant_type, ["session"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for argv in [
            &[
                "tessera",
                "client",
                "create",
                "--name",
                "A",
                "--grant-type",
                "password",
            ][..],
            &[
                "tessera",
                "client",
                "create",
                "--name",
                "A",
                "--access-token-ttl",
                "0",
            ],
            &[
                "tessera",
                "session",
                "list",
                "--subject",
                "u",
                "--limit",
                "-3",
            ],
            &["tessera", "session", "list"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }
}
