//! Local emulators of the SaaS APIs driftless writes to (`driftless emulate hubspot|zoho|webhook`).
//!
//! Owns faithful, in-memory stand-ins for the public contracts summarised in
//! `shared/docs/saas-contracts.md` (checklists H1–H20, Z1–Z13, W1–W2), for development, the demo
//! and the sink tests. Invariants: they bind to 127.0.0.1 only; their state is inspectable over
//! HTTP (`/_emulator/state`); faults are scripted over HTTP (`/_emulator/faults`) so tests can
//! provoke 429 storms, 5xx, resets and fail-after-write deterministically.

pub mod hubspot;
pub mod webhook;
pub mod zoho;

use std::net::SocketAddr;

/// Which emulator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HubSpot CRM v3.
    Hubspot,
    /// Zoho CRM v8.
    Zoho,
    /// A generic webhook receiver (Standard Webhooks signatures).
    Webhook,
}

/// Serves `app` on an ephemeral 127.0.0.1 port in a background task (tests); returns its base
/// URL, `http://127.0.0.1:PORT`.
#[cfg(test)]
pub(crate) async fn serve_for_test(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Serves the emulator of `kind` on `addr` until the process ends.
pub async fn serve(kind: Kind, addr: SocketAddr) -> std::io::Result<()> {
    let app = match kind {
        Kind::Hubspot => hubspot::router(hubspot::Options::default()),
        Kind::Zoho => zoho::router(zoho::Options::default()),
        Kind::Webhook => webhook::router(webhook::Options::default()),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, ?kind, "emulator listening");
    axum::serve(listener, app).await
}
