//! Validation of written properties and unique values in the HubSpot emulator.
//!
//! Owns the per-input error shape (StandardError) and the rules: a non-string value rejects the
//! whole request (400); unknown, read-only and type-invalid properties are per-property error
//! details; a unique value already held by another live record is a conflict. Values are
//! validated in the form HubSpot stores them ([`stored`]: a contact's `email` lowercased when
//! [`Options::lowercase_emails`] is set), so conflicts and lookups see the stored form.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::Options;
use super::records::find;
use super::response::{err_body, error, json_response};
use super::schema::{is_unique, normalise, schema};
use super::state::Inner;

/// One per-input error (StandardError).
pub(super) fn input_err(category: &str, message: String, details: Vec<Value>, ctx: Value) -> Value {
    json!({"status": "error", "category": category, "message": message,
           "errors": details, "context": ctx, "links": {}})
}

/// Validates a `properties` object: non-string values are a request-level error (`Err`), bad
/// properties are returned as per-property error details.
pub(super) type Validated = (BTreeMap<String, String>, Vec<Value>);

pub(super) fn validate(
    opts: &Options,
    t: &str,
    props: Option<&Value>,
) -> Result<Validated, Response> {
    let defs = schema(t);
    let mut out = BTreeMap::new();
    let mut errs = vec![];
    let Some(obj) = props.and_then(Value::as_object) else {
        if props.is_none_or(Value::is_null) {
            return Ok((out, errs));
        }
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "properties must be an object",
        ));
    };
    for (k, v) in obj {
        let Some(s) = v.as_str() else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Invalid input JSON on line 1: Cannot deserialize value of type `java.lang.String` \
                     from {v} for property {k}: property values must be strings"
                ),
            ));
        };
        match defs.iter().find(|d| d.name == k) {
            None => errs.push(json!({"message": format!("Property \"{k}\" does not exist"),
                                     "code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [k]}})),
            Some(d) if d.read_only => errs.push(json!({
                "message": format!("\"{k}\" is a read only property; its value cannot be set."),
                "code": "READ_ONLY_VALUE", "context": {"propertyName": [k]}})),
            Some(d) => match normalise(d, s) {
                Ok(n) => {
                    out.insert(k.clone(), stored(opts, t, k, n));
                }
                Err((code, msg)) => errs.push(json!({"message": msg, "code": code,
                                                     "context": {"propertyName": [k]}})),
            },
        }
    }
    Ok((out, errs))
}

/// The form in which HubSpot stores `value` of property `prop` (a contact's `email` is kept
/// lowercased).
pub(super) fn stored(opts: &Options, t: &str, prop: &str, value: String) -> String {
    if opts.lowercase_emails && t == "contacts" && prop == "email" {
        value.to_lowercase()
    } else {
        value
    }
}

pub(super) fn validation_input_err(details: Vec<Value>, trace: Option<&Value>) -> Value {
    let n = details.len();
    let mut ctx = json!({});
    if let Some(tr) = trace {
        ctx["objectWriteTraceId"] = json!([tr]);
    }
    input_err(
        "VALIDATION_ERROR",
        format!("Property values were not valid ({n} error(s))"),
        details,
        ctx,
    )
}

/// Checks that no *other* live record already holds a unique value being written.
pub(super) fn unique_conflict(
    st: &Inner,
    t: &str,
    props: &BTreeMap<String, String>,
    me: Option<u64>,
) -> Option<(String, u64)> {
    for (k, v) in props {
        if v.is_empty() || !is_unique(t, k) {
            continue;
        }
        if let Some(other) = find(st, t, v, Some(k), false).filter(|o| Some(*o) != me) {
            return Some((k.clone(), other));
        }
    }
    None
}

/// The 400 for a single-object write with invalid properties.
pub(super) fn invalid_properties(details: Vec<Value>) -> Response {
    let mut e = err_body("VALIDATION_ERROR", "Property values were not valid");
    e["errors"] = Value::Array(details);
    json_response(StatusCode::BAD_REQUEST, &e)
}

/// HubSpot's message for a create that hits an existing unique value.
pub(super) fn conflict_msg(t: &str, other: u64) -> String {
    let noun = match t {
        "contacts" => "Contact",
        "companies" => "Company",
        _ => "Deal",
    };
    format!("{noun} already exists. Existing ID: {other}")
}

/// The 409 for a single-object write that hits another record's unique value.
pub(super) fn conflict(t: &str, other: u64) -> Response {
    error(StatusCode::CONFLICT, "CONFLICT", &conflict_msg(t, other))
}
