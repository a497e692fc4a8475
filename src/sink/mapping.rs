//! Field mapping from a change event's row to a CRM record's properties, and the schema check
//! against the destination's property definitions. Pure.
//!
//! Owns how column values become CRM property values.
//! Invariants:
//! - every property value is a string (HubSpot takes nothing else): numbers keep their exact
//!   digits, booleans are `"true"`/`"false"`, NULL clears the property (`""`), arrays become
//!   `;`-separated values (HubSpot multi-checkbox), objects their compact JSON;
//! - dates are sent as HubSpot expects: `date` properties as midnight-UTC epoch milliseconds,
//!   `datetime` properties as epoch milliseconds of the instant;
//! - a value that cannot be mapped (an enumeration value without a mapping, an unparsable date)
//!   is a [`MappingError`], which the runner treats as poison (dead letter), never a silent drop;
//! - a value into a CRM number property must be a finite number: Postgres `numeric` and float
//!   `NaN`, `Infinity` and `-Infinity` (which capture keeps as text) are a [`MappingError`]
//!   ([`is_finite_number`]), never sent for the CRM to refuse the whole batch;
//! - a date or datetime into a CRM date field must fall in years 1-9999 AD ([`crm_date`],
//!   [`in_crm_years`]): a Postgres BC date, `infinity` or a later year (which capture keeps as
//!   text) is a [`MappingError`], never cut or shifted into another date;
//! - [`check_schema`] reports every problem at once: unknown property, read-only property,
//!   incompatible type, enumeration value that is not an option, `id_property` not unique.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::fields::FieldRule;
use crate::event::Row;

/// Destination property types that change how values are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyType {
    /// Free text (also phone numbers).
    String,
    /// A number.
    Number,
    /// A calendar date.
    Date,
    /// An instant.
    Datetime,
    /// One of a set of options (`;`-separated for multi-select).
    Enumeration,
    /// `true` / `false`.
    Bool,
}

impl PropertyType {
    /// Parses HubSpot's `type` field.
    pub(crate) fn parse(name: &str) -> Option<PropertyType> {
        match name {
            "string" | "phone_number" => Some(PropertyType::String),
            "number" => Some(PropertyType::Number),
            "date" => Some(PropertyType::Date),
            "datetime" => Some(PropertyType::Datetime),
            "enumeration" => Some(PropertyType::Enumeration),
            "bool" => Some(PropertyType::Bool),
            _ => None,
        }
    }
}

/// A destination property definition (from the properties API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Internal name.
    pub name: String,
    /// Type.
    pub kind: PropertyType,
    /// `modificationMetadata.readOnlyValue`.
    pub read_only: bool,
    /// `hasUniqueValue`.
    pub unique: bool,
    /// Internal option values (enumerations).
    pub options: Vec<String>,
}

/// A value that cannot be written (poison: the record goes to the dead-letter topic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MappingError {
    /// An enumeration/value map has no entry for the value.
    #[error("column {column}: value has no mapping for property {property}")]
    Unmapped {
        /// Column.
        column: String,
        /// Property.
        property: String,
    },
    /// A date or datetime could not be parsed.
    #[error("column {column}: not a valid {kind} for property {property}")]
    BadDate {
        /// Column.
        column: String,
        /// Property.
        property: String,
        /// `date` or `datetime`.
        kind: &'static str,
    },
    /// A value does not fit the destination field's type (e.g. text into an integer field).
    #[error("column {column}: not a valid {kind} for property {property}")]
    BadValue {
        /// Column.
        column: String,
        /// Property.
        property: String,
        /// Expected type, e.g. `integer`.
        kind: &'static str,
    },
    /// The id column is missing or null.
    #[error("column {column} (the record's unique id) is missing or null")]
    MissingId {
        /// Column.
        column: String,
    },
}

/// Plain string form of a JSON value (see the module invariants).
pub(crate) fn value_string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(value_string).collect::<Vec<_>>().join(";"),
        Value::Object(_) => v.to_string(),
    }
}

/// The rules whose column `row` carries, each with its value. A column absent from the row
/// (unchanged TOAST) is left out, so the destination keeps the property's value.
pub(crate) fn carried<'a>(
    rules: &'a [FieldRule],
    row: &'a Row,
) -> impl Iterator<Item = (&'a FieldRule, &'a Value)> {
    rules
        .iter()
        .filter_map(|rule| Some((rule, row.get(&rule.column)?)))
}

/// The text of a non-null column value after `rule`'s transform and value map (a value the
/// map does not list is [`MappingError::Unmapped`]). The one reading of a rule both CRMs use.
pub(crate) fn rule_text(rule: &FieldRule, v: &Value) -> Result<String, MappingError> {
    let mut s = value_string(v);
    if let Some(t) = rule.transform {
        s = t.apply(&s);
    }
    if let Some(map) = &rule.map {
        s = map.get(&s).cloned().ok_or_else(|| MappingError::Unmapped {
            column: rule.column.clone(),
            property: rule.property.clone(),
        })?;
    }
    Ok(s)
}

/// Whether a year fits a CRM date field (1-9999 AD: what both CRMs' date formats can write).
pub(crate) fn in_crm_years(year: i32) -> bool {
    (1..=9999).contains(&year)
}

/// The calendar date of a date or timestamp text as capture writes it: `YYYY-MM-DD`, alone or
/// followed by a time (`T...` or ` ...`). None for BC dates (`0044-03-15 BC`), `infinity`, years
/// outside 1-9999 and anything else: never a date cut out of a text that means another one.
pub(crate) fn crm_date(s: &str) -> Option<chrono::NaiveDate> {
    let s = s.trim();
    let b = s.as_bytes();
    let shaped = b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
    let rest = s.get(10..)?;
    if !shaped || !(rest.is_empty() || rest.starts_with(['T', ' '])) || s.ends_with("BC") {
        return None;
    }
    let day = chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").ok()?;
    in_crm_years(chrono::Datelike::year(&day)).then_some(day)
}

/// Whether `s` is a finite number (`NaN`, `Infinity`, `-Infinity` and overflowing digits are
/// not: no CRM number field holds them).
pub(crate) fn is_finite_number(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok_and(f64::is_finite)
}

fn epoch_ms_of_date(s: &str) -> Option<i64> {
    let day = crm_date(s)?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn epoch_ms_of_datetime(s: &str) -> Option<i64> {
    use chrono::Datelike as _;
    let utc = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        in_crm_years(t.year()).then_some(())?;
        t.to_utc()
    } else {
        // timestamp without time zone: taken as UTC.
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc()
    };
    in_crm_years(utc.year()).then(|| utc.timestamp_millis())
}

/// Maps a row to properties. `schema` (when known) selects date/datetime encodings.
pub(crate) fn to_properties(
    rules: &[FieldRule],
    schema: &BTreeMap<String, Property>,
    row: &Row,
) -> Result<BTreeMap<String, String>, MappingError> {
    let mut out = BTreeMap::new();
    for (rule, v) in carried(rules, row) {
        // NULL clears the property: no transform or map applies to it.
        let mut s = if v.is_null() {
            String::new()
        } else {
            rule_text(rule, v)?
        };
        let kind = schema.get(&rule.property).map(|p| p.kind);
        if !s.is_empty() {
            let bad = |kind| MappingError::BadDate {
                column: rule.column.clone(),
                property: rule.property.clone(),
                kind,
            };
            match kind {
                Some(PropertyType::Number) if !is_finite_number(&s) => {
                    return Err(MappingError::BadValue {
                        column: rule.column.clone(),
                        property: rule.property.clone(),
                        kind: "finite number",
                    });
                }
                Some(PropertyType::Date) => {
                    s = epoch_ms_of_date(&s).ok_or_else(|| bad("date"))?.to_string();
                }
                Some(PropertyType::Datetime) => {
                    s = epoch_ms_of_datetime(&s)
                        .ok_or_else(|| bad("datetime"))?
                        .to_string();
                }
                _ => {}
            }
        }
        out.insert(rule.property.clone(), s);
    }
    Ok(out)
}

/// The record's unique id value (for `idProperty` upserts), after the rule's transform.
pub(crate) fn id_value(
    rules: &[FieldRule],
    id_property: &str,
    row: &Row,
) -> Result<String, MappingError> {
    let rule = rules.iter().find(|r| r.property == id_property);
    let column = rule.map(|r| r.column.as_str()).unwrap_or(id_property);
    match row.get(column) {
        Some(v) if !v.is_null() => {
            let s = value_string(v);
            Ok(match rule.and_then(|r| r.transform) {
                Some(t) => t.apply(&s),
                None => s,
            })
        }
        _ => Err(MappingError::MissingId {
            column: column.to_string(),
        }),
    }
}

/// A problem found by [`check_schema`], with the config path of the rule at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SchemaProblem {
    /// Config path, e.g. `sinks[0].fields.email`.
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
}

/// Checks a mapping against the destination schema; returns every problem.
pub(crate) fn check_schema(
    sink_path: &str,
    rules: &[FieldRule],
    id_property: &str,
    schema: &BTreeMap<String, Property>,
) -> Vec<SchemaProblem> {
    let mut out = Vec::new();
    let mut problem = |path: String, message: String| out.push(SchemaProblem { path, message });
    match schema.get(id_property) {
        None => problem(
            format!("{sink_path}.id_property"),
            format!("property {id_property} does not exist at the destination"),
        ),
        Some(p) if !p.unique => problem(
            format!("{sink_path}.id_property"),
            format!("property {id_property} is not unique (hasUniqueValue is false)"),
        ),
        _ => {}
    }
    for rule in rules {
        let path = format!("{sink_path}.fields.{}", rule.column);
        let Some(p) = schema.get(&rule.property) else {
            problem(
                path,
                format!(
                    "property {} does not exist at the destination",
                    rule.property
                ),
            );
            continue;
        };
        if p.read_only {
            problem(
                path.clone(),
                format!("property {} is read-only", rule.property),
            );
        }
        if p.kind == PropertyType::Enumeration
            && let Some(map) = &rule.map
        {
            for target in map.values().filter(|v| !p.options.contains(v)) {
                problem(
                    path.clone(),
                    format!("{target:?} is not an option of property {}", rule.property),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::test_support::{assert_problem_paths, mapped_rule};
    use serde_json::json;

    #[test]
    fn bc_and_out_of_range_dates_are_refused_never_shifted() {
        let rules = [
            FieldRule::new("birthday", "birthday"),
            FieldRule::new("seen_at", "seen_at"),
        ];
        let refused = |column: &str, value: &str| {
            let row = json!({ column: value });
            let err = to_properties(&rules, &schema(), row.as_object().unwrap()).unwrap_err();
            assert!(
                matches!(err, MappingError::BadDate { .. }),
                "{value}: {err}"
            );
            assert!(
                !err.to_string().contains(value),
                "no value in the reason: {err}"
            );
        };
        for date in [
            "0044-03-15 BC",
            "4713-01-01 BC",
            "10000-01-01",
            "infinity",
            "-infinity",
            "2024-03-01 BC",
            "2024-03-01junk",
        ] {
            refused("birthday", date);
        }
        for time in [
            "0044-03-15 12:00:00+00 BC",
            "10000-01-01 00:00:00+00",
            "10000-01-01T00:00:00",
            "9999-12-31T23:00:00-05:00",
            "infinity",
        ] {
            refused("seen_at", time);
        }
        assert_eq!(
            crm_date("0001-01-01"),
            chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        );
        assert_eq!(
            crm_date("2024-03-01T12:34:56.123456Z"),
            chrono::NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        let row = json!({"birthday": "9999-12-31", "seen_at": "9999-12-31T23:59:59Z"});
        let props = to_properties(&rules, &schema(), row.as_object().unwrap()).unwrap();
        assert_eq!(props["birthday"], "253402214400000");
        assert_eq!(props["seen_at"], "253402300799000");
    }

    fn prop(name: &str, kind: PropertyType) -> (String, Property) {
        let p = Property {
            name: name.into(),
            kind,
            read_only: false,
            unique: name == "email",
            options: vec!["lead".into(), "customer".into()],
        };
        (name.into(), p)
    }

    fn schema() -> BTreeMap<String, Property> {
        BTreeMap::from([
            prop("email", PropertyType::String),
            prop("firstname", PropertyType::String),
            prop("score", PropertyType::Number),
            prop("birthday", PropertyType::Date),
            prop("seen_at", PropertyType::Datetime),
            prop("lifecyclestage", PropertyType::Enumeration),
            prop("vip", PropertyType::Bool),
            prop("tags", PropertyType::Enumeration),
        ])
    }

    #[test]
    fn values_become_strings_with_hubspot_encodings() {
        let mut email = FieldRule::new("email", "email");
        email.transform = Some(crate::config::fields::Transform::Lowercase);
        let stage = mapped_rule("lifecycle", "lifecyclestage", &[("Lead", "lead")]);
        let rules = vec![
            email,
            FieldRule::new("first_name", "firstname"),
            FieldRule::new("score", "score"),
            FieldRule::new("birthday", "birthday"),
            FieldRule::new("seen", "seen_at"),
            stage,
            FieldRule::new("vip", "vip"),
            FieldRule::new("tags", "tags"),
        ];
        let row = json!({
            "email": "Ada@Example.COM", "first_name": null, "score": "12345678901234567890.50",
            "birthday": "1815-12-10", "seen": "2026-11-27T10:15:02.123456Z", "lifecycle": "Lead",
            "vip": true, "tags": ["a", "b"]
        });
        let props = to_properties(&rules, &schema(), row.as_object().unwrap()).unwrap();
        assert_eq!(props["email"], "ada@example.com");
        assert_eq!(props["firstname"], "", "NULL clears the property");
        assert_eq!(props["score"], "12345678901234567890.50", "exact digits");
        assert_eq!(props["birthday"], "-4861728000000", "midnight UTC epoch ms");
        assert_eq!(props["seen_at"], "1795774502123");
        assert_eq!(props["lifecyclestage"], "lead");
        assert_eq!(props["vip"], "true");
        assert_eq!(props["tags"], "a;b");
        assert_eq!(
            id_value(&rules, "email", row.as_object().unwrap()).unwrap(),
            "ada@example.com"
        );
    }

    #[test]
    fn nan_and_infinities_into_number_properties_are_refused() {
        let rules = [FieldRule::new("score", "score")];
        for bad in ["NaN", "Infinity", "-Infinity", "1e999", "12abc"] {
            let row = json!({ "score": bad });
            let err = to_properties(&rules, &schema(), row.as_object().unwrap()).unwrap_err();
            assert!(
                matches!(
                    err,
                    MappingError::BadValue {
                        kind: "finite number",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
            assert!(!err.to_string().contains(bad), "no value in the reason");
        }
        for good in ["0", "-1.5", "12345678901234567890.50", "1e3"] {
            let row = json!({ "score": good });
            let props = to_properties(&rules, &schema(), row.as_object().unwrap()).unwrap();
            assert_eq!(props["score"], good);
        }
    }

    #[test]
    fn unmappable_values_are_errors_and_absent_columns_are_skipped() {
        let stage = mapped_rule("lifecycle", "lifecyclestage", &[("Lead", "lead")]);
        let row = json!({"lifecycle": "Partner"});
        let err = to_properties(
            std::slice::from_ref(&stage),
            &schema(),
            row.as_object().unwrap(),
        );
        assert!(matches!(err, Err(MappingError::Unmapped { .. })));
        let bad_date = json!({"birthday": "not a date"});
        let err = to_properties(
            &[FieldRule::new("birthday", "birthday")],
            &schema(),
            bad_date.as_object().unwrap(),
        );
        assert!(matches!(
            err,
            Err(MappingError::BadDate { kind: "date", .. })
        ));
        let toast = json!({"email": "x@y.z"});
        let props = to_properties(
            &[FieldRule::new("bio", "firstname")],
            &schema(),
            toast.as_object().unwrap(),
        );
        assert!(
            props.unwrap().is_empty(),
            "an unchanged TOAST column is not written"
        );
        assert!(matches!(
            id_value(&[], "email", json!({"email": null}).as_object().unwrap()),
            Err(MappingError::MissingId { .. })
        ));
    }

    #[test]
    fn schema_check_lists_every_problem() {
        let mut s = schema();
        s.get_mut("firstname").unwrap().read_only = true;
        let stage = mapped_rule(
            "lifecycle",
            "lifecyclestage",
            &[("L", "lead"), ("X", "nope")],
        );
        let rules = vec![
            FieldRule::new("first_name", "firstname"),
            FieldRule::new("x", "missing"),
            stage,
        ];
        assert_problem_paths(
            &check_schema("sinks[0]", &rules, "firstname", &s),
            &[
                "sinks[0].id_property",
                "sinks[0].fields.first_name",
                "sinks[0].fields.x",
                "sinks[0].fields.lifecycle",
            ],
        );
        assert!(
            check_schema("s", &[FieldRule::new("email", "email")], "email", &schema()).is_empty()
        );
    }
}
