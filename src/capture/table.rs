//! One table read as capture would send its rows (its column list and row filter applied),
//! outside replication (`driftless verify`).
//!
//! Owns [`read`]: every row of a table in one `REPEATABLE READ` snapshot, each as the row image
//! and the Kafka key capture produces for it (the same catalog reading, value conversion and
//! canonical key), so a sink can map it exactly as it maps change events. Rows come through a
//! cursor in chunks; the caller keeps what it needs of each.

use std::collections::BTreeMap;

use super::CaptureError;
use super::normalize::{ColumnInfo, RelationInfo, key_of};
use crate::config::{TableFilter, TableName};
use crate::event::{Row, canonical_key};
use crate::postgres::snapshot::SnapshotReader;
use crate::postgres::{catalog, filter};

/// Rows per round trip.
const CHUNK_ROWS: u32 = 10_000;

/// Reads every row of `table` that capture publishes (its column list and row filter in
/// `filters`, if any) in one snapshot and hands `row(key, image)` each one; returns the number
/// of rows.
pub(crate) async fn read(
    client: &tokio_postgres::Client,
    table: &TableName,
    filters: &BTreeMap<TableName, TableFilter>,
    mut row: impl FnMut(Vec<u8>, Row),
) -> Result<u64, CaptureError> {
    let reader = SnapshotReader::begin_own(client, CHUNK_ROWS).await?;
    let mut tables = catalog::tables(client, std::slice::from_ref(table)).await?;
    filter::project(&mut tables, filters);
    let meta = tables.remove(0);
    let row_filter = filters.get(table).and_then(|f| f.row_filter.as_deref());
    let mut columns = Vec::with_capacity(meta.columns.len());
    for c in &meta.columns {
        columns.push(ColumnInfo {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_modifier: c.type_modifier,
            ty: catalog::resolve_type(client, c.type_oid).await?,
        });
    }
    let rel = RelationInfo::new(
        meta.oid,
        table.schema.clone(),
        table.name.clone(),
        String::new(),
        columns,
        &meta.key_columns,
        &[],
    );
    let mut cursor = reader.open(&meta, row_filter).await?;
    let mut n = 0;
    while let Some(rows) = cursor.next_chunk().await? {
        for r in &rows {
            let image = rel.row_from_text(|i| r.get(i));
            if let Some(key) = key_of(&rel, &image) {
                row(canonical_key(&key), image);
                n += 1;
            }
        }
    }
    reader.finish().await?;
    Ok(n)
}
