//! The one middleware every route runs under: a request span (target
//! `tessera::request`, debug level), the request metrics, the time limit
//! and the panic guard, in a single service.
//!
//! These were four layers (two `axum::middleware::from_fn`, tower-http's
//! `TraceLayer` and `CatchPanicLayer`); each boxed a future or wrapped the
//! body, which cost more per request than checking a token does. Merged,
//! a request pays for one future and no body wrapper.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Span;

use super::error::ApiError;

/// Applied with `Router::layer`, so it runs once per request after routing
/// (the route template, [`MatchedPath`], is known) and each route gets its
/// own service.
#[derive(Clone)]
pub struct RequestLayer {
    time_limit: Duration,
}

impl RequestLayer {
    pub fn new(time_limit: Duration) -> Self {
        Self { time_limit }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            time_limit: self.time_limit,
            route: Arc::new(OnceLock::new()),
        }
    }
}

#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    time_limit: Duration,
    /// The metric handles of the route this service serves, found on its
    /// first request.
    route: Arc<OnceLock<Arc<RouteMetrics>>>,
}

impl<S> RequestService<S> {
    fn metrics_for(&self, template: &str) -> Arc<RouteMetrics> {
        let cached = self.route.get_or_init(|| route_metrics(template));
        if cached.route == template {
            cached.clone()
        } else {
            // Not expected (one service per route), but never miscount.
            route_metrics(template)
        }
    }
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let template = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or("unmatched");
        let route = self.metrics_for(template);
        // The route template only: raw paths and query strings can carry
        // ids, codes and OTPs. At debug level, under its own target, as
        // tower-http's default span is: at the default `info` the fmt
        // layer would format and store it for every request, a few per
        // cent of the server's CPU per introspection (bench/profile).
        // `log = "info,tessera::request=debug"`
        // puts it back on every event of a request.
        let span = tracing::debug_span!(
            target: "tessera::request",
            "request",
            method = req.method().as_str(),
            route = route.route.as_str()
        );
        let method = req.method().clone();
        let started = Instant::now();
        let inner =
            span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))));
        RequestFuture {
            inner: inner
                .ok()
                .map(|fut| tokio::time::timeout(self.time_limit, fut)),
            done: false,
            span,
            started,
            method,
            route,
            time_limit: self.time_limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RequestFuture<F> {
        // `None`: the handler panicked before it returned a future.
        #[pin]
        inner: Option<tokio::time::Timeout<F>>,
        done: bool,
        span: Span,
        started: Instant,
        method: Method,
        route: Arc<RouteMetrics>,
        time_limit: Duration,
    }
}

impl<F> Future for RequestFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        if *this.done {
            tracing::error!("request future polled after completion");
            return Poll::Ready(Ok(ApiError::internal().into_response()));
        }
        let outcome = match this.inner.as_pin_mut() {
            Some(fut) => match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(Ok(resp)))) => resp,
                Ok(Poll::Ready(Ok(Err(never)))) => match never {},
                Ok(Poll::Ready(Err(_elapsed))) => timed_out(*this.time_limit),
                Err(_) => panicked(),
            },
            None => panicked(),
        };
        *this.done = true;
        this.route
            .duration
            .record(this.started.elapsed().as_secs_f64());
        this.route.count(this.method, outcome.status().as_u16());
        Poll::Ready(Ok(outcome))
    }
}

fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

fn timed_out(limit: Duration) -> Response {
    tracing::warn!(?limit, "request timed out");
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the request took too long; its outcome is unknown, retry later",
    );
    e.retry_after = Some(1);
    e.into_response()
}

/// The metric handles of one route, made once: building a label set per
/// request costs allocations and a registry lookup each time.
struct RouteMetrics {
    route: String,
    duration: metrics::Histogram,
    /// By method and status; a handful per route, so a list.
    requests: RwLock<Vec<(Method, u16, metrics::Counter)>>,
}

impl RouteMetrics {
    fn count(&self, method: &Method, status: u16) {
        let seen = |list: &[(Method, u16, metrics::Counter)]| {
            list.iter()
                .find(|(m, s, _)| *s == status && m == method)
                .map(|(_, _, c)| c.clone())
        };
        let known = seen(&self.requests.read().unwrap_or_else(|p| p.into_inner()));
        let counter = match known {
            Some(c) => c,
            None => {
                let mut list = self.requests.write().unwrap_or_else(|p| p.into_inner());
                match seen(&list) {
                    Some(c) => c,
                    None => {
                        let c = metrics::counter!(
                            "tessera_http_requests_total",
                            "route" => self.route.clone(),
                            "method" => method.as_str().to_owned(),
                            "status" => status.to_string()
                        );
                        list.push((method.clone(), status, c.clone()));
                        c
                    }
                }
            }
        };
        counter.increment(1);
    }
}

/// The handles of `route` (a route template: a bounded set), shared by
/// every service that serves it.
fn route_metrics(route: &str) -> Arc<RouteMetrics> {
    static ROUTES: OnceLock<RwLock<Vec<Arc<RouteMetrics>>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    let find = |list: &[Arc<RouteMetrics>]| list.iter().find(|r| r.route == route).cloned();
    if let Some(r) = find(&routes.read().unwrap_or_else(|p| p.into_inner())) {
        return r;
    }
    let mut list = routes.write().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = find(&list) {
        return r;
    }
    let r = Arc::new(RouteMetrics {
        route: route.to_owned(),
        duration: metrics::histogram!(
            "tessera_http_request_duration_seconds",
            "route" => route.to_owned()
        ),
        requests: RwLock::new(Vec::new()),
    });
    list.push(r.clone());
    r
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route("/slow", get(slow))
            .route("/boom", get(boom))
            .route("/items/{id}", get(|| async { "item" }))
            .layer(RequestLayer::new(Duration::from_millis(50)))
    }

    async fn call(path: &str) -> (StatusCode, Option<String>, String) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = app().oneshot(req).await.unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn answers_pass_through() {
        assert_eq!(call("/ok").await, (StatusCode::OK, None, "fine".into()));
    }

    #[tokio::test]
    async fn a_panic_is_a_generic_500_in_the_native_shape() {
        let (status, _, body) = call("/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "server_error");
        assert!(!body.contains("handler bug"), "{body}");
    }

    #[tokio::test]
    async fn a_slow_request_is_a_503_with_retry_after() {
        let (status, retry, body) = call("/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "temporarily_unavailable");
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status() {
        for path in ["/items/a", "/items/b", "/nowhere"] {
            call(path).await;
        }
        let items = route_metrics("/items/{id}");
        let list = items.requests.read().unwrap();
        assert!(list.iter().any(|(m, s, _)| m == Method::GET && *s == 200));
        // Raw paths never become labels.
        assert!(route_metrics("/items/a")
            .requests
            .read()
            .unwrap()
            .is_empty());
    }
}
