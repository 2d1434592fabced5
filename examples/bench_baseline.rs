//! The ceiling that `bench/run` measures Tessera against: an empty axum
//! POST handler on the same stack as Tessera (tokio's multi-thread runtime
//! with its default worker count, axum 0.8, `axum::serve`), without
//! middleware. It reads the request body, as every Tessera handler does,
//! and answers 200 with an empty body.
//!
//! `cargo run --release --example bench_baseline -- 127.0.0.1:0` prints
//! `listening on ADDR` and serves until SIGTERM or ctrl-c.

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

async fn empty(_body: Bytes) {}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new()
        .route("/oauth2/introspect", post(empty))
        .route("/oauth2/token", post(empty))
        .route("/oauth2/revoke", post(empty));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        })
        .await
}
