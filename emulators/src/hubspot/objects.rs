//! Single-object routes of the HubSpot emulator: list, create, read, update, archive.
//!
//! Owns `GET|POST /crm/v3/objects/{object}` and `GET|PATCH|DELETE .../{object}/{id}` (also under
//! the 2026-03 prefix). Reads and updates address a record by id or, with `?idProperty=`, by a
//! unique property; archived records are only read with `?archived=true`; the list pages by
//! record id (`after`); deleting an unknown id still answers 204.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::records::{WriteSource, archive as archive_record, find, write};
use super::render::{render, render_full};
use super::response::{csv, empty, error, json_body, json_response};
use super::schema::{api_object_type, is_unique, non_unique_err};
use super::state::{Inner, Record, Shared};
use super::validate::{conflict, invalid_properties, unique_conflict, validate};
use crate::http::{RawPath, query};

/// `GET .../{object}`: one page of records.
pub(super) async fn list(State(shared): State<Shared>, path: RawPath, uri: Uri) -> Response {
    match api_object_type(path.get("object")) {
        Ok(t) => list_page(&shared.lock().unwrap(), t, &query(&uri)),
        Err(refusal) => refusal,
    }
}

/// `POST .../{object}`: creates one record (201).
pub(super) async fn create(State(shared): State<Shared>, path: RawPath, body: Bytes) -> Response {
    let created = api_object_type(path.get("object"))
        .and_then(|t| Ok((t, json_body(&body)?)))
        .map(|(t, b)| create_one(&mut shared.lock().unwrap(), t, &b));
    created.unwrap_or_else(|refusal| refusal)
}

/// `GET .../{object}/{id}`: one record.
pub(super) async fn read(State(shared): State<Shared>, path: RawPath, uri: Uri) -> Response {
    match api_object_type(path.get("object")) {
        Ok(t) => get_one(&shared.lock().unwrap(), t, path.get("id"), &query(&uri)),
        Err(refusal) => refusal,
    }
}

/// `PATCH .../{object}/{id}`: updates one record.
pub(super) async fn update(
    State(shared): State<Shared>,
    path: RawPath,
    uri: Uri,
    body: Bytes,
) -> Response {
    let updated = api_object_type(path.get("object"))
        .and_then(|t| Ok((t, json_body(&body)?)))
        .map(|(t, b)| {
            let mut st = shared.lock().unwrap();
            patch_one(&mut st, t, path.get("id"), &b, &query(&uri))
        });
    updated.unwrap_or_else(|refusal| refusal)
}

/// `DELETE .../{object}/{id}`: archives one record (204 even when there is none).
pub(super) async fn archive(State(shared): State<Shared>, path: RawPath) -> Response {
    match api_object_type(path.get("object")) {
        Ok(t) => delete_one(&mut shared.lock().unwrap(), t, path.get("id")),
        Err(refusal) => refusal,
    }
}

fn create_one(st: &mut Inner, t: &'static str, b: &Value) -> Response {
    let (props, errs) = match validate(&st.opts, t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        return invalid_properties(errs);
    }
    if let Some((_, other)) = unique_conflict(st, t, &props, None) {
        return conflict(t, other);
    }
    let n = write(st, t, None, props);
    json_response(
        StatusCode::CREATED,
        &render(&st.objects[t][&n], Some(t), None),
    )
}

fn get_one(st: &Inner, t: &str, id: &str, q: &HashMap<String, String>) -> Response {
    let id_prop = q.get("idProperty").map(String::as_str);
    if let Some(p) = id_prop.filter(|p| *p != "hs_object_id")
        && !is_unique(t, p)
    {
        return non_unique_err(t, p);
    }
    let archived = q.get("archived").is_some_and(|a| a == "true");
    match find(st, t, id, id_prop, archived) {
        Some(n) => json_response(
            StatusCode::OK,
            &render_full(
                &st.objects[t][&n],
                t,
                csv(q, "properties").as_deref(),
                csv(q, "propertiesWithHistory").as_deref(),
            ),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        ),
    }
}

fn patch_one(
    st: &mut Inner,
    t: &'static str,
    id: &str,
    b: &Value,
    q: &HashMap<String, String>,
) -> Response {
    let id_prop = q.get("idProperty").map(String::as_str);
    if let Some(p) = id_prop.filter(|p| *p != "hs_object_id")
        && !is_unique(t, p)
    {
        return non_unique_err(t, p);
    }
    let (props, errs) = match validate(&st.opts, t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        return invalid_properties(errs);
    }
    let Some(n) = find(st, t, id, id_prop, false) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        );
    };
    if let Some((_, other)) = unique_conflict(st, t, &props, Some(n)) {
        return conflict(t, other);
    }
    write(st, t, Some(n), props);
    json_response(StatusCode::OK, &render(&st.objects[t][&n], Some(t), None))
}

fn delete_one(st: &mut Inner, t: &'static str, id: &str) -> Response {
    if let Ok(n) = id.parse::<u64>() {
        let src = WriteSource::api(&st.opts);
        archive_record(st, t, n, &src);
    }
    empty(StatusCode::NO_CONTENT)
}

fn list_page(st: &Inner, t: &str, q: &HashMap<String, String>) -> Response {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after = q
        .get("after")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0);
    let archived = q.get("archived").is_some_and(|a| a == "true");
    let props = csv(q, "properties");
    let hist = csv(q, "propertiesWithHistory");
    let page: Vec<&Record> = st.objects[t]
        .range(after + 1..)
        .map(|(_, r)| r)
        .filter(|r| r.archived == archived)
        .take(limit + 1)
        .collect();
    let results: Vec<Value> = page
        .iter()
        .take(limit)
        .map(|r| render_full(r, t, props.as_deref(), hist.as_deref()))
        .collect();
    let mut v = json!({ "results": results });
    if page.len() > limit {
        let next = page[limit - 1].id.to_string();
        v["paging"] = json!({"next": {"after": next,
            "link": format!("https://api.hubapi.com/crm/v3/objects/{t}?after={next}")}});
    }
    json_response(StatusCode::OK, &v)
}
