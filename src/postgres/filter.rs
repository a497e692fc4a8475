//! Column lists and row filters of captured tables (`source.tables = [{ name, columns, where }]`):
//! how they are written into the publication, what the snapshot reads, and whether the server
//! and the tables allow them.
//!
//! Invariants:
//! - the publication, the snapshot and the events carry the same columns (the configured list,
//!   in table order) and the same rows (the configured condition): a row filtered out of the
//!   stream is also left out of the snapshot;
//! - a column list covers the table's replica identity and a row filter reads only replica
//!   identity columns, or PostgreSQL would refuse the table's own UPDATEs and DELETEs; both
//!   are checked before the publication is created (the row filter by asking the server which
//!   columns it reads, through `EXPLAIN (VERBOSE)` of a query that reads no row);
//! - the condition is the operator's SQL: it may not contain `;` (config validation), and
//!   until the validating `EXPLAIN ... WHERE (cond)` accepted it, it is only ever placed inside
//!   parentheses of the extended-protocol `EXPLAIN`s here (one statement each, nothing runs, no
//!   row is read; [`read_condition`] may run before that validation); only then does it go
//!   into the publication;
//! - an existing publication's row filter is the configured one when the server reads both
//!   alike ([`read_condition`]: the same parse, type resolution and constant folding, so
//!   whitespace, parentheses, keyword case and redundant casts do not count); a condition
//!   the server cannot read is never taken as unchanged.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::SourceError;
use super::access::Problem;
use super::catalog::TableMeta;
use super::error::PgError;
use super::sql::{quote_ident, quote_table};
use crate::config::{TableFilter, TableName};

/// The lowest `server_version_num` with publication column lists and row filters.
const MIN_VERSION: i32 = 150_000;

/// `"s"."t" ("a", "b") WHERE (cond)` per table, comma-separated: the table list of a
/// `CREATE PUBLICATION ... FOR TABLE` or `ALTER PUBLICATION ... SET TABLE`.
pub(crate) fn publication_list(
    tables: &[&TableName],
    filters: &BTreeMap<TableName, TableFilter>,
) -> String {
    tables
        .iter()
        .map(|t| {
            let mut entry = quote_table(t);
            if let Some(f) = filters.get(*t) {
                if let Some(columns) = &f.columns {
                    let columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
                    entry += &format!(" ({})", columns.join(", "));
                }
                if let Some(condition) = &f.row_filter {
                    entry += &format!(" WHERE ({condition})");
                }
            }
            entry
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Narrows each table's columns to its column list (kept in table order: pgoutput describes a
/// table's published columns in that order).
pub(crate) fn project(tables: &mut [TableMeta], filters: &BTreeMap<TableName, TableFilter>) {
    for t in tables {
        if let Some(columns) = filters.get(&t.name).and_then(|f| f.columns.as_ref()) {
            t.columns.retain(|c| columns.contains(&c.name));
        }
    }
}

/// The columns of the replica identity (every column under FULL).
fn identity(t: &TableMeta) -> BTreeSet<&str> {
    if t.replica_identity == 'f' {
        t.columns.iter().map(|c| c.name.as_str()).collect()
    } else {
        t.key_columns.iter().map(String::as_str).collect()
    }
}

/// What is wrong with the column lists (pure): unknown columns, and a list that leaves out a
/// replica identity column.
pub(crate) fn column_problems(
    version_num: i32,
    tables: &[TableMeta],
    filters: &BTreeMap<TableName, TableFilter>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if version_num < MIN_VERSION && !filters.is_empty() {
        out.push((
            format!(
                "source.tables narrows {} with columns or where, which needs PostgreSQL 15 or \
                 later (the server is {version_num})",
                names(filters.keys())
            ),
            "remove columns and where from source.tables, or upgrade the server".into(),
        ));
        return out;
    }
    for t in tables {
        let Some(columns) = filters.get(&t.name).and_then(|f| f.columns.as_ref()) else {
            continue;
        };
        let unknown: Vec<&str> = columns
            .iter()
            .filter(|c| !t.columns.iter().any(|m| &m.name == *c))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            out.push((
                format!("{} has no column {}", t.name, unknown.join(", ")),
                "list existing, non-generated columns in source.tables' columns".into(),
            ));
        }
        let missing: Vec<&str> = identity(t)
            .into_iter()
            .filter(|k| !columns.iter().any(|c| c == k))
            .collect();
        if !missing.is_empty() {
            out.push((
                format!(
                    "the column list of {} leaves out replica identity column(s) {}: PostgreSQL \
                     would refuse the table's UPDATEs and DELETEs",
                    t.name,
                    missing.join(", ")
                ),
                if t.replica_identity == 'f' {
                    format!(
                        "under REPLICA IDENTITY FULL a column list must name every column; \
                         ALTER TABLE {} REPLICA IDENTITY DEFAULT (with a primary key) first",
                        quote_table(&t.name)
                    )
                } else {
                    "add the primary-key columns to the column list".into()
                },
            ));
        }
    }
    out
}

/// What is wrong with the row filters: a condition the server does not accept, or one that
/// reads a column outside the replica identity. Reads no row.
pub(crate) async fn row_filter_problems(
    client: &Client,
    tables: &[TableMeta],
    filters: &BTreeMap<TableName, TableFilter>,
) -> Result<Vec<Problem>, SourceError> {
    let mut out = Vec::new();
    for t in tables {
        let Some(condition) = filters.get(&t.name).and_then(|f| f.row_filter.as_ref()) else {
            continue;
        };
        let read = match columns_read(client, t, condition).await? {
            Ok(read) => read,
            Err(message) => {
                out.push((
                    format!(
                        "the row filter of {} is not a valid condition: {message}",
                        t.name
                    ),
                    "fix source.tables' where (a boolean SQL expression over the table's \
                     columns; PostgreSQL allows only immutable built-in functions there)"
                        .into(),
                ));
                continue;
            }
        };
        let identity = identity(t);
        let outside: Vec<&str> = read
            .iter()
            .map(String::as_str)
            .filter(|c| !identity.contains(c))
            .collect();
        if !outside.is_empty() {
            out.push((
                format!(
                    "the row filter of {} reads {}, outside its replica identity: PostgreSQL \
                     would refuse the table's UPDATEs and DELETEs",
                    t.name,
                    outside.join(", ")
                ),
                format!(
                    "filter on primary-key columns only, or ALTER TABLE {} REPLICA IDENTITY \
                     FULL (the WAL then carries whole old rows)",
                    quote_table(&t.name)
                ),
            ));
        }
    }
    Ok(out)
}

/// The alias the `EXPLAIN`s here give the table (its columns appear as `alias.col`).
const ALIAS: &str = "driftless_row_filter";

/// The plan's lines for `query` (an `EXPLAIN` without ANALYZE: nothing runs), or
/// `Err(message)` when the server refuses it (class 42 or 22: the message names what, never a
/// row value, as no row is read).
async fn explain(client: &Client, query: &str) -> Result<Result<Vec<String>, String>, SourceError> {
    match client.query(query, &[]).await {
        Ok(rows) => Ok(Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())),
        Err(e) => match e.as_db_error() {
            Some(db)
                if db.code().code().starts_with("42") || db.code().code().starts_with("22") =>
            {
                Ok(Err(db.message().to_string()))
            }
            _ => Err(SourceError::Pg(PgError::Sql(e))),
        },
    }
}

/// The columns `condition` reads, from the server's own plan of `SELECT 1 FROM t WHERE (..)`;
/// `Err(message)` when the server refuses the condition.
async fn columns_read(
    client: &Client,
    t: &TableMeta,
    condition: &str,
) -> Result<Result<BTreeSet<String>, String>, SourceError> {
    let query = format!(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT 1 FROM {} AS {ALIAS} WHERE ({condition})",
        quote_table(&t.name)
    );
    let plan = match explain(client, &query).await? {
        Ok(lines) => lines.join("\n"),
        Err(message) => return Ok(Err(message)),
    };
    let known: BTreeSet<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    Ok(Ok(qualified_columns(&plan, ALIAS)
        .into_iter()
        .filter(|c| known.contains(c.as_str()))
        .collect()))
}

/// A row filter as the server reads it over its table: its canonical text, or why the server
/// refused it.
pub(crate) type Reading = Result<String, String>;

/// How the server reads `condition` (the configured one or a publication's printed one) as a
/// row filter of `table`: the plan of `SELECT (cond) IS TRUE FROM ONLY t WHERE false`, whose
/// output column is the condition after parsing, type resolution and constant folding, coerced
/// to boolean as a `WHERE` is. The constant `WHERE false` makes the plan one `Result` node
/// whatever the table's indexes, statistics or partitions (a condition in the `WHERE` would be
/// turned into index conditions or partition pruning, and two different conditions that prune
/// every partition would print alike). Needs SELECT on the columns it reads; reads no row.
pub(crate) async fn read_condition(
    client: &Client,
    table: &TableName,
    condition: &str,
) -> Result<Reading, SourceError> {
    let query = format!(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT ({condition}) IS TRUE FROM ONLY {} AS {ALIAS} \
         WHERE false",
        quote_table(table)
    );
    Ok(explain(client, &query)
        .await?
        .map(|lines| canonical(&lines)))
}

/// How the server reads the configured and the published row filter of each table that has
/// both (`read_condition`; the queries go out together, pipelined on one connection).
pub(crate) async fn read_row_filters(
    client: &Client,
    filters: &BTreeMap<TableName, TableFilter>,
    shapes: &BTreeMap<TableName, TableFilter>,
) -> Result<BTreeMap<TableName, (Reading, Reading)>, SourceError> {
    let both: Vec<(&TableName, &String, &String)> = filters
        .iter()
        .filter_map(|(t, want)| {
            let have = shapes.get(t)?.row_filter.as_ref()?;
            Some((t, want.row_filter.as_ref()?, have))
        })
        .collect();
    let readings = futures::future::try_join_all(both.iter().map(|(t, want, have)| async move {
        futures::future::try_join(
            read_condition(client, t, want),
            read_condition(client, t, have),
        )
        .await
    }))
    .await?;
    Ok(both
        .into_iter()
        .map(|(t, ..)| t.clone())
        .zip(readings)
        .collect())
}

/// A plan's text without the lines that differ between equal conditions (`Query Identifier`,
/// printed under `compute_query_id`, hashes the query as written).
fn canonical(plan: &[String]) -> String {
    plan.iter()
        .filter(|line| !line.trim_start().starts_with("Query Identifier:"))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a published row filter differs from the configured one (pure), given how the server
/// reads each. A configured condition the server refuses is reported as invalid
/// ([`row_filter_problems`]), not as a difference; a published one it cannot read (the role
/// lacks SELECT on a column it names) cannot be shown equal, so it differs.
pub(crate) fn conditions_differ(configured: &Reading, published: &Reading) -> bool {
    match (configured, published) {
        (Err(_), _) => false,
        (Ok(_), Err(_)) => true,
        (Ok(want), Ok(have)) => want != have,
    }
}

/// The column names `alias.col` / `alias."Col"` in a plan's text, outside string literals.
fn qualified_columns(plan: &str, alias: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prefix = format!("{alias}.");
    let bytes: Vec<char> = plan.chars().collect();
    let mut i = 0;
    let mut in_literal = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '\'' {
            in_literal = !in_literal;
            i += 1;
            continue;
        }
        if !in_literal && plan_starts_with(&bytes, i, &prefix) {
            i += prefix.chars().count();
            let mut name = String::new();
            if bytes.get(i) == Some(&'"') {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == '"' && bytes.get(i + 1) == Some(&'"') {
                        name.push('"');
                        i += 2;
                    } else if bytes[i] == '"' {
                        i += 1;
                        break;
                    } else {
                        name.push(bytes[i]);
                        i += 1;
                    }
                }
            } else {
                while i < bytes.len() && (bytes[i].is_alphanumeric() || "_$".contains(bytes[i])) {
                    name.push(bytes[i]);
                    i += 1;
                }
            }
            out.insert(name);
            continue;
        }
        i += 1;
    }
    out
}

fn plan_starts_with(text: &[char], at: usize, prefix: &str) -> bool {
    let preceded_ok = at == 0 || !(text[at - 1].is_alphanumeric() || text[at - 1] == '_');
    preceded_ok
        && prefix
            .chars()
            .enumerate()
            .all(|(k, p)| text.get(at + k) == Some(&p))
}

fn names<'a>(tables: impl Iterator<Item = &'a TableName>) -> String {
    tables.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::ColumnMeta;

    fn name(s: &str) -> TableName {
        let (schema, name) = s.split_once('.').unwrap();
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    fn meta(identity: char) -> TableMeta {
        TableMeta {
            name: name("public.t"),
            oid: 1,
            replica_identity: identity,
            key_columns: vec!["id".into()],
            columns: ["id", "email", "Region"]
                .iter()
                .map(|c| ColumnMeta {
                    name: c.to_string(),
                    type_oid: 25,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn filters(
        columns: Option<&[&str]>,
        row_filter: Option<&str>,
    ) -> BTreeMap<TableName, TableFilter> {
        BTreeMap::from([(
            name("public.t"),
            TableFilter {
                columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
                row_filter: row_filter.map(String::from),
            },
        )])
    }

    #[test]
    fn the_publication_lists_columns_and_conditions() {
        let t = name("public.t");
        let other = name("s.o");
        assert_eq!(
            publication_list(
                &[&t, &other],
                &filters(Some(&["id", "Region"]), Some("id > 5"))
            ),
            r#""public"."t" ("id", "Region") WHERE (id > 5), "s"."o""#
        );
    }

    #[test]
    fn projection_keeps_table_order() {
        let mut tables = vec![meta('d')];
        project(&mut tables, &filters(Some(&["Region", "id"]), None));
        let kept: Vec<&str> = tables[0].columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(kept, ["id", "Region"]);
    }

    #[test]
    fn column_lists_must_cover_the_replica_identity() {
        let ok = filters(Some(&["id", "email"]), None);
        assert!(column_problems(150_000, &[meta('d')], &ok).is_empty());
        let p = column_problems(
            150_000,
            &[meta('d')],
            &filters(Some(&["email", "nope"]), None),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].0.contains("has no column nope"), "{p:?}");
        assert!(
            p[1].0.contains("leaves out replica identity column(s) id"),
            "{p:?}"
        );
        let full = column_problems(150_000, &[meta('f')], &ok);
        assert!(full[0].0.contains("Region"), "{full:?}");
        assert!(full[0].1.contains("REPLICA IDENTITY FULL"), "{full:?}");
        let old = column_problems(140_000, &[meta('d')], &ok);
        assert!(old[0].0.contains("needs PostgreSQL 15"), "{old:?}");
    }

    #[test]
    fn conditions_compare_by_plan_without_the_query_identifier() {
        let plan =
            |lines: &[&str]| canonical(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        let a = plan(&[
            "Result",
            "  Output: ((status = 'lead'::text) IS TRUE)",
            "  One-Time Filter: false",
            "Query Identifier: -6762222122586515486",
        ]);
        let b = plan(&[
            "Result",
            "  Output: ((status = 'lead'::text) IS TRUE)",
            "  One-Time Filter: false",
            "Query Identifier: 5255652211631838983",
        ]);
        let c = plan(&[
            "Result",
            "  Output: ((status = 'customer'::text) IS TRUE)",
            "  One-Time Filter: false",
        ]);
        assert_eq!(a, b);
        assert!(!conditions_differ(&Ok(a.clone()), &Ok(b)));
        assert!(conditions_differ(&Ok(c), &Ok(a.clone())));
        assert!(
            conditions_differ(&Ok(a.clone()), &Err("permission denied".into())),
            "a published condition the role cannot read is not taken as unchanged"
        );
        assert!(
            !conditions_differ(&Err("syntax error".into()), &Ok(a)),
            "a refused configured condition is the filter check's to report"
        );
    }

    #[test]
    fn plan_columns_are_read_outside_literals() {
        let plan = "Seq Scan on public.t driftless_row_filter\n  Output: 1\n  Filter: \
                    ((driftless_row_filter.\"Region\" = 'driftless_row_filter.email'::text) \
                    AND (driftless_row_filter.id > 5) AND (xdriftless_row_filter.q))";
        let cols = qualified_columns(plan, "driftless_row_filter");
        assert_eq!(
            cols,
            BTreeSet::from(["Region".to_string(), "id".to_string()])
        );
    }
}
