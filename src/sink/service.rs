//! `driftless sink --name N`: builds one configured sink worker and runs it.
//!
//! Owns start-up of a worker: pick the sink from the config, read its secret, fetch the
//! destination schema and refuse (listing every problem) when the mapping does not fit it, make
//! sure the dead-letter topic exists, join the consumer group `driftless-sink-{name}`.

use tokio::sync::{mpsc, watch};

use super::audit::AuditTrail;
use super::batch::Batch;
use super::hubspot::HubspotSink;
use super::mapping::check_schema;
use super::oauth::Credentials;
use super::runner::{Outputs, RunnerConfig, RunnerError, Stats, run};
use super::webhook::WebhookSink;
use super::webhook_signature::Secret;
use super::zoho::ZohoSink;
use super::{Outcome, Sink, SinkError};
use crate::config::ValidConfig;
use crate::config::sinks::TwoWay;
use crate::config::sinks::{SinkKind, ValidSink};
use crate::error::{Classify, ErrorClass};
use crate::event::ChangeEvent;
use crate::kafka::{self, AckedProducer, GroupConsumer, KafkaFailure, ReplayFrom};
use crate::postgres::connect::ConnectParams;
use crate::sync::engine::{self as sync, TwoWaySink};
use crate::sync::hubspot::webhook_router;
use crate::sync::store::{Store, origin_name};
use crate::sync::zoho as zoho_sync;
use std::sync::Arc;

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Configuration or destination schema problems (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// The worker failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// Two-way sync could not start or stopped.
    #[error("two-way sync: {0}")]
    Sync(String),
}

impl Classify for ServiceError {
    fn class(&self) -> ErrorClass {
        match self {
            ServiceError::Refused(_) | ServiceError::Sync(_) => ErrorClass::Fatal,
            ServiceError::Runner(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ServiceError::Refused(_) | ServiceError::Sync(_) => None,
            ServiceError::Runner(e) => e.hint(),
        }
    }
}

/// The consumer group of a sink.
pub fn group_id(name: &str) -> String {
    format!("driftless-sink-{name}")
}

/// The dead-letter topic of a sink.
pub fn dead_letter_topic(cfg: &ValidConfig, name: &str) -> String {
    format!("{}.dlq.{name}", cfg.topic_prefix)
}

fn find<'a>(cfg: &'a ValidConfig, name: &str) -> Result<(usize, &'a ValidSink), ServiceError> {
    cfg.sinks
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
            ServiceError::Refused(format!(
                "no sink named {name:?} in the config (sinks: {})",
                names.join(", ")
            ))
        })
}

fn runner_config(cfg: &ValidConfig, sink: &ValidSink, topic: String) -> RunnerConfig {
    RunnerConfig {
        name: sink.name.clone(),
        topic,
        dead_letter_topic: dead_letter_topic(cfg, &sink.name),
        batch_max_events: sink.batch_max_events,
        batch_max_wait: std::time::Duration::from_millis(sink.batch_max_wait_ms),
        stop_at: None,
        schedule: sink.schedule.clone(),
        skip_origin: None,
    }
}

/// A configured destination.
pub enum Destination {
    /// HubSpot CRM v3.
    Hubspot(HubspotSink),
    /// Zoho CRM v8.
    Zoho(ZohoSink),
    /// Signed HTTP POSTs.
    Webhook(WebhookSink),
    /// HubSpot, both ways.
    TwoWay(TwoWaySink<HubspotSink>),
    /// Zoho, both ways.
    TwoWayZoho(TwoWaySink<ZohoSink>),
}

impl Sink for Destination {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        match self {
            Destination::Hubspot(s) => s.apply(batch).await,
            Destination::Zoho(s) => s.apply(batch).await,
            Destination::Webhook(s) => s.apply(batch).await,
            Destination::TwoWay(s) => s.apply(batch).await,
            Destination::TwoWayZoho(s) => s.apply(batch).await,
        }
    }
}

/// Builds the destination of a sink and checks its mapping against the live schema.
pub async fn destination(sink: &ValidSink, index: usize) -> Result<Destination, ServiceError> {
    let refused = |e: &dyn std::fmt::Display| ServiceError::Refused(e.to_string());
    let failed = |e: SinkError| ServiceError::Runner(e.into());
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
            let mut d = HubspotSink::new(sink, credentials()?).map_err(failed)?;
            let schema = d.fetch_schema().await.map_err(failed)?;
            d.use_schema(schema.clone());
            (Destination::Hubspot(d), schema)
        }
        SinkKind::Zoho { .. } => {
            let mut d = ZohoSink::new(sink, credentials()?).map_err(failed)?;
            let schema = d.fetch_schema().await.map_err(failed)?;
            (Destination::Zoho(d), schema)
        }
        SinkKind::Webhook { secret, .. } => {
            let secret = secret
                .read()
                .and_then(|s| Secret::parse(&s).map_err(|e| e.to_string()))
                .map_err(|e| refused(&format!("sinks[{index}].secret_env: {e}")))?;
            // A webhook has no schema to check the mapping against.
            return Ok(Destination::Webhook(
                WebhookSink::new(sink, secret).map_err(failed)?,
            ));
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
        return Err(ServiceError::Refused(format!(
            "the mapping does not fit the destination ({} problem(s)):\n{}",
            problems.len(),
            lines.join("\n")
        )));
    }
    Ok(destination)
}

/// Runs the sink named `name` until `shutdown` or a fatal error.
pub async fn run_named(
    cfg: &ValidConfig,
    name: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let (index, sink) = find(cfg, name)?;
    let mut runner_cfg = runner_config(
        cfg,
        sink,
        cfg.topic_for(&sink.table.schema, &sink.table.name),
    );
    let mut destination = destination(sink, index).await?;
    // A two-way sink also runs its inbound half; a fatal error there stops the worker too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let failure = Arc::new(std::sync::Mutex::new(None));
    if let Some(two_way) = &sink.two_way {
        let mut standby = shutdown.clone();
        let lease = Lease::Wait(&mut standby);
        let Some((wrapped, ctx, crm)) =
            two_way_destination(cfg, sink, two_way, destination, lease).await?
        else {
            // Stopped while standing by: nothing was applied.
            return Ok(Stats::default());
        };
        destination = wrapped;
        runner_cfg.skip_origin = Some(origin_name(&sink.name));
        match crm {
            InboundCrm::Hubspot(hubspot) => {
                start_inbound(
                    ctx,
                    hubspot,
                    stop_rx.clone(),
                    stop_tx.clone(),
                    failure.clone(),
                )
                .await?
            }
            InboundCrm::Zoho(zoho) => {
                start_inbound_zoho(ctx, zoho, stop_rx.clone(), stop_tx.clone(), failure.clone())
                    .await?
            }
        }
    }
    let mut outer = shutdown;
    let forward = stop_tx.clone();
    tokio::spawn(async move {
        while outer.changed().await.is_ok() {
            if *outer.borrow() {
                let _ = forward.send(true);
                break;
            }
        }
    });
    let shutdown = stop_rx;
    // The table's topic may not exist yet (a new table, or `driftless run` starting capture at
    // the same time): create it as capture would, or the subscription would wait for a
    // metadata refresh (minutes) before seeing it.
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        std::slice::from_ref(&runner_cfg.topic),
        cfg.partitions,
        cfg.replication_factor,
    )
    .await
    .map_err(|e| ServiceError::Runner(e.into()))?;
    let subscription = GroupConsumer::new(
        &cfg.brokers,
        &cfg.librdkafka,
        &group_id(name),
        &runner_cfg.topic,
    )
    .map_err(|e| ServiceError::Runner(e.into()))?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, group = %group_id(name),
        "sink worker started");
    let result = run_worker(cfg, &runner_cfg, &subscription, &mut destination, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(e) = failure.lock().expect("not poisoned").take() {
        return Err(ServiceError::Sync(e));
    }
    result
}

/// The CRM client of a two-way sink's inbound half.
enum InboundCrm {
    Hubspot(HubspotSink),
    Zoho(ZohoSink),
}

/// How a two-way sink gets its lease (one active worker per sink).
enum Lease<'a> {
    /// A worker: stand by until the lease is free (None from `two_way_destination` when
    /// shutdown came first).
    Wait(&'a mut watch::Receiver<bool>),
    /// A replay: refuse while a worker holds it.
    Require,
}

/// The pieces of a ready two-way sink.
type TwoWayParts = (Destination, Arc<sync::Context>, InboundCrm);

/// Wraps a HubSpot or Zoho destination for two-way sync (used by workers and replays alike: a
/// replay of a two-way sink compares with the current rows, so it never pushes stale values).
async fn two_way_destination(
    cfg: &ValidConfig,
    sink: &ValidSink,
    two_way: &TwoWay,
    destination: Destination,
    lease: Lease<'_>,
) -> Result<Option<TwoWayParts>, ServiceError> {
    let (schema, crm) = match destination {
        Destination::Hubspot(hubspot) => (
            hubspot.known_schema().cloned().unwrap_or_default(),
            InboundCrm::Hubspot(hubspot),
        ),
        Destination::Zoho(mut zoho) => {
            let schema = zoho
                .fetch_schema()
                .await
                .map_err(|e| ServiceError::Runner(e.into()))?;
            (schema, InboundCrm::Zoho(zoho))
        }
        _ => {
            return Err(ServiceError::Refused(
                "two-way sync is available for HubSpot and Zoho sinks".into(),
            ));
        }
    };
    let url = cfg.source_url.read().map_err(ServiceError::Sync)?;
    let params = ConnectParams::from_url(&url).map_err(|e| ServiceError::Sync(e.to_string()))?;
    let store = Store::open(&params, &sink.name, &two_way.inbound_table)
        .await
        .map_err(|e| ServiceError::Sync(e.to_string()))?;
    let leased = || async {
        store
            .try_lease()
            .await
            .map_err(|e| ServiceError::Sync(e.to_string()))
    };
    match lease {
        Lease::Require if !leased().await? => {
            return Err(ServiceError::Refused(format!(
                "a worker of two-way sink {} is running; stop it before replaying",
                sink.name
            )));
        }
        Lease::Require => {}
        Lease::Wait(shutdown) => {
            let mut announced = false;
            while !leased().await? {
                if !announced {
                    tracing::info!(sink = %sink.name,
                        "another worker of this two-way sink is active; standing by");
                    announced = true;
                }
                tokio::select! {
                    _ = shutdown.changed() => return Ok(None),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
            if announced {
                tracing::info!(sink = %sink.name, "two-way lease taken over; active");
            }
        }
    }
    let audit = AuditTrail::open(&cfg.audit, &cfg.brokers, &cfg.librdkafka)
        .map_err(|e| ServiceError::Runner(e.into()))?;
    let ctx = Arc::new(sync::Context {
        sink: sink.name.clone(),
        id_property: sink.id_property.clone().unwrap_or_default(),
        rules: sink.fields.clone(),
        schema,
        two_way: two_way.clone(),
        store: tokio::sync::Mutex::new(store),
        audit,
        counters: sync::Counters::default(),
    });
    tracing::info!(sink = %sink.name, origin = %origin_name(&sink.name), "two-way sync ready");
    let wrapped = match &crm {
        InboundCrm::Hubspot(h) => Destination::TwoWay(TwoWaySink::new(ctx.clone(), h.sibling())),
        InboundCrm::Zoho(z) => Destination::TwoWayZoho(TwoWaySink::new(ctx.clone(), z.sibling())),
    };
    Ok(Some((wrapped, ctx, crm)))
}

/// Starts the webhook receiver, the inbound worker and the reconciliation of a two-way sink.
/// A fatal error of the worker is stored in `failure` and stops the sink (`stop`).
async fn start_inbound(
    ctx: Arc<sync::Context>,
    hubspot: HubspotSink,
    shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(), ServiceError> {
    let secret = ctx
        .two_way
        .client_secret
        .as_ref()
        .ok_or_else(|| "not set".to_string())
        .and_then(|s| s.read())
        .map_err(|e| ServiceError::Refused(format!("sinks.inbound.client_secret_env: {e}")))?;
    let (queue_tx, queue_rx) = sync::queue();
    let router = webhook_router(ctx.clone(), secret, hubspot.object(), queue_tx.clone());
    serve_receiver(&ctx, router, shutdown.clone()).await?;
    spawn_engine(ctx, hubspot, (queue_tx, queue_rx), shutdown, stop, failure);
    Ok(())
}

/// Spawns the reconciliation loop (if configured) and the inbound worker of a two-way sink; a
/// fatal error of the worker is stored in `failure` and stops the sink (`stop`).
fn spawn_engine<C: sync::Crm + 'static>(
    ctx: Arc<sync::Context>,
    crm: C,
    (queue_tx, queue_rx): (mpsc::Sender<sync::Inbound>, mpsc::Receiver<sync::Inbound>),
    shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) {
    if let Some(every) = ctx.two_way.reconcile_every {
        tokio::spawn(sync::reconcile_loop(
            ctx.clone(),
            crm.sibling(),
            queue_tx,
            every,
            shutdown.clone(),
        ));
    }
    tokio::spawn(async move {
        let sink = ctx.sink.clone();
        if let Err(e) = sync::inbound_worker(ctx, crm, queue_rx, shutdown).await {
            tracing::error!(sink = %sink, error = %e, "inbound sync stopped");
            *failure.lock().expect("not poisoned") = Some(e.to_string());
            let _ = stop.send(true);
        }
    });
}

/// Serves the receiver until shutdown.
async fn serve_receiver(
    ctx: &sync::Context,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let two_way = &ctx.two_way;
    let listener = tokio::net::TcpListener::bind(two_way.listen)
        .await
        .map_err(|e| ServiceError::Refused(format!("cannot listen on {}: {e}", two_way.listen)))?;
    tracing::info!(sink = %ctx.sink, listen = %two_way.listen, path = %two_way.webhook_path,
        "notification receiver listening");
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "notification receiver failed");
        }
    });
    Ok(())
}

/// Starts the Zoho side of a two-way sink: the notification receiver, the watch channel (and
/// its renewal), the inbound worker and the reconciliation. A fatal error of the worker is
/// stored in `failure` and stops the sink (`stop`).
async fn start_inbound_zoho(
    ctx: Arc<sync::Context>,
    zoho: ZohoSink,
    shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(), ServiceError> {
    let notify_url = ctx.two_way.public_url.clone().ok_or_else(|| {
        ServiceError::Refused("sinks.inbound.public_url is needed for Zoho".into())
    })?;
    let channel = zoho_sync::Channel::new(&ctx.sink, zoho.module(), &notify_url);
    let (queue_tx, queue_rx) = sync::queue();
    let router = zoho_sync::notification_router(
        ctx.clone(),
        channel.token.clone(),
        zoho.module(),
        queue_tx.clone(),
    );
    // The receiver listens before the channel exists, so no notification is refused.
    serve_receiver(&ctx, router, shutdown.clone()).await?;
    let expiry = match zoho_sync::watch_channel(&zoho, &channel, true).await {
        Ok(e) => {
            tracing::info!(sink = %ctx.sink, channel = channel.id, notify_url = %notify_url,
                expiry = %e, "Zoho watch channel open");
            Some(e)
        }
        Err(e @ SinkError::Fatal { .. }) => return Err(ServiceError::Runner(e.into())),
        Err(e) => {
            tracing::warn!(sink = %ctx.sink, error = %e,
                "Zoho watch channel not created yet; retrying in a minute");
            None
        }
    };
    tokio::spawn(zoho_sync::keep_channel(
        ctx.sink.clone(),
        zoho.sibling(),
        channel,
        expiry,
        shutdown.clone(),
    ));
    spawn_engine(ctx, zoho, (queue_tx, queue_rx), shutdown, stop, failure);
    Ok(())
}

/// `driftless replay`: re-applies the sink's topic (or its dead letters) from `from` up to the
/// end offsets seen at start, in a consumer group of its own (`driftless-replay-{name}`), so
/// the running workers' offsets are untouched. Applying is idempotent (upserts by a unique
/// property), so a replay converges instead of duplicating.
pub async fn replay_named(
    cfg: &ValidConfig,
    name: &str,
    from: &ReplayFrom,
    dead_letters_only: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let (index, sink) = find(cfg, name)?;
    let topic = if dead_letters_only {
        dead_letter_topic(cfg, name)
    } else {
        cfg.topic_for(&sink.table.schema, &sink.table.name)
    };
    let mut runner_cfg = runner_config(cfg, sink, topic);
    let mut destination = destination(sink, index).await?;
    if let Some(two_way) = &sink.two_way {
        destination = two_way_destination(cfg, sink, two_way, destination, Lease::Require)
            .await?
            .expect("a replay never stands by")
            .0;
        runner_cfg.skip_origin = Some(origin_name(&sink.name));
    }
    let group = format!("driftless-replay-{name}");
    let (subscription, ends) = GroupConsumer::replay(
        &cfg.brokers,
        &cfg.librdkafka,
        &group,
        &runner_cfg.topic,
        from,
    )
    .map_err(|e| ServiceError::Runner(e.into()))?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, partitions = ends.len(),
        "replay started");
    runner_cfg.stop_at = Some(ends);
    // A replay applies what it reads now, whatever the sink's schedule.
    runner_cfg.schedule = None;
    run_worker(cfg, &runner_cfg, &subscription, &mut destination, shutdown).await
}

async fn run_worker(
    cfg: &ValidConfig,
    runner_cfg: &RunnerConfig,
    subscription: &GroupConsumer,
    destination: &mut Destination,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let kafka_failed = |e: KafkaFailure| ServiceError::Runner(e.into());
    let outputs = Outputs {
        dead_letters: AckedProducer::new(&cfg.brokers, &cfg.librdkafka).map_err(kafka_failed)?,
        audit: AuditTrail::open(&cfg.audit, &cfg.brokers, &cfg.librdkafka)
            .map_err(|e| ServiceError::Runner(e.into()))?,
    };
    let mut topics = vec![runner_cfg.dead_letter_topic.clone()];
    topics.extend(outputs.audit.topic().map(str::to_string));
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        &topics,
        cfg.partitions,
        cfg.replication_factor,
    )
    .await
    .map_err(kafka_failed)?;
    Ok(run(runner_cfg, subscription, &outputs, destination, shutdown).await?)
}
