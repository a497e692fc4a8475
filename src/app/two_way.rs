//! The wiring of a two-way sink: its lease, its outbound wrapper and its inbound half
//! (notification receiver, inbound worker, reconciliation, Zoho's watch channel).
//!
//! Owns the order things start in. Invariants: one active worker per two-way sink (an
//! advisory lock held by the store's connection; others stand by, a replay is refused while a
//! worker holds it); the receiver listens before a Zoho watch channel exists, so no
//! notification is refused; every inbound task runs under the worker's supervisor, so a fatal
//! error in any of them (a 401 during reconciliation, a receiver that died) ends the worker; a
//! sink whose inbound table's key does not fit it ([`unfit`]) is refused before anything
//! runs; a worker's first start sets the sink's reconciliation cursors to that moment unless
//! `initial_import` is set.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::destination::{Destination, connect_params};
use super::sink::{WorkerError, dead_letter_topic};
use super::supervise::Supervisor;
use crate::config::ValidConfig;
use crate::config::sinks::ValidSink;
use crate::config::two_way::{OnCrmCreate, TwoWay};
use crate::destinations::hubspot::HubspotSink;
use crate::destinations::hubspot::receiver::webhook_router;
use crate::destinations::zoho::ZohoSink;
use crate::destinations::zoho::receiver as zoho;
use crate::kafka::{self, AckedProducer};
use crate::sink::SinkError;
use crate::sink::audit::AuditTrail;
use crate::sink::status_report::StatusReport;
use crate::sync::dead_letter::DeadLetters;
use crate::sync::engine::{self, Context, Crm, Receiver};
use crate::sync::inbox::{CursorKind, Inbox};
use crate::sync::outbound::TwoWaySink;
use crate::sync::store::{InboundKey, Store, origin_name};
use crate::sync::{inbound, reconcile};

/// The CRM client of a two-way sink's inbound half.
pub(crate) enum InboundCrm {
    Hubspot(HubspotSink),
    Zoho(ZohoSink),
}

/// How a two-way sink gets its lease (one active worker per sink).
pub(crate) enum Lease<'a> {
    /// A worker: stand by until the lease is free (`None` from [`prepare`] when shutdown
    /// came first).
    Wait(&'a mut watch::Receiver<bool>),
    /// A replay: refuse while a worker holds it.
    Require,
}

/// A two-way sink ready to run.
pub(crate) struct Prepared {
    /// The outbound destination (CRM writes filtered by the sync plan).
    pub(crate) destination: Destination,
    /// What the outbound and inbound halves share.
    pub(crate) context: Arc<Context>,
    /// The client of the inbound half.
    pub(crate) crm: InboundCrm,
}

/// The two-way state in Postgres was unreachable or unfit.
fn state_failed(e: impl std::fmt::Display) -> WorkerError {
    SinkError::transient(format!("two-way sync state in Postgres: {e}"), None).into()
}

/// Wraps a HubSpot or Zoho destination for two-way sync (used by workers and replays alike: a
/// replay of a two-way sink compares with the current rows, so it never pushes stale values).
/// The CRM schema is the one the destination fetched at start (with its retries), not read again.
pub(crate) async fn prepare(
    cfg: &ValidConfig,
    sink: &ValidSink,
    settings: &TwoWay,
    destination: Destination,
    lease: Lease<'_>,
    status: StatusReport,
) -> Result<Option<Prepared>, WorkerError> {
    let (schema, crm) = match destination {
        // Two-way sync keeps its own ledger (`sync::store`).
        Destination::Hubspot(hubspot) => {
            let hubspot = hubspot.into_crm();
            (
                hubspot.known_schema().cloned().unwrap_or_default(),
                InboundCrm::Hubspot(hubspot),
            )
        }
        Destination::Zoho(zoho) => {
            let zoho = zoho.into_crm();
            (
                zoho.known_schema().cloned().unwrap_or_default(),
                InboundCrm::Zoho(zoho),
            )
        }
        _ => {
            return Err(WorkerError::Refused(
                "two-way sync is available for HubSpot and Zoho sinks".into(),
            ));
        }
    };
    let params = connect_params(
        &cfg.source_url,
        "two-way sync",
        "export the variable named by source.url_env (or fix source.url_file)",
    )?;
    let store = Store::open(&params, &sink.name, &settings.inbound_table)
        .await
        .map_err(|e| WorkerError::from(engine::store_failed(e)))?;
    let problems = unfit(cfg, sink, settings, &store.key());
    if !problems.is_empty() {
        return Err(WorkerError::Refused(problems.join("\n")));
    }
    match lease {
        Lease::Require if !store.try_lease().await.map_err(state_failed)? => {
            return Err(WorkerError::Refused(format!(
                "a worker of two-way sink {} is running; stop it before replaying",
                sink.name
            )));
        }
        Lease::Require => {}
        Lease::Wait(shutdown) => {
            let mut announced = false;
            while !store.try_lease().await.map_err(state_failed)? {
                if !announced {
                    tracing::info!(sink = %sink.name,
                        "another worker of this two-way sink is active; standing by");
                    announced = true;
                }
                tokio::select! {
                    _ = shutdown.changed() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            if announced {
                tracing::info!(sink = %sink.name, "two-way lease taken over; active");
            }
        }
    }
    let inbox = Inbox::open(&params, &sink.name)
        .await
        .map_err(|e| WorkerError::from(engine::store_failed(e)))?;
    let audit = AuditTrail::open(
        &cfg.audit,
        cfg.audit_key_env.as_deref(),
        &cfg.brokers,
        &cfg.librdkafka,
    )?;
    // The inbound half dead-letters into the sink's topic from its first batch on.
    let dead_letter_topic = dead_letter_topic(cfg, &sink.name);
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        std::slice::from_ref(&dead_letter_topic),
        cfg.partitions,
        cfg.replication_factor,
    )
    .await?;
    let dead_letters = DeadLetters::new(
        dead_letter_topic,
        AckedProducer::new(&cfg.brokers, &cfg.librdkafka)?,
    );
    let context = Arc::new(Context {
        sink: sink.name.clone(),
        id_property: sink.id_property.clone().unwrap_or_default(),
        rules: sink.fields.clone(),
        schema,
        two_way: settings.clone(),
        store: tokio::sync::Mutex::new(store),
        inbox,
        audit,
        dead_letters,
        counters: engine::Counters::default(),
        status,
    });
    tracing::info!(sink = %sink.name, origin = %origin_name(&sink.name), "two-way sync ready");
    let destination = match &crm {
        InboundCrm::Hubspot(h) => {
            Destination::HubspotTwoWay(TwoWaySink::new(context.clone(), h.sibling()))
        }
        InboundCrm::Zoho(z) => {
            Destination::ZohoTwoWay(TwoWaySink::new(context.clone(), z.sibling()))
        }
    };
    Ok(Some(Prepared {
        destination,
        context,
        crm,
    }))
}

/// What in the sink's config does not fit its inbound table's key (each problem with its field
/// path): `id_property` must be mapped from the key column (it links rows and records), and
/// records created in the CRM can only be inserted when the key has a default.
pub(crate) fn unfit(
    cfg: &ValidConfig,
    sink: &ValidSink,
    settings: &TwoWay,
    key: &InboundKey,
) -> Vec<String> {
    let index = cfg.sinks.iter().position(|s| s.name == sink.name);
    let at = format!("sinks[{}]", index.unwrap_or_default());
    let table = &settings.inbound_table;
    let column = &key.column;
    let mut out = Vec::new();
    let id = sink.id_property.as_deref().unwrap_or_default();
    let from: Vec<&str> = sink
        .fields
        .iter()
        .filter(|f| f.property == id)
        .map(|f| f.column.as_str())
        .collect();
    if from != [column.as_str()] {
        out.push(format!(
            "{at}.fields: two-way sync links rows and records by id_property {id:?}, which must \
             be mapped from the primary key column {column:?} of {table} (mapped from: {from:?}); \
             map it as {column} = {id:?}"
        ));
    }
    if settings.on_crm_create == OnCrmCreate::Insert && !key.has_default {
        out.push(format!(
            "{at}.inbound.on_crm_create: records created in the CRM are inserted (\"insert\", the \
             default), but the key column {column:?} of {table} has no default (DEFAULT, \
             identity or serial); set on_crm_create = \"ignore\", or give the column a default \
             (ALTER TABLE {table} ALTER COLUMN {column} ADD GENERATED BY DEFAULT AS IDENTITY)"
        ));
    }
    out
}

/// Starts the inbound half of a prepared two-way sink under `tasks`: the receiver (listening
/// before this returns), the Zoho watch channel, the inbound worker and the reconciliation.
/// At the sink's first start its reconciliation cursors begin now (unless `initial_import`).
pub(crate) async fn start(
    ctx: Arc<Context>,
    crm: InboundCrm,
    tasks: &mut Supervisor<WorkerError>,
) -> Result<(), WorkerError> {
    ctx.inbox
        .ensure_cursors(
            CursorKind::in_use(&ctx.two_way),
            ctx.two_way.initial_import,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .map_err(state_failed)?;
    match crm {
        InboundCrm::Hubspot(hubspot) => {
            let secret = ctx
                .two_way
                .client_secret
                .as_ref()
                .ok_or_else(|| "not set".to_string())
                .and_then(|s| s.read())
                .map_err(|e| {
                    WorkerError::Refused(format!("sinks.inbound.client_secret_env: {e}"))
                })?;
            let receiver = Receiver::new(ctx.clone(), secret, hubspot.object());
            let router = webhook_router(receiver);
            serve_receiver(&ctx, router, tasks).await?;
            start_loops(ctx, hubspot, tasks);
        }
        InboundCrm::Zoho(zoho_sink) => {
            let notify_url = ctx.two_way.public_url.clone().ok_or_else(|| {
                WorkerError::Refused("sinks.inbound.public_url is needed for Zoho".into())
            })?;
            let channel = zoho::Channel::new(&ctx.sink, zoho_sink.module(), &notify_url);
            let token = channel.token.clone();
            let receiver = Receiver::new(ctx.clone(), token, zoho_sink.module());
            let router = zoho::notification_router(receiver);
            // The receiver listens before the channel exists, so no notification is refused.
            serve_receiver(&ctx, router, tasks).await?;
            let expiry = match zoho::watch_channel(&zoho_sink, &channel, true).await {
                Ok(e) => {
                    tracing::info!(sink = %ctx.sink, channel = channel.id,
                        notify_url = %notify_url, expiry = %e, "Zoho watch channel open");
                    Some(e)
                }
                Err(e @ SinkError::Fatal { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(sink = %ctx.sink, error = %e,
                        "Zoho watch channel not created yet; retrying in a minute");
                    None
                }
            };
            let keeper = zoho::keep_channel(
                ctx.sink.clone(),
                zoho_sink.sibling(),
                channel,
                expiry,
                tasks.stop_signal(),
            );
            tasks.spawn("zoho watch channel".into(), async move {
                keeper.await;
                Ok(())
            });
            start_loops(ctx, zoho_sink, tasks);
        }
    }
    Ok(())
}

/// Spawns the reconciliation (if configured) and the inbound worker under `tasks`.
fn start_loops<C: Crm + 'static>(ctx: Arc<Context>, crm: C, tasks: &mut Supervisor<WorkerError>) {
    if let Some(every) = ctx.two_way.reconcile_every {
        let reconcile = reconcile::run(ctx.clone(), crm.sibling(), every, tasks.stop_signal());
        tasks.spawn("reconcile".into(), async move { Ok(reconcile.await?) });
    }
    let inbound = inbound::inbound_worker(ctx, crm, tasks.stop_signal());
    tasks.spawn("inbound".into(), async move { Ok(inbound.await?) });
}

/// Binds the receiver's address now (a refusal when taken) and serves it under `tasks`
/// until the worker stops.
async fn serve_receiver(
    ctx: &Context,
    router: axum::Router,
    tasks: &mut Supervisor<WorkerError>,
) -> Result<(), WorkerError> {
    let listen = ctx.two_way.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| WorkerError::Refused(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(sink = %ctx.sink, listen = %listen, path = %ctx.two_way.webhook_path,
        "notification receiver listening");
    let mut stop = tasks.stop_signal();
    tasks.spawn("receiver".into(), async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| {
                SinkError::fatal(
                    format!("notification receiver on {listen} failed: {e}"),
                    "check sinks.inbound.listen and restart the worker",
                )
                .into()
            })
    });
    Ok(())
}
