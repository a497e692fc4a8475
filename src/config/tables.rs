//! `source.tables`: the captured tables, each a name or a name with a column list and a row
//! filter. Owns their shape ([`TableEntry`] as written, [`TableName`], [`TableFilter`]) and
//! their validation (every problem with its field path).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::Extra;
use super::validate::{self, Problems, parse_table};

/// One entry of `source.tables`: a name, or a name with a column list and a row filter.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TableEntry {
    /// `"schema.table"`: every column, every row.
    Name(String),
    /// `{ name = "schema.table", columns = [...], where = "..." }`.
    Spec {
        /// `schema.table`.
        name: String,
        /// Only these columns leave the database (a publication column list).
        columns: Option<Vec<String>>,
        /// Only rows matching this SQL condition leave the database (a publication row filter).
        #[serde(rename = "where")]
        row_filter: Option<String>,
        /// Unknown keys.
        #[serde(flatten)]
        extra: Extra,
    },
}

impl TableEntry {
    pub(super) fn name(&self) -> &str {
        match self {
            TableEntry::Name(name) | TableEntry::Spec { name, .. } => name,
        }
    }
}

/// What of a table leaves the database when `source.tables` narrows it (PostgreSQL 15+
/// publication column lists and row filters; the snapshot reads the same).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableFilter {
    /// Column list, in configuration order (`None`: every column).
    pub(crate) columns: Option<Vec<String>>,
    /// Row filter, a SQL condition over the table's columns (`None`: every row).
    pub(crate) row_filter: Option<String>,
}

/// A table name split into schema and table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// Schema (namespace).
    pub(crate) schema: String,
    /// Table.
    pub(crate) name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// `source.tables`: at least one, each `schema.table`, none twice; column lists and row
/// filters well formed.
pub(super) fn validate(
    entries: &[TableEntry],
    present: bool,
    p: &mut Problems,
) -> (Vec<TableName>, BTreeMap<TableName, TableFilter>) {
    let mut tables = Vec::new();
    let mut filters = BTreeMap::new();
    if entries.is_empty() && present {
        p.add(
            "source.tables",
            "list at least one table as \"schema.table\"",
        );
    }
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("source.tables[{i}]");
        let t = entry.name();
        let Some(name) = parse_table(t) else {
            p.add(
                at,
                format!(
                    "{t:?} is not \"schema.table\" of unquoted identifiers (each 1-63 \
                     bytes of letters, digits, _, $ and -)"
                ),
            );
            continue;
        };
        if tables.contains(&name) {
            p.add(at, format!("{t:?} is listed twice"));
            continue;
        }
        if let TableEntry::Spec {
            columns,
            row_filter,
            extra,
            ..
        } = entry
        {
            p.unknown(&at, extra, "name, columns, where");
            let filter = validate::table_filter(&at, columns, row_filter, p);
            if filter != TableFilter::default() {
                filters.insert(name.clone(), filter);
            }
        }
        tables.push(name);
    }
    (tables, filters)
}
