//! Test-control routes of the Zoho emulator (`/_emulator/...`; not part of Zoho).
//!
//! Owns `GET /_emulator/state` (records by module including soft-deleted ones, request counts,
//! concurrency and credit figures, write and workflow logs, channels, notifications sent),
//! `POST /_emulator/reset` (which keeps the knobs), `POST|GET /_emulator/settings` (the knobs,
//! see [`Knobs`](super::Knobs)), `POST /_emulator/faults` (one fault object, an array, or
//! `{"faults": [...]}`) and `DELETE /_emulator/faults`. None of them needs authentication or
//! counts towards the limits.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

use super::notify::channel_json;
use super::records::record_json;
use super::response::{Resp, err, fmt_time};
use super::state::{App, Fault, Inner};
use crate::http::apply_settings;

/// `GET /_emulator/state`.
pub(super) async fn state(State(app): State<App>) -> Resp {
    let st = app.lock();
    let mut recs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in &st.records {
        let mut v = record_json(r, &app.opts);
        v["$deleted"] = json!(r.deleted.is_some());
        v["$deleted_time"] = json!(r.deleted.map(fmt_time));
        recs.entry(r.module.as_str()).or_default().push(v);
    }
    let channels: Vec<Value> = st.channels.iter().map(channel_json).collect();
    let used: u64 = st.credits.iter().map(|(_, c)| c).sum();
    Resp::ok(
        200,
        json!({
            "records": recs,
            "request_counts": st.request_counts,
            "max_concurrent": st.max_concurrent,
            "in_flight": st.in_flight.values().sum::<usize>(),
            "rejected_429": st.rejected_429,
            "credits_used": used,
            "write_calls": st.write_calls,
            "workflow_runs": st.workflow_runs,
            "channels": channels,
            "notifications": st.notifications,
            "pending_faults": st.faults.len(),
        }),
    )
}

/// `POST /_emulator/reset`: everything but the knobs back to the start.
pub(super) async fn reset(State(app): State<App>) -> Resp {
    let mut st = app.lock();
    let knobs = st.knobs.clone();
    *st = Inner::new(&app.opts);
    st.knobs = knobs;
    Resp::ok(200, json!({"reset": true}))
}

/// `POST /_emulator/settings`: changes the knobs named in the JSON object (204); an unknown
/// knob or a bad value is a 400 and changes nothing.
pub(super) async fn settings(State(app): State<App>, body: Bytes) -> Resp {
    let mut st = app.lock();
    match apply_settings(&st.knobs, &body) {
        Ok(knobs) => {
            st.knobs = knobs;
            Resp::empty()
        }
        Err(reason) => err(400, "INVALID_DATA", &reason, json!({})),
    }
}

/// `GET /_emulator/settings`: the knobs in force.
pub(super) async fn knob_values(State(app): State<App>) -> Resp {
    Resp::ok(200, json!(app.lock().knobs))
}

/// `POST /_emulator/faults`: queues faults (a bad one stops the rest).
pub(super) async fn add_faults(State(app): State<App>, body: Bytes) -> Resp {
    let mut st = app.lock();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let list = match v {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("faults") => match o.remove("faults") {
            Some(Value::Array(a)) => a,
            _ => vec![],
        },
        o @ Value::Object(_) => vec![o],
        _ => return err(400, "INVALID_DATA", "fault body", json!({})),
    };
    for f in list {
        match serde_json::from_value::<Fault>(f) {
            Ok(f) => st.faults.push(f),
            Err(e) => return err(400, "INVALID_DATA", &e.to_string(), json!({})),
        }
    }
    Resp::ok(200, json!({"pending_faults": st.faults.len()}))
}

/// `DELETE /_emulator/faults`.
pub(super) async fn clear_faults(State(app): State<App>) -> Resp {
    app.lock().faults.clear();
    Resp::ok(200, json!({"pending_faults": 0}))
}
