//! The admin port: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/status` (JSON per proxy),
//! `/endpoints` (JSON per probed endpoint).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
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
