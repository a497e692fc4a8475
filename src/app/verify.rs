//! `driftless verify --name N [--repair]`: proves a CRM sink has no drift, or shows it.
//!
//! Owns the wiring: the table is read in one snapshot as capture would send it
//! ([`crate::capture::table`]), the sink's ledger and the destination's records are read, and
//! [`crate::sink::verify::compare`] finds what is missing, extra or differing; `--repair`
//! writes the corrections through the sink's own client and relinks the ledger. Output names
//! keys by hash and properties by name, never values. The exit code is 0 only when no drift
//! remains: none was found, or `--repair` repaired every finding.

use std::process::ExitCode;

use super::destination::{Destination, destination};
use super::sink::{WorkerError, find};
use crate::capture::table;
use crate::config::ValidConfig;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::sink::SinkError;
use crate::sink::audit::{self, AuditTrail};
use crate::sink::verify::{Finding, Report};

/// Exit code of a verify that leaves drift behind.
pub(crate) const DRIFT: u8 = 4;

/// Runs `driftless verify`; prints the report on stdout.
pub(crate) async fn run(
    cfg: &ValidConfig,
    name: &str,
    repair: bool,
) -> Result<ExitCode, WorkerError> {
    let (index, sink) = find(cfg, name)?;
    if sink.two_way.is_some() {
        return Err(WorkerError::Refused(format!(
            "sink {name} syncs both ways: its reconciliation compares the two sides; verify \
             checks one-way HubSpot and Zoho sinks"
        )));
    }
    let mut destination = destination(cfg, sink, index).await?;
    let url = cfg.source_url.read().map_err(|e| {
        SinkError::fatal(
            format!("verify cannot use the source URL: {e}"),
            "export the variable named by source.url_env",
        )
    })?;
    let params = ConnectParams::from_url(&url)
        .map_err(|e| SinkError::fatal(e.to_string(), "fix the source URL"))?;
    let client = connect_sql(&params)
        .await
        .map_err(|e| SinkError::transient(format!("verify cannot reach the source: {e}"), None))?;
    // A spinner on a terminal (indicatif draws nothing elsewhere).
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_message(format!("reading {}", sink.table));
    let mut rows = Vec::new();
    table::read(&client, &sink.table, |key, row| {
        rows.push((key, row));
        if rows.len() % 1000 == 0 {
            bar.set_message(format!("reading {}: {} rows", sink.table, rows.len()));
        }
    })
    .await
    .map_err(|e| SinkError::transient(format!("verify cannot read {}: {e}", sink.table), None))?;
    eprintln!("verify {name}: {} rows of {} read", rows.len(), sink.table);
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
    let refused = repaired.rejected.len();
    if repair && !report.repairs.is_empty() {
        let run = format!("verify-{name}-{}", chrono::Utc::now().timestamp_millis());
        let records = audit::repairs(name, &sink.table.to_string(), &report, &repaired, &run);
        AuditTrail::open(&cfg.audit, &cfg.brokers, &cfg.librdkafka)?
            .write(&records)
            .await?;
    }
    print(name, &report, repair, refused);
    let left = if repair {
        let unrepairable = report
            .findings
            .iter()
            .filter(|f| matches!(f, Finding::Duplicate { .. }))
            .count();
        unrepairable + refused
    } else {
        report.findings.len()
    };
    metrics::gauge!("driftless_sink_drift_records", "sink" => name.to_string()).set(left as f64);
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DRIFT)
    })
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
