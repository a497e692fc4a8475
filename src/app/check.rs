//! `driftless check`: the pure config validation plus a preflight against the live systems.
//!
//! Owns the list of problems shown to the operator, and the warnings that do not fail it (TLS
//! off or unverified on a Postgres URL; a failover slot without `synchronized_standby_slots`).
//! Invariant: it changes nothing (no publication, slot, topic, checkpoint or sync state is
//! created or altered) and reports every problem it finds: Postgres (settings, each privilege
//! capture lacks, a publication that differs from `source.tables`, tables, slot/checkpoint),
//! Kafka reachability, and per sink its credentials and destination schema (the mapping check
//! every worker also runs, once: a transient failure is reported, where a worker would retry
//! it) and, for two-way sinks, the grants inbound writes need and whether the inbound table's
//! key fits the sink (the refusals a worker would stop with at start).

use std::time::Duration;

use crate::capture::{CaptureError, inspect_source};
use crate::checkpoint::CheckpointStore;
use crate::config::ValidConfig;
use crate::config::sinks::ValidSink;
use crate::config::two_way::TwoWay;
use crate::error::{Classify, ErrorClass};
use crate::kafka;
use crate::postgres::catalog;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::sql::quote_table;
use crate::sink::ledger::store as ledger_store;
use crate::sync::store;

/// One preflight finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Which system: `postgres`, `kafka`, `state`, `sinks`.
    pub(crate) system: &'static str,
    /// What is wrong.
    pub(crate) message: String,
    /// What to do.
    pub(crate) hint: Option<String>,
}

fn finding(system: &'static str, e: &dyn std::fmt::Display, hint: Option<String>) -> Finding {
    Finding {
        system,
        message: e.to_string(),
        hint,
    }
}

/// What to do about a Postgres URL whose TLS does not protect against an on-path attacker.
const TLS_HINT: &str = "use sslmode=verify-full and sslrootcert=<file of the CA that signed the \
    server certificate> in the URL (see \"PostgreSQL setup\" in the README)";

/// Findings that do not stop `check`: each Postgres URL (source, and state when it differs)
/// whose TLS is off or does not verify the server certificate. A URL that cannot be read or
/// parsed is left to [`preflight`], which reports it.
fn tls_warnings(cfg: &ValidConfig) -> Vec<Finding> {
    let mut urls = vec![("source", &cfg.source_url)];
    if cfg.state_url != cfg.source_url {
        urls.push(("state", &cfg.state_url));
    }
    urls.into_iter()
        .filter_map(|(which, url)| {
            let params = ConnectParams::from_url(&url.read().ok()?).ok()?;
            let weakness = params.tls_weakness()?;
            Some(finding(
                "postgres",
                &format!("{which} URL: {weakness}"),
                Some(TLS_HINT.to_string()),
            ))
        })
        .collect()
}

/// What `check` found.
pub(crate) struct Preflight {
    /// What stops capture or a sink; none means ready to capture.
    pub(crate) problems: Vec<Finding>,
    /// What does not ([`tls_warnings`], and the source's `catalog::preflight_warnings`).
    pub(crate) warnings: Vec<Finding>,
}

/// Runs every check.
pub(crate) async fn preflight(cfg: &ValidConfig) -> Preflight {
    let mut warnings = tls_warnings(cfg);
    let mut out = Vec::new();
    match postgres_checks(cfg, &mut warnings).await {
        Ok(mut f) => out.append(&mut f),
        Err(e) => out.push(finding("postgres", &e, e.hint())),
    }
    if let Err(e) = kafka::probe(&cfg.brokers, &cfg.librdkafka, Duration::from_secs(10)).await {
        out.push(finding(
            "kafka",
            &format!("brokers {} unreachable: {e}", cfg.brokers),
            Some("check kafka.brokers and kafka.librdkafka security settings".into()),
        ));
    }
    for (index, sink) in cfg.sinks.iter().enumerate() {
        // One attempt: a worker retries a transient failure at start, `check` reports it.
        if let Err(e) = crate::app::destination::destination(cfg, sink, index).await {
            let hint = e.hint().or_else(|| {
                (e.class() == ErrorClass::Transient).then(|| {
                    format!(
                        "a transient failure, which a worker retries with backoff at start: \
                         check that the destination ({}, or its OAuth token endpoint) is up and \
                         reachable, then run check again",
                        sink.base_url
                    )
                })
            });
            out.push(finding("sinks", &format!("sink {}: {e}", sink.name), hint));
        }
    }
    Preflight {
        problems: out,
        warnings,
    }
}

/// Each two-way sink: the grants it needs to write inbound changes, and an inbound table that
/// fits it (a one-column primary key mapped to `id_property`, with a default when CRM records
/// are inserted; read from the catalog only, nothing is created).
async fn two_way_sinks(
    cfg: &ValidConfig,
    sql: &tokio_postgres::Client,
) -> Result<Vec<Finding>, CaptureError> {
    let mut out = Vec::new();
    for sink in &cfg.sinks {
        let Some(two_way) = &sink.two_way else {
            continue;
        };
        out.extend(two_way_grants(sql, sink, two_way).await?);
        match store::inbound_table(sql, &two_way.inbound_table).await {
            Ok((_, key)) => {
                for problem in super::two_way::unfit(cfg, sink, two_way, &key) {
                    out.push(finding(
                        "sinks",
                        &format!("sink {}: {problem}", sink.name),
                        None,
                    ));
                }
            }
            Err(store::StoreError::Pg(e)) => return Err(e.into()),
            Err(e) => out.push(finding("sinks", &format!("sink {}: {e}", sink.name), None)),
        }
    }
    Ok(out)
}

/// The grants one two-way sink lacks to write inbound changes (one finding at most).
async fn two_way_grants(
    sql: &tokio_postgres::Client,
    sink: &ValidSink,
    two_way: &TwoWay,
) -> Result<Option<Finding>, CaptureError> {
    let table = quote_table(&two_way.inbound_table);
    let deletes = two_way.on_crm_delete == crate::config::two_way::OnCrmDelete::Delete;
    let row = store::two_way_grants(sql, &table, deletes)
        .await
        .map_err(crate::postgres::error::PgError::Sql)?;
    let missing: Vec<&str> = [
        "EXECUTE on pg_replication_origin_session_setup(text)",
        "EXECUTE on pg_replication_origin_session_reset()",
        "EXECUTE on pg_replication_origin_create(text)",
        "SELECT, INSERT, UPDATE on the inbound table",
        "CREATE on the database (or on schema driftless)",
        "DELETE on the inbound table (on_crm_delete = \"delete\")",
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| !row[*i])
    .map(|(_, what)| what)
    .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    Ok(Some(finding(
        "postgres",
        &format!(
            "sink {}: two-way sync cannot write inbound changes: missing {}",
            sink.name,
            missing.join("; ")
        ),
        Some(format!(
            "as a superuser: GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), \
             pg_replication_origin_session_reset(), pg_replication_origin_create(text) TO <role>; \
             GRANT SELECT, INSERT, UPDATE{} ON {table} TO <role>; GRANT CREATE ON DATABASE <db> TO <role> \
             (or create schema driftless owned by <role>)",
            if deletes { ", DELETE" } else { "" }
        )),
    )))
}

/// The sink ledger of one-way CRM sinks: the state database's user can create or write it.
/// `source` is the connection to the source database, used when the ledgers live there.
async fn ledger_grants(
    cfg: &ValidConfig,
    source: &tokio_postgres::Client,
) -> Result<Vec<Finding>, CaptureError> {
    if !cfg.sinks.iter().any(|s| s.keeps_ledger()) {
        return Ok(Vec::new());
    }
    let own;
    let sql = if cfg.state_url == cfg.source_url {
        source
    } else {
        let url = cfg.state_url.read().map_err(CaptureError::Url)?;
        own = connect_sql(&ConnectParams::from_url(&url)?).await?;
        &own
    };
    if ledger_store::has_grants(sql)
        .await
        .map_err(crate::postgres::error::PgError::Sql)?
    {
        return Ok(Vec::new());
    }
    Ok(vec![finding(
        "postgres",
        &"the sink ledger (driftless.sink_ledger) can be neither created nor written by this user",
        Some(ledger_store::GRANTS_HINT.into()),
    )])
}

/// The Postgres problems; the source's warnings go to `warnings`.
async fn postgres_checks(
    cfg: &ValidConfig,
    warnings: &mut Vec<Finding>,
) -> Result<Vec<Finding>, CaptureError> {
    let url = cfg.source_url.read().map_err(CaptureError::Url)?;
    let params = ConnectParams::from_url(&url)?;
    let sql = connect_sql(&params).await?;
    let source = inspect_source(cfg, &sql).await?;
    let postgres = |(message, hint): (String, String)| finding("postgres", &message, Some(hint));
    warnings.extend(source.warnings.into_iter().map(postgres));
    let mut out: Vec<Finding> = source.problems.into_iter().map(postgres).collect();
    out.append(&mut two_way_sinks(cfg, &sql).await?);
    out.append(&mut ledger_grants(cfg, &sql).await?);
    let store = CheckpointStore::new(&cfg.state_dir, &cfg.slot);
    let checkpoint = store.load();
    let slot = catalog::slot_state(&sql, &cfg.slot).await?;
    match (&checkpoint, &slot) {
        (Err(e), _) => out.push(finding("state", e, None)),
        (Ok(Some(cp)), None) => out.push(finding(
            "postgres",
            &format!(
                "slot {} is missing but the checkpoint says it streamed to {}",
                cfg.slot, cp.flushed_lsn
            ),
            Some(format!(
                "remove {} to start over with a new snapshot",
                store.path().display()
            )),
        )),
        (Ok(None), Some(_)) => out.push(finding(
            "postgres",
            &format!("slot {} exists but there is no checkpoint for it", cfg.slot),
            Some("choose another source.slot, or drop the slot to start over".into()),
        )),
        (Ok(Some(cp)), Some(s)) => {
            if s.wal_status.as_deref() == Some("lost") {
                out.push(finding(
                    "postgres",
                    &format!("slot {} is invalidated", cfg.slot),
                    None,
                ));
            }
            if s.confirmed_flush_lsn.is_some_and(|c| c > cp.flushed_lsn) {
                out.push(finding(
                    "postgres",
                    &format!("slot {} is ahead of driftless's checkpoint", cfg.slot),
                    None,
                ));
            }
        }
        (Ok(None), None) => {}
    }
    Ok(out)
}
