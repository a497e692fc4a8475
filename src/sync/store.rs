//! Durable two-way sync state in Postgres, and origin-tagged inbound writes.
//!
//! Owns the `driftless` schema of the source database:
//! - `driftless.sync_ledger (sink, record_key, crm_id, fields, link_pending)`: per record, the
//!   CRM id it is linked to (unique per sink: no record is ever linked twice, across restarts
//!   and replays), per property the hash of the value both sides last agreed on, and whether
//!   the CRM has yet to confirm the id property set on a record created there (the link);
//!
//! (The reconciliation cursors and the inbox are in [`super::inbox`].)
//!
//! Invariants:
//! - inbound row changes and their ledger update commit in one transaction, run under the
//!   replication origin `driftless_{sink}` (`pg_replication_origin_session_setup`), so the
//!   change events capture produces carry that origin and the same sink skips them (other sinks
//!   still receive them);
//! - each change and its ledger row run under a savepoint: a change Postgres refuses for its
//!   values (SQLSTATE classes 22 and 23) is rolled back alone and reported as
//!   [`Written::Refused`] (SQLSTATE, column and constraint, never the value) while the others
//!   commit; any other error rolls back the whole transaction;
//! - the origin is held only for the transaction (`session_reset` after it);
//! - one worker per two-way sink is active: it holds the sink's advisory lock (the lease) for
//!   its lifetime, and other workers of the sink stand by until it is released;
//! - a CRM deletion deletes the row and its ledger row in one origin-tagged transaction, so
//!   its delete event is skipped by the same sink (no archive call goes back);
//! - two-way tables have a one-column primary key; `record_key` is its text form;
//! - values are written with `CAST($n::text AS <column type>)`; no value is logged;
//! - current rows are read as capture renders them (each column's text through capture's
//!   converter), so a row and the change event that wrote it compare equal.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use crate::capture::value::text_to_json;
use crate::config::TableName;
use crate::error::{Classify, ErrorClass};
use crate::pgtype::PgType;
use crate::postgres::SourceError;
use crate::postgres::catalog::resolve_type;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::ddl;
use crate::postgres::error::{PgError, row_write_class};
use crate::postgres::sql::{quote_ident as quote, quote_literal, quote_table};

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
               AND a.attgenerated = ''
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

/// The inbound table's columns in table order, each with the converter type capture uses for
/// it (domains by their base type, enums as text: [`resolve_type`]).
async fn column_types(
    client: &Client,
    table: &TableName,
) -> Result<Vec<(String, PgType)>, StoreError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = ''
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await?;
    let mut types = Vec::with_capacity(rows.len());
    for r in &rows {
        let ty = match resolve_type(client, r.get(1)).await {
            Ok(ty) => ty,
            Err(SourceError::Pg(e)) => return Err(StoreError::Pg(e)),
            Err(e) => return Err(StoreError::Unfit(e.to_string())),
        };
        types.push((r.get(0), ty));
    }
    Ok(types)
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

/// What became of one inbound change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written: the key of the row (inserts: the new key; empty: no such row).
    Applied(String),
    /// Refused by Postgres for this record's values; rolled back alone, its ledger row unwritten.
    Refused(Refusal),
}

/// Why Postgres refused one record: what the server names, never the message or the detail
/// (both may quote the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// SQLSTATE (class 22 or 23).
    pub(crate) sqlstate: String,
    /// The column, when Postgres names it (e.g. a NOT NULL violation).
    pub(crate) column: Option<String>,
    /// The constraint or index, when Postgres names it (e.g. a unique violation).
    pub(crate) constraint: Option<String>,
}

impl Refusal {
    fn of(e: &PgError) -> Self {
        let db = match e {
            PgError::Sql(e) => e.as_db_error(),
            _ => None,
        };
        Refusal {
            sqlstate: e.code().unwrap_or_default().to_string(),
            column: db.and_then(|d| d.column()).map(str::to_string),
            constraint: db.and_then(|d| d.constraint()).map(str::to_string),
        }
    }
}

/// Errors of the store, classified once here ([`Classify`]): a table unfit for two-way sync
/// and Postgres errors that are not transient (missing grants, a table that changed) are fatal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Postgres.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Postgres refused an inbound write for a reason that is not the record's.
    #[error("{target}: {source}")]
    Write {
        /// What was written (`UPDATE on "public"."contacts"`).
        target: String,
        /// The error.
        source: PgError,
    },
    /// The table cannot be synced both ways.
    #[error("{0}")]
    Unfit(String),
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Pg(e) | StoreError::Write { source: e, .. } => e.class(),
            StoreError::Unfit(_) => ErrorClass::Fatal,
        }
    }

    fn hint(&self) -> Option<String> {
        let e = match self {
            StoreError::Pg(e) | StoreError::Write { source: e, .. } => e,
            StoreError::Unfit(_) => {
                return Some("two-way sync needs a table with a one-column primary key".into());
            }
        };
        match e.code() {
            Some("42501") => Some(
                "the user of source.url lacks a privilege two-way sync needs: grant it SELECT, \
                 INSERT and UPDATE (and DELETE with on_crm_delete = \"delete\") on the inbound \
                 table, and EXECUTE on pg_replication_origin_session_setup and \
                 pg_replication_origin_session_reset; `driftless check` lists what is missing"
                    .into(),
            ),
            Some(code) if code.starts_with("42") => Some(
                "the inbound table changed under the sink (a mapped column, its type or the \
                 table itself is gone): fix the table or the sink's fields, then restart"
                    .into(),
            ),
            _ => e.hint(),
        }
    }
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
    /// The columns in table order, each with how capture converts its text ([`Store::rows`]).
    types: Vec<(String, PgType)>,
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
        let origin = origin_name(sink);
        ddl::create_if_missing(
            &client,
            &format!(
                "CREATE SCHEMA IF NOT EXISTS driftless;
                 CREATE TABLE IF NOT EXISTS driftless.sync_ledger (
                     sink text NOT NULL, record_key text NOT NULL, crm_id text,
                     fields jsonb NOT NULL DEFAULT '{{}}',
                     updated_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (sink, record_key));
                 ALTER TABLE driftless.sync_ledger
                     ADD COLUMN IF NOT EXISTS link_pending boolean NOT NULL DEFAULT false;
                 CREATE UNIQUE INDEX IF NOT EXISTS sync_ledger_crm_id
                     ON driftless.sync_ledger (sink, crm_id) WHERE crm_id IS NOT NULL;
                 SELECT pg_replication_origin_create({o})
                     WHERE pg_replication_origin_oid({o}) IS NULL",
                o = quote_literal(&origin)
            ),
        )
        .await?;
        let table_sql = quote_table(table);
        let (columns, key) = inbound_table(&client, table).await?;
        let types = column_types(&client, table).await?;
        Ok(Store {
            client,
            sink: sink.to_string(),
            origin,
            table_sql,
            columns,
            types,
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

    /// Current rows (column → JSON value) of these keys, each value converted from its text as
    /// capture converts it ([`text_to_json`]), so a current row compares equal to the change
    /// event that wrote it (`to_jsonb` renders `bytea`, timestamps and `numeric` otherwise).
    pub(crate) async fn rows(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, serde_json::Map<String, Value>>, StoreError> {
        let texts: Vec<String> = self
            .types
            .iter()
            .map(|(c, _)| format!("{}::text", quote(c)))
            .collect();
        let sql = format!(
            "SELECT {k}::text, ARRAY[{}]::text[] FROM {} t WHERE {k}::text = ANY($1)",
            texts.join(", "),
            self.table_sql,
            k = quote(&self.key_column)
        );
        let rows = self.client.query(&sql, &[&keys]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let values: Vec<Option<String>> = r.get(1);
                let row = self
                    .types
                    .iter()
                    .zip(values)
                    .map(|((c, ty), v)| {
                        let v = v.map_or(Value::Null, |text| text_to_json(ty, &text));
                        (c.clone(), v)
                    })
                    .collect();
                (r.get(0), row)
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

    /// Records what both sides agree on for records created in the CRM, and marks their links
    /// pending until [`Store::confirm_links`].
    pub(crate) async fn save_pending_links(
        &mut self,
        rows: &[LedgerRow],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let tx = self.client.transaction().await?;
        save_ledger_in(&tx, &self.sink, rows).await?;
        tx.execute(
            "UPDATE driftless.sync_ledger SET link_pending = true
             WHERE sink = $1 AND record_key = ANY($2)",
            &[&self.sink, &keys],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Links the CRM has yet to confirm, as (CRM id, record key): of these keys, or (None) the
    /// first `limit` of the sink.
    pub(crate) async fn pending_links(
        &self,
        keys: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT crm_id, record_key FROM driftless.sync_ledger
                 WHERE sink = $1 AND link_pending AND crm_id IS NOT NULL
                   AND ($2::text[] IS NULL OR record_key = ANY($2))
                 ORDER BY record_key LIMIT $3",
                &[&self.sink, &keys, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Marks the links of these CRM ids confirmed.
    pub(crate) async fn confirm_links(&self, crm_ids: &[String]) -> Result<(), StoreError> {
        if crm_ids.is_empty() {
            return Ok(());
        }
        self.client
            .execute(
                "UPDATE driftless.sync_ledger SET link_pending = false
                 WHERE sink = $1 AND crm_id = ANY($2)",
                &[&self.sink, &crm_ids],
            )
            .await?;
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

    /// Applies inbound changes and their ledger rows in one origin-tagged transaction. Returns
    /// what became of each change: written (with the key of the row: inserts, the new key), or
    /// refused by Postgres for its values and rolled back alone.
    pub(crate) async fn write_inbound(
        &mut self,
        changes: &[InboundChange],
        ledger: &[LedgerRow],
    ) -> Result<Vec<Written>, StoreError> {
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

    /// The statement of each change: (what it does, SQL, text parameters).
    fn statements(&self, changes: &[InboundChange]) -> Vec<(&'static str, String, Params)> {
        let key = quote(&self.key_column);
        let mut statements = Vec::new();
        for change in changes {
            let (values, update_key) = match change {
                InboundChange::Update { key, values } => (values, Some(key)),
                InboundChange::Insert { values } => (values, None),
                InboundChange::Delete { key: k } => {
                    statements.push((
                        "DELETE",
                        format!(
                            "DELETE FROM {} WHERE {key}::text = $1 RETURNING {key}::text",
                            self.table_sql
                        ),
                        vec![Some(k.clone())],
                    ));
                    continue;
                }
            };
            let mut params: Params = Vec::new();
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
            let (op, sql) = match update_key {
                Some(k) if !sets.is_empty() => {
                    params.push(Some(k.clone()));
                    let assignments: Vec<String> =
                        sets.iter().map(|(c, v)| format!("{c} = {v}")).collect();
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {key}::text = ${} RETURNING {key}::text",
                        self.table_sql,
                        assignments.join(", "),
                        params.len()
                    );
                    ("UPDATE", sql)
                }
                Some(k) => {
                    params.push(Some(k.clone()));
                    ("SELECT", format!("SELECT ${}::text", params.len()))
                }
                None => {
                    let (cols, vals): (Vec<String>, Vec<String>) = sets.into_iter().unzip();
                    let sql = format!(
                        "INSERT INTO {} ({}) VALUES ({}) RETURNING {key}::text",
                        self.table_sql,
                        cols.join(", "),
                        vals.join(", ")
                    );
                    ("INSERT", sql)
                }
            };
            statements.push((op, sql, params));
        }
        statements
    }

    /// Writes each change with its ledger row (`ledger[i]` belongs to `changes[i]` when there
    /// are ledger rows; a deletion forgets its key's row whatever it is given) under a
    /// savepoint of one transaction: a change Postgres refuses for its values
    /// ([`row_write_class`] poison) is rolled back alone, its ledger row unwritten; any other
    /// error rolls back everything.
    async fn write_tagged(
        &mut self,
        changes: &[InboundChange],
        ledger: &[LedgerRow],
    ) -> Result<Vec<Written>, StoreError> {
        let statements = self.statements(changes);
        let mut tx = self.client.transaction().await?;
        let mut written = Vec::with_capacity(changes.len());
        for (i, ((op, sql, params), change)) in statements.iter().zip(changes).enumerate() {
            let record = tx.savepoint("driftless_record").await?;
            let row = ledger.get(i).cloned();
            match write_one(&record, &self.sink, sql, params, change, row).await {
                Ok(key) => {
                    record.commit().await?;
                    written.push(Written::Applied(key));
                }
                Err((target, e)) => {
                    let e = PgError::Sql(e);
                    if row_write_class(&e) != ErrorClass::Poison {
                        let target = match target {
                            Target::Row => format!("{op} on {}", self.table_sql),
                            Target::Ledger => "write to driftless.sync_ledger".to_string(),
                        };
                        return Err(StoreError::Write { target, source: e });
                    }
                    record.rollback().await?;
                    written.push(Written::Refused(Refusal::of(&e)));
                }
            }
        }
        tx.commit().await?;
        Ok(written)
    }
}

async fn save_ledger_in(
    tx: &tokio_postgres::Transaction<'_>,
    sink: &str,
    rows: &[LedgerRow],
) -> Result<(), StoreError> {
    for r in rows {
        save_ledger_row(tx, sink, r).await?;
    }
    Ok(())
}

async fn save_ledger_row(
    tx: &tokio_postgres::Transaction<'_>,
    sink: &str,
    r: &LedgerRow,
) -> Result<(), tokio_postgres::Error> {
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
    Ok(())
}

/// Text parameters of a statement (`None` = NULL).
type Params = Vec<Option<String>>;

/// Which statement of a change failed.
enum Target {
    /// The row change itself.
    Row,
    /// Its ledger row.
    Ledger,
}

/// Runs one change's statement and writes its ledger row (a deletion forgets it instead);
/// returns the key of the row written (inserts: the new key; empty: no such row).
async fn write_one(
    tx: &tokio_postgres::Transaction<'_>,
    sink: &str,
    sql: &str,
    params: &Params,
    change: &InboundChange,
    ledger: Option<LedgerRow>,
) -> Result<String, (Target, tokio_postgres::Error)> {
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = tx
        .query_opt(sql, &refs)
        .await
        .map_err(|e| (Target::Row, e))?;
    let key = row.map(|r| r.get::<_, String>(0)).unwrap_or_default();
    let ledger_failed = |e| (Target::Ledger, e);
    if let InboundChange::Delete { key: k } = change {
        tx.execute(
            "DELETE FROM driftless.sync_ledger WHERE sink = $1 AND record_key = $2",
            &[&sink, k],
        )
        .await
        .map_err(ledger_failed)?;
        return Ok(key);
    }
    if let Some(mut row) = ledger {
        // An inserted row gets its key now: link its ledger row to it.
        if matches!(change, InboundChange::Insert { .. }) {
            row.key = key.clone();
        }
        if !row.key.is_empty() {
            save_ledger_row(tx, sink, &row)
                .await
                .map_err(ledger_failed)?;
        }
    }
    Ok(key)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PgError {
        PgError::Server {
            code: code.into(),
            message: "permission denied for table contacts".into(),
            detail: None,
            hint: None,
        }
    }

    fn write(code: &str) -> StoreError {
        StoreError::Write {
            target: "UPDATE on \"public\".\"contacts\"".into(),
            source: server(code),
        }
    }

    #[test]
    fn store_errors_are_fatal_for_grants_and_changed_tables_and_transient_for_connections() {
        let denied = write("42501");
        assert_eq!(denied.class(), ErrorClass::Fatal);
        assert!(denied.to_string().contains("UPDATE on"), "{denied}");
        assert!(denied.hint().unwrap().contains("UPDATE"));
        let gone = write("42703");
        assert_eq!(gone.class(), ErrorClass::Fatal);
        assert!(gone.hint().unwrap().contains("table changed"));
        for code in ["08006", "57P01", "40001", "40P01"] {
            assert_eq!(write(code).class(), ErrorClass::Transient, "{code}");
            assert_eq!(StoreError::Pg(server(code)).class(), ErrorClass::Transient);
        }
        let unfit = StoreError::Unfit("two keys".into());
        assert_eq!(unfit.class(), ErrorClass::Fatal);
        assert!(unfit.hint().unwrap().contains("primary key"));
    }

    #[test]
    fn refusals_keep_names_not_values() {
        let r = Refusal::of(&PgError::Server {
            code: "23505".into(),
            message: "duplicate key value violates unique constraint".into(),
            detail: Some("Key (email)=(a@b.c) already exists.".into()),
            hint: None,
        });
        assert_eq!(r.sqlstate, "23505");
        assert!(!format!("{r:?}").contains("a@b.c"));
    }
}
