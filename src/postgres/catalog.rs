//! Catalog work over an ordinary SQL connection: preflight checks of the server, slot state,
//! table metadata (columns, primary keys, replica identity) and type resolution (the
//! publication and the role's privileges: `super::access`).
//!
//! Invariants: every SQL statement takes identifiers through `super::sql::quote_ident` and
//! values through bind parameters; nothing here reads row values.

use tokio_postgres::Client;

use super::SourceError;
use super::error::PgError;
use super::sql::{quote_ident, quote_table};
use crate::config::TableName;
use crate::lsn::Lsn;
use crate::pgtype::PgType;

fn sql(e: tokio_postgres::Error) -> SourceError {
    SourceError::Pg(PgError::Sql(e))
}

fn refused(message: impl Into<String>, hint: impl Into<String>) -> SourceError {
    SourceError::Refused {
        message: message.into(),
        hint: hint.into(),
    }
}

/// A column of a captured table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnMeta {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`; -1 if none).
    pub type_modifier: i32,
}

/// What capture needs to know about a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableMeta {
    /// Name.
    pub name: TableName,
    /// `pg_class` OID.
    pub oid: u32,
    /// `relreplident`: `d` default, `f` full, `i` index, `n` nothing.
    pub replica_identity: char,
    /// Primary-key columns (or the replica identity index's), in index order.
    pub key_columns: Vec<String>,
    /// Non-generated, non-dropped columns in attribute order.
    pub columns: Vec<ColumnMeta>,
}

/// Reads metadata of the configured tables; refuses (listing every table at fault) when a
/// table is missing or its updates and deletes could not be keyed.
pub(crate) async fn tables(
    client: &Client,
    names: &[TableName],
) -> Result<Vec<TableMeta>, SourceError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for name in names {
        let row = client
            .query_opt(
                "SELECT c.oid, c.relreplident::text, c.relkind::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&name.schema, &name.name],
            )
            .await
            .map_err(sql)?;
        let Some(row) = row else {
            problems.push(format!("table {name} does not exist"));
            continue;
        };
        let oid: u32 = row.get(0);
        let ident: String = row.get(1);
        let kind: String = row.get(2);
        if kind != "r" && kind != "p" {
            problems.push(format!("{name} is not a table (relkind {kind})"));
            continue;
        }
        let columns = client
            .query(
                "SELECT attname::text, atttypid, atttypmod FROM pg_attribute WHERE attrelid = $1 \
                 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(sql)?
            .iter()
            .map(|r| ColumnMeta {
                name: r.get(0),
                type_oid: r.get(1),
                type_modifier: r.get(2),
            })
            .collect();
        let key_columns = key_columns(client, oid, ident.as_str()).await?;
        let replica_identity = ident.chars().next().unwrap_or('d');
        match (replica_identity, key_columns.is_empty()) {
            ('n', _) => problems.push(format!(
                "{name} has REPLICA IDENTITY NOTHING: its updates and deletes carry no key \
                 (fix: ALTER TABLE {} REPLICA IDENTITY DEFAULT, with a primary key)",
                quote_table(name)
            )),
            (_, true) => problems.push(format!(
                "{name} has no primary key (nor replica identity index): its events could not \
                 be keyed (fix: add a primary key, or ALTER TABLE {} REPLICA IDENTITY USING \
                 INDEX <unique index on NOT NULL columns>)",
                quote_table(name)
            )),
            _ => {}
        }
        out.push(TableMeta {
            name: name.clone(),
            oid,
            replica_identity,
            key_columns,
            columns,
        });
    }
    if !problems.is_empty() {
        return Err(refused(
            problems.join("; "),
            "driftless keys every event by primary key; fix the tables above or remove them \
             from source.tables",
        ));
    }
    Ok(out)
}

/// Primary-key columns of a relation (or its replica identity index's when `relreplident` is
/// `i`), in index order.
pub async fn key_columns(
    client: &Client,
    relation_oid: u32,
    replica_identity: &str,
) -> Result<Vec<String>, SourceError> {
    let which = if replica_identity == "i" {
        "i.indisreplident"
    } else {
        "i.indisprimary"
    };
    let rows = client
        .query(
            &format!(
                "SELECT a.attname::text FROM pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1 AND {which} ORDER BY k.ord"
            ),
            &[&relation_oid],
        )
        .await
        .map_err(sql)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A row of `pg_replication_slots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotState {
    /// Output plugin.
    pub plugin: Option<String>,
    /// `logical` or `physical`.
    pub slot_type: String,
    /// Database the slot belongs to.
    pub database: Option<String>,
    /// `confirmed_flush_lsn`.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `wal_status` (`lost` = invalidated).
    pub wal_status: Option<String>,
    /// PID of the walsender using it, if any.
    pub active_pid: Option<i32>,
    /// A copy synchronized from the primary (PostgreSQL 17+ `synced`; false before 17): on a
    /// standby in recovery it cannot be used until the standby is promoted.
    pub synced: bool,
}

/// Reads the slot's row, if the slot exists.
pub(crate) async fn slot_state(
    client: &Client,
    slot: &str,
) -> Result<Option<SlotState>, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type, database::text, confirmed_flush_lsn::text, \
             wal_status, active_pid, coalesce((to_jsonb(s) ->> 'synced')::bool, false) \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?;
    Ok(row.map(|r| SlotState {
        plugin: r.get(0),
        slot_type: r.get(1),
        database: r.get(2),
        confirmed_flush_lsn: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
        wal_status: r.get(4),
        active_pid: r.get(5),
        synced: r.get(6),
    }))
}

/// Whether the server is a standby in recovery (`pg_is_in_recovery()`).
pub(crate) async fn in_recovery(client: &Client) -> Result<bool, SourceError> {
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(sql)?;
    Ok(row.get(0))
}

/// How far a slot trails the server's WAL, for `driftless status`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct SlotLag {
    /// The server's current WAL write position.
    pub current_wal_lsn: String,
    /// WAL bytes between `confirmed_flush_lsn` and the current position (`None`: no slot).
    pub lag_bytes: Option<i64>,
    /// The walsender's flush lag in seconds (`None` when no walsender streams the slot, or the
    /// server has no recent measurement: it reports none once caught up and idle).
    pub lag_seconds: Option<f64>,
}

/// Reads [`SlotLag`] for `slot`.
pub(crate) async fn slot_lag(client: &Client, slot: &str) -> Result<SlotLag, SourceError> {
    let row = client
        .query_one(
            "SELECT pg_current_wal_lsn()::text, \
             (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
              FROM pg_replication_slots WHERE slot_name = $1), \
             (SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_replication_slots s \
              JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(sql)?;
    Ok(SlotLag {
        current_wal_lsn: row.get(0),
        lag_bytes: row.get(1),
        lag_seconds: row.get(2),
    })
}

/// Drops a slot driftless itself created (only ever called for a slot whose checkpoint says
/// it was being created or snapshotted).
pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<(), SourceError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?;
    Ok(())
}

/// Resolves a type OID to the converter's [`PgType`]: built-ins directly, then enums (text),
/// domains (their base type) and arrays (their element type) through `pg_type`.
pub(crate) async fn resolve_type(client: &Client, oid: u32) -> Result<PgType, SourceError> {
    if let Some(t) = PgType::from_builtin_oid(oid) {
        return Ok(t);
    }
    let mut oid = oid;
    // Domains over domains: follow a bounded chain.
    for _ in 0..16 {
        let Some(row) = client
            .query_opt(
                "SELECT typtype::text, typbasetype, typelem, typdelim::text, typlen \
                 FROM pg_type WHERE oid = $1",
                &[&oid],
            )
            .await
            .map_err(sql)?
        else {
            return Ok(PgType::Other);
        };
        let typtype: String = row.get(0);
        let base: u32 = row.get(1);
        let elem: u32 = row.get(2);
        let delim: String = row.get(3);
        let typlen: i16 = row.get(4);
        if typtype == "d" {
            if let Some(t) = PgType::from_builtin_oid(base) {
                return Ok(t);
            }
            oid = base;
            continue;
        }
        if elem != 0 && typlen == -1 {
            let element = Box::pin(resolve_type(client, elem)).await?;
            let delimiter = delim.bytes().next().unwrap_or(b',');
            return Ok(PgType::Array {
                element: Box::new(element),
                delimiter,
            });
        }
        return Ok(PgType::Other);
    }
    Ok(PgType::Other)
}

/// Server facts the preflight checks.
#[derive(Clone, Debug)]
pub(crate) struct ServerFacts {
    /// `server_version_num`.
    pub version_num: i32,
    /// `wal_level`.
    pub wal_level: String,
    /// Current database.
    pub database: String,
    /// `current_user`.
    pub role: String,
    /// `server_encoding`.
    pub encoding: String,
    /// Role may replicate (REPLICATION or superuser).
    pub can_replicate: bool,
    /// `max_replication_slots`.
    pub max_replication_slots: i32,
    /// `synchronized_standby_slots` (`None` before PostgreSQL 17).
    pub synchronized_standby_slots: Option<String>,
}

/// Reads the facts checked by [`preflight_problems`].
pub(crate) async fn server_facts(client: &Client) -> Result<ServerFacts, SourceError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), \
             current_database()::text, current_setting('server_encoding'), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
             current_setting('max_replication_slots')::int, current_user::text, \
             current_setting('synchronized_standby_slots', true)",
            &[],
        )
        .await
        .map_err(sql)?;
    Ok(ServerFacts {
        version_num: row.get(0),
        wal_level: row.get(1),
        database: row.get(2),
        encoding: row.get(3),
        can_replicate: row.get(4),
        max_replication_slots: row.get(5),
        role: row.get(6),
        synchronized_standby_slots: row.get(7),
    })
}

/// The first PostgreSQL version (`server_version_num`) with failover slots.
const FAILOVER_SLOTS_SINCE: i32 = 170_000;

/// Problems with the server itself (pure over [`ServerFacts`] and whether the configuration
/// asks for a failover slot); each is `(message, hint)`.
pub(crate) fn preflight_problems(f: &ServerFacts, failover: bool) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if f.version_num < 140_000 {
        p.push((
            format!("PostgreSQL {} is too old", f.version_num),
            "driftless supports PostgreSQL 14 and later".into(),
        ));
    }
    if failover && f.version_num < FAILOVER_SLOTS_SINCE {
        p.push((
            format!(
                "source.failover = true needs PostgreSQL 17 or later, the server is {}",
                f.version_num
            ),
            "remove source.failover (a slot on an older server is not synchronized to \
             standbys) or upgrade the server"
                .into(),
        ));
    }
    if f.wal_level != "logical" {
        p.push((
            format!("wal_level is {}, not logical", f.wal_level),
            "set wal_level = logical in postgresql.conf and restart the server".into(),
        ));
    }
    if f.encoding != "UTF8" {
        p.push((
            format!("server_encoding is {}, not UTF8", f.encoding),
            "driftless emits JSON text and needs a UTF8 database".into(),
        ));
    }
    if !f.can_replicate {
        p.push((
            format!(
                "the role {} lacks REPLICATION (and is not a superuser): it may not replicate",
                f.role
            ),
            format!(
                "ALTER ROLE {} WITH REPLICATION (logical replication connections match \
                 pg_hba.conf lines for the database, e.g. host <db> <user> <addr> scram-sha-256)",
                quote_ident(&f.role)
            ),
        ));
    }
    if f.max_replication_slots < 1 {
        p.push((
            "max_replication_slots is 0".into(),
            "set max_replication_slots >= 1 and restart the server".into(),
        ));
    }
    p
}

/// Findings that do not stop capture (pure over [`ServerFacts`]); each is `(message, hint)`.
/// With a failover slot and no `synchronized_standby_slots`, a standby can be promoted
/// without changes capture already confirmed, and capture then refuses to resume.
pub(crate) fn preflight_warnings(f: &ServerFacts, failover: bool) -> Vec<(String, String)> {
    let unset = f
        .synchronized_standby_slots
        .as_deref()
        .is_some_and(|v| v.trim().is_empty());
    if !(failover && f.version_num >= FAILOVER_SLOTS_SINCE && unset) {
        return Vec::new();
    }
    vec![(
        "source.failover = true but synchronized_standby_slots is empty: the primary may send \
         capture changes a standby has not received; after a failover to that standby they \
         are lost, and capture refuses to resume past the point where its timeline forked"
            .into(),
        "set synchronized_standby_slots on the primary to the physical slot(s) of the \
         standby(s) that may be promoted (see \"Failover\" in the README)"
            .into(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_without_synchronized_standby_slots_is_a_warning() {
        let facts = |version_num, slots: Option<&str>| ServerFacts {
            version_num,
            wal_level: "logical".into(),
            database: "app".into(),
            role: "capture".into(),
            encoding: "UTF8".into(),
            can_replicate: true,
            max_replication_slots: 10,
            synchronized_standby_slots: slots.map(String::from),
        };
        let warned = preflight_warnings(&facts(170_010, Some("")), true);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].0.contains("synchronized_standby_slots is empty"));
        assert!(preflight_problems(&facts(170_010, Some("")), true).is_empty());
        assert!(preflight_warnings(&facts(170_010, Some("")), false).is_empty());
        assert!(preflight_warnings(&facts(170_010, Some("standby")), true).is_empty());
        assert!(preflight_warnings(&facts(160_000, None), true).is_empty());
    }

    #[test]
    fn preflight_lists_every_server_problem() {
        let facts = ServerFacts {
            version_num: 130_000,
            wal_level: "replica".into(),
            database: "app".into(),
            role: "capture".into(),
            encoding: "LATIN1".into(),
            can_replicate: false,
            max_replication_slots: 0,
            synchronized_standby_slots: None,
        };
        assert_eq!(preflight_problems(&facts, false).len(), 5);
        assert_eq!(preflight_problems(&facts, true).len(), 6);
        let ok = ServerFacts {
            version_num: 150_018,
            wal_level: "logical".into(),
            encoding: "UTF8".into(),
            can_replicate: true,
            max_replication_slots: 10,
            ..facts
        };
        assert!(preflight_problems(&ok, false).is_empty());
        let failover = preflight_problems(&ok, true);
        assert_eq!(failover.len(), 1, "{failover:?}");
        assert!(failover[0].0.starts_with("source.failover"), "{failover:?}");
        let pg17 = ServerFacts {
            version_num: 170_010,
            ..ok
        };
        assert!(preflight_problems(&pg17, true).is_empty());
    }
}
