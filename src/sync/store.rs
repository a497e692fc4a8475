//! Durable two-way sync state in Postgres, and origin-tagged inbound writes.
//!
//! Owns the `driftless` schema of the source database:
//! - `driftless.sync_ledger (sink, record_key, crm_id, fields)`: per record, the CRM id it is
//!   linked to (unique per sink: no record is ever linked twice, across restarts and replays)
//!   and, per property, the hash of the value both sides last agreed on;
//! - `driftless.sync_cursor (sink, modified_after, last_id)`: the reconciliation keyset (and,
//!   under `{sink}/deleted`, the time of the newest CRM deletion seen);
//!
//! Invariants:
//! - the cursors are created at the sink's first start, at that time ([`Store::ensure_cursors`]),
//!   unless `initial_import` is set: enabling two-way sync imports no existing CRM record
//!   unless asked;
//! - inbound row changes and their ledger update commit in one transaction, run under the
//!   replication origin `driftless_{sink}` (`pg_replication_origin_session_setup`), so the
//!   change events capture produces carry that origin and the same sink skips them (other sinks
//!   still receive them);
//! - the origin is held only for the transaction (`session_reset` after it);
//! - one worker per two-way sink is active: it holds the sink's advisory lock (the lease) for
//!   its lifetime, and other workers of the sink stand by until it is released;
//! - a CRM deletion deletes the row and its ledger row in one origin-tagged transaction, so
//!   its delete event is skipped by the same sink (no archive call goes back);
//! - two-way tables have a one-column primary key; `record_key` is its text form;
//! - values are written with `CAST($n::text AS <column type>)`; no value is logged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use crate::config::TableName;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::error::PgError;
use crate::postgres::sql::{quote_ident as quote, quote_table};

pub use crate::config::two_way::origin_name;

/// The key column of an inbound table, as Postgres describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InboundKey {
    /// The one primary-key column.
    pub(crate) column: String,
    /// Whether inserting a row without it gives it a value (`DEFAULT`, identity, serial).
    pub(crate) has_default: bool,
}

/// Reads an inbound table's columns (name → `format_type`) and its key, changing nothing;
/// `Unfit` unless the table has a one-column primary key.
pub(crate) async fn inbound_table(
    client: &Client,
    table: &TableName,
) -> Result<(BTreeMap<String, String>, InboundKey), StoreError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    coalesce(a.attnum = ANY(i.indkey), false),
                    a.atthasdef OR a.attidentity <> ''
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await?;
    let mut columns = BTreeMap::new();
    let mut keys = Vec::new();
    for r in &rows {
        let name: String = r.get(0);
        if r.get::<_, bool>(2) {
            keys.push(InboundKey {
                column: name.clone(),
                has_default: r.get(3),
            });
        }
        columns.insert(name, r.get(1));
    }
    if keys.len() != 1 {
        return Err(StoreError::Unfit(format!(
            "{table}: two-way sync needs a one-column primary key (found {})",
            keys.len()
        )));
    }
    Ok((columns, keys.remove(0)))
}

/// One record's ledger entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LedgerRow {
    /// Primary key, as text.
    pub(crate) key: String,
    /// Linked CRM record id.
    pub(crate) crm_id: Option<String>,
    /// Property → hash of the last agreed value.
    pub(crate) fields: BTreeMap<String, String>,
}

/// A row change coming from the CRM.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum InboundChange {
    /// Set columns of an existing row (`None` = NULL).
    Update {
        /// Primary key, as text.
        key: String,
        /// Column → text value.
        values: BTreeMap<String, Option<String>>,
    },
    /// A record created in the CRM: insert a row (key from the table's defaults).
    Insert {
        /// Column → text value.
        values: BTreeMap<String, Option<String>>,
    },
    /// A record deleted in the CRM: delete its linked row and forget its ledger row (in the
    /// same transaction).
    Delete {
        /// Primary key, as text.
        key: String,
    },
}

/// Which reconciliation cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CursorKind {
    /// Records modified since.
    Modified,
    /// Records deleted since (`on_crm_delete = "delete"`).
    Deleted,
}

/// Errors of the store (transient unless the table does not fit two-way sync).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Postgres.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The table cannot be synced both ways.
    #[error("{0}")]
    Unfit(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Pg(PgError::Sql(e))
    }
}

/// The state of one two-way sink.
pub(crate) struct Store {
    client: Client,
    sink: String,
    origin: String,
    table_sql: String,
    /// Column → `format_type` of the inbound table.
    columns: BTreeMap<String, String>,
    key_column: String,
    key_has_default: bool,
}

impl Store {
    /// Connects, creates the state tables and the replication origin if missing, and reads the
    /// inbound table's columns and key.
    pub(crate) async fn open(
        params: &ConnectParams,
        sink: &str,
        table: &TableName,
    ) -> Result<Self, StoreError> {
        let client = connect_sql(params).await?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS driftless;
                 CREATE TABLE IF NOT EXISTS driftless.sync_ledger (
                     sink text NOT NULL, record_key text NOT NULL, crm_id text,
                     fields jsonb NOT NULL DEFAULT '{}',
                     updated_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (sink, record_key));
                 CREATE UNIQUE INDEX IF NOT EXISTS sync_ledger_crm_id
                     ON driftless.sync_ledger (sink, crm_id) WHERE crm_id IS NOT NULL;
                 CREATE TABLE IF NOT EXISTS driftless.sync_cursor (
                     sink text PRIMARY KEY, modified_after_ms bigint NOT NULL,
                     last_id text NOT NULL DEFAULT '');",
            )
            .await?;
        let origin = origin_name(sink);
        client
            .execute(
                "SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
                &[&origin],
            )
            .await?;
        let table_sql = quote_table(table);
        let (columns, key) = inbound_table(&client, table).await?;
        Ok(Store {
            client,
            sink: sink.to_string(),
            origin,
            table_sql,
            columns,
            key_column: key.column,
            key_has_default: key.has_default,
        })
    }

    /// The inbound table's key column.
    pub(crate) fn key(&self) -> InboundKey {
        InboundKey {
            column: self.key_column.clone(),
            has_default: self.key_has_default,
        }
    }

    /// Takes the sink's two-way lease if free: a session-level advisory lock held by this
    /// store's connection until the process ends (or crashes: Postgres releases it with the
    /// connection). One worker per two-way sink holds it; others stand by.
    pub(crate) async fn try_lease(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('driftless.sync:' || $1, 0))",
                &[&self.sink],
            )
            .await?;
        Ok(row.get(0))
    }

    fn ledger_rows(rows: &[tokio_postgres::Row]) -> Vec<LedgerRow> {
        rows.iter()
            .map(|r| {
                let fields: Value = r.get(2);
                LedgerRow {
                    key: r.get(0),
                    crm_id: r.get(1),
                    fields: fields
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect(),
                }
            })
            .collect()
    }

    /// Ledger rows whose `column` (a fixed column name: `record_key` or `crm_id`) is one of
    /// `values`.
    async fn ledger_where(
        &self,
        column: &'static str,
        values: &[String],
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let sql = format!(
            "SELECT record_key, crm_id, fields FROM driftless.sync_ledger
             WHERE sink = $1 AND {column} = ANY($2)"
        );
        let rows = self.client.query(&sql, &[&self.sink, &values]).await?;
        Ok(Self::ledger_rows(&rows))
    }

    /// Ledger rows of these record keys.
    pub(crate) async fn ledger_by_keys(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerRow>, StoreError> {
        let rows = self.ledger_where("record_key", keys).await?;
        Ok(rows.into_iter().map(|l| (l.key.clone(), l)).collect())
    }

    /// Ledger rows of these CRM ids, by CRM id.
    pub(crate) async fn ledger_by_crm_ids(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, LedgerRow>, StoreError> {
        let rows = self.ledger_where("crm_id", ids).await?;
        Ok(rows
            .into_iter()
            .filter_map(|l| Some((l.crm_id.clone()?, l)))
            .collect())
    }

    /// Current rows (column → JSON value) of these keys.
    pub(crate) async fn rows(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, serde_json::Map<String, Value>>, StoreError> {
        let sql = format!(
            "SELECT {k}::text, to_jsonb(t) FROM {} t WHERE {k}::text = ANY($1)",
            self.table_sql,
            k = quote(&self.key_column)
        );
        let rows = self.client.query(&sql, &[&keys]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let v: Value = r.get(1);
                Some((r.get(0), v.as_object()?.clone()))
            })
            .collect())
    }

    /// Records what both sides agree on (merging `fields` into the stored ones).
    pub(crate) async fn save_ledger(&mut self, rows: &[LedgerRow]) -> Result<(), StoreError> {
        let tx = self.client.transaction().await?;
        save_ledger_in(&tx, &self.sink, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets records (deleted at the source).
    pub(crate) async fn forget(&self, keys: &[String]) -> Result<(), StoreError> {
        self.client
            .execute(
                "DELETE FROM driftless.sync_ledger WHERE sink = $1 AND record_key = ANY($2)",
                &[&self.sink, &keys],
            )
            .await?;
        Ok(())
    }

    /// Applies inbound changes and their ledger rows in one origin-tagged transaction. Returns,
    /// per change, the key of the row written (inserts: the new key).
    pub(crate) async fn write_inbound(
        &mut self,
        changes: &[InboundChange],
        ledger: &[LedgerRow],
    ) -> Result<Vec<String>, StoreError> {
        // The origin can be held by one session at a time: another worker of this sink may
        // hold it for its own transaction; wait for it.
        let mut wait = Duration::from_millis(20);
        loop {
            match self
                .client
                .execute(
                    "SELECT pg_replication_origin_session_setup($1)",
                    &[&self.origin],
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let result = self.write_tagged(changes, ledger).await;
        let reset = self
            .client
            .execute("SELECT pg_replication_origin_session_reset()", &[])
            .await;
        let keys = result?;
        reset?;
        Ok(keys)
    }

    async fn write_tagged(
        &mut self,
        changes: &[InboundChange],
        ledger: &[LedgerRow],
    ) -> Result<Vec<String>, StoreError> {
        let key = quote(&self.key_column);
        let mut statements = Vec::new();
        let mut forgotten = Vec::new();
        for change in changes {
            let (values, update_key) = match change {
                InboundChange::Update { key, values } => (values, Some(key)),
                InboundChange::Insert { values } => (values, None),
                InboundChange::Delete { key: k } => {
                    forgotten.push(k.clone());
                    statements.push((
                        format!(
                            "DELETE FROM {} WHERE {key}::text = $1 RETURNING {key}::text",
                            self.table_sql
                        ),
                        vec![Some(k.clone())],
                    ));
                    continue;
                }
            };
            let mut params: Vec<Option<String>> = Vec::new();
            let mut sets = Vec::new();
            for (column, value) in values {
                let Some(ty) = self.columns.get(column) else {
                    continue;
                };
                params.push(value.clone());
                sets.push((
                    quote(column),
                    format!("CAST(${}::text AS {ty})", params.len()),
                ));
            }
            let sql = match update_key {
                Some(k) if !sets.is_empty() => {
                    params.push(Some(k.clone()));
                    let assignments: Vec<String> =
                        sets.iter().map(|(c, v)| format!("{c} = {v}")).collect();
                    format!(
                        "UPDATE {} SET {} WHERE {key}::text = ${} RETURNING {key}::text",
                        self.table_sql,
                        assignments.join(", "),
                        params.len()
                    )
                }
                Some(k) => {
                    params.push(Some(k.clone()));
                    format!("SELECT ${}::text", params.len())
                }
                None => {
                    let (cols, vals): (Vec<String>, Vec<String>) = sets.into_iter().unzip();
                    format!(
                        "INSERT INTO {} ({}) VALUES ({}) RETURNING {key}::text",
                        self.table_sql,
                        cols.join(", "),
                        vals.join(", ")
                    )
                }
            };
            statements.push((sql, params));
        }
        let tx = self.client.transaction().await?;
        let mut keys = Vec::new();
        for (sql, params) in &statements {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let row = tx.query_opt(sql.as_str(), &refs).await?;
            keys.push(row.map(|r| r.get::<_, String>(0)).unwrap_or_default());
        }
        // Inserted rows get their key now: link their ledger rows to it.
        let mut rows = ledger.to_vec();
        for (row, (change, key)) in rows.iter_mut().zip(changes.iter().zip(&keys)) {
            if matches!(change, InboundChange::Insert { .. }) {
                row.key = key.clone();
            }
        }
        rows.retain(|r| !r.key.is_empty());
        save_ledger_in(&tx, &self.sink, &rows).await?;
        if !forgotten.is_empty() {
            tx.execute(
                "DELETE FROM driftless.sync_ledger WHERE sink = $1 AND record_key = ANY($2)",
                &[&self.sink, &forgotten],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(keys)
    }

    /// The row of `sync_cursor` holding a cursor: the sink's name for modifications,
    /// `{sink}/deleted` for deletions (`/` never occurs in sink names).
    fn cursor_row(&self, kind: CursorKind) -> String {
        match kind {
            CursorKind::Modified => self.sink.clone(),
            CursorKind::Deleted => format!("{}/deleted", self.sink),
        }
    }

    /// A reconciliation cursor: (modified or deleted after, in epoch ms; last id at that time).
    pub(crate) async fn cursor(
        &self,
        kind: CursorKind,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT modified_after_ms, last_id FROM driftless.sync_cursor WHERE sink = $1",
                &[&self.cursor_row(kind)],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Moves a reconciliation cursor.
    pub(crate) async fn save_cursor(
        &self,
        kind: CursorKind,
        modified_after_ms: i64,
        last_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO driftless.sync_cursor (sink, modified_after_ms, last_id)
                 VALUES ($1, $2, $3) ON CONFLICT (sink) DO UPDATE
                 SET modified_after_ms = excluded.modified_after_ms, last_id = excluded.last_id",
                &[&self.cursor_row(kind), &modified_after_ms, &last_id],
            )
            .await?;
        Ok(())
    }

    /// At a sink's first start, creates the missing cursors of `kinds` at `now_ms`, so
    /// reconciliation begins with the records changed from then on; with `initial_import`
    /// leaves them missing, so the first pass reads every record. Existing cursors are kept.
    pub(crate) async fn ensure_cursors(
        &self,
        kinds: &[CursorKind],
        initial_import: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if initial_import {
            return Ok(());
        }
        for kind in kinds {
            self.client
                .execute(
                    "INSERT INTO driftless.sync_cursor (sink, modified_after_ms, last_id)
                     VALUES ($1, $2, '') ON CONFLICT (sink) DO NOTHING",
                    &[&self.cursor_row(*kind), &now_ms],
                )
                .await?;
        }
        Ok(())
    }
}

async fn save_ledger_in(
    tx: &tokio_postgres::Transaction<'_>,
    sink: &str,
    rows: &[LedgerRow],
) -> Result<(), StoreError> {
    for r in rows {
        let fields = serde_json::to_value(&r.fields).expect("a map of strings serializes");
        tx.execute(
            "INSERT INTO driftless.sync_ledger (sink, record_key, crm_id, fields)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (sink, record_key) DO UPDATE
             SET crm_id = coalesce(excluded.crm_id, sync_ledger.crm_id),
                 fields = sync_ledger.fields || excluded.fields, updated_at = now()",
            &[&sink, &r.key, &r.crm_id, &fields],
        )
        .await?;
    }
    Ok(())
}
/// The grants two-way sync needs to write inbound changes (origin-tagged) and its state (one
/// privilege per call: `has_*_privilege` with a list is true when *any* is held); `$2`: whether
/// rows are deleted too (`on_crm_delete = "delete"`).
const TWO_WAY_GRANTS: &str = "
    SELECT has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE'),
           has_function_privilege('pg_replication_origin_session_reset()', 'EXECUTE'),
           has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE'),
           has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT')
               AND has_table_privilege($1, 'UPDATE'),
           coalesce((SELECT has_schema_privilege(oid, 'CREATE')
                            AND has_schema_privilege(oid, 'USAGE')
                     FROM pg_namespace WHERE nspname = 'driftless'),
                    has_database_privilege(current_database(), 'CREATE')),
           NOT $2 OR has_table_privilege($1, 'DELETE')";

/// Which of the grants two-way sync needs are held, in [`TWO_WAY_GRANTS`]' column order;
/// `table` is the quoted inbound table.
pub(crate) async fn two_way_grants(
    sql: &Client,
    table: &str,
    deletes: bool,
) -> Result<[bool; 6], tokio_postgres::Error> {
    let row = sql.query_one(TWO_WAY_GRANTS, &[&table, &deletes]).await?;
    Ok(std::array::from_fn(|i| row.get::<_, bool>(i)))
}
