//! HTTP: the application (binding, middleware, background sweeper,
//! graceful shutdown) and the routers of the native, admin and operations
//! APIs. Each module builds its own `Router`; [`Application`] merges them.

mod admin;
mod dialects;
mod discovery;
pub mod error;
pub mod extract;
mod layer;
mod oauth;
mod ops;
mod sessions;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretBox;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::core::clock::{Clock, SystemClock, UnixTime};
use crate::core::delivery::{LogSender, OtpSender, WebhookSender};
use crate::core::engine::EngineDeps;
use crate::core::keys::{ensure_private_dir, write_private_file, DirVault, KeyVault, Keyring};
use crate::core::secrets::{random_bytes, random_token, TokenHasher};
use crate::core::Engine;
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;
use crate::store::Store;
use error::ApiError;

pub use ops::ApiDoc;

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub settings: Arc<Settings>,
    pub admin_token_hash: SecretBox<[u8; 32]>,
    pub metrics: PrometheusHandle,
    pub max_body: usize,
}

/// A bound, ready-to-run Tessera.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    engine: Arc<Engine>,
    sweep_every: Duration,
}

/// The file names inside the data directory.
pub const STORE_FILE: &str = "tessera.redb";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const TOKEN_KEY_FILE: &str = "token.key";
pub const KEYS_DIR: &str = "keys";

/// Read a secret file of the data directory, creating it with `make` if it
/// does not exist yet.
fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Some(value) = local_secret(path)? {
        return Ok(value);
    }
    let value = make();
    write_private_file(path, format!("{value}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "created");
    Ok(value)
}

fn token_hasher(data_dir: &Path) -> anyhow::Result<TokenHasher> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    let text = read_or_create_secret(&path, || URL_SAFE_NO_PAD.encode(random_bytes::<32>()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{} does not hold a 32-byte base64url key", path.display()))?;
    Ok(TokenHasher::new(bytes))
}

/// What every node of a deployment must agree on.
struct Secrets {
    hasher: TokenHasher,
    admin_token: String,
    keys: Keyring,
}

/// One node: the secrets are files in the data directory.
async fn local_secrets(settings: &Settings, dir: &Path, now: UnixTime) -> anyhow::Result<Secrets> {
    let hasher = token_hasher(dir)?;
    let admin_token = match configured_admin_token(settings) {
        Some(t) => t,
        None => read_or_create_secret(&dir.join(ADMIN_TOKEN_FILE), || random_token(32))?,
    };
    let keys = Keyring::load_or_create(&dir.join(KEYS_DIR), now)
        .await
        .context("loading signing keys")?;
    Ok(Secrets {
        hasher,
        admin_token,
        keys,
    })
}

fn configured_admin_token(settings: &Settings) -> Option<String> {
    settings
        .admin_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Connects to the fleet's database and applies pending migrations.
async fn connect_fleet(url: &str, settings: &Settings) -> anyhow::Result<PgStore> {
    let pg = PgStore::connect_with(url, settings.pg_options())
        .await
        .context("connecting to PostgreSQL")?;
    pg.migrate().await.context("applying database migrations")?;
    tracing::info!("store: PostgreSQL (fleet mode: keys and secrets shared through the database)");
    Ok(pg)
}

/// The trimmed content of a file of the data directory, if it exists.
fn local_secret(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A fleet: the token-hashing key, the admin token (unless configured) and
/// the signing keys live in the database, set by the first node to start.
/// That node proposes what its data directory already holds, so a node
/// that ran on this database before fleets existed (secrets in files)
/// keeps its refresh tokens, sealed payload keys and signed tokens valid.
/// The admin token is also written to the data directory, where the admin
/// CLI on this machine finds it.
async fn fleet_secrets(
    pg: &PgStore,
    settings: &Settings,
    dir: &Path,
    now: UnixTime,
) -> anyhow::Result<Secrets> {
    let proposed_key = local_secret(&dir.join(TOKEN_KEY_FILE))?
        .unwrap_or_else(|| URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let key_text = pg
        .shared_value("token_key", &proposed_key)
        .await
        .context("reading the fleet's token key")?;
    let hasher = URL_SAFE_NO_PAD
        .decode(key_text.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(TokenHasher::new)
        .context("the database's token_key is not a 32-byte base64url key")?;
    let admin_token = match configured_admin_token(settings) {
        Some(t) => t,
        None => {
            let path = dir.join(ADMIN_TOKEN_FILE);
            let proposed = local_secret(&path)?.unwrap_or_else(|| random_token(32));
            let shared = pg
                .shared_value("admin_token", &proposed)
                .await
                .context("reading the fleet's admin token")?;
            if local_secret(&path)?.as_deref() != Some(shared.as_str()) {
                write_private_file(&path, format!("{shared}\n").as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            shared
        }
    };
    let local_keys = dir.join(KEYS_DIR);
    let seed = if local_keys.is_dir() {
        DirVault::open(&local_keys)?.load().await?
    } else {
        Vec::new()
    };
    let keys = Keyring::open_seeded(Arc::new(pg.key_vault()), now, seed)
        .await
        .context("loading the fleet's signing keys")?;
    Ok(Secrets {
        hasher,
        admin_token,
        keys,
    })
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Build with an injected clock (tests move time without sleeping).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, clock, None).await
    }

    /// Build with an injected clock and, optionally, a store (the embedded
    /// store in the data directory when `None`).
    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        store: Option<Arc<dyn Store>>,
    ) -> anyhow::Result<Self> {
        // First: handles made before the recorder exists (the store's
        // writer makes its own at open) would count into nothing.
        let metrics = ops::metrics_handle();
        let dir = settings.data_dir.clone();
        ensure_private_dir(&dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let fleet = match (&store, &settings.database_url) {
            (None, Some(url)) => Some(connect_fleet(url, &settings).await?),
            _ => None,
        };
        let secrets = match &fleet {
            Some(pg) => fleet_secrets(pg, &settings, &dir, clock.now()).await?,
            None => local_secrets(&settings, &dir, clock.now()).await?,
        };
        let store: Arc<dyn Store> = match (store, fleet) {
            (Some(s), _) => s,
            (None, Some(pg)) => Arc::new(pg),
            (None, None) => {
                let path = dir.join(STORE_FILE);
                Arc::new(
                    RedbStore::open_with(&path, settings.store_options())
                        .with_context(|| format!("opening store {}", path.display()))?,
                )
            }
        };
        let Secrets {
            hasher,
            admin_token,
            keys,
        } = secrets;
        let admin_token_hash = SecretBox::new(Box::new(hasher.hash("admin-token", &admin_token)));
        let keys = Arc::new(keys);

        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let issuer = settings
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let otp_sender: Arc<dyn OtpSender> = match settings.otp_via_webhook() {
            Some(url) => {
                Arc::new(WebhookSender::new(url.to_owned()).map_err(|e| anyhow::anyhow!(e))?)
            }
            None => {
                tracing::warn!("OTPs are delivered to the log (otp_sender = \"log\"); set otp_webhook for production");
                Arc::new(LogSender)
            }
        };
        let deps = EngineDeps {
            store,
            clock,
            keys,
            hasher,
            otp_sender,
        };
        let engine = Arc::new(
            Engine::start(deps, settings.engine(issuer.clone()))
                .await
                .context("starting the engine")?,
        );
        let state = Arc::new(AppState {
            settings: Arc::new(Settings {
                issuer: Some(issuer.clone()),
                ..settings.clone()
            }),
            engine: engine.clone(),
            admin_token_hash,
            metrics,
            max_body: settings.max_body_bytes,
        });
        let router = routes(state, Duration::from_secs(settings.request_timeout_seconds));
        tracing::info!(%addr, %issuer, data_dir = %dir.display(), "tessera ready");
        Ok(Self {
            listener,
            addr,
            router,
            engine,
            sweep_every: Duration::from_secs(settings.sweep_interval_seconds),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Serve until `shutdown` completes, then finish in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(sweep_loop(
            self.engine.clone(),
            self.sweep_every,
            stop_rx.clone(),
        ));
        let engine = self.engine.clone();
        let follower = tokio::spawn(async move { engine.follow_changes(stop_rx).await });
        let result = axum::serve(self.listener, self.router.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = follower.await;
        tracing::info!("tessera stopped");
        result.context("serving HTTP")
    }
}

/// Run Tessera with `settings` until SIGTERM or ctrl-c.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings)
        .await?
        .run_until(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

async fn sweep_loop(
    engine: Arc<Engine>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match engine.sweep_once().await {
            Ok(stats) if stats.total() > 0 => tracing::info!(
                sessions = stats.sessions,
                expired_sessions = stats.expired,
                refresh_tokens = stats.refresh_tokens,
                revocations = stats.revocations,
                audit = stats.audit,
                "swept expired records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry at the next tick"),
        }
    }
}

fn routes(state: Arc<AppState>, timeout: Duration) -> Router {
    Router::new()
        .merge(oauth::router())
        .merge(discovery::router())
        .merge(sessions::router())
        .merge(admin::router(state.clone()))
        .merge(ops::router())
        .merge(dialects::router())
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "method not allowed on this route",
            )
        })
        .layer(layer::RequestLayer::new(timeout))
        .with_state(state)
}
