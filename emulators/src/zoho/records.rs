//! Record reads and deletes of the Zoho emulator.
//!
//! Owns `GET /crm/v8/{Module}` (a page of live records with the requested `fields`, sorted by
//! id, `Modified_Time` or `Created_Time`), `GET .../{Module}/{id}`, `GET .../{Module}/deleted`
//! (the recycle bin, newest first) and `DELETE .../{Module}?ids=` / `.../{Module}/{id}` (soft
//! delete, at most 100 ids, `delete` notifications). An empty page is a 204.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Options;
use super::notify::notify;
use super::response::{Resp, err, fmt_time, item_err, now_secs};
use super::schema::known_module;
use super::state::{App, Delivery, Inner, Record};
use super::write::Change;
use crate::http::{RawPath, query};

/// `GET /crm/v8/{Module}`.
pub(super) async fn list(State(app): State<App>, path: RawPath, uri: Uri) -> Resp {
    let module = path.get("module");
    if let Err(refusal) = known_module(module) {
        return refusal;
    }
    list_page(&app.lock(), &app.opts, module, &query(&uri))
}

/// `GET /crm/v8/{Module}/{id}`, where the id `deleted` lists the recycle bin.
pub(super) async fn read(State(app): State<App>, path: RawPath, uri: Uri) -> Resp {
    let (module, id) = (path.get("module"), path.get("id"));
    if let Err(refusal) = known_module(module) {
        return refusal;
    }
    let st = app.lock();
    if id == "deleted" {
        return deleted_page(&st, &app.opts, module, &query(&uri));
    }
    let found = id.parse::<u64>().ok().and_then(|id| {
        st.records
            .iter()
            .find(|r| r.id == id && r.module == module && r.deleted.is_none())
    });
    match found {
        Some(r) => Resp::ok(200, json!({"data": [record_json(r, &app.opts)]})),
        None => err(
            400,
            "INVALID_DATA",
            "the id given seems to be invalid",
            json!({"id": id}),
        ),
    }
}

/// `DELETE /crm/v8/{Module}?ids=a,b`.
pub(super) async fn delete_by_ids(State(app): State<App>, path: RawPath, uri: Uri) -> Response {
    let module = path.get("module");
    if let Err(refusal) = known_module(module) {
        return refusal.into_response();
    }
    let ids: Vec<String> = query(&uri)
        .get("ids")
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "ids"}),
        )
        .into_response();
    }
    let (resp, deliveries) = delete(&mut app.lock(), &app.opts, module, &ids);
    app.send(deliveries);
    resp.into_response()
}

/// `DELETE /crm/v8/{Module}/{id}`.
pub(super) async fn delete_by_id(State(app): State<App>, path: RawPath) -> Response {
    let (module, id) = (path.get("module"), path.get("id"));
    if let Err(refusal) = known_module(module) {
        return refusal.into_response();
    }
    let (resp, deliveries) = delete(&mut app.lock(), &app.opts, module, &[id.to_string()]);
    app.send(deliveries);
    resp.into_response()
}

pub(super) fn user_json(o: &Options) -> Value {
    json!({"name": o.user_name, "id": o.user_id, "email": "integration@example.com"})
}

pub(super) fn record_json(r: &Record, o: &Options) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id.to_string()));
    m.insert("Owner".into(), user_json(o));
    for (k, v) in &r.fields {
        m.insert(k.clone(), v.clone());
    }
    m.insert("Created_Time".into(), json!(fmt_time(r.created)));
    m.insert("Modified_Time".into(), json!(fmt_time(r.modified)));
    m.insert("Created_By".into(), user_json(o));
    m.insert("Modified_By".into(), user_json(o));
    Value::Object(m)
}

fn delete(st: &mut Inner, o: &Options, module: &str, ids: &[String]) -> (Resp, Vec<Delivery>) {
    if ids.len() > 100 {
        return (
            err(
                400,
                "LIMIT_EXCEEDED",
                "Record count exceeded",
                json!({"limit": 100}),
            ),
            vec![],
        );
    }
    let now = now_secs();
    let mut out = vec![];
    let mut done = vec![];
    for id in ids {
        let ix = id.parse::<u64>().ok().and_then(|n| {
            st.records
                .iter()
                .position(|r| r.id == n && r.module == module && r.deleted.is_none())
        });
        match ix {
            Some(ix) => {
                st.records[ix].deleted = Some(now);
                done.push(id.clone());
                out.push(json!({"code": "SUCCESS", "details": {"id": id}, "message": "record deleted", "status": "success"}));
            }
            None => out.push(item_err(
                "INVALID_DATA",
                "record not deleted",
                json!({"id": id}),
            )),
        }
    }
    let ok = done.len();
    let status = if ok == ids.len() {
        200
    } else if ok == 0 {
        400
    } else {
        207
    };
    let del = if done.is_empty() {
        vec![]
    } else {
        notify(
            st,
            o,
            module,
            &Change {
                op: "delete",
                ids: done,
                affected: vec![],
            },
        )
    };
    (Resp::ok(status, json!({"data": out})), del)
}

fn display_name(r: &Record) -> Value {
    for k in ["Last_Name", "Account_Name", "Deal_Name"] {
        if let Some(v) = r.fields.get(k) {
            return v.clone();
        }
    }
    Value::Null
}

fn deleted_page(st: &Inner, o: &Options, module: &str, q: &HashMap<String, String>) -> Resp {
    let ty = q.get("type").map(String::as_str).unwrap_or("all");
    if !["all", "recycle", "permanent"].contains(&ty) {
        return err(
            400,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "type"}),
        );
    }
    if ty == "permanent" {
        return Resp::empty();
    }
    let (per_page, page) = paging(q);
    let mut rows: Vec<&Record> = st
        .records
        .iter()
        .filter(|r| r.module == module && r.deleted.is_some())
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.deleted, r.id)));
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| json!({"deleted_by": user_json(o), "id": r.id.to_string(), "display_name": display_name(r),
            "type": "recycle", "created_by": user_json(o), "deleted_time": r.deleted.map(fmt_time)}))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"per_page": per_page, "count": data.len(), "page": page,
        "more_records": total > page * per_page}}),
    )
}

/// `per_page` (1-200, default 200) and `page` (from 1) of a list request.
fn paging(q: &HashMap<String, String>) -> (usize, usize) {
    let num = |k: &str| q.get(k).and_then(|s| s.parse::<usize>().ok());
    (
        num("per_page").unwrap_or(200).clamp(1, 200),
        num("page").unwrap_or(1).max(1),
    )
}

fn list_page(st: &Inner, o: &Options, module: &str, q: &HashMap<String, String>) -> Resp {
    let Some(fields) = q.get("fields").filter(|f| !f.is_empty()) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "fields"}),
        );
    };
    let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
    let (per_page, page) = paging(q);
    let ids: Option<Vec<u64>> = q
        .get("ids")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let mut rows: Vec<&Record> = st
        .records
        .iter()
        .filter(|r| r.module == module && r.deleted.is_none())
        .filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .collect();
    let sort_by = q.get("sort_by").map(String::as_str).unwrap_or("id");
    match sort_by {
        "Modified_Time" => rows.sort_by_key(|r| (r.modified, r.id)),
        "Created_Time" => rows.sort_by_key(|r| (r.created, r.id)),
        _ => rows.sort_by_key(|r| r.id),
    }
    let desc = q.get("sort_order").map(String::as_str) == Some("desc");
    if desc {
        rows.reverse();
    }
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| project(&record_json(r, o), &wanted))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"per_page": per_page, "count": data.len(), "page": page,
        "sort_by": sort_by, "sort_order": if desc {"desc"} else {"asc"},
        "more_records": total > page * per_page}}),
    )
}

pub(super) fn project(full: &Value, wanted: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), full["id"].clone());
    for w in wanted {
        m.insert(
            (*w).to_string(),
            full.get(*w).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}
