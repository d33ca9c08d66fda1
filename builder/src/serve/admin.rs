//! The admin port: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/status` (JSON per proxy),
//! `/endpoints` (JSON per probed endpoint),
//! and with `--serve-modules` the wasm modules the filter configs fetch
//! (`/modules/sluice_<module>.wasm`).
//!
//! Why the modules are here and not on the ADS port: this port is plain HTTP/1.1 that any
//! client reads (curl, a load balancer, Envoy's remote data source through an ordinary
//! cluster), it is already health-checked on `/readyz`, and a multi-megabyte download never
//! shares a listener or a connection's flow control with the ADS streams.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::state::Shared;

/// Serves the admin routes on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    axum::serve(listener, router(shared)).await
}

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/endpoints", get(endpoints))
        .route("/modules/{file}", get(module))
        .with_state(shared)
}

/// 200 once a valid config is served; 503 before (a load balancer in front of several serve
/// replicas sends proxies only to one that has something to give them), and 503 "degraded"
/// while the store cannot be read (the replica still serves its last good config to every
/// proxy, but a fresher replica should be preferred).
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let degraded = shared.lock().input.degraded.clone();
    if let Some(why) = degraded {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: serving the last good config; the store cannot be read: {why}\n"),
        )
    } else if shared.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid config loaded yet (see /status)\n".to_owned(),
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics_text(),
    )
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(shared.status_json())
}

async fn endpoints(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(shared.endpoints_json())
}

/// A module of the published config, the exact bytes its filter configs pin by sha256; 404
/// for a name the config does not serve (or without `--serve-modules`), 503 before any valid
/// config is loaded.
async fn module(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> impl IntoResponse {
    let bytes = shared
        .published
        .borrow()
        .as_ref()
        .map(|p| p.modules.get(&file).cloned());
    match bytes {
        Some(Some(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/wasm")],
            bytes,
        )
            .into_response(),
        Some(None) => (
            StatusCode::NOT_FOUND,
            format!("no module {file} is served (sluice serve --serve-modules DIR serves DIR/sluice_<module>.wasm)\n"),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid config loaded yet (see /status)\n",
        )
            .into_response(),
    }
}
