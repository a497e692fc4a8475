//! The search route of the HubSpot emulator (`POST /crm/v3/objects/{object}/search`).
//!
//! Owns filtering (filter groups OR-ed, filters within a group AND-ed, values compared as numbers
//! or epoch milliseconds when the property's type says so), the free-text `query`, sorting (by
//! id unless asked), offset paging through `after` and the limits: `limit` ≤ 200, at most 10 000
//! results reachable, at most 5 groups, 10 filters per group and 25 in total. Archived records
//! never match. Search reads the search index, not the records: a write becomes visible only
//! [`Options::search_index_lag`](super::Options::search_index_lag) after it happened (until then
//! search sees the record's previous version, or not at all when it is new).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::render::render_full;
use super::response::{error, json_body, json_response, str_list};
use super::schema::{PropertyType, api_object_type, schema, to_ms};
use super::state::{Inner, Record, Shared};
use crate::http::RawPath;

/// `POST .../{object}/{id}`: HubSpot's search when `id` is `search`; no other POST has this
/// shape.
pub(super) async fn search(State(shared): State<Shared>, path: RawPath, body: Bytes) -> Response {
    let t = match api_object_type(path.get("object")) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    if path.get("id") != "search" {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown endpoint",
        );
    }
    match json_body(&body) {
        Ok(b) => run(&mut shared.lock().unwrap(), t, &b, Instant::now()),
        Err(refusal) => refusal,
    }
}

/// Value of a property for filtering / sorting, typed by the schema.
#[derive(PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Str(String),
}

fn key(t: &str, prop: &str, raw: &str) -> Key {
    let ty = schema(t)
        .iter()
        .find(|d| d.name == prop)
        .map(|d| d.property_type);
    match ty {
        Some(PropertyType::Number) => raw.parse().map(Key::Num).unwrap_or(Key::Str(raw.into())),
        Some(PropertyType::Date | PropertyType::DateTime) => to_ms(raw)
            .map(|m| Key::Num(m as f64))
            .unwrap_or(Key::Str(raw.into())),
        _ => Key::Str(raw.into()),
    }
}

fn matches(t: &str, r: &Record, f: &Value) -> Result<bool, String> {
    let prop = f
        .get("propertyName")
        .and_then(Value::as_str)
        .ok_or("filter needs propertyName")?;
    let op = f.get("operator").and_then(Value::as_str).unwrap_or("EQ");
    let actual = if prop == "id" {
        Some(r.id.to_string())
    } else {
        r.props.get(prop).cloned()
    };
    let val = |k: &str| -> Option<String> {
        f.get(k).map(|v| {
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        })
    };
    let Some(a) = actual else {
        return Ok(matches!(op, "NOT_HAS_PROPERTY" | "NEQ" | "NOT_IN"));
    };
    let ak = key(t, prop, &a);
    let cmp = |k: &str| val(k).map(|v| key(t, prop, &v));
    Ok(match op {
        "HAS_PROPERTY" => true,
        "NOT_HAS_PROPERTY" => false,
        "EQ" => cmp("value").is_some_and(|v| v == ak),
        "NEQ" => cmp("value").is_some_and(|v| v != ak),
        "LT" => cmp("value").is_some_and(|v| ak < v),
        "LTE" => cmp("value").is_some_and(|v| ak <= v),
        "GT" => cmp("value").is_some_and(|v| ak > v),
        "GTE" => cmp("value").is_some_and(|v| ak >= v),
        "BETWEEN" => {
            cmp("value").is_some_and(|lo| ak >= lo) && cmp("highValue").is_some_and(|hi| ak <= hi)
        }
        "IN" | "NOT_IN" => {
            let vals = f
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let hit = vals
                .iter()
                .any(|v| key(t, prop, v.as_str().unwrap_or(&v.to_string())) == ak);
            hit == (op == "IN")
        }
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let needle = val("value")
                .unwrap_or_default()
                .replace('*', "")
                .to_lowercase();
            a.to_lowercase().contains(&needle) == (op == "CONTAINS_TOKEN")
        }
        other => return Err(format!("Unsupported operator {other}")),
    })
}

/// One search at `now` (the search index first catches up to `now`).
pub(super) fn run(st: &mut Inner, t: &str, b: &Value, now: Instant) -> Response {
    st.catch_up_index(now);
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let limit = match b.get("limit").and_then(Value::as_u64).unwrap_or(10) {
        l if l > 200 => return bad("limit must be at most 200"),
        l => l.max(1) as usize,
    };
    let after = match b.get("after") {
        None | Some(Value::Null) => 0,
        Some(v) => match v
            .as_str()
            .map(str::parse::<usize>)
            .or(v.as_u64().map(|n| Ok(n as usize)))
        {
            Some(Ok(n)) => n,
            _ => return bad("after must be a numeric offset"),
        },
    };
    if after + limit > 10_000 {
        return bad("Search results are limited to 10,000 total; paging beyond is not allowed.");
    }
    let groups = b
        .get("filterGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total_filters: usize = groups
        .iter()
        .map(|g| {
            g.get("filters")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    if groups.len() > 5
        || total_filters > 25
        || groups.iter().any(|g| {
            g.get("filters")
                .and_then(Value::as_array)
                .is_some_and(|f| f.len() > 10)
        })
    {
        return bad(
            "Too many filters: at most 5 filterGroups, 10 filters per group and 25 filters in total",
        );
    }
    let mut hits = vec![];
    for r in st.indexed[t].values().filter(|r| !r.archived) {
        let mut ok = groups.is_empty();
        for g in &groups {
            let mut all = true;
            for f in g
                .get("filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match matches(t, r, f) {
                    Ok(true) => {}
                    Ok(false) => all = false,
                    Err(e) => return bad(&e),
                }
            }
            ok |= all;
        }
        if let Some(qs) = b
            .get("query")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let qs = qs.to_lowercase();
            ok &= r.props.values().any(|v| v.to_lowercase().contains(&qs));
        }
        if ok {
            hits.push(r);
        }
    }
    sort(&mut hits, t, b);
    let total = hits.len();
    let props = str_list(b.get("properties"));
    let results: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|r| render_full(r, t, props.as_deref(), None))
        .collect();
    let mut v = json!({"total": total, "results": results});
    if after + limit < total {
        v["paging"] = json!({"next": {"after": (after + limit).to_string(), "link": Value::Null}});
    }
    json_response(StatusCode::OK, &v)
}

/// Sorts `hits` by the request's `sorts` (`[{propertyName, direction}]` or `["prop" / "-prop"]`),
/// then by id; without `sorts` they stay in id order.
fn sort(hits: &mut [&Record], t: &str, b: &Value) {
    let mut sorts: Vec<(String, bool)> = vec![];
    for s in b
        .get("sorts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = s.as_str() {
            match s.strip_prefix('-') {
                Some(p) => sorts.push((p.into(), true)),
                None => sorts.push((s.into(), false)),
            }
        } else if let Some(p) = s.get("propertyName").and_then(Value::as_str) {
            let desc = s.get("direction").and_then(Value::as_str) == Some("DESCENDING");
            sorts.push((p.into(), desc));
        }
    }
    // `hits` is already in id order (the records are a BTreeMap by id): sort only when asked.
    if !sorts.is_empty() {
        hits.sort_by(|a, b| {
            for (p, desc) in &sorts {
                let ka = a.props.get(p).map(|v| key(t, p, v));
                let kb = b.props.get(p).map(|v| key(t, p, v));
                let o = ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal);
                let o = if *desc { o.reverse() } else { o };
                if o.is_ne() {
                    return o;
                }
            }
            a.id.cmp(&b.id)
        });
    }
}
