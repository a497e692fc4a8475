//! In-memory emulators of the SaaS APIs driftless writes to: HubSpot CRM v3, Zoho CRM v8 and a
//! generic Standard Webhooks receiver.
//!
//! Owns faithful stand-ins for those public contracts, for development, the demo and driftless's
//! tests (in process through [`serve_for_test`], or as the `driftless-emulate` binary). This crate
//! does not depend on driftless: it signs HubSpot webhooks and verifies Standard Webhooks with its
//! own code, so it is an independent oracle for the product.
//!
//! Invariants: all state is in memory and inspectable over HTTP (`GET /_emulator/state`); faults
//! are scripted over HTTP (`POST /_emulator/faults`) so tests can provoke 429 storms, 5xx,
//! connection resets and fail-after-write deterministically; the emulators bind to the address
//! they are given (loopback unless told otherwise).
//!
//! # Layout
//!
//! | module | what it emulates |
//! |---|---|
//! | [`hubspot`] | CRM objects, batch, search, properties, OAuth, rate limits, webhooks |
//! | [`zoho`] | records, upsert, COQL, notification channels, OAuth, credits and concurrency |
//! | [`webhook`] | a customer endpoint that verifies, records and de-duplicates deliveries |

mod http;
pub mod hubspot;
pub mod webhook;
pub mod zoho;

use std::net::SocketAddr;

/// Which emulator to run (also the `driftless-emulate` argument: `hubspot`, `zoho`, `webhook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// HubSpot CRM v3.
    Hubspot,
    /// Zoho CRM v8.
    Zoho,
    /// A generic webhook receiver (Standard Webhooks signatures).
    Webhook,
}

/// Serves `app` on an ephemeral 127.0.0.1 port in a background task of the current Tokio
/// runtime and returns its base URL, `http://127.0.0.1:PORT` (for tests).
pub async fn serve_for_test(app: axum::Router) -> String {
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
