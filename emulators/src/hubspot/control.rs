//! Test-control routes of the HubSpot emulator (`/_emulator/...`; not part of HubSpot).
//!
//! Owns `GET /_emulator/state` (records with history, request statistics, pending faults, the
//! knobs in force),
//! `POST /_emulator/reset` (forgets everything, the webhook subscription included, but the
//! options and knobs), `POST /_emulator/faults` (one fault, an array, or `{"faults": [...]}`)
//! and the emulated HubSpot-UI writes `POST /_emulator/objects/{type}` and
//! `.../{type}/{id}/edit|archive`. None of them needs authentication or counts towards the
//! limits.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::faults::Fault;
use super::hooks::stop_hooks;
use super::records::{WriteSource, archive, find, object_type, write_as};
use super::render::{history_json, render};
use super::response::{empty, error, json_response};
use super::settings::settings_json as settings;
use super::state::{Inner, Shared};
use super::validate::{conflict, invalid_properties, unique_conflict, validate};
use crate::http::RawPath;

/// `GET /_emulator/state`.
pub(super) async fn state(State(shared): State<Shared>) -> Response {
    let st = shared.lock().unwrap();
    let mut objects = Map::new();
    for (t, recs) in &st.objects {
        let list: Vec<Value> = recs
            .values()
            .map(|r| {
                let mut v = render(r, None, Some(&[]));
                v["propertiesWithHistory"] = history_json(r, None);
                v
            })
            .collect();
        objects.insert(t.to_string(), Value::Array(list));
    }
    json_response(
        StatusCode::OK,
        &json!({
            "objects": objects,
            "requests": {
                "total": st.total_requests,
                "rateLimited": st.rate_limited,
                "maxInAnyWindow": st.max_in_window,
                "inputProperties": st.input_properties,
                "byPath": st.by_path,
            },
            "pendingFaults": st.faults.len(),
            "settings": settings(&st.opts),
        }),
    )
}

/// `POST /_emulator/reset`.
pub(super) async fn reset(State(shared): State<Shared>) -> Response {
    let mut st = shared.lock().unwrap();
    stop_hooks(&mut st);
    let opts = st.opts.clone();
    *st = Inner::new(opts);
    empty(StatusCode::NO_CONTENT)
}

/// `POST /_emulator/faults`: queues faults (all or none).
pub(super) async fn add_faults(State(shared): State<Shared>, body: Bytes) -> Response {
    let mut st = shared.lock().unwrap();
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string());
        }
    };
    let list = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("faults") {
            Some(Value::Array(a)) => a,
            _ => vec![Value::Object(o)],
        },
        _ => vec![],
    };
    for f in list {
        match serde_json::from_value::<Fault>(f) {
            Ok(f) => st.faults.push_back(f),
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string());
            }
        }
    }
    json_response(StatusCode::OK, &json!({"pendingFaults": st.faults.len()}))
}

/// `POST /_emulator/objects/{type}`: creates a record as a UI user.
pub(super) async fn ui_create(
    State(shared): State<Shared>,
    path: RawPath,
    body: Bytes,
) -> Response {
    let Some(t) = object_type(path.get("object")) else {
        return unknown_type();
    };
    ui_write(&mut shared.lock().unwrap(), t, None, "create", &body)
}

/// `POST /_emulator/objects/{type}/{id}/edit|archive`: edits or archives a record as a UI user.
pub(super) async fn ui_change(
    State(shared): State<Shared>,
    path: RawPath,
    body: Bytes,
) -> Response {
    let Some(t) = object_type(path.get("object")) else {
        return unknown_type();
    };
    match path.get("operation") {
        op @ ("edit" | "archive") => {
            let id = path.get("id");
            ui_write(&mut shared.lock().unwrap(), t, Some(id), op, &body)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "unknown emulator endpoint",
        ),
    }
}

fn unknown_type() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        "unknown object type",
    )
}

/// `POST /_emulator/objects/{type}[/{id}/edit|/{id}/archive]`: writes as a user in the HubSpot
/// UI (`changeSource` `CRM_UI`, `sourceId` `userId:N`), with history, last-modified date and
/// webhooks, and no API identity, auth or rate limiting.
fn ui_write(st: &mut Inner, t: &'static str, id: Option<&str>, op: &str, body: &Bytes) -> Response {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string()),
        }
    };
    let src = WriteSource::ui(b.get("userId").and_then(Value::as_u64).unwrap_or(1));
    let existing = match id {
        None => None,
        Some(id) => match find(st, t, id, None, false) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "OBJECT_NOT_FOUND",
                    "resource not found",
                );
            }
        },
    };
    if let (Some(n), "archive") = (existing, op) {
        archive(st, t, n, &src);
        return empty(StatusCode::NO_CONTENT);
    }
    let (props, errs) = match validate(&st.opts, t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        return invalid_properties(errs);
    }
    if let Some((_, other)) = unique_conflict(st, t, &props, existing) {
        return conflict(t, other);
    }
    let n = write_as(st, t, existing, props, &src);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json_response(status, &render(&st.objects[t][&n], Some(t), None))
}
