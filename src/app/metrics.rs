//! The `/metrics` (Prometheus text format) and `/healthz` endpoint.
//!
//! Owns the process-wide metrics recorder and its HTTP listener. Invariants: metric labels
//! never carry row values; `/healthz` answers 200 only while the process says it is healthy (capture: while it is
//! streaming; a sink worker: while it runs).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder (once per process).
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub(crate) async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    healthy: Arc<dyn Fn() -> bool + Send + Sync>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route(
            "/healthz",
            get(move || {
                std::future::ready(if healthy() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    axum::serve(listener, app).await
}
