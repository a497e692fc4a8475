//! Chunked table reads inside an exported snapshot (the slot's consistent point).
//!
//! Invariants: all tables are read in one `REPEATABLE READ READ ONLY` transaction that adopted
//! the slot's exported snapshot (`SET TRANSACTION SNAPSHOT`), so the rows read are exactly the
//! committed state at the slot's consistent point: streaming from that point then neither
//! misses nor repeats a change. Rows come in text format (same converter as the WAL) through a
//! cursor, at most `chunk_rows` at a time, so memory is bounded whatever the table size.

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::SourceError;
use super::catalog::TableMeta;
use super::sql::{quote_ident, quote_table};
use crate::config::TableName;

/// An open snapshot transaction on one SQL connection.
pub(crate) struct SnapshotReader<'a> {
    client: &'a Client,
    chunk_rows: u32,
}

fn rows(messages: Vec<SimpleQueryMessage>) -> Vec<SimpleQueryRow> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

impl<'a> SnapshotReader<'a> {
    /// Begins the transaction, adopts `snapshot_name` and locks `tables` in ACCESS SHARE mode
    /// (as pg_dump does): TRUNCATE and ALTER TABLE, which are not MVCC-safe, then wait for the
    /// snapshot instead of emptying or reshaping a table under it. The caller re-reads the
    /// tables' columns after this, on this connection.
    pub(crate) async fn begin(
        client: &'a Client,
        snapshot_name: &str,
        chunk_rows: u32,
        tables: &[TableName],
    ) -> Result<SnapshotReader<'a>, SourceError> {
        // The snapshot name comes from the server; still, never splice a quote.
        let name: String = snapshot_name.chars().filter(|c| *c != '\'').collect();
        let list = tables
            .iter()
            .map(quote_table)
            .collect::<Vec<_>>()
            .join(", ");
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                 SET TRANSACTION SNAPSHOT '{name}'; LOCK TABLE {list} IN ACCESS SHARE MODE"
            ))
            .await?;
        Ok(SnapshotReader { client, chunk_rows })
    }

    /// Begins a `REPEATABLE READ READ ONLY` transaction on a snapshot of its own (no slot): the
    /// rows read are one consistent state of the tables (`driftless verify`).
    pub(crate) async fn begin_own(
        client: &'a Client,
        chunk_rows: u32,
    ) -> Result<SnapshotReader<'a>, SourceError> {
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        Ok(SnapshotReader { client, chunk_rows })
    }

    /// Exact row count of `table` (rows matching `row_filter`, if any) in the snapshot (for
    /// progress).
    pub(crate) async fn count(
        &self,
        table: &TableMeta,
        row_filter: Option<&str>,
    ) -> Result<u64, SourceError> {
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}{}",
                    quote_table(&table.name),
                    where_clause(row_filter)
                ),
                &[],
            )
            .await?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// Opens a cursor over `table`'s columns (in `table.columns` order) and its rows matching
    /// `row_filter` (the table's publication row filter: the snapshot holds what the stream
    /// would).
    pub(crate) async fn open(
        &self,
        table: &TableMeta,
        row_filter: Option<&str>,
    ) -> Result<TableCursor<'a>, SourceError> {
        let cols = table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>();
        let cursor = format!("driftless_snapshot_{}", table.oid);
        self.client
            .batch_execute(&format!(
                "DECLARE {cursor} NO SCROLL CURSOR FOR SELECT {} FROM {}{}",
                cols.join(", "),
                quote_table(&table.name),
                where_clause(row_filter)
            ))
            .await?;
        Ok(TableCursor {
            client: self.client,
            cursor,
            chunk_rows: self.chunk_rows,
            done: false,
        })
    }

    /// Assigns the transaction an id and returns it (`txid_current()`, modulo 2^32 as the WAL
    /// carries transaction ids): Debezium's snapshot reads carry theirs as `source.txId`.
    pub(crate) async fn transaction_id(&self) -> Result<u32, SourceError> {
        let row = self
            .client
            .query_one("SELECT txid_current() % 4294967296", &[])
            .await?;
        let xid: i64 = row.get(0);
        Ok(u32::try_from(xid).unwrap_or_default())
    }

    /// Ends the transaction.
    pub(crate) async fn finish(self) -> Result<(), SourceError> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}

/// ` WHERE (condition)`, or nothing.
fn where_clause(row_filter: Option<&str>) -> String {
    row_filter.map_or_else(String::new, |c| format!(" WHERE ({c})"))
}

/// A cursor over one table.
pub(crate) struct TableCursor<'a> {
    client: &'a Client,
    cursor: String,
    chunk_rows: u32,
    done: bool,
}

impl TableCursor<'_> {
    /// The next chunk of rows (text values), or `None` at the end (the cursor is then closed).
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Vec<SimpleQueryRow>>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let chunk = rows(
            self.client
                .simple_query(&format!("FETCH {} FROM {}", self.chunk_rows, self.cursor))
                .await?,
        );
        if chunk.is_empty() {
            self.done = true;
            self.client
                .batch_execute(&format!("CLOSE {}", self.cursor))
                .await?;
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}
