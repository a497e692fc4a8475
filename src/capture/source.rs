//! The source as capture needs it, checked before anything is created: server settings, the
//! role's privileges and the publication (`postgres::access`), the captured tables' shape, and
//! their column lists and row filters (`postgres::filter`).
//!
//! Invariants: reads only (the publication is created or altered later, by
//! `access::ensure_publication`, and only when no problem was found); every problem is
//! collected, so `driftless check` lists them all and capture refuses with the same words.

use tokio_postgres::Client;

use super::CaptureError;
use crate::config::{SnapshotMode, ValidConfig};
use crate::postgres::SourceError;
use crate::postgres::access::{self, Problem};
use crate::postgres::catalog::{self, TableMeta};
use crate::postgres::filter;

/// What [`inspect_source`] found.
pub(crate) struct SourceReport {
    /// The database name.
    pub(crate) database: String,
    /// The captured tables' metadata (empty when a table is unfit).
    pub(crate) tables: Vec<TableMeta>,
    /// Every problem that stops capture, as `(message, hint)`.
    pub(crate) problems: Vec<Problem>,
    /// Findings that do not stop capture ([`catalog::preflight_warnings`]).
    pub(crate) warnings: Vec<Problem>,
}

/// Every problem of the source for this configuration (nothing is changed).
pub(crate) async fn inspect_source(
    cfg: &ValidConfig,
    sql: &Client,
) -> Result<SourceReport, CaptureError> {
    let facts = catalog::server_facts(sql).await?;
    let mut problems = catalog::preflight_problems(&facts, cfg.failover);
    let privileges = access::facts(sql, &cfg.publication, &cfg.tables, &cfg.table_filters).await?;
    problems.extend(access::problems(
        &privileges,
        &cfg.publication,
        cfg.manage_publication,
        cfg.snapshot == SnapshotMode::Initial,
    ));
    let mut tables = match catalog::tables(sql, &cfg.tables).await {
        Ok(tables) => tables,
        Err(SourceError::Refused { message, hint }) => {
            problems.push((message, hint));
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    problems.extend(filter::column_problems(
        facts.version_num,
        &tables,
        &cfg.table_filters,
    ));
    if facts.version_num >= 150_000 {
        problems.extend(filter::row_filter_problems(sql, &tables, &cfg.table_filters).await?);
    }
    filter::project(&mut tables, &cfg.table_filters);
    Ok(SourceReport {
        warnings: catalog::preflight_warnings(&facts, cfg.failover),
        database: facts.database,
        tables,
        problems,
    })
}

/// Refuses (listing every problem) unless the source is fit; returns the database name and
/// the tables' metadata.
pub(crate) async fn prepare_source(
    cfg: &ValidConfig,
    sql: &Client,
) -> Result<(String, Vec<TableMeta>), CaptureError> {
    let report = inspect_source(cfg, sql).await?;
    if !report.problems.is_empty() {
        return Err(access::refusal(report.problems).into());
    }
    Ok((report.database, report.tables))
}
