//! Decoded pgoutput changes → [`ChangeEvent`]s. Pure.
//!
//! Owns the mapping from a row change under a given Relation to the normalized event: which
//! columns go to `key`, `before`, `after` and `unchanged_toast`, and how a primary-key change is
//! split. Invariants:
//! - every row is decoded with the Relation in force when it was written (the caller updates
//!   [`RelationInfo`] on each Relation message before later rows arrive);
//! - an unchanged TOAST column never gets a value invented for it: it is taken from the old
//!   row when Postgres sent one (`REPLICA IDENTITY FULL`), otherwise listed in
//!   `unchanged_toast`;
//! - an update that changes the primary key becomes a delete of the old key followed by an
//!   insert of the new one, so per-key order on Kafka holds;
//! - ordinals are assigned in decoding order, so ids are the same on every re-send.
//!
//! Under [`Rendering::Debezium`] (the `debezium` envelope) the images follow Debezium's PostgreSQL
//! connector instead: values per [`text_to_debezium`] (rows read by SQL per
//! [`read_to_debezium`], as Debezium's snapshots write them), the key's bytes in key order (the
//! primary key's declaration order, as Debezium writes it), an unchanged TOAST column present
//! with Debezium's placeholder (and still listed in `unchanged_toast`), and the old image of a
//! DEFAULT-identity delete carrying every column (non-key ones null).

use std::sync::{Arc, LazyLock};

use serde_json::Value;

use super::value::debezium::{DecimalMode, UNAVAILABLE, read_to_debezium, text_to_debezium};
use super::value::{PgType, text_to_json};
use crate::event::{ChangeEvent, EVENT_FORMAT, Op, Row, SnapshotMark, Source};
use crate::lsn::Lsn;
use crate::pgoutput::{OldTuple, Tuple, TupleValue};

/// A column as the current Relation describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (-1 if none): precision of temporal types, scale of numerics.
    pub type_modifier: i32,
    /// Resolved type.
    pub ty: PgType,
}

/// A captured relation, as of its latest Relation message.
#[derive(Clone, Debug)]
pub(crate) struct RelationInfo {
    /// Relation OID.
    pub oid: u32,
    /// Schema (shared by every event of the relation).
    pub schema: Arc<str>,
    /// Table.
    pub table: Arc<str>,
    /// Kafka topic.
    pub topic: Arc<str>,
    /// Columns, in wire order.
    pub columns: Vec<ColumnInfo>,
    /// Indexes into `columns` of the key columns, in key order.
    pub key: Vec<usize>,
    /// Hash of the column list.
    pub schema_version: Arc<str>,
    /// How values and images are rendered.
    pub render: Rendering,
}

/// How rows are rendered: driftless's rules, or Debezium's (the `debezium` envelope).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rendering {
    /// [`text_to_json`], key columns in key order, no placeholders.
    #[default]
    Driftless,
    /// [`text_to_debezium`] with this decimal mode, Debezium's images.
    Debezium(DecimalMode),
}

impl Rendering {
    /// How capture renders rows for `cfg`: Debezium's value encodings under the `debezium`
    /// envelope.
    pub(crate) fn of(cfg: &crate::config::ValidConfig) -> Rendering {
        match cfg.envelope {
            crate::config::Envelope::Driftless => Rendering::Driftless,
            crate::config::Envelope::Debezium => Rendering::Debezium(cfg.debezium.decimal_mode),
        }
    }
}

impl RelationInfo {
    /// Builds the info; `key_names` are the primary-key columns from the catalog, and when
    /// empty the Relation's own key flags are used.
    pub(crate) fn new(
        oid: u32,
        schema: String,
        table: String,
        topic: String,
        columns: Vec<ColumnInfo>,
        key_names: &[String],
        key_flags: &[bool],
    ) -> Self {
        let mut key: Vec<usize> = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        if key.len() != key_names.len() || key.is_empty() {
            key = key_flags
                .iter()
                .enumerate()
                .filter(|(_, f)| **f)
                .map(|(i, _)| i)
                .collect();
        }
        let schema_version = schema_version(&columns).into();
        RelationInfo {
            oid,
            schema: schema.into(),
            table: table.into(),
            topic: topic.into(),
            columns,
            key,
            schema_version,
            render: Rendering::Driftless,
        }
    }

    /// The same relation rendered by `render`.
    pub(crate) fn rendered(mut self, render: Rendering) -> Self {
        self.render = render;
        self
    }

    /// Converts one non-NULL text value of `col`.
    pub(crate) fn value(&self, col: &ColumnInfo, text: &str) -> Value {
        match self.render {
            Rendering::Driftless => text_to_json(&col.ty, text),
            Rendering::Debezium(mode) => text_to_debezium(&col.ty, col.type_modifier, text, mode),
        }
    }

    /// A row read by SQL in this relation's column order (`text(i)`: column `i` as text,
    /// `None` for NULL), rendered as the WAL's rows are, except under [`Rendering::Debezium`]:
    /// there as Debezium's snapshots write what they read ([`read_to_debezium`]).
    pub(crate) fn row_from_text<'a>(&self, text: impl Fn(usize) -> Option<&'a str>) -> Row {
        let mut row = Row::with_capacity(self.columns.len());
        for (i, col) in self.columns.iter().enumerate() {
            let v = text(i).map_or(Value::Null, |s| match self.render {
                Rendering::Driftless => text_to_json(&col.ty, s),
                Rendering::Debezium(mode) => read_to_debezium(&col.ty, col.type_modifier, s, mode),
            });
            row.insert(col.name.clone(), v);
        }
        row
    }
}

/// FNV-1a over `name:type_oid;` of every column: short, stable across processes.
pub(crate) fn schema_version(columns: &[ColumnInfo]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in columns {
        for b in c
            .name
            .bytes()
            .chain([b':'])
            .chain(c.type_oid.to_string().bytes())
            .chain([b';'])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// [`EVENT_FORMAT`], shared by every event.
static EVENT_FORMAT_ARC: LazyLock<Arc<str>> = LazyLock::new(|| EVENT_FORMAT.into());

/// The transaction an event belongs to.
#[derive(Clone, Debug)]
pub(crate) struct TxnContext {
    /// Database name.
    pub db: Arc<str>,
    /// Commit record LSN (`Begin.final_lsn`).
    pub commit_lsn: Lsn,
    /// Transaction id.
    pub xid: Option<u32>,
    /// Commit time, RFC 3339.
    pub commit_ts: Option<Arc<str>>,
    /// Commit time, µs since the Unix epoch.
    pub commit_us: Option<i64>,
    /// End LSN of the previous commit in the stream, if known.
    pub prev_commit_end: Option<Lsn>,
    /// Replication origin, if any.
    pub origin: Option<String>,
    /// Next ordinal.
    pub ordinal: u64,
    /// Where the rows sit in a read of the tables (`Streamed` for the stream's changes).
    pub mark: SnapshotMark,
}

impl TxnContext {
    /// The context of rows read by SQL (a snapshot or a backfill chunk) at `lsn`, `now`, marked
    /// `mark` (the initial snapshot sets each row's own mark).
    pub(crate) fn read(
        db: &str,
        lsn: Lsn,
        now: chrono::DateTime<chrono::Utc>,
        mark: SnapshotMark,
    ) -> TxnContext {
        TxnContext {
            db: db.into(),
            commit_lsn: lsn,
            xid: None,
            commit_ts: Some(now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().into()),
            commit_us: Some(now.timestamp_micros()),
            prev_commit_end: None,
            origin: None,
            ordinal: 0,
            mark,
        }
    }

    fn next_id(&mut self, rel: &RelationInfo) -> String {
        let n = self.ordinal;
        self.ordinal += 1;
        if self.mark != SnapshotMark::Streamed {
            format!(
                "snapshot:{}:{}.{}:{n}",
                self.commit_lsn, rel.schema, rel.table
            )
        } else {
            format!("{}:{n}", self.commit_lsn)
        }
    }

    fn source(&self, rel: &RelationInfo, lsn: Lsn) -> Source {
        Source {
            version: EVENT_FORMAT_ARC.clone(),
            db: self.db.clone(),
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            lsn,
            commit_lsn: self.commit_lsn,
            xid: self.xid,
            commit_ts: self.commit_ts.clone(),
            commit_us: self.commit_us,
            prev_commit_end: self.prev_commit_end,
            origin: self.origin.clone(),
            snapshot: self.mark != SnapshotMark::Streamed,
            mark: self.mark,
            schema_version: rel.schema_version.clone(),
        }
    }

    /// Builds an event of `rel` with the next ordinal.
    pub(crate) fn event(
        &mut self,
        rel: &RelationInfo,
        lsn: Lsn,
        op: Op,
        images: Images,
    ) -> ChangeEvent {
        ChangeEvent {
            id: self.next_id(rel),
            op,
            source: self.source(rel, lsn),
            key: images.key,
            before: images.before,
            after: images.after,
            unchanged_toast: images.unchanged_toast,
            truncate: None,
            message: None,
            key_change: images.key_change,
        }
    }
}

/// Row images of one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Images {
    /// Key columns.
    pub key: Option<Row>,
    /// Old row.
    pub before: Option<Row>,
    /// New row.
    pub after: Option<Row>,
    /// Unchanged TOAST columns.
    pub unchanged_toast: Vec<String>,
    /// The other key of a primary-key change ([`ChangeEvent::key_change`]).
    pub key_change: Option<Row>,
}

/// Converts one text value.
fn convert(rel: &RelationInfo, col: &ColumnInfo, raw: &[u8]) -> Value {
    match std::str::from_utf8(raw) {
        Ok(s) => rel.value(col, s),
        Err(_) => rel.value(col, &String::from_utf8_lossy(raw)),
    }
}

/// Decodes a tuple; returns the row and the names of unchanged TOAST columns. Columns beyond
/// the Relation's list (which Postgres never sends) are ignored.
pub(crate) fn decode_tuple(rel: &RelationInfo, tuple: &Tuple) -> (Row, Vec<String>) {
    let mut row = Row::with_capacity(rel.columns.len());
    let mut unchanged = Vec::new();
    for (col, v) in rel.columns.iter().zip(&tuple.0) {
        match v {
            TupleValue::Null => {
                row.insert(col.name.clone(), Value::Null);
            }
            TupleValue::UnchangedToast => {
                if rel.render != Rendering::Driftless {
                    row.insert(col.name.clone(), Value::from(UNAVAILABLE));
                }
                unchanged.push(col.name.clone());
            }
            TupleValue::Text(b) | TupleValue::Binary(b) => {
                row.insert(col.name.clone(), convert(rel, col, b));
            }
        }
    }
    (row, unchanged)
}

/// The key columns of a row image (`None` if one is missing).
pub(crate) fn key_of(rel: &RelationInfo, row: &Row) -> Option<Row> {
    let mut key = Row::with_capacity(rel.key.len());
    for &i in &rel.key {
        let name = &rel.columns.get(i)?.name;
        key.insert(name.clone(), row.get(name)?.clone());
    }
    Some(key)
}

/// Images of an insert.
pub(crate) fn insert_images(rel: &RelationInfo, new: &Tuple) -> Images {
    let (after, unchanged_toast) = decode_tuple(rel, new);
    Images {
        key: key_of(rel, &after),
        before: None,
        after: Some(after),
        unchanged_toast,
        key_change: None,
    }
}

/// The old image of an update or delete: the full row for `O`, only the key columns for `K`
/// (Debezium: every column, the non-key ones null as Postgres sent them).
fn old_image(rel: &RelationInfo, old: &OldTuple) -> Row {
    match old {
        OldTuple::Full(t) => decode_tuple(rel, t).0,
        OldTuple::Key(t) if rel.render != Rendering::Driftless => decode_tuple(rel, t).0,
        OldTuple::Key(t) => {
            let (row, _) = decode_tuple(rel, t);
            key_of(rel, &row).unwrap_or(row)
        }
    }
}

/// Images of an update: one entry, or two (delete of the old key, insert of the new one) when
/// the key changed.
pub(crate) fn update_images(
    rel: &RelationInfo,
    old: Option<&OldTuple>,
    new: &Tuple,
) -> Vec<(Op, Images)> {
    let (mut after, mut unchanged_toast) = decode_tuple(rel, new);
    let before = old.map(|o| old_image(rel, o));
    if let (Some(OldTuple::Full(_)), Some(b)) = (old, &before) {
        // Under REPLICA IDENTITY FULL the old row carries the real value of an unchanged
        // TOAST column: use it (it is the current value, not a placeholder).
        unchanged_toast.retain(|name| match b.get(name) {
            Some(v) => {
                after.insert(name.clone(), v.clone());
                false
            }
            None => true,
        });
        // Restore column order after insertions.
        let ordered: Row = rel
            .columns
            .iter()
            .filter_map(|c| after.get(&c.name).map(|v| (c.name.clone(), v.clone())))
            .collect();
        after = ordered;
    }
    let new_key = key_of(rel, &after);
    let old_key = before.as_ref().and_then(|b| key_of(rel, b));
    match (old_key, &new_key) {
        (Some(ok), Some(nk)) if &ok != nk => vec![
            (
                Op::Delete,
                Images {
                    key: Some(ok.clone()),
                    before,
                    after: None,
                    unchanged_toast: vec![],
                    key_change: Some(nk.clone()),
                },
            ),
            (
                Op::Create,
                Images {
                    key: new_key,
                    before: None,
                    after: Some(after),
                    unchanged_toast,
                    key_change: Some(ok),
                },
            ),
        ],
        _ => vec![(
            Op::Update,
            Images {
                key: new_key,
                before,
                after: Some(after),
                unchanged_toast,
                key_change: None,
            },
        )],
    }
}

/// Images of a delete.
pub(crate) fn delete_images(rel: &RelationInfo, old: &OldTuple) -> Images {
    let before = old_image(rel, old);
    Images {
        key: key_of(rel, &before),
        before: Some(before),
        after: None,
        unchanged_toast: vec![],
        key_change: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rel() -> RelationInfo {
        let col = |name: &str, ty: PgType, type_oid| ColumnInfo {
            name: name.into(),
            type_oid,
            type_modifier: -1,
            ty,
        };
        RelationInfo::new(
            1,
            "public".into(),
            "t".into(),
            "p.public.t".into(),
            vec![
                col("id", PgType::Int4, 23),
                col("bio", PgType::Text, 25),
                col("n", PgType::Int4, 23),
            ],
            &["id".to_string()],
            &[true, false, false],
        )
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn unchanged_toast_is_listed_not_invented() {
        let new = Tuple(vec![text("1"), TupleValue::UnchangedToast, text("2")]);
        let out = update_images(&rel(), None, &new);
        assert_eq!(out.len(), 1);
        let (op, img) = &out[0];
        assert_eq!(*op, Op::Update);
        assert_eq!(img.unchanged_toast, vec!["bio".to_string()]);
        assert!(!img.after.as_ref().unwrap().contains_key("bio"));
        assert_eq!(img.key.as_ref().unwrap()["id"], 1);
    }

    #[test]
    fn full_identity_fills_unchanged_toast_from_old_row() {
        let old = OldTuple::Full(Tuple(vec![text("1"), text("long"), text("1")]));
        let new = Tuple(vec![text("1"), TupleValue::UnchangedToast, text("2")]);
        let (_, img) = &update_images(&rel(), Some(&old), &new)[0];
        assert!(img.unchanged_toast.is_empty());
        let after = img.after.as_ref().unwrap();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["id", "bio", "n"]);
        assert_eq!(after["bio"], "long");
    }

    #[test]
    fn key_change_becomes_delete_then_insert() {
        let old = OldTuple::Key(Tuple(vec![text("1"), TupleValue::Null, TupleValue::Null]));
        let new = Tuple(vec![text("7"), text("x"), text("2")]);
        let out = update_images(&rel(), Some(&old), &new);
        assert_eq!(
            out.iter().map(|(op, _)| *op).collect::<Vec<_>>(),
            [Op::Delete, Op::Create]
        );
        assert_eq!(out[0].1.key.as_ref().unwrap()["id"], 1);
        assert_eq!(
            out[0].1.before.as_ref().unwrap().len(),
            1,
            "key-only old image"
        );
        assert_eq!(out[1].1.key.as_ref().unwrap()["id"], 7);
    }

    #[test]
    fn delete_under_default_identity_carries_only_the_key() {
        let old = OldTuple::Key(Tuple(vec![text("3"), TupleValue::Null, TupleValue::Null]));
        let img = delete_images(&rel(), &old);
        assert_eq!(serde_json::to_string(&img.before).unwrap(), r#"{"id":3}"#);
    }

    fn dbz_rel() -> RelationInfo {
        let mut r = rel();
        // Key declared as (n, id): Debezium writes the key in that order.
        r.key = vec![2, 0];
        r.rendered(Rendering::Debezium(DecimalMode::Precise))
    }

    #[test]
    fn debezium_keys_follow_key_order_and_toast_gets_the_placeholder() {
        let rel = dbz_rel();
        let new = Tuple(vec![text("1"), TupleValue::UnchangedToast, text("2")]);
        let (_, img) = &update_images(&rel, None, &new)[0];
        assert_eq!(
            serde_json::to_string(&img.key).unwrap(),
            r#"{"n":2,"id":1}"#
        );
        assert_eq!(img.after.as_ref().unwrap()["bio"], UNAVAILABLE);
        assert_eq!(img.unchanged_toast, ["bio"]);
        // Under FULL identity the old value replaces the placeholder, in place.
        let old = OldTuple::Full(Tuple(vec![text("1"), text("long"), text("2")]));
        let (_, img) = &update_images(&rel, Some(&old), &new)[0];
        let after = img.after.as_ref().unwrap();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["id", "bio", "n"]);
        assert_eq!(after["bio"], "long");
    }

    #[test]
    fn debezium_delete_before_has_every_column_and_pk_changes_name_the_other_key() {
        let rel = dbz_rel();
        let old = OldTuple::Key(Tuple(vec![text("3"), TupleValue::Null, text("4")]));
        let img = delete_images(&rel, &old);
        assert_eq!(
            serde_json::to_string(&img.before).unwrap(),
            r#"{"id":3,"bio":null,"n":4}"#
        );
        let new = Tuple(vec![text("7"), text("x"), text("4")]);
        let out = update_images(&rel, Some(&old), &new);
        let keys: Vec<String> = out
            .iter()
            .map(|(_, i)| serde_json::to_string(&i.key_change).unwrap())
            .collect();
        assert_eq!(keys, [r#"{"n":4,"id":7}"#, r#"{"n":4,"id":3}"#]);
    }

    #[test]
    fn schema_version_changes_with_columns() {
        let a = rel();
        let mut cols = a.columns.clone();
        cols[2].name = "m".into();
        assert_ne!(schema_version(&a.columns), schema_version(&cols));
        assert_eq!(
            schema_version(&a.columns),
            schema_version(&a.columns.clone())
        );
    }
}
