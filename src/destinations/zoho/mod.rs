//! Zoho CRM v8 destination: upserts by a unique field, deletes resolved by COQL.
//!
//! Owns the HTTP side of a `kind = "zoho"` sink: value encoding (pure,
//! [`encode_value`], [`to_record`]), request shapes, response classification (Zoho CRM v8 REST API);
//! tested against the in-process emulator
//! (`driftless_emulators::zoho`).
//!
//! Invariants:
//! - every write is idempotent: `POST /crm/v8/{Module}/upsert` with
//!   `duplicate_check_fields = [id_property]`; a delete looks the record ids up with COQL
//!   (`select id, F from M where F in (...)`) and `DELETE /crm/v8/{Module}?ids=...`; a record
//!   already gone is success;
//! - every write carries `trigger: []` (deletes `wf_trigger=false`): no workflow, approval or
//!   blueprint runs on our writes, so they cannot loop back through automation;
//! - at most 100 records per write and 50 values per COQL `in`; `data[]` results are in input
//!   order and map back to batch entries by position;
//! - a record Zoho refuses for good (an error item, or the single record left by bisecting a
//!   whole-request 400) is [`Rejected`] with Zoho's `code` as category; a value that cannot be
//!   encoded for its field type is rejected as `MAPPING`; 429 (concurrency or credits), 5xx,
//!   timeouts and resets fail the batch as [`SinkError::Transient`]; a 401 drops the access
//!   token and retries once with a fresh one, then is fatal; 403, `OAUTH_SCOPE_MISMATCH`,
//!   `INVALID_MODULE` and an `id_property` Zoho will not match on are [`SinkError::Fatal`];
//! - concurrency: one request at a time per worker (`apply` takes `&mut self` and awaits each
//!   call), far below Zoho's per-org limit (5-25) as long as fewer workers than that share an
//!   org; workers of one process share one access token ([`Credentials`] clones);
//! - requests go to the OAuth token's `api_domain` (the account's data centre) unless
//!   `base_url` is set to something other than [`ZOHO_BASE_URL`] (the emulator, a proxy),
//!   which pins every request there; with a static token, `base_url` is used;
//! - logs and messages carry counts, codes and field names only: never tokens or row values.

pub mod receiver;
pub mod two_way;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use crate::config::fields::FieldRule;
use crate::destinations::oauth::Credentials;
use crate::sink::batch::Batch;
use crate::sink::mapping::{MappingError, Property, PropertyType, id_value, value_string};
use crate::sink::{Outcome, Rejected, Sink, SinkError};
use crate::sink::{crm_batch, http};

use crate::config::sinks::{OnDelete, SinkKind, ValidSink, ZOHO_BASE_URL};
use crate::event::{ChangeEvent, Op, Row};

/// Zoho's cap on records per insert/update/upsert/delete call.
const MAX_RECORDS: usize = 100;
/// Zoho's cap on values of a COQL `in`.
const MAX_IN_VALUES: usize = 50;
/// Wait after a concurrency 429 without `Retry-After` (in-flight calls finish within seconds).
const CONCURRENCY_WAIT: Duration = Duration::from_secs(2);
/// Wait after the rolling 24 h credit budget ran out: credits come back as old calls age out of
/// the window, so retrying sooner only burns requests.
const CREDITS_WAIT: Duration = Duration::from_secs(600);

/// Per-record codes worth retrying the batch for (everything else is poison).
fn is_transient_code(code: &str) -> bool {
    matches!(code, "TOO_MANY_REQUESTS" | "INTERNAL_ERROR")
}

/// A field definition from `GET /crm/v8/settings/fields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZohoField {
    /// API name.
    pub api_name: String,
    /// Zoho `data_type` (`text`, `email`, `integer`, `double`, `date`, `picklist`, ...).
    pub data_type: String,
    /// Read-only (`read_only` or `field_read_only`).
    pub read_only: bool,
    /// Usable in `duplicate_check_fields`: unique, external id, or the module's system
    /// duplicate-check field (§2.4).
    pub unique: bool,
    /// Picklist actual values.
    pub options: Vec<String>,
}

impl ZohoField {
    /// The field as a [`Property`] for [`crate::sink::mapping::check_schema`].
    pub fn property(&self) -> Property {
        let kind = match self.data_type.as_str() {
            "integer" | "bigint" | "long" | "double" | "currency" | "decimal" | "percent" => {
                PropertyType::Number
            }
            "boolean" => PropertyType::Bool,
            "date" => PropertyType::Date,
            "datetime" => PropertyType::Datetime,
            "picklist" | "multiselectpicklist" => PropertyType::Enumeration,
            _ => PropertyType::String,
        };
        Property {
            name: self.api_name.clone(),
            kind,
            read_only: self.read_only,
            unique: self.unique,
            options: self.options.clone(),
        }
    }
}

/// The system duplicate-check field of a standard module (§2.4), which upsert may match on.
fn system_duplicate_field(module: &str) -> Option<&'static str> {
    Some(match module {
        "Leads" | "Contacts" => "Email",
        "Accounts" => "Account_Name",
        "Deals" => "Deal_Name",
        "Campaigns" => "Campaign_Name",
        "Cases" | "Quotes" | "Sales_Orders" | "Purchase_Orders" | "Invoices" => "Subject",
        "Solutions" => "Solution_Title",
        "Products" => "Product_Name",
        "Vendors" => "Vendor_Name",
        "Price_Books" => "Price_Book_Name",
        _ => return None,
    })
}

/// Parses the `fields` array of a fields-API response.
pub fn parse_fields(module: &str, body: &Value) -> Vec<ZohoField> {
    let system = system_duplicate_field(module);
    body["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let api_name = f["api_name"].as_str()?.to_string();
            let unique_flag = match &f["unique"] {
                Value::Object(o) => o
                    .get("casesensitive")
                    .is_some_and(|c| c.as_str() != Some("-1")),
                Value::Bool(b) => *b,
                _ => false,
            };
            let external = f["external"].is_object();
            let options = f["pick_list_values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| {
                    o["actual_value"]
                        .as_str()
                        .or_else(|| o["display_value"].as_str())
                        .map(String::from)
                })
                .collect();
            Some(ZohoField {
                unique: unique_flag || external || system == Some(api_name.as_str()),
                data_type: f["data_type"].as_str().unwrap_or("text").to_string(),
                read_only: f["read_only"].as_bool().unwrap_or(false)
                    || f["field_read_only"].as_bool().unwrap_or(false),
                options,
                api_name,
            })
        })
        .collect()
}

/// Encodes one value for a Zoho field of `data_type` (typed JSON, §2.4): numbers as JSON
/// numbers (PG `numeric` text parsed), booleans, dates `YYYY-MM-DD`, datetimes
/// `yyyy-MM-ddTHH:mm:ss±HH:mm` (second precision, offset kept; a timestamp without time zone is
/// taken as UTC), multi-select picklists as arrays, lookups as `{"id": ..}`, every text-like type
/// as a string. NULL stays null (clears the field). `Err` names the expected type.
pub fn encode_value(data_type: &str, v: &Value) -> Result<Value, &'static str> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let text = || match v {
        Value::String(s) => Some(s.trim()),
        _ => None,
    };
    match data_type {
        "integer" | "bigint" | "long" => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            _ => text()
                .and_then(|s| s.parse::<i64>().ok())
                .map(Value::from)
                .ok_or("integer"),
        },
        "double" | "currency" | "decimal" | "percent" => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => text()
                .and_then(|s| s.parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or("number"),
        },
        "boolean" => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(Value::Bool(n.as_u64() == Some(1)))
            }
            _ => match text().map(str::to_ascii_lowercase).as_deref() {
                Some("true" | "t" | "1" | "yes") => Ok(Value::Bool(true)),
                Some("false" | "f" | "0" | "no") => Ok(Value::Bool(false)),
                _ => Err("boolean"),
            },
        },
        "date" => text()
            .and_then(|s| s.get(..10))
            .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .ok_or("date"),
        "datetime" => text().and_then(encode_datetime).ok_or("datetime"),
        "multiselectpicklist" => Ok(Value::Array(match v {
            Value::Array(items) => items
                .iter()
                .map(|i| Value::String(value_string(i)))
                .collect(),
            Value::String(s) => s
                .split(';')
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
            other => vec![Value::String(value_string(other))],
        })),
        "lookup" | "ownerlookup" | "userlookup" => match v {
            Value::Object(o) if o.contains_key("id") => Ok(v.clone()),
            Value::Object(_) | Value::Array(_) => Err("lookup id"),
            other => Ok(json!({"id": value_string(other)})),
        },
        "text" | "textarea" | "email" | "phone" | "website" | "picklist" | "autonumber" => {
            Ok(Value::String(value_string(v)))
        }
        // A type we do not know: send the JSON value as it is.
        _ => Ok(v.clone()),
    }
}

fn encode_datetime(s: &str) -> Option<Value> {
    const OUT: &str = "%Y-%m-%dT%H:%M:%S%:z";
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(Value::String(t.format(OUT).to_string()));
    }
    if let Ok(t) = chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(Value::String(t.format(OUT).to_string()));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| Value::String(t.and_utc().format(OUT).to_string()))
}

/// Maps a row to a Zoho record: the rule's transform and value map apply to the value's text,
/// then the result is encoded for the field's `data_type` (`types`, by API name). A column absent
/// from the row (unchanged TOAST) is left out, so the field keeps its value at Zoho.
pub fn to_record(
    rules: &[FieldRule],
    types: &BTreeMap<String, String>,
    row: &Row,
) -> Result<Map<String, Value>, MappingError> {
    let mut out = Map::new();
    for rule in rules {
        let Some(v) = row.get(&rule.column) else {
            continue;
        };
        let mut v = v.clone();
        if !v.is_null() && (rule.transform.is_some() || rule.map.is_some()) {
            let mut s = value_string(&v);
            if let Some(t) = rule.transform {
                s = t.apply(&s);
            }
            if let Some(map) = &rule.map {
                s = map.get(&s).cloned().ok_or_else(|| MappingError::Unmapped {
                    column: rule.column.clone(),
                    property: rule.property.clone(),
                })?;
            }
            v = Value::String(s);
        }
        let ty = types.get(&rule.property).map_or("", String::as_str);
        let encoded = encode_value(ty, &v).map_err(|kind| MappingError::BadValue {
            column: rule.column.clone(),
            property: rule.property.clone(),
            kind,
        })?;
        out.insert(rule.property.clone(), encoded);
    }
    Ok(out)
}

/// A COQL literal for a lookup value: numbers bare, anything else quoted (`'` doubled).
fn coql_literal(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => format!("'{}'", value_string(other).replace('\'', "''")),
    }
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

/// A response: status, headers, JSON body (Null when empty or not JSON).
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// One upsert record and its entry.
#[derive(Clone)]
struct Input {
    index: usize,
    record: Value,
}

/// The Zoho CRM sink.
#[derive(Debug)]
pub struct ZohoSink {
    client: reqwest::Client,
    base_url: String,
    pinned: bool,
    module: String,
    id_property: String,
    credentials: Credentials,
    fields: Vec<FieldRule>,
    on_delete: OnDelete,
    /// Field `data_type` by API name, once fetched.
    types: Option<BTreeMap<String, String>>,
}

impl ZohoSink {
    /// Builds the client (reqwest with rustls). `credentials` come from the sink's `auth`
    /// ([`Credentials::from_auth`]); Zoho access tokens last an hour, so production configs use
    /// `[sinks.oauth]`.
    pub fn new(sink: &ValidSink, credentials: Credentials) -> Result<Self, SinkError> {
        let SinkKind::Zoho { module } = &sink.kind else {
            return Err(SinkError::fatal(
                format!("sink {} is not a Zoho sink", sink.name),
                "set kind = \"zoho\"",
            ));
        };
        let Some(id_property) = sink.id_property.clone() else {
            return Err(SinkError::fatal(
                format!("sink {} has no id_property", sink.name),
                "set id_property to a unique Zoho field (e.g. Email)",
            ));
        };
        let client = http::crm_client()?;
        let base_url = sink.base_url.trim_end_matches('/').to_string();
        Ok(ZohoSink {
            client,
            pinned: base_url != ZOHO_BASE_URL,
            base_url,
            module: module.clone(),
            id_property,
            credentials,
            fields: sink.fields.clone(),
            on_delete: sink.on_delete,
            types: None,
        })
    }

    /// The module's API name.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Another client with the same settings and credentials (the access token is shared).
    pub fn sibling(&self) -> Self {
        ZohoSink {
            client: self.client.clone(),
            base_url: self.base_url.clone(),
            pinned: self.pinned,
            module: self.module.clone(),
            id_property: self.id_property.clone(),
            credentials: self.credentials.clone(),
            fields: self.fields.clone(),
            on_delete: self.on_delete,
            types: self.types.clone(),
        }
    }

    /// Field `data_type` by API name (fetched once).
    pub async fn field_types(&mut self) -> Result<BTreeMap<String, String>, SinkError> {
        self.types().await
    }

    /// One JSON request (two-way sync: COQL, watch channels, updates): the status and the
    /// JSON body (Null when empty). Failures to reach Zoho are transient; the status is left
    /// to the caller, see [`ZohoSink::refusal`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SinkError> {
        let r = self.send(method, path, body).await?;
        Ok((r.status.as_u16(), r.body))
    }

    /// The error for an answer that is not a success (classified like the sink's writes).
    pub fn refusal(&self, status: u16, body: &Value) -> SinkError {
        self.classify(&Resp {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: body.clone(),
        })
    }

    /// `GET /crm/v8/settings/fields?module=M`: the module's fields as they came.
    pub async fn fetch_fields(&self) -> Result<Vec<ZohoField>, SinkError> {
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
    /// keeps the field types the writes need, so the first batch does not read them again.
    pub async fn fetch_schema(&mut self) -> Result<BTreeMap<String, Property>, SinkError> {
        let fields = self.fetch_fields().await?;
        self.types = Some(
            fields
                .iter()
                .map(|f| (f.api_name.clone(), f.data_type.clone()))
                .collect(),
        );
        Ok(fields
            .iter()
            .map(|f| (f.api_name.clone(), f.property()))
            .collect())
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

    /// One request; a 401 with OAuth credentials drops the token and retries once.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, SinkError> {
        let token = self.credentials.access_token(&self.client).await?;
        let r = self.send_once(method.clone(), path, body, &token).await?;
        if r.status == StatusCode::UNAUTHORIZED && self.credentials.can_refresh() {
            tracing::info!(module = %self.module, "Zoho refused the access token; refreshing once");
            self.credentials.invalidate(&token).await;
            let token = self.credentials.access_token(&self.client).await?;
            return self.send_once(method, path, body, &token).await;
        }
        Ok(r)
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> Result<Resp, SinkError> {
        let api_domain = self.credentials.api_domain().await;
        let base = request_base(self.pinned, &self.base_url, api_domain.as_deref());
        let mut rb = self
            .client
            .request(method, format!("{base}{path}"))
            .header("Authorization", format!("Zoho-oauthtoken {token}"));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let what = path.split('?').next().unwrap_or(path);
        let resp = rb.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            SinkError::transient(format!("Zoho {what}: {kind}: {}", e.without_url()), None)
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| {
            SinkError::transient(
                format!("Zoho {what}: reading the response: {}", e.without_url()),
                None,
            )
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        tracing::debug!(path = what, status = status.as_u16(), "Zoho response");
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    fn scope_hint(&self) -> String {
        format!(
            "grant the OAuth client the scopes ZohoCRM.modules.{m}.ALL (or ZohoCRM.modules.ALL), \
             ZohoCRM.settings.fields.READ and ZohoCRM.coql.READ, and check the user's profile \
             may edit {m}",
            m = self.module
        )
    }

    /// Whole-request failures (401, 403, 429, 5xx, top-level error codes).
    fn classify(&self, r: &Resp) -> SinkError {
        let status = r.status.as_u16();
        let code = r.body["code"].as_str().unwrap_or("");
        match (status, code) {
            (401, _) | (_, "INVALID_TOKEN" | "AUTHENTICATION_FAILURE") => SinkError::fatal(
                format!("Zoho refused the access token ({status} {code})"),
                if self.credentials.can_refresh() {
                    format!(
                        "a freshly refreshed token was refused too: check the OAuth client and \
                         refresh token in {} and that token_url is the account's data centre",
                        self.credentials.label()
                    )
                } else {
                    format!(
                        "check the token in {} (Zoho access tokens last one hour: configure \
                         [sinks.oauth] with a refresh token instead)",
                        self.credentials.label()
                    )
                },
            ),
            (403, _) | (_, "OAUTH_SCOPE_MISMATCH" | "NO_PERMISSION") => SinkError::fatal(
                format!("Zoho denied access to {} ({status} {code})", self.module),
                self.scope_hint(),
            ),
            (_, "INVALID_MODULE") => SinkError::fatal(
                format!("Zoho does not know module {:?} ({code})", self.module),
                "set module to the module's API name (Settings > APIs > API names), e.g. Leads",
            ),
            (429, _) => {
                let credits = r.body["details"].get("credits_per_day").is_some()
                    || r.body["message"]
                        .as_str()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("credit"));
                let retry_after = http::retry_after(&r.headers);
                if credits {
                    tracing::warn!(
                        module = %self.module,
                        wait_s = CREDITS_WAIT.as_secs(),
                        "Zoho API credits exhausted; waiting for the rolling window"
                    );
                    SinkError::transient(
                        format!(
                            "Zoho API credits exhausted for the rolling 24 h window; waiting {} \
                             min before retrying (raise the org's API credits or lower the \
                             write volume)",
                            CREDITS_WAIT.as_secs() / 60
                        ),
                        Some(retry_after.unwrap_or(CREDITS_WAIT).max(CREDITS_WAIT)),
                    )
                } else {
                    tracing::info!(module = %self.module, "Zoho concurrency limit");
                    SinkError::transient(
                        format!("Zoho concurrency limit ({code})"),
                        Some(retry_after.unwrap_or(CONCURRENCY_WAIT)),
                    )
                }
            }
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

    /// Upserts `inputs`, bisecting whole-request 400s down to single poison records.
    async fn upsert(&mut self, inputs: Vec<Input>, out: &mut Outcome) -> Result<(), SinkError> {
        let path = format!("/crm/v8/{}/upsert", self.module);
        let mut work: Vec<Vec<Input>> = inputs
            .chunks(MAX_RECORDS)
            .rev()
            .map(<[_]>::to_vec)
            .collect();
        while let Some(group) = work.pop() {
            let body = json!({
                "data": group.iter().map(|i| &i.record).collect::<Vec<_>>(),
                "duplicate_check_fields": [self.id_property],
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
                    format!("Zoho will not upsert by {} ({code})", self.id_property),
                    "set id_property to a unique field, an external-id field or the module's \
                     system duplicate-check field (e.g. Email for Leads and Contacts)",
                ));
            }
            if matches!(
                code,
                "INVALID_MODULE" | "OAUTH_SCOPE_MISMATCH" | "NO_PERMISSION" | "INVALID_TOKEN"
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
                let mut first = group;
                let second = first.split_off(first.len() / 2);
                work.push(second);
                work.push(first);
            }
        }
        Ok(())
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

    /// Deletes the records whose `id_property` values are given (absent ones: nothing to do).
    async fn delete(
        &mut self,
        deletes: Vec<(usize, Value)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let idp = self.id_property.clone();
        for chunk in deletes.chunks(MAX_IN_VALUES) {
            let mut literals: Vec<String> = chunk.iter().map(|(_, v)| coql_literal(v)).collect();
            literals.dedup();
            let query = format!(
                "select id, {idp} from {} where {idp} in ({}) limit 200",
                self.module,
                literals.join(", ")
            );
            let r = self
                .send(
                    reqwest::Method::POST,
                    "/crm/v8/coql",
                    Some(&json!({"select_query": query})),
                )
                .await?;
            let mut found: Vec<(usize, String)> = Vec::new();
            match r.status.as_u16() {
                204 => {}
                200 => {
                    for row in r.body["data"].as_array().into_iter().flatten() {
                        let Some(zid) = row["id"]
                            .as_str()
                            .map(String::from)
                            .or_else(|| row["id"].as_u64().map(|n| n.to_string()))
                        else {
                            continue;
                        };
                        let got = value_string(&row[&idp]);
                        for (index, v) in chunk {
                            if value_string(v).eq_ignore_ascii_case(&got)
                                && !found.iter().any(|f| f.1 == zid)
                            {
                                found.push((*index, zid.clone()));
                            }
                        }
                    }
                }
                400 => {
                    return Err(SinkError::fatal(
                        format!(
                            "Zoho refused the record lookup for deletes: {}",
                            describe(&r.body)
                        ),
                        format!(
                            "id_property {idp} must be a field COQL can filter on; or set \
                             on_delete = \"ignore\""
                        ),
                    ));
                }
                _ => return Err(self.classify(&r)),
            }
            for part in found.chunks(MAX_RECORDS) {
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
        }
        Ok(())
    }
}

impl Sink for ZohoSink {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        let mut out = Outcome::default();
        let needs_types = batch.entries.iter().any(|e| {
            matches!(e.item.op, Op::Create | Op::Update | Op::Read)
                || e.item.op == Op::Delete && self.on_delete == OnDelete::Archive
        });
        let types = if needs_types {
            self.types().await?
        } else {
            BTreeMap::new()
        };
        let id_type = types.get(&self.id_property).map_or("", String::as_str);
        let encode_id = |id: String| {
            encode_value(id_type, &Value::String(id)).map_err(|kind| MappingError::BadValue {
                column: self.id_property.clone(),
                property: self.id_property.clone(),
                kind,
            })
        };
        let (fields, id_property) = (&self.fields, &self.id_property);
        let split = crm_batch::split(
            batch,
            self.on_delete,
            |index, row| {
                let id = encode_id(id_value(fields, id_property, row)?)?;
                let mut record = to_record(fields, &types, row)?;
                record.entry(id_property.clone()).or_insert(id);
                Ok(Input {
                    index,
                    record: Value::Object(record),
                })
            },
            |row| id_value(fields, id_property, row).and_then(encode_id),
        );
        let (upserts, deletes) = (split.upserts, split.deletes);
        out.rejected = split.rejected;
        let (n_up, n_del) = (upserts.len(), deletes.len());
        if !upserts.is_empty() {
            self.upsert(upserts, &mut out).await?;
        }
        if !deletes.is_empty() {
            self.delete(deletes, &mut out).await?;
        }
        out.rejected.sort_by_key(|r| r.index);
        out.destination_ids.sort();
        let applied: HashSet<usize> = out.destination_ids.iter().map(|(i, _)| *i).collect();
        tracing::debug!(
            module = %self.module,
            upserts = n_up,
            deletes = n_del,
            applied = applied.len(),
            rejected = out.rejected.len(),
            "Zoho batch applied"
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;
    use crate::config::sinks::Auth;
    use crate::sink::batch::{Batcher, Position};
    use crate::sink::mapping::check_schema;
    use crate::sink::test_support::event;
    use driftless_emulators::zoho::{Options, router};
    use std::time::Instant;

    async fn start(opts: Options) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        driftless_emulators::serve_for_test(router(opts)).await
    }

    fn valid_sink(base_url: &str) -> ValidSink {
        let mut status = FieldRule::new("status", "Lead_Status");
        status.map = Some(BTreeMap::from([
            ("new".into(), "Not Contacted".into()),
            ("won".into(), "Qualified".into()),
        ]));
        let mut email = FieldRule::new("email", "Email");
        email.transform = Some(crate::config::fields::Transform::Lowercase);
        ValidSink {
            name: "leads".into(),
            kind: SinkKind::Zoho {
                module: "Leads".into(),
            },
            table: TableName {
                schema: "public".into(),
                name: "customers".into(),
            },
            id_property: Some("Email".into()),
            auth: Some(Auth::Token(crate::config::SecretSource::Env(
                "ZOHO_TOKEN".into(),
            ))),
            base_url: base_url.into(),
            on_delete: OnDelete::Archive,
            fields: vec![
                email,
                FieldRule::new("last_name", "Last_Name"),
                FieldRule::new("phone", "Phone"),
                FieldRule::new("employees", "No_of_Employees"),
                FieldRule::new("revenue", "Annual_Revenue"),
                FieldRule::new("opt_out", "Email_Opt_Out"),
                status,
            ],
            batch_max_events: 100,
            batch_max_wait_ms: 1000,
            schedule: None,
            two_way: None,
        }
    }

    fn oauth(base: &str, refresh: &str) -> Credentials {
        Credentials::oauth(
            "test-client-id".into(),
            "test-client-secret".into(),
            refresh.into(),
            format!("{base}/oauth/v2/token"),
            "ZOHO_REFRESH_TOKEN",
        )
    }

    fn sink(base: &str) -> ZohoSink {
        ZohoSink::new(&valid_sink(base), oauth(base, "test-refresh-token")).unwrap()
    }

    fn batch(events: Vec<ChangeEvent>) -> Batch<ChangeEvent> {
        let mut b = Batcher::new(1000, Duration::from_secs(1));
        let now = Instant::now();
        for (i, e) in events.into_iter().enumerate() {
            let key = e
                .after
                .as_ref()
                .or(e.before.as_ref())
                .and_then(|r| r.get("email"))
                .map(|v| v.to_string().into_bytes())
                .unwrap_or_else(|| i.to_string().into_bytes());
            let at = Position {
                partition: 0,
                offset: i as i64,
            };
            b.push(key, e, at, now);
        }
        b.take().unwrap()
    }

    fn lead(email: &str, last: &str) -> ChangeEvent {
        event(
            Op::Create,
            json!({"email": email, "last_name": last, "employees": "12", "revenue": "1500.50",
                   "opt_out": "f", "status": "new"}),
        )
    }

    async fn state(base: &str) -> Value {
        reqwest::get(format!("{base}/_emulator/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn leads(base: &str) -> Vec<Value> {
        state(base).await["records"]["Leads"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn fault(base: &str, f: Value) {
        let r = reqwest::Client::new()
            .post(format!("{base}/_emulator/faults"))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn values_are_encoded_as_typed_json() {
        assert_eq!(encode_value("integer", &json!("42")), Ok(json!(42)));
        assert_eq!(encode_value("integer", &json!(7)), Ok(json!(7)));
        assert_eq!(encode_value("integer", &json!("4.5")), Err("integer"));
        assert_eq!(encode_value("double", &json!("1500.50")), Ok(json!(1500.5)));
        assert_eq!(encode_value("currency", &json!(3)), Ok(json!(3)));
        assert_eq!(encode_value("double", &json!("NaN")), Err("number"));
        assert_eq!(encode_value("boolean", &json!("t")), Ok(json!(true)));
        assert_eq!(encode_value("boolean", &json!(false)), Ok(json!(false)));
        assert_eq!(encode_value("boolean", &json!("maybe")), Err("boolean"));
        assert_eq!(
            encode_value("date", &json!("1815-12-10")),
            Ok(json!("1815-12-10"))
        );
        assert_eq!(
            encode_value("date", &json!("2026-11-27T10:15:02Z")),
            Ok(json!("2026-11-27"))
        );
        assert_eq!(encode_value("date", &json!("10/12/1815")), Err("date"));
        assert_eq!(
            encode_value("datetime", &json!("2026-11-27T10:15:02.123456Z")),
            Ok(json!("2026-11-27T10:15:02+00:00"))
        );
        assert_eq!(
            encode_value("datetime", &json!("2026-11-27T10:15:02+05:30")),
            Ok(json!("2026-11-27T10:15:02+05:30")),
            "the offset is kept"
        );
        assert_eq!(
            encode_value("datetime", &json!("2026-11-27 10:15:02.5")),
            Ok(json!("2026-11-27T10:15:02+00:00")),
            "timestamp without time zone: UTC"
        );
        assert_eq!(
            encode_value("datetime", &json!("yesterday")),
            Err("datetime")
        );
        assert_eq!(
            encode_value("multiselectpicklist", &json!("a;b")),
            Ok(json!(["a", "b"]))
        );
        assert_eq!(
            encode_value("multiselectpicklist", &json!([1, "x"])),
            Ok(json!(["1", "x"]))
        );
        assert_eq!(
            encode_value("lookup", &json!(123)),
            Ok(json!({"id": "123"}))
        );
        assert_eq!(encode_value("text", &json!(12.50)), Ok(json!("12.5")));
        assert_eq!(encode_value("phone", &json!("+1 555")), Ok(json!("+1 555")));
        assert_eq!(encode_value("integer", &Value::Null), Ok(Value::Null));
        assert_eq!(coql_literal(&json!("o'neil@x.io")), "'o''neil@x.io'");
        assert_eq!(coql_literal(&json!(12)), "12");
    }

    #[test]
    fn records_apply_transforms_maps_and_types() {
        let types: BTreeMap<String, String> = [
            ("Email", "email"),
            ("Last_Name", "text"),
            ("No_of_Employees", "integer"),
            ("Annual_Revenue", "double"),
            ("Email_Opt_Out", "boolean"),
            ("Lead_Status", "picklist"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let rules = valid_sink("http://x").fields;
        let row = json!({"email": "Ada@X.io", "last_name": "Lovelace", "employees": "12",
            "revenue": "1500.50", "opt_out": "f", "status": "won", "phone": null});
        let rec = to_record(&rules, &types, row.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(rec),
            json!({"Email": "ada@x.io", "Last_Name": "Lovelace", "No_of_Employees": 12,
                "Annual_Revenue": 1500.5, "Email_Opt_Out": false, "Lead_Status": "Qualified",
                "Phone": null})
        );
        let bad = json!({"employees": "a dozen"});
        let e = to_record(&rules, &types, bad.as_object().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column employees: not a valid integer for property No_of_Employees"
        );
        let unmapped = json!({"status": "lost"});
        assert!(matches!(
            to_record(&rules, &types, unmapped.as_object().unwrap()),
            Err(MappingError::Unmapped { .. })
        ));
    }

    #[test]
    fn requests_follow_api_domain_unless_base_url_is_pinned() {
        assert_eq!(
            request_base(false, ZOHO_BASE_URL, Some("https://www.zohoapis.eu/")),
            "https://www.zohoapis.eu"
        );
        assert_eq!(request_base(false, ZOHO_BASE_URL, None), ZOHO_BASE_URL);
        assert_eq!(
            request_base(true, "http://127.0.0.1:1", Some("https://www.zohoapis.eu")),
            "http://127.0.0.1:1"
        );
        let s = ZohoSink::new(&valid_sink(ZOHO_BASE_URL), "t".into()).unwrap();
        assert!(!s.pinned);
        let s = ZohoSink::new(&valid_sink("http://127.0.0.1:1/"), "t".into()).unwrap();
        assert!(s.pinned && s.base_url == "http://127.0.0.1:1");
    }

    #[tokio::test]
    async fn upsert_creates_then_updates_one_record_per_key_without_workflows() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        let out = s
            .apply(&batch(vec![lead("a@x.io", "Ada"), lead("b@x.io", "Bob")]))
            .await
            .unwrap();
        assert!(out.rejected.is_empty(), "{out:?}");
        assert_eq!(out.destination_ids.len(), 2);
        let mut e = lead("A@x.io", "Adele");
        e.op = Op::Update;
        let out2 = s.apply(&batch(vec![e])).await.unwrap();
        assert_eq!(
            out2.destination_ids,
            vec![(0, out.destination_ids[0].1.clone())]
        );
        let recs = leads(&base).await;
        assert_eq!(recs.len(), 2);
        let a = recs.iter().find(|r| r["Email"] == "a@x.io").unwrap();
        assert_eq!(a["Last_Name"], "Adele");
        assert_eq!(a["No_of_Employees"], 12);
        assert_eq!(a["Annual_Revenue"], 1500.5);
        assert_eq!(a["Email_Opt_Out"], false);
        assert_eq!(a["Lead_Status"], "Not Contacted");
        let st = state(&base).await;
        assert_eq!(st["workflow_runs"], 0, "trigger: [] suppresses automation");
        let calls = st["write_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert!(
            calls
                .iter()
                .all(|c| c["trigger"] == json!([]) && c["op"] == "upsert")
        );
    }

    #[tokio::test]
    async fn deletes_remove_and_absent_deletes_succeed() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        s.apply(&batch(vec![lead("a@x.io", "Ada"), lead("b@x.io", "Bob")]))
            .await
            .unwrap();
        let del = |email: &str| event(Op::Delete, json!({"email": email}));
        let out = s
            .apply(&batch(vec![del("A@x.io"), del("ghost@x.io")]))
            .await
            .unwrap();
        assert!(out.rejected.is_empty(), "{out:?}");
        assert_eq!(out.destination_ids.len(), 1);
        assert_eq!(out.destination_ids[0].0, 0);
        let recs = leads(&base).await;
        let a = recs.iter().find(|r| r["Email"] == "a@x.io").unwrap();
        let b = recs.iter().find(|r| r["Email"] == "b@x.io").unwrap();
        assert_eq!(
            (a["$deleted"].clone(), b["$deleted"].clone()),
            (json!(true), json!(false))
        );
        // Replaying the delete is harmless.
        let out = s.apply(&batch(vec![del("a@x.io")])).await.unwrap();
        assert_eq!(out, Outcome::default());
        // on_delete = ignore sends nothing.
        let mut cfg = valid_sink(&base);
        cfg.on_delete = OnDelete::Ignore;
        let mut s = ZohoSink::new(&cfg, "test-access-token".into()).unwrap();
        let before = state(&base).await["request_counts"].clone();
        let out = s.apply(&batch(vec![del("b@x.io")])).await.unwrap();
        assert_eq!(out, Outcome::default());
        assert_eq!(state(&base).await["request_counts"], before);
    }

    #[tokio::test]
    async fn per_record_errors_are_rejected_while_others_apply() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        let no_last_name = event(Op::Create, json!({"email": "b@x.io"}));
        let bad_phone = event(
            Op::Create,
            json!({"email": "c@x.io", "last_name": "C", "phone": "call me"}),
        );
        let bad_int = event(
            Op::Create,
            json!({"email": "d@x.io", "last_name": "D", "employees": "many"}),
        );
        let out = s
            .apply(&batch(vec![
                lead("a@x.io", "Ada"),
                no_last_name,
                bad_phone,
                bad_int,
            ]))
            .await
            .unwrap();
        let rejected: Vec<(usize, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.category.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (1, "MANDATORY_NOT_FOUND"),
                (2, "INVALID_DATA"),
                (3, "MAPPING")
            ]
        );
        assert!(out.rejected[1].message.contains("field Phone"), "{out:?}");
        assert!(
            !out.rejected[1].message.contains("call me"),
            "no row values"
        );
        assert_eq!(out.destination_ids.len(), 1);
        assert_eq!(leads(&base).await.len(), 1);
    }

    #[tokio::test]
    async fn whole_request_400_is_bisected_to_the_poison_record() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        s.types().await.unwrap();
        // Three whole-request 400s: [a b c d] → [a b] → [a] is poison; [b], [c d] apply.
        fault(&base, json!({"path": "/upsert", "status": 400, "count": 3})).await;
        let out = s
            .apply(&batch(vec![
                lead("a@x.io", "A"),
                lead("b@x.io", "B"),
                lead("c@x.io", "C"),
                lead("d@x.io", "D"),
            ]))
            .await
            .unwrap();
        assert_eq!(
            out.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(
            out.destination_ids.iter().map(|d| d.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(leads(&base).await.len(), 3);
        let st = state(&base).await;
        assert_eq!(st["request_counts"]["POST /crm/v8/Leads/upsert"], 5);
    }

    #[tokio::test]
    async fn concurrency_429_credits_and_5xx_are_transient() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        let b = batch(vec![lead("a@x.io", "Ada")]);
        fault(&base, json!({"path": "/upsert", "status": 429})).await;
        match s.apply(&b).await {
            Err(SinkError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(CONCURRENCY_WAIT))
            }
            other => panic!("{other:?}"),
        }
        fault(&base, json!({"path": "/upsert", "status": 503})).await;
        assert!(matches!(
            s.apply(&b).await,
            Err(SinkError::Transient { .. })
        ));
        fault(&base, json!({"path": "/upsert", "fail_after_write": true})).await;
        assert!(matches!(
            s.apply(&b).await,
            Err(SinkError::Transient { .. })
        ));
        let out = s.apply(&b).await.unwrap();
        assert_eq!(out.destination_ids.len(), 1);
        assert_eq!(
            leads(&base).await.len(),
            1,
            "the retry converged on one record"
        );

        // The real concurrency gate: another client holds the only slot of the token.
        let base = start(Options {
            concurrency_limit: 1,
            ..Options::default()
        })
        .await;
        let mut s = ZohoSink::new(&valid_sink(&base), "test-access-token".into()).unwrap();
        s.types().await.unwrap();
        let path = "/crm/v8/Leads";
        fault(
            &base,
            json!({"path": path, "method": "GET", "delay_ms": 800}),
        )
        .await;
        let slow = tokio::spawn(
            reqwest::Client::new()
                .get(format!("{base}{path}"))
                .header("Authorization", "Zoho-oauthtoken test-access-token")
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        match s.apply(&b).await {
            Err(SinkError::Transient {
                retry_after,
                message,
            }) => {
                assert_eq!(retry_after, Some(CONCURRENCY_WAIT));
                assert!(message.contains("concurrency"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        slow.await.unwrap().unwrap();
        assert_eq!(s.apply(&b).await.unwrap().destination_ids.len(), 1);
        assert_eq!(state(&base).await["rejected_429"], 1);

        // Credits: token refresh is free, fields + one upsert use the budget of 2.
        let base = start(Options {
            credits_per_day: 2,
            ..Options::default()
        })
        .await;
        let mut s = sink(&base);
        s.apply(&b).await.unwrap();
        match s.apply(&b).await {
            Err(SinkError::Transient {
                retry_after,
                message,
            }) => {
                assert_eq!(retry_after, Some(CREDITS_WAIT));
                assert!(message.contains("credits exhausted"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn token_expiry_refreshes_and_converges() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        s.apply(&batch(vec![lead("a@x.io", "Ada")])).await.unwrap();
        fault(&base, json!({"path": "/upsert", "expire_tokens": true})).await;
        let mut e = lead("a@x.io", "Adele");
        e.op = Op::Update;
        let out = s
            .apply(&batch(vec![e, lead("b@x.io", "Bob")]))
            .await
            .unwrap();
        assert!(out.rejected.is_empty(), "{out:?}");
        let recs = leads(&base).await;
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().any(|r| r["Last_Name"] == "Adele"));
        let st = state(&base).await;
        assert_eq!(st["request_counts"]["POST /oauth/v2/token"], 2);
        assert_eq!(st["request_counts"]["POST /crm/v8/Leads/upsert"], 3);

        // A static token that expires cannot be refreshed: fatal, pointing at OAuth.
        let mut s = ZohoSink::new(&valid_sink(&base), "test-access-token".into()).unwrap();
        fault(&base, json!({"expire_tokens": true})).await;
        match s.apply(&batch(vec![lead("c@x.io", "C")])).await {
            Err(SinkError::Fatal { hint, .. }) => assert!(hint.contains("[sinks.oauth]"), "{hint}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_refresh_token_is_fatal_with_hint() {
        let base = start(Options::default()).await;
        let mut s = ZohoSink::new(&valid_sink(&base), oauth(&base, "revoked")).unwrap();
        match s.apply(&batch(vec![lead("a@x.io", "Ada")])).await {
            Err(SinkError::Fatal { message, hint }) => {
                assert!(message.contains("invalid_code"), "{message}");
                assert!(hint.contains("ZOHO_REFRESH_TOKEN"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        assert!(leads(&base).await.is_empty());
    }

    #[tokio::test]
    async fn invalid_module_and_non_unique_id_property_are_fatal() {
        let base = start(Options::default()).await;
        let mut cfg = valid_sink(&base);
        cfg.kind = SinkKind::Zoho {
            module: "Leeds".into(),
        };
        let mut s = ZohoSink::new(&cfg, oauth(&base, "test-refresh-token")).unwrap();
        match s.apply(&batch(vec![lead("a@x.io", "Ada")])).await {
            Err(SinkError::Fatal { message, .. }) => assert!(message.contains("Leeds")),
            other => panic!("{other:?}"),
        }
        let mut cfg = valid_sink(&base);
        cfg.id_property = Some("Last_Name".into());
        let mut s = ZohoSink::new(&cfg, oauth(&base, "test-refresh-token")).unwrap();
        match s.apply(&batch(vec![lead("a@x.io", "Ada")])).await {
            Err(SinkError::Fatal { hint, .. }) => assert!(hint.contains("unique"), "{hint}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn schema_check_refuses_unknown_read_only_and_bad_picklist_fields() {
        let base = start(Options::default()).await;
        let mut s = sink(&base);
        let schema = s.fetch_schema().await.unwrap();
        assert!(schema["Email"].unique);
        assert!(!schema["Last_Name"].unique);
        assert!(schema["Created_Time"].read_only);
        assert_eq!(schema["No_of_Employees"].kind, PropertyType::Number);
        assert_eq!(schema["Lead_Status"].kind, PropertyType::Enumeration);
        assert!(schema["Lead_Status"].options.contains(&"Qualified".into()));
        let mut rules = valid_sink(&base).fields;
        assert!(check_schema("sinks[0]", &rules, "Email", &schema).is_empty());
        let mut bad_status = FieldRule::new("status", "Lead_Status");
        bad_status.map = Some(BTreeMap::from([("x".into(), "Bogus".into())]));
        rules = vec![
            FieldRule::new("nope", "No_Such_Field"),
            FieldRule::new("created", "Created_Time"),
            bad_status,
        ];
        let problems = check_schema("sinks[0]", &rules, "First_Name", &schema);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sinks[0].id_property",
                "sinks[0].fields.nope",
                "sinks[0].fields.created",
                "sinks[0].fields.status"
            ],
            "{problems:#?}"
        );
        // Accounts: the system duplicate-check field may be the id property.
        let mut cfg = valid_sink(&base);
        cfg.kind = SinkKind::Zoho {
            module: "Accounts".into(),
        };
        let mut s = ZohoSink::new(&cfg, "test-access-token".into()).unwrap();
        assert!(s.fetch_schema().await.unwrap()["Account_Name"].unique);
    }
}
