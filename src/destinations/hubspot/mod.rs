//! HubSpot CRM v3 destination: batch upserts by a unique property, archives for deletes.
//!
//! Owns the HTTP side of a `kind = "hubspot"` sink (HubSpot CRM v3 objects API): request
//! shapes, response classification, and the client side of HubSpot's rate limits (shared per
//! account, [`limits`]); tested against the in-process emulator (`driftless_emulators::hubspot`).
//!
//! Invariants:
//! - every write is idempotent: `batch/upsert` by `id_property`, deletes resolve record ids with
//!   `batch/read` and `batch/archive` them (a record already gone is success), so replaying a
//!   batch after a transient failure is harmless;
//! - at most 100 inputs per request; each upsert input carries `objectWriteTraceId` = its entry
//!   index, which is how results and per-input errors are mapped back to entries;
//! - a value HubSpot refuses for good (4xx per input, or a single input refused by a whole-request
//!   400, found by bisection) is [`Rejected`]; anything transient (429, 5xx, timeouts, resets)
//!   fails the whole batch with [`SinkError::Transient`]; 401/403 are [`SinkError::Fatal`] (a
//!   403's hint names the scopes HubSpot says are missing);
//! - requests never exceed the rolling 10 s window: every client of one account in the process
//!   takes its slots from the account's [`limits::Account`], which counts the process's requests
//!   and takes HubSpot's `X-HubSpot-RateLimit-*` headers as the truth; searches also wait for
//!   the account's search limiter; a `DAILY` 429 parks the account until midnight in its time
//!   zone (read from `GET /account-info/v3/details` before the first request);
//! - logs carry counts, statuses and categories only: never the token, property values or ids.

pub(crate) mod limits;
pub(crate) mod receiver;
pub(crate) mod signature;
pub(crate) mod two_way;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::destinations::CrmSettings;
use crate::destinations::oauth::Credentials;
use crate::sink::bisect::Bisection;
use crate::sink::crm::CrmWrites;
use crate::sink::http;
use crate::sink::ledger::Upsert;
use crate::sink::mapping::{MappingError, Property, PropertyType, id_value, to_properties};
use crate::sink::verify::Record;
use crate::sink::{Outcome, Rejected, SinkError};
use limits::{Account, DEFAULT_WINDOW};

use crate::config::sinks::{OnDelete, SinkKind, ValidSink};
use crate::event::Row;

/// HubSpot's batch input cap.
const MAX_INPUTS: usize = 100;
/// The HubSpot sink.
#[derive(Debug)]
pub struct HubspotSink {
    crm: CrmSettings,
    object: String,
    schema: Option<BTreeMap<String, Property>>,
    /// The account's shared limiters and time zone.
    account: Arc<Account>,
    daily_warned: bool,
}

type Resp = http::JsonResponse;

/// One upsert input and its entry.
#[derive(Clone)]
pub(crate) struct Input {
    index: usize,
    id: String,
    body: Value,
}

/// Categories of per-input errors worth retrying (everything else is poison).
fn is_transient_category(category: &str) -> bool {
    matches!(
        category,
        "RATE_LIMIT" | "RATE_LIMITS" | "INTERNAL_ERROR" | "SERVICE_UNAVAILABLE" | "TIMEOUT"
    )
}

/// A value-free description of a HubSpot error: category plus detail codes and property names.
fn describe(err: &Value) -> String {
    let category = err["category"].as_str().unwrap_or("UNKNOWN");
    let details: Vec<String> = err["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let code = d["code"].as_str().unwrap_or("ERROR");
            let props: Vec<&str> = d["context"]["propertyName"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if props.is_empty() {
                code.to_string()
            } else {
                format!("{code} ({})", props.join(", "))
            }
        })
        .collect();
    if details.is_empty() {
        category.to_string()
    } else {
        format!("{category}: {}", details.join("; "))
    }
}

/// The scopes a 403 says are missing: `context.missingScopes`, else every
/// `errors[].context.requiredGranularScopes` (scope names only, deduplicated, in order).
fn missing_scopes(body: &Value) -> Vec<String> {
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut out = names(&body["context"]["missingScopes"]);
    if out.is_empty() {
        for e in body["errors"].as_array().into_iter().flatten() {
            out.extend(names(&e["context"]["requiredGranularScopes"]));
        }
    }
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl HubspotSink {
    /// Builds the client (reqwest with rustls). `credentials` come from the sink's `auth`
    /// ([`Credentials::from_auth`]): a private-app token, or an OAuth refresh grant whose access
    /// tokens are refreshed before expiry and after a 401; never logged.
    pub(crate) fn new(sink: &ValidSink, credentials: Credentials) -> Result<Self, SinkError> {
        let SinkKind::Hubspot { object } = &sink.kind else {
            return Err(super::wrong_kind(sink, "HubSpot", "hubspot"));
        };
        let key = limits::account_key(&sink.base_url, sink.auth.as_ref(), credentials.label());
        Ok(HubspotSink {
            crm: CrmSettings::new(sink, credentials, "a unique HubSpot property (e.g. email)")?,
            object: object.clone(),
            schema: None,
            account: Account::shared(key),
            daily_warned: false,
        })
    }

    /// Uses `schema` (fetched by the caller, e.g. for the start-up mapping check) instead of
    /// fetching it again before the first write.
    pub(crate) fn use_schema(&mut self, schema: BTreeMap<String, Property>) {
        self.schema = Some(schema);
    }

    /// Another client of the same sink (same credentials, token cache and account limiters),
    /// for two-way sync's reads.
    pub(crate) fn sibling(&self) -> HubspotSink {
        HubspotSink {
            crm: self.crm.clone(),
            object: self.object.clone(),
            schema: self.schema.clone(),
            account: self.account.clone(),
            daily_warned: false,
        }
    }

    /// The schema, once fetched.
    pub(crate) fn known_schema(&self) -> Option<&BTreeMap<String, Property>> {
        self.schema.as_ref()
    }

    /// The object type (`contacts`, ...).
    pub(crate) fn object(&self) -> &str {
        &self.object
    }

    /// One rate-limited `batch/read` POST (a non-2xx answer is classified like a batch's);
    /// when none of the records exist HubSpot answers 400/404 `OBJECT_NOT_FOUND`, which is an empty result here.
    pub(crate) async fn read_json(&mut self, path: &str, body: &Value) -> Result<Value, SinkError> {
        let r = self.post(path, body).await?;
        if r.status.is_success() {
            Ok(r.body)
        } else if matches!(r.status.as_u16(), 400 | 404) && r.body["category"] == "OBJECT_NOT_FOUND"
        {
            Ok(json!({"results": []}))
        } else {
            Err(self.classify(&r))
        }
    }

    /// GET /crm/v3/properties/{object}: the destination schema as mapping::Property by name.
    pub(crate) async fn fetch_schema(&self) -> Result<BTreeMap<String, Property>, SinkError> {
        let path = format!("/crm/v3/properties/{}", self.object);
        let slot = self.account.acquire(false).await;
        let r = self.send_raw(reqwest::Method::GET, &path, None).await?;
        self.account.answered(slot, &r.headers, Instant::now());
        if !r.status.is_success() {
            return Err(self.classify(&r));
        }
        let mut out = BTreeMap::new();
        for p in r.body["results"].as_array().into_iter().flatten() {
            let Some(name) = p["name"].as_str() else {
                continue;
            };
            // Types we do not encode specially are written as plain strings.
            let kind = p["type"]
                .as_str()
                .and_then(PropertyType::parse)
                .unwrap_or(PropertyType::String);
            let options = p["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["value"].as_str().map(String::from))
                .collect();
            out.insert(
                name.to_string(),
                Property {
                    name: name.to_string(),
                    kind,
                    read_only: p["modificationMetadata"]["readOnlyValue"]
                        .as_bool()
                        .unwrap_or(false),
                    unique: p["hasUniqueValue"].as_bool().unwrap_or(false),
                    options,
                },
            );
        }
        tracing::debug!(object = %self.object, properties = out.len(), "fetched HubSpot schema");
        Ok(out)
    }

    /// One request, without limiter bookkeeping (the caller's). A 401 with OAuth
    /// credentials drops the access token and retries once with a fresh one.
    async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, SinkError> {
        let url = format!("{}{path}", self.crm.base_url);
        self.crm
            .credentials
            .send_json(&self.crm.client, "HubSpot", path, body, |token| {
                let request = self.crm.client.request(method.clone(), &url);
                std::future::ready(request.bearer_auth(token))
            })
            .await
    }

    /// One rate-limited POST.
    async fn post(&mut self, path: &str, body: &Value) -> Result<Resp, SinkError> {
        self.limited(reqwest::Method::POST, path, Some(body)).await
    }

    /// One rate-limited GET (two-way sync's listing of archived records); a non-2xx answer is
    /// classified like a batch's (transient or fatal).
    pub(crate) async fn get_json(&mut self, path: &str) -> Result<Value, SinkError> {
        let r = self.limited(reqwest::Method::GET, path, None).await?;
        if r.status.is_success() {
            Ok(r.body)
        } else {
            Err(self.classify(&r))
        }
    }

    /// One search (two-way reconciliation), through the account's search limiter as well; a
    /// non-2xx answer is classified like a batch's (transient or fatal).
    pub(crate) async fn search_json(
        &mut self,
        path: &str,
        body: &Value,
    ) -> Result<Value, SinkError> {
        self.read_zone_once().await?;
        let r = self
            .send_limited(reqwest::Method::POST, path, Some(body), true)
            .await?;
        if r.status.is_success() {
            Ok(r.body)
        } else {
            Err(self.classify(&r))
        }
    }

    /// One request through the account's limiters, learning from the answer's headers.
    async fn limited(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, SinkError> {
        self.read_zone_once().await?;
        self.send_limited(method, path, body, false).await
    }

    /// Reads the account's time zone, which the daily limit resets by, when it is due (once
    /// per account; after a failed read, at most hourly). A 429 or a failure to reach HubSpot
    /// is the caller's error (its own request would meet the same).
    async fn read_zone_once(&mut self) -> Result<(), SinkError> {
        if !self.account.zone_read_due(Instant::now()) {
            return Ok(());
        }
        let path = "/account-info/v3/details";
        let r = self
            .send_limited(reqwest::Method::GET, path, None, false)
            .await?;
        let status = r.status.as_u16();
        if r.status.is_success() {
            let tz = limits::parse_zone(&r.body);
            match tz {
                Some(tz) => tracing::debug!(time_zone = %tz, "HubSpot account time zone"),
                None => tracing::warn!(
                    "HubSpot named no known account time zone; a daily limit is probed hourly"
                ),
            }
            self.account.set_zone(tz);
        } else if r.status.is_client_error() && status != 408 {
            tracing::warn!(
                status,
                "HubSpot account time zone unreadable; a daily limit is probed hourly"
            );
            self.account.set_zone(None);
        } else {
            tracing::debug!(
                status,
                "HubSpot account time zone not read; trying again in an hour"
            );
        }
        Ok(())
    }

    /// One request through the account's burst limiter (and search limiter for `search`).
    async fn send_limited(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        search: bool,
    ) -> Result<Resp, SinkError> {
        let slot = self.account.acquire(search).await;
        let r = self.send_raw(method, path, body).await?;
        let now = Instant::now();
        self.account.answered(slot, &r.headers, now);
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            let mut e = self.classify(&r);
            if let SinkError::Transient {
                retry_after: Some(d),
                ..
            } = &mut e
            {
                // A rolling window frees a slot when its oldest request expires: when the
                // limiter knows that instant (our own requests, `-Remaining: 0`), retry then
                // rather than a whole window later.
                if r.body["policyName"] == "TEN_SECONDLY_ROLLING"
                    && let Some(rolls) = self.account.wait_needed(now)
                {
                    *d = rolls.min(*d);
                }
                self.account.block_for(*d, now);
            }
            if r.body["policyName"] == "DAILY" && !self.daily_warned {
                tracing::warn!(object = %self.object, "daily limit reached; parking until reset");
                self.daily_warned = true;
            }
            return Err(e);
        }
        if r.status.is_success() {
            self.daily_warned = false;
        }
        Ok(r)
    }

    /// Whole-request failures that are neither success nor per-input (401, 403, 429, 5xx, ...).
    fn classify(&self, r: &Resp) -> SinkError {
        let category = r.body["category"].as_str().unwrap_or("");
        let status = r.status.as_u16();
        match status {
            401 => SinkError::fatal(
                format!("HubSpot refused the token (401 {category})"),
                format!(
                    "check the token in {} (OAuth: the app's refresh token and scopes)",
                    self.crm.credentials.label()
                ),
            ),
            403 => {
                let missing = missing_scopes(&r.body);
                let needed = if missing.is_empty() {
                    let t = &self.object;
                    format!("crm.objects.{t}.read, crm.objects.{t}.write and crm.schemas.{t}.read")
                } else {
                    missing.join(", ")
                };
                SinkError::fatal(
                    format!(
                        "HubSpot denied access to {} (403 {category}; missing scopes: {needed})",
                        self.object
                    ),
                    format!(
                        "grant the app the scopes {needed} (a private app: its scopes in \
                         HubSpot's settings; an OAuth app: add them and reinstall it, then \
                         renew the refresh token in {})",
                        self.crm.credentials.label()
                    ),
                )
            }
            429 => {
                let policy = r.body["policyName"].as_str().unwrap_or("");
                let retry_after = if policy == "DAILY" {
                    self.account.daily_wait(chrono::Utc::now())
                } else {
                    header_u64(&r.headers, "x-hubspot-ratelimit-interval-milliseconds")
                        .map(Duration::from_millis)
                        .or_else(|| http::retry_after(&r.headers))
                        .unwrap_or(DEFAULT_WINDOW)
                };
                tracing::info!(
                    policy,
                    retry_after_ms = retry_after.as_millis() as u64,
                    "HubSpot rate limited"
                );
                SinkError::transient(format!("HubSpot rate limit ({policy})"), Some(retry_after))
            }
            408 | 500..=599 => SinkError::transient(
                format!("HubSpot answered {status} {category}"),
                http::retry_after(&r.headers),
            ),
            _ => SinkError::fatal(
                format!("HubSpot answered {status} {}", describe(&r.body)),
                format!(
                    "check object {:?}, id_property and base_url of the sink",
                    self.object
                ),
            ),
        }
    }

    async fn schema(&mut self) -> Result<&BTreeMap<String, Property>, SinkError> {
        if self.schema.is_none() {
            self.schema = Some(self.fetch_schema().await?);
        }
        Ok(self.schema.as_ref().expect("set above"))
    }

    fn match_result<'a>(&self, group: &'a [Input], res: &Value) -> Option<&'a Input> {
        if let Some(trace) = res["objectWriteTraceId"].as_str()
            && let Some(i) = group.iter().find(|i| i.index.to_string() == trace)
        {
            return Some(i);
        }
        let v = res["properties"][&self.crm.id_property].as_str()?;
        group.iter().find(|i| i.id.eq_ignore_ascii_case(v))
    }

    fn match_error(&self, group: &[Input], err: &Value) -> Vec<usize> {
        let ctx = &err["context"];
        let list = |k: &str| -> Vec<String> {
            ctx[k]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let traces = list("objectWriteTraceId");
        if !traces.is_empty() {
            return group
                .iter()
                .filter(|i| traces.contains(&i.index.to_string()))
                .map(|i| i.index)
                .collect();
        }
        let ids: Vec<String> = list("ids").into_iter().chain(list("id")).collect();
        group
            .iter()
            .filter(|i| ids.iter().any(|id| id.eq_ignore_ascii_case(&i.id)))
            .map(|i| i.index)
            .collect()
    }
}

impl HubspotSink {
    /// Upserts `inputs`, bisecting whole-request 400s down to single poison inputs.
    async fn send_upserts(
        &mut self,
        inputs: Vec<Input>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let path = format!("/crm/v3/objects/{}/batch/upsert", self.object);
        let mut work = Bisection::new(&inputs, self.crm.per_request.min(MAX_INPUTS));
        while let Some(group) = work.next_group() {
            let body = json!({"inputs": group.iter().map(|i| &i.body).collect::<Vec<_>>()});
            let r = self.post(&path, &body).await?;
            match r.status.as_u16() {
                200 | 201 | 207 => {
                    let mut done: HashSet<usize> = HashSet::new();
                    for res in r.body["results"].as_array().into_iter().flatten() {
                        let Some(input) = self.match_result(&group, res) else {
                            continue;
                        };
                        if let Some(id) = res["id"].as_str() {
                            out.destination_ids.push((input.index, id.to_string()));
                        }
                        done.insert(input.index);
                    }
                    let mut unmapped: Option<&Value> = None;
                    for err in r.body["errors"].as_array().into_iter().flatten() {
                        let category = err["category"].as_str().unwrap_or("UNKNOWN");
                        if is_transient_category(category) {
                            return Err(SinkError::transient(
                                format!("HubSpot per-input error {category}"),
                                None,
                            ));
                        }
                        let hits = self.match_error(&group, err);
                        if hits.is_empty() {
                            unmapped.get_or_insert(err);
                        }
                        for index in hits {
                            if done.insert(index) {
                                out.rejected.push(Rejected {
                                    index,
                                    category: category.to_string(),
                                    message: describe(err),
                                });
                            }
                        }
                    }
                    let rest: Vec<Input> = group
                        .iter()
                        .filter(|i| !done.contains(&i.index))
                        .cloned()
                        .collect();
                    if rest.is_empty() {
                        continue;
                    }
                    if r.status.as_u16() != 207 && unmapped.is_none() {
                        // 200 whose results we could not match: the writes happened.
                        continue;
                    }
                    if rest.len() < group.len() {
                        work.send_next(rest);
                    } else if rest.len() == 1 {
                        let err = unmapped.cloned().unwrap_or(Value::Null);
                        out.rejected.push(Rejected {
                            index: rest[0].index,
                            category: err["category"].as_str().unwrap_or("UNKNOWN").into(),
                            message: describe(&err),
                        });
                    } else {
                        work.split(rest);
                    }
                }
                400 | 409 | 422 => {
                    let message = r.body["message"].as_str().unwrap_or("");
                    if message.contains("non-unique") {
                        return Err(SinkError::fatal(
                            format!("HubSpot: {} is not a unique property", self.crm.id_property),
                            "set id_property to a property with hasUniqueValue = true",
                        ));
                    }
                    if group.len() == 1 {
                        let category = r.body["category"].as_str().unwrap_or("VALIDATION_ERROR");
                        tracing::debug!(category, "HubSpot refused one input");
                        out.rejected.push(Rejected {
                            index: group[0].index,
                            category: category.to_string(),
                            message: describe(&r.body),
                        });
                    } else {
                        tracing::debug!(
                            inputs = group.len(),
                            "HubSpot refused the batch; bisecting"
                        );
                        work.split(group);
                    }
                }
                _ => return Err(self.classify(&r)),
            }
        }
        Ok(())
    }
}

impl CrmWrites for HubspotSink {
    type Value = String;

    async fn prepare(&mut self) -> Result<(), SinkError> {
        self.schema().await?;
        Ok(())
    }

    fn map(&self, row: &Row) -> Result<(String, BTreeMap<String, String>), MappingError> {
        const NONE: &BTreeMap<String, Property> = &BTreeMap::new();
        let schema = self.schema.as_ref().unwrap_or(NONE);
        let (fields, id_property) = (&self.crm.fields, &self.crm.id_property);
        Ok((
            id_value(fields, id_property, row)?,
            to_properties(fields, schema, row)?,
        ))
    }

    async fn upsert(
        &mut self,
        upserts: Vec<Upsert<String>>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let inputs = upserts
            .into_iter()
            .map(|u| Input {
                index: u.index,
                body: json!({
                    "idProperty": self.crm.id_property,
                    "id": u.identity,
                    "properties": u.properties,
                    "objectWriteTraceId": u.index.to_string(),
                }),
                id: u.identity,
            })
            .collect();
        self.send_upserts(inputs, out).await
    }

    /// `batch/archive` by record id: HubSpot answers 204 whether or not a record still existed.
    async fn delete(
        &mut self,
        records: Vec<(usize, String)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let path = format!("/crm/v3/objects/{}/batch/archive", self.object);
        for chunk in records.chunks(self.crm.per_request.min(MAX_INPUTS)) {
            let body = json!({
                "inputs": chunk.iter().map(|(_, id)| json!({"id": id})).collect::<Vec<_>>(),
            });
            let r = self.post(&path, &body).await?;
            if !r.status.is_success() {
                return Err(self.classify(&r));
            }
            out.destination_ids.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    fn on_delete(&self) -> OnDelete {
        self.crm.on_delete
    }

    /// `GET /crm/v3/objects/{object}` pages of 100 with the mapped properties.
    async fn list(&mut self) -> Result<Vec<Record>, SinkError> {
        let names = self.crm.property_names();
        let mut records = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!(
                "/crm/v3/objects/{}?limit=100&properties={}",
                self.object,
                names.join(",")
            );
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let page = self.get_json(&path).await?;
            for r in page["results"].as_array().into_iter().flatten() {
                let Some(id) = r["id"].as_str() else {
                    continue;
                };
                records.push(self.crm.record(id, &r["properties"]));
            }
            match page["paging"]["next"]["after"].as_str() {
                Some(a) => after = Some(a.to_string()),
                None => return Ok(records),
            }
        }
    }
}

#[cfg(test)]
mod tests;
