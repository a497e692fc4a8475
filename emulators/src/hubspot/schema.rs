//! The seeded property schemas of the HubSpot emulator's object types, and value validation.
//!
//! Owns which object types exist (`contacts`, `companies`, `deals`), their properties (type,
//! options, uniqueness, read-only), the properties API's rendering of them, and how a written
//! string value is checked and normalised for its property's type. Invariant: the schemas are
//! built once and never change; `email` (contacts) and `pg_external_id` are the unique
//! properties, `hs_object_id` is never usable as an `idProperty`.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};

use super::response::{error, iso, json_response};
use crate::http::RawPath;

/// The type of a property's values.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum PropertyType {
    Str,
    Number,
    Date,
    DateTime,
    Enumeration,
    Bool,
}

/// One property of an object type.
#[derive(Clone, Debug)]
pub(super) struct PropertyDef {
    pub(super) name: &'static str,
    pub(super) label: &'static str,
    pub(super) property_type: PropertyType,
    pub(super) field_type: &'static str,
    pub(super) options: Vec<&'static str>,
    pub(super) unique: bool,
    pub(super) read_only: bool,
}

/// The object types, in `/_emulator/state` order.
pub(super) const TYPES: [&str; 3] = ["contacts", "companies", "deals"];

pub(super) fn type_id(t: &str) -> &'static str {
    match t {
        "contacts" => "0-1",
        "companies" => "0-2",
        _ => "0-3",
    }
}

pub(super) fn modified_prop(t: &str) -> &'static str {
    if t == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

fn property(name: &'static str, label: &'static str, property_type: PropertyType) -> PropertyDef {
    let field_type = match property_type {
        PropertyType::Str => "text",
        PropertyType::Number => "number",
        PropertyType::Date => "date",
        PropertyType::DateTime => "date",
        PropertyType::Enumeration => "select",
        PropertyType::Bool => "booleancheckbox",
    };
    PropertyDef {
        name,
        label,
        property_type,
        field_type,
        options: vec![],
        unique: false,
        read_only: false,
    }
}

/// The seeded property schema of an object type (built once; unknown types get the deals one).
pub(super) fn schema(t: &str) -> &'static [PropertyDef] {
    static SCHEMAS: OnceLock<[Vec<PropertyDef>; 3]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| TYPES.map(build_schema));
    &all[TYPES.iter().position(|x| *x == t).unwrap_or(2)]
}

fn build_schema(t: &str) -> Vec<PropertyDef> {
    let ro = |mut d: PropertyDef| {
        d.read_only = true;
        d
    };
    let uniq = |mut d: PropertyDef| {
        d.unique = true;
        d
    };
    let en = |mut d: PropertyDef, o: &[&'static str]| {
        d.options = o.to_vec();
        d
    };
    let mut v = vec![
        ro(property("hs_object_id", "Record ID", PropertyType::Number)),
        ro(property(
            "createdate",
            "Create Date",
            PropertyType::DateTime,
        )),
        uniq(property(
            "pg_external_id",
            "Postgres external id",
            PropertyType::Str,
        )),
    ];
    match t {
        "contacts" => v.extend([
            ro(property(
                "lastmodifieddate",
                "Last Modified Date",
                PropertyType::DateTime,
            )),
            uniq(property("email", "Email", PropertyType::Str)),
            property("firstname", "First Name", PropertyType::Str),
            property("lastname", "Last Name", PropertyType::Str),
            property("phone", "Phone Number", PropertyType::Str),
            property("company", "Company Name", PropertyType::Str),
            en(
                property(
                    "lifecyclestage",
                    "Lifecycle Stage",
                    PropertyType::Enumeration,
                ),
                &[
                    "subscriber",
                    "lead",
                    "marketingqualifiedlead",
                    "salesqualifiedlead",
                    "opportunity",
                    "customer",
                    "evangelist",
                    "other",
                ],
            ),
            property("date_of_birth", "Date of birth", PropertyType::Date),
            property("annualrevenue", "Annual Revenue", PropertyType::Number),
            property("is_vip", "VIP", PropertyType::Bool),
        ]),
        "companies" => v.extend([
            ro(property(
                "hs_lastmodifieddate",
                "Last Modified Date",
                PropertyType::DateTime,
            )),
            property("name", "Company name", PropertyType::Str),
            property("domain", "Company Domain Name", PropertyType::Str),
            en(
                property("industry", "Industry", PropertyType::Enumeration),
                &["COMPUTER_SOFTWARE", "FINANCIAL_SERVICES", "RETAIL", "OTHER"],
            ),
            property(
                "numberofemployees",
                "Number of Employees",
                PropertyType::Number,
            ),
            property("annualrevenue", "Annual Revenue", PropertyType::Number),
        ]),
        _ => v.extend([
            ro(property(
                "hs_lastmodifieddate",
                "Last Modified Date",
                PropertyType::DateTime,
            )),
            property("dealname", "Deal Name", PropertyType::Str),
            property("amount", "Amount", PropertyType::Number),
            en(
                property("dealstage", "Deal Stage", PropertyType::Enumeration),
                &[
                    "appointmentscheduled",
                    "qualifiedtobuy",
                    "presentationscheduled",
                    "decisionmakerboughtin",
                    "contractsent",
                    "closedwon",
                    "closedlost",
                ],
            ),
            en(
                property("pipeline", "Pipeline", PropertyType::Enumeration),
                &["default"],
            ),
            property("closedate", "Close Date", PropertyType::DateTime),
        ]),
    }
    v
}

pub(super) fn default_props(t: &str) -> &'static [&'static str] {
    match t {
        "contacts" => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        "companies" => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
        _ => &[
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
    }
}

/// Parses a timestamp (epoch ms or ISO-8601 / `YYYY-MM-DD`) into epoch ms.
pub(super) fn to_ms(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// Validates and normalises `value` for `def`; `Err((code, message))` when invalid.
pub(super) fn normalise(def: &PropertyDef, value: &str) -> Result<String, (&'static str, String)> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let bad = |code: &'static str, what: &str| {
        Err((
            code,
            format!("{value:?} was not a valid {what}. Property: {}", def.name),
        ))
    };
    match def.property_type {
        PropertyType::Str => Ok(value.to_string()),
        PropertyType::Number => match value.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(value.to_string()),
            _ => bad("INVALID_DECIMAL", "number"),
        },
        PropertyType::Bool => match value {
            "true" | "false" => Ok(value.to_string()),
            _ => bad("INVALID_BOOLEAN", "boolean"),
        },
        PropertyType::Enumeration => {
            if def.options.contains(&value) {
                Ok(value.to_string())
            } else {
                Err((
                    "INVALID_OPTION",
                    format!(
                        "{value} was not one of the allowed options: {:?}. Property: {}",
                        def.options, def.name
                    ),
                ))
            }
        }
        PropertyType::Date => {
            if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
                return Ok(d.format("%Y-%m-%d").to_string());
            }
            match value
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            {
                Some(t) if t.timestamp_millis() % 86_400_000 == 0 => {
                    Ok(t.format("%Y-%m-%d").to_string())
                }
                _ => bad("INVALID_DATE", "date (midnight UTC epoch ms or YYYY-MM-DD)"),
            }
        }
        PropertyType::DateTime => {
            if let Ok(t) = DateTime::parse_from_rfc3339(value) {
                return Ok(iso(t.with_timezone(&Utc)));
            }
            match value
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            {
                Some(t) => Ok(iso(t)),
                None => bad("INVALID_DATETIME", "datetime"),
            }
        }
    }
}

pub(super) fn prop_json(t: &str, d: &PropertyDef, i: usize) -> Value {
    let ty = match d.property_type {
        PropertyType::Str => "string",
        PropertyType::Number => "number",
        PropertyType::Date => "date",
        PropertyType::DateTime => "datetime",
        PropertyType::Enumeration => "enumeration",
        PropertyType::Bool => "bool",
    };
    let options: Vec<Value> = if d.property_type == PropertyType::Bool {
        vec![
            json!({"label": "Yes", "value": "true", "displayOrder": 0, "hidden": false}),
            json!({"label": "No", "value": "false", "displayOrder": 1, "hidden": false}),
        ]
    } else {
        d.options
            .iter()
            .enumerate()
            .map(|(i, o)| json!({"label": o, "value": o, "displayOrder": i, "hidden": false}))
            .collect()
    };
    json!({
        "name": d.name,
        "label": d.label,
        "type": ty,
        "fieldType": d.field_type,
        "groupName": if t == "contacts" { "contactinformation" } else { "information" },
        "description": "",
        "options": options,
        "displayOrder": i,
        "hasUniqueValue": d.unique || (t == "contacts" && d.name == "email"),
        "hidden": false,
        "calculated": d.read_only,
        "externalOptions": false,
        "archived": false,
        "formField": !d.read_only,
        "modificationMetadata": {
            "archivable": !d.read_only,
            "readOnlyDefinition": d.read_only,
            "readOnlyValue": d.read_only,
        },
    })
}

pub(super) fn is_unique(t: &str, name: &str) -> bool {
    name != "hs_object_id"
        && schema(t)
            .iter()
            .any(|d| d.name == name && (d.unique || (t == "contacts" && name == "email")))
}

pub(super) fn non_unique_err(t: &str, name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &format!(
            "Unable to perform update/upsert by non-unique {} property {name}",
            type_id(t)
        ),
    )
}

/// The object type named by an API path segment, or HubSpot's 400 for an unknown one.
pub(super) fn api_object_type(segment: &str) -> Result<&'static str, Response> {
    TYPES
        .iter()
        .copied()
        .find(|t| *t == segment)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Unable to infer object type from: {segment}"),
            )
        })
}

/// `GET /crm/v3/properties/{object}`: the seeded schema of an object type.
pub(super) async fn properties(path: RawPath) -> Response {
    let object = path.get("object");
    let Some(t) = TYPES.iter().copied().find(|x| *x == object) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "unknown object type",
        );
    };
    let results: Vec<Value> = schema(t)
        .iter()
        .enumerate()
        .map(|(i, d)| prop_json(t, d, i))
        .collect();
    json_response(StatusCode::OK, &json!({ "results": results }))
}
