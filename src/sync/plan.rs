//! Per-record sync plans (pure): which fields go to the CRM, which come back to Postgres.
//!
//! Owns the translation between a Postgres row, a CRM record and the ledger, using
//! [`resolve::decide`](super::resolve::decide) per mapped field. Values are compared in their
//! CRM string form (the output of [`to_properties`](crate::sink::mapping::to_properties)), so
//! the comparison is the same whichever side evaluates it. Rules:
//! - **outbound** (a change event of the sink's table): the row compared is Postgres's *current*
//!   row; a column whose event value is not the current value is stale and left to the later
//!   event that carries the current one (or to the inbound write that produced it). A conflict
//!   is settled here, where both timestamps are known (the event's commit time, the property's
//!   last change in the CRM's history);
//! - **inbound** (a CRM record changed): a field only the CRM changed comes back to Postgres; a
//!   conflict owned by the CRM comes back too; a conflict owned by Postgres or by `latest` is
//!   left to the outbound side, which has the Postgres commit time (the Postgres change that
//!   made it a conflict always has an event still to come);
//! - a field whose values already agree only updates the ledger; the id property is never
//!   pulled;
//! - a Postgres value the CRM field cannot take (a BC date, `NaN` into a number, an option
//!   without a mapping) is pushed all the same on the outbound side, so the CRM's mapping
//!   refuses the record and it is dead-lettered with the reason; it is never left out of the
//!   write silently, and never put in the ledger;
//! - a CRM value that should come back but does not map back to its column (no such option in
//!   the field's value map, a date that is not one) is neither pulled nor put in the ledger; the
//!   plan names its column (`unfit`), and the inbound half sets the record aside.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::resolve::{Decision, FieldState, Flow, decide, value_hash};
use super::store::LedgerRow;
use crate::config::fields::FieldRule;
use crate::config::two_way::{Owner, TwoWay};
use crate::event::Row;
use crate::sink::mapping::{Property, PropertyType, to_properties, value_string};

/// A CRM record as read (properties in their string form, per-property change times).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CrmRecord {
    /// CRM record id.
    pub(crate) id: String,
    /// Property values.
    pub(crate) properties: BTreeMap<String, String>,
    /// When each property last changed.
    pub(crate) changed_at: BTreeMap<String, DateTime<Utc>>,
}

/// A conflict that was settled (for metrics and the audit trail; no values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// Column.
    pub(crate) column: String,
    /// Postgres's change time, if known.
    pub(crate) postgres_at: Option<DateTime<Utc>>,
    /// The CRM's change time, if known.
    pub(crate) crm_at: Option<DateTime<Utc>>,
    /// `postgres` or `crm`.
    pub(crate) winner: &'static str,
}

/// What to do with one record.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Columns whose Postgres value goes to the CRM.
    pub(crate) push: Vec<String>,
    /// Column → text value (None = NULL) to write into Postgres.
    pub(crate) pull: BTreeMap<String, Option<String>>,
    /// Property → hash of the value both sides hold once the plan is carried out.
    pub(crate) ledger: BTreeMap<String, String>,
    /// Conflicts settled by this plan.
    pub(crate) conflicts: Vec<Conflict>,
    /// Columns the CRM's value should come back to but does not map back to (not pulled, not
    /// in the ledger); the inbound half sets such a record aside.
    pub(crate) unfit: Vec<String>,
}

/// Which side is evaluating.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side<'a> {
    /// A change event: its row image and commit time.
    Outbound {
        /// The event's row image.
        event_row: &'a Row,
        /// The event's commit time.
        committed_at: Option<DateTime<Utc>>,
    },
    /// A CRM change.
    Inbound,
}

/// The CRM string form of one column of a row (None: absent or unmappable).
fn crm_form(rule: &FieldRule, schema: &BTreeMap<String, Property>, row: &Row) -> Option<String> {
    to_properties(std::slice::from_ref(rule), schema, row)
        .ok()?
        .remove(&rule.property)
}

/// The Postgres text form of a CRM value for a column (None: cannot be mapped back).
pub(crate) fn postgres_form(
    rule: &FieldRule,
    schema: &BTreeMap<String, Property>,
    crm: &str,
) -> Option<Option<String>> {
    if crm.is_empty() {
        return Some(None);
    }
    let value = match &rule.map {
        Some(map) => {
            let mut keys = map
                .iter()
                .filter(|(_, v)| v.as_str() == crm)
                .map(|(k, _)| k);
            let key = keys.next()?;
            if keys.next().is_some() {
                // Two column values map to this option: which one is meant is unknown.
                return None;
            }
            key.clone()
        }
        None => crm.to_string(),
    };
    let ms = || {
        value
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
    };
    Some(Some(match schema.get(&rule.property).map(|p| p.kind) {
        Some(PropertyType::Date) => ms()?.format("%Y-%m-%d").to_string(),
        Some(PropertyType::Datetime) => ms()?.to_rfc3339(),
        _ => value,
    }))
}

/// A sink's mapping as two-way sync sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mapping<'a> {
    /// Column → property rules.
    pub(crate) rules: &'a [FieldRule],
    /// The CRM's properties.
    pub(crate) schema: &'a BTreeMap<String, Property>,
    /// Ownership and inbound settings.
    pub(crate) two_way: &'a TwoWay,
    /// The unique property records are matched by.
    pub(crate) id_property: &'a str,
}

/// Plans one record. `current` is Postgres's current row, `crm` the CRM record (None: it does
/// not exist yet), `ledger` what both sides last agreed on.
pub(crate) fn plan(
    m: Mapping<'_>,
    side: Side<'_>,
    current: &Row,
    crm: Option<&CrmRecord>,
    ledger: Option<&LedgerRow>,
) -> Plan {
    let Mapping {
        rules,
        schema,
        two_way,
        id_property,
    } = m;
    let mut out = Plan::default();
    for rule in rules {
        let pg = match to_properties(std::slice::from_ref(rule), schema, current) {
            Ok(mut p) => match p.remove(&rule.property) {
                Some(pg) => pg,
                None => continue,
            },
            Err(_) => {
                // A current value the CRM field cannot take: pushed, so the CRM's mapping
                // refuses the record (dead letter with the reason), never left out silently.
                if let Side::Outbound { event_row, .. } = side
                    && event_row.get(&rule.column) == current.get(&rule.column)
                {
                    out.push.push(rule.column.clone());
                }
                continue;
            }
        };
        let is_id = rule.property == id_property;
        let committed_at = match side {
            Side::Outbound {
                event_row,
                committed_at,
            } => {
                if crm_form(rule, schema, event_row).as_ref() != Some(&pg) {
                    // Stale event value: a later event (or an inbound write) owns this column.
                    continue;
                }
                committed_at
            }
            Side::Inbound => None,
        };
        let Some(crm) = crm else {
            // A record the CRM does not have yet: everything goes (outbound creates it).
            out.push.push(rule.column.clone());
            out.ledger.insert(rule.property.clone(), value_hash(&pg));
            continue;
        };
        let crm_value = crm
            .properties
            .get(&rule.property)
            .cloned()
            .unwrap_or_default();
        let (pg_hash, crm_hash) = (value_hash(&pg), value_hash(&crm_value));
        let owner = two_way.owner(&rule.column);
        let state = FieldState {
            ledger: ledger
                .and_then(|l| l.fields.get(&rule.property))
                .map(String::as_str),
            postgres: &pg_hash,
            crm: &crm_hash,
            postgres_at: committed_at,
            crm_at: crm.changed_at.get(&rule.property).copied(),
        };
        let Decision { flow, conflict } = decide(owner, &state);
        let (postgres_at, crm_at) = (state.postgres_at, state.crm_at);
        let inbound = matches!(side, Side::Inbound);
        if inbound && conflict && owner != Owner::Crm {
            // Settled by the outbound side, which knows when Postgres changed.
            continue;
        }
        match flow {
            Flow::InSync => {
                out.ledger.insert(rule.property.clone(), pg_hash.clone());
            }
            Flow::ToCrm if inbound => {}
            Flow::ToCrm => {
                out.push.push(rule.column.clone());
                out.ledger.insert(rule.property.clone(), pg_hash.clone());
            }
            Flow::ToPostgres if is_id => {}
            Flow::ToPostgres => {
                let Some(value) = postgres_form(rule, schema, &crm_value) else {
                    tracing::warn!(column = %rule.column, property = %rule.property,
                        "CRM value cannot be mapped back to the column; left unchanged");
                    out.unfit.push(rule.column.clone());
                    continue;
                };
                out.pull.insert(rule.column.clone(), value);
                out.ledger.insert(rule.property.clone(), crm_hash.clone());
            }
        }
        if conflict {
            out.conflicts.push(Conflict {
                column: rule.column.clone(),
                postgres_at,
                crm_at,
                winner: if flow == Flow::ToPostgres {
                    "crm"
                } else {
                    "postgres"
                },
            });
        }
    }
    out
}

/// A CRM-created record as a new row: the plan pulls every mapped property that maps back
/// (the id property is left to the table's key default); `unfit` names those that do not.
pub(crate) fn new_row(m: Mapping<'_>, crm: &CrmRecord) -> Plan {
    let Mapping {
        rules,
        schema,
        id_property,
        ..
    } = m;
    let mut out = Plan::default();
    for rule in rules.iter().filter(|r| r.property != id_property) {
        let crm_value = crm
            .properties
            .get(&rule.property)
            .cloned()
            .unwrap_or_default();
        if let Some(v) = postgres_form(rule, schema, &crm_value) {
            out.pull.insert(rule.column.clone(), v);
            out.ledger
                .insert(rule.property.clone(), value_hash(&crm_value));
        } else {
            out.unfit.push(rule.column.clone());
        }
    }
    out
}

/// The record key (primary key as text) of a change event's key.
pub(crate) fn record_key(key: &Row) -> Option<String> {
    match key.values().collect::<Vec<_>>().as_slice() {
        [one] => Some(value_string(one)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use crate::config::TableName;
    use crate::config::two_way::{OnCrmCreate, OnCrmDelete};
    use serde_json::json;

    fn two_way(ownership: &[(&str, Owner)]) -> TwoWay {
        TwoWay {
            inbound_table: TableName {
                schema: "public".into(),
                name: "contacts".into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            webhook_path: "/hooks".into(),
            reconcile_every: None,
            reconcile_lag: std::time::Duration::from_secs(300),
            client_secret: Some(SecretSource::Env("S".into())),
            public_url: None,
            accept_legacy_signatures: false,
            on_crm_create: OnCrmCreate::Insert,
            initial_import: false,
            on_crm_delete: OnCrmDelete::Ignore,
            ownership: ownership.iter().map(|(c, o)| (c.to_string(), *o)).collect(),
            default_owner: Owner::Latest,
        }
    }

    fn rules() -> Vec<FieldRule> {
        let mut stage = FieldRule::new("lifecycle", "lifecyclestage");
        stage.map = Some(BTreeMap::from([
            ("lead".into(), "lead".into()),
            ("customer".into(), "customer".into()),
        ]));
        vec![
            FieldRule::new("id", "pg_external_id"),
            FieldRule::new("first_name", "firstname"),
            stage,
        ]
    }

    fn mapping<'a>(rules: &'a [FieldRule], two_way: &'a TwoWay) -> Mapping<'a> {
        static SCHEMA: std::sync::LazyLock<BTreeMap<String, Property>> =
            std::sync::LazyLock::new(BTreeMap::new);
        Mapping {
            rules,
            schema: &SCHEMA,
            two_way,
            id_property: "pg_external_id",
        }
    }

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    fn ts(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn crm(first: &str, stage: &str, at: i64) -> CrmRecord {
        CrmRecord {
            id: "901".into(),
            properties: BTreeMap::from([
                ("pg_external_id".into(), "7".into()),
                ("firstname".into(), first.into()),
                ("lifecyclestage".into(), stage.into()),
            ]),
            changed_at: BTreeMap::from([
                ("firstname".into(), ts(at)),
                ("lifecyclestage".into(), ts(at)),
            ]),
        }
    }

    fn ledger(first: &str, stage: &str) -> LedgerRow {
        LedgerRow {
            key: "7".into(),
            crm_id: Some("901".into()),
            fields: BTreeMap::from([
                ("pg_external_id".into(), value_hash("7")),
                ("firstname".into(), value_hash(first)),
                ("lifecyclestage".into(), value_hash(stage)),
            ]),
        }
    }

    /// The plan of an outbound change of `event` committed at 100, against `current`, the
    /// CRM record and the ledger.
    fn outbound(
        m: Mapping<'_>,
        event: &Row,
        current: &Row,
        crm: &CrmRecord,
        l: &LedgerRow,
    ) -> Plan {
        let side = Side::Outbound {
            event_row: event,
            committed_at: Some(ts(100)),
        };
        plan(m, side, current, Some(crm), Some(l))
    }

    /// The plan of an inbound change of the CRM record against `current` and the ledger.
    fn inbound(m: Mapping<'_>, current: &Row, crm: &CrmRecord, l: &LedgerRow) -> Plan {
        plan(m, Side::Inbound, current, Some(crm), Some(l))
    }

    #[test]
    fn outbound_pushes_postgres_changes_and_skips_what_agrees() {
        let (rs, tw) = (rules(), two_way(&[]));
        let current = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "lead"}));
        let (crm, l) = (crm("Augusta", "lead", 50), ledger("Augusta", "lead"));
        let p = outbound(mapping(&rs, &tw), &current, &current, &crm, &l);
        assert_eq!(p.push, ["first_name"]);
        assert!(p.pull.is_empty());
        assert_eq!(p.ledger["firstname"], value_hash("Ada"));
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn a_stale_event_column_is_left_to_the_later_change() {
        let (rs, tw) = (rules(), two_way(&[]));
        let current = row(json!({"id": 7, "first_name": "Grace", "lifecycle": "lead"}));
        let event = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "lead"}));
        let (crm, l) = (crm("Augusta", "lead", 50), ledger("Augusta", "lead"));
        let p = outbound(mapping(&rs, &tw), &event, &current, &crm, &l);
        assert!(!p.push.contains(&"first_name".to_string()));
        assert!(!p.ledger.contains_key("firstname"));
    }

    #[test]
    fn conflicts_follow_ownership_on_both_sides() {
        // Both sides changed both fields since the ledger.
        let current = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "customer"}));
        let crm = crm("Grace", "lead", 200);
        let l = ledger("Augusta", "other");
        let tw = two_way(&[("first_name", Owner::Postgres), ("lifecycle", Owner::Crm)]);
        let (rs, latest_tw) = (rules(), two_way(&[]));
        let out = outbound(mapping(&rs, &tw), &current, &current, &crm, &l);
        assert_eq!(out.push, ["first_name"]);
        assert_eq!(
            out.pull,
            BTreeMap::from([("lifecycle".into(), Some("lead".into()))])
        );
        assert_eq!(out.conflicts.len(), 2);
        // Inbound: only the CRM-owned field comes back; Postgres-owned waits for outbound.
        let inb = inbound(mapping(&rs, &tw), &current, &crm, &l);
        assert!(inb.push.is_empty());
        assert_eq!(inb.pull, out.pull);
        // latest: the CRM changed at 200, Postgres committed at 100 → the CRM wins, outbound.
        let latest = outbound(mapping(&rs, &latest_tw), &current, &current, &crm, &l);
        assert!(latest.push.is_empty());
        assert_eq!(latest.pull.len(), 2);
        // Inbound leaves latest conflicts alone.
        let inb = inbound(mapping(&rs, &latest_tw), &current, &crm, &l);
        assert!(inb.pull.is_empty() && inb.conflicts.is_empty());
    }

    #[test]
    fn inbound_pulls_crm_only_changes_and_drops_echoes() {
        let (rs, tw) = (rules(), two_way(&[]));
        let current = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "lead"}));
        let l = ledger("Ada", "lead");
        // Echo: the CRM holds what we wrote (= ledger = Postgres): nothing to do.
        let echo = inbound(mapping(&rs, &tw), &current, &crm("Ada", "lead", 300), &l);
        assert!(echo.pull.is_empty() && echo.push.is_empty());
        // A CRM edit: comes back, mapped through the inverse of the value map.
        let edit = inbound(
            mapping(&rs, &tw),
            &current,
            &crm("Ada", "customer", 300),
            &l,
        );
        assert_eq!(
            edit.pull,
            BTreeMap::from([("lifecycle".into(), Some("customer".into()))])
        );
    }

    #[test]
    fn an_unmappable_postgres_value_is_pushed_so_the_record_is_refused() {
        let (rs, tw) = (rules(), two_way(&[]));
        // `partner` has no option in the value map.
        let current = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "partner"}));
        let (crm, l) = (crm("Ada", "lead", 50), ledger("Ada", "lead"));
        let p = outbound(mapping(&rs, &tw), &current, &current, &crm, &l);
        assert_eq!(p.push, ["lifecycle"]);
        assert!(!p.ledger.contains_key("lifecyclestage"));
        // A stale event value is left to the later event, as for any column.
        let event = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "lead"}));
        let p = outbound(mapping(&rs, &tw), &event, &current, &crm, &l);
        assert!(p.push.is_empty());
        // Inbound never pushes.
        assert!(
            inbound(mapping(&rs, &tw), &current, &crm, &l)
                .push
                .is_empty()
        );
    }

    #[test]
    fn crm_values_that_do_not_map_back_make_the_record_unfit() {
        let (rs, tw) = (rules(), two_way(&[]));
        let current = row(json!({"id": 7, "first_name": "Ada", "lifecycle": "lead"}));
        let l = ledger("Ada", "lead");
        // `evangelist` is no option of the value map: it cannot come back.
        let p = inbound(
            mapping(&rs, &tw),
            &current,
            &crm("Ada", "evangelist", 300),
            &l,
        );
        assert_eq!(p.unfit, ["lifecycle"]);
        assert!(p.pull.is_empty() && !p.ledger.contains_key("lifecyclestage"));
        let new = new_row(mapping(&rs, &tw), &crm("Ada", "evangelist", 300));
        assert_eq!(new.unfit, ["lifecycle"]);
        assert!(!new.pull.contains_key("lifecycle"));
    }

    #[test]
    fn values_map_back_to_postgres_forms() {
        let schema = BTreeMap::from([(
            "birthday".to_string(),
            Property {
                name: "birthday".into(),
                kind: PropertyType::Date,
                read_only: false,
                unique: false,
                options: vec![],
            },
        )]);
        let rule = FieldRule::new("born", "birthday");
        assert_eq!(
            postgres_form(&rule, &schema, "1700006400000"),
            Some(Some("2023-11-15".into()))
        );
        assert_eq!(postgres_form(&rule, &schema, ""), Some(None));
        let mut ambiguous = FieldRule::new("stage", "lifecyclestage");
        ambiguous.map = Some(BTreeMap::from([
            ("a".into(), "lead".into()),
            ("b".into(), "lead".into()),
        ]));
        assert_eq!(postgres_form(&ambiguous, &schema, "lead"), None);
        assert_eq!(record_key(&row(json!({"id": 42}))).as_deref(), Some("42"));
    }
}
