//! Two-way sync with HubSpot: the [`Crm`] adapter (batch/read with property history, search
//! reconciliation, linking). The webhook receiver is in [`super::receiver`].
//!
//! Invariants:
//! - reads use `batch/read` (≤ 50 records with property history), by `id_property` outbound and
//!   by HubSpot id inbound; a property's change time is the newest entry of its history;
//! - webhooks are accepted only with a valid signature (v3; v1/v2 only if configured), answered
//!   (204) once the object ids are committed to the durable inbox (503 when Postgres cannot
//!   take them, so HubSpot retries), and de-duplicated on `eventId`; refusals are counted and
//!   logged without bodies;
//! - reconciliation searches the records last modified in the listing's window, ascending by
//!   HubSpot id with a keyset on it (every page a new search from offset 0: no 10,000-result
//!   cap, no page shifted by records changing while paging), through the account's shared
//!   search limiter (at most 4 searches per second per account in the process);
//! - deletions: `*.deletion` webhooks queue [`Inbound::Deleted`](crate::sync::engine::Inbound::Deleted) (only with
//!   `on_crm_delete = "delete"`); reconciliation lists archived records
//!   (`GET /crm/v3/objects/{object}?archived=true`, 100 per page, one call per 100 records
//!   HubSpot still keeps archived, i.e. archived in the last 90 days) and queues those
//!   archived in the deletion listing's window (`archivedAt`). The search API cannot find
//!   archived records, and batch/read of every linked id would cost one call per 100 rows.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::destinations::hubspot::HubspotSink;
use crate::sink::SinkError;
use crate::sync::engine::{ById, Context, Crm, Listing, ReadBy};
use crate::sync::plan::CrmRecord;

/// Records per `batch/read` with property history (HubSpot's cap).
const READ_BATCH: usize = 50;
/// Records per `batch/update` (HubSpot's cap).
const LINK_BATCH: usize = 100;

/// Reads records by `id_property` values (outbound) or by HubSpot ids (inbound), with
/// property history, in batches of [`READ_BATCH`].
async fn read(
    ctx: &Context,
    hubspot: &mut HubspotSink,
    by: ReadBy,
    ids: &[String],
) -> Result<Vec<CrmRecord>, SinkError> {
    let path = format!("/crm/v3/objects/{}/batch/read", hubspot.object());
    let properties = ctx.properties();
    let mut out = Vec::new();
    for chunk in ids.chunks(READ_BATCH) {
        let mut body = json!({
            "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "properties": properties,
            "propertiesWithHistory": properties,
        });
        if by == ReadBy::IdProperty {
            body["idProperty"] = json!(ctx.id_property);
        }
        let answer = hubspot.read_json(&path, &body).await?;
        ctx.count_read();
        out.extend(parse_records(&answer));
    }
    Ok(out)
}
/// Records of a `batch/read` answer (string properties, latest change time per property).
pub(crate) fn parse_records(answer: &Value) -> Vec<CrmRecord> {
    let mut out = Vec::new();
    for r in answer["results"].as_array().into_iter().flatten() {
        let Some(id) = r["id"].as_str() else {
            continue;
        };
        let properties = r["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let changed_at = r["propertiesWithHistory"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, versions)| {
                let latest = versions
                    .as_array()?
                    .iter()
                    .filter_map(|v| parse_time(&v["timestamp"]))
                    .max()?;
                Some((k.clone(), latest))
            })
            .collect();
        out.push(CrmRecord {
            id: id.to_string(),
            properties,
            changed_at,
        });
    }
    out
}

/// An RFC 3339 string or epoch milliseconds.
fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
            }),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

impl Crm for HubspotSink {
    async fn read(
        &mut self,
        ctx: &Context,
        by: ReadBy,
        ids: &[String],
    ) -> Result<Vec<CrmRecord>, SinkError> {
        read(ctx, self, by, ids).await
    }

    /// Sets the id property by `batch/update` (100 per request); the records in `results`
    /// are confirmed. A per-request refusal (4xx) confirms none of its records, which stay
    /// pending; 401/403/429/5xx are classified as for any write.
    async fn link(
        &mut self,
        ctx: &Context,
        links: &[(String, String)],
    ) -> Result<Vec<String>, SinkError> {
        let path = format!("/crm/v3/objects/{}/batch/update", self.object());
        let mut confirmed = Vec::new();
        for chunk in links.chunks(LINK_BATCH) {
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|(id, key)| json!({"id": id, "properties": {ctx.id_property.as_str(): key}}))
                .collect();
            let r = self.post(&path, &json!({"inputs": inputs})).await?;
            match r.status.as_u16() {
                200..=299 => confirmed.extend(
                    r.body["results"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["id"].as_str().map(String::from)),
                ),
                401 | 403 | 408 | 429 | 500..=599 => return Err(self.classify(&r)),
                status => tracing::warn!(sink = %ctx.sink, status,
                    category = r.body["category"].as_str().unwrap_or(""), records = chunk.len(),
                    "HubSpot refused to link records created there to their rows; retrying later"),
            }
        }
        Ok(confirmed)
    }

    /// Searches the records modified in the listing's window, by ascending HubSpot id with a
    /// keyset (`hs_object_id` greater than the last id seen), and queues their ids. Each page
    /// is a new search from offset 0, so neither the 10,000-result cap nor records changing
    /// while paging can skip one.
    async fn list_modified(&mut self, l: &mut Listing<'_>) -> Result<(), SinkError> {
        let path = format!("/crm/v3/objects/{}/search", self.object());
        let mut keyset = ById::default();
        while !keyset.done(l) {
            let body = modified_search(self.object(), l.window(), keyset.after());
            let answer = self.search_json(&path, &body).await?;
            l.ctx.count_read();
            let ids: Vec<String> = answer["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect();
            let full = ids.len() >= SEARCH_PAGE;
            keyset.page(l, ids, full).await?;
        }
        Ok(())
    }

    /// Lists archived records (100 per page) and queues those archived in the listing's
    /// window.
    async fn list_deleted(&mut self, l: &mut Listing<'_>) -> Result<(), SinkError> {
        let mut after: Option<String> = None;
        while !l.stopped() {
            let mut path = format!("/crm/v3/objects/{}?archived=true&limit=100", self.object());
            if let Some(a) = &after {
                let a =
                    percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("&after={a}"));
            }
            let answer = self.get_json(&path).await?;
            l.ctx.count_read();
            let ids = archived_between(&answer, l.window());
            l.queue(ids).await?;
            after = answer["paging"]["next"]["after"].as_str().map(String::from);
            if after.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn sibling(&self) -> Self {
        HubspotSink::sibling(self)
    }
}

/// Results per reconciliation search (HubSpot's maximum).
const SEARCH_PAGE: usize = 200;

/// The search for one reconciliation page: records of `object` last modified in
/// `[from_ms, until_ms)` with an id above `after_id`, by ascending id.
pub(crate) fn modified_search(
    object: &str,
    (from_ms, until_ms): (i64, i64),
    after_id: Option<&str>,
) -> Value {
    let modified = if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    };
    let mut filters = vec![
        json!({"propertyName": modified, "operator": "GTE", "value": from_ms.to_string()}),
        json!({"propertyName": modified, "operator": "LT", "value": until_ms.to_string()}),
    ];
    if let Some(id) = after_id {
        filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id}));
    }
    json!({
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "properties": ["hs_object_id"],
        "limit": SEARCH_PAGE,
    })
}

/// Ids of the records of a list answer archived in `[from_ms, until_ms)`.
pub(crate) fn archived_between(answer: &Value, (from_ms, until_ms): (i64, i64)) -> Vec<String> {
    answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let at = parse_time(&r["archivedAt"])?.timestamp_millis();
            (from_ms..until_ms)
                .contains(&at)
                .then(|| r["id"].as_str().map(String::from))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_read_answers_parse_with_latest_property_times() {
        let answer = json!({"results": [{
            "id": "901",
            "properties": {"firstname": "Ada", "pg_external_id": "7", "n": null},
            "propertiesWithHistory": {"firstname": [
                {"value": "Ada", "timestamp": "2026-11-27T10:00:02.000Z"},
                {"value": "Augusta", "timestamp": "2026-11-27T10:00:01.000Z"}
            ]}
        }], "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND"}]});
        let records = parse_records(&answer);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].properties["firstname"], "Ada");
        assert!(!records[0].properties.contains_key("n"));
        assert_eq!(
            records[0].changed_at["firstname"].to_rfc3339(),
            "2026-11-27T10:00:02+00:00"
        );
        assert_eq!(
            parse_time(&json!("1700000000000")).map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn archived_records_in_the_window() {
        let answer = json!({"results": [
            {"id": "1", "archived": true, "archivedAt": "2026-11-27T10:00:00.000Z"},
            {"id": "2", "archived": true, "archivedAt": "2026-11-27T10:00:05.000Z"},
            {"id": "3", "archived": true},
            {"id": "4", "archived": true, "archivedAt": "2026-11-27T10:00:03.000Z"},
            {"id": "5", "archived": true, "archivedAt": "2026-11-27T10:00:06.000Z"}
        ]});
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let window = (t("2026-11-27T10:00:03Z"), t("2026-11-27T10:00:06Z"));
        assert_eq!(archived_between(&answer, window), ["2", "4"]);
        assert!(archived_between(&json!({}), window).is_empty());
    }

    #[test]
    fn reconciliation_pages_by_id_inside_the_window() {
        let first = modified_search("contacts", (1_000, 2_000), None);
        let filters = &first["filterGroups"][0]["filters"];
        assert_eq!(filters.as_array().unwrap().len(), 2);
        assert_eq!(filters[0]["propertyName"], "lastmodifieddate");
        assert_eq!(filters[0]["operator"], "GTE");
        assert_eq!(filters[0]["value"], "1000");
        assert_eq!(filters[1]["operator"], "LT");
        assert_eq!(filters[1]["value"], "2000");
        assert_eq!(first["sorts"][0]["propertyName"], "hs_object_id");
        assert!(first.get("after").is_none(), "never an offset");
        let next = modified_search("deals", (1_000, 2_000), Some("901"));
        let filters = &next["filterGroups"][0]["filters"];
        assert_eq!(filters[0]["propertyName"], "hs_lastmodifieddate");
        assert_eq!(filters[2]["propertyName"], "hs_object_id");
        assert_eq!(filters[2]["operator"], "GT");
        assert_eq!(filters[2]["value"], "901");
    }
}
