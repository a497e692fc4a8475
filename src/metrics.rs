//! The `/metrics` (Prometheus text format) and `/healthz` endpoint.
//!
//! Owns the process-wide metrics recorder and its HTTP listener. Invariants: metric labels
//! never carry row values; `/healthz` answers 200 only while capture is streaming.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::capture::Health;

/// Installs the global recorder (once per process).
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    health: Arc<Health>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route(
            "/healthz",
            get(move || {
                let ok = health.streaming.load(Ordering::Relaxed);
                std::future::ready(if ok {
                    (StatusCode::OK, "streaming\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not streaming\n")
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    axum::serve(listener, app).await
}
