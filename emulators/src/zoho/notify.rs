//! Notification channels of the Zoho emulator (`/crm/v8/actions/watch`).
//!
//! Owns channel subscription (POST; the id of a live channel is refused with `DUPLICATE_DATA`
//! unless the `duplicateChannelId` knob says `replace`), renewal and changes (PATCH/PUT), listing (GET, unexpired
//! only, 204 when none) and unsubscription (DELETE `?channel_ids=`), and the callbacks:
//! `{server_time, query_params, module, resource_uri, ids, operation, channel_id, token}` (plus
//! `affected_fields` for updates when asked) for every live channel watching the module, with no
//! signature. Channels expire after the requested `channel_expiry` if it is in the future and
//! within [`Options::max_channel_expiry`](super::Options::max_channel_expiry), else after an hour
//! (or that maximum if shorter); no callbacks after expiry.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Options;
use super::knobs::DuplicateChannelId;
use super::response::{Resp, err, fmt_time, item_err, now_secs};
use super::state::{App, Channel, Delivery, Inner};
use super::write::{Change, parse_body};
use crate::http::{form, query};

/// `POST /crm/v8/actions/watch`: subscribes channels (a live channel's id is refused, or
/// replaced, by the `duplicateChannelId` knob).
pub(super) async fn subscribe(State(app): State<App>, body: Bytes) -> Resp {
    match parse_body(&body) {
        Ok(b) => watch_write(&mut app.lock(), &app.opts, &b, true),
        Err(refusal) => refusal,
    }
}

/// `PATCH|PUT /crm/v8/actions/watch`: renews or changes subscribed channels.
pub(super) async fn update(State(app): State<App>, body: Bytes) -> Resp {
    match parse_body(&body) {
        Ok(b) => watch_write(&mut app.lock(), &app.opts, &b, false),
        Err(refusal) => refusal,
    }
}

/// `GET /crm/v8/actions/watch`: the unexpired channels (forgetting expired ones).
pub(super) async fn channels(State(app): State<App>) -> Resp {
    let mut st = app.lock();
    let now = Utc::now();
    st.channels.retain(|c| c.expiry > now);
    if st.channels.is_empty() {
        Resp::empty()
    } else {
        Resp::ok(
            200,
            json!({"watch": st.channels.iter().map(channel_json).collect::<Vec<_>>()}),
        )
    }
}

/// `DELETE /crm/v8/actions/watch?channel_ids=a,b`.
pub(super) async fn unsubscribe(State(app): State<App>, uri: Uri) -> Resp {
    let mut st = app.lock();
    let ids: Vec<String> = query(&uri)
        .get("channel_ids")
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let mut out = vec![];
    for id in ids {
        let before = st.channels.len();
        st.channels.retain(|c| c.channel_id != id);
        out.push(if st.channels.len() < before {
            json!({"code": "SUCCESS", "status": "success", "message": "Successfully unsubscribed from actions-watch", "details": {"channel_id": id}})
        } else {
            item_err("NOT_SUBSCRIBED", "channel not subscribed", json!({"channel_id": id}))
        });
    }
    Resp::ok(200, json!({"watch": out}))
}

/// Queues (and logs) the callbacks of every live channel watching `module` for this change.
pub(super) fn notify(st: &mut Inner, o: &Options, module: &str, c: &Change) -> Vec<Delivery> {
    let now = Utc::now();
    let ev = match c.op {
        "insert" => "create",
        "update" => "edit",
        _ => "delete",
    };
    let mut out = vec![];
    for ch in st.channels.iter().filter(|ch| ch.expiry > now) {
        let hit = ch
            .events
            .iter()
            .any(|e| e == &format!("{module}.all") || e == &format!("{module}.{ev}"));
        if !hit {
            continue;
        }
        let qp: Map<String, Value> = ch
            .notify_url
            .split_once('?')
            .map(|(_, q)| form(q).into_iter().map(|(k, v)| (k, json!(v))).collect())
            .unwrap_or_default();
        let mut p = json!({
            "server_time": now.timestamp_millis(),
            "query_params": qp,
            "module": module,
            "resource_uri": format!("{}/crm/v8/{module}", o.api_domain),
            "ids": c.ids,
            "operation": c.op,
            "channel_id": ch.channel_id.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(ch.channel_id)),
            "token": ch.token,
        });
        if ch.affected_values && c.op == "update" {
            p["affected_fields"] = json!(c.affected);
        }
        out.push((ch.notify_url.clone(), p));
    }
    for (url, p) in &out {
        st.notifications
            .push(json!({"notify_url": url, "payload": p}));
    }
    out
}

fn watch_write(st: &mut Inner, o: &Options, b: &Value, create: bool) -> Resp {
    let Some(list) = b.get("watch").and_then(Value::as_array) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "watch"}),
        );
    };
    let now = now_secs();
    let max = chrono::Duration::from_std(o.max_channel_expiry).unwrap_or(chrono::Duration::days(1));
    let out: Vec<Value> = list
        .iter()
        .map(|w| watch_one(st, o, w, create, now, max))
        .collect();
    let ok = out.iter().all(|x| x["status"] == "success");
    Resp::ok(if ok { 200 } else { 400 }, json!({"watch": out}))
}

pub(super) fn channel_json(c: &Channel) -> Value {
    json!({"channel_id": c.channel_id, "events": c.events, "notify_url": c.notify_url,
           "token": c.token, "channel_expiry": fmt_time(c.expiry),
           "return_affected_field_values": c.affected_values})
}

/// Creates (`create`) or updates one channel of a watch request; returns its result item.
fn watch_one(
    st: &mut Inner,
    o: &Options,
    w: &Value,
    create: bool,
    now: DateTime<Utc>,
    max: chrono::Duration,
) -> Value {
    let cid = match w.get("channel_id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => {
            return item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "channel_id"}),
            );
        }
    };
    let events: Vec<String> = w
        .get("events")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let token = w.get("token").and_then(Value::as_str).map(String::from);
    if token.as_ref().is_some_and(|t| t.chars().count() > 50) {
        return item_err(
            "INVALID_DATA",
            "invalid data",
            json!({"api_name": "token", "maximum_length": 50}),
        );
    }
    let req_exp = w
        .get("channel_expiry")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc));
    let expiry = match req_exp {
        Some(e) if e > now && e <= now + max => e,
        _ => now + chrono::Duration::hours(1).min(max),
    };
    st.channels.retain(|c| c.expiry > Utc::now());
    let existing = st.channels.iter().position(|c| c.channel_id == cid);
    if create && existing.is_some() && st.knobs.duplicate_channel_id == DuplicateChannelId::Refuse {
        return item_err(
            "DUPLICATE_DATA",
            "duplicate data",
            json!({"api_name": "channel_id", "json_path": "$.watch[0].channel_id"}),
        );
    }
    if create {
        let Some(url) = w.get("notify_url").and_then(Value::as_str) else {
            return item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "notify_url"}),
            );
        };
        if events.is_empty() {
            return item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "events"}),
            );
        }
        let ch = Channel {
            channel_id: cid.clone(),
            events: events.clone(),
            notify_url: url.to_string(),
            token,
            expiry,
            affected_values: w
                .get("return_affected_field_values")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        match existing {
            Some(ix) => st.channels[ix] = ch,
            None => st.channels.push(ch),
        }
    } else {
        let Some(ix) = existing else {
            return item_err(
                "NOT_SUBSCRIBED",
                "channel not subscribed",
                json!({"channel_id": cid}),
            );
        };
        let c = &mut st.channels[ix];
        c.expiry = expiry;
        if !events.is_empty() {
            c.events = events;
        }
        if let Some(u) = w.get("notify_url").and_then(Value::as_str) {
            c.notify_url = u.to_string();
        }
        if token.is_some() {
            c.token = token;
        }
    }
    let c = st
        .channels
        .iter()
        .find(|c| c.channel_id == cid)
        .expect("present");
    let evs: Vec<Value> = c.events.iter().map(|e| {
        let m = e.split('.').next().unwrap_or("");
        json!({"channel_expiry": fmt_time(c.expiry), "resource_uri": format!("{}/crm/v8/{m}", o.api_domain),
               "resource_id": "5545974000000002175", "resource_name": m, "channel_id": w["channel_id"]})
    }).collect();
    json!({"code": "SUCCESS", "status": "success",
        "message": "Successfully subscribed for actions-watch of the given module",
        "details": {"events": evs}})
}
