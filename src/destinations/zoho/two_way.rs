//! Two-way sync with Zoho CRM: the [`Crm`] adapter (COQL reads, `Modified_Time`
//! reconciliation, linking) and the notification receiver with its watch channel.
//!
//! Invariants:
//! - reads use COQL (`select <mapped fields>, Modified_Time from M where F in (...)`, at most
//!   [`coql::IN_VALUES`] values per query), by `id_property` outbound and by Zoho id inbound;
//!   every query is written by [`coql`] (reserved words quoted, values quoted with `'`
//!   doubled, criteria grouped in pairs); ids from notifications are used only when they are
//!   all digits;
//! - Zoho reports no per-field change times through these APIs: every field's change time is
//!   the record's `Modified_Time` (second precision). A `latest` conflict therefore compares the
//!   Postgres commit time with the time of the record's last edit, whichever field it touched;
//! - values are turned into the string form [`plan`](crate::sync::plan) compares (the form
//!   `mapping::to_properties` gives a Postgres value): dates and datetimes as epoch
//!   milliseconds, booleans `true`/`false`, whole numbers without a fraction, lookups by id,
//!   multi-select picklists joined with `;`, null as absent;
//! - notifications are accepted only with the channel's token (compared in constant time; a
//!   random token per start), answered (204) once the ids are committed to the durable inbox
//!   (503 when Postgres cannot take them), and de-duplicated on the body's hash; refusals are counted and logged
//!   without bodies; `delete` notifications queue [`Inbound::Deleted`](crate::sync::engine::Inbound::Deleted) only with
//!   `on_crm_delete = "delete"` (ignored otherwise);
//! - the watch channel (`{Module}.all`) is created at start with `notify_url` =
//!   `[sinks.inbound] public_url`, renewed (PATCH) half-way to its expiry, re-created if Zoho
//!   forgot it, and deleted at shutdown (best effort);
//! - reconciliation pages COQL over the records whose `Modified_Time` lies in the listing's
//!   window, ordered by `id` with a keyset on it (never an OFFSET, so neither the 100,000 cap
//!   nor records changing while paging skip one), [`PAGE`] rows per query; with
//!   `on_crm_delete = "delete"` it also pages `GET /{Module}/deleted?type=all` (200 per page,
//!   newest first) until a deletion older than the window (`deleted_time`): usually one call
//!   per pass.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::destinations::zoho::coql::{self, literal};
use crate::destinations::zoho::{ZohoSink, encode_value};
use crate::sink::SinkError;
use crate::sink::mapping::{PropertyType, value_string};
use crate::sync::engine::{ById, Context, Crm, Listing, ReadBy};
use crate::sync::plan::CrmRecord;

/// Rows per reconciliation query (COQL's LIMIT cap).
pub(crate) const PAGE: usize = 2_000;
/// Records per update request.
const UPDATE_BATCH: usize = 100;

/// A Zoho record id (digits only): anything else is never put into a query.
pub(crate) fn is_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 30 && id.bytes().all(|b| b.is_ascii_digit())
}

/// `select <fields>, Modified_Time from M where F in (<literals>)`, one query per
/// [`coql::IN_VALUES`] literals.
pub(crate) fn select_in(
    module: &str,
    fields: &[&str],
    field: &str,
    literals: &[String],
) -> Vec<String> {
    let mut wanted: Vec<&str> = Vec::new();
    for f in fields.iter().copied().chain(["Modified_Time"]) {
        if f != "id" && !wanted.contains(&f) {
            wanted.push(f);
        }
    }
    coql::in_chunks(field, literals)
        .iter()
        .map(|c| coql::select(&wanted, module, Some(c), " limit 200"))
        .collect()
}

/// Zoho's datetime form (`YYYY-MM-DDTHH:MM:SS+00:00`) of epoch milliseconds, floored to the
/// second.
pub(crate) fn zoho_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms.div_euclid(1000) * 1000)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// One reconciliation page: ids of the records last modified in `[from_ms, until_ms)` (both
/// floored to Zoho's second precision, so consecutive windows neither overlap nor leave a gap)
/// with an id above `after_id`, by ascending id (a keyset, never an OFFSET).
pub(crate) fn modified_query(
    module: &str,
    (from_ms, until_ms): (i64, i64),
    after_id: Option<&str>,
) -> String {
    let window = [
        format!("Modified_Time >= {}", coql::quote(&zoho_time(from_ms))),
        format!("Modified_Time < {}", coql::quote(&zoho_time(until_ms))),
    ];
    let mut criteria: Vec<String> = coql::all_of(&window).into_iter().collect();
    if let Some(id) = after_id.filter(|id| is_record_id(id)) {
        criteria.push(format!("id > {id}"));
    }
    coql::select(
        &["id"],
        module,
        coql::all_of(&criteria).as_deref(),
        &format!(" order by id asc limit {PAGE}"),
    )
}

pub(crate) fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.to_utc())
}

pub(crate) fn record_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The comparable string form of a Zoho value of a field of `kind` (None: null).
pub(crate) fn comparable(kind: Option<PropertyType>, v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Object(o) => value_string(o.get("id")?),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64()?;
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                n.to_string()
            }
        }
        Value::String(s) => match kind {
            Some(PropertyType::Date) => chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)?
                .and_utc()
                .timestamp_millis()
                .to_string(),
            Some(PropertyType::Datetime) => DateTime::parse_from_rfc3339(s)
                .ok()?
                .timestamp_millis()
                .to_string(),
            _ => s.clone(),
        },
        other => value_string(other),
    })
}

/// Records of a COQL (or records API) answer; every field's change time is `Modified_Time`.
pub(crate) fn parse_records(
    answer: &Value,
    schema: &std::collections::BTreeMap<String, crate::sink::mapping::Property>,
) -> Vec<CrmRecord> {
    let mut out = Vec::new();
    for r in answer["data"].as_array().into_iter().flatten() {
        let Some(id) = record_id(&r["id"]) else {
            continue;
        };
        let modified = parse_time(&r["Modified_Time"]);
        let mut record = CrmRecord {
            id,
            ..CrmRecord::default()
        };
        for (k, v) in r.as_object().into_iter().flatten() {
            if k == "id" || k == "Modified_Time" {
                continue;
            }
            if let Some(s) = comparable(schema.get(k).map(|p| p.kind), v) {
                record.properties.insert(k.clone(), s);
            }
            if let Some(t) = modified {
                record.changed_at.insert(k.clone(), t);
            }
        }
        out.push(record);
    }
    out
}

/// Reads records where `field` is one of `literals`, [`IN_VALUES`] per query.
async fn read(
    ctx: &Context,
    zoho: &mut ZohoSink,
    field: &str,
    literals: &[String],
) -> Result<Vec<CrmRecord>, SinkError> {
    let literals: Vec<String> = literals
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let properties = ctx.properties();
    let mut out = Vec::new();
    for query in select_in(zoho.module(), &properties, field, &literals) {
        if let Some(body) = coql(ctx, zoho, &query).await? {
            out.extend(parse_records(&body, &ctx.schema));
        }
    }
    Ok(out)
}

/// Calls a read API (counted as a sync read): the answer, or None when Zoho has nothing (204).
async fn read_call(
    ctx: &Context,
    zoho: &mut ZohoSink,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<Value>, SinkError> {
    let (status, answer) = zoho.call(method, path, body).await?;
    ctx.count_read();
    match status {
        204 => Ok(None),
        200 => Ok(Some(answer)),
        _ => Err(zoho.refusal(status, &answer)),
    }
}

/// Runs a COQL query: the answer, or None when nothing matches.
async fn coql(ctx: &Context, zoho: &mut ZohoSink, query: &str) -> Result<Option<Value>, SinkError> {
    let body = json!({"select_query": query});
    read_call(
        ctx,
        zoho,
        reqwest::Method::POST,
        "/crm/v8/coql",
        Some(&body),
    )
    .await
}

impl Crm for ZohoSink {
    async fn read(
        &mut self,
        ctx: &Context,
        by: ReadBy,
        ids: &[String],
    ) -> Result<Vec<CrmRecord>, SinkError> {
        match by {
            ReadBy::IdProperty => {
                let kind = ctx.schema.get(&ctx.id_property).map(|p| p.kind);
                let literals: Vec<String> = ids.iter().map(|v| literal(kind, v)).collect();
                read(ctx, self, &ctx.id_property, &literals).await
            }
            ReadBy::CrmId => {
                let literals: Vec<String> =
                    ids.iter().filter(|i| is_record_id(i)).cloned().collect();
                read(ctx, self, "id", &literals).await
            }
        }
    }

    /// Sets the id property by `PUT /{Module}` (100 per request); the items answered
    /// `success` are confirmed (Zoho answers in input order). Refused items stay pending.
    async fn link(
        &mut self,
        ctx: &Context,
        links: &[(String, String)],
    ) -> Result<Vec<String>, SinkError> {
        let types = self.field_types().await?;
        let ty = types.get(&ctx.id_property).map_or("", String::as_str);
        let path = format!("/crm/v8/{}", self.module());
        let mut confirmed = Vec::new();
        for chunk in links.chunks(UPDATE_BATCH) {
            let data: Vec<Value> = chunk
                .iter()
                .map(|(id, key)| {
                    let value = encode_value(ty, &Value::String(key.clone())).unwrap_or(json!(key));
                    json!({"id": id, ctx.id_property.as_str(): value})
                })
                .collect();
            let body = json!({"data": data, "trigger": []});
            let (status, answer) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
            let Some(items) = answer["data"]
                .as_array()
                .filter(|_| matches!(status, 200..=299 | 400))
            else {
                return Err(self.refusal(status, &answer));
            };
            let before = confirmed.len();
            for ((crm_id, _), item) in chunk.iter().zip(items) {
                if item["status"] == "success" {
                    confirmed.push(crm_id.clone());
                }
            }
            let failed = chunk.len() - (confirmed.len() - before);
            if failed > 0 {
                let code = items
                    .iter()
                    .find(|i| i["status"] != "success")
                    .and_then(|i| i["code"].as_str())
                    .unwrap_or("UNKNOWN");
                tracing::warn!(sink = %ctx.sink, failed, code,
                    "Zoho refused to link records created there to their rows; retrying later");
            }
        }
        Ok(confirmed)
    }

    /// Pages COQL over the records modified in the listing's window by ascending id (a
    /// keyset, never an offset) and queues their ids.
    async fn list_modified(&mut self, l: &mut Listing<'_>) -> Result<(), SinkError> {
        let mut keyset = ById::default();
        while !keyset.done(l) {
            let query = modified_query(self.module(), l.window(), keyset.after());
            let Some(body) = coql(l.ctx, self, &query).await? else {
                break;
            };
            let ids: Vec<String> = body["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| record_id(&r["id"]).filter(|i| is_record_id(i)))
                .collect();
            keyset
                .page(l, ids, body["info"]["more_records"] == true)
                .await?;
        }
        Ok(())
    }

    /// Pages `GET /{Module}/deleted` (newest first) until a deletion older than the listing's
    /// window, and queues the ids deleted in the window.
    async fn list_deleted(&mut self, l: &mut Listing<'_>) -> Result<(), SinkError> {
        for page in 1.. {
            if l.stopped() {
                break;
            }
            let path = format!(
                "/crm/v8/{}/deleted?type=all&per_page={DELETED_PAGE}&page={page}",
                self.module()
            );
            let Some(body) = read_call(l.ctx, self, reqwest::Method::GET, &path, None).await?
            else {
                break;
            };
            let (ids, older) = deleted_page(&body, l.window());
            l.queue(ids).await?;
            if older || body["info"]["more_records"] != true {
                break;
            }
        }
        Ok(())
    }

    fn sibling(&self) -> Self {
        ZohoSink::sibling(self)
    }
}

/// Deleted records per page of `GET /{Module}/deleted` (Zoho's cap).
const DELETED_PAGE: usize = 200;

/// One page of `GET /{Module}/deleted` (newest first): the ids deleted in `[from_ms,
/// until_ms)` (floored to seconds, like `deleted_time`), and whether the page reached
/// deletions older than the window (no further page is needed).
pub(crate) fn deleted_page(answer: &Value, (from_ms, until_ms): (i64, i64)) -> (Vec<String>, bool) {
    let (from_s, until_s) = (from_ms.div_euclid(1000), until_ms.div_euclid(1000));
    let mut ids = Vec::new();
    let mut older = false;
    for r in answer["data"].as_array().into_iter().flatten() {
        let Some(at_s) = parse_time(&r["deleted_time"]).map(|t| t.timestamp()) else {
            continue;
        };
        if at_s < from_s {
            older = true;
        } else if at_s < until_s
            && let Some(id) = record_id(&r["id"]).filter(|i| is_record_id(i))
        {
            ids.push(id);
        }
    }
    (ids, older)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::mapping::Property;
    use std::collections::BTreeMap;

    fn prop(kind: PropertyType) -> Property {
        Property {
            name: String::new(),
            kind,
            read_only: false,
            unique: false,
            options: vec![],
        }
    }

    #[test]
    fn coql_queries_quote_values_and_cap_pages() {
        let lits: Vec<String> = ["7", "o'brien@example.com"]
            .iter()
            .map(|v| literal(Some(PropertyType::String), v))
            .collect();
        assert_eq!(
            select_in(
                "Leads",
                &["External_Id", "Email", "External_Id"],
                "External_Id",
                &lits
            ),
            [
                "select External_Id, Email, Modified_Time from Leads where External_Id in \
             ('7', 'o''brien@example.com') limit 200"
            ]
        );
        let many: Vec<String> = (0..120).map(|i| literal(None, &i.to_string())).collect();
        let queries = select_in("Leads", &["External", "Email"], "External", &many);
        assert_eq!(queries.len(), 3, "50 values per in");
        assert!(
            queries[2].starts_with(
                "select 'External', Email, Modified_Time from Leads where 'External' in \
                 ('100', "
            ),
            "{}",
            queries[2]
        );
        assert_eq!(
            modified_query("Leads", (1_700_000_000_999, 1_700_000_060_500), None),
            "select id from Leads where (Modified_Time >= '2023-11-14T22:13:20+00:00' and \
             Modified_Time < '2023-11-14T22:14:20+00:00') order by id asc limit 2000"
        );
        assert_eq!(
            modified_query("Leads", (0, 1_000), Some("5545974000000300001")),
            "select id from Leads where ((Modified_Time >= '1970-01-01T00:00:00+00:00' and \
             Modified_Time < '1970-01-01T00:00:01+00:00') and id > 5545974000000300001) \
             order by id asc limit 2000"
        );
        assert!(
            !modified_query("Leads", (0, 1_000), Some("1 or 1=1")).contains("1=1"),
            "only digits go into the keyset"
        );
        assert!(is_record_id("5545974000000300001"));
        assert!(!is_record_id("1) or (1=1"));
        assert!(!is_record_id(""));
    }

    #[test]
    fn records_parse_to_the_comparable_form_with_modified_time() {
        let schema = BTreeMap::from([
            ("Closing_Date".to_string(), prop(PropertyType::Date)),
            ("Seen_At".to_string(), prop(PropertyType::Datetime)),
            ("Amount".to_string(), prop(PropertyType::Number)),
        ]);
        let answer = json!({"data": [{
            "id": "5545974000000300001",
            "Last_Name": "Lovelace",
            "Email": null,
            "Email_Opt_Out": true,
            "Amount": 1200.0,
            "Probability": 12.5,
            "No_of_Employees": 40,
            "Closing_Date": "2026-01-02",
            "Seen_At": "2026-01-02T10:00:00+01:00",
            "Account_Name": {"id": "99", "name": "Acme"},
            "Tags": ["a", "b"],
            "Modified_Time": "2026-11-27T10:00:02+00:00"
        }], "info": {"count": 1, "more_records": false}});
        let records = parse_records(&answer, &schema);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.id, "5545974000000300001");
        let p = |k: &str| r.properties.get(k).map(String::as_str);
        assert_eq!(p("Last_Name"), Some("Lovelace"));
        assert_eq!(p("Email"), None, "null is absent");
        assert_eq!(p("Email_Opt_Out"), Some("true"));
        assert_eq!(p("Amount"), Some("1200"));
        assert_eq!(p("Probability"), Some("12.5"));
        assert_eq!(p("No_of_Employees"), Some("40"));
        assert_eq!(p("Closing_Date"), Some("1767312000000"));
        assert_eq!(p("Seen_At"), Some("1767344400000"));
        assert_eq!(p("Account_Name"), Some("99"));
        assert_eq!(p("Tags"), Some("a;b"));
        assert!(!r.properties.contains_key("Modified_Time"));
        let t = DateTime::parse_from_rfc3339("2026-11-27T10:00:02Z").unwrap();
        assert_eq!(r.changed_at["Last_Name"], t);
        assert_eq!(
            r.changed_at["Email"], t,
            "every field changed with the record"
        );
    }

    #[test]
    fn dates_compare_like_the_postgres_side() {
        // The Postgres side goes through mapping::to_properties; both must agree.
        let schema = BTreeMap::from([
            ("D".to_string(), prop(PropertyType::Date)),
            ("T".to_string(), prop(PropertyType::Datetime)),
        ]);
        let rules = vec![
            crate::config::fields::FieldRule::new("d", "D"),
            crate::config::fields::FieldRule::new("t", "T"),
        ];
        let row = json!({"d": "2026-01-02", "t": "2026-01-02T09:00:00+00:00"});
        let pg =
            crate::sink::mapping::to_properties(&rules, &schema, row.as_object().unwrap()).unwrap();
        let zoho = parse_records(
            &json!({"data": [{"id": 1, "D": "2026-01-02", "T": "2026-01-02T10:00:00+01:00"}]}),
            &schema,
        );
        assert_eq!(pg["D"], zoho[0].properties["D"]);
        assert_eq!(pg["T"], zoho[0].properties["T"]);
    }

    #[test]
    fn deleted_pages_keep_the_window_and_stop_before_it() {
        let answer = json!({"data": [
            {"id": "5545974000000300004", "deleted_time": "2026-11-27T10:00:06+00:00"},
            {"id": "5545974000000300003", "deleted_time": "2026-11-27T10:00:05+00:00"},
            {"id": "5545974000000300002", "deleted_time": "2026-11-27T10:00:03+00:00"},
            {"id": "1 or 1=1", "deleted_time": "2026-11-27T10:00:03+00:00"},
            {"id": "5545974000000300001", "deleted_time": "2026-11-27T10:00:02+00:00"}
        ], "info": {"more_records": true}});
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let window = (
            t("2026-11-27T10:00:03Z") + 500,
            t("2026-11-27T10:00:06Z") + 500,
        );
        let (ids, older) = deleted_page(&answer, window);
        assert_eq!(ids, ["5545974000000300003", "5545974000000300002"]);
        assert!(older, "no further page is needed");
        let (ids, older) = deleted_page(&answer, (0, i64::MAX / 2));
        assert_eq!(ids.len(), 4);
        assert!(!older);
    }
}
