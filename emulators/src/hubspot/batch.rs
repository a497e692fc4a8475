//! Batch routes of the HubSpot emulator (`POST /crm/v3/objects/{object}/batch/{operation}`).
//!
//! Owns `upsert`, `update`, `create`, `archive` and `read`, at most
//! [`Options::max_batch_inputs`](super::Options::max_batch_inputs) inputs each (50 for a read
//! with `propertiesWithHistory`). Invariants: request-level problems (a non-unique `idProperty`,
//! a non-string value, an input without id, two inputs naming the same record) reject the whole
//! batch with 400 before anything is written; so does an invalid property value (unknown,
//! read-only, not a valid value or option) under
//! [`BatchInvalidInput::WholeBatch400`] (the default), with every input's details; under
//! [`BatchInvalidInput::MultiStatus207`] invalid values, and always unique-value conflicts and
//! unknown ids, are per-input `errors[]` of a 207, or a plain 400 when nothing succeeded; a
//! create without an `objectWriteTraceId` on every input is all-or-nothing and reports its
//! first problem.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::records::{WriteSource, archive, find, write};
use super::render::{render, render_full};
use super::response::{empty, err_body, error, iso, json_body, json_response, str_list};
use super::schema::{api_object_type, is_unique, non_unique_err};
use super::state::{Inner, Shared};
use super::validate::{
    conflict, conflict_msg, input_err, invalid_properties, stored, unique_conflict, validate,
    validation_input_err,
};
use super::{BatchInvalidInput, Options};
use crate::http::{RawPath, query};

/// `POST .../{object}/batch/{operation}`.
pub(super) async fn batch(
    State(shared): State<Shared>,
    path: RawPath,
    uri: Uri,
    body: Bytes,
) -> Response {
    let outcome = api_object_type(path.get("object"))
        .and_then(|t| Ok((t, json_body(&body)?)))
        .map(|(t, b)| {
            let mut st = shared.lock().unwrap();
            let operation = path.get("operation");
            run(&mut st, t, operation, &b, &query(&uri))
        });
    outcome.unwrap_or_else(|refusal| refusal)
}

fn batch_result(
    results: Vec<Value>,
    errors: Vec<Value>,
    requested_at: DateTime<Utc>,
    ok: StatusCode,
) -> Response {
    let mut v = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(requested_at),
        "startedAt": iso(requested_at),
        "completedAt": iso(Utc::now()),
        "links": {},
    });
    if errors.is_empty() {
        return json_response(ok, &v);
    }
    if v["results"].as_array().is_some_and(Vec::is_empty) {
        // Nothing succeeded: a plain 400 carrying the first error and all details.
        let first = &errors[0];
        let mut e = err_body(
            first["category"].as_str().unwrap_or("VALIDATION_ERROR"),
            first["message"].as_str().unwrap_or("invalid input"),
        );
        e["errors"] = Value::Array(
            errors
                .iter()
                .flat_map(|e| e["errors"].as_array().cloned().unwrap_or_default())
                .collect(),
        );
        e["context"] = first["context"].clone();
        return json_response(StatusCode::BAD_REQUEST, &e);
    }
    v["numErrors"] = json!(errors.len());
    v["errors"] = Value::Array(errors);
    json_response(StatusCode::MULTI_STATUS, &v)
}

fn run(
    st: &mut Inner,
    t: &'static str,
    op: &str,
    b: &Value,
    q: &HashMap<String, String>,
) -> Response {
    let requested_at = Utc::now();
    let empty_inputs = vec![];
    let inputs = b
        .get("inputs")
        .and_then(Value::as_array)
        .unwrap_or(&empty_inputs);
    let max = st.opts.max_batch_inputs;
    if inputs.len() > max {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
            ),
        );
    }
    match op {
        "upsert" | "update" => batch_write(st, t, op == "upsert", inputs, requested_at),
        "create" => batch_create(st, t, inputs, requested_at),
        "archive" => {
            let src = WriteSource::api(&st.opts);
            for i in inputs {
                let id = i
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(id) = id {
                    archive(st, t, id, &src);
                }
            }
            empty(StatusCode::NO_CONTENT)
        }
        "read" => {
            let hist = str_list(b.get("propertiesWithHistory"));
            if hist.as_ref().is_some_and(|h| !h.is_empty()) && inputs.len() > 50 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "The maximum number of inputs supported in a batch request for property histories is 50. Please reduce the number of items and try again",
                );
            }
            let id_prop = b.get("idProperty").and_then(Value::as_str);
            if let Some(p) = id_prop.filter(|p| *p != "hs_object_id")
                && !is_unique(t, p)
            {
                return non_unique_err(t, p);
            }
            let archived = q.get("archived").is_some_and(|a| a == "true");
            let props = str_list(b.get("properties"));
            let (mut results, mut missing) = (vec![], vec![]);
            for i in inputs {
                let id = i.get("id").and_then(Value::as_str).unwrap_or_default();
                match find(st, t, id, id_prop, archived) {
                    Some(n) => results.push(render_full(
                        &st.objects[t][&n],
                        t,
                        props.as_deref(),
                        hist.as_deref(),
                    )),
                    None => missing.push(id.to_string()),
                }
            }
            let errors = if missing.is_empty() {
                vec![]
            } else {
                vec![input_err(
                    "OBJECT_NOT_FOUND",
                    "Could not get some CRM objects, they may be deleted or not exist. Check that ids are valid.".into(),
                    vec![],
                    json!({"ids": missing}),
                )]
            };
            batch_result(results, errors, requested_at, StatusCode::OK)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown batch operation",
        ),
    }
}

fn batch_write(
    st: &mut Inner,
    t: &'static str,
    upsert: bool,
    inputs: &[Value],
    requested_at: DateTime<Utc>,
) -> Response {
    st.input_properties += inputs
        .iter()
        .filter_map(|i| i.get("properties")?.as_object())
        .map(|p| p.len() as u64)
        .sum::<u64>();
    // Request-level validation first: idProperty uniqueness, non-string values, duplicates.
    let mut validated = vec![];
    let mut seen = std::collections::HashSet::new();
    for i in inputs {
        let id_prop = i.get("idProperty").and_then(Value::as_str);
        if let Some(p) = id_prop
            && !is_unique(t, p)
        {
            return non_unique_err(t, p);
        }
        let id = i
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if id.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Each input requires an id",
            );
        }
        let v = match validate(&st.opts, t, i.get("properties")) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let key = (id_prop.unwrap_or("hs_object_id").to_string(), id.clone());
        if !seen.insert(key) {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Duplicate IDs found in batch input: [{id}]. IDs must be unique"),
            );
        }
        validated.push((
            id_prop.map(String::from),
            id,
            v,
            i.get("objectWriteTraceId").cloned(),
        ));
    }
    if let Some(refusal) = whole_batch_refusal(&st.opts, validated.iter().map(|v| &v.2.1)) {
        return refusal;
    }
    let (mut results, mut errors) = (vec![], vec![]);
    for (id_prop, id, (mut props, errs), trace) in validated {
        if !errs.is_empty() {
            errors.push(validation_input_err(errs, trace.as_ref()));
            continue;
        }
        let existing = find(st, t, &id, id_prop.as_deref(), false);
        if existing.is_none() && !(upsert && id_prop.is_some()) {
            errors.push(input_err(
                "OBJECT_NOT_FOUND",
                format!("Object {id} not found"),
                vec![],
                json!({"ids": [id]}),
            ));
            continue;
        }
        if existing.is_none()
            && let Some(p) = &id_prop
        {
            props.insert(p.clone(), stored(&st.opts, t, p, id.clone()));
        }
        if let Some((k, other)) = unique_conflict(st, t, &props, existing) {
            errors.push(input_err(
                "CONFLICT",
                format!("A record with {k} already exists. Existing ID: {other}"),
                vec![],
                json!({"id": [id]}),
            ));
            continue;
        }
        let n = write(st, t, existing, props);
        let mut v = render(&st.objects[t][&n], Some(t), None);
        if upsert {
            v["new"] = json!(existing.is_none());
        }
        if let Some(tr) = trace {
            v["objectWriteTraceId"] = tr;
        }
        results.push(v);
    }
    batch_result(results, errors, requested_at, StatusCode::OK)
}

/// The whole-batch 400 for invalid property values (every input's details), when
/// [`Options::batch_invalid_input`] asks for it and some input has any.
fn whole_batch_refusal<'a>(
    opts: &Options,
    details: impl Iterator<Item = &'a Vec<Value>>,
) -> Option<Response> {
    if opts.batch_invalid_input != BatchInvalidInput::WholeBatch400 {
        return None;
    }
    let all: Vec<Value> = details.flatten().cloned().collect();
    (!all.is_empty()).then(|| invalid_properties(all))
}

fn batch_create(
    st: &mut Inner,
    t: &'static str,
    inputs: &[Value],
    requested_at: DateTime<Utc>,
) -> Response {
    let all_traced =
        !inputs.is_empty() && inputs.iter().all(|i| i.get("objectWriteTraceId").is_some());
    let mut validated = vec![];
    for i in inputs {
        let v = match validate(&st.opts, t, i.get("properties")) {
            Ok(v) => v,
            Err(r) => return r,
        };
        validated.push((v, i.get("objectWriteTraceId").cloned()));
    }
    if let Some(refusal) = whole_batch_refusal(&st.opts, validated.iter().map(|v| &v.0.1)) {
        return refusal;
    }
    if !all_traced {
        // All-or-nothing: report the first problem for the whole batch.
        for ((props, errs), _) in &validated {
            if !errs.is_empty() {
                return invalid_properties(errs.clone());
            }
            if let Some((_, other)) = unique_conflict(st, t, props, None) {
                return conflict(t, other);
            }
        }
    }
    let (mut results, mut errors) = (vec![], vec![]);
    for ((props, errs), trace) in validated {
        if !errs.is_empty() {
            errors.push(validation_input_err(errs, trace.as_ref()));
            continue;
        }
        if let Some((_, other)) = unique_conflict(st, t, &props, None) {
            let mut ctx = json!({});
            if let Some(tr) = &trace {
                ctx["objectWriteTraceId"] = json!([tr]);
            }
            errors.push(input_err("CONFLICT", conflict_msg(t, other), vec![], ctx));
            continue;
        }
        let n = write(st, t, None, props);
        let mut v = render(&st.objects[t][&n], Some(t), None);
        if let Some(tr) = trace {
            v["objectWriteTraceId"] = tr;
        }
        results.push(v);
    }
    batch_result(results, errors, requested_at, StatusCode::CREATED)
}
