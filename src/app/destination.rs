//! Builds the destination a sink's config names, and checks its mapping against the live
//! schema before anything is written.
//!
//! Owns [`Destination`], the one place that lists every destination: a new destination is
//! one folder under [`crate::destinations`] plus one variant here. Invariant: a destination
//! whose mapping does not fit the destination's schema is refused with every problem listed
//! (field paths included), before any record is read from Kafka.

use crate::config::sinks::{SinkKind, ValidSink};
use crate::config::{SecretSource, ValidConfig};
use crate::destinations::hubspot::HubspotSink;
use crate::destinations::oauth::Credentials;
use crate::destinations::webhook::WebhookSink;
use crate::destinations::webhook::signature::Secret;
use crate::destinations::zoho::ZohoSink;
use crate::event::ChangeEvent;
use crate::postgres::connect::ConnectParams;
use crate::sink::batch::Batch;
use crate::sink::crm::Ledgered;
use crate::sink::ledger::store::Ledger;
use crate::sink::mapping::check_schema;
use crate::sink::{Outcome, Sink, SinkError};
use crate::sync::outbound::TwoWaySink;

use super::sink::WorkerError;

/// A configured destination.
pub(crate) enum Destination {
    /// HubSpot CRM v3.
    Hubspot(Ledgered<HubspotSink>),
    /// Zoho CRM v8.
    Zoho(Ledgered<ZohoSink>),
    /// Signed HTTP POSTs.
    Webhook(WebhookSink),
    /// HubSpot, both ways.
    HubspotTwoWay(TwoWaySink<HubspotSink>),
    /// Zoho, both ways.
    ZohoTwoWay(TwoWaySink<ZohoSink>),
}

impl Sink for Destination {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        match self {
            Destination::Hubspot(s) => s.apply(batch).await,
            Destination::Zoho(s) => s.apply(batch).await,
            Destination::Webhook(s) => s.apply(batch).await,
            Destination::HubspotTwoWay(s) => s.apply(batch).await,
            Destination::ZohoTwoWay(s) => s.apply(batch).await,
        }
    }
}

impl Destination {
    /// Forgets what the sink ledger holds (`replay --full-resync`); sinks without one (webhooks,
    /// two-way sinks, which keep their own) have nothing to forget.
    pub(crate) async fn forget_ledger(&mut self) -> Result<(), SinkError> {
        match self {
            Destination::Hubspot(s) => s.forget_ledger().await,
            Destination::Zoho(s) => s.forget_ledger().await,
            _ => Ok(()),
        }
    }
}

/// Builds the destination of `sinks[index]` and checks its mapping against the live schema.
/// One attempt, with no retry policy of its own: a worker's start retries its transient errors
/// (`super::sink::start_destination`), `driftless check` and `driftless verify` report them.
pub(crate) async fn destination(
    cfg: &ValidConfig,
    sink: &ValidSink,
    index: usize,
) -> Result<Destination, WorkerError> {
    let refused = |e: &dyn std::fmt::Display| WorkerError::Refused(e.to_string());
    let credentials = || {
        Credentials::from_auth(
            sink.auth
                .as_ref()
                .ok_or_else(|| refused(&"token_env or [sinks.oauth] is required"))?,
        )
        .map_err(|e| refused(&format!("sinks[{index}]: {e}")))
    };
    let (destination, schema) = match &sink.kind {
        SinkKind::Hubspot { .. } => {
            let mut d = HubspotSink::new(sink, credentials()?)?;
            let schema = d.fetch_schema().await?;
            d.use_schema(schema.clone());
            (
                Destination::Hubspot(Ledgered::new(d, ledger(cfg, sink)?, &sink.name)),
                schema,
            )
        }
        SinkKind::Zoho { .. } => {
            let mut d = ZohoSink::new(sink, credentials()?)?;
            let schema = d.fetch_schema().await?;
            (
                Destination::Zoho(Ledgered::new(d, ledger(cfg, sink)?, &sink.name)),
                schema,
            )
        }
        SinkKind::Webhook { secret, .. } => {
            let secret = secret
                .read()
                .and_then(|s| Secret::parse(&s).map_err(|e| e.to_string()))
                .map_err(|e| refused(&format!("sinks[{index}].secret_env: {e}")))?;
            // A webhook has no schema to check the mapping against.
            return Ok(Destination::Webhook(WebhookSink::new(sink, secret)?));
        }
    };
    tracing::info!(sink = %sink.name, properties = schema.len(), "destination schema fetched");
    let problems = check_schema(
        &format!("sinks[{index}]"),
        &sink.fields,
        sink.id_property.as_deref().unwrap_or_default(),
        &schema,
    );
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("  - {}: {}", p.path, p.message))
            .collect();
        return Err(WorkerError::Refused(format!(
            "the mapping does not fit the destination ({} problem(s)):\n{}",
            problems.len(),
            lines.join("\n")
        )));
    }
    Ok(destination)
}

/// The sink's ledger, in the `[state]` database (by default the source's); it connects on
/// first use.
fn ledger(cfg: &ValidConfig, sink: &ValidSink) -> Result<Ledger, WorkerError> {
    let params = connect_params(
        &cfg.state_url,
        "the sink ledger",
        "export the variable named by state.url_env (default: source.url_env), or fix the \
         url_file",
    )?;
    Ok(Ledger::new(params, &sink.name))
}

/// The connection parameters of a Postgres URL from the environment or a file; an unusable
/// one stops `who` with `hint`.
pub(super) fn connect_params(
    url: &SecretSource,
    who: &str,
    hint: &str,
) -> Result<ConnectParams, SinkError> {
    let unusable = |e: String| SinkError::fatal(format!("{who} cannot use its URL: {e}"), hint);
    let url = url.read().map_err(unusable)?;
    ConnectParams::from_url(&url).map_err(|e| unusable(e.to_string()))
}
