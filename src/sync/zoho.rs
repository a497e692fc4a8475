//! Two-way sync with Zoho CRM: the [`Crm`] adapter (COQL reads, `Modified_Time`
//! reconciliation, linking) and the notification receiver with its watch channel.
//!
//! Invariants:
//! - reads use COQL (`select <mapped fields>, Modified_Time from M where F in (...)`, at most
//!   [`IN_VALUES`] values per query), by `id_property` outbound and by Zoho id inbound; values
//!   are quoted like the sink's delete lookups (`'` doubled); ids from notifications are used
//!   only when they are all digits;
//! - Zoho reports no per-field change times through these APIs: every field's change time is
//!   the record's `Modified_Time` (second precision). A `latest` conflict therefore compares the
//!   Postgres commit time with the time of the record's last edit, whichever field it touched;
//! - values are turned into the string form [`plan`](super::plan) compares (the form
//!   `mapping::to_properties` gives a Postgres value): dates and datetimes as epoch
//!   milliseconds, booleans `true`/`false`, whole numbers without a fraction, lookups by id,
//!   multi-select picklists joined with `;`, null as absent;
//! - notifications are accepted only with the channel's token (compared in constant time; a
//!   random token per start), answered at once (204) after the ids are queued (503 when the
//!   queue is full), and de-duplicated on the body's hash; refusals are counted and logged
//!   without bodies; `delete` notifications queue [`Inbound::Deleted`] only with
//!   `on_crm_delete = "delete"` (ignored otherwise);
//! - the watch channel (`{Module}.all`) is created at start with `notify_url` =
//!   `[sinks.inbound] public_url`, renewed (PATCH) half-way to its expiry, re-created if Zoho
//!   forgot it, and deleted at shutdown (best effort);
//! - reconciliation pages COQL on `Modified_Time >= cursor` ordered by (`Modified_Time`, `id`),
//!   [`PAGE`] rows per query, restarting from the newest time seen before the 100,000
//!   OFFSET+LIMIT cap; with `on_crm_delete = "delete"` it also pages
//!   `GET /{Module}/deleted?type=all` (200 per page, newest first) until a deletion older than
//!   the deletion cursor (`deleted_time`): usually one call per pass.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::engine::{Context, Crm, Inbound, Seen, deliver};
use super::plan::CrmRecord;
use crate::config::sinks::OnCrmDelete;
use crate::sink::SinkError;
use crate::sink::mapping::{PropertyType, value_string};
use crate::sink::zoho::{ZohoSink, encode_value};

/// Values per COQL `in` (Zoho's cap).
pub const IN_VALUES: usize = 50;
/// Rows per reconciliation query (COQL's LIMIT cap).
pub const PAGE: usize = 2_000;
/// COQL's OFFSET + LIMIT cap.
const OFFSET_CAP: usize = 100_000;
/// Records per update request.
const UPDATE_BATCH: usize = 100;
/// Lifetime asked for the watch channel (Zoho allows up to a day).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(6 * 3_600);

/// A COQL string literal (`'` doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The COQL literal of a value of a field of `kind`: plain numbers bare, anything else quoted.
pub fn literal(kind: Option<PropertyType>, v: &str) -> String {
    let plain_number = !v.is_empty()
        && v.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && v.parse::<f64>().is_ok();
    if kind == Some(PropertyType::Number) && plain_number {
        v.to_string()
    } else {
        quote(v)
    }
}

/// A Zoho record id (digits only): anything else is never put into a query.
pub fn is_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 30 && id.bytes().all(|b| b.is_ascii_digit())
}

/// `select <fields>, Modified_Time from M where F in (<literals>)`.
pub fn select_in(module: &str, fields: &[&str], field: &str, literals: &[String]) -> String {
    let mut wanted: Vec<&str> = Vec::new();
    for f in fields.iter().copied().chain(["Modified_Time"]) {
        if f != "id" && !wanted.contains(&f) {
            wanted.push(f);
        }
    }
    format!(
        "select {} from {module} where {field} in ({}) limit 200",
        wanted.join(", "),
        literals.join(", ")
    )
}

/// Zoho's datetime form (`YYYY-MM-DDTHH:MM:SS+00:00`) of epoch milliseconds, floored to the
/// second.
pub fn zoho_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms.div_euclid(1000) * 1000)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// One reconciliation page: records modified at or after `since_ms`, oldest first.
pub fn modified_query(module: &str, since_ms: i64, offset: usize) -> String {
    format!(
        "select id, Modified_Time from {module} where Modified_Time >= '{}' \
         order by Modified_Time asc, id asc limit {PAGE} offset {offset}",
        zoho_time(since_ms)
    )
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.to_utc())
}

fn record_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The comparable string form of a Zoho value of a field of `kind` (None: null).
pub fn comparable(kind: Option<PropertyType>, v: &Value) -> Option<String> {
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
pub fn parse_records(
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
    for chunk in literals.chunks(IN_VALUES) {
        let query = select_in(zoho.module(), &properties, field, chunk);
        let (status, body) = zoho
            .call(
                reqwest::Method::POST,
                "/crm/v8/coql",
                Some(&json!({"select_query": query})),
            )
            .await?;
        ctx.count(&ctx.counters.api_reads, "driftless_sync_api_reads_total", 1);
        match status {
            204 => {}
            200 => out.extend(parse_records(&body, &ctx.schema)),
            _ => return Err(zoho.refusal(status, &body)),
        }
    }
    Ok(out)
}

impl Crm for ZohoSink {
    async fn read_by_id_property(
        &mut self,
        ctx: &Context,
        ids: &[String],
    ) -> Result<Vec<CrmRecord>, SinkError> {
        let kind = ctx.schema.get(&ctx.id_property).map(|p| p.kind);
        let literals: Vec<String> = ids.iter().map(|v| literal(kind, v)).collect();
        read(ctx, self, &ctx.id_property, &literals).await
    }

    async fn read_by_ids(
        &mut self,
        ctx: &Context,
        ids: &[String],
    ) -> Result<Vec<CrmRecord>, SinkError> {
        let literals: Vec<String> = ids.iter().filter(|i| is_record_id(i)).cloned().collect();
        read(ctx, self, "id", &literals).await
    }

    async fn link(&mut self, ctx: &Context, links: &[(String, String)]) -> Result<(), SinkError> {
        let types = self.field_types().await?;
        let ty = types.get(&ctx.id_property).map_or("", String::as_str);
        let path = format!("/crm/v8/{}", self.module());
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
            let failed = items.iter().filter(|i| i["status"] != "success").count();
            if failed > 0 {
                let code = items
                    .iter()
                    .find(|i| i["status"] != "success")
                    .and_then(|i| i["code"].as_str())
                    .unwrap_or("UNKNOWN");
                tracing::warn!(sink = %ctx.sink, failed, code,
                    "Zoho refused to link records created there to their rows");
            }
        }
        Ok(())
    }

    async fn modified_since(
        &mut self,
        ctx: &Context,
        since_ms: i64,
        queue: &mpsc::Sender<Inbound>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(usize, i64), SinkError> {
        let mut since_ms = since_ms;
        let mut newest_ms = since_ms;
        let mut offset = 0;
        let mut queued = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let query = modified_query(self.module(), since_ms, offset);
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    "/crm/v8/coql",
                    Some(&json!({"select_query": query})),
                )
                .await?;
            ctx.count(&ctx.counters.api_reads, "driftless_sync_api_reads_total", 1);
            match status {
                204 => break,
                200 => {}
                _ => return Err(self.refusal(status, &body)),
            }
            let mut ids = Vec::new();
            for r in body["data"].as_array().into_iter().flatten() {
                if let Some(id) = record_id(&r["id"]) {
                    ids.push(id);
                }
                if let Some(t) = parse_time(&r["Modified_Time"]) {
                    newest_ms = newest_ms.max(t.timestamp_millis());
                }
            }
            queued += ids.len();
            if !ids.is_empty() && queue.send(Inbound::Changed(ids)).await.is_err() {
                break;
            }
            if body["info"]["more_records"] != true {
                break;
            }
            offset += PAGE;
            if offset + PAGE > OFFSET_CAP {
                // Before the OFFSET+LIMIT cap: a new query from the newest time seen.
                if newest_ms.div_euclid(1000) <= since_ms.div_euclid(1000) {
                    tracing::warn!(sink = %ctx.sink,
                        "more than 100,000 records share one modification second; skipping ahead");
                    newest_ms = (since_ms.div_euclid(1000) + 1) * 1000;
                }
                since_ms = newest_ms;
                offset = 0;
            }
        }
        Ok((queued, newest_ms))
    }

    async fn deleted_since(
        &mut self,
        ctx: &Context,
        since_ms: i64,
        queue: &mpsc::Sender<Inbound>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(usize, i64), SinkError> {
        let mut newest_ms = since_ms;
        let mut queued = 0;
        for page in 1.. {
            if *shutdown.borrow() {
                break;
            }
            let path = format!(
                "/crm/v8/{}/deleted?type=all&per_page={DELETED_PAGE}&page={page}",
                self.module()
            );
            let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
            ctx.count(&ctx.counters.api_reads, "driftless_sync_api_reads_total", 1);
            match status {
                204 => break,
                200 => {}
                _ => return Err(self.refusal(status, &body)),
            }
            let (ids, newest, older) = deleted_page(&body, since_ms);
            newest_ms = newest_ms.max(newest);
            queued += ids.len();
            if !ids.is_empty() && queue.send(Inbound::Deleted(ids)).await.is_err() {
                break;
            }
            if older || body["info"]["more_records"] != true {
                break;
            }
        }
        Ok((queued, newest_ms))
    }

    fn sibling(&self) -> Self {
        ZohoSink::sibling(self)
    }
}

/// Deleted records per page of `GET /{Module}/deleted` (Zoho's cap).
const DELETED_PAGE: usize = 200;

/// One page of `GET /{Module}/deleted` (newest first): the ids deleted at or after `since_ms`
/// (second precision, like `deleted_time`), the newest deletion time (at least `since_ms`), and
/// whether the page reached deletions older than the cursor (no further page is needed).
pub fn deleted_page(answer: &Value, since_ms: i64) -> (Vec<String>, i64, bool) {
    let since_s = since_ms.div_euclid(1000);
    let mut ids = Vec::new();
    let mut newest_ms = since_ms;
    let mut older = false;
    for r in answer["data"].as_array().into_iter().flatten() {
        let Some(at) = parse_time(&r["deleted_time"]).map(|t| t.timestamp_millis()) else {
            continue;
        };
        if at.div_euclid(1000) < since_s {
            older = true;
            continue;
        }
        if let Some(id) = record_id(&r["id"]).filter(|i| is_record_id(i)) {
            ids.push(id);
            newest_ms = newest_ms.max(at);
        }
    }
    (ids, newest_ms, older)
}

/// A notification as Zoho posts it (the fields driftless uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Module API name.
    pub module: String,
    /// `insert`, `update` or `delete`.
    pub operation: String,
    /// Record ids (digits only; others are dropped).
    pub ids: Vec<String>,
    /// The channel's token.
    pub token: Option<String>,
}

/// Parses a notification body (None: not a notification).
pub fn parse_notification(body: &[u8]) -> Option<Notification> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let ids = v["ids"]
        .as_array()?
        .iter()
        .filter_map(record_id)
        .filter(|i| is_record_id(i))
        .collect();
    Some(Notification {
        module: v["module"].as_str()?.to_string(),
        operation: v["operation"].as_str().unwrap_or_default().to_string(),
        ids,
        token: v["token"].as_str().map(String::from),
    })
}

/// Constant-time comparison of the expected token with the one received.
pub fn token_matches(expected: &str, got: Option<&str>) -> bool {
    let Some(got) = got else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), got.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random channel token (32 hex digits; Zoho allows up to 50 characters).
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn body_id(body: &[u8]) -> i64 {
    let digest = Sha256::digest(body);
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(eight)
}

struct Receiver {
    ctx: Arc<Context>,
    token: String,
    module: String,
    queue: mpsc::Sender<Inbound>,
    seen: std::sync::Mutex<Seen>,
}

/// The notification route of a Zoho two-way sink: check the token, de-duplicate, queue ids.
pub fn notification_router(
    ctx: Arc<Context>,
    token: String,
    module: &str,
    queue: mpsc::Sender<Inbound>,
) -> axum::Router {
    let path = ctx.two_way.webhook_path.clone();
    let state = Arc::new(Receiver {
        ctx,
        token,
        module: module.to_string(),
        queue,
        seen: std::sync::Mutex::new(Seen::default()),
    });
    axum::Router::new()
        .route(&path, axum::routing::post(receive))
        .with_state(state)
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let notification = parse_notification(&body);
    let token = notification.as_ref().and_then(|n| n.token.as_deref());
    if !token_matches(&r.token, token) {
        return r.ctx.refuse("notification refused: missing or wrong token");
    }
    let Some(n) = notification else {
        return StatusCode::BAD_REQUEST;
    };
    let id = body_id(&body);
    if !r.seen.lock().expect("not poisoned").insert(id) {
        r.ctx.count_duplicates(1);
        return StatusCode::NO_CONTENT;
    }
    if !n.module.eq_ignore_ascii_case(&r.module) || n.ids.is_empty() {
        return StatusCode::NO_CONTENT;
    }
    let item = match n.operation.as_str() {
        "insert" | "update" => Inbound::Changed(n.ids),
        "delete" if r.ctx.two_way.on_crm_delete == OnCrmDelete::Delete => Inbound::Deleted(n.ids),
        _ => return StatusCode::NO_CONTENT,
    };
    deliver(&r.queue, &r.seen, &[id], vec![item])
}

/// The watch channel of a sink.
#[derive(Clone, Debug)]
pub struct Channel {
    /// Channel id (stable per sink name, so a restart replaces the previous channel).
    pub id: u64,
    /// Token Zoho sends back with every notification.
    pub token: String,
    /// Where Zoho posts.
    pub notify_url: String,
    /// `{Module}.all`.
    pub events: Vec<String>,
}

impl Channel {
    /// A channel for `sink` on `module` with a fresh token.
    pub fn new(sink: &str, module: &str, notify_url: &str) -> Channel {
        let digest = Sha256::digest(format!("driftless-watch-{sink}").as_bytes());
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&digest[..8]);
        // Below 2^53, so the id survives JSON numbers everywhere; never 0.
        let id = (u64::from_be_bytes(eight) & ((1 << 53) - 1)).max(1);
        Channel {
            id,
            token: random_token(),
            notify_url: notify_url.to_string(),
            events: vec![format!("{module}.all")],
        }
    }

    /// The body of a watch request expiring at `expiry`.
    pub fn body(&self, expiry: DateTime<Utc>) -> Value {
        json!({"watch": [{
            "channel_id": self.id,
            "events": self.events,
            "channel_expiry": zoho_time(expiry.timestamp_millis()),
            "token": self.token,
            "notify_url": self.notify_url,
        }]})
    }
}

/// Creates (`create`) or renews the channel; returns its expiry as Zoho reports it.
pub async fn watch_channel(
    zoho: &ZohoSink,
    channel: &Channel,
    create: bool,
) -> Result<DateTime<Utc>, SinkError> {
    let asked = Utc::now() + chrono::Duration::from_std(CHANNEL_LIFETIME).unwrap_or_default();
    let method = if create {
        reqwest::Method::POST
    } else {
        reqwest::Method::PATCH
    };
    let (status, answer) = zoho
        .call(method, "/crm/v8/actions/watch", Some(&channel.body(asked)))
        .await?;
    let item = &answer["watch"][0];
    if status != 200 || item["status"] != "success" {
        if item.is_object() {
            return Err(SinkError::Fatal {
                message: format!(
                    "Zoho refused the watch channel: {}",
                    item["code"].as_str().unwrap_or("UNKNOWN")
                ),
                hint: "grant the OAuth client ZohoCRM.notifications.ALL and check \
                       sinks.inbound.public_url"
                    .into(),
            });
        }
        return Err(zoho.refusal(status, &answer));
    }
    Ok(parse_time(&item["details"]["events"][0]["channel_expiry"]).unwrap_or(asked))
}

/// Keeps the channel alive until shutdown: renews it half-way to its expiry (re-creating it
/// when Zoho forgot it), then deletes it.
pub async fn keep_channel(
    sink: String,
    zoho: ZohoSink,
    channel: Channel,
    mut expiry: Option<DateTime<Utc>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = match expiry {
            Some(e) => ((e - Utc::now()) / 2)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(30)),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let renewed = match watch_channel(&zoho, &channel, expiry.is_none()).await {
            Ok(e) => Ok(e),
            Err(_) if expiry.is_some() => watch_channel(&zoho, &channel, true).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(e) => {
                tracing::info!(sink = %sink, expiry = %e, "Zoho watch channel renewed");
                expiry = Some(e);
            }
            Err(e) => {
                tracing::warn!(sink = %sink, error = %e, "Zoho watch channel renewal failed");
                expiry = None;
            }
        }
    }
    let path = format!("/crm/v8/actions/watch?channel_ids={}", channel.id);
    match zoho.call(reqwest::Method::DELETE, &path, None).await {
        Ok((200..=299, _)) => tracing::info!(sink = %sink, "Zoho watch channel deleted"),
        _ => tracing::debug!(sink = %sink, "Zoho watch channel not deleted (it expires)"),
    }
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
            "select External_Id, Email, Modified_Time from Leads where External_Id in \
             ('7', 'o''brien@example.com') limit 200"
        );
        assert_eq!(literal(Some(PropertyType::Number), "42"), "42");
        assert_eq!(literal(Some(PropertyType::Number), "-1.5"), "-1.5");
        assert_eq!(
            literal(Some(PropertyType::Number), "1 or 1=1"),
            "'1 or 1=1'"
        );
        assert_eq!(literal(None, "x') or ('1'='1"), "'x'') or (''1''=''1'");
        assert_eq!(
            modified_query("Leads", 1_700_000_000_999, 2_000),
            "select id, Modified_Time from Leads where Modified_Time >= \
             '2023-11-14T22:13:20+00:00' order by Modified_Time asc, id asc limit 2000 offset 2000"
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
            crate::sink::mapping::FieldRule::new("d", "D"),
            crate::sink::mapping::FieldRule::new("t", "T"),
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
    fn notifications_parse_and_tokens_compare() {
        let body = br#"{"server_time": 1, "module": "Leads", "operation": "update",
            "ids": ["5545974000000300001", 5545974000000300002, "1 or 1=1"],
            "channel_id": 42, "token": "abc"}"#;
        let n = parse_notification(body).unwrap();
        assert_eq!(n.module, "Leads");
        assert_eq!(n.operation, "update");
        assert_eq!(n.ids, ["5545974000000300001", "5545974000000300002"]);
        assert!(token_matches("abc", n.token.as_deref()));
        assert!(!token_matches("abd", n.token.as_deref()));
        assert!(!token_matches("abc", Some("abcd")));
        assert!(!token_matches("abc", None));
        assert!(!token_matches("", Some("")));
        assert_eq!(parse_notification(b"not json"), None);
        assert_eq!(parse_notification(br#"{"module": "Leads"}"#), None);
        assert_eq!(body_id(body), body_id(body));
        assert_ne!(body_id(body), body_id(b"{}"));
    }

    #[test]
    fn deleted_pages_stop_at_the_cursor() {
        let answer = json!({"data": [
            {"id": "5545974000000300003", "deleted_time": "2026-11-27T10:00:05+00:00"},
            {"id": "5545974000000300002", "deleted_time": "2026-11-27T10:00:03+00:00"},
            {"id": "1 or 1=1", "deleted_time": "2026-11-27T10:00:03+00:00"},
            {"id": "5545974000000300001", "deleted_time": "2026-11-27T10:00:02+00:00"}
        ], "info": {"more_records": true}});
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let (ids, newest, older) = deleted_page(&answer, t("2026-11-27T10:00:03Z") + 500);
        assert_eq!(ids, ["5545974000000300003", "5545974000000300002"]);
        assert_eq!(newest, t("2026-11-27T10:00:05Z"));
        assert!(older, "no further page is needed");
        let (ids, newest, older) = deleted_page(&answer, 0);
        assert_eq!(ids.len(), 3);
        assert_eq!(newest, t("2026-11-27T10:00:05Z"));
        assert!(!older);
    }

    #[test]
    fn channels_are_stable_per_sink_with_fresh_tokens() {
        let a = Channel::new("zoho-leads", "Leads", "https://x.example/hooks/zoho");
        let b = Channel::new("zoho-leads", "Leads", "https://x.example/hooks/zoho");
        assert_eq!(a.id, b.id);
        assert_ne!(a.token, b.token);
        assert!(a.token.len() <= 50);
        let body = a.body(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        assert_eq!(body["watch"][0]["events"], json!(["Leads.all"]));
        assert_eq!(
            body["watch"][0]["channel_expiry"],
            "2023-11-14T22:13:20+00:00"
        );
        assert_eq!(body["watch"][0]["token"], a.token.as_str());
    }
}
