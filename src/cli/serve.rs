//! `tessera serve`: load layered settings, start logging, hand over to the
//! server.

use crate::config::{Overrides, Settings};
use crate::store::postgres::PgStore;

use super::error::CliError;
use super::{MigrateArgs, ServeArgs};

pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let overrides = overrides(&args);
    let settings = Settings::load(args.config.as_deref(), &overrides)?;
    init_logging(&settings)?;
    crate::server::serve(settings)
        .await
        .map_err(CliError::Server)
}

/// `tessera migrate`: apply the embedded migrations to the database.
pub async fn migrate(args: MigrateArgs) -> Result<(), CliError> {
    let overrides = Overrides {
        database_url: args.database_url.clone(),
        ..Overrides::default()
    };
    let settings = Settings::load(args.config.as_deref(), &overrides)?;
    init_logging(&Settings {
        log: "warn".into(),
        ..settings.clone()
    })?;
    let Some(url) = settings.database_url.as_deref() else {
        return Err(CliError::BadArgument {
            what: "database URL",
            why: "give --database-url (or set TESSERA_DATABASE_URL)".into(),
        });
    };
    let store = PgStore::connect_with(url, settings.pg_options())
        .await
        .map_err(|e| CliError::Server(anyhow::anyhow!("connecting to PostgreSQL: {e}")))?;
    let migrated = store.migrate().await;
    store.close().await;
    migrated.map_err(|e| CliError::Server(anyhow::anyhow!("applying migrations: {e}")))
}

fn overrides(args: &ServeArgs) -> Overrides {
    Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        issuer: args.issuer.clone(),
        otp_webhook: args.otp_webhook.clone(),
        database_url: args.database_url.clone(),
    }
}

/// `RUST_LOG`, when set, replaces the configured filter outright, so a
/// one-off debugging run needs no config edit.
fn init_logging(settings: &Settings) -> Result<(), CliError> {
    use tracing_subscriber::EnvFilter;

    let (source, directives) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("the log setting", settings.log.clone()),
    };
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| CliError::Logging(format!("invalid filter in {source}: {e}")))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only for a person at a terminal, never into files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = if settings.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
    installed.map_err(|e| CliError::Logging(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_flags_override() {
        let o = overrides(&ServeArgs {
            config: None,
            listen: None,
            data_dir: Some("d".into()),
            issuer: None,
            otp_webhook: None,
            database_url: None,
        });
        assert!(o.listen.is_none() && o.issuer.is_none());
        assert_eq!(o.data_dir.as_deref(), Some(std::path::Path::new("d")));
    }
}
