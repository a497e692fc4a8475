//! What the capture role may do, and the publication capture needs: the privilege facts read
//! from the catalog ([`facts`]), the pure decision over them ([`problems`], [`plan`]) and the
//! one place the publication is created or altered ([`ensure_publication`]).
//!
//! Invariants:
//! - every missing privilege is named, with the statement that grants it (role, database,
//!   schemas and tables spelled out), and all of them are reported at once;
//! - an existing publication is used as it is only if it lists exactly the configured tables
//!   with their column lists and row filters (row filters compared as the server reads them,
//!   `filter::read_condition`), and publishes through the partition root when one of them is
//!   partitioned; one that differs may serve another subscriber, so it is reported and left
//!   alone unless `source.manage_publication = true`, which lets driftless alter it (that needs
//!   ownership of the publication, and of the tables when its table list changes);
//! - a `FOR ALL TABLES` publication is never used nor altered;
//! - reading facts changes nothing (the row filters are read through `EXPLAIN`, which runs
//!   nothing); [`ensure_publication`] writes only what [`plan`] decided.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::SourceError;
use super::error::PgError;
use super::filter;
use super::sql::{quote_ident, quote_table};
use crate::config::{TableFilter, TableName};

/// A problem and the statement (or choice) that fixes it.
pub(crate) type Problem = (String, String);

/// What the role may do with one configured table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableAccess {
    /// The configured name.
    pub name: TableName,
    /// An ordinary or partitioned table of that name exists (else `catalog::tables` reports it).
    pub exists: bool,
    /// USAGE on its schema (to name it in a query or a publication).
    pub schema_usage: bool,
    /// SELECT on it (the initial snapshot reads it).
    pub select: bool,
    /// The role has its owner's privileges (owner, member of the owner, or superuser).
    pub owned: bool,
    /// A partitioned table.
    pub partitioned: bool,
}

/// An existing publication of the configured name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PublicationFacts {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// Its owner's name.
    pub owner: String,
    /// The role has its owner's privileges.
    pub owned: bool,
    /// The tables it publishes (`pg_publication_tables`).
    pub tables: BTreeSet<TableName>,
    /// The column list and row filter (as the server prints it) of each table it names that
    /// has one (PostgreSQL 15+).
    pub shapes: BTreeMap<TableName, TableFilter>,
    /// How the server reads the configured and the published row filter (in that order) of
    /// each configured table that has both.
    pub row_filters: BTreeMap<TableName, (filter::Reading, filter::Reading)>,
}

/// The privilege facts [`problems`] and [`plan`] decide over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessFacts {
    /// `current_user`.
    pub role: String,
    /// `current_database()`.
    pub database: String,
    /// CREATE on the database (to create a publication).
    pub can_create: bool,
    /// The configured tables, in configuration order.
    pub tables: Vec<TableAccess>,
    /// The publication of the configured name, if it exists.
    pub publication: Option<PublicationFacts>,
    /// The configured column lists and row filters.
    pub filters: BTreeMap<TableName, TableFilter>,
}

/// What [`ensure_publication`] does with the publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublicationPlan {
    /// It does not exist: create it for exactly the tables, through the partition root.
    Create,
    /// It exists as needed: leave it alone.
    Keep,
    /// `source.manage_publication = true` and it differs: set its table list (`tables`)
    /// and/or `publish_via_partition_root` (`via_root`).
    Alter { tables: bool, via_root: bool },
}

fn sql(e: tokio_postgres::Error) -> SourceError {
    SourceError::Pg(PgError::Sql(e))
}

/// Reads the facts for `publication` over exactly `tables` as the connected role.
pub(crate) async fn facts(
    client: &Client,
    publication: &str,
    tables: &[TableName],
    filters: &BTreeMap<TableName, TableFilter>,
) -> Result<AccessFacts, SourceError> {
    let head = client
        .query_one(
            "SELECT current_user::text, current_database()::text, \
             has_database_privilege(current_database(), 'CREATE'), \
             p.oid IS NOT NULL, p.puballtables, p.pubviaroot, \
             pg_get_userbyid(p.pubowner)::text, pg_has_role(p.pubowner, 'USAGE'), \
             ARRAY(SELECT schemaname::text FROM pg_publication_tables WHERE pubname = $1 \
                   ORDER BY schemaname, tablename), \
             ARRAY(SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 \
                   ORDER BY schemaname, tablename), \
             current_setting('server_version_num')::int \
             FROM (SELECT 1) AS one LEFT JOIN pg_publication p ON p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql)?;
    let published = |schemas: Vec<String>, names: Vec<String>| -> BTreeSet<TableName> {
        schemas
            .into_iter()
            .zip(names)
            .map(|(schema, name)| TableName { schema, name })
            .collect()
    };
    // Column lists and row filters exist from PostgreSQL 15 on.
    let shapes = if head.get::<_, bool>(3) && head.get::<_, i32>(10) >= 150_000 {
        shapes(client, publication).await?
    } else {
        BTreeMap::new()
    };
    let row_filters = filter::read_row_filters(client, filters, &shapes).await?;
    let publication = head.get::<_, bool>(3).then(|| PublicationFacts {
        all_tables: head.get(4),
        via_root: head.get(5),
        owner: head.get(6),
        owned: head.get(7),
        tables: published(head.get(8), head.get(9)),
        shapes,
        row_filters,
    });
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT c.oid IS NOT NULL, coalesce(has_schema_privilege(n.oid, 'USAGE'), false), \
             coalesce(has_table_privilege(c.oid, 'SELECT'), false), \
             coalesce(pg_has_role(c.relowner, 'USAGE'), false), coalesce(c.relkind = 'p', false) \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, r, i) \
             LEFT JOIN pg_namespace n ON n.nspname = t.s \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r \
               AND c.relkind IN ('r', 'p') \
             ORDER BY t.i",
            &[&schemas, &names],
        )
        .await
        .map_err(sql)?;
    let tables = tables
        .iter()
        .zip(rows)
        .map(|(name, r)| TableAccess {
            name: name.clone(),
            exists: r.get(0),
            schema_usage: r.get(1),
            select: r.get(2),
            owned: r.get(3),
            partitioned: r.get(4),
        })
        .collect();
    Ok(AccessFacts {
        role: head.get(0),
        database: head.get(1),
        can_create: head.get(2),
        tables,
        publication,
        filters: filters.clone(),
    })
}

/// The column lists and row filters of `publication`'s tables (PostgreSQL 15+).
async fn shapes(
    client: &Client,
    publication: &str,
) -> Result<BTreeMap<TableName, TableFilter>, SourceError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, \
             (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a \
              WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs::int2[])), \
             pg_get_expr(pr.prqual, pr.prrelid) \
             FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid \
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE p.pubname = $1 AND (pr.prattrs IS NOT NULL OR pr.prqual IS NOT NULL)",
            &[&publication],
        )
        .await
        .map_err(sql)?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                TableName {
                    schema: r.get(0),
                    name: r.get(1),
                },
                TableFilter {
                    columns: r.get(2),
                    row_filter: r.get(3),
                },
            )
        })
        .collect())
}

/// The configured tables whose published column list or row filter differs from the
/// configuration. Column lists compare as sets; row filters as the server reads them
/// (`filter::conditions_differ`; the server keeps a condition in its own printed form, which
/// is not the configured text).
fn reshaped<'a>(f: &'a AccessFacts, existing: &PublicationFacts) -> Vec<&'a TableName> {
    let none = TableFilter::default();
    f.tables
        .iter()
        .map(|t| &t.name)
        .filter(|t| existing.tables.contains(*t))
        .filter(|t| {
            let (want, have) = (
                f.filters.get(*t).unwrap_or(&none),
                existing.shapes.get(*t).unwrap_or(&none),
            );
            let set = |c: &Option<Vec<String>>| {
                c.as_ref()
                    .map(|c| c.iter().cloned().collect::<BTreeSet<String>>())
            };
            set(&want.columns) != set(&have.columns)
                || want.row_filter.is_some() != have.row_filter.is_some()
                || existing
                    .row_filters
                    .get(*t)
                    .is_some_and(|(want, have)| filter::conditions_differ(want, have))
        })
        .collect()
}

/// Every privilege capture lacks (pure): USAGE on the tables' schemas and SELECT on the tables
/// when `snapshot` reads them, and what creating, using or altering the publication needs.
pub(crate) fn problems(
    f: &AccessFacts,
    publication: &str,
    manage: bool,
    snapshot: bool,
) -> Vec<Problem> {
    let role = quote_ident(&f.role);
    let plan = plan(f, publication, manage);
    // Naming a table (in a query or a publication) needs USAGE on its schema.
    let names_tables = snapshot
        || f.publication.is_none()
        || matches!(plan, Ok(PublicationPlan::Alter { tables: true, .. }));
    let mut out = Vec::new();
    let no_usage: BTreeSet<&str> = existing(f)
        .filter(|t| !t.schema_usage)
        .map(|t| t.name.schema.as_str())
        .collect();
    if names_tables && !no_usage.is_empty() {
        let list: Vec<&str> = no_usage.into_iter().collect();
        out.push((
            format!(
                "the role {} lacks USAGE on schema {} (of captured tables)",
                f.role,
                list.join(", ")
            ),
            format!(
                "GRANT USAGE ON SCHEMA {} TO {role}",
                list.iter()
                    .map(|s| quote_ident(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let no_select: Vec<&TableName> = existing(f).filter(|t| !t.select).map(|t| &t.name).collect();
    if snapshot && !no_select.is_empty() {
        out.push((
            format!(
                "the role {} lacks SELECT on {}, which the initial snapshot reads",
                f.role,
                names(&no_select)
            ),
            format!("GRANT SELECT ON {} TO {role}", quoted(&no_select)),
        ));
    }
    if let Err(mut p) = plan {
        out.append(&mut p);
    }
    out
}

/// What to do with the publication (pure), or why it cannot be done.
pub(crate) fn plan(
    f: &AccessFacts,
    publication: &str,
    manage: bool,
) -> Result<PublicationPlan, Vec<Problem>> {
    let Some(existing) = &f.publication else {
        return create_problems(f, publication).map(|()| PublicationPlan::Create);
    };
    let name = quote_ident(publication);
    if existing.all_tables {
        return Err(vec![(
            format!("publication {publication} is FOR ALL TABLES"),
            "driftless uses a publication of exactly source.tables; choose another \
             source.publication name"
                .into(),
        )]);
    }
    let wanted: BTreeSet<TableName> = f.tables.iter().map(|t| t.name.clone()).collect();
    let root_missing = !existing.via_root && f.tables.iter().any(|t| t.partitioned);
    let reshaped = reshaped(f, existing);
    let differs = wanted != existing.tables || !reshaped.is_empty();
    if !root_missing && !differs {
        return Ok(PublicationPlan::Keep);
    }
    let manage_hint = "or set source.manage_publication = true to let driftless alter it";
    if !manage && root_missing {
        // Its tables are listed by partition then: the root is what matters.
        return Err(vec![(
            format!(
                "publication {publication} does not publish through the partition root, and a \
                 table of source.tables is partitioned: its changes would go out under the \
                 partitions' names"
            ),
            format!(
                "ALTER PUBLICATION {name} SET (publish_via_partition_root = true), or choose \
                 another source.publication name (driftless creates it so), {manage_hint}"
            ),
        )]);
    }
    if !manage {
        return Err(vec![(
            format!(
                "publication {publication} exists with other tables than source.tables ({}); \
                 driftless does not alter it",
                difference(&wanted, &existing.tables, &reshaped)
            ),
            format!(
                "it may serve another subscriber: make it list exactly source.tables \
                 (ALTER PUBLICATION {name} SET TABLE {}), or choose another source.publication \
                 name (driftless creates it), {manage_hint}",
                filter::publication_list(&wanted.iter().collect::<Vec<_>>(), &f.filters)
            ),
        )]);
    }
    let p = alter_problems(f, existing, publication, differs);
    if p.is_empty() {
        Ok(PublicationPlan::Alter {
            tables: differs,
            via_root: root_missing,
        })
    } else {
        Err(p)
    }
}

/// What altering an existing publication needs (`source.manage_publication = true`):
/// ownership of it, and of every table when its table list changes (`differs`).
fn alter_problems(
    f: &AccessFacts,
    existing: &PublicationFacts,
    publication: &str,
    differs: bool,
) -> Vec<Problem> {
    let mut p = Vec::new();
    if !existing.owned {
        p.push((
            format!(
                "source.manage_publication = true but the role {} does not own publication \
                 {publication} (owner: {}), so it may not alter it",
                f.role, existing.owner
            ),
            format!(
                "ALTER PUBLICATION {} OWNER TO {}, or make it list exactly source.tables \
                 as its owner and set source.manage_publication = false",
                quote_ident(publication),
                quote_ident(&f.role)
            ),
        ));
    }
    let not_owned = not_owned(f);
    if differs && !not_owned.is_empty() {
        p.push((
            format!(
                "setting the tables of publication {publication} needs ownership of every \
                 table it lists; the role {} does not own {}",
                f.role,
                names(&not_owned)
            ),
            owner_hint(f, &not_owned, None),
        ));
    }
    p
}

/// What creating the publication needs: CREATE on the database and ownership of every table.
fn create_problems(f: &AccessFacts, publication: &str) -> Result<(), Vec<Problem>> {
    let tables: Vec<&TableName> = f.tables.iter().map(|t| &t.name).collect();
    let create = create_statement(publication, &tables, &f.filters);
    let mut p = Vec::new();
    if !f.can_create {
        p.push((
            format!(
                "the role {} may not create publication {publication}: it lacks CREATE on \
                 database {}",
                f.role, f.database
            ),
            format!(
                "GRANT CREATE ON DATABASE {} TO {}, or have the tables' owner run: {create}",
                quote_ident(&f.database),
                quote_ident(&f.role)
            ),
        ));
    }
    let not_owned = not_owned(f);
    if !not_owned.is_empty() {
        p.push((
            format!(
                "creating publication {publication} needs ownership of every table it lists; \
                 the role {} does not own {}",
                f.role,
                names(&not_owned)
            ),
            owner_hint(f, &not_owned, Some(&create)),
        ));
    }
    if p.is_empty() { Ok(()) } else { Err(p) }
}

/// `ALTER TABLE ... OWNER TO <role>` for each of `tables`, and the owner's `alternative`.
fn owner_hint(f: &AccessFacts, tables: &[&TableName], alternative: Option<&str>) -> String {
    let role = quote_ident(&f.role);
    let alters: Vec<String> = tables
        .iter()
        .map(|t| format!("ALTER TABLE {} OWNER TO {role}", quote_table(t)))
        .collect();
    let mut hint = format!("{} (or GRANT <owner> TO {role})", alters.join("; "));
    if let Some(statement) = alternative {
        hint.push_str(&format!(", or have the tables' owner run: {statement}"));
    }
    hint
}

/// The configured tables that exist (the others are reported by `catalog::tables`).
fn existing(f: &AccessFacts) -> impl Iterator<Item = &TableAccess> {
    f.tables.iter().filter(|t| t.exists)
}

fn not_owned(f: &AccessFacts) -> Vec<&TableName> {
    existing(f).filter(|t| !t.owned).map(|t| &t.name).collect()
}

fn names(tables: &[&TableName]) -> String {
    tables
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(tables: &[&TableName]) -> String {
    tables
        .iter()
        .map(|t| quote_table(t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `missing from it: ...; not in source.tables: ...; other columns or row filter: ...`.
fn difference(
    wanted: &BTreeSet<TableName>,
    current: &BTreeSet<TableName>,
    reshaped: &[&TableName],
) -> String {
    let missing: Vec<&TableName> = wanted.difference(current).collect();
    let extra: Vec<&TableName> = current.difference(wanted).collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing from it: {}", names(&missing)));
    }
    if !extra.is_empty() {
        parts.push(format!("not in source.tables: {}", names(&extra)));
    }
    if !reshaped.is_empty() {
        parts.push(format!(
            "other columns or row filter than source.tables: {}",
            names(reshaped)
        ));
    }
    parts.join("; ")
}

fn create_statement(
    publication: &str,
    tables: &[&TableName],
    filters: &BTreeMap<TableName, TableFilter>,
) -> String {
    format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
        quote_ident(publication),
        filter::publication_list(tables, filters)
    )
}

/// One refusal listing every problem (messages and hints joined by `; `).
pub(crate) fn refusal(problems: Vec<Problem>) -> SourceError {
    let (messages, hints): (Vec<_>, Vec<_>) = problems.into_iter().unzip();
    SourceError::Refused {
        message: messages.join("; "),
        hint: hints.join("; "),
    }
}

/// Creates the publication for exactly `tables` (publishing through the partition root: a
/// partitioned table's changes go out under its own name, whichever partition holds the row),
/// keeps an existing one that lists exactly them, and otherwise refuses (or alters it when
/// `manage` is set), as [`plan`] decides.
pub(crate) async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[TableName],
    filters: &BTreeMap<TableName, TableFilter>,
    manage: bool,
) -> Result<(), SourceError> {
    let facts = facts(client, publication, tables, filters).await?;
    let name = quote_ident(publication);
    let list: Vec<&TableName> = tables.iter().collect();
    let decided = plan(&facts, publication, manage).map_err(refusal)?;
    let statements = match decided {
        PublicationPlan::Keep => return Ok(()),
        PublicationPlan::Create => vec![create_statement(publication, &list, filters)],
        PublicationPlan::Alter { tables, via_root } => {
            let mut s = Vec::new();
            if via_root {
                s.push(format!(
                    "ALTER PUBLICATION {name} SET (publish_via_partition_root = true)"
                ));
            }
            if tables {
                s.push(format!(
                    "ALTER PUBLICATION {name} SET TABLE {}",
                    filter::publication_list(&list, filters)
                ));
            }
            s
        }
    };
    // One implicit transaction: both changes or neither.
    client
        .batch_execute(&statements.join("; "))
        .await
        .map_err(sql)?;
    if decided == PublicationPlan::Create {
        tracing::info!(publication, tables = tables.len(), "publication created");
    } else {
        // It may have served another subscriber: say so louder.
        tracing::warn!(
            publication,
            tables = tables.len(),
            "publication altered to source.tables (source.manage_publication = true)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
