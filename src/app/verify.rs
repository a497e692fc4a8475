//! `driftless verify --name N [--repair]`: proves a CRM sink has no drift, or shows it.
//!
//! Owns the wiring: the table is read in one snapshot as capture would send it
//! ([`crate::capture::table`]), the sink's ledger and the destination's records are read, and
//! [`crate::sink::verify::compare`] finds what is missing, extra or differing; `--repair`
//! writes the corrections through the sink's own client and relinks the ledger. Output names
//! keys by hash and properties by name, never values. The exit code is 0 only when no drift
//! remains: none was found, or `--repair` repaired every finding.

use std::process::ExitCode;

use super::destination::{Destination, connect_params, destination};
use super::sink::{WorkerError, find};
use crate::capture::table;
use crate::config::ValidConfig;
use crate::postgres::connect::connect_sql;
use tokio::sync::watch;

use crate::config::schedule::Schedule;
use crate::error::{Classify, ErrorClass};
use crate::sink::audit::{self, AuditTrail};
use crate::sink::verify::{Finding, Report};
use crate::sink::{Outcome, SinkError};

/// Exit code of a verify that leaves drift behind.
pub(crate) const DRIFT: u8 = 4;

/// Compares sink `name`'s table, ledger and destination (and with `repair`, repairs what it
/// can): the report and what the destination did with the repairs.
async fn compare(
    cfg: &ValidConfig,
    name: &str,
    repair: bool,
    progress: bool,
) -> Result<(Report, Outcome), WorkerError> {
    let (index, sink) = find(cfg, name)?;
    if sink.two_way.is_some() {
        return Err(WorkerError::Refused(format!(
            "sink {name} syncs both ways: its reconciliation compares the two sides; verify \
             checks one-way HubSpot and Zoho sinks"
        )));
    }
    let mut destination = destination(cfg, sink, index).await?;
    let params = connect_params(
        &cfg.source_url,
        "verify",
        "export the variable named by source.url_env (or fix source.url_file)",
    )?;
    let client = connect_sql(&params)
        .await
        .map_err(|e| SinkError::transient(format!("verify cannot reach the source: {e}"), None))?;
    // A spinner on a terminal (indicatif draws nothing elsewhere), for the command only.
    let bar = if progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_message(format!("reading {}", sink.table));
    let mut rows = Vec::new();
    table::read(&client, &sink.table, &cfg.table_filters, |key, row| {
        rows.push((key, row));
        if rows.len() % 1000 == 0 {
            bar.set_message(format!("reading {}: {} rows", sink.table, rows.len()));
        }
    })
    .await
    .map_err(|e| SinkError::transient(format!("verify cannot read {}: {e}", sink.table), None))?;
    tracing::info!(sink = name, rows = rows.len(), "verify read the table");
    bar.set_message("comparing with the sink ledger and the destination's records");
    let verified = match &mut destination {
        Destination::Hubspot(s) => s.verify(rows, repair).await?,
        Destination::Zoho(s) => s.verify(rows, repair).await?,
        _ => {
            return Err(WorkerError::Refused(format!(
                "sink {name} is a webhook: it keeps no ledger and holds no records to compare"
            )));
        }
    };
    bar.finish_and_clear();
    let (report, repaired) = verified;
    if repair && !report.repairs.is_empty() {
        let run = format!("verify-{name}-{}", chrono::Utc::now().timestamp_millis());
        let trail = AuditTrail::open(
            &cfg.audit,
            cfg.audit_key_env.as_deref(),
            &cfg.brokers,
            &cfg.librdkafka,
        )?;
        if let Some(hasher) = trail.hasher() {
            let table = sink.table.to_string();
            let records = audit::repairs(hasher, name, &table, &report, &repaired, &run);
            trail.write(&records).await?;
        }
    }
    let left = remaining(&report, repair, &repaired);
    metrics::gauge!("driftless_sink_drift_records", "sink" => name.to_string()).set(left as f64);
    Ok((report, repaired))
}

/// Findings left after the run: all of them, or with `repair` those no repair removed.
fn remaining(report: &Report, repair: bool, repaired: &Outcome) -> usize {
    if !repair {
        return report.findings.len();
    }
    let unrepairable = report
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::Duplicate { .. }))
        .count();
    unrepairable + repaired.rejected.len()
}

/// Runs `driftless verify`; prints the report on stdout.
pub(crate) async fn run(
    cfg: &ValidConfig,
    name: &str,
    repair: bool,
) -> Result<ExitCode, WorkerError> {
    let (report, repaired) = compare(cfg, name, repair, true).await?;
    print(name, &report, repair, repaired.rejected.len());
    Ok(if remaining(&report, repair, &repaired) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DRIFT)
    })
}

/// A worker's `verify_every`: compares (never repairs) at each tick of `schedule`, sets
/// `driftless_sink_drift_records` and logs the counts, until `stop`. A transient failure is
/// logged and tried again at the next tick; a fatal one ends the worker.
pub(crate) async fn every(
    cfg: ValidConfig,
    name: String,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    loop {
        let wait = schedule.wait_from(chrono::Utc::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Ok(()),
        }
        match compare(&cfg, &name, false, false).await {
            Ok((report, _)) => {
                let (missing, extra, differing) = report.counts();
                tracing::info!(sink = %name, rows = report.rows, missing, extra, differing,
                    "verify done");
            }
            Err(e) if e.class() == ErrorClass::Transient => {
                tracing::warn!(sink = %name, error = %e, "verify failed; trying at the next tick");
            }
            Err(e) => return Err(e),
        }
    }
}

fn print(name: &str, report: &Report, repair: bool, refused: usize) {
    let (missing, extra, differing) = report.counts();
    println!(
        "verify {name}: rows={} missing={missing} extra={extra} differing={differing}",
        report.rows
    );
    for f in &report.findings {
        match f {
            Finding::Missing { key } => println!("  missing    row {key}"),
            Finding::Differing {
                key,
                record,
                fields,
            } => {
                println!(
                    "  differing  row {key} record {record}: {}",
                    fields.join(", ")
                )
            }
            Finding::Orphan { record, key } => {
                println!("  extra      record {record}: its row {key} was deleted")
            }
            Finding::Duplicate { record, key } => {
                println!(
                    "  extra      record {record}: unlinked, with the id_property of row {key}"
                )
            }
        }
    }
    if repair {
        println!(
            "repaired: {} of {} (refused: {refused})",
            report.repairs.len() - refused,
            report.repairs.len()
        );
    }
}
