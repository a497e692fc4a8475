//! Record writes of the Zoho emulator: insert, update and upsert.
//!
//! Owns `POST|PUT /crm/v8/{Module}`, `PUT .../{Module}/{id}` and `POST .../{Module}/upsert`: at
//! most 100 records per call, `data[]` answered in input order with success and error items
//! mixed; type, picklist, length, mandatory, read-only and uniqueness checks
//! (`INVALID_DATA`, `MANDATORY_NOT_FOUND`, `NOT_ALLOWED`, `DUPLICATE_DATA`); upsert matching by
//! `duplicate_check_fields` in order, else the system field and then the unique fields; the
//! `trigger` workflow log; and `insert` / `update` notifications for what changed.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Options;
use super::notify::notify;
use super::records::user_json;
use super::response::{Resp, err, fmt_time, item_err, now_secs};
use super::schema::{FieldDef, known_module, schema, system_dup_field};
use super::state::{App, Delivery, Inner, Record};
use crate::http::RawPath;

/// `POST /crm/v8/{Module}`: inserts records.
pub(super) async fn insert(State(app): State<App>, path: RawPath, body: Bytes) -> Response {
    call(&app, path.get("module"), Op::Insert, &body, None)
}

/// `PUT /crm/v8/{Module}`: updates records by their `id`.
pub(super) async fn update(State(app): State<App>, path: RawPath, body: Bytes) -> Response {
    call(&app, path.get("module"), Op::Update, &body, None)
}

/// `POST /crm/v8/{Module}/upsert` (a POST to any other `{Module}/{id}` is a 405).
pub(super) async fn upsert(State(app): State<App>, path: RawPath, body: Bytes) -> Response {
    let module = path.get("module");
    if let Err(refusal) = known_module(module) {
        return refusal.into_response();
    }
    if path.get("id") != "upsert" {
        return err(
            405,
            "INVALID_REQUEST_METHOD",
            "The http request method type is not a valid one",
            json!({}),
        )
        .into_response();
    }
    call(&app, module, Op::Upsert, &body, None)
}

/// `PUT /crm/v8/{Module}/{id}`: updates one record.
pub(super) async fn update_by_id(State(app): State<App>, path: RawPath, body: Bytes) -> Response {
    let (module, id) = (path.get("module"), path.get("id"));
    if let Err(refusal) = known_module(module) {
        return refusal.into_response();
    }
    if parse_body(&body).is_ok() && id.parse::<u64>().is_err() {
        return err(
            400,
            "INVALID_DATA",
            "the id given seems to be invalid",
            json!({"id": id}),
        )
        .into_response();
    }
    call(&app, module, Op::Update, &body, id.parse().ok())
}

/// Runs one write call on a known module and sends its notifications.
fn call(app: &App, module: &str, op: Op, body: &[u8], path_id: Option<u64>) -> Response {
    if let Err(refusal) = known_module(module) {
        return refusal.into_response();
    }
    let body = match parse_body(body) {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let (resp, deliveries) = write(&mut app.lock(), &app.opts, module, op, &body, path_id);
    app.send(deliveries);
    resp.into_response()
}

/// A request body as JSON, or Zoho's 400.
pub(super) fn parse_body(body: &[u8]) -> Result<Value, Resp> {
    serde_json::from_slice(body)
        .map_err(|_| err(400, "INVALID_DATA", "body is not valid json", json!({})))
}

fn val_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

fn check_value(f: &FieldDef, v: &Value, jp: &str) -> Result<(), Value> {
    if v.is_null() {
        return Ok(());
    }
    let type_err = || {
        item_err(
            "INVALID_DATA",
            "invalid data",
            json!({"expected_data_type": f.ty, "api_name": f.api, "json_path": jp}),
        )
    };
    let ok = match f.ty {
        "text" | "textarea" | "email" | "phone" | "picklist" => {
            let Some(s) = v.as_str() else {
                return Err(type_err());
            };
            if f.len > 0 && s.chars().count() > f.len {
                return Err(item_err(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"maximum_length": f.len, "api_name": f.api, "json_path": jp}),
                ));
            }
            match f.ty {
                "email" => s
                    .split_once('@')
                    .is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.contains('@')),
                "phone" => s
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().x".contains(c)),
                "picklist" => {
                    if !f.picks.contains(&s) {
                        return Err(item_err(
                            "INVALID_DATA",
                            "invalid data",
                            json!({"api_name": f.api, "json_path": jp}),
                        ));
                    }
                    true
                }
                _ => true,
            }
        }
        "integer" | "bigint" => v.as_i64().is_some(),
        "double" | "currency" => v.is_number(),
        "boolean" => v.is_boolean(),
        "date" => v
            .as_str()
            .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        "datetime" => v
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        "lookup" | "ownerlookup" => v.get("id").is_some_and(|i| i.is_string() || i.is_number()),
        _ => true,
    };
    if ok { Ok(()) } else { Err(type_err()) }
}

/// Which write a call is.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Insert,
    Update,
    Upsert,
}

/// The records one operation changed, for a notification.
pub(super) struct Change {
    pub(super) op: &'static str,
    pub(super) ids: Vec<String>,
    pub(super) affected: Vec<Value>,
}

/// One insert, update or upsert call: at most 100 records, answered item by item in input
/// order (all ok: 201 for insert, else 200; mixed: 207; all failed: 400).
fn write(
    st: &mut Inner,
    o: &Options,
    module: &str,
    op: Op,
    body: &Value,
    path_id: Option<u64>,
) -> (Resp, Vec<Delivery>) {
    let fields = schema(module).unwrap_or_default();
    let Some(data) = body.get("data").and_then(Value::as_array) else {
        let e = err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "data"}),
        );
        return (e, vec![]);
    };
    if data.len() > 100 {
        let e = err(
            400,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": 100}),
        );
        return (e, vec![]);
    }
    if path_id.is_some() && data.len() != 1 {
        let e = err(
            400,
            "LIMIT_EXCEEDED",
            "only one record may be updated by id",
            json!({"limit": 1}),
        );
        return (e, vec![]);
    }
    let dup_fields = match duplicate_check_fields(body, module, &fields, op) {
        Ok(names) => names,
        Err(refusal) => return (refusal, vec![]),
    };
    log_write_call(st, module, op, body, data.len());
    let now = now_secs();
    let mut results = Vec::with_capacity(data.len());
    let mut inserted = Change {
        op: "insert",
        ids: vec![],
        affected: vec![],
    };
    let mut updated = Change {
        op: "update",
        ids: vec![],
        affected: vec![],
    };
    let ctx = WriteContext {
        options: o,
        module,
        fields: &fields,
        op,
        dup_fields: &dup_fields,
        path_id,
        now,
    };
    for (i, rec) in data.iter().enumerate() {
        match write_one(st, &ctx, i, rec) {
            Ok((item, id, is_insert, changed)) => {
                let c = if is_insert {
                    &mut inserted
                } else {
                    &mut updated
                };
                c.affected.push(json!({"id": id, "fields": changed}));
                c.ids.push(id);
                results.push(item);
            }
            Err(e) => results.push(e),
        }
    }
    let ok = results.iter().filter(|r| r["status"] == "success").count();
    let status = if ok == results.len() {
        if op == Op::Insert { 201 } else { 200 }
    } else if ok == 0 {
        400
    } else {
        207
    };
    let mut del = vec![];
    for c in [inserted, updated] {
        if !c.ids.is_empty() {
            del.extend(notify(st, o, module, &c));
        }
    }
    (Resp::ok(status, json!({"data": results})), del)
}

/// What one written record contributes: its `data[]` item, id, whether it was inserted, and the
/// fields written.
type WriteOk = (Value, String, bool, Vec<String>);

/// What every record of one write call shares.
struct WriteContext<'a> {
    options: &'a Options,
    module: &'a str,
    fields: &'a [FieldDef],
    op: Op,
    dup_fields: &'a [String],
    path_id: Option<u64>,
    now: DateTime<Utc>,
}

/// Validates and applies record `i` of a write call; `Err` is its error item.
fn write_one(
    st: &mut Inner,
    ctx: &WriteContext<'_>,
    i: usize,
    rec: &Value,
) -> Result<WriteOk, Value> {
    let Some(obj) = rec.as_object() else {
        return Err(item_err(
            "INVALID_DATA",
            "invalid data",
            json!({"json_path": format!("$.data[{i}]")}),
        ));
    };
    let jp = |k: &str| format!("$.data[{i}].{k}");
    let clean = known_fields(obj, ctx.fields, i)?;
    let (target, dup_field) = match ctx.op {
        Op::Insert => (None, Value::Null),
        Op::Update => (Some(update_target(st, ctx, obj, i)?), Value::Null),
        Op::Upsert => upsert_target(st, ctx, &clean),
    };
    for f in ctx.fields.iter().filter(|f| f.mandatory) {
        let missing = match target {
            None => is_blank(clean.get(f.api)),
            Some(_) => clean.contains_key(f.api) && is_blank(clean.get(f.api)),
        };
        if missing {
            return Err(item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": f.api, "json_path": jp(f.api)}),
            ));
        }
    }
    let target_id = target.map(|ix| st.records[ix].id);
    check_unique(st, ctx, &clean, target_id, i)?;
    let changed: Vec<String> = clean.keys().cloned().collect();
    let (rec, is_insert) = match target {
        Some(ix) => {
            let r = &mut st.records[ix];
            for (k, v) in clean {
                r.fields.insert(k, v);
            }
            r.modified = ctx.now;
            (&*r, false)
        }
        None => {
            st.next_id += 1;
            st.records.push(Record {
                id: st.next_id,
                module: ctx.module.to_string(),
                fields: clean,
                created: ctx.now,
                modified: ctx.now,
                deleted: None,
            });
            (st.records.last().expect("just pushed"), true)
        }
    };
    let o = ctx.options;
    let mut item = json!({
        "code": "SUCCESS",
        "details": {"Modified_Time": fmt_time(rec.modified), "Modified_By": user_json(o),
                    "Created_Time": fmt_time(rec.created), "id": rec.id.to_string(),
                    "Created_By": user_json(o)},
        "message": if is_insert { "record added" } else { "record updated" },
        "status": "success",
    });
    if ctx.op == Op::Upsert {
        item["action"] = json!(if is_insert { "insert" } else { "update" });
        item["duplicate_field"] = dup_field;
    }
    Ok((item, rec.id.to_string(), is_insert, changed))
}

/// The record's known, writable, type-checked fields (unknown names are ignored, as Zoho does;
/// `id` is the address, not a field).
fn known_fields(
    obj: &Map<String, Value>,
    fields: &[FieldDef],
    i: usize,
) -> Result<Map<String, Value>, Value> {
    let jp = |k: &str| format!("$.data[{i}].{k}");
    let mut clean = Map::new();
    for (k, v) in obj {
        if k == "id" {
            continue;
        }
        let Some(f) = fields.iter().find(|f| f.api == k) else {
            continue;
        };
        if f.read_only {
            return Err(item_err(
                "NOT_ALLOWED",
                "the field is read only",
                json!({"api_name": k, "json_path": jp(k)}),
            ));
        }
        check_value(f, v, &jp(k))?;
        clean.insert(k.clone(), v.clone());
    }
    Ok(clean)
}

/// The index of the live record an update addresses (by the path's id or the record's `id`).
fn update_target(
    st: &Inner,
    ctx: &WriteContext<'_>,
    obj: &Map<String, Value>,
    i: usize,
) -> Result<usize, Value> {
    let id = ctx.path_id.or_else(|| match obj.get("id") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    });
    let Some(id) = id else {
        return Err(if obj.contains_key("id") {
            item_err(
                "INVALID_DATA",
                "the id given seems to be invalid",
                json!({"id": obj["id"]}),
            )
        } else {
            item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "id", "json_path": format!("$.data[{i}].id")}),
            )
        });
    };
    st.records
        .iter()
        .position(|r| r.id == id && r.module == ctx.module && r.deleted.is_none())
        .ok_or_else(|| {
            item_err(
                "INVALID_DATA",
                "the id given seems to be invalid",
                json!({"id": id.to_string()}),
            )
        })
}

/// The live record an upsert matches, by the first duplicate-check field with a matching value
/// (strings compare case-insensitively), and that field's name.
fn upsert_target(
    st: &Inner,
    ctx: &WriteContext<'_>,
    clean: &Map<String, Value>,
) -> (Option<usize>, Value) {
    for f in ctx.dup_fields {
        let Some(v) = clean.get(f).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(ix) = st.records.iter().position(|r| {
            r.module == ctx.module
                && r.deleted.is_none()
                && r.fields.get(f).is_some_and(|x| val_eq(x, v))
        }) {
            return (Some(ix), json!(f));
        }
    }
    (None, Value::Null)
}

/// `DUPLICATE_DATA` when another live record already holds a unique field's value.
fn check_unique(
    st: &Inner,
    ctx: &WriteContext<'_>,
    clean: &Map<String, Value>,
    target_id: Option<u64>,
    i: usize,
) -> Result<(), Value> {
    for f in ctx.fields.iter().filter(|f| f.unique) {
        let Some(v) = clean.get(f.api).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(d) = st.records.iter().find(|r| {
            r.module == ctx.module
                && r.deleted.is_none()
                && Some(r.id) != target_id
                && r.fields.get(f.api).is_some_and(|x| val_eq(x, v))
        }) {
            return Err(item_err(
                "DUPLICATE_DATA",
                "duplicate data",
                json!({
                "api_name": f.api, "json_path": format!("$.data[{i}].{}", f.api),
                "duplicate_record": {"id": d.id.to_string(), "module": {"api_name": ctx.module}, "Owner": user_json(ctx.options)}}),
            ));
        }
    }
    Ok(())
}

/// The fields an upsert matches on, in order: the request's `duplicate_check_fields` (each must
/// be unique or the module's system field), else the system field and then the unique fields.
fn duplicate_check_fields(
    body: &Value,
    module: &str,
    fields: &[FieldDef],
    op: Op,
) -> Result<Vec<String>, Resp> {
    let names = match body.get("duplicate_check_fields") {
        Some(Value::Array(a)) if op == Op::Upsert => {
            let names: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            for n in &names {
                let okf =
                    fields.iter().any(|f| f.api == n && f.unique) || n == system_dup_field(module);
                if !okf {
                    return Err(err(
                        400,
                        "INVALID_DATA",
                        "invalid duplicate_check_fields",
                        json!({"api_name": n, "json_path": "$.duplicate_check_fields"}),
                    ));
                }
            }
            names
        }
        _ => {
            let sys = system_dup_field(module);
            let mut v = vec![sys.to_string()];
            v.extend(
                fields
                    .iter()
                    .filter(|f| f.unique && f.api != sys)
                    .map(|f| f.api.to_string()),
            );
            v
        }
    };
    Ok(names)
}

/// Logs the write call and whether it fired workflows (`trigger` absent, not an array, or
/// naming `workflow`).
fn log_write_call(st: &mut Inner, module: &str, op: Op, body: &Value, records: usize) {
    let trigger = body.get("trigger").cloned();
    let workflows = match &trigger {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.iter().any(|t| t.as_str() == Some("workflow")),
        Some(_) => true,
    };
    let op_name = match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Upsert => "upsert",
    };
    st.write_calls
        .push(json!({"module": module, "op": op_name, "records": records,
        "trigger": trigger, "workflows_fired": workflows}));
    if workflows {
        st.workflow_runs += 1;
    }
}
