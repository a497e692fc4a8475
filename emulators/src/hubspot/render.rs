//! JSON renderings of the HubSpot emulator's records.
//!
//! Owns the SimplePublicObject shape (`id`, `properties`, `createdAt`, `updatedAt`, `archived`,
//! `archivedAt`) and `propertiesWithHistory` (newest entry first). Which properties appear:
//! the requested ones plus `createdate`, `hs_object_id` and the last-modified date; or the type's
//! defaults; or, for write responses, every set property.

use serde_json::{Map, Value, json};

use super::response::iso;
use super::schema::{default_props, modified_prop};
use super::state::Record;

/// Renders a record as a SimplePublicObject. `props = None` → all set properties,
/// `Some([])` → defaults for the type.
pub(super) fn render(r: &Record, t: Option<&str>, props: Option<&[String]>) -> Value {
    let mut pm = Map::new();
    match props {
        Some(list) if !list.is_empty() => {
            for k in ["createdate", "hs_object_id"] {
                pm.insert(k.into(), json!(r.props.get(k)));
            }
            if let Some(t) = t {
                let m = modified_prop(t);
                pm.insert(m.into(), json!(r.props.get(m)));
            }
            for k in list {
                pm.insert(k.clone(), json!(r.props.get(k)));
            }
        }
        Some(_) if t.is_some() => {
            for k in default_props(t.unwrap_or_default()) {
                pm.insert((*k).into(), json!(r.props.get(*k)));
            }
        }
        _ => {
            for (k, v) in &r.props {
                pm.insert(k.clone(), json!(v));
            }
        }
    }
    let mut v = json!({
        "id": r.id.to_string(),
        "properties": pm,
        "createdAt": iso(r.created_at),
        "updatedAt": iso(r.updated_at),
        "archived": r.archived,
    });
    if let Some(a) = r.archived_at {
        v["archivedAt"] = json!(iso(a));
    }
    v
}

pub(super) fn history_json(r: &Record, only: Option<&[String]>) -> Value {
    let mut m = Map::new();
    for (k, hs) in &r.history {
        if only.is_some_and(|o| !o.contains(k)) {
            continue;
        }
        let list: Vec<Value> = hs
            .iter()
            .rev()
            .map(|h| {
                json!({"value": h.value, "timestamp": iso(h.timestamp),
                       "sourceType": h.source_type, "sourceId": h.source_id,
                       "updatedByUserId": h.user_id})
            })
            .collect();
        m.insert(k.clone(), Value::Array(list));
    }
    Value::Object(m)
}

pub(super) fn render_full(
    r: &Record,
    t: &str,
    props: Option<&[String]>,
    hist: Option<&[String]>,
) -> Value {
    let mut v = render(r, Some(t), Some(props.unwrap_or(&[])));
    if let Some(h) = hist {
        v["propertiesWithHistory"] = history_json(r, Some(h));
    }
    v
}
