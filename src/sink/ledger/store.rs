//! The sink ledger's durable copy: `driftless.sink_ledger` in Postgres.
//!
//! Owns the table (created if missing, in the `driftless` schema of the source database or of
//! the database `[state] url_env` names) and its two statements. Invariants:
//! - one row per (sink, SHA-256 of the primary key): the linked record id, the identity hash,
//!   the per-property hashes, the source position and the tombstone flag; no row value;
//! - a batch's rows are read in one statement (its keys, plus every live key sharing an
//!   identity or a record with them) and written in one transaction;
//! - a write never moves a key back in time: a row is replaced only by one with a newer source
//!   position, so two workers racing after a rebalance cannot undo each other;
//! - a lost connection is transient (the batch is retried on a new one); a missing privilege
//!   is fatal and says which grant is needed.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_postgres::Client;

use super::{KeyDigest, Link, SourcePosition, View};
use crate::error::{Classify, ErrorClass};
use crate::lsn::Lsn;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::ddl;
use crate::postgres::error::PgError;
use crate::sink::SinkError;

/// The statements that create the ledger (idempotent).
pub const DDL: &str = "CREATE SCHEMA IF NOT EXISTS driftless;
     CREATE TABLE IF NOT EXISTS driftless.sink_ledger (
         sink text NOT NULL,
         key_hash bytea NOT NULL,
         record_id text,
         identity_hash text,
         fields jsonb NOT NULL DEFAULT '{}',
         commit_lsn bigint NOT NULL,
         ordinal bigint NOT NULL,
         tombstone boolean NOT NULL DEFAULT false,
         updated_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (sink, key_hash));
     CREATE INDEX IF NOT EXISTS sink_ledger_identity
         ON driftless.sink_ledger (sink, identity_hash) WHERE NOT tombstone;
     CREATE INDEX IF NOT EXISTS sink_ledger_record
         ON driftless.sink_ledger (sink, record_id) WHERE NOT tombstone;";

const READ: &str = "WITH mine AS (
         SELECT record_id FROM driftless.sink_ledger
         WHERE sink = $1 AND key_hash = ANY($2) AND record_id IS NOT NULL)
     SELECT key_hash, record_id, identity_hash, fields, commit_lsn, ordinal, tombstone
     FROM driftless.sink_ledger
     WHERE sink = $1 AND (key_hash = ANY($2) OR (NOT tombstone AND (
         identity_hash = ANY($3) OR record_id IN (SELECT record_id FROM mine))))";

const WRITE: &str = "INSERT INTO driftless.sink_ledger AS l
         (sink, key_hash, record_id, identity_hash, fields, commit_lsn, ordinal, tombstone)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (sink, key_hash) DO UPDATE SET
         record_id = excluded.record_id, identity_hash = excluded.identity_hash,
         fields = excluded.fields, commit_lsn = excluded.commit_lsn,
         ordinal = excluded.ordinal, tombstone = excluded.tombstone, updated_at = now()
     WHERE (l.commit_lsn, l.ordinal) < (excluded.commit_lsn, excluded.ordinal)";

/// True when the current user can use the ledger: read and write the table if it exists, else
/// create it (in schema `driftless`, or the schema itself).
const GRANTS: &str = "SELECT CASE
     WHEN to_regclass('driftless.sink_ledger') IS NOT NULL THEN
         has_schema_privilege('driftless', 'USAGE')
         AND has_table_privilege('driftless.sink_ledger', 'SELECT')
         AND has_table_privilege('driftless.sink_ledger', 'INSERT')
         AND has_table_privilege('driftless.sink_ledger', 'UPDATE')
         AND has_table_privilege('driftless.sink_ledger', 'DELETE')
     WHEN to_regnamespace('driftless') IS NOT NULL THEN
         has_schema_privilege('driftless', 'USAGE') AND has_schema_privilege('driftless', 'CREATE')
     ELSE has_database_privilege(current_database(), 'CREATE')
     END";

/// What `driftless check` says when [`has_grants`] is false.
pub const GRANTS_HINT: &str = "as the owner: GRANT CREATE ON DATABASE <db> TO <role> (the \
     schema driftless and the table are created on first use), or GRANT USAGE, CREATE ON SCHEMA \
     driftless TO <role>, or GRANT SELECT, INSERT, UPDATE, DELETE ON driftless.sink_ledger TO <role>";

/// Whether the user of `client` can create (or read and write) the sink ledger.
pub async fn has_grants(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(GRANTS, &[]).await?.get(0))
}

const ALL: &str =
    "SELECT key_hash, record_id, identity_hash, fields, commit_lsn, ordinal, tombstone
     FROM driftless.sink_ledger WHERE sink = $1";

const RELINK: &str = "INSERT INTO driftless.sink_ledger AS l
         (sink, key_hash, record_id, identity_hash, fields, commit_lsn, ordinal, tombstone)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (sink, key_hash) DO UPDATE SET
         record_id = excluded.record_id, identity_hash = excluded.identity_hash,
         fields = excluded.fields, tombstone = excluded.tombstone, updated_at = now()";

/// A sink's ledger in Postgres.
pub struct Ledger {
    params: ConnectParams,
    sink: String,
    client: Option<Client>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("sink", &self.sink).finish()
    }
}

impl Ledger {
    /// The ledger of `sink` in the database `params` reach; connects on first use.
    pub fn new(params: ConnectParams, sink: &str) -> Ledger {
        Ledger {
            params,
            sink: sink.to_string(),
            client: None,
        }
    }

    /// Connects (if not connected) and creates the table if missing.
    pub async fn open(&mut self) -> Result<&Client, SinkError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect_sql(&self.params).await.map_err(sink_error)?;
            ddl::create_if_missing(&client, DDL)
                .await
                .map_err(sql_error)?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// The rows of `keys`, and of every live key holding one of `identities` or a record one
    /// of `keys` is linked to.
    pub async fn read(
        &mut self,
        keys: &[KeyDigest],
        identities: &[String],
    ) -> Result<View, SinkError> {
        let sink = self.sink.clone();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let rows = self
            .open()
            .await?
            .query(READ, &[&sink, &keys, &identities])
            .await
            .map_err(sql_error)?;
        let mut view = View::default();
        view.links.extend(rows.iter().filter_map(link_of));
        Ok(view)
    }

    /// Every row of the sink (`driftless verify`).
    pub async fn all(&mut self) -> Result<View, SinkError> {
        let sink = self.sink.clone();
        let rows = self
            .open()
            .await?
            .query(ALL, &[&sink])
            .await
            .map_err(sql_error)?;
        Ok(View {
            links: rows.iter().filter_map(link_of).collect(),
        })
    }

    /// Writes the links of records a repair wrote or deleted, in one transaction: the record,
    /// identity, hashes and tombstone change, the source position stays (a repair is no
    /// source change).
    pub async fn relink(&mut self, rows: &[(KeyDigest, Link)]) -> Result<(), SinkError> {
        self.write_with(RELINK, rows).await
    }

    /// Deletes every row of the sink.
    pub async fn forget(&mut self) -> Result<(), SinkError> {
        let sink = self.sink.clone();
        let n = self
            .open()
            .await?
            .execute(
                "DELETE FROM driftless.sink_ledger WHERE sink = $1",
                &[&sink],
            )
            .await
            .map_err(sql_error)?;
        tracing::info!(sink = %self.sink, rows = n, "sink ledger forgotten for a full resync");
        Ok(())
    }

    /// Writes `rows` in one transaction (a row older than the stored one is left out).
    pub async fn write(&mut self, rows: &[(KeyDigest, Link)]) -> Result<(), SinkError> {
        self.write_with(WRITE, rows).await
    }

    async fn write_with(
        &mut self,
        statement: &str,
        rows: &[(KeyDigest, Link)],
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sink = self.sink.clone();
        self.open().await?;
        let client = self.client.as_mut().expect("opened above");
        let tx = client.transaction().await.map_err(sql_error)?;
        let statement = tx.prepare(statement).await.map_err(sql_error)?;
        for (key, link) in rows {
            let fields = Value::Object(
                link.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            );
            tx.execute(
                &statement,
                &[
                    &sink,
                    &key.as_slice(),
                    &link.record_id,
                    &link.identity,
                    &fields,
                    &(link.position.commit_lsn.as_u64() as i64),
                    &(link.position.ordinal as i64),
                    &link.tombstone,
                ],
            )
            .await
            .map_err(sql_error)?;
        }
        tx.commit().await.map_err(sql_error)
    }
}

/// A ledger row as (key digest, link); None for a malformed key.
fn link_of(r: &tokio_postgres::Row) -> Option<(KeyDigest, Link)> {
    let key: Vec<u8> = r.get(0);
    let key = KeyDigest::try_from(key.as_slice()).ok()?;
    let fields: Value = r.get(3);
    let link = Link {
        record_id: r.get(1),
        identity: r.get(2),
        fields: fields
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<BTreeMap<_, _>>(),
        position: SourcePosition {
            commit_lsn: Lsn(r.get::<_, i64>(4) as u64),
            ordinal: r.get::<_, i64>(5) as u64,
        },
        tombstone: r.get(6),
    };
    Some((key, link))
}

fn sql_error(e: tokio_postgres::Error) -> SinkError {
    sink_error(PgError::Sql(e))
}

/// A ledger failure as the sink sees it: retry the batch, or stop with the grant to give.
fn sink_error(e: PgError) -> SinkError {
    match e.class() {
        ErrorClass::Fatal => SinkError::fatal(
            format!("sink ledger: {e}"),
            e.hint().unwrap_or_else(|| GRANTS_HINT.into()),
        ),
        _ => SinkError::transient(format!("sink ledger: {e}"), None),
    }
}
