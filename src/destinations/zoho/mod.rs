//! Zoho CRM v8 destination: upserts by a unique field, deletes resolved by COQL.
//!
//! Owns the HTTP side of a `kind = "zoho"` sink: value encoding (pure,
//! [`encode_value`], [`to_record`]), request shapes, response classification (Zoho CRM v8 REST API);
//! tested against the in-process emulator
//! (`driftless_emulators::zoho`).
//!
//! Invariants:
//! - every write is idempotent: `POST /crm/v8/{Module}/upsert` with
//!   `duplicate_check_fields = [id_property]`; a delete is `DELETE /crm/v8/{Module}?ids=...` of
//!   the record ids the sink ledger links to the keys; a record already gone is success;
//! - every write carries `trigger: []` (deletes `wf_trigger=false`): no workflow, approval or
//!   blueprint runs on our writes, so they cannot loop back through automation;
//! - at most 100 records per write; `data[]` results are in input
//!   order and map back to batch entries by position;
//! - a record Zoho refuses for good (an error item, or the single record left by bisecting a
//!   whole-request 400) is [`Rejected`] with Zoho's `code` as category; a value that cannot be
//!   encoded for its field type is rejected as `MAPPING`; 429 (concurrency or credits, whatever
//!   the body: `TOO_MANY_REQUESTS` or `LIMIT_REACHED`), 5xx, timeouts and resets fail the batch
//!   as [`SinkError::Transient`], and consecutive 429s double the wait ([`http::Throttle`],
//!   shared by siblings); a 401 drops the access token and retries once with a fresh one, then
//!   is fatal; 403, `OAUTH_SCOPE_MISMATCH` (naming the scope the request needs),
//!   `INVALID_MODULE` and an `id_property` Zoho will not match on are [`SinkError::Fatal`];
//! - every COQL query is written by [`coql`] (reserved words quoted, criteria in pairs, at
//!   most 50 values per `in`);
//! - concurrency: one request at a time per worker (`apply` takes `&mut self` and awaits each
//!   call), far below Zoho's per-org limit (5-25) as long as fewer workers than that share an
//!   org; workers of one process share one access token ([`Credentials`] clones);
//! - requests go to the OAuth token's `api_domain` (the account's data centre) unless
//!   `base_url` is set to something other than [`ZOHO_BASE_URL`] (the emulator, a proxy),
//!   which pins every request there; with a static token, `base_url` is used;
//! - logs and messages carry counts, codes and field names only: never tokens or row values.

pub(crate) mod coql;
mod encode;
pub(crate) mod receiver;
pub(crate) mod two_way;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::destinations::CrmSettings;
use crate::destinations::oauth::Credentials;
use crate::sink::bisect::Bisection;
use crate::sink::crm::CrmWrites;
use crate::sink::http;
use crate::sink::ledger::{Upsert, rejected};
use crate::sink::mapping::{MappingError, Property, id_value};
use crate::sink::verify::Record;
use crate::sink::{Outcome, Rejected, SinkError};

use crate::config::sinks::{OnDelete, SinkKind, ValidSink, ZOHO_BASE_URL};
use crate::event::Row;
pub(crate) use encode::{ZohoField, encode_value, parse_fields, to_record};

/// Zoho's cap on records per insert/update/upsert/delete call.
const MAX_RECORDS: usize = 100;
/// Wait after a concurrency 429 without `Retry-After` (in-flight calls finish within seconds).
const CONCURRENCY_WAIT: Duration = Duration::from_secs(2);
/// Wait after the rolling 24 h credit budget ran out: credits come back as old calls age out of
/// the window, so retrying sooner only burns requests.
const CREDITS_WAIT: Duration = Duration::from_secs(600);

/// Per-record codes worth retrying the batch for (everything else is poison).
fn is_transient_code(code: &str) -> bool {
    matches!(code, "TOO_MANY_REQUESTS" | "INTERNAL_ERROR")
}

/// Where requests go: the pinned `base_url`, else the token's `api_domain`, else `base_url`.
fn request_base(pinned: bool, base_url: &str, api_domain: Option<&str>) -> String {
    match api_domain {
        Some(d) if !pinned => d.trim_end_matches('/').to_string(),
        _ => base_url.to_string(),
    }
}

/// A value-free description of a Zoho error object: code, message and field names.
fn describe(err: &Value) -> String {
    let code = err["code"].as_str().unwrap_or("UNKNOWN");
    let message = err["message"].as_str().unwrap_or("");
    let d = &err["details"];
    let mut extra = Vec::new();
    if let Some(f) = d["api_name"].as_str() {
        extra.push(format!("field {f}"));
    }
    if let Some(t) = d["expected_data_type"].as_str() {
        extra.push(format!("expected {t}"));
    }
    if let Some(n) = d["maximum_length"].as_u64() {
        extra.push(format!("maximum length {n}"));
    }
    let mut s = format!("{code}: {message}");
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

type Resp = http::JsonResponse;

/// One upsert record and its entry.
#[derive(Clone)]
pub(crate) struct Input {
    index: usize,
    record: Value,
}

/// The Zoho CRM sink.
#[derive(Debug)]
pub struct ZohoSink {
    crm: CrmSettings,
    /// Requests go to `base_url`, never to the token's `api_domain`.
    pinned: bool,
    module: String,
    /// Field `data_type` by API name, once fetched.
    types: Option<BTreeMap<String, String>>,
    /// The module's fields as [`Property`] by API name, once [`ZohoSink::fetch_schema`] ran.
    schema: Option<BTreeMap<String, Property>>,
    /// 429s in a row (shared by siblings): each doubles the wait.
    throttle: http::Throttle,
}

impl ZohoSink {
    /// Builds the client (reqwest with rustls). `credentials` come from the sink's `auth`
    /// ([`Credentials::from_auth`]); Zoho access tokens last an hour, so production configs use
    /// `[sinks.oauth]`.
    pub(crate) fn new(sink: &ValidSink, credentials: Credentials) -> Result<Self, SinkError> {
        let SinkKind::Zoho { module } = &sink.kind else {
            return Err(super::wrong_kind(sink, "Zoho", "zoho"));
        };
        let crm = CrmSettings::new(sink, credentials, "a unique Zoho field (e.g. Email)")?;
        Ok(ZohoSink {
            pinned: crm.base_url != ZOHO_BASE_URL,
            crm,
            module: module.clone(),
            types: None,
            schema: None,
            throttle: http::Throttle::default(),
        })
    }

    /// The module's API name.
    pub(crate) fn module(&self) -> &str {
        &self.module
    }

    /// Another client with the same settings and credentials (the access token is shared).
    pub(crate) fn sibling(&self) -> Self {
        ZohoSink {
            crm: self.crm.clone(),
            pinned: self.pinned,
            module: self.module.clone(),
            types: self.types.clone(),
            schema: self.schema.clone(),
            throttle: self.throttle.clone(),
        }
    }

    /// Field `data_type` by API name (fetched once).
    pub(crate) async fn field_types(&mut self) -> Result<BTreeMap<String, String>, SinkError> {
        self.types().await
    }

    /// One JSON request (two-way sync: COQL, watch channels, updates): the status and the
    /// JSON body (Null when empty). Failures to reach Zoho are transient; the status is left
    /// to the caller, see [`ZohoSink::refusal`].
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SinkError> {
        let r = self.send(method, path, body).await?;
        Ok((r.status.as_u16(), r.body))
    }

    /// The error for an answer that is not a success (classified like the sink's writes).
    pub(crate) fn refusal(&self, status: u16, body: &Value) -> SinkError {
        self.classify(&Resp {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: body.clone(),
        })
    }

    /// `GET /crm/v8/settings/fields?module=M`: the module's fields as they came.
    pub(crate) async fn fetch_fields(&self) -> Result<Vec<ZohoField>, SinkError> {
        let path = format!("/crm/v8/settings/fields?module={}", self.module);
        let r = self.send(reqwest::Method::GET, &path, None).await?;
        if !r.status.is_success() {
            return Err(self.classify(&r));
        }
        let fields = parse_fields(&self.module, &r.body);
        tracing::debug!(module = %self.module, fields = fields.len(), "fetched Zoho fields");
        Ok(fields)
    }

    /// The destination schema as `mapping::Property` by API name (for `check_schema`); also
    /// keeps it ([`ZohoSink::known_schema`]) and the field types the writes need, so neither
    /// the first batch nor two-way sync reads them again.
    pub(crate) async fn fetch_schema(&mut self) -> Result<BTreeMap<String, Property>, SinkError> {
        let fields = self.fetch_fields().await?;
        self.types = Some(
            fields
                .iter()
                .map(|f| (f.api_name.clone(), f.data_type.clone()))
                .collect(),
        );
        let schema: BTreeMap<String, Property> = fields
            .iter()
            .map(|f| (f.api_name.clone(), f.property()))
            .collect();
        self.schema = Some(schema.clone());
        Ok(schema)
    }

    /// The schema, once fetched.
    pub(crate) fn known_schema(&self) -> Option<&BTreeMap<String, Property>> {
        self.schema.as_ref()
    }

    async fn types(&mut self) -> Result<BTreeMap<String, String>, SinkError> {
        if self.types.is_none() {
            let fields = self.fetch_fields().await?;
            self.types = Some(
                fields
                    .into_iter()
                    .map(|f| (f.api_name, f.data_type))
                    .collect(),
            );
        }
        Ok(self.types.clone().unwrap_or_default())
    }

    /// One request; a 401 with OAuth credentials drops the token and retries once. The answer
    /// counts towards the 429 streak; a scope Zoho says the token lacks is fatal, naming it.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, SinkError> {
        let what = path.split('?').next().unwrap_or(path);
        let r = self.request(method.clone(), path, what, body).await?;
        self.throttle.observe(r.status);
        if r.body["code"] == "OAUTH_SCOPE_MISMATCH" {
            let scope = self.scope_for(&method, what);
            return Err(SinkError::fatal(
                format!(
                    "Zoho refused {method} {what}: the OAuth token lacks the scope {scope} (OAUTH_SCOPE_MISMATCH)"
                ),
                format!(
                    "grant {scope} to the OAuth client in {} and issue a new refresh token with \
                     it; {}",
                    self.crm.credentials.label(),
                    self.scope_hint()
                ),
            ));
        }
        Ok(r)
    }

    /// The scope a request to `path` (without its query) needs.
    fn scope_for(&self, method: &reqwest::Method, path: &str) -> String {
        let m = &self.module;
        if path.ends_with("/coql") {
            format!("ZohoCRM.coql.READ (with ZohoCRM.modules.{m}.READ)")
        } else if path.contains("/settings/") {
            "ZohoCRM.settings.fields.READ".into()
        } else if path.contains("/actions/watch") {
            "ZohoCRM.notifications.ALL".into()
        } else if method == reqwest::Method::GET {
            format!("ZohoCRM.modules.{m}.READ")
        } else {
            format!("ZohoCRM.modules.{m}.ALL")
        }
    }

    /// [`send`](Self::send) without the answer's checks.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        what: &str,
        body: Option<&Value>,
    ) -> Result<Resp, SinkError> {
        self.crm
            .credentials
            .send_json(&self.crm.client, "Zoho", what, body, |token| {
                let method = method.clone();
                async move {
                    // After the token, so that its refresh has told where the account lives.
                    let api_domain = self.crm.credentials.api_domain().await;
                    let base = request_base(self.pinned, &self.crm.base_url, api_domain.as_deref());
                    self.crm
                        .client
                        .request(method, format!("{base}{path}"))
                        .header("Authorization", format!("Zoho-oauthtoken {token}"))
                }
            })
            .await
    }

    fn scope_hint(&self) -> String {
        format!(
            "the sink needs the scopes ZohoCRM.modules.{m}.ALL (or ZohoCRM.modules.ALL), \
             ZohoCRM.settings.fields.READ, ZohoCRM.coql.READ and, for two-way sync, \
             ZohoCRM.notifications.ALL; check too that the user's profile may edit {m}",
            m = self.module
        )
    }

    /// Whole-request failures (401, 403, 429, 5xx, top-level error codes).
    fn classify(&self, r: &Resp) -> SinkError {
        let status = r.status.as_u16();
        let code = r.body["code"].as_str().unwrap_or("");
        match (status, code) {
            (_, "OAUTH_SCOPE_MISMATCH" | "NO_PERMISSION") | (403, _) => SinkError::fatal(
                format!("Zoho denied access to {} ({status} {code})", self.module),
                self.scope_hint(),
            ),
            (401, _) | (_, "INVALID_TOKEN" | "AUTHENTICATION_FAILURE") => SinkError::fatal(
                format!("Zoho refused the access token ({status} {code})"),
                if self.crm.credentials.can_refresh() {
                    format!(
                        "a freshly refreshed token was refused too: check the OAuth client and \
                         refresh token in {} and that token_url is the account's data centre",
                        self.crm.credentials.label()
                    )
                } else {
                    format!(
                        "check the token in {} (Zoho access tokens last one hour: configure \
                         [sinks.oauth] with a refresh token instead)",
                        self.crm.credentials.label()
                    )
                },
            ),
            (_, "INVALID_MODULE") => SinkError::fatal(
                format!("Zoho does not know module {:?} ({code})", self.module),
                "set module to the module's API name (Settings > APIs > API names), e.g. Leads",
            ),
            (429, _) | (_, "LIMIT_REACHED") => self.throttled(r, code),
            (408 | 500..=599, _) => {
                SinkError::transient(format!("Zoho answered {status} {code}"), None)
            }
            _ => SinkError::fatal(
                format!("Zoho answered {status} {}", describe(&r.body)),
                format!(
                    "check module {:?}, id_property and base_url of the sink",
                    self.module
                ),
            ),
        }
    }

    /// A 429 (or `LIMIT_REACHED`): transient, waiting longer for each one in a row. Zoho's body
    /// for spent credits is not documented: `LIMIT_REACHED` is read as credits (waits from
    /// [`CREDITS_WAIT`]); `TOO_MANY_REQUESTS`, which the concurrency gate answers too, waits
    /// from [`CONCURRENCY_WAIT`] and doubles, so spent credits are waited out either way.
    fn throttled(&self, r: &Resp, code: &str) -> SinkError {
        let retry_after = http::retry_after(&r.headers);
        let streak = self.throttle.streak();
        if code == "LIMIT_REACHED" {
            let wait = self.throttle.wait(CREDITS_WAIT, retry_after);
            tracing::warn!(module = %self.module, code, streak, wait_s = wait.as_secs(),
                "Zoho API credits exhausted; waiting for the rolling window");
            return SinkError::transient(
                format!(
                    "Zoho API credits exhausted for the rolling 24 h window ({code}); waiting \
                     {} s before retrying (raise the org's API credits or lower the write \
                     volume)",
                    wait.as_secs()
                ),
                Some(wait),
            );
        }
        let wait = self.throttle.wait(CONCURRENCY_WAIT, retry_after);
        if streak >= 3 {
            tracing::warn!(module = %self.module, code, streak, wait_s = wait.as_secs(),
                "Zoho keeps answering 429: the concurrency limit, or the API credits of the \
                 rolling 24 h window are spent; backing off");
        } else {
            tracing::info!(module = %self.module, code, streak, "Zoho answered 429");
        }
        SinkError::transient(
            format!(
                "Zoho answered 429 {code} ({streak} in a row: the concurrency limit, or the API \
                 credits are spent); retrying in {} s",
                wait.as_secs()
            ),
            Some(wait),
        )
    }

    /// Maps `data[]` items (input order) back to entries.
    fn per_record(
        &self,
        group: &[Input],
        items: &[Value],
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        if items.len() != group.len() {
            return Err(SinkError::transient(
                format!(
                    "Zoho answered {} results for {} records",
                    items.len(),
                    group.len()
                ),
                None,
            ));
        }
        if let Some(t) = items
            .iter()
            .filter_map(|i| i["code"].as_str())
            .find(|c| is_transient_code(c))
        {
            return Err(SinkError::transient(
                format!("Zoho per-record error {t}"),
                None,
            ));
        }
        if let Some(item) = items.iter().find(|i| i["code"] == "OAUTH_SCOPE_MISMATCH") {
            return Err(SinkError::fatal(
                format!("Zoho denied access to {}: {}", self.module, describe(item)),
                self.scope_hint(),
            ));
        }
        for (input, item) in group.iter().zip(items) {
            if item["status"] == "success" {
                if let Some(id) = item["details"]["id"].as_str() {
                    out.destination_ids.push((input.index, id.to_string()));
                }
            } else {
                out.rejected.push(Rejected {
                    index: input.index,
                    category: item["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                    message: describe(item),
                });
            }
        }
        Ok(())
    }
}

impl ZohoSink {
    /// Upserts `inputs`, bisecting whole-request 400s down to single poison records.
    async fn send_upserts(
        &mut self,
        inputs: Vec<Input>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let path = format!("/crm/v8/{}/upsert", self.module);
        let mut work = Bisection::new(&inputs, self.crm.per_request.min(MAX_RECORDS));
        while let Some(group) = work.next_group() {
            let body = json!({
                "data": group.iter().map(|i| &i.record).collect::<Vec<_>>(),
                "duplicate_check_fields": [self.crm.id_property],
                "trigger": [],
            });
            let r = self.send(reqwest::Method::POST, &path, Some(&body)).await?;
            let status = r.status.as_u16();
            let items = r.body["data"].as_array().filter(|_| {
                (200..300).contains(&status) || status == 400 && r.body.get("code").is_none()
            });
            if let Some(items) = items {
                self.per_record(&group, items, out)?;
                continue;
            }
            if status != 400 {
                return Err(self.classify(&r));
            }
            let code = r.body["code"].as_str().unwrap_or("");
            let json_path = r.body["details"]["json_path"].as_str().unwrap_or("");
            if json_path.starts_with("$.duplicate_check_fields") {
                return Err(SinkError::fatal(
                    format!("Zoho will not upsert by {} ({code})", self.crm.id_property),
                    "set id_property to a unique field, an external-id field or the module's \
                     system duplicate-check field (e.g. Email for Leads and Contacts)",
                ));
            }
            if matches!(
                code,
                "INVALID_MODULE"
                    | "OAUTH_SCOPE_MISMATCH"
                    | "NO_PERMISSION"
                    | "INVALID_TOKEN"
                    | "LIMIT_REACHED"
            ) {
                return Err(self.classify(&r));
            }
            if group.len() == 1 {
                tracing::debug!(code, "Zoho refused one record");
                out.rejected.push(Rejected {
                    index: group[0].index,
                    category: if code.is_empty() {
                        "INVALID_DATA"
                    } else {
                        code
                    }
                    .to_string(),
                    message: describe(&r.body),
                });
            } else {
                tracing::debug!(
                    records = group.len(),
                    code,
                    "Zoho refused the batch; bisecting"
                );
                work.split(group);
            }
        }
        Ok(())
    }

    /// `DELETE /crm/v8/{Module}?ids=...` of these records (entry index, record id); a record
    /// already gone is success.
    async fn delete_ids(
        &mut self,
        found: Vec<(usize, String)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        for part in found.chunks(self.crm.per_request.min(MAX_RECORDS)) {
            let ids: Vec<&str> = part.iter().map(|(_, id)| id.as_str()).collect();
            let path = format!(
                "/crm/v8/{}?ids={}&wf_trigger=false",
                self.module,
                ids.join(",")
            );
            let r = self.send(reqwest::Method::DELETE, &path, None).await?;
            let status = r.status.as_u16();
            let items = r.body["data"]
                .as_array()
                .filter(|_| matches!(status, 200..=299 | 400));
            let Some(items) = items else {
                return Err(self.classify(&r));
            };
            for ((index, zid), item) in part.iter().zip(items) {
                // INVALID_DATA on a delete: the id is no longer a live record.
                let gone = item["code"] == "INVALID_DATA";
                if item["status"] == "success" || gone {
                    // Deleted, or already gone (a concurrent delete): idempotent success.
                    out.destination_ids.push((*index, zid.clone()));
                } else if is_transient_code(item["code"].as_str().unwrap_or("")) {
                    return Err(SinkError::transient(
                        format!("Zoho delete: {}", describe(item)),
                        None,
                    ));
                } else {
                    out.rejected.push(Rejected {
                        index: *index,
                        category: item["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                        message: describe(item),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `id_property` value as its field type takes it.
    fn encode_identity(&self, identity: &str) -> Result<Value, MappingError> {
        let id_type = self
            .types
            .as_ref()
            .and_then(|t| t.get(&self.crm.id_property))
            .map_or("", String::as_str);
        encode_value(id_type, &Value::String(identity.to_string())).map_err(|kind| {
            MappingError::BadValue {
                column: self.crm.id_property.clone(),
                property: self.crm.id_property.clone(),
                kind,
            }
        })
    }
}

impl CrmWrites for ZohoSink {
    type Value = Value;

    async fn prepare(&mut self) -> Result<(), SinkError> {
        self.types().await?;
        Ok(())
    }

    fn map(&self, row: &Row) -> Result<(String, BTreeMap<String, Value>), MappingError> {
        const NONE: &BTreeMap<String, String> = &BTreeMap::new();
        let types = self.types.as_ref().unwrap_or(NONE);
        let (fields, id_property) = (&self.crm.fields, &self.crm.id_property);
        let id = id_value(fields, id_property, row)?;
        self.encode_identity(&id)?;
        let record = to_record(fields, types, row)?;
        Ok((id, record.into_iter().collect()))
    }

    /// Upserts by `id_property`, which every record carries (Zoho's duplicate check needs it
    /// even when its value did not change).
    async fn upsert(
        &mut self,
        upserts: Vec<Upsert<Value>>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let mut inputs = Vec::with_capacity(upserts.len());
        for u in upserts {
            match self.encode_identity(&u.identity) {
                Ok(id) => {
                    let mut record: serde_json::Map<String, Value> =
                        u.properties.into_iter().collect();
                    record.insert(self.crm.id_property.clone(), id);
                    inputs.push(Input {
                        index: u.index,
                        record: Value::Object(record),
                    });
                }
                Err(e) => out.rejected.push(rejected(u.index, e.to_string())),
            }
        }
        if inputs.is_empty() {
            return Ok(());
        }
        self.send_upserts(inputs, out).await
    }

    async fn delete(
        &mut self,
        records: Vec<(usize, String)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        self.delete_ids(records, out).await
    }

    fn on_delete(&self) -> OnDelete {
        self.crm.on_delete
    }

    /// COQL pages of 2,000 ordered by id, with the mapped fields, by keyset (each page after
    /// the last id of the one before: no OFFSET, so no 100,000-record cap).
    async fn list(&mut self) -> Result<Vec<Record>, SinkError> {
        const PAGE: usize = 2000;
        let names = self.crm.property_names();
        let fields: Vec<&str> = ["id"]
            .into_iter()
            .chain(names.iter().map(String::as_str))
            .collect();
        let mut records: Vec<Record> = Vec::new();
        loop {
            let criteria = match records.last() {
                Some(last) if two_way::is_record_id(&last.id) => format!("id > {}", last.id),
                _ => "id is not null".to_string(),
            };
            let query = coql::select(
                &fields,
                &self.module,
                Some(&criteria),
                &format!(" order by id asc limit {PAGE}"),
            );
            let body = json!({ "select_query": query });
            let (status, page) = self
                .call(reqwest::Method::POST, "/crm/v8/coql", Some(&body))
                .await?;
            match status {
                204 => return Ok(records),
                200 => {}
                _ => return Err(self.refusal(status, &page)),
            }
            let rows = page["data"].as_array().cloned().unwrap_or_default();
            for r in &rows {
                let id = match &r["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                records.push(self.crm.record(&id, r));
            }
            if rows.len() < PAGE || page["info"]["more_records"] == false {
                return Ok(records);
            }
        }
    }
}

#[cfg(test)]
mod tests;
