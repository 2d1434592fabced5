//! Operations: Prometheus metrics, liveness and readiness, and the OpenAPI
//! document. Requests are counted in [`super::layer`].

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
}

/// The process-wide metrics recorder. The `metrics` facade is global by
/// design, so several servers in one process (tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the histograms' pending samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `build_recorder()`, unlike `install()`, starts no upkeep: without
/// [`PrometheusHandle::run_upkeep`] every histogram sample stays in memory
/// until `/metrics` is scraped, so a server nobody scrapes grows without
/// bound. A plain thread (not a tokio task) because the handle outlives any
/// one runtime (tests start many).
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("tessera-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histograms grow until scraped");
    }
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store before calling it unreachable.
const READY_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ready when the store answers and, in a fleet, the node is following the
/// change feed and caught up (otherwise its checks go to the store, and
/// fail while the store is down). Answers within [`READY_PING_TIMEOUT`].
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let feed = state.engine.feed_state();
    let ping = tokio::time::timeout(READY_PING_TIMEOUT, state.engine.store().ping()).await;
    let store_reason = match ping {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: store unreachable");
            Some("store unreachable")
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_PING_TIMEOUT, "readiness check: store did not answer");
            Some("store did not answer in time")
        }
    };
    let reason = store_reason.or((!feed.is_current()).then_some("change feed not current"));
    let body = serde_json::json!({
        "status": if reason.is_none() { "ready" } else { "unavailable" },
        "store": if store_reason.is_none() { "ok" } else { "unreachable" },
        "change_feed": feed.as_str(),
        "reason": reason,
    });
    match reason {
        None => Json(body).into_response(),
        Some(_) => {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        c.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tessera", description = "Native session API and admin API of Tessera. The standard OAuth 2.0 endpoints (/oauth2/token, /oauth2/introspect, /oauth2/revoke) follow RFC 6749, 7662 and 7009 and are described by /.well-known/oauth-authorization-server."),
    paths(
        super::sessions::open, super::sessions::list, super::sessions::end_one, super::sessions::end_subject,
        super::admin::create_client, super::admin::list_clients, super::admin::delete_client,
        super::admin::rotate_secret, super::admin::rotate_payload_key, super::admin::list_sessions, super::admin::revoke_session,
        super::admin::revoke_subject, super::admin::rotate_keys, super::admin::audit,
    ),
    modifiers(&Security),
    tags((name = "sessions", description = "Native session API (client-authenticated)"),
         (name = "admin", description = "Admin API (admin token)"))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    /// The recorder comes with its upkeep thread, so histograms are folded
    /// without a scrape.
    #[cfg(target_os = "linux")]
    #[test]
    fn metrics_handle_starts_the_upkeep_thread() {
        let _ = super::metrics_handle();
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        };
        // A new thread names itself once it runs (until then it carries
        // its parent's name), so look a few times; names are cut to 15
        // bytes by the kernel.
        let found = (0..200).any(|_| {
            let seen = names().iter().any(|n| n.starts_with("tessera-metrics"));
            if !seen {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            seen
        });
        assert!(found, "threads: {:?}", names());
    }
}
