//! Zoho values and field definitions: how a row becomes a Zoho record. Pure.
//!
//! Owns the typed-JSON encoding of values per field `data_type` and the parsing of the fields
//! API. Invariants: a value that does not fit its field's type is an error naming the expected
//! type (poison downstream), never a silent coercion (a BC date or a year past 9999 is refused,
//! never cut or shifted: [`crm_date`]); NULL stays null (clears the field); a
//! column absent from the row (unchanged TOAST) is left out of the record.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::fields::FieldRule;
use crate::event::Row;
use crate::sink::mapping::{
    MappingError, Property, PropertyType, carried, crm_date, in_crm_years, rule_text, value_string,
};

/// A field definition from `GET /crm/v8/settings/fields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ZohoField {
    /// API name.
    pub(crate) api_name: String,
    /// Zoho `data_type` (`text`, `email`, `integer`, `double`, `date`, `picklist`, ...).
    pub(crate) data_type: String,
    /// Read-only (`read_only` or `field_read_only`).
    pub(crate) read_only: bool,
    /// Usable in `duplicate_check_fields`: unique, external id, or the module's system
    /// duplicate-check field (§2.4).
    pub(crate) unique: bool,
    /// Picklist actual values.
    pub(crate) options: Vec<String>,
}

impl ZohoField {
    /// The field as a [`Property`] for [`crate::sink::mapping::check_schema`].
    pub(crate) fn property(&self) -> Property {
        let kind = match self.data_type.as_str() {
            "integer" | "bigint" | "long" | "double" | "currency" | "decimal" | "percent" => {
                PropertyType::Number
            }
            "boolean" => PropertyType::Bool,
            "date" => PropertyType::Date,
            "datetime" => PropertyType::Datetime,
            "picklist" | "multiselectpicklist" => PropertyType::Enumeration,
            _ => PropertyType::String,
        };
        Property {
            name: self.api_name.clone(),
            kind,
            read_only: self.read_only,
            unique: self.unique,
            options: self.options.clone(),
        }
    }
}

/// The system duplicate-check field of a standard module (§2.4), which upsert may match on.
fn system_duplicate_field(module: &str) -> Option<&'static str> {
    Some(match module {
        "Leads" | "Contacts" => "Email",
        "Accounts" => "Account_Name",
        "Deals" => "Deal_Name",
        "Campaigns" => "Campaign_Name",
        "Cases" | "Quotes" | "Sales_Orders" | "Purchase_Orders" | "Invoices" => "Subject",
        "Solutions" => "Solution_Title",
        "Products" => "Product_Name",
        "Vendors" => "Vendor_Name",
        "Price_Books" => "Price_Book_Name",
        _ => return None,
    })
}

/// Parses the `fields` array of a fields-API response.
pub(crate) fn parse_fields(module: &str, body: &Value) -> Vec<ZohoField> {
    let system = system_duplicate_field(module);
    body["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let api_name = f["api_name"].as_str()?.to_string();
            let unique_flag = match &f["unique"] {
                Value::Object(o) => o
                    .get("casesensitive")
                    .is_some_and(|c| c.as_str() != Some("-1")),
                Value::Bool(b) => *b,
                _ => false,
            };
            let external = f["external"].is_object();
            let options = f["pick_list_values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| {
                    o["actual_value"]
                        .as_str()
                        .or_else(|| o["display_value"].as_str())
                        .map(String::from)
                })
                .collect();
            Some(ZohoField {
                unique: unique_flag || external || system == Some(api_name.as_str()),
                data_type: f["data_type"].as_str().unwrap_or("text").to_string(),
                read_only: f["read_only"].as_bool().unwrap_or(false)
                    || f["field_read_only"].as_bool().unwrap_or(false),
                options,
                api_name,
            })
        })
        .collect()
}

/// Encodes one value for a Zoho field of `data_type` (typed JSON, §2.4): numbers as JSON
/// numbers (PG `numeric` text parsed), booleans, dates `YYYY-MM-DD`, datetimes
/// `yyyy-MM-ddTHH:mm:ss±HH:mm` (second precision, offset kept; a timestamp without time zone is
/// taken as UTC), multi-select picklists as arrays, lookups as `{"id": ..}`, every text-like type
/// as a string. NULL stays null (clears the field). `Err` names the expected type.
pub(crate) fn encode_value(data_type: &str, v: &Value) -> Result<Value, &'static str> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let text = || match v {
        Value::String(s) => Some(s.trim()),
        _ => None,
    };
    match data_type {
        "integer" | "bigint" | "long" => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            _ => text()
                .and_then(|s| s.parse::<i64>().ok())
                .map(Value::from)
                .ok_or("integer"),
        },
        "double" | "currency" | "decimal" | "percent" => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => text()
                .and_then(|s| s.parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("number"),
        },
        "boolean" => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(Value::Bool(n.as_u64() == Some(1)))
            }
            _ => match text().map(str::to_ascii_lowercase).as_deref() {
                Some("true" | "t" | "1" | "yes") => Ok(Value::Bool(true)),
                Some("false" | "f" | "0" | "no") => Ok(Value::Bool(false)),
                _ => Err("boolean"),
            },
        },
        "date" => text()
            .and_then(crm_date)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .ok_or("date"),
        "datetime" => text().and_then(encode_datetime).ok_or("datetime"),
        "multiselectpicklist" => Ok(Value::Array(match v {
            Value::Array(items) => items
                .iter()
                .map(|i| Value::String(value_string(i)))
                .collect(),
            Value::String(s) => s
                .split(';')
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
            other => vec![Value::String(value_string(other))],
        })),
        "lookup" | "ownerlookup" | "userlookup" => match v {
            Value::Object(o) if o.contains_key("id") => Ok(v.clone()),
            Value::Object(_) | Value::Array(_) => Err("lookup id"),
            other => Ok(json!({"id": value_string(other)})),
        },
        "text" | "textarea" | "email" | "phone" | "website" | "picklist" | "autonumber" => {
            Ok(Value::String(value_string(v)))
        }
        // A type we do not know: send the JSON value as it is.
        _ => Ok(v.clone()),
    }
}

/// A datetime in years 1-9999 (as written, and in UTC), else None.
fn encode_datetime(s: &str) -> Option<Value> {
    const OUT: &str = "%Y-%m-%dT%H:%M:%S%:z";
    use chrono::Datelike as _;
    let fits = |t: &chrono::DateTime<chrono::FixedOffset>| {
        in_crm_years(t.year()) && in_crm_years(t.to_utc().year())
    };
    let zoned = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"));
    if let Ok(t) = zoned {
        return fits(&t).then(|| Value::String(t.format(OUT).to_string()));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .filter(|t| in_crm_years(t.year()))
        .map(|t| Value::String(t.and_utc().format(OUT).to_string()))
}

/// Maps a row to a Zoho record: the rule's transform and value map apply to the value's text,
/// then the result is encoded for the field's `data_type` (`types`, by API name). A column absent
/// from the row (unchanged TOAST) is left out, so the field keeps its value at Zoho.
pub(crate) fn to_record(
    rules: &[FieldRule],
    types: &BTreeMap<String, String>,
    row: &Row,
) -> Result<Map<String, Value>, MappingError> {
    let mut out = Map::new();
    for (rule, v) in carried(rules, row) {
        let mut v = v.clone();
        if !v.is_null() && (rule.transform.is_some() || rule.map.is_some()) {
            v = Value::String(rule_text(rule, &v)?);
        }
        let ty = types.get(&rule.property).map_or("", String::as_str);
        let encoded = encode_value(ty, &v).map_err(|kind| MappingError::BadValue {
            column: rule.column.clone(),
            property: rule.property.clone(),
            kind,
        })?;
        out.insert(rule.property.clone(), encoded);
    }
    Ok(out)
}
