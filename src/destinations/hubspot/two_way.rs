//! Two-way sync with HubSpot: the [`Crm`] adapter (batch/read with property history, search
//! reconciliation, linking). The webhook receiver is in [`super::receiver`].
//!
//! Invariants:
//! - reads use `batch/read` (≤ 50 records with property history), by `id_property` outbound and
//!   by HubSpot id inbound; a property's change time is the newest entry of its history;
//! - webhooks are accepted only with a valid signature (v3; v1/v2 only if configured), answered
//!   at once (204) after the object ids are queued (503 when the queue is full, so HubSpot
//!   retries), and de-duplicated on `eventId`; refusals are counted and logged without bodies;
//! - reconciliation searches on the last-modified date (ascending, keyset on the newest time
//!   seen, restarting the search before the 10,000-result cap), through the account's shared
//!   search limiter (at most 4 searches per second per account in the process);
//! - deletions: `*.deletion` webhooks queue [`Inbound::Deleted`](crate::sync::engine::Inbound::Deleted) (only with
//!   `on_crm_delete = "delete"`); reconciliation lists archived records
//!   (`GET /crm/v3/objects/{object}?archived=true`, 100 per page, one call per 100 records
//!   HubSpot still keeps archived, i.e. archived in the last 90 days) and queues those
//!   archived at or after the deletion cursor (`archivedAt`). The search API cannot find
//!   archived records, and batch/read of every linked id would cost one call per 100 rows.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::destinations::hubspot::HubspotSink;
use crate::sink::SinkError;
use crate::sync::engine::{Context, Crm, Listing, ReadBy};
use crate::sync::plan::CrmRecord;

/// Records per `batch/read` with property history (HubSpot's cap).
const READ_BATCH: usize = 50;

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

    async fn link(&mut self, ctx: &Context, links: &[(String, String)]) -> Result<(), SinkError> {
        let path = format!("/crm/v3/objects/{}/batch/update", self.object());
        let inputs: Vec<Value> = links
            .iter()
            .map(|(id, key)| json!({"id": id, "properties": {ctx.id_property.as_str(): key}}))
            .collect();
        self.post_json(&path, &json!({"inputs": inputs})).await?;
        Ok(())
    }

    /// Searches records modified at or after the listing's cursor and queues their ids.
    async fn list_modified(&mut self, l: &mut Listing<'_>) -> Result<(), SinkError> {
        let mut since_ms = l.since_ms;
        let modified = if self.object() == "contacts" {
            "lastmodifieddate"
        } else {
            "hs_lastmodifieddate"
        };
        let path = format!("/crm/v3/objects/{}/search", self.object());
        let mut after: Option<String> = None;
        while !l.stopped() {
            let mut body = json!({
                "filterGroups": [{"filters": [
                    {"propertyName": modified, "operator": "GTE", "value": since_ms.to_string()}
                ]}],
                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                "properties": [modified],
                "limit": 100,
            });
            if let Some(a) = &after {
                body["after"] = json!(a);
            }
            let answer = self.search_json(&path, &body).await?;
            l.ctx.count_read();
            let mut ids = Vec::new();
            for r in answer["results"].as_array().into_iter().flatten() {
                if let Some(id) = r["id"].as_str() {
                    ids.push(id.to_string());
                }
                if let Some(t) = parse_time(&r["properties"][modified]) {
                    l.newest_ms = l.newest_ms.max(t.timestamp_millis());
                }
            }
            if !l.queue(ids).await {
                break;
            }
            after = answer["paging"]["next"]["after"].as_str().map(String::from);
            match &after {
                None => break,
                // Before the 10,000-result cap: a new search from the newest time seen.
                Some(a) if a.parse::<u64>().is_ok_and(|n| n >= 9_900) => {
                    if l.newest_ms == since_ms {
                        tracing::warn!(sink = %l.ctx.sink,
                            "more than 10,000 records share one modification time; skipping ahead");
                        l.newest_ms += 1;
                    }
                    since_ms = l.newest_ms;
                    after = None;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Lists archived records (100 per page) and queues those archived at or after the
    /// listing's cursor.
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
            let (ids, newest) = archived_since(&answer, l.since_ms);
            l.newest_ms = l.newest_ms.max(newest);
            if !l.queue(ids).await {
                break;
            }
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

/// Ids of the records of a list answer archived at or after `since_ms`, and the newest
/// `archivedAt` among them (at least `since_ms`).
pub(crate) fn archived_since(answer: &Value, since_ms: i64) -> (Vec<String>, i64) {
    let mut newest_ms = since_ms;
    let mut ids = Vec::new();
    for r in answer["results"].as_array().into_iter().flatten() {
        let (Some(id), Some(at)) = (r["id"].as_str(), parse_time(&r["archivedAt"])) else {
            continue;
        };
        let at = at.timestamp_millis();
        if at >= since_ms {
            ids.push(id.to_string());
            newest_ms = newest_ms.max(at);
        }
    }
    (ids, newest_ms)
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
    fn archived_records_since_the_cursor() {
        let answer = json!({"results": [
            {"id": "1", "archived": true, "archivedAt": "2026-11-27T10:00:00.000Z"},
            {"id": "2", "archived": true, "archivedAt": "2026-11-27T10:00:05.000Z"},
            {"id": "3", "archived": true},
            {"id": "4", "archived": true, "archivedAt": "2026-11-27T10:00:03.000Z"}
        ]});
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let since = t("2026-11-27T10:00:03Z");
        assert_eq!(
            archived_since(&answer, since),
            (
                vec!["2".to_string(), "4".to_string()],
                t("2026-11-27T10:00:05Z")
            )
        );
        assert_eq!(archived_since(&json!({}), since), (vec![], since));
    }
}
