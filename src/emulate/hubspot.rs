//! In-memory emulator of the HubSpot CRM v3 API (`driftless emulate hubspot`).
//!
//! Implements the contract summarised in `shared/docs/saas-contracts.md` §1, checked against the
//! §4 "HubSpot emulator" checklist:
//!
//! - **H1** Bearer auth; 401 `INVALID_AUTHENTICATION` / `EXPIRED_AUTHENTICATION` bodies.
//! - **H2** `POST /oauth/v1/token` and `/oauth/v3/token` (form-encoded, `refresh_token` grant).
//! - **H3** sliding 10 s window per token, 429 `TEN_SECONDLY_ROLLING` body.
//! - **H4** daily cap per private-app token (UTC midnight reset), 429 `DAILY`.
//! - **H5** `X-HubSpot-RateLimit-*` headers (no `-Daily*` for OAuth tokens) and
//!   `X-HubSpot-Correlation-Id` on every response.
//! - **H6** search has its own per-second limiter (429 `SECONDLY`), no rate-limit headers.
//! - **H7** batch size limits (100; 50 for batch/read with `propertiesWithHistory`).
//! - **H8** batch/create: 409 CONFLICT on an existing unique value, 207 when every input has an
//!   `objectWriteTraceId`.
//! - **H9** batch/upsert 200/207 shape with `new`, `status`, timestamps; archive 204; create 201.
//! - **H10** `idProperty` must be unique (`email` for contacts, `hasUniqueValue`), never
//!   `hs_object_id`.
//! - **H11** two inputs resolving to the same record → 400 for the whole batch.
//! - **H12** unknown / read-only properties and type-invalid values are per-input errors (207, or
//!   400 when nothing succeeded); a non-string value rejects the whole request (400).
//! - **H13** `lastmodifieddate` / `hs_lastmodifieddate`, `updatedAt` and per-property history
//!   (`sourceType`/`sourceId`/`updatedByUserId`: `INTEGRATION` + [`Options::app_source_id`] for
//!   API writes, `CRM_UI` + `userId:N` for emulated UI edits).
//! - **H14** search: `total`, offset `after`, `limit` ≤ 200, 10 000 cap, archived excluded.
//! - **H15** filter-group limits (5 groups / 10 per group / 25 total).
//! - **H16** properties API with seeded schemas.
//! - **H17** HubSpot error body everywhere, correlation id mirrored in the header.
//! - **H18** webhooks: a background dispatcher POSTs JSON arrays of ≤ `max_batch` events
//!   (`{contact,company,deal}.{creation,propertyChange,deletion}`, with `eventId`,
//!   `subscriptionId`, `portalId`, `appId`, `occurredAt`, `subscriptionType`, `attemptNumber`,
//!   `objectId`, `propertyName`/`propertyValue` or `changeFlag`, `changeSource`, `sourceId`)
//!   signed with `X-HubSpot-Signature` (v1, `X-HubSpot-Signature-Version: v1`),
//!   `X-HubSpot-Signature-v3` and `X-HubSpot-Request-Timestamp`
//!   ([`crate::destinations::hubspot::signature`]). Events are emitted for exactly the values a write
//!   changed (a no-op write emits nothing); values set at creation are `propertyChange`s too.
//!   One request at a time (`maxConcurrentRequests` = 1).
//! - **H19** retries on connect failure, timeout or any status outside {2xx, 400, 401, 403, 404,
//!   405}, up to `max_retries`, backing off `retry_base_ms · 2^(n-1)` (or `Retry-After` seconds
//!   on a 429), with `attemptNumber` counting up; test knobs shuffle the order, deliver every nth
//!   event twice or drop it.
//! - **H20** soft delete (`DELETE`, batch/archive) emitting `*.deletion`, `?archived=true` reads.
//!
//! Deliberate simplifications: no search index lag, no merge, gdpr-delete or restore (so no
//! `*.merge`, `*.restore` or `contact.privacyDeletion` events), no association events, one
//! webhook subscription (app) at a time, no webhook settings/subscriptions API (configure over
//! `/_emulator/webhooks`); an upsert whose unique value only matches an archived record creates
//! a new record (the archived one stays archived); a write that changes no value does not bump
//! `lastmodifieddate`; the daily cap resets at UTC midnight; the list endpoint's `after` is the
//! last record id. The `reset_connection` fault unwinds the connection task with
//! `std::panic::resume_unwind` (no panic hook, no log noise): hyper drops the socket without
//! writing a response, so the client sees the connection closed (FIN; a RST only if unread
//! request bytes remain) — axum offers no true TCP reset.
//!
//! Test-control endpoints (not part of HubSpot): `GET /_emulator/state`, `POST /_emulator/reset`
//! (also removes the webhook subscription), `POST /_emulator/faults`;
//! `POST|GET|DELETE /_emulator/webhooks` (subscription config, delivery stats; see
//! `HookConfig`); `POST /_emulator/objects/{type}` (create), `POST
//! /_emulator/objects/{type}/{id}/edit` and `.../{id}/archive`, each with optional
//! `{"properties": {..}, "userId": N}`: writes "in the HubSpot UI" (`CRM_UI`, `userId:N`,
//! default user 1) with history, last-modified bump and webhooks, bypassing auth and limits.

#![allow(clippy::result_large_err)] // handlers return ready-made error `Response`s

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

/// Emulator options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Static private-app tokens accepted as `Authorization: Bearer <token>`.
    pub tokens: Vec<String>,
    /// Refresh tokens accepted by `POST /oauth/v1/token` and `/oauth/v3/token`.
    pub refresh_tokens: Vec<String>,
    /// Lifetime of OAuth access tokens (`expires_in`).
    pub oauth_token_ttl: Duration,
    /// Requests allowed per token in one rolling window (HubSpot: 100 / 190 / 250).
    pub burst_limit: u32,
    /// Length of the rolling window (HubSpot: 10 s).
    pub burst_window: Duration,
    /// Requests allowed per private-app token per UTC day (HubSpot: 250 000+).
    pub daily_limit: u64,
    /// Search requests allowed per token per second (HubSpot: 5).
    pub search_per_second: u32,
    /// Maximum inputs per batch request.
    pub max_batch_inputs: usize,
    /// Hub (portal) id reported by the OAuth endpoint.
    pub hub_id: u64,
    /// `sourceId` recorded in property history for API writes (the writing app).
    pub app_source_id: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tokens: vec!["test-token".into()],
            refresh_tokens: vec!["test-refresh-token".into()],
            oauth_token_ttl: Duration::from_secs(1800),
            burst_limit: 100,
            burst_window: Duration::from_secs(10),
            daily_limit: 250_000,
            search_per_second: 5,
            max_batch_inputs: 100,
            hub_id: 62515,
            app_source_id: "driftless".into(),
        }
    }
}

/// The emulator's HTTP routes; all state lives behind an `Arc<Mutex<..>>` inside the router.
pub fn router(options: Options) -> axum::Router {
    let shared = Arc::new(Mutex::new(Inner::new(options)));
    axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { handle(shared, method, uri, headers, body).await }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PType {
    Str,
    Number,
    Date,
    DateTime,
    Enumeration,
    Bool,
}

#[derive(Clone, Debug)]
struct PropDef {
    name: &'static str,
    label: &'static str,
    ptype: PType,
    field_type: &'static str,
    options: Vec<&'static str>,
    unique: bool,
    read_only: bool,
}

#[derive(Clone, Debug)]
struct Hist {
    value: String,
    timestamp: DateTime<Utc>,
    source_type: &'static str,
    source_id: String,
    user_id: Option<u64>,
}

#[derive(Clone, Debug)]
struct Record {
    id: u64,
    props: BTreeMap<String, String>,
    history: BTreeMap<String, Vec<Hist>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    archived: bool,
    archived_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
struct Fault {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    reset_connection: bool,
    #[serde(default)]
    fail_after_write: bool,
    #[serde(default)]
    expire_tokens: bool,
}

struct OauthToken {
    expires_at: DateTime<Utc>,
}

struct Inner {
    opts: Options,
    objects: BTreeMap<&'static str, BTreeMap<u64, Record>>,
    /// Unique-value index of the *live* records: type → unique property → value → record id.
    /// Maintained by `write_as` and `archive` (the only writers of `props` / `archived`), so
    /// lookups by `idProperty` cost O(1) instead of a scan of every record. Archived records are
    /// not indexed: they never match an upsert, and `?archived=true` reads scan.
    unique: HashMap<&'static str, HashMap<String, HashMap<String, u64>>>,
    next_id: u64,
    oauth: HashMap<String, OauthToken>,
    expired_static: bool,
    burst: HashMap<String, VecDeque<Instant>>,
    secondly: HashMap<String, VecDeque<Instant>>,
    daily: HashMap<String, (NaiveDate, u64)>,
    arrivals: VecDeque<Instant>,
    max_in_window: usize,
    total_requests: u64,
    rate_limited: u64,
    by_path: BTreeMap<String, u64>,
    faults: VecDeque<Fault>,
    hooks: Option<Hooks>,
    next_event_id: u64,
}

const TYPES: [&str; 3] = ["contacts", "companies", "deals"];

impl Inner {
    fn new(opts: Options) -> Self {
        Inner {
            opts,
            objects: TYPES.iter().map(|t| (*t, BTreeMap::new())).collect(),
            unique: TYPES.iter().map(|t| (*t, HashMap::new())).collect(),
            next_id: 1001,
            oauth: HashMap::new(),
            expired_static: false,
            burst: HashMap::new(),
            secondly: HashMap::new(),
            daily: HashMap::new(),
            arrivals: VecDeque::new(),
            max_in_window: 0,
            total_requests: 0,
            rate_limited: 0,
            by_path: BTreeMap::new(),
            faults: VecDeque::new(),
            hooks: None,
            next_event_id: 1,
        }
    }
}

fn type_id(t: &str) -> &'static str {
    match t {
        "contacts" => "0-1",
        "companies" => "0-2",
        _ => "0-3",
    }
}

fn modified_prop(t: &str) -> &'static str {
    if t == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

fn p(name: &'static str, label: &'static str, ptype: PType) -> PropDef {
    let field_type = match ptype {
        PType::Str => "text",
        PType::Number => "number",
        PType::Date => "date",
        PType::DateTime => "date",
        PType::Enumeration => "select",
        PType::Bool => "booleancheckbox",
    };
    PropDef {
        name,
        label,
        ptype,
        field_type,
        options: vec![],
        unique: false,
        read_only: false,
    }
}

/// The seeded property schema of an object type (built once; unknown types get the deals one).
fn schema(t: &str) -> &'static [PropDef] {
    static SCHEMAS: OnceLock<[Vec<PropDef>; 3]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| TYPES.map(build_schema));
    &all[TYPES.iter().position(|x| *x == t).unwrap_or(2)]
}

fn build_schema(t: &str) -> Vec<PropDef> {
    let ro = |mut d: PropDef| {
        d.read_only = true;
        d
    };
    let uniq = |mut d: PropDef| {
        d.unique = true;
        d
    };
    let en = |mut d: PropDef, o: &[&'static str]| {
        d.options = o.to_vec();
        d
    };
    let mut v = vec![
        ro(p("hs_object_id", "Record ID", PType::Number)),
        ro(p("createdate", "Create Date", PType::DateTime)),
        uniq(p("pg_external_id", "Postgres external id", PType::Str)),
    ];
    match t {
        "contacts" => v.extend([
            ro(p("lastmodifieddate", "Last Modified Date", PType::DateTime)),
            uniq(p("email", "Email", PType::Str)),
            p("firstname", "First Name", PType::Str),
            p("lastname", "Last Name", PType::Str),
            p("phone", "Phone Number", PType::Str),
            p("company", "Company Name", PType::Str),
            en(
                p("lifecyclestage", "Lifecycle Stage", PType::Enumeration),
                &[
                    "subscriber",
                    "lead",
                    "marketingqualifiedlead",
                    "salesqualifiedlead",
                    "opportunity",
                    "customer",
                    "evangelist",
                    "other",
                ],
            ),
            p("date_of_birth", "Date of birth", PType::Date),
            p("annualrevenue", "Annual Revenue", PType::Number),
            p("is_vip", "VIP", PType::Bool),
        ]),
        "companies" => v.extend([
            ro(p(
                "hs_lastmodifieddate",
                "Last Modified Date",
                PType::DateTime,
            )),
            p("name", "Company name", PType::Str),
            p("domain", "Company Domain Name", PType::Str),
            en(
                p("industry", "Industry", PType::Enumeration),
                &["COMPUTER_SOFTWARE", "FINANCIAL_SERVICES", "RETAIL", "OTHER"],
            ),
            p("numberofemployees", "Number of Employees", PType::Number),
            p("annualrevenue", "Annual Revenue", PType::Number),
        ]),
        _ => v.extend([
            ro(p(
                "hs_lastmodifieddate",
                "Last Modified Date",
                PType::DateTime,
            )),
            p("dealname", "Deal Name", PType::Str),
            p("amount", "Amount", PType::Number),
            en(
                p("dealstage", "Deal Stage", PType::Enumeration),
                &[
                    "appointmentscheduled",
                    "qualifiedtobuy",
                    "presentationscheduled",
                    "decisionmakerboughtin",
                    "contractsent",
                    "closedwon",
                    "closedlost",
                ],
            ),
            en(p("pipeline", "Pipeline", PType::Enumeration), &["default"]),
            p("closedate", "Close Date", PType::DateTime),
        ]),
    }
    v
}

fn default_props(t: &str) -> &'static [&'static str] {
    match t {
        "contacts" => &[
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname",
        ],
        "companies" => &[
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name",
        ],
        _ => &[
            "amount",
            "closedate",
            "createdate",
            "dealname",
            "dealstage",
            "hs_lastmodifieddate",
            "hs_object_id",
            "pipeline",
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn json_resp(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

fn err_body(category: &str, message: &str) -> Value {
    json!({"status": "error", "message": message, "correlationId": uuid(), "category": category})
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    json_resp(status, &err_body(category, message))
}

fn rate_limit_resp(policy: &str, message: &str) -> Response {
    json_resp(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
                "correlationId": uuid(), "policyName": policy, "requestId": uuid()}),
    )
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(q) = uri.query() {
        for (k, v) in parse_form(q) {
            m.insert(k, v);
        }
    }
    m
}

/// `application/x-www-form-urlencoded` pairs (also query strings).
fn parse_form(s: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

fn csv(q: &HashMap<String, String>, key: &str) -> Option<Vec<String>> {
    q.get(key).map(|s| {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    })
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    })
}

/// Parses a timestamp (epoch ms or ISO-8601 / `YYYY-MM-DD`) into epoch ms.
fn to_ms(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// Validates and normalises `value` for `def`; `Err((code, message))` when invalid.
fn normalise(def: &PropDef, value: &str) -> Result<String, (&'static str, String)> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let bad = |code: &'static str, what: &str| {
        Err((
            code,
            format!("{value:?} was not a valid {what}. Property: {}", def.name),
        ))
    };
    match def.ptype {
        PType::Str => Ok(value.to_string()),
        PType::Number => match value.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(value.to_string()),
            _ => bad("INVALID_DECIMAL", "number"),
        },
        PType::Bool => match value {
            "true" | "false" => Ok(value.to_string()),
            _ => bad("INVALID_BOOLEAN", "boolean"),
        },
        PType::Enumeration => {
            if def.options.contains(&value) {
                Ok(value.to_string())
            } else {
                Err((
                    "INVALID_OPTION",
                    format!(
                        "{value} was not one of the allowed options: {:?}. Property: {}",
                        def.options, def.name
                    ),
                ))
            }
        }
        PType::Date => {
            if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
                return Ok(d.format("%Y-%m-%d").to_string());
            }
            match value
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            {
                Some(t) if t.timestamp_millis() % 86_400_000 == 0 => {
                    Ok(t.format("%Y-%m-%d").to_string())
                }
                _ => bad("INVALID_DATE", "date (midnight UTC epoch ms or YYYY-MM-DD)"),
            }
        }
        PType::DateTime => {
            if let Ok(t) = DateTime::parse_from_rfc3339(value) {
                return Ok(iso(t.with_timezone(&Utc)));
            }
            match value
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            {
                Some(t) => Ok(iso(t)),
                None => bad("INVALID_DATETIME", "datetime"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request pipeline

enum FaultAction {
    None,
    Respond(Response),
    Reset,
    FailAfterWrite,
}

async fn handle(
    shared: Arc<Mutex<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path.starts_with("/_emulator/") {
        let mut r = control(&shared, &method, &path, &body);
        add_corr(&mut r);
        return r;
    }
    // Faults: pick the first queued fault matching this path.
    let (delay, action) = {
        let mut st = shared.lock().unwrap();
        take_fault(&mut st, &path)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let fail_after_write = match action {
        FaultAction::Respond(mut r) => {
            add_corr(&mut r);
            return r;
        }
        FaultAction::Reset => {
            // Unwind the connection task without invoking the panic hook: hyper drops the
            // socket and the client sees the connection closed with no response.
            std::panic::resume_unwind(Box::new("emulated connection reset"));
        }
        FaultAction::FailAfterWrite => true,
        FaultAction::None => false,
    };
    let mut st = shared.lock().unwrap();
    let mut resp = process(&mut st, &method, &uri, &headers, &body);
    drop(st);
    if fail_after_write {
        resp = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error",
        );
    }
    add_corr(&mut resp);
    resp
}

fn add_corr(r: &mut Response) {
    let id = uuid();
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-hubspot-correlation-id", v);
    }
}

fn take_fault(st: &mut Inner, path: &str) -> (Option<Duration>, FaultAction) {
    let Some(idx) = st
        .faults
        .iter()
        .position(|f| f.path.as_deref().is_none_or(|p| path.contains(p)))
    else {
        return (None, FaultAction::None);
    };
    let f = st.faults[idx].clone();
    let remaining = f.count.unwrap_or(1).saturating_sub(1);
    if remaining == 0 {
        st.faults.remove(idx);
    } else {
        st.faults[idx].count = Some(remaining);
    }
    let delay = f.delay_ms.map(Duration::from_millis);
    if f.expire_tokens {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for t in st.oauth.values_mut() {
            t.expires_at = t.expires_at.min(past);
        }
        st.expired_static = true;
    }
    let action = if f.reset_connection {
        FaultAction::Reset
    } else if f.fail_after_write {
        FaultAction::FailAfterWrite
    } else if let Some(s) = f.status {
        let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        FaultAction::Respond(if s == 429 {
            rate_limit_resp(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            )
        } else {
            let cat = if s >= 500 {
                "INTERNAL_ERROR"
            } else {
                "VALIDATION_ERROR"
            };
            error(code, cat, &format!("injected fault {s}"))
        })
    } else {
        FaultAction::None
    };
    (delay, action)
}

fn control(shared: &Arc<Mutex<Inner>>, method: &Method, path: &str, body: &Bytes) -> Response {
    let mut st = shared.lock().unwrap();
    match (method.as_str(), path) {
        ("GET", "/_emulator/state") => {
            let mut objects = Map::new();
            for (t, recs) in &st.objects {
                let list: Vec<Value> = recs
                    .values()
                    .map(|r| {
                        let mut v = render(r, None, Some(&[]));
                        v["propertiesWithHistory"] = history_json(r, None);
                        v
                    })
                    .collect();
                objects.insert(t.to_string(), Value::Array(list));
            }
            json_resp(
                StatusCode::OK,
                &json!({
                    "objects": objects,
                    "requests": {
                        "total": st.total_requests,
                        "rateLimited": st.rate_limited,
                        "maxInAnyWindow": st.max_in_window,
                        "byPath": st.by_path,
                    },
                    "pendingFaults": st.faults.len(),
                }),
            )
        }
        ("POST", "/_emulator/reset") => {
            stop_hooks(&mut st);
            let opts = st.opts.clone();
            *st = Inner::new(opts);
            empty(StatusCode::NO_CONTENT)
        }
        ("POST", "/_emulator/faults") => {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string());
                }
            };
            let list = match v {
                Value::Array(a) => a,
                Value::Object(mut o) => match o.remove("faults") {
                    Some(Value::Array(a)) => a,
                    _ => vec![Value::Object(o)],
                },
                _ => vec![],
            };
            for f in list {
                match serde_json::from_value::<Fault>(f) {
                    Ok(f) => st.faults.push_back(f),
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string());
                    }
                }
            }
            json_resp(StatusCode::OK, &json!({"pendingFaults": st.faults.len()}))
        }
        ("POST", "/_emulator/webhooks") => configure_hooks(shared, &mut st, body),
        ("GET", "/_emulator/webhooks") => match &st.hooks {
            Some(h) => json_resp(StatusCode::OK, &hooks_json(h)),
            None => error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "no webhook subscription",
            ),
        },
        ("DELETE", "/_emulator/webhooks") => {
            stop_hooks(&mut st);
            empty(StatusCode::NO_CONTENT)
        }
        ("POST", p) if p.starts_with("/_emulator/objects/") => {
            let segs: Vec<&str> = p["/_emulator/objects/".len()..]
                .trim_end_matches('/')
                .split('/')
                .collect();
            let Some(t) = object_type(segs[0]) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "unknown object type",
                );
            };
            match &segs[1..] {
                [] => ui_write(&mut st, t, None, "create", body),
                [id, op @ ("edit" | "archive")] => ui_write(&mut st, t, Some(id), op, body),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "OBJECT_NOT_FOUND",
                    "unknown emulator endpoint",
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "unknown emulator endpoint",
        ),
    }
}

/// Auth, rate limiting and dispatch of one HubSpot request.
fn process(
    st: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path();
    let now_i = Instant::now();
    st.total_requests += 1;
    *st.by_path.entry(path.to_string()).or_default() += 1;
    // Max number of requests observed in any window.
    let window = st.opts.burst_window;
    st.arrivals.push_back(now_i);
    while st
        .arrivals
        .front()
        .is_some_and(|t| now_i.duration_since(*t) >= window)
    {
        st.arrivals.pop_front();
    }
    st.max_in_window = st.max_in_window.max(st.arrivals.len());

    if path == "/oauth/v1/token" || path == "/oauth/v3/token" {
        return oauth_token(st, method, body);
    }
    // H1: authentication.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    let now = Utc::now();
    let is_oauth = if st.opts.tokens.contains(&token) {
        if st.expired_static {
            return error(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                "The OAuth token used to make this call expired 1 second(s) ago.",
            );
        }
        false
    } else if let Some(t) = st.oauth.get(&token) {
        if t.expires_at <= now {
            let secs = (now - t.expires_at).num_seconds().max(0);
            return error(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                &format!("The OAuth token used to make this call expired {secs} second(s) ago."),
            );
        }
        true
    } else {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        );
    };
    let is_search = path.ends_with("/search");
    // H4: daily cap (private apps only).
    let today = now.date_naive();
    let daily_limit = st.opts.daily_limit;
    let mut daily_used = 0;
    if !is_oauth {
        let d = st.daily.entry(token.clone()).or_insert((today, 0));
        if d.0 != today {
            *d = (today, 0);
        }
        if d.1 >= daily_limit {
            st.rate_limited += 1;
            let mut r = rate_limit_resp("DAILY", "You have reached your daily limit.");
            let used = st.burst.get(&token).map_or(0, VecDeque::len);
            let remaining = (st.opts.burst_limit as usize).saturating_sub(used);
            add_rl_headers(&mut r, st, is_oauth, remaining, 0);
            return r;
        }
    }
    if is_search {
        // H6: search limiter, no rate-limit headers.
        let q = st.secondly.entry(token.clone()).or_default();
        while q
            .front()
            .is_some_and(|t| now_i.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() >= st.opts.search_per_second as usize {
            st.rate_limited += 1;
            return rate_limit_resp("SECONDLY", "You have reached your secondly limit.");
        }
        q.push_back(now_i);
    } else {
        // H3: rolling window.
        let q = st.burst.entry(token.clone()).or_default();
        while q
            .front()
            .is_some_and(|t| now_i.duration_since(*t) >= window)
        {
            q.pop_front();
        }
        if q.len() >= st.opts.burst_limit as usize {
            st.rate_limited += 1;
            let mut r = rate_limit_resp(
                "TEN_SECONDLY_ROLLING",
                "You have reached your ten_secondly_rolling limit.",
            );
            let used = st.daily.get(&token).map_or(0, |d| d.1);
            add_rl_headers(&mut r, st, is_oauth, 0, daily_limit.saturating_sub(used));
            return r;
        }
        q.push_back(now_i);
    }
    if !is_oauth {
        let d = st.daily.get_mut(&token).expect("inserted above");
        d.1 += 1;
        daily_used = d.1;
    }
    let mut r = dispatch(st, method, uri, body);
    if !is_search {
        let remaining =
            st.opts.burst_limit as usize - st.burst.get(&token).map_or(0, VecDeque::len);
        add_rl_headers(
            &mut r,
            st,
            is_oauth,
            remaining,
            daily_limit.saturating_sub(daily_used),
        );
    }
    r
}

fn add_rl_headers(r: &mut Response, st: &Inner, oauth: bool, remaining: usize, daily_rem: u64) {
    let h = r.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-hubspot-ratelimit-max", st.opts.burst_limit.to_string());
    put("x-hubspot-ratelimit-remaining", remaining.to_string());
    put(
        "x-hubspot-ratelimit-interval-milliseconds",
        st.opts.burst_window.as_millis().to_string(),
    );
    if !oauth {
        put("x-hubspot-ratelimit-daily", st.opts.daily_limit.to_string());
        put("x-hubspot-ratelimit-daily-remaining", daily_rem.to_string());
    }
}

fn oauth_token(st: &mut Inner, method: &Method, body: &Bytes) -> Response {
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "VALIDATION_ERROR",
            "use POST",
        );
    }
    let form: HashMap<String, String> = parse_form(&String::from_utf8_lossy(body))
        .into_iter()
        .collect();
    let oauth_err = |status: &str, message: &str| {
        json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"status": status, "message": message, "correlationId": uuid()}),
        )
    };
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_err("BAD_GRANT_TYPE", "grant_type must be refresh_token");
    }
    let rt = form.get("refresh_token").cloned().unwrap_or_default();
    if !st.opts.refresh_tokens.contains(&rt) {
        return oauth_err("BAD_REFRESH_TOKEN", "missing or invalid refresh token");
    }
    let access = format!("oauth-{}", uuid().replace('-', ""));
    let ttl = st.opts.oauth_token_ttl;
    let expires_at = Utc::now() + chrono::Duration::milliseconds(ttl.as_millis() as i64);
    st.oauth.insert(access.clone(), OauthToken { expires_at });
    json_resp(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "refresh_token": rt,
            "expires_in": ttl.as_secs(),
            "token_type": "bearer",
            "token_use": "access_token",
            "hub_id": st.opts.hub_id,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// CRM routes

fn dispatch(st: &mut Inner, method: &Method, uri: &Uri, body: &Bytes) -> Response {
    let path = uri.path().trim_end_matches('/');
    let q = query_map(uri);
    let rest = path
        .strip_prefix("/crm/v3/objects/")
        .or_else(|| path.strip_prefix("/crm/objects/2026-03/"));
    if let Some(rest) = rest {
        let segs: Vec<&str> = rest.split('/').collect();
        let Some(t) = TYPES.iter().copied().find(|t| *t == segs[0]) else {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Unable to infer object type from: {}", segs[0]),
            );
        };
        let json_body = || -> Result<Value, Response> {
            serde_json::from_slice(body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    &format!("Invalid input JSON: {e}"),
                )
            })
        };
        let r = match (method.as_str(), &segs[1..]) {
            ("GET", []) => Ok(list(st, t, &q)),
            ("POST", []) => json_body().map(|b| create_one(st, t, &b)),
            ("POST", ["search"]) => json_body().map(|b| search(st, t, &b)),
            ("POST", ["batch", op]) => json_body().map(|b| batch(st, t, op, &b, &q)),
            ("GET", [id]) => Ok(get_one(st, t, id, &q)),
            ("PATCH", [id]) => json_body().map(|b| patch_one(st, t, id, &b, &q)),
            ("DELETE", [id]) => Ok(delete_one(st, t, id)),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "Unknown endpoint",
            )),
        };
        return r.unwrap_or_else(|e| e);
    }
    let props = path
        .strip_prefix("/crm/v3/properties/")
        .or_else(|| path.strip_prefix("/crm/properties/2026-03/"));
    if let (Some(t), &Method::GET) = (props, method) {
        let Some(t) = TYPES.iter().copied().find(|x| *x == t) else {
            return error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                "unknown object type",
            );
        };
        let results: Vec<Value> = schema(t)
            .iter()
            .enumerate()
            .map(|(i, d)| prop_json(t, d, i))
            .collect();
        return json_resp(StatusCode::OK, &json!({ "results": results }));
    }
    error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "Unknown endpoint",
    )
}

fn prop_json(t: &str, d: &PropDef, i: usize) -> Value {
    let ty = match d.ptype {
        PType::Str => "string",
        PType::Number => "number",
        PType::Date => "date",
        PType::DateTime => "datetime",
        PType::Enumeration => "enumeration",
        PType::Bool => "bool",
    };
    let options: Vec<Value> = if d.ptype == PType::Bool {
        vec![
            json!({"label": "Yes", "value": "true", "displayOrder": 0, "hidden": false}),
            json!({"label": "No", "value": "false", "displayOrder": 1, "hidden": false}),
        ]
    } else {
        d.options
            .iter()
            .enumerate()
            .map(|(i, o)| json!({"label": o, "value": o, "displayOrder": i, "hidden": false}))
            .collect()
    };
    json!({
        "name": d.name,
        "label": d.label,
        "type": ty,
        "fieldType": d.field_type,
        "groupName": if t == "contacts" { "contactinformation" } else { "information" },
        "description": "",
        "options": options,
        "displayOrder": i,
        "hasUniqueValue": d.unique || (t == "contacts" && d.name == "email"),
        "hidden": false,
        "calculated": d.read_only,
        "externalOptions": false,
        "archived": false,
        "formField": !d.read_only,
        "modificationMetadata": {
            "archivable": !d.read_only,
            "readOnlyDefinition": d.read_only,
            "readOnlyValue": d.read_only,
        },
    })
}

/// Renders a record as a SimplePublicObject. `props = None` → all set properties,
/// `Some([])` → defaults for the type.
fn render(r: &Record, t: Option<&str>, props: Option<&[String]>) -> Value {
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

fn history_json(r: &Record, only: Option<&[String]>) -> Value {
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

fn render_full(r: &Record, t: &str, props: Option<&[String]>, hist: Option<&[String]>) -> Value {
    let mut v = render(r, Some(t), Some(props.unwrap_or(&[])));
    if let Some(h) = hist {
        v["propertiesWithHistory"] = history_json(r, Some(h));
    }
    v
}

fn is_unique(t: &str, name: &str) -> bool {
    name != "hs_object_id"
        && schema(t)
            .iter()
            .any(|d| d.name == name && (d.unique || (t == "contacts" && name == "email")))
}

fn non_unique_err(t: &str, name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &format!(
            "Unable to perform update/upsert by non-unique {} property {name}",
            type_id(t)
        ),
    )
}

/// Finds a live (`archived = false`) or archived record by id or by unique property value.
/// Live records are found through the unique-value index; archived ones (several may share a
/// value) and non-unique properties by a scan, lowest id first.
fn find(st: &Inner, t: &str, id: &str, id_prop: Option<&str>, archived: bool) -> Option<u64> {
    let recs = &st.objects[t];
    match id_prop {
        None | Some("hs_object_id") => id
            .parse::<u64>()
            .ok()
            .filter(|n| recs.get(n).is_some_and(|r| r.archived == archived)),
        Some(p) if !archived && is_unique(t, p) => st.unique[t].get(p)?.get(id).copied(),
        Some(p) => recs
            .values()
            .find(|r| r.archived == archived && r.props.get(p).map(String::as_str) == Some(id))
            .map(|r| r.id),
    }
}

/// Points `value` of unique property `prop` at live record `id` (an empty value unindexes).
fn index_value(
    index: &mut HashMap<String, HashMap<String, u64>>,
    prop: &str,
    old: Option<&str>,
    new: &str,
    id: u64,
) {
    let values = index.entry(prop.to_string()).or_default();
    if let Some(old) = old
        && values.get(old) == Some(&id)
    {
        values.remove(old);
    }
    if !new.is_empty() {
        values.insert(new.to_string(), id);
    }
}

/// One per-input error (StandardError).
fn input_err(category: &str, message: String, details: Vec<Value>, ctx: Value) -> Value {
    json!({"status": "error", "category": category, "message": message,
           "errors": details, "context": ctx, "links": {}})
}

/// Validates a `properties` object: non-string values are a request-level error (`Err`), bad
/// properties are returned as per-property error details.
type Validated = (BTreeMap<String, String>, Vec<Value>);

fn validate(t: &str, props: Option<&Value>) -> Result<Validated, Response> {
    let defs = schema(t);
    let mut out = BTreeMap::new();
    let mut errs = vec![];
    let Some(obj) = props.and_then(Value::as_object) else {
        if props.is_none_or(Value::is_null) {
            return Ok((out, errs));
        }
        return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "properties must be an object",
        ));
    };
    for (k, v) in obj {
        let Some(s) = v.as_str() else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "Invalid input JSON on line 1: Cannot deserialize value of type `java.lang.String` \
                     from {v} for property {k}: property values must be strings"
                ),
            ));
        };
        match defs.iter().find(|d| d.name == k) {
            None => errs.push(json!({"message": format!("Property \"{k}\" does not exist"),
                                     "code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [k]}})),
            Some(d) if d.read_only => errs.push(json!({
                "message": format!("\"{k}\" is a read only property; its value cannot be set."),
                "code": "READ_ONLY_VALUE", "context": {"propertyName": [k]}})),
            Some(d) => match normalise(d, s) {
                Ok(n) => {
                    out.insert(k.clone(), n);
                }
                Err((code, msg)) => errs.push(json!({"message": msg, "code": code,
                                                     "context": {"propertyName": [k]}})),
            },
        }
    }
    Ok((out, errs))
}

fn validation_input_err(details: Vec<Value>, trace: Option<&Value>) -> Value {
    let n = details.len();
    let mut ctx = json!({});
    if let Some(tr) = trace {
        ctx["objectWriteTraceId"] = json!([tr]);
    }
    input_err(
        "VALIDATION_ERROR",
        format!("Property values were not valid ({n} error(s))"),
        details,
        ctx,
    )
}

/// Checks that no *other* live record already holds a unique value being written.
fn unique_conflict(
    st: &Inner,
    t: &str,
    props: &BTreeMap<String, String>,
    me: Option<u64>,
) -> Option<(String, u64)> {
    for (k, v) in props {
        if v.is_empty() || !is_unique(t, k) {
            continue;
        }
        if let Some(other) = find(st, t, v, Some(k), false).filter(|o| Some(*o) != me) {
            return Some((k.clone(), other));
        }
    }
    None
}

/// Applies `props` to a new (`id = None`) or existing record as an API write by our app;
/// returns the id.
fn write(st: &mut Inner, t: &'static str, id: Option<u64>, props: BTreeMap<String, String>) -> u64 {
    let src = Src::api(&st.opts);
    write_as(st, t, id, props, &src)
}

/// Applies `props` to a new (`id = None`) or existing record on behalf of `src`: records
/// history, bumps the last-modified date when a value changed and emits `*.creation` /
/// `*.propertyChange` webhooks for exactly the values that changed. Returns the id.
fn write_as(
    st: &mut Inner,
    t: &'static str,
    id: Option<u64>,
    props: BTreeMap<String, String>,
    src: &Src,
) -> u64 {
    let now = Utc::now();
    let new = id.is_none();
    let id = id.unwrap_or_else(|| {
        let id = st.next_id;
        st.next_id += 1;
        let mut r = Record {
            id,
            props: BTreeMap::new(),
            history: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            archived: false,
            archived_at: None,
        };
        for (k, v) in [("hs_object_id", id.to_string()), ("createdate", iso(now))] {
            r.history.entry(k.into()).or_default().push(Hist {
                value: v.clone(),
                timestamp: now,
                source_type: "CALCULATED",
                source_id: String::new(),
                user_id: None,
            });
            r.props.insert(k.into(), v);
        }
        st.objects.get_mut(t).expect("type").insert(id, r);
        id
    });
    let r = st
        .objects
        .get_mut(t)
        .expect("type")
        .get_mut(&id)
        .expect("record");
    let index = st.unique.get_mut(t).expect("type");
    let mut changes = vec![];
    for (k, v) in props {
        if r.props.get(&k).map_or(v.is_empty(), |old| *old == v) {
            continue;
        }
        if !r.archived && is_unique(t, &k) {
            index_value(index, &k, r.props.get(&k).map(String::as_str), &v, id);
        }
        r.history.entry(k.clone()).or_default().push(Hist {
            value: v.clone(),
            timestamp: now,
            source_type: src.source_type,
            source_id: src.source_id.clone(),
            user_id: src.user_id,
        });
        if v.is_empty() {
            r.props.remove(&k);
        } else {
            r.props.insert(k.clone(), v.clone());
        }
        changes.push((k, v));
    }
    if new || !changes.is_empty() {
        let m = modified_prop(t);
        r.updated_at = now;
        r.props.insert(m.into(), iso(now));
        r.history.entry(m.into()).or_default().push(Hist {
            value: iso(now),
            timestamp: now,
            source_type: "CALCULATED",
            source_id: String::new(),
            user_id: None,
        });
    }
    let at = now.timestamp_millis();
    if new {
        emit(st, t, "creation", id, None, src, at);
    }
    for (k, v) in &changes {
        emit(st, t, "propertyChange", id, Some((k, v)), src, at);
    }
    id
}

/// Soft-deletes a live record on behalf of `src` and emits `*.deletion`; false when there is no
/// such live record.
fn archive(st: &mut Inner, t: &'static str, id: u64, src: &Src) -> bool {
    let now = Utc::now();
    match st.objects.get_mut(t).expect("type").get_mut(&id) {
        Some(r) if !r.archived => {
            r.archived = true;
            r.archived_at = Some(now);
            let index = st.unique.get_mut(t).expect("type");
            for (k, v) in &r.props {
                if is_unique(t, k) {
                    index_value(index, k, Some(v), "", id);
                }
            }
        }
        _ => return false,
    }
    emit(st, t, "deletion", id, None, src, now.timestamp_millis());
    true
}

fn batch_result(
    results: Vec<Value>,
    errors: Vec<Value>,
    requested_at: DateTime<Utc>,
    ok: StatusCode,
) -> Response {
    let mut v = json!({
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(requested_at),
        "startedAt": iso(requested_at),
        "completedAt": iso(Utc::now()),
        "links": {},
    });
    if errors.is_empty() {
        return json_resp(ok, &v);
    }
    if v["results"].as_array().is_some_and(Vec::is_empty) {
        // Nothing succeeded: a plain 400 carrying the first error and all details.
        let first = &errors[0];
        let mut e = err_body(
            first["category"].as_str().unwrap_or("VALIDATION_ERROR"),
            first["message"].as_str().unwrap_or("invalid input"),
        );
        e["errors"] = Value::Array(
            errors
                .iter()
                .flat_map(|e| e["errors"].as_array().cloned().unwrap_or_default())
                .collect(),
        );
        e["context"] = first["context"].clone();
        return json_resp(StatusCode::BAD_REQUEST, &e);
    }
    v["numErrors"] = json!(errors.len());
    v["errors"] = Value::Array(errors);
    json_resp(StatusCode::MULTI_STATUS, &v)
}

fn batch(
    st: &mut Inner,
    t: &'static str,
    op: &str,
    b: &Value,
    q: &HashMap<String, String>,
) -> Response {
    let requested_at = Utc::now();
    let empty_inputs = vec![];
    let inputs = b
        .get("inputs")
        .and_then(Value::as_array)
        .unwrap_or(&empty_inputs);
    let max = st.opts.max_batch_inputs;
    if inputs.len() > max {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "The maximum number of inputs supported in a batch request is {max}. Please reduce the number of items and try again"
            ),
        );
    }
    match op {
        "upsert" | "update" => batch_write(st, t, op == "upsert", inputs, requested_at),
        "create" => batch_create(st, t, inputs, requested_at),
        "archive" => {
            let src = Src::api(&st.opts);
            for i in inputs {
                let id = i
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(id) = id {
                    archive(st, t, id, &src);
                }
            }
            empty(StatusCode::NO_CONTENT)
        }
        "read" => {
            let hist = str_list(b.get("propertiesWithHistory"));
            if hist.as_ref().is_some_and(|h| !h.is_empty()) && inputs.len() > 50 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "The maximum number of inputs supported in a batch request for property histories is 50. Please reduce the number of items and try again",
                );
            }
            let id_prop = b.get("idProperty").and_then(Value::as_str);
            if let Some(p) = id_prop.filter(|p| *p != "hs_object_id")
                && !is_unique(t, p)
            {
                return non_unique_err(t, p);
            }
            let archived = q.get("archived").is_some_and(|a| a == "true");
            let props = str_list(b.get("properties"));
            let (mut results, mut missing) = (vec![], vec![]);
            for i in inputs {
                let id = i.get("id").and_then(Value::as_str).unwrap_or_default();
                match find(st, t, id, id_prop, archived) {
                    Some(n) => results.push(render_full(
                        &st.objects[t][&n],
                        t,
                        props.as_deref(),
                        hist.as_deref(),
                    )),
                    None => missing.push(id.to_string()),
                }
            }
            let errors = if missing.is_empty() {
                vec![]
            } else {
                vec![input_err(
                    "OBJECT_NOT_FOUND",
                    "Could not get some CRM objects, they may be deleted or not exist. Check that ids are valid.".into(),
                    vec![],
                    json!({"ids": missing}),
                )]
            };
            batch_result(results, errors, requested_at, StatusCode::OK)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Unknown batch operation",
        ),
    }
}

fn batch_write(
    st: &mut Inner,
    t: &'static str,
    upsert: bool,
    inputs: &[Value],
    requested_at: DateTime<Utc>,
) -> Response {
    // Request-level validation first: idProperty uniqueness, non-string values, duplicates.
    let mut validated = vec![];
    let mut seen = std::collections::HashSet::new();
    for i in inputs {
        let id_prop = i.get("idProperty").and_then(Value::as_str);
        if let Some(p) = id_prop
            && !is_unique(t, p)
        {
            return non_unique_err(t, p);
        }
        let id = i
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if id.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Each input requires an id",
            );
        }
        let v = match validate(t, i.get("properties")) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let key = (id_prop.unwrap_or("hs_object_id").to_string(), id.clone());
        if !seen.insert(key) {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!("Duplicate IDs found in batch input: [{id}]. IDs must be unique"),
            );
        }
        validated.push((
            id_prop.map(String::from),
            id,
            v,
            i.get("objectWriteTraceId").cloned(),
        ));
    }
    let (mut results, mut errors) = (vec![], vec![]);
    for (id_prop, id, (mut props, errs), trace) in validated {
        if !errs.is_empty() {
            errors.push(validation_input_err(errs, trace.as_ref()));
            continue;
        }
        let existing = find(st, t, &id, id_prop.as_deref(), false);
        if existing.is_none() && !(upsert && id_prop.is_some()) {
            errors.push(input_err(
                "OBJECT_NOT_FOUND",
                format!("Object {id} not found"),
                vec![],
                json!({"ids": [id]}),
            ));
            continue;
        }
        if existing.is_none()
            && let Some(p) = &id_prop
        {
            props.insert(p.clone(), id.clone());
        }
        if let Some((k, other)) = unique_conflict(st, t, &props, existing) {
            errors.push(input_err(
                "CONFLICT",
                format!("A record with {k} already exists. Existing ID: {other}"),
                vec![],
                json!({"id": [id]}),
            ));
            continue;
        }
        let n = write(st, t, existing, props);
        let mut v = render(&st.objects[t][&n], Some(t), None);
        if upsert {
            v["new"] = json!(existing.is_none());
        }
        if let Some(tr) = trace {
            v["objectWriteTraceId"] = tr;
        }
        results.push(v);
    }
    batch_result(results, errors, requested_at, StatusCode::OK)
}

fn batch_create(
    st: &mut Inner,
    t: &'static str,
    inputs: &[Value],
    requested_at: DateTime<Utc>,
) -> Response {
    let all_traced =
        !inputs.is_empty() && inputs.iter().all(|i| i.get("objectWriteTraceId").is_some());
    let mut validated = vec![];
    for i in inputs {
        let v = match validate(t, i.get("properties")) {
            Ok(v) => v,
            Err(r) => return r,
        };
        validated.push((v, i.get("objectWriteTraceId").cloned()));
    }
    if !all_traced {
        // All-or-nothing: report the first problem for the whole batch.
        for ((props, errs), _) in &validated {
            if !errs.is_empty() {
                let mut e = err_body("VALIDATION_ERROR", "Property values were not valid");
                e["errors"] = Value::Array(errs.clone());
                return json_resp(StatusCode::BAD_REQUEST, &e);
            }
            if let Some((_, other)) = unique_conflict(st, t, props, None) {
                return conflict(t, other);
            }
        }
    }
    let (mut results, mut errors) = (vec![], vec![]);
    for ((props, errs), trace) in validated {
        if !errs.is_empty() {
            errors.push(validation_input_err(errs, trace.as_ref()));
            continue;
        }
        if let Some((_, other)) = unique_conflict(st, t, &props, None) {
            let mut ctx = json!({});
            if let Some(tr) = &trace {
                ctx["objectWriteTraceId"] = json!([tr]);
            }
            errors.push(input_err("CONFLICT", conflict_msg(t, other), vec![], ctx));
            continue;
        }
        let n = write(st, t, None, props);
        let mut v = render(&st.objects[t][&n], Some(t), None);
        if let Some(tr) = trace {
            v["objectWriteTraceId"] = tr;
        }
        results.push(v);
    }
    batch_result(results, errors, requested_at, StatusCode::CREATED)
}

fn conflict_msg(t: &str, other: u64) -> String {
    let noun = match t {
        "contacts" => "Contact",
        "companies" => "Company",
        _ => "Deal",
    };
    format!("{noun} already exists. Existing ID: {other}")
}

fn conflict(t: &str, other: u64) -> Response {
    error(StatusCode::CONFLICT, "CONFLICT", &conflict_msg(t, other))
}

fn create_one(st: &mut Inner, t: &'static str, b: &Value) -> Response {
    let (props, errs) = match validate(t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        let mut e = err_body("VALIDATION_ERROR", "Property values were not valid");
        e["errors"] = Value::Array(errs);
        return json_resp(StatusCode::BAD_REQUEST, &e);
    }
    if let Some((_, other)) = unique_conflict(st, t, &props, None) {
        return conflict(t, other);
    }
    let n = write(st, t, None, props);
    json_resp(
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
        Some(n) => json_resp(
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
    let (props, errs) = match validate(t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        let mut e = err_body("VALIDATION_ERROR", "Property values were not valid");
        e["errors"] = Value::Array(errs);
        return json_resp(StatusCode::BAD_REQUEST, &e);
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
    json_resp(StatusCode::OK, &render(&st.objects[t][&n], Some(t), None))
}

fn delete_one(st: &mut Inner, t: &'static str, id: &str) -> Response {
    if let Ok(n) = id.parse::<u64>() {
        let src = Src::api(&st.opts);
        archive(st, t, n, &src);
    }
    empty(StatusCode::NO_CONTENT)
}

fn list(st: &Inner, t: &str, q: &HashMap<String, String>) -> Response {
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
    json_resp(StatusCode::OK, &v)
}

/// Value of a property for filtering / sorting, typed by the schema.
#[derive(PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Str(String),
}

fn key(t: &str, prop: &str, raw: &str) -> Key {
    let ty = schema(t).iter().find(|d| d.name == prop).map(|d| d.ptype);
    match ty {
        Some(PType::Number) => raw.parse().map(Key::Num).unwrap_or(Key::Str(raw.into())),
        Some(PType::Date | PType::DateTime) => to_ms(raw)
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

fn search(st: &Inner, t: &str, b: &Value) -> Response {
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
    for r in st.objects[t].values().filter(|r| !r.archived) {
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
    // Sorts: [{propertyName, direction}] or ["prop" / "-prop"]; default by id ascending.
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
    json_resp(StatusCode::OK, &v)
}

// ---------------------------------------------------------------------------------------------
// Writers and webhooks (H13, H18, H19, H20)

/// Who made a write: recorded in property history and in webhook `changeSource` / `sourceId`.
#[derive(Clone, Debug)]
struct Src {
    /// History `sourceType` and webhook `changeSource` (`INTEGRATION`, `CRM_UI`).
    source_type: &'static str,
    /// History and webhook `sourceId` (our app for API writes, `userId:N` for UI edits).
    source_id: String,
    /// History `updatedByUserId`.
    user_id: Option<u64>,
}

impl Src {
    /// An API write by the app that owns the tokens.
    fn api(opts: &Options) -> Src {
        Src {
            source_type: "INTEGRATION",
            source_id: opts.app_source_id.clone(),
            user_id: None,
        }
    }

    /// An edit by user `user_id` in the HubSpot UI.
    fn ui(user_id: u64) -> Src {
        Src {
            source_type: "CRM_UI",
            source_id: format!("userId:{user_id}"),
            user_id: Some(user_id),
        }
    }
}

/// Object type name used in `subscriptionType` (`contact.creation`, ...).
fn singular(t: &str) -> &'static str {
    match t {
        "contacts" => "contact",
        "companies" => "company",
        _ => "deal",
    }
}

/// Accepts `contacts` / `contact` (etc.) in test-control paths.
fn object_type(s: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| *t == s || singular(t) == s)
}

const HOOK_KINDS: [&str; 3] = ["creation", "propertyChange", "deletion"];

/// Subscription ids are `SUBSCRIPTION_BASE + index in HookConfig::events`.
const SUBSCRIPTION_BASE: u64 = 100_000;

fn all_hook_events() -> Vec<String> {
    TYPES
        .iter()
        .flat_map(|t| {
            HOOK_KINDS
                .iter()
                .map(move |k| format!("{}.{k}", singular(t)))
        })
        .collect()
}

/// `POST /_emulator/webhooks` body: one app's webhook subscription.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct HookConfig {
    target_url: String,
    client_secret: String,
    #[serde(default = "HookConfig::default_app_id")]
    app_id: u64,
    /// `{contact,company,deal}.{creation,propertyChange,deletion}`; default all nine.
    #[serde(default = "all_hook_events")]
    events: Vec<String>,
    /// `propertyChange` only for these properties (HubSpot subscribes per property); default all.
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default = "HookConfig::default_max_batch")]
    max_batch: usize,
    /// Randomise delivery order within and across requests.
    #[serde(default)]
    shuffle: bool,
    /// Every nth emitted event is delivered twice (0 = never).
    #[serde(default)]
    duplicate_every: u64,
    /// Every nth emitted event is never delivered (0 = never); wins over `duplicate_every`.
    #[serde(default)]
    drop_every: u64,
    /// Retry n waits `retry_base_ms * 2^(n-1)` (HubSpot: minutes).
    #[serde(default = "HookConfig::default_retry_base_ms")]
    retry_base_ms: u64,
    #[serde(default = "HookConfig::default_max_retries")]
    max_retries: u32,
    /// Per-request timeout; a timeout is retried.
    #[serde(default = "HookConfig::default_timeout_ms")]
    timeout_ms: u64,
    /// Hold the first ready event this long so more events share its request.
    #[serde(default)]
    batch_window_ms: u64,
}

impl HookConfig {
    fn default_app_id() -> u64 {
        1
    }
    fn default_max_batch() -> usize {
        100
    }
    fn default_retry_base_ms() -> u64 {
        1000
    }
    fn default_max_retries() -> u32 {
        10
    }
    fn default_timeout_ms() -> u64 {
        5000
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
struct HookStats {
    /// POST requests sent (including retries and failed connections).
    requests: u64,
    /// Events in requests answered 2xx (a duplicated event counts twice).
    events_delivered: u64,
    /// Event re-deliveries scheduled after a failed request.
    retries: u64,
    /// Events given up on: a 400/401/403/404/405 reply or retries exhausted.
    failures: u64,
    /// Events never queued because of `drop_every`.
    dropped: u64,
    /// Extra copies queued because of `duplicate_every`.
    duplicated: u64,
    /// Status of the latest reply (none after a connection failure or timeout).
    last_status: Option<u16>,
}

struct PendingEvent {
    event: Value,
    attempt: u32,
    ready_at: Instant,
}

struct Hooks {
    cfg: HookConfig,
    stats: HookStats,
    pending: Vec<PendingEvent>,
    emitted: u64,
    /// Wakes the dispatcher; its identity also tells a dispatcher whether it is still current.
    wake: Arc<tokio::sync::Notify>,
}

/// Queues a webhook event if the subscription wants it (called with the state lock held).
fn emit(
    st: &mut Inner,
    t: &str,
    kind: &str,
    object_id: u64,
    prop: Option<(&str, &str)>,
    src: &Src,
    occurred_at: i64,
) {
    let Some(h) = st.hooks.as_mut() else { return };
    let sub_type = format!("{}.{kind}", singular(t));
    let Some(idx) = h.cfg.events.iter().position(|e| *e == sub_type) else {
        return;
    };
    if let (Some((name, _)), Some(only)) = (prop, &h.cfg.properties)
        && !only.iter().any(|p| p == name)
    {
        return;
    }
    let event_id = st.next_event_id;
    st.next_event_id += 1;
    let mut e = json!({
        "eventId": event_id,
        "subscriptionId": SUBSCRIPTION_BASE + idx as u64,
        "portalId": st.opts.hub_id,
        "appId": h.cfg.app_id,
        "occurredAt": occurred_at,
        "subscriptionType": sub_type,
        "attemptNumber": 0,
        "objectId": object_id,
    });
    match prop {
        Some((name, value)) => {
            e["propertyName"] = json!(name);
            e["propertyValue"] = json!(value);
        }
        None if kind == "creation" => e["changeFlag"] = json!("CREATED"),
        None => e["changeFlag"] = json!("DELETED"),
    }
    e["changeSource"] = json!(src.source_type);
    e["sourceId"] = json!(src.source_id);
    h.emitted += 1;
    let n = h.emitted;
    if h.cfg.drop_every > 0 && n.is_multiple_of(h.cfg.drop_every) {
        h.stats.dropped += 1;
        return;
    }
    let now = Instant::now();
    if h.cfg.duplicate_every > 0 && n.is_multiple_of(h.cfg.duplicate_every) {
        h.stats.duplicated += 1;
        h.pending.push(PendingEvent {
            event: e.clone(),
            attempt: 0,
            ready_at: now,
        });
    }
    h.pending.push(PendingEvent {
        event: e,
        attempt: 0,
        ready_at: now,
    });
    h.wake.notify_one();
}

fn hooks_json(h: &Hooks) -> Value {
    let subscriptions: Vec<Value> = h
        .cfg
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"id": SUBSCRIPTION_BASE + i as u64, "eventType": e}))
        .collect();
    json!({
        "config": h.cfg,
        "subscriptions": subscriptions,
        "stats": h.stats,
        "pending": h.pending.len(),
    })
}

/// `POST /_emulator/webhooks`: validates and installs a subscription, replacing any previous
/// one (its undelivered events are discarded), and starts its dispatcher.
fn configure_hooks(shared: &Arc<Mutex<Inner>>, st: &mut Inner, body: &Bytes) -> Response {
    let cfg: HookConfig = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string()),
    };
    let known = all_hook_events();
    if let Some(bad) = cfg.events.iter().find(|e| !known.contains(e)) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("unsupported event type {bad}; expected one of {known:?}"),
        );
    }
    if cfg.max_batch == 0 || url::Url::parse(&cfg.target_url).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "max_batch must be positive and target_url an absolute URL",
        );
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let h = Hooks {
        cfg,
        stats: HookStats::default(),
        pending: vec![],
        emitted: 0,
        wake: wake.clone(),
    };
    let v = hooks_json(&h);
    stop_hooks(st);
    st.hooks = Some(h);
    tokio::spawn(deliver_hooks(shared.clone(), wake));
    json_resp(StatusCode::OK, &v)
}

/// Removes the subscription and wakes its dispatcher so that it exits now.
fn stop_hooks(st: &mut Inner) {
    if let Some(h) = st.hooks.take() {
        h.wake.notify_one();
    }
}

enum Step {
    Stop,
    Wait(Duration),
    Send(HookConfig, Vec<PendingEvent>),
}

/// Picks the next request's events, or says how long to wait (lock held briefly).
fn next_step(shared: &Arc<Mutex<Inner>>, me: &Arc<tokio::sync::Notify>) -> Step {
    let mut st = shared.lock().unwrap();
    let Some(h) = st.hooks.as_mut().filter(|h| Arc::ptr_eq(&h.wake, me)) else {
        return Step::Stop;
    };
    let now = Instant::now();
    let idle = Duration::from_secs(3600);
    let Some(first_ready) = h.pending.iter().map(|p| p.ready_at).min() else {
        return Step::Wait(idle);
    };
    if first_ready > now {
        return Step::Wait(first_ready - now);
    }
    let window = Duration::from_millis(h.cfg.batch_window_ms);
    if first_ready + window > now {
        return Step::Wait(first_ready + window - now);
    }
    let mut ready: Vec<usize> = (0..h.pending.len())
        .filter(|i| h.pending[*i].ready_at <= now)
        .collect();
    if h.cfg.shuffle {
        rand::seq::SliceRandom::shuffle(ready.as_mut_slice(), &mut rand::rng());
    }
    ready.truncate(h.cfg.max_batch);
    let mut take = ready.clone();
    take.sort_unstable_by(|a, b| b.cmp(a));
    let mut batch: Vec<(usize, PendingEvent)> =
        take.into_iter().map(|i| (i, h.pending.remove(i))).collect();
    // Keep the picked order (queue order, or the shuffled order).
    batch.sort_by_key(|(i, _)| ready.iter().position(|r| r == i));
    Step::Send(h.cfg.clone(), batch.into_iter().map(|(_, p)| p).collect())
}

/// How one delivery request ended.
enum Outcome {
    Delivered(u16),
    Rejected(u16),
    Retry(Option<u16>, Option<Duration>),
}

/// The background dispatcher of one subscription: POSTs batches, retries per H19, and stops
/// when the subscription is deleted, replaced or reset.
async fn deliver_hooks(shared: Arc<Mutex<Inner>>, me: Arc<tokio::sync::Notify>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook dispatcher cannot build an HTTP client");
            return;
        }
    };
    loop {
        let (cfg, batch) = match next_step(&shared, &me) {
            Step::Stop => return,
            Step::Wait(d) => {
                tokio::select! {
                    _ = me.notified() => {}
                    _ = tokio::time::sleep(d) => {}
                }
                continue;
            }
            Step::Send(cfg, batch) => (cfg, batch),
        };
        let events: Vec<Value> = batch
            .iter()
            .map(|p| {
                let mut e = p.event.clone();
                e["attemptNumber"] = json!(p.attempt);
                e
            })
            .collect();
        let body = serde_json::to_vec(&events).expect("json");
        let ts = Utc::now().timestamp_millis();
        use crate::destinations::hubspot::signature::{sign_v1, sign_v3};
        let req = client
            .post(&cfg.target_url)
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client) - WebhooksExecutorDaemon-executor",
            )
            .header("X-HubSpot-Signature-Version", "v1")
            .header("X-HubSpot-Signature", sign_v1(&cfg.client_secret, &body))
            .header(
                "X-HubSpot-Signature-v3",
                sign_v3(&cfg.client_secret, "POST", &cfg.target_url, &body, ts),
            )
            .header("X-HubSpot-Request-Timestamp", ts.to_string())
            .header("X-HubSpot-Timeout-Millis", cfg.timeout_ms.to_string())
            .body(body);
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let _ = resp.bytes().await;
                match status {
                    200..=299 => Outcome::Delivered(status),
                    400 | 401 | 403 | 404 | 405 => Outcome::Rejected(status),
                    429 => Outcome::Retry(Some(status), retry_after),
                    _ => Outcome::Retry(Some(status), None),
                }
            }
            Err(_) => Outcome::Retry(None, None),
        };
        let mut st = shared.lock().unwrap();
        let Some(h) = st.hooks.as_mut().filter(|h| Arc::ptr_eq(&h.wake, &me)) else {
            return;
        };
        h.stats.requests += 1;
        let n = batch.len() as u64;
        match outcome {
            Outcome::Delivered(s) => {
                h.stats.last_status = Some(s);
                h.stats.events_delivered += n;
            }
            Outcome::Rejected(s) => {
                h.stats.last_status = Some(s);
                h.stats.failures += n;
            }
            Outcome::Retry(s, retry_after) => {
                h.stats.last_status = s;
                let now = Instant::now();
                for mut p in batch {
                    if p.attempt >= h.cfg.max_retries {
                        h.stats.failures += 1;
                        continue;
                    }
                    p.attempt += 1;
                    let backoff = Duration::from_millis(
                        h.cfg
                            .retry_base_ms
                            .saturating_mul(1u64 << (p.attempt - 1).min(20)),
                    );
                    p.ready_at = now + retry_after.unwrap_or(backoff);
                    h.stats.retries += 1;
                    h.pending.push(p);
                }
            }
        }
    }
}

/// `POST /_emulator/objects/{type}[/{id}/edit|/{id}/archive]`: writes as a user in the HubSpot
/// UI (`changeSource` `CRM_UI`, `sourceId` `userId:N`), with history, last-modified date and
/// webhooks, and no API identity, auth or rate limiting.
fn ui_write(st: &mut Inner, t: &'static str, id: Option<&str>, op: &str, body: &Bytes) -> Response {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e.to_string()),
        }
    };
    let src = Src::ui(b.get("userId").and_then(Value::as_u64).unwrap_or(1));
    let existing = match id {
        None => None,
        Some(id) => match find(st, t, id, None, false) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "OBJECT_NOT_FOUND",
                    "resource not found",
                );
            }
        },
    };
    if let (Some(n), "archive") = (existing, op) {
        archive(st, t, n, &src);
        return empty(StatusCode::NO_CONTENT);
    }
    let (props, errs) = match validate(t, b.get("properties")) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !errs.is_empty() {
        let mut e = err_body("VALIDATION_ERROR", "Property values were not valid");
        e["errors"] = Value::Array(errs);
        return json_resp(StatusCode::BAD_REQUEST, &e);
    }
    if let Some((_, other)) = unique_conflict(st, t, &props, existing) {
        return conflict(t, other);
    }
    let n = write_as(st, t, existing, props, &src);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    json_resp(status, &render(&st.objects[t][&n], Some(t), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Emu {
        base: String,
        client: reqwest::Client,
        token: String,
    }

    async fn start(opts: Options) -> Emu {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Emu {
            base: crate::emulate::serve_for_test(router(opts)).await,
            client: reqwest::Client::builder().build().unwrap(),
            token: "test-token".into(),
        }
    }

    impl Emu {
        async fn req(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
        ) -> (u16, reqwest::header::HeaderMap, Value) {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut rb = self
                .client
                .request(m, format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap();
            let v = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            };
            (status, headers, v)
        }

        async fn upsert(&self, t: &str, inputs: Value) -> (u16, Value) {
            let (s, _, v) = self
                .req(
                    "POST",
                    &format!("/crm/v3/objects/{t}/batch/upsert"),
                    Some(json!({"inputs": inputs})),
                )
                .await;
            (s, v)
        }

        async fn faults(&self, f: Value) {
            let (s, _, _) = self.req("POST", "/_emulator/faults", Some(f)).await;
            assert_eq!(s, 200);
        }
    }

    fn contact(email: &str, first: &str) -> Value {
        json!({"idProperty": "email", "id": email, "properties": {"firstname": first}})
    }

    #[tokio::test]
    async fn h1_auth_missing_invalid_and_expired() {
        let mut emu = start(Options::default()).await;
        emu.token = "nope".into();
        let (s, h, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 401);
        assert_eq!(v["category"], "INVALID_AUTHENTICATION");
        assert_eq!(v["status"], "error");
        assert!(h.contains_key("x-hubspot-correlation-id"));
        emu.token = "test-token".into();
        emu.faults(json!({"expire_tokens": true})).await;
        let (s, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 401);
        assert_eq!(v["category"], "EXPIRED_AUTHENTICATION");
        assert!(v["message"].as_str().unwrap().contains("expired"));
    }

    #[tokio::test]
    async fn h2_oauth_refresh_issues_expiring_tokens() {
        let opts = Options {
            oauth_token_ttl: Duration::from_millis(1500),
            ..Options::default()
        };
        let mut emu = start(opts).await;
        let r = emu
            .client
            .post(format!("{}/oauth/v1/token", emu.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=test-refresh-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["expires_in"].as_u64(), Some(1));
        emu.token = v["access_token"].as_str().unwrap().into();
        let (s, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 200);
        assert!(h.contains_key("x-hubspot-ratelimit-max"));
        assert!(
            !h.contains_key("x-hubspot-ratelimit-daily"),
            "OAuth omits daily headers"
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (s, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 401);
        assert_eq!(v["category"], "EXPIRED_AUTHENTICATION");
        let r = emu
            .client
            .post(format!("{}/oauth/v3/token", emu.base))
            .body("grant_type=refresh_token&refresh_token=bogus")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
    }

    #[tokio::test]
    async fn h3_ten_secondly_429_and_recovery() {
        let opts = Options {
            burst_limit: 3,
            burst_window: Duration::from_millis(800),
            ..Options::default()
        };
        let emu = start(opts).await;
        for i in 0..3 {
            let (s, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
            assert_eq!(s, 200);
            assert_eq!(
                h["x-hubspot-ratelimit-remaining"],
                (2 - i).to_string().as_str()
            );
        }
        let (s, h, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 429);
        assert_eq!(v["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(v["errorType"], "RATE_LIMIT");
        assert_eq!(v["status"], "error");
        assert!(v["correlationId"].is_string());
        assert_eq!(h["x-hubspot-ratelimit-remaining"], "0");
        assert_eq!(h["x-hubspot-ratelimit-max"], "3");
        assert_eq!(h["x-hubspot-ratelimit-interval-milliseconds"], "800");
        tokio::time::sleep(Duration::from_millis(850)).await;
        let (s, _, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(s, 200);
        let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
        assert_eq!(st["requests"]["rateLimited"].as_u64(), Some(1));
        assert!(st["requests"]["maxInAnyWindow"].as_u64().unwrap() >= 4);
    }

    #[tokio::test]
    async fn h4_daily_cap() {
        let emu = start(Options {
            daily_limit: 2,
            ..Options::default()
        })
        .await;
        for _ in 0..2 {
            assert_eq!(emu.req("GET", "/crm/v3/objects/deals", None).await.0, 200);
        }
        let (s, h, v) = emu.req("GET", "/crm/v3/objects/deals", None).await;
        assert_eq!(s, 429);
        assert_eq!(v["policyName"], "DAILY");
        assert_eq!(v["message"], "You have reached your daily limit.");
        assert_eq!(h["x-hubspot-ratelimit-daily-remaining"], "0");
    }

    #[tokio::test]
    async fn h5_rate_limit_headers() {
        let emu = start(Options::default()).await;
        let (_, h, _) = emu.req("GET", "/crm/v3/objects/companies", None).await;
        assert_eq!(h["x-hubspot-ratelimit-max"], "100");
        assert_eq!(h["x-hubspot-ratelimit-remaining"], "99");
        assert_eq!(h["x-hubspot-ratelimit-interval-milliseconds"], "10000");
        assert_eq!(h["x-hubspot-ratelimit-daily"], "250000");
        assert_eq!(h["x-hubspot-ratelimit-daily-remaining"], "249999");
        assert!(h.contains_key("x-hubspot-correlation-id"));
    }

    #[tokio::test]
    async fn h6_search_secondly_limit_without_headers() {
        let emu = start(Options {
            search_per_second: 2,
            ..Options::default()
        })
        .await;
        let body = json!({"limit": 10});
        for _ in 0..2 {
            let (s, h, _) = emu
                .req(
                    "POST",
                    "/crm/v3/objects/contacts/search",
                    Some(body.clone()),
                )
                .await;
            assert_eq!(s, 200);
            assert!(!h.contains_key("x-hubspot-ratelimit-max"));
        }
        let (s, _, v) = emu
            .req("POST", "/crm/v3/objects/contacts/search", Some(body))
            .await;
        assert_eq!(s, 429);
        assert_eq!(v["message"], "You have reached your secondly limit.");
        let (_, h, _) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert_eq!(
            h["x-hubspot-ratelimit-remaining"], "99",
            "search not in the 10 s bucket"
        );
    }

    #[tokio::test]
    async fn h7_batch_limits() {
        let emu = start(Options::default()).await;
        let inputs: Vec<Value> = (0..101)
            .map(|i| contact(&format!("u{i}@x.io"), "A"))
            .collect();
        let (s, v) = emu.upsert("contacts", json!(inputs)).await;
        assert_eq!(s, 400);
        assert_eq!(v["category"], "VALIDATION_ERROR");
        let (s, _) = emu.upsert("contacts", json!(inputs[..100])).await;
        assert_eq!(s, 200);
        let ids: Vec<Value> = (0..51).map(|i| json!({"id": i.to_string()})).collect();
        let (s, _, v) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/batch/read",
                Some(json!({"inputs": ids, "propertiesWithHistory": ["firstname"]})),
            )
            .await;
        assert_eq!(s, 400);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("property histories is 50")
        );
    }

    #[tokio::test]
    async fn h8_batch_create_conflict_and_multistatus() {
        let emu = start(Options::default()).await;
        emu.upsert("contacts", json!([contact("a@x.io", "A")]))
            .await;
        let path = "/crm/v3/objects/contacts/batch/create";
        let mk = |e: &str, tr: Option<&str>| {
            let mut v = json!({"properties": {"email": e}});
            if let Some(tr) = tr {
                v["objectWriteTraceId"] = json!(tr);
            }
            v
        };
        let (s, _, v) = emu
            .req(
                "POST",
                path,
                Some(json!({"inputs": [mk("b@x.io", None), mk("a@x.io", None)]})),
            )
            .await;
        assert_eq!(s, 409);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Contact already exists. Existing ID:")
        );
        let inputs = json!([mk("b@x.io", Some("t1")), mk("a@x.io", Some("t2"))]);
        let (s, _, v) = emu
            .req("POST", path, Some(json!({ "inputs": inputs })))
            .await;
        assert_eq!(s, 207);
        assert_eq!(v["numErrors"].as_u64(), Some(1));
        assert_eq!(v["results"][0]["objectWriteTraceId"], "t1");
        assert_eq!(v["errors"][0]["context"]["objectWriteTraceId"][0], "t2");
    }

    #[tokio::test]
    async fn h9_upsert_creates_then_updates_and_partial_207() {
        let emu = start(Options::default()).await;
        let (s, v) = emu
            .upsert("contacts", json!([contact("jane@x.io", "Jane")]))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["status"], "COMPLETE");
        assert!(v["completedAt"].is_string());
        let r = &v["results"][0];
        assert_eq!(r["new"], true);
        let id = r["id"].as_str().unwrap().to_string();
        assert_eq!(r["properties"]["hs_object_id"], id.as_str());
        assert!(r["properties"]["lastmodifieddate"].is_string());
        assert_eq!(r["archived"], false);
        let (s, v) = emu
            .upsert("contacts", json!([contact("jane@x.io", "Janet")]))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["results"][0]["new"], false);
        assert_eq!(v["results"][0]["id"], id.as_str());
        assert_eq!(v["results"][0]["properties"]["firstname"], "Janet");
        let bad = json!({"idProperty": "email", "id": "b@x.io", "properties": {"nope": "1"}});
        let (s, v) = emu
            .upsert("contacts", json!([contact("c@x.io", "C"), bad]))
            .await;
        assert_eq!(s, 207);
        assert_eq!(v["numErrors"].as_u64(), Some(1));
        assert_eq!(v["results"].as_array().unwrap().len(), 1);
        assert_eq!(v["errors"][0]["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
        // Versioned prefix is served by the same handlers; create answers 201.
        let (s, _, v) = emu
            .req(
                "POST",
                "/crm/objects/2026-03/contacts",
                Some(json!({"properties": {"email": "d@x.io"}})),
            )
            .await;
        assert_eq!(s, 201);
        assert_eq!(v["properties"]["email"], "d@x.io");
    }

    #[tokio::test]
    async fn h10_id_property_must_be_unique() {
        let emu = start(Options::default()).await;
        let inp = json!([{"idProperty": "firstname", "id": "x", "properties": {}}]);
        let (s, v) = emu.upsert("contacts", inp).await;
        assert_eq!(s, 400);
        assert_eq!(
            v["message"],
            "Unable to perform update/upsert by non-unique 0-1 property firstname"
        );
        let inp = json!([{"idProperty": "email", "id": "x", "properties": {}}]);
        let (s, v) = emu.upsert("companies", inp).await;
        assert_eq!(s, 400);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("0-2 property email")
        );
        let inp =
            json!([{"idProperty": "pg_external_id", "id": "42", "properties": {"name": "Acme"}}]);
        let (s, v) = emu.upsert("companies", inp).await;
        assert_eq!(s, 200);
        assert_eq!(v["results"][0]["properties"]["pg_external_id"], "42");
    }

    #[tokio::test]
    async fn h11_duplicate_inputs_reject_batch() {
        let emu = start(Options::default()).await;
        let (s, v) = emu
            .upsert(
                "contacts",
                json!([contact("a@x.io", "A"), contact("a@x.io", "B")]),
            )
            .await;
        assert_eq!(s, 400);
        assert_eq!(v["category"], "VALIDATION_ERROR");
    }

    #[tokio::test]
    async fn h12_value_validation() {
        let emu = start(Options::default()).await;
        let inp =
            json!([{"idProperty": "email", "id": "a@x.io", "properties": {"annualrevenue": 5}}]);
        let (s, v) = emu.upsert("contacts", inp).await;
        assert_eq!(s, 400, "non-string value");
        assert_eq!(v["category"], "VALIDATION_ERROR");
        let cases = [
            ("annualrevenue", "abc", false),
            ("annualrevenue", "12.5", true),
            ("lifecyclestage", "Lead", false),
            ("lifecyclestage", "lead", true),
            ("is_vip", "yes", false),
            ("is_vip", "true", true),
            ("date_of_birth", "1572480000000", true),
            ("date_of_birth", "1572480000001", false),
            ("date_of_birth", "2019-10-31", true),
            ("lastmodifieddate", "2019-10-31T00:00:00Z", false),
        ];
        for (i, (k, val, ok)) in cases.into_iter().enumerate() {
            let inp = json!([{"idProperty": "email", "id": format!("v{i}@x.io"), "properties": {k: val}}]);
            let (s, v) = emu.upsert("contacts", inp).await;
            assert_eq!(s == 200, ok, "{k}={val}: {v}");
        }
        let (_, _, v) = emu
            .req(
                "GET",
                "/crm/v3/objects/contacts/v6@x.io?idProperty=email&properties=date_of_birth",
                None,
            )
            .await;
        assert_eq!(v["properties"]["date_of_birth"], "2019-10-31");
        // Empty string clears.
        emu.upsert("contacts", json!([contact("v1@x.io", "X")]))
            .await;
        let inp =
            json!([{"idProperty": "email", "id": "v1@x.io", "properties": {"annualrevenue": ""}}]);
        let (_, v) = emu.upsert("contacts", inp).await;
        assert!(v["results"][0]["properties"].get("annualrevenue").is_none());
    }

    #[tokio::test]
    async fn h13_lastmodified_and_property_history() {
        let emu = start(Options::default()).await;
        let (_, v) = emu
            .upsert("contacts", json!([contact("h@x.io", "One")]))
            .await;
        let id = v["results"][0]["id"].as_str().unwrap().to_string();
        let lm1 = v["results"][0]["properties"]["lastmodifieddate"].clone();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (_, v) = emu
            .upsert("contacts", json!([contact("h@x.io", "Two")]))
            .await;
        assert_ne!(v["results"][0]["properties"]["lastmodifieddate"], lm1);
        assert_eq!(
            v["results"][0]["updatedAt"],
            v["results"][0]["properties"]["lastmodifieddate"]
        );
        let (s, _, v) = emu
            .req(
                "GET",
                &format!("/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname"),
                None,
            )
            .await;
        assert_eq!(s, 200);
        let h = v["propertiesWithHistory"]["firstname"].as_array().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["value"], "Two");
        assert_eq!(h[1]["value"], "One");
        assert_eq!(h[0]["sourceType"], "INTEGRATION");
        assert!(h[0]["timestamp"].is_string());
        let (_, v) = emu
            .upsert(
                "deals",
                json!([{"idProperty": "pg_external_id", "id": "1", "properties": {"dealname": "D"}}]),
            )
            .await;
        assert!(v["results"][0]["properties"]["hs_lastmodifieddate"].is_string());
    }

    #[tokio::test]
    async fn h14_search_keyset_paging_by_lastmodifieddate() {
        let emu = start(Options {
            search_per_second: 100,
            ..Options::default()
        })
        .await;
        let (_, v) = emu
            .upsert("contacts", json!([contact("s0@x.io", "S")]))
            .await;
        let t0 = v["results"][0]["properties"]["lastmodifieddate"]
            .as_str()
            .unwrap()
            .to_string();
        let t0_ms = to_ms(&t0).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let inputs: Vec<Value> = (1..=25)
            .map(|i| contact(&format!("s{i}@x.io"), "S"))
            .collect();
        emu.upsert("contacts", json!(inputs)).await;
        let mut seen = vec![];
        let mut after: Option<String> = None;
        loop {
            let mut body = json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GT", "value": t0_ms.to_string()}]}],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["email"],
                "limit": 10,
            });
            if let Some(a) = &after {
                body["after"] = json!(a);
            }
            let (s, _, v) = emu
                .req("POST", "/crm/v3/objects/contacts/search", Some(body))
                .await;
            assert_eq!(s, 200);
            assert_eq!(v["total"].as_u64(), Some(25));
            for r in v["results"].as_array().unwrap() {
                seen.push(r["properties"]["email"].as_str().unwrap().to_string());
            }
            match v["paging"]["next"]["after"].as_str() {
                Some(a) => after = Some(a.into()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(!seen.contains(&"s0@x.io".to_string()));
        let eq = json!({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "EQ", "value": t0}]}]});
        let (_, _, v) = emu
            .req("POST", "/crm/v3/objects/contacts/search", Some(eq))
            .await;
        assert_eq!(v["total"].as_u64(), Some(1));
        let (s, _, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/search",
                Some(json!({"limit": 201})),
            )
            .await;
        assert_eq!(s, 400);
        let (s, _, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/search",
                Some(json!({"limit": 100, "after": "9950"})),
            )
            .await;
        assert_eq!(s, 400);
    }

    #[tokio::test]
    async fn h15_filter_group_limits() {
        let emu = start(Options::default()).await;
        let f = json!({"propertyName": "email", "operator": "HAS_PROPERTY"});
        let groups: Vec<Value> = (0..6).map(|_| json!({"filters": [f]})).collect();
        let (s, _, v) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/search",
                Some(json!({"filterGroups": groups})),
            )
            .await;
        assert_eq!(s, 400);
        assert_eq!(v["category"], "VALIDATION_ERROR");
    }

    #[tokio::test]
    async fn h16_properties_api_schema() {
        let emu = start(Options::default()).await;
        let (s, _, v) = emu.req("GET", "/crm/v3/properties/contacts", None).await;
        assert_eq!(s, 200);
        let props = v["results"].as_array().unwrap();
        let get = |n: &str| props.iter().find(|p| p["name"] == n).unwrap().clone();
        assert_eq!(get("email")["hasUniqueValue"], true);
        assert_eq!(get("lifecyclestage")["type"], "enumeration");
        assert!(
            !get("lifecyclestage")["options"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            get("hs_object_id")["modificationMetadata"]["readOnlyValue"],
            true
        );
        assert_eq!(get("lastmodifieddate")["type"], "datetime");
        assert_eq!(get("pg_external_id")["hasUniqueValue"], true);
        let (_, _, v) = emu.req("GET", "/crm/v3/properties/deals", None).await;
        assert!(
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "hs_lastmodifieddate")
        );
    }

    #[tokio::test]
    async fn h17_error_shape() {
        let emu = start(Options::default()).await;
        let (s, h, v) = emu
            .req("GET", "/crm/v3/objects/contacts/999999", None)
            .await;
        assert_eq!(s, 404);
        assert_eq!(v["status"], "error");
        assert_eq!(v["category"], "OBJECT_NOT_FOUND");
        assert_eq!(v["correlationId"].as_str().unwrap().len(), 36);
        assert!(h.contains_key("x-hubspot-correlation-id"));
    }

    /// One request straight into the state (no HTTP): status and JSON body.
    async fn call(st: &mut Inner, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer test-token".parse().unwrap());
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let b = Bytes::from(serde_json::to_vec(&body).unwrap());
        let uri: Uri = path.parse().unwrap();
        let r = if path.starts_with("/_emulator/") {
            let Some(rest) = path.strip_prefix("/_emulator/objects/contacts/") else {
                unreachable!()
            };
            let (id, op) = rest.split_once('/').unwrap();
            ui_write(st, "contacts", Some(id), op, &b)
        } else {
            process(st, &m, &uri, &h, &b)
        };
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    type IndexRow = (String, String, String, u64);

    /// The unique-value index as (type, property, value, id) rows, and the same rebuilt from
    /// the live records: they must always be equal.
    fn index_rows(st: &Inner) -> (Vec<IndexRow>, Vec<IndexRow>) {
        let mut kept = vec![];
        for (t, props) in &st.unique {
            for (p, values) in props {
                for (v, id) in values {
                    kept.push((t.to_string(), p.clone(), v.clone(), *id));
                }
            }
        }
        let mut rebuilt = vec![];
        for (t, recs) in &st.objects {
            for r in recs.values().filter(|r| !r.archived) {
                for (p, v) in r.props.iter().filter(|(p, _)| is_unique(t, p)) {
                    rebuilt.push((t.to_string(), p.clone(), v.clone(), r.id));
                }
            }
        }
        kept.sort();
        rebuilt.sort();
        (kept, rebuilt)
    }

    #[tokio::test]
    async fn unique_index_follows_value_changes_and_archives() {
        let mut st = Inner::new(Options::default());
        let ups = "/crm/v3/objects/contacts/batch/upsert";
        let by = |p: &str, id: &str, props: Value| json!({"inputs": [{"idProperty": p, "id": id, "properties": props}]});
        macro_rules! consistent {
            () => {{
                let (kept, rebuilt) = index_rows(&st);
                assert_eq!(kept, rebuilt);
            }};
        }
        // Create by email, then change the email through the other unique property.
        let (s, v) = call(
            &mut st,
            "POST",
            ups,
            by("email", "a@x.io", json!({"pg_external_id": "1"})),
        )
        .await;
        assert_eq!((s, &v["results"][0]["new"]), (200, &json!(true)));
        let first = v["results"][0]["id"].as_str().unwrap().to_string();
        consistent!();
        let (s, v) = call(
            &mut st,
            "POST",
            ups,
            by("pg_external_id", "1", json!({"email": "b@x.io"})),
        )
        .await;
        assert_eq!((s, &v["results"][0]["id"]), (200, &json!(first)));
        consistent!();
        // The old value no longer matches: a new record; the new value matches the first one.
        let (_, v) = call(
            &mut st,
            "POST",
            ups,
            by("email", "a@x.io", json!({"firstname": "A"})),
        )
        .await;
        assert_eq!(v["results"][0]["new"], true);
        let second = v["results"][0]["id"].as_str().unwrap().to_string();
        assert_ne!(second, first);
        let (_, v) = call(
            &mut st,
            "POST",
            ups,
            by("email", "b@x.io", json!({"firstname": "B"})),
        )
        .await;
        assert_eq!(
            (&v["results"][0]["new"], &v["results"][0]["id"]),
            (&json!(false), &json!(first))
        );
        consistent!();
        // Taking a value another live record holds is a conflict and changes nothing.
        let (s, v) = call(
            &mut st,
            "POST",
            ups,
            by("pg_external_id", "1", json!({"email": "a@x.io"})),
        )
        .await;
        assert_eq!((s, v["category"].as_str()), (400, Some("CONFLICT")));
        consistent!();
        // Clearing a value unindexes it.
        let (s, _) = call(
            &mut st,
            "PATCH",
            &format!("/crm/v3/objects/contacts/{first}"),
            json!({"properties": {"email": ""}}),
        )
        .await;
        assert_eq!(s, 200);
        consistent!();
        let (_, v) = call(&mut st, "POST", ups, by("email", "b@x.io", json!({}))).await;
        assert_eq!(v["results"][0]["new"], true);
        consistent!();
        // An archived record leaves the index: an upsert by its value creates a new record,
        // while an archived read still finds it.
        let (s, _) = call(
            &mut st,
            "DELETE",
            &format!("/crm/v3/objects/contacts/{second}"),
            json!(null),
        )
        .await;
        assert_eq!(s, 204);
        consistent!();
        let (_, v) = call(&mut st, "POST", ups, by("email", "a@x.io", json!({}))).await;
        assert_eq!(v["results"][0]["new"], true);
        let fourth = v["results"][0]["id"].as_str().unwrap().to_string();
        consistent!();
        let (s, v) = call(
            &mut st,
            "GET",
            "/crm/v3/objects/contacts/a@x.io?idProperty=email&archived=true",
            json!(null),
        )
        .await;
        assert_eq!((s, &v["id"]), (200, &json!(second)));
        let (_, v) = call(
            &mut st,
            "GET",
            "/crm/v3/objects/contacts/a@x.io?idProperty=email",
            json!(null),
        )
        .await;
        assert_eq!(v["id"], json!(fourth));
        // A UI edit moves the value too; batch/create may then reuse the freed one.
        let (s, _) = call(
            &mut st,
            "POST",
            &format!("/_emulator/objects/contacts/{fourth}/edit"),
            json!({"properties": {"email": "c@x.io"}}),
        )
        .await;
        assert_eq!(s, 200);
        consistent!();
        let create = json!({"inputs": [{"properties": {"email": "a@x.io"}}]});
        let (s, _) = call(
            &mut st,
            "POST",
            "/crm/v3/objects/contacts/batch/create",
            create,
        )
        .await;
        assert_eq!(s, 201);
        consistent!();
        let (kept, _) = index_rows(&st);
        let emails: Vec<&str> = kept
            .iter()
            .filter(|r| r.1 == "email")
            .map(|r| r.2.as_str())
            .collect();
        assert_eq!(emails, ["a@x.io", "b@x.io", "c@x.io"]);
    }

    #[tokio::test]
    async fn h20_archive_hides_and_archived_reads() {
        let emu = start(Options::default()).await;
        let (_, v) = emu
            .upsert("contacts", json!([contact("z@x.io", "Z")]))
            .await;
        let id = v["results"][0]["id"].as_str().unwrap().to_string();
        let (s, _, v) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/batch/archive",
                Some(json!({"inputs": [{"id": id}]})),
            )
            .await;
        assert_eq!(s, 204);
        assert!(v.is_null());
        let path = format!("/crm/v3/objects/contacts/{id}");
        assert_eq!(emu.req("GET", &path, None).await.0, 404);
        let (s, _, v) = emu.req("GET", &format!("{path}?archived=true"), None).await;
        assert_eq!(s, 200);
        assert_eq!(v["archived"], true);
        let (_, _, v) = emu.req("GET", "/crm/v3/objects/contacts", None).await;
        assert!(v["results"].as_array().unwrap().is_empty());
        let (_, _, v) = emu
            .req("POST", "/crm/v3/objects/contacts/search", Some(json!({})))
            .await;
        assert_eq!(v["total"].as_u64(), Some(0));
        // Upserting the archived record's email creates a new record.
        let (_, v) = emu
            .upsert("contacts", json!([contact("z@x.io", "Z2")]))
            .await;
        assert_eq!(v["results"][0]["new"], true);
        assert_ne!(v["results"][0]["id"], id.as_str());
        let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
        assert_eq!(st["objects"]["contacts"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn fault_status_then_success() {
        let emu = start(Options::default()).await;
        emu.faults(json!([{"path": "batch/upsert", "status": 500, "count": 2}]))
            .await;
        for _ in 0..2 {
            let (s, v) = emu
                .upsert("contacts", json!([contact("f@x.io", "F")]))
                .await;
            assert_eq!(s, 500);
            assert_eq!(v["status"], "error");
        }
        let (s, _) = emu
            .upsert("contacts", json!([contact("f@x.io", "F")]))
            .await;
        assert_eq!(s, 200);
        emu.faults(json!({"path": "contacts", "status": 429})).await;
        let (s, v) = emu
            .upsert("contacts", json!([contact("f@x.io", "G")]))
            .await;
        assert_eq!(s, 429);
        assert_eq!(v["policyName"], "TEN_SECONDLY_ROLLING");
    }

    #[tokio::test]
    async fn fault_fail_after_write_applies_write() {
        let emu = start(Options::default()).await;
        emu.faults(json!({"path": "batch/upsert", "fail_after_write": true}))
            .await;
        let (s, _) = emu
            .upsert("contacts", json!([contact("w@x.io", "W")]))
            .await;
        assert_eq!(s, 500);
        let (s, _, v) = emu
            .req(
                "GET",
                "/crm/v3/objects/contacts/w@x.io?idProperty=email",
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["properties"]["firstname"], "W");
    }

    #[tokio::test]
    async fn fault_delay_and_reset_connection() {
        let emu = start(Options::default()).await;
        emu.faults(json!([{"path": "/crm/", "delay_ms": 300}, {"path": "/crm/", "reset_connection": true}]))
            .await;
        let t = Instant::now();
        assert_eq!(
            emu.req("GET", "/crm/v3/objects/contacts", None).await.0,
            200
        );
        assert!(t.elapsed() >= Duration::from_millis(300));
        let r = emu
            .client
            .get(format!("{}/crm/v3/objects/contacts", emu.base))
            .bearer_auth("test-token")
            .send()
            .await;
        let failed = match r {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(failed, "connection must be aborted");
        assert_eq!(
            emu.req("GET", "/crm/v3/objects/contacts", None).await.0,
            200
        );
        let (s, _, _) = emu.req("POST", "/_emulator/reset", None).await;
        assert_eq!(s, 204);
    }

    // -----------------------------------------------------------------------------------------
    // Webhooks (H18, H19, H20 deletion events) and UI edits

    use crate::destinations::hubspot::signature as sig;

    const SECRET: &str = "hook-secret";

    /// One request received by the test receiver.
    #[derive(Clone, Debug)]
    struct Delivery {
        at: Instant,
        url: String,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Delivery {
        fn events(&self) -> Vec<Value> {
            serde_json::from_slice::<Vec<Value>>(&self.body).expect("a JSON array")
        }
    }

    /// A scripted reply: status, optional `Retry-After`, delay before answering.
    type Reply = (u16, Option<&'static str>, u64);

    /// A local webhook receiver: records deliveries, answers from a script, then 200.
    struct Receiver {
        url: String,
        got: Arc<Mutex<Vec<Delivery>>>,
    }

    impl Receiver {
        async fn start(script: Vec<Reply>) -> Receiver {
            let got = Arc::new(Mutex::new(vec![]));
            let script = Arc::new(Mutex::new(VecDeque::from(script)));
            let (g, s) = (got.clone(), script.clone());
            let app =
                axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                    let (g, s) = (g.clone(), s.clone());
                    async move {
                        let host = headers[header::HOST].to_str().unwrap().to_string();
                        g.lock().unwrap().push(Delivery {
                            at: Instant::now(),
                            url: format!("http://{host}{uri}"),
                            headers,
                            body,
                        });
                        let (status, retry_after, delay) =
                            s.lock().unwrap().pop_front().unwrap_or((200, None, 0));
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let mut r = empty(StatusCode::from_u16(status).unwrap());
                        if let Some(ra) = retry_after {
                            r.headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from_static(ra));
                        }
                        r
                    }
                });
            let base = crate::emulate::serve_for_test(app).await;
            Receiver {
                url: format!("{base}/hubspot/hooks?tenant=a%40b"),
                got,
            }
        }

        fn deliveries(&self) -> Vec<Delivery> {
            self.got.lock().unwrap().clone()
        }

        fn events(&self) -> Vec<Value> {
            self.deliveries()
                .iter()
                .flat_map(Delivery::events)
                .collect()
        }

        /// Waits until `n` events arrived (panics after 10 s).
        async fn wait_events(&self, n: usize) -> Vec<Value> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ev = self.events();
                if ev.len() >= n {
                    return ev;
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} events arrived: {ev:?}",
                    ev.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Waits until `n` requests arrived (panics after 10 s).
        async fn wait_requests(&self, n: usize) -> Vec<Delivery> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let d = self.deliveries();
                if d.len() >= n {
                    return d;
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} requests",
                    d.len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    impl Emu {
        async fn hooks(&self, rx: &Receiver, extra: Value) -> Value {
            let mut cfg = json!({"target_url": rx.url, "client_secret": SECRET, "app_id": 777,
                                 "retry_base_ms": 20});
            for (k, v) in extra.as_object().unwrap() {
                cfg[k] = v.clone();
            }
            let (s, _, v) = self.req("POST", "/_emulator/webhooks", Some(cfg)).await;
            assert_eq!(s, 200, "{v}");
            v
        }

        async fn hook_stats(&self) -> Value {
            let (s, _, v) = self.req("GET", "/_emulator/webhooks", None).await;
            assert_eq!(s, 200);
            v
        }

        /// Waits until the emulator has no pending events and `requests` requests were made.
        async fn settle(&self, requests: u64) -> Value {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let v = self.hook_stats().await;
                if v["pending"] == 0 && v["stats"]["requests"].as_u64() >= Some(requests) {
                    return v;
                }
                assert!(Instant::now() < deadline, "not settled: {v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn by_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
        events
            .iter()
            .filter(|e| e["subscriptionType"] == ty)
            .collect()
    }

    #[tokio::test]
    async fn h18_webhooks_for_create_change_delete_are_signed() {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![]).await;
        let cfg = emu.hooks(&rx, json!({})).await;
        assert_eq!(cfg["config"]["max_batch"], 100);
        assert_eq!(cfg["config"]["events"].as_array().unwrap().len(), 9);

        let (_, v) = emu
            .upsert("contacts", json!([contact("w@x.io", "Ann")]))
            .await;
        let id: u64 = v["results"][0]["id"].as_str().unwrap().parse().unwrap();
        let ev = rx.wait_events(3).await;
        let created = by_type(&ev, "contact.creation");
        assert_eq!(created.len(), 1);
        let c = created[0];
        assert_eq!(c["objectId"], id);
        assert_eq!(c["portalId"], 62515);
        assert_eq!(c["appId"], 777);
        assert_eq!(c["attemptNumber"], 0);
        assert_eq!(c["changeFlag"], "CREATED");
        assert_eq!(c["changeSource"], "INTEGRATION");
        assert_eq!(c["sourceId"], "driftless");
        assert!(c["occurredAt"].as_i64().unwrap() > 1_600_000_000_000);
        let subs = cfg["subscriptions"].as_array().unwrap();
        let sub_id = subs
            .iter()
            .find(|s| s["eventType"] == "contact.creation")
            .unwrap()["id"]
            .clone();
        assert_eq!(c["subscriptionId"], sub_id);
        // Values set at creation are property changes too (unset → set).
        let mut props: Vec<(String, String)> = by_type(&ev, "contact.propertyChange")
            .iter()
            .map(|e| {
                assert_eq!(e["objectId"], id);
                assert_eq!(e["changeSource"], "INTEGRATION");
                assert_eq!(e["sourceId"], "driftless");
                (
                    e["propertyName"].as_str().unwrap().into(),
                    e["propertyValue"].as_str().unwrap().into(),
                )
            })
            .collect();
        props.sort();
        assert_eq!(
            props,
            [
                ("email".into(), "w@x.io".into()),
                ("firstname".into(), "Ann".into())
            ]
        );

        // Headers and signatures of the request.
        let d = &rx.deliveries()[0];
        assert_eq!(d.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(d.headers["x-hubspot-signature-version"], "v1");
        let ts_header = d.headers["x-hubspot-request-timestamp"].to_str().unwrap();
        let ts = sig::parse_timestamp(ts_header).unwrap();
        let now = Utc::now().timestamp_millis();
        assert!((now - ts).abs() < 60_000);
        let v3 = d.headers["x-hubspot-signature-v3"].to_str().unwrap();
        assert_eq!(d.url, rx.url);
        assert_eq!(
            sig::verify_v3(SECRET, "POST", &d.url, &d.body, v3, ts, now),
            Ok(())
        );
        assert_eq!(
            sig::verify_v3("wrong", "POST", &d.url, &d.body, v3, ts, now),
            Err(sig::SignatureError::Mismatch)
        );
        let v1 = d.headers["x-hubspot-signature"].to_str().unwrap();
        assert_eq!(sig::verify_v1(SECRET, &d.body, v1), Ok(()));

        // An update emits exactly one change; a no-op write emits nothing.
        emu.upsert("contacts", json!([contact("w@x.io", "Bea")]))
            .await;
        let ev = rx.wait_events(4).await;
        let last = &ev[3];
        assert_eq!(last["subscriptionType"], "contact.propertyChange");
        assert_eq!(last["propertyName"], "firstname");
        assert_eq!(last["propertyValue"], "Bea");
        let (s, _, _) = emu
            .req(
                "PATCH",
                &format!("/crm/v3/objects/contacts/{id}"),
                Some(json!({"properties": {"firstname": "Bea", "email": "w@x.io"}})),
            )
            .await;
        assert_eq!(s, 200);
        emu.upsert("contacts", json!([contact("w@x.io", "Bea")]))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.events().len(), 4);

        // Deletions: single DELETE and batch/archive; archiving twice emits once.
        let (_, v) = emu
            .upsert("contacts", json!([contact("z@x.io", "Zed")]))
            .await;
        let id2: u64 = v["results"][0]["id"].as_str().unwrap().parse().unwrap();
        let (s, _, _) = emu
            .req("DELETE", &format!("/crm/v3/objects/contacts/{id}"), None)
            .await;
        assert_eq!(s, 204);
        for _ in 0..2 {
            let (s, _, _) = emu
                .req(
                    "POST",
                    "/crm/v3/objects/contacts/batch/archive",
                    Some(json!({"inputs": [{"id": id2.to_string()}]})),
                )
                .await;
            assert_eq!(s, 204);
        }
        // Other object types use their own names.
        let (s, _, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/companies",
                Some(json!({"properties": {"name": "Acme"}})),
            )
            .await;
        assert_eq!(s, 201);
        let ev = rx.wait_events(11).await;
        let deleted: Vec<u64> = by_type(&ev, "contact.deletion")
            .iter()
            .map(|e| {
                assert_eq!(e["changeFlag"], "DELETED");
                assert_eq!(e["changeSource"], "INTEGRATION");
                e["objectId"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(deleted, [id, id2]);
        assert_eq!(by_type(&ev, "company.creation").len(), 1);
        assert_eq!(
            by_type(&ev, "company.propertyChange")[0]["propertyName"],
            "name"
        );
        // Event ids are unique and increasing in (unshuffled) delivery order.
        let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rx.events().len(), 11);
        let st = emu.hook_stats().await;
        assert_eq!(st["stats"]["events_delivered"], 11);
        assert_eq!(st["stats"]["failures"], 0);
        assert_eq!(st["stats"]["retries"], 0);
    }

    #[tokio::test]
    async fn ui_edit_emits_crm_ui_changes_and_records_history() {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![]).await;
        emu.hooks(&rx, json!({"events": ["contact.propertyChange"]}))
            .await;
        let (_, v) = emu
            .upsert("contacts", json!([contact("u@x.io", "Api")]))
            .await;
        let id = v["results"][0]["id"].as_str().unwrap().to_string();
        let lm1 = v["results"][0]["properties"]["lastmodifieddate"].clone();
        rx.wait_events(2).await;
        tokio::time::sleep(Duration::from_millis(5)).await;

        let edit = format!("/_emulator/objects/contacts/{id}/edit");
        let (s, _, v) = emu
            .req(
                "POST",
                &edit,
                Some(json!({"properties": {"firstname": "Ui", "lastname": "Edit"}, "userId": 123})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["properties"]["firstname"], "Ui");
        assert_ne!(v["properties"]["lastmodifieddate"], lm1);
        let ev = rx.wait_events(4).await;
        for e in &ev[2..] {
            assert_eq!(e["changeSource"], "CRM_UI");
            assert_eq!(e["sourceId"], "userId:123");
            assert_eq!(e["objectId"].to_string(), id);
        }
        let names: Vec<&str> = ev[2..]
            .iter()
            .map(|e| e["propertyName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["firstname", "lastname"]);

        let (_, _, v) = emu
            .req(
                "GET",
                &format!("/crm/v3/objects/contacts/{id}?propertiesWithHistory=firstname"),
                None,
            )
            .await;
        let h = &v["propertiesWithHistory"]["firstname"];
        assert_eq!(h[0]["value"], "Ui");
        assert_eq!(h[0]["sourceType"], "CRM_UI");
        assert_eq!(h[0]["sourceId"], "userId:123");
        assert_eq!(h[0]["updatedByUserId"], 123);
        assert_eq!(h[1]["sourceType"], "INTEGRATION");
        assert_eq!(h[1]["updatedByUserId"], Value::Null);

        // A UI edit that changes nothing emits nothing; bad input and unknown ids are refused.
        let (s, _, _) = emu
            .req(
                "POST",
                &edit,
                Some(json!({"properties": {"firstname": "Ui"}})),
            )
            .await;
        assert_eq!(s, 200);
        let (s, _, _) = emu
            .req("POST", &edit, Some(json!({"properties": {"nope": "x"}})))
            .await;
        assert_eq!(s, 400);
        let (s, _, _) = emu
            .req(
                "POST",
                "/_emulator/objects/contacts/999999/edit",
                Some(json!({"properties": {"firstname": "x"}})),
            )
            .await;
        assert_eq!(s, 404);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(rx.events().len(), 4);

        // UI create and archive (singular type names are accepted too).
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation", "contact.deletion"]}),
        )
        .await;
        let (s, _, v) = emu
            .req(
                "POST",
                "/_emulator/objects/contact",
                Some(json!({"properties": {"email": "new@x.io"}, "userId": 9})),
            )
            .await;
        assert_eq!(s, 201);
        let new_id = v["id"].as_str().unwrap().to_string();
        let (s, _, _) = emu
            .req(
                "POST",
                &format!("/_emulator/objects/contacts/{new_id}/archive"),
                None,
            )
            .await;
        assert_eq!(s, 204);
        let ev = rx.wait_events(6).await;
        assert_eq!(ev[4]["subscriptionType"], "contact.creation");
        assert_eq!(ev[5]["subscriptionType"], "contact.deletion");
        assert_eq!(ev[5]["sourceId"], "userId:1");
        // UI writes go around the API: no requests counted against the token.
        let (_, _, st) = emu.req("GET", "/_emulator/state", None).await;
        assert!(st["requests"]["byPath"].get(&edit).is_none());
    }

    #[tokio::test]
    async fn h19_retries_5xx_with_backoff_and_attempt_numbers() {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![(500, None, 0), (503, None, 0)]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "retry_base_ms": 100}),
        )
        .await;
        emu.upsert("contacts", json!([contact("r@x.io", "R")]))
            .await;
        let d = rx.wait_requests(3).await;
        let attempts: Vec<Value> = d
            .iter()
            .map(|d| d.events()[0]["attemptNumber"].clone())
            .collect();
        assert_eq!(attempts, [0, 1, 2]);
        let ids: Vec<Value> = d.iter().map(|d| d.events()[0]["eventId"].clone()).collect();
        assert!(ids.iter().all(|i| *i == ids[0]));
        // Exponential backoff: 100 ms, then 200 ms.
        assert!(d[1].at - d[0].at >= Duration::from_millis(90));
        assert!(d[2].at - d[1].at >= Duration::from_millis(190));
        // Each retry is signed afresh.
        let ts = sig::parse_timestamp(
            d[2].headers["x-hubspot-request-timestamp"]
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let v3 = d[2].headers["x-hubspot-signature-v3"].to_str().unwrap();
        assert_eq!(
            sig::verify_v3(SECRET, "POST", &d[2].url, &d[2].body, v3, ts, ts),
            Ok(())
        );
        let st = emu.settle(3).await;
        assert_eq!(st["stats"]["retries"], 2);
        assert_eq!(st["stats"]["events_delivered"], 1);
        assert_eq!(st["stats"]["failures"], 0);
        assert_eq!(st["stats"]["last_status"], 200);
    }

    #[tokio::test]
    async fn h19_client_errors_are_not_retried_and_retries_are_bounded() {
        for status in [400, 401, 403, 404, 405] {
            let emu = start(Options::default()).await;
            let rx = Receiver::start(vec![(status, None, 0)]).await;
            emu.hooks(&rx, json!({"events": ["contact.creation"]}))
                .await;
            emu.upsert("contacts", json!([contact("n@x.io", "N")]))
                .await;
            rx.wait_requests(1).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(rx.deliveries().len(), 1, "{status} must not be retried");
            let st = emu.settle(1).await;
            assert_eq!(st["stats"]["failures"], 1);
            assert_eq!(st["stats"]["retries"], 0);
            assert_eq!(st["stats"]["last_status"], status);
        }
        // 3xx/5xx are retried, but only max_retries times.
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![(302, None, 0), (502, None, 0), (500, None, 0)]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "max_retries": 2, "retry_base_ms": 10}),
        )
        .await;
        emu.upsert("contacts", json!([contact("m@x.io", "M")]))
            .await;
        rx.wait_requests(3).await;
        let st = emu.settle(3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rx.deliveries().len(), 3);
        assert_eq!(st["stats"]["retries"], 2);
        assert_eq!(st["stats"]["failures"], 1);
        assert_eq!(st["stats"]["events_delivered"], 0);
    }

    #[tokio::test]
    async fn h19_timeouts_connect_failures_and_retry_after() {
        // A reply slower than timeout_ms is retried.
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![(200, None, 1000)]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "timeout_ms": 150}),
        )
        .await;
        emu.upsert("contacts", json!([contact("t@x.io", "T")]))
            .await;
        let d = rx.wait_requests(2).await;
        assert_eq!(d[1].events()[0]["attemptNumber"], 1);
        assert_eq!(
            d[0].headers["x-hubspot-timeout-millis"].to_str().unwrap(),
            "150"
        );
        let st = emu.settle(2).await;
        assert_eq!(st["stats"]["retries"], 1);
        assert_eq!(st["stats"]["events_delivered"], 1);

        // 429 honours Retry-After (1 s) instead of the (10 s) backoff.
        let rx = Receiver::start(vec![(429, Some("1"), 0)]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "retry_base_ms": 10_000}),
        )
        .await;
        emu.upsert("contacts", json!([contact("q@x.io", "Q")]))
            .await;
        let d = rx.wait_requests(2).await;
        let gap = d[1].at - d[0].at;
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_secs(5),
            "{gap:?}"
        );
        assert_eq!(d[1].events()[0]["attemptNumber"], 1);

        // Nothing listening: connection failures are retried until max_retries.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (s, _, _) = emu
            .req(
                "POST",
                "/_emulator/webhooks",
                Some(
                    json!({"target_url": format!("http://{dead}/x"), "client_secret": SECRET,
                            "events": ["contact.creation"], "retry_base_ms": 5, "max_retries": 3}),
                ),
            )
            .await;
        assert_eq!(s, 200);
        emu.upsert("contacts", json!([contact("c@x.io", "C")]))
            .await;
        let st = emu.settle(4).await;
        assert_eq!(st["stats"]["requests"], 4);
        assert_eq!(st["stats"]["retries"], 3);
        assert_eq!(st["stats"]["failures"], 1);
        assert_eq!(st["stats"]["last_status"], Value::Null);
    }

    async fn create_contacts(emu: &Emu, prefix: &str, n: usize) {
        let inputs: Vec<Value> = (0..n)
            .map(|i| json!({"properties": {"email": format!("{prefix}{i}@x.io")}}))
            .collect();
        let (s, _, _) = emu
            .req(
                "POST",
                "/crm/v3/objects/contacts/batch/create",
                Some(json!({ "inputs": inputs })),
            )
            .await;
        assert_eq!(s, 201);
    }

    #[tokio::test]
    async fn h18_batches_are_capped_and_shuffle_reorders() {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "max_batch": 5, "batch_window_ms": 200}),
        )
        .await;
        create_contacts(&emu, "a", 12).await;
        let ev = rx.wait_events(12).await;
        let sizes: Vec<usize> = rx.deliveries().iter().map(|d| d.events().len()).collect();
        assert_eq!(sizes, [5, 5, 2]);
        let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));

        let rx = Receiver::start(vec![]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.propertyChange"], "max_batch": 5,
                   "batch_window_ms": 200, "shuffle": true}),
        )
        .await;
        create_contacts(&emu, "s", 30).await;
        let ev = rx.wait_events(30).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rx.events().len(), 30);
        assert!(rx.deliveries().iter().all(|d| d.events().len() <= 5));
        let ids: Vec<u64> = ev.iter().map(|e| e["eventId"].as_u64().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 30, "every event exactly once");
        assert_ne!(ids, sorted, "shuffle must reorder (30! orders)");
        // Reordered across requests too: the first request is not just the 5 oldest, in some order.
        let mut first: Vec<u64> = ids[..5].to_vec();
        first.sort_unstable();
        let across = first != sorted[..5]
            || rx.deliveries()[1..].iter().any(|d| {
                let mut b: Vec<u64> = d
                    .events()
                    .iter()
                    .map(|e| e["eventId"].as_u64().unwrap())
                    .collect();
                b.sort_unstable();
                b.windows(2).any(|w| w[1] - w[0] > 1)
            });
        assert!(across, "{ids:?}");
    }

    #[tokio::test]
    async fn h19_duplicate_and_drop_knobs() {
        let emu = start(Options::default()).await;
        let rx = Receiver::start(vec![]).await;
        emu.hooks(
            &rx,
            json!({"events": ["contact.creation"], "duplicate_every": 3, "drop_every": 4}),
        )
        .await;
        create_contacts(&emu, "d", 12).await;
        // Events 1..=12: 4, 8, 12 dropped; 3, 6, 9 sent twice → 9 distinct, 12 deliveries.
        let ev = rx.wait_events(12).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(rx.events().len(), 12);
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for e in &ev {
            *counts.entry(e["eventId"].as_u64().unwrap()).or_default() += 1;
        }
        let first = *counts.keys().next().unwrap();
        let expect: BTreeMap<u64, usize> = (1..=12u64)
            .filter(|n| n % 4 != 0)
            .map(|n| (first + n - 1, if n % 3 == 0 { 2 } else { 1 }))
            .collect();
        assert_eq!(counts, expect);
        let st = emu.settle(1).await;
        assert_eq!(st["stats"]["dropped"], 3);
        assert_eq!(st["stats"]["duplicated"], 3);
        assert_eq!(st["stats"]["events_delivered"], 12);
    }

    #[tokio::test]
    async fn webhook_config_validation_delete_and_reset() {
        let emu = start(Options::default()).await;
        let (s, _, _) = emu.req("GET", "/_emulator/webhooks", None).await;
        assert_eq!(s, 404);
        let rx = Receiver::start(vec![]).await;
        for bad in [
            json!({"target_url": rx.url, "client_secret": "s", "events": ["contact.merge"]}),
            json!({"target_url": "not a url", "client_secret": "s"}),
            json!({"target_url": rx.url, "client_secret": "s", "max_batch": 0}),
            json!({"target_url": rx.url, "client_secret": "s", "bogus": 1}),
            json!({"client_secret": "s"}),
        ] {
            let (s, _, _) = emu.req("POST", "/_emulator/webhooks", Some(bad)).await;
            assert_eq!(s, 400);
        }
        // Only subscribed event types and properties are delivered.
        emu.hooks(
            &rx,
            json!({"events": ["contact.propertyChange"], "properties": ["lastname"]}),
        )
        .await;
        emu.upsert(
            "contacts",
            json!([{"idProperty": "email", "id": "p@x.io",
                    "properties": {"firstname": "F", "lastname": "L"}}]),
        )
        .await;
        let ev = rx.wait_events(1).await;
        assert_eq!(ev[0]["propertyName"], "lastname");
        // DELETE stops deliveries; so does reset.
        let (s, _, _) = emu.req("DELETE", "/_emulator/webhooks", None).await;
        assert_eq!(s, 204);
        emu.upsert("contacts", json!([contact("p@x.io", "G")]))
            .await;
        emu.hooks(&rx, json!({})).await;
        let (s, _, _) = emu.req("POST", "/_emulator/reset", None).await;
        assert_eq!(s, 204);
        emu.upsert("contacts", json!([contact("p@x.io", "H")]))
            .await;
        let (s, _, _) = emu.req("GET", "/_emulator/webhooks", None).await;
        assert_eq!(s, 404);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(rx.events().len(), 1);
    }
}
