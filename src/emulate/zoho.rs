//! In-memory emulator of the Zoho CRM v8 REST API (`driftless emulate zoho`).
//!
//! Follows `shared/docs/saas-contracts.md` §2 and the §4 "Zoho emulator" checklist.
//!
//! Implemented checklist items:
//! - **Z1** `Authorization: Zoho-oauthtoken <t>` only (`Bearer` fails); invalid/expired → 401
//!   `INVALID_TOKEN`.
//! - **Z2** `POST /oauth/v2/token` (query string or urlencoded body); ≤10 mints per refresh token
//!   per 10 min; ≤30 live access tokens per refresh token (oldest evicted).
//! - **Z3** insert / update / upsert, ≤100 records (else 400 `LIMIT_EXCEEDED`), `data[]` in input
//!   order mixing success and error items. HTTP status: all ok → 201 (insert) / 200 (update,
//!   upsert); mixed → 207; all failed → 400.
//! - **Z4** upsert matching by `duplicate_check_fields` order, else system field then unique fields.
//! - **Z5** `DUPLICATE_DATA` (with `duplicate_record.id`), `MANDATORY_NOT_FOUND`, `INVALID_DATA`
//!   (type, picklist, `maximum_length`, invalid id), `NOT_ALLOWED` (read-only), `INVALID_MODULE`.
//! - **Z7** concurrency gate per access token (429 `TOO_MANY_REQUESTS`).
//! - **Z8** rolling-24 h credit ledger; 1 credit per call, COQL 1/2/3 by LIMIT band; exhausted →
//!   429 `TOO_MANY_REQUESTS`.
//! - **Z9** `trigger` absent → workflows "run"; `[]` → none; logged in `/_emulator/state`.
//! - **Z10** `Modified_Time`/`Created_Time` as `YYYY-MM-DDTHH:MM:SS+00:00`, `Modified_By`;
//!   soft delete to the recycle bin; `GET /{Module}/deleted?type=all|recycle|permanent`.
//! - **Z11** COQL subset: `select f,.. from M [where <expr>] [order by f [asc|desc],..]
//!   [limit n [offset m] | limit m, n]` with `and`/`or`/parentheses, `= != <> < <= > >=`,
//!   `like`, `in`, `not in`, `is [not] null`; LIMIT ≤2000, OFFSET+LIMIT ≤100 000, ≤25 criteria;
//!   parse errors → 400 `SYNTAX_ERROR`; `info{count, more_records}`.
//! - **Z12** `/crm/v8/actions/watch` POST/GET/PATCH/PUT/DELETE; expiry default 1 h, capped at
//!   [`Options::max_channel_expiry`]; callbacks POSTed asynchronously, none after expiry.
//! - **Z13** `GET /crm/v8/settings/fields?module=X` for Leads, Contacts, Accounts, Deals.
//!
//! Not implemented / simplified: **Z6** (`X-EXTERNAL`), the sub-concurrency gate of 10 for heavy
//! calls, `/search`, `page_token`, `If-Modified-Since`, bulk write. Unknown field names in writes
//! are ignored (as Zoho does). OAuth errors return HTTP 200 with `{"error": ..}` like Zoho, except
//! the mint-rate error (400). All tokens act as the single user [`Options::user_id`].
//!
//! Test control (not Zoho): `GET /_emulator/state`, `POST /_emulator/reset`,
//! `POST /_emulator/faults` (one fault object, an array, or `{"faults": [...]}`; each fault has
//! optional `path` substring, `method`, `count` (default 1), `status`, `delay_ms`,
//! `fail_after_write`, `expire_tokens`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Emulator options.
#[derive(Clone, Debug)]
pub struct Options {
    /// OAuth client id accepted by `/oauth/v2/token`.
    pub client_id: String,
    /// OAuth client secret accepted by `/oauth/v2/token`.
    pub client_secret: String,
    /// Refresh tokens that can mint access tokens.
    pub refresh_tokens: Vec<String>,
    /// Access tokens valid from start (and after reset) for `token_ttl`.
    pub access_tokens: Vec<String>,
    /// Access-token lifetime (Zoho: 1 hour).
    pub token_ttl: Duration,
    /// `api_domain` returned with tokens and used in `resource_uri`.
    pub api_domain: String,
    /// API credits per rolling 24 h window.
    pub credits_per_day: u64,
    /// Maximum concurrent in-flight requests per access token.
    pub concurrency_limit: usize,
    /// Maximum notification channel lifetime (Zoho: one day); longer or absent → 1 h.
    pub max_channel_expiry: Duration,
    /// Whether notification callbacks are actually POSTed (they are always logged in state).
    pub send_notifications: bool,
    /// Id of the user every token acts as (`Created_By`/`Modified_By`).
    pub user_id: String,
    /// Name of that user.
    pub user_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_id: "test-client-id".into(),
            client_secret: "test-client-secret".into(),
            refresh_tokens: vec!["test-refresh-token".into()],
            access_tokens: vec!["test-access-token".into()],
            token_ttl: Duration::from_secs(3600),
            api_domain: "https://www.zohoapis.com".into(),
            credits_per_day: 5000,
            concurrency_limit: 10,
            max_channel_expiry: Duration::from_secs(86_400),
            send_notifications: true,
            user_id: "5545974000000240001".into(),
            user_name: "Driftless Integration".into(),
        }
    }
}

/// The emulator's HTTP routes.
pub fn router(options: Options) -> axum::Router {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    let inner = Inner::new(&options);
    let app = App {
        opts: Arc::new(options),
        st: Arc::new(Mutex::new(inner)),
        client,
    };
    axum::Router::new().fallback(dispatch).with_state(app)
}

// ---------------------------------------------------------------- schema

#[derive(Clone, Debug)]
struct FieldDef {
    api: &'static str,
    ty: &'static str,
    len: usize,
    unique: bool,
    external: bool,
    read_only: bool,
    mandatory: bool,
    picks: &'static [&'static str],
}

fn fd(api: &'static str, ty: &'static str) -> FieldDef {
    let len = match ty {
        "text" | "email" => 255,
        "phone" => 30,
        "textarea" => 32000,
        _ => 0,
    };
    FieldDef {
        api,
        ty,
        len,
        unique: false,
        external: false,
        read_only: false,
        mandatory: false,
        picks: &[],
    }
}

impl FieldDef {
    fn uniq(mut self) -> Self {
        self.unique = true;
        self
    }
    fn ro(mut self) -> Self {
        self.read_only = true;
        self
    }
    fn mand(mut self) -> Self {
        self.mandatory = true;
        self
    }
    fn ext(mut self) -> Self {
        self.external = true;
        self.unique = true;
        self
    }
    fn picks(mut self, p: &'static [&'static str]) -> Self {
        self.picks = p;
        self
    }
}

const MODULES: [&str; 4] = ["Leads", "Contacts", "Accounts", "Deals"];

fn schema(module: &str) -> Option<Vec<FieldDef>> {
    let mut v = vec![
        fd("id", "bigint").ro(),
        fd("Created_Time", "datetime").ro(),
        fd("Modified_Time", "datetime").ro(),
        fd("Created_By", "ownerlookup").ro(),
        fd("Modified_By", "ownerlookup").ro(),
        fd("Owner", "ownerlookup"),
        fd("External_Id", "text").ext(),
    ];
    const SOURCES: &[&str] = &[
        "-None-",
        "Advertisement",
        "Cold Call",
        "Web Download",
        "Partner",
    ];
    match module {
        "Leads" => v.extend([
            fd("Last_Name", "text").mand(),
            fd("First_Name", "text"),
            fd("Email", "email").uniq(),
            fd("Phone", "phone"),
            fd("Company", "text"),
            fd("Lead_Status", "picklist").picks(&[
                "-None-",
                "Not Contacted",
                "Attempted to Contact",
                "Contacted",
                "Qualified",
                "Lost Lead",
            ]),
            fd("Lead_Source", "picklist").picks(SOURCES),
            fd("Annual_Revenue", "double"),
            fd("No_of_Employees", "integer"),
            fd("Email_Opt_Out", "boolean"),
            fd("Description", "textarea"),
        ]),
        "Contacts" => v.extend([
            fd("Last_Name", "text").mand(),
            fd("First_Name", "text"),
            fd("Email", "email").uniq(),
            fd("Phone", "phone"),
            fd("Date_of_Birth", "date"),
            fd("Account_Name", "lookup"),
            fd("Lead_Source", "picklist").picks(SOURCES),
            fd("Email_Opt_Out", "boolean"),
            fd("Description", "textarea"),
        ]),
        "Accounts" => v.extend([
            fd("Account_Name", "text").mand(),
            fd("Phone", "phone"),
            fd("Website", "text"),
            fd("Industry", "picklist").picks(&[
                "-None-",
                "Technology",
                "Finance",
                "Manufacturing",
                "Retail",
                "Other",
            ]),
            fd("Employees", "integer"),
            fd("Annual_Revenue", "double"),
            fd("Description", "textarea"),
        ]),
        "Deals" => v.extend([
            fd("Deal_Name", "text").mand(),
            fd("Stage", "picklist").mand().picks(&[
                "Qualification",
                "Needs Analysis",
                "Proposal/Price Quote",
                "Negotiation/Review",
                "Closed Won",
                "Closed Lost",
            ]),
            fd("Amount", "double"),
            fd("Closing_Date", "date"),
            fd("Account_Name", "lookup"),
            fd("Probability", "integer"),
            fd("Last_Activity_Time", "datetime"),
            fd("Description", "textarea"),
        ]),
        _ => return None,
    }
    Some(v)
}

fn system_dup_field(module: &str) -> &'static str {
    match module {
        "Accounts" => "Account_Name",
        "Deals" => "Deal_Name",
        _ => "Email",
    }
}

fn field_json(f: &FieldDef) -> Value {
    let picks: Vec<Value> = f
        .picks
        .iter()
        .map(|p| json!({"display_value": p, "actual_value": p}))
        .collect();
    json!({
        "api_name": f.api, "data_type": f.ty, "length": f.len,
        "unique": {"casesensitive": if f.unique {"false"} else {"-1"}},
        "external": if f.external { json!({"show": true, "type": "user"}) } else { Value::Null },
        "read_only": f.read_only, "system_mandatory": f.mandatory,
        "pick_list_values": picks,
    })
}

// ---------------------------------------------------------------- state

struct Record {
    id: u64,
    module: String,
    fields: Map<String, Value>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    deleted: Option<DateTime<Utc>>,
}

struct Token {
    refresh: Option<String>,
    expires: Instant,
    issued: Instant,
}

struct Channel {
    channel_id: String,
    events: Vec<String>,
    notify_url: String,
    token: Option<String>,
    expiry: DateTime<Utc>,
    affected_values: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct Fault {
    path: Option<String>,
    method: Option<String>,
    count: Option<u32>,
    status: Option<u16>,
    delay_ms: Option<u64>,
    fail_after_write: bool,
    expire_tokens: bool,
}

struct Inner {
    records: Vec<Record>,
    next_id: u64,
    tokens: HashMap<String, Token>,
    mints: HashMap<String, VecDeque<Instant>>,
    in_flight: HashMap<String, usize>,
    max_concurrent: usize,
    credits: VecDeque<(Instant, u64)>,
    request_counts: BTreeMap<String, u64>,
    write_calls: Vec<Value>,
    workflow_runs: u64,
    channels: Vec<Channel>,
    notifications: Vec<Value>,
    faults: Vec<Fault>,
    rejected_429: u64,
}

impl Inner {
    fn new(o: &Options) -> Self {
        let now = Instant::now();
        let tokens = o
            .access_tokens
            .iter()
            .map(|t| {
                let tok = Token {
                    refresh: None,
                    expires: now + o.token_ttl,
                    issued: now,
                };
                (t.clone(), tok)
            })
            .collect();
        Inner {
            records: Vec::new(),
            next_id: 5_545_974_000_000_300_000,
            tokens,
            mints: HashMap::new(),
            in_flight: HashMap::new(),
            max_concurrent: 0,
            credits: VecDeque::new(),
            request_counts: BTreeMap::new(),
            write_calls: Vec::new(),
            workflow_runs: 0,
            channels: Vec::new(),
            notifications: Vec::new(),
            faults: Vec::new(),
            rejected_429: 0,
        }
    }

    fn take_fault(&mut self, path: &str, method: &Method) -> Option<Fault> {
        let idx = self.faults.iter().position(|f| {
            f.path.as_deref().is_none_or(|p| path.contains(p))
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        })?;
        let f = self.faults[idx].clone();
        let left = f.count.unwrap_or(1).saturating_sub(1);
        if left == 0 {
            self.faults.remove(idx);
        } else {
            self.faults[idx].count = Some(left);
        }
        Some(f)
    }
}

#[derive(Clone)]
struct App {
    opts: Arc<Options>,
    st: Arc<Mutex<Inner>>,
    client: Option<reqwest::Client>,
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct FlightGuard {
    st: Arc<Mutex<Inner>>,
    token: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = s.in_flight.get_mut(&self.token) {
            *n = n.saturating_sub(1);
        }
    }
}

// ---------------------------------------------------------------- responses

struct Resp {
    status: u16,
    body: Option<Value>,
}

impl Resp {
    fn ok(status: u16, body: Value) -> Self {
        Resp {
            status,
            body: Some(body),
        }
    }
    fn empty() -> Self {
        Resp {
            status: 204,
            body: None,
        }
    }
}

impl IntoResponse for Resp {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.body {
            Some(b) => (status, axum::Json(b)).into_response(),
            None => status.into_response(),
        }
    }
}

fn err(status: u16, code: &str, message: &str, details: Value) -> Resp {
    Resp::ok(
        status,
        json!({"code": code, "details": details, "message": message, "status": "error"}),
    )
}

fn item_err(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

fn now_secs() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp(n.timestamp(), 0).unwrap_or(n)
}

/// `application/x-www-form-urlencoded` pairs (also query strings).
fn parse_urlencoded(s: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

// ---------------------------------------------------------------- dispatch

type Delivery = (String, Value);

async fn dispatch(
    AxState(app): AxState<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_urlencoded(uri.query().unwrap_or(""));
    if path.starts_with("/_emulator/") {
        return control(&app, &method, &path, &body).into_response();
    }
    let fault = {
        let mut st = app.lock();
        *st.request_counts
            .entry(format!("{} {}", method, path))
            .or_insert(0) += 1;
        let f = st.take_fault(&path, &method).unwrap_or_default();
        if f.expire_tokens {
            let past = Instant::now();
            for t in st.tokens.values_mut() {
                t.expires = past;
            }
        }
        f
    };
    if path == "/oauth/v2/token" {
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(s) = fault.status {
            return fault_resp(s).into_response();
        }
        let mut params = query;
        params.extend(parse_urlencoded(&String::from_utf8_lossy(&body)));
        return oauth(&app, &params).into_response();
    }
    // Z1: authentication.
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Zoho-oauthtoken "))
        .map(|t| t.trim().to_string());
    let invalid = || err(401, "INVALID_TOKEN", "invalid oauth token", json!({})).into_response();
    let Some(token) = token else {
        return err(
            401,
            "AUTHENTICATION_FAILURE",
            "Authentication failed",
            json!({}),
        )
        .into_response();
    };
    // Z7 concurrency + Z8 credits.
    let cost = if path.ends_with("/coql") {
        coql_cost(&body)
    } else {
        1
    };
    let _guard = {
        let mut st = app.lock();
        let now = Instant::now();
        match st.tokens.get(&token) {
            Some(t) if t.expires > now => {}
            _ => return invalid(),
        }
        let n = st.in_flight.get(&token).copied().unwrap_or(0);
        if n >= app.opts.concurrency_limit {
            st.rejected_429 += 1;
            return err(
                429,
                "TOO_MANY_REQUESTS",
                "concurrency limit exceeded",
                json!({"limit": app.opts.concurrency_limit}),
            )
            .into_response();
        }
        let day = Duration::from_secs(86_400);
        while st
            .credits
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= day)
        {
            st.credits.pop_front();
        }
        let used: u64 = st.credits.iter().map(|(_, c)| c).sum();
        if used + cost > app.opts.credits_per_day {
            st.rejected_429 += 1;
            return err(
                429,
                "TOO_MANY_REQUESTS",
                "API credits exhausted for the rolling 24 hour window",
                json!({"credits_per_day": app.opts.credits_per_day, "used": used}),
            )
            .into_response();
        }
        st.credits.push_back((now, cost));
        st.in_flight.insert(token.clone(), n + 1);
        let total: usize = st.in_flight.values().sum();
        st.max_concurrent = st.max_concurrent.max(total);
        FlightGuard {
            st: app.st.clone(),
            token: token.clone(),
        }
    };
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(s) = fault.status {
        return fault_resp(s).into_response();
    }
    let (resp, deliveries) = {
        let mut st = app.lock();
        api(&mut st, &app.opts, &method, &path, &query, &body)
    };
    if app.opts.send_notifications
        && let Some(client) = &app.client
    {
        for (url, payload) in deliveries {
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.post(&url).json(&payload).send().await {
                    tracing::warn!(%url, error = %e, "zoho emulator: notification failed");
                }
            });
        }
    }
    if fault.fail_after_write {
        return fault_resp(500).into_response();
    }
    resp.into_response()
}

fn fault_resp(status: u16) -> Resp {
    if status == 429 {
        err(429, "TOO_MANY_REQUESTS", "too many requests", json!({}))
    } else {
        err(status, "INTERNAL_ERROR", "Internal Server Error", json!({}))
    }
}

fn control(app: &App, method: &Method, path: &str, body: &[u8]) -> Resp {
    let mut st = app.lock();
    match (method.as_str(), path) {
        ("GET", "/_emulator/state") => {
            let mut recs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for r in &st.records {
                let mut v = record_json(r, &app.opts);
                v["$deleted"] = json!(r.deleted.is_some());
                v["$deleted_time"] = json!(r.deleted.map(fmt_time));
                recs.entry(r.module.as_str()).or_default().push(v);
            }
            let channels: Vec<Value> = st.channels.iter().map(channel_json).collect();
            let used: u64 = st.credits.iter().map(|(_, c)| c).sum();
            Resp::ok(
                200,
                json!({
                    "records": recs,
                    "request_counts": st.request_counts,
                    "max_concurrent": st.max_concurrent,
                    "in_flight": st.in_flight.values().sum::<usize>(),
                    "rejected_429": st.rejected_429,
                    "credits_used": used,
                    "write_calls": st.write_calls,
                    "workflow_runs": st.workflow_runs,
                    "channels": channels,
                    "notifications": st.notifications,
                    "pending_faults": st.faults.len(),
                }),
            )
        }
        ("POST", "/_emulator/reset") => {
            *st = Inner::new(&app.opts);
            Resp::ok(200, json!({"reset": true}))
        }
        ("POST", "/_emulator/faults") => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let list = match v {
                Value::Array(a) => a,
                Value::Object(mut o) if o.contains_key("faults") => match o.remove("faults") {
                    Some(Value::Array(a)) => a,
                    _ => vec![],
                },
                o @ Value::Object(_) => vec![o],
                _ => return err(400, "INVALID_DATA", "fault body", json!({})),
            };
            for f in list {
                match serde_json::from_value::<Fault>(f) {
                    Ok(f) => st.faults.push(f),
                    Err(e) => return err(400, "INVALID_DATA", &e.to_string(), json!({})),
                }
            }
            Resp::ok(200, json!({"pending_faults": st.faults.len()}))
        }
        ("DELETE", "/_emulator/faults") => {
            st.faults.clear();
            Resp::ok(200, json!({"pending_faults": 0}))
        }
        _ => err(
            404,
            "INVALID_URL_PATTERN",
            "unknown emulator endpoint",
            json!({}),
        ),
    }
}

// Z2
fn oauth(app: &App, p: &HashMap<String, String>) -> Resp {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return Resp::ok(200, json!({"error": "unsupported_grant_type"}));
    }
    if get("client_id") != app.opts.client_id || get("client_secret") != app.opts.client_secret {
        return Resp::ok(200, json!({"error": "invalid_client"}));
    }
    let rt = get("refresh_token").to_string();
    if !app.opts.refresh_tokens.contains(&rt) {
        return Resp::ok(200, json!({"error": "invalid_code"}));
    }
    let mut st = app.lock();
    let now = Instant::now();
    let window = Duration::from_secs(600);
    let mints = st.mints.entry(rt.clone()).or_default();
    while mints
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        mints.pop_front();
    }
    if mints.len() >= 10 {
        return Resp::ok(
            400,
            json!({"error": "Access Denied", "error_description":
                "You have made too many requests continuously. Please try again after some time.",
                "status": "failure"}),
        );
    }
    mints.push_back(now);
    // ≤30 live access tokens per refresh token: evict the oldest.
    let mut live: Vec<(String, Instant)> = st
        .tokens
        .iter()
        .filter(|(_, t)| t.refresh.as_deref() == Some(rt.as_str()))
        .map(|(k, t)| (k.clone(), t.issued))
        .collect();
    if live.len() >= 30 {
        live.sort_by_key(|(_, i)| *i);
        for (k, _) in live.iter().take(live.len() - 29) {
            st.tokens.remove(k);
        }
    }
    let access = format!(
        "1000.{:032x}.{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    st.tokens.insert(
        access.clone(),
        Token {
            refresh: Some(rt),
            expires: now + app.opts.token_ttl,
            issued: now,
        },
    );
    Resp::ok(
        200,
        json!({"access_token": access, "scope": "ZohoCRM.modules.ALL ZohoCRM.settings.fields.READ ZohoCRM.notifications.ALL ZohoCRM.coql.READ",
               "api_domain": app.opts.api_domain, "token_type": "Bearer",
               "expires_in": app.opts.token_ttl.as_secs()}),
    )
}

fn api(
    st: &mut Inner,
    o: &Options,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> (Resp, Vec<Delivery>) {
    let Some(rest) = path.strip_prefix("/crm/v8/") else {
        return (
            err(
                404,
                "INVALID_URL_PATTERN",
                "Please check if the URL trying to access is a correct one",
                json!({}),
            ),
            vec![],
        );
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let parse_body = || -> Result<Value, Resp> {
        serde_json::from_slice(body)
            .map_err(|_| err(400, "INVALID_DATA", "body is not valid json", json!({})))
    };
    let m = method.as_str();
    let none = |r: Resp| (r, vec![]);
    match segs.as_slice() {
        ["coql"] if m == "POST" => none(match parse_body() {
            Ok(b) => coql(st, o, &b),
            Err(r) => r,
        }),
        ["settings", "fields"] if m == "GET" => {
            let module = q.get("module").map(String::as_str).unwrap_or("");
            none(match schema(module) {
                Some(fs) => Resp::ok(
                    200,
                    json!({"fields": fs.iter().map(field_json).collect::<Vec<_>>()}),
                ),
                None if module.is_empty() => err(
                    400,
                    "REQUIRED_PARAM_MISSING",
                    "One of the expected parameter is missing",
                    json!({"param_name": "module"}),
                ),
                None => err(
                    400,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    json!({}),
                ),
            })
        }
        ["settings", "modules"] if m == "GET" => none(Resp::ok(
            200,
            json!({"modules": MODULES.iter().map(|m| json!({"api_name": m, "module_name": m, "api_supported": true})).collect::<Vec<_>>()}),
        )),
        ["actions", "watch"] => match m {
            "POST" | "PATCH" | "PUT" => none(match parse_body() {
                Ok(b) => watch_write(st, o, &b, m == "POST"),
                Err(r) => r,
            }),
            "GET" => {
                let now = Utc::now();
                st.channels.retain(|c| c.expiry > now);
                none(if st.channels.is_empty() {
                    Resp::empty()
                } else {
                    Resp::ok(
                        200,
                        json!({"watch": st.channels.iter().map(channel_json).collect::<Vec<_>>()}),
                    )
                })
            }
            "DELETE" => {
                let ids: Vec<String> = q
                    .get("channel_ids")
                    .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default();
                let mut out = vec![];
                for id in ids {
                    let before = st.channels.len();
                    st.channels.retain(|c| c.channel_id != id);
                    out.push(if st.channels.len() < before {
                        json!({"code": "SUCCESS", "status": "success", "message": "Successfully unsubscribed from actions-watch", "details": {"channel_id": id}})
                    } else {
                        item_err("NOT_SUBSCRIBED", "channel not subscribed", json!({"channel_id": id}))
                    });
                }
                none(Resp::ok(200, json!({"watch": out})))
            }
            _ => none(err(
                405,
                "INVALID_REQUEST_METHOD",
                "The http request method type is not a valid one",
                json!({}),
            )),
        },
        [module, ..] if schema(module).is_none() => none(err(
            400,
            "INVALID_MODULE",
            "the module name given seems to be invalid",
            json!({"resource_path_index": 0}),
        )),
        [module] => match m {
            "GET" => none(list(st, o, module, q)),
            "POST" | "PUT" => match parse_body() {
                Ok(b) => {
                    let op = if m == "POST" { Op::Insert } else { Op::Update };
                    write(st, o, module, op, &b, None)
                }
                Err(r) => none(r),
            },
            "DELETE" => {
                let ids: Vec<String> = q
                    .get("ids")
                    .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    return none(err(
                        400,
                        "REQUIRED_PARAM_MISSING",
                        "One of the expected parameter is missing",
                        json!({"param_name": "ids"}),
                    ));
                }
                delete(st, o, module, &ids)
            }
            _ => none(err(
                405,
                "INVALID_REQUEST_METHOD",
                "The http request method type is not a valid one",
                json!({}),
            )),
        },
        [module, "upsert"] if m == "POST" => match parse_body() {
            Ok(b) => write(st, o, module, Op::Upsert, &b, None),
            Err(r) => none(r),
        },
        [module, "deleted"] if m == "GET" => none(deleted(st, o, module, q)),
        [module, id] => match m {
            "GET" => {
                let found = id.parse::<u64>().ok().and_then(|id| {
                    st.records
                        .iter()
                        .find(|r| r.id == id && r.module == *module && r.deleted.is_none())
                });
                none(match found {
                    Some(r) => Resp::ok(200, json!({"data": [record_json(r, o)]})),
                    None => err(
                        400,
                        "INVALID_DATA",
                        "the id given seems to be invalid",
                        json!({"id": id}),
                    ),
                })
            }
            "PUT" => match (parse_body(), id.parse::<u64>()) {
                (Ok(b), Ok(n)) => write(st, o, module, Op::Update, &b, Some(n)),
                (Err(r), _) => none(r),
                (_, Err(_)) => none(err(
                    400,
                    "INVALID_DATA",
                    "the id given seems to be invalid",
                    json!({"id": id}),
                )),
            },
            "DELETE" => delete(st, o, module, &[id.to_string()]),
            _ => none(err(
                405,
                "INVALID_REQUEST_METHOD",
                "The http request method type is not a valid one",
                json!({}),
            )),
        },
        _ => none(err(
            404,
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
            json!({}),
        )),
    }
}

// ---------------------------------------------------------------- records

fn user_json(o: &Options) -> Value {
    json!({"name": o.user_name, "id": o.user_id, "email": "integration@example.com"})
}

fn record_json(r: &Record, o: &Options) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(r.id.to_string()));
    m.insert("Owner".into(), user_json(o));
    for (k, v) in &r.fields {
        m.insert(k.clone(), v.clone());
    }
    m.insert("Created_Time".into(), json!(fmt_time(r.created)));
    m.insert("Modified_Time".into(), json!(fmt_time(r.modified)));
    m.insert("Created_By".into(), user_json(o));
    m.insert("Modified_By".into(), user_json(o));
    Value::Object(m)
}

fn channel_json(c: &Channel) -> Value {
    json!({"channel_id": c.channel_id, "events": c.events, "notify_url": c.notify_url,
           "token": c.token, "channel_expiry": fmt_time(c.expiry),
           "return_affected_field_values": c.affected_values})
}

fn val_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

fn check_value(f: &FieldDef, v: &Value, jp: &str) -> Result<(), Value> {
    if v.is_null() {
        return Ok(());
    }
    let type_err = || {
        item_err(
            "INVALID_DATA",
            "invalid data",
            json!({"expected_data_type": f.ty, "api_name": f.api, "json_path": jp}),
        )
    };
    let ok = match f.ty {
        "text" | "textarea" | "email" | "phone" | "picklist" => {
            let Some(s) = v.as_str() else {
                return Err(type_err());
            };
            if f.len > 0 && s.chars().count() > f.len {
                return Err(item_err(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"maximum_length": f.len, "api_name": f.api, "json_path": jp}),
                ));
            }
            match f.ty {
                "email" => s
                    .split_once('@')
                    .is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.contains('@')),
                "phone" => s
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().x".contains(c)),
                "picklist" => {
                    if !f.picks.contains(&s) {
                        return Err(item_err(
                            "INVALID_DATA",
                            "invalid data",
                            json!({"api_name": f.api, "json_path": jp}),
                        ));
                    }
                    true
                }
                _ => true,
            }
        }
        "integer" | "bigint" => v.as_i64().is_some(),
        "double" | "currency" => v.is_number(),
        "boolean" => v.is_boolean(),
        "date" => v
            .as_str()
            .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        "datetime" => v
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        "lookup" | "ownerlookup" => v.get("id").is_some_and(|i| i.is_string() || i.is_number()),
        _ => true,
    };
    if ok { Ok(()) } else { Err(type_err()) }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Insert,
    Update,
    Upsert,
}

struct Change {
    op: &'static str,
    ids: Vec<String>,
    affected: Vec<Value>,
}

fn write(
    st: &mut Inner,
    o: &Options,
    module: &str,
    op: Op,
    body: &Value,
    path_id: Option<u64>,
) -> (Resp, Vec<Delivery>) {
    let fields = schema(module).unwrap_or_default();
    let Some(data) = body.get("data").and_then(Value::as_array) else {
        let e = err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "data"}),
        );
        return (e, vec![]);
    };
    if data.len() > 100 {
        let e = err(
            400,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": 100}),
        );
        return (e, vec![]);
    }
    if path_id.is_some() && data.len() != 1 {
        let e = err(
            400,
            "LIMIT_EXCEEDED",
            "only one record may be updated by id",
            json!({"limit": 1}),
        );
        return (e, vec![]);
    }
    let dup_fields: Vec<String> = match body.get("duplicate_check_fields") {
        Some(Value::Array(a)) if op == Op::Upsert => {
            let names: Vec<String> = a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            for n in &names {
                let okf =
                    fields.iter().any(|f| f.api == n && f.unique) || n == system_dup_field(module);
                if !okf {
                    let e = err(
                        400,
                        "INVALID_DATA",
                        "invalid duplicate_check_fields",
                        json!({"api_name": n, "json_path": "$.duplicate_check_fields"}),
                    );
                    return (e, vec![]);
                }
            }
            names
        }
        _ => {
            let sys = system_dup_field(module);
            let mut v = vec![sys.to_string()];
            v.extend(
                fields
                    .iter()
                    .filter(|f| f.unique && f.api != sys)
                    .map(|f| f.api.to_string()),
            );
            v
        }
    };
    let trigger = body.get("trigger").cloned();
    let workflows = match &trigger {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.iter().any(|t| t.as_str() == Some("workflow")),
        Some(_) => true,
    };
    let op_name = match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Upsert => "upsert",
    };
    st.write_calls.push(
        json!({"module": module, "op": op_name, "records": data.len(),
        "trigger": trigger, "workflows_fired": workflows}),
    );
    if workflows {
        st.workflow_runs += 1;
    }
    let now = now_secs();
    let mut results = Vec::with_capacity(data.len());
    let mut inserted = Change {
        op: "insert",
        ids: vec![],
        affected: vec![],
    };
    let mut updated = Change {
        op: "update",
        ids: vec![],
        affected: vec![],
    };
    for (i, rec) in data.iter().enumerate() {
        match write_one(
            st,
            o,
            module,
            &fields,
            op,
            &dup_fields,
            i,
            rec,
            path_id,
            now,
        ) {
            Ok((item, id, is_insert, changed)) => {
                let c = if is_insert {
                    &mut inserted
                } else {
                    &mut updated
                };
                c.affected.push(json!({"id": id, "fields": changed}));
                c.ids.push(id);
                results.push(item);
            }
            Err(e) => results.push(e),
        }
    }
    let ok = results.iter().filter(|r| r["status"] == "success").count();
    let status = if ok == results.len() {
        if op == Op::Insert { 201 } else { 200 }
    } else if ok == 0 {
        400
    } else {
        207
    };
    let mut del = vec![];
    for c in [inserted, updated] {
        if !c.ids.is_empty() {
            del.extend(notify(st, o, module, &c));
        }
    }
    (Resp::ok(status, json!({"data": results})), del)
}

type WriteOk = (Value, String, bool, Vec<String>);

#[allow(clippy::too_many_arguments)]
fn write_one(
    st: &mut Inner,
    o: &Options,
    module: &str,
    fields: &[FieldDef],
    op: Op,
    dup_fields: &[String],
    i: usize,
    rec: &Value,
    path_id: Option<u64>,
    now: DateTime<Utc>,
) -> Result<WriteOk, Value> {
    let Some(obj) = rec.as_object() else {
        return Err(item_err(
            "INVALID_DATA",
            "invalid data",
            json!({"json_path": format!("$.data[{i}]")}),
        ));
    };
    let jp = |k: &str| format!("$.data[{i}].{k}");
    let mut clean = Map::new();
    for (k, v) in obj {
        if k == "id" {
            continue;
        }
        let Some(f) = fields.iter().find(|f| f.api == k) else {
            continue;
        };
        if f.read_only {
            return Err(item_err(
                "NOT_ALLOWED",
                "the field is read only",
                json!({"api_name": k, "json_path": jp(k)}),
            ));
        }
        check_value(f, v, &jp(k))?;
        clean.insert(k.clone(), v.clone());
    }
    let live = |st: &Inner, id: u64| {
        st.records
            .iter()
            .position(|r| r.id == id && r.module == module && r.deleted.is_none())
    };
    let mut dup_field = Value::Null;
    let target: Option<usize> = match op {
        Op::Insert => None,
        Op::Update => {
            let id = path_id.or_else(|| match obj.get("id") {
                Some(Value::String(s)) => s.parse().ok(),
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            });
            let Some(id) = id else {
                return Err(if obj.contains_key("id") {
                    item_err(
                        "INVALID_DATA",
                        "the id given seems to be invalid",
                        json!({"id": obj["id"]}),
                    )
                } else {
                    item_err(
                        "MANDATORY_NOT_FOUND",
                        "required field not found",
                        json!({"api_name": "id", "json_path": jp("id")}),
                    )
                });
            };
            match live(st, id) {
                Some(ix) => Some(ix),
                None => {
                    return Err(item_err(
                        "INVALID_DATA",
                        "the id given seems to be invalid",
                        json!({"id": id.to_string()}),
                    ));
                }
            }
        }
        Op::Upsert => {
            let mut t = None;
            for f in dup_fields {
                let Some(v) = clean.get(f).filter(|v| !v.is_null()) else {
                    continue;
                };
                if let Some(ix) = st.records.iter().position(|r| {
                    r.module == module
                        && r.deleted.is_none()
                        && r.fields.get(f).is_some_and(|x| val_eq(x, v))
                }) {
                    t = Some(ix);
                    dup_field = json!(f);
                    break;
                }
            }
            t
        }
    };
    for f in fields.iter().filter(|f| f.mandatory) {
        let missing = match target {
            None => is_blank(clean.get(f.api)),
            Some(_) => clean.contains_key(f.api) && is_blank(clean.get(f.api)),
        };
        if missing {
            return Err(item_err(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": f.api, "json_path": jp(f.api)}),
            ));
        }
    }
    let target_id = target.map(|ix| st.records[ix].id);
    for f in fields.iter().filter(|f| f.unique) {
        let Some(v) = clean.get(f.api).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Some(d) = st.records.iter().find(|r| {
            r.module == module
                && r.deleted.is_none()
                && Some(r.id) != target_id
                && r.fields.get(f.api).is_some_and(|x| val_eq(x, v))
        }) {
            return Err(item_err(
                "DUPLICATE_DATA",
                "duplicate data",
                json!({
                "api_name": f.api, "json_path": jp(f.api),
                "duplicate_record": {"id": d.id.to_string(), "module": {"api_name": module}, "Owner": user_json(o)}}),
            ));
        }
    }
    let changed: Vec<String> = clean.keys().cloned().collect();
    let (rec, is_insert) = match target {
        Some(ix) => {
            let r = &mut st.records[ix];
            for (k, v) in clean {
                r.fields.insert(k, v);
            }
            r.modified = now;
            (&*r, false)
        }
        None => {
            st.next_id += 1;
            st.records.push(Record {
                id: st.next_id,
                module: module.to_string(),
                fields: clean,
                created: now,
                modified: now,
                deleted: None,
            });
            (st.records.last().expect("just pushed"), true)
        }
    };
    let mut item = json!({
        "code": "SUCCESS",
        "details": {"Modified_Time": fmt_time(rec.modified), "Modified_By": user_json(o),
                    "Created_Time": fmt_time(rec.created), "id": rec.id.to_string(),
                    "Created_By": user_json(o)},
        "message": if is_insert { "record added" } else { "record updated" },
        "status": "success",
    });
    if op == Op::Upsert {
        item["action"] = json!(if is_insert { "insert" } else { "update" });
        item["duplicate_field"] = dup_field;
    }
    Ok((item, rec.id.to_string(), is_insert, changed))
}

fn delete(st: &mut Inner, o: &Options, module: &str, ids: &[String]) -> (Resp, Vec<Delivery>) {
    if ids.len() > 100 {
        return (
            err(
                400,
                "LIMIT_EXCEEDED",
                "Record count exceeded",
                json!({"limit": 100}),
            ),
            vec![],
        );
    }
    let now = now_secs();
    let mut out = vec![];
    let mut done = vec![];
    for id in ids {
        let ix = id.parse::<u64>().ok().and_then(|n| {
            st.records
                .iter()
                .position(|r| r.id == n && r.module == module && r.deleted.is_none())
        });
        match ix {
            Some(ix) => {
                st.records[ix].deleted = Some(now);
                done.push(id.clone());
                out.push(json!({"code": "SUCCESS", "details": {"id": id}, "message": "record deleted", "status": "success"}));
            }
            None => out.push(item_err(
                "INVALID_DATA",
                "record not deleted",
                json!({"id": id}),
            )),
        }
    }
    let ok = done.len();
    let status = if ok == ids.len() {
        200
    } else if ok == 0 {
        400
    } else {
        207
    };
    let del = if done.is_empty() {
        vec![]
    } else {
        notify(
            st,
            o,
            module,
            &Change {
                op: "delete",
                ids: done,
                affected: vec![],
            },
        )
    };
    (Resp::ok(status, json!({"data": out})), del)
}

fn display_name(r: &Record) -> Value {
    for k in ["Last_Name", "Account_Name", "Deal_Name"] {
        if let Some(v) = r.fields.get(k) {
            return v.clone();
        }
    }
    Value::Null
}

fn deleted(st: &Inner, o: &Options, module: &str, q: &HashMap<String, String>) -> Resp {
    let ty = q.get("type").map(String::as_str).unwrap_or("all");
    if !["all", "recycle", "permanent"].contains(&ty) {
        return err(
            400,
            "INVALID_DATA",
            "invalid data",
            json!({"param_name": "type"}),
        );
    }
    if ty == "permanent" {
        return Resp::empty();
    }
    let (per_page, page) = paging(q);
    let mut rows: Vec<&Record> = st
        .records
        .iter()
        .filter(|r| r.module == module && r.deleted.is_some())
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.deleted, r.id)));
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| json!({"deleted_by": user_json(o), "id": r.id.to_string(), "display_name": display_name(r),
            "type": "recycle", "created_by": user_json(o), "deleted_time": r.deleted.map(fmt_time)}))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"per_page": per_page, "count": data.len(), "page": page,
        "more_records": total > page * per_page}}),
    )
}

/// `per_page` (1-200, default 200) and `page` (from 1) of a list request.
fn paging(q: &HashMap<String, String>) -> (usize, usize) {
    let num = |k: &str| q.get(k).and_then(|s| s.parse::<usize>().ok());
    (
        num("per_page").unwrap_or(200).clamp(1, 200),
        num("page").unwrap_or(1).max(1),
    )
}

fn list(st: &Inner, o: &Options, module: &str, q: &HashMap<String, String>) -> Resp {
    let Some(fields) = q.get("fields").filter(|f| !f.is_empty()) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "fields"}),
        );
    };
    let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
    let (per_page, page) = paging(q);
    let ids: Option<Vec<u64>> = q
        .get("ids")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let mut rows: Vec<&Record> = st
        .records
        .iter()
        .filter(|r| r.module == module && r.deleted.is_none())
        .filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .collect();
    let sort_by = q.get("sort_by").map(String::as_str).unwrap_or("id");
    match sort_by {
        "Modified_Time" => rows.sort_by_key(|r| (r.modified, r.id)),
        "Created_Time" => rows.sort_by_key(|r| (r.created, r.id)),
        _ => rows.sort_by_key(|r| r.id),
    }
    let desc = q.get("sort_order").map(String::as_str) == Some("desc");
    if desc {
        rows.reverse();
    }
    let total = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| project(&record_json(r, o), &wanted))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"per_page": per_page, "count": data.len(), "page": page,
        "sort_by": sort_by, "sort_order": if desc {"desc"} else {"asc"},
        "more_records": total > page * per_page}}),
    )
}

fn project(full: &Value, wanted: &[&str]) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), full["id"].clone());
    for w in wanted {
        m.insert(
            (*w).to_string(),
            full.get(*w).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}

// ---------------------------------------------------------------- notifications (Z12)

fn notify(st: &mut Inner, o: &Options, module: &str, c: &Change) -> Vec<Delivery> {
    let now = Utc::now();
    let ev = match c.op {
        "insert" => "create",
        "update" => "edit",
        _ => "delete",
    };
    let mut out = vec![];
    for ch in st.channels.iter().filter(|ch| ch.expiry > now) {
        let hit = ch
            .events
            .iter()
            .any(|e| e == &format!("{module}.all") || e == &format!("{module}.{ev}"));
        if !hit {
            continue;
        }
        let qp: Map<String, Value> = ch
            .notify_url
            .split_once('?')
            .map(|(_, q)| {
                parse_urlencoded(q)
                    .into_iter()
                    .map(|(k, v)| (k, json!(v)))
                    .collect()
            })
            .unwrap_or_default();
        let mut p = json!({
            "server_time": now.timestamp_millis(),
            "query_params": qp,
            "module": module,
            "resource_uri": format!("{}/crm/v8/{module}", o.api_domain),
            "ids": c.ids,
            "operation": c.op,
            "channel_id": ch.channel_id.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(ch.channel_id)),
            "token": ch.token,
        });
        if ch.affected_values && c.op == "update" {
            p["affected_fields"] = json!(c.affected);
        }
        out.push((ch.notify_url.clone(), p));
    }
    for (url, p) in &out {
        st.notifications
            .push(json!({"notify_url": url, "payload": p}));
    }
    out
}

fn watch_write(st: &mut Inner, o: &Options, b: &Value, create: bool) -> Resp {
    let Some(list) = b.get("watch").and_then(Value::as_array) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "watch"}),
        );
    };
    let now = now_secs();
    let max = chrono::Duration::from_std(o.max_channel_expiry).unwrap_or(chrono::Duration::days(1));
    let mut out = vec![];
    for w in list {
        let cid = match w.get("channel_id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => {
                out.push(item_err(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    json!({"api_name": "channel_id"}),
                ));
                continue;
            }
        };
        let events: Vec<String> = w
            .get("events")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let token = w.get("token").and_then(Value::as_str).map(String::from);
        if token.as_ref().is_some_and(|t| t.chars().count() > 50) {
            out.push(item_err(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "token", "maximum_length": 50}),
            ));
            continue;
        }
        let req_exp = w
            .get("channel_expiry")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let expiry = match req_exp {
            Some(e) if e > now && e <= now + max => e,
            _ => now + chrono::Duration::hours(1).min(max),
        };
        let existing = st.channels.iter().position(|c| c.channel_id == cid);
        if create {
            let Some(url) = w.get("notify_url").and_then(Value::as_str) else {
                out.push(item_err(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    json!({"api_name": "notify_url"}),
                ));
                continue;
            };
            if events.is_empty() {
                out.push(item_err(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    json!({"api_name": "events"}),
                ));
                continue;
            }
            let ch = Channel {
                channel_id: cid.clone(),
                events: events.clone(),
                notify_url: url.to_string(),
                token,
                expiry,
                affected_values: w
                    .get("return_affected_field_values")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            match existing {
                Some(ix) => st.channels[ix] = ch,
                None => st.channels.push(ch),
            }
        } else {
            let Some(ix) = existing else {
                out.push(item_err(
                    "NOT_SUBSCRIBED",
                    "channel not subscribed",
                    json!({"channel_id": cid}),
                ));
                continue;
            };
            let c = &mut st.channels[ix];
            c.expiry = expiry;
            if !events.is_empty() {
                c.events = events;
            }
            if let Some(u) = w.get("notify_url").and_then(Value::as_str) {
                c.notify_url = u.to_string();
            }
            if token.is_some() {
                c.token = token;
            }
        }
        let c = st
            .channels
            .iter()
            .find(|c| c.channel_id == cid)
            .expect("present");
        let evs: Vec<Value> = c.events.iter().map(|e| {
            let m = e.split('.').next().unwrap_or("");
            json!({"channel_expiry": fmt_time(c.expiry), "resource_uri": format!("{}/crm/v8/{m}", o.api_domain),
                   "resource_id": "5545974000000002175", "resource_name": m, "channel_id": w["channel_id"]})
        }).collect();
        out.push(json!({"code": "SUCCESS", "status": "success",
            "message": "Successfully subscribed for actions-watch of the given module",
            "details": {"events": evs}}));
    }
    let ok = out.iter().all(|x| x["status"] == "success");
    Resp::ok(if ok { 200 } else { 400 }, json!({"watch": out}))
}

// ---------------------------------------------------------------- COQL (Z11)

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Id(String),
    Str(String),
    Num(String),
    Op(String),
    Comma,
    LP,
    RP,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if ch == '(' {
            out.push(Tok::LP);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::RP);
            i += 1;
        } else if ch == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err("unterminated string".into()),
                    Some('\'') if c.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        v.push(*x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if "<>=!".contains(ch) {
            let mut op = ch.to_string();
            if let Some(n) = c.get(i + 1).filter(|n| "<>=".contains(**n)) {
                op.push(*n);
            }
            i += op.len();
            if !["=", "!=", "<>", "<", "<=", ">", ">="].contains(&op.as_str()) {
                return Err(format!("invalid operator {op}"));
            }
            out.push(Tok::Op(op));
        } else if ch.is_ascii_digit() || ch == '-' {
            let st = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(c[st..i].iter().collect()));
        } else if ch.is_alphanumeric() || ch == '_' || ch == '$' {
            let st = i;
            while i < c.len() && (c[i].is_alphanumeric() || "_$.".contains(c[i])) {
                i += 1;
            }
            out.push(Tok::Id(c[st..i].iter().collect()));
        } else {
            return Err(format!("unexpected character {ch}"));
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(String, String, Value),
    In(String, Vec<Value>, bool),
    Null(String, bool),
    Like(String, String, bool),
}

#[derive(Debug)]
struct Query {
    fields: Vec<String>,
    module: String,
    cond: Option<Expr>,
    order: Vec<(String, bool)>,
    limit: usize,
    offset: usize,
    criteria: usize,
}

struct P {
    t: Vec<Tok>,
    i: usize,
    criteria: usize,
}

impl P {
    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.t.get(self.i), Some(Tok::Id(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn kw(&mut self, kw: &str) -> Result<(), String> {
        if self.peek_kw(kw) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {kw}"))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(Tok::Id(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected identifier, got {other:?}")),
        }
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.t.get(self.i) == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn lit(&mut self) -> Result<Value, String> {
        let v = match self.t.get(self.i) {
            Some(Tok::Str(s)) => json!(s),
            Some(Tok::Num(n)) => json!(n),
            Some(Tok::Id(s)) if s.eq_ignore_ascii_case("null") => Value::Null,
            Some(Tok::Id(s)) if s.eq_ignore_ascii_case("true") => json!(true),
            Some(Tok::Id(s)) if s.eq_ignore_ascii_case("false") => json!(false),
            other => return Err(format!("expected value, got {other:?}")),
        };
        self.i += 1;
        Ok(v)
    }
    fn num(&mut self) -> Result<usize, String> {
        match self.t.get(self.i) {
            Some(Tok::Num(n)) => {
                self.i += 1;
                n.parse().map_err(|_| format!("invalid number {n}"))
            }
            _ => Err("expected number".into()),
        }
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.peek_kw("or") {
            self.i += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.atom()?;
        while self.peek_kw("and") {
            self.i += 1;
            l = Expr::And(Box::new(l), Box::new(self.atom()?));
        }
        Ok(l)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        if self.eat(&Tok::LP) {
            let e = self.expr()?;
            if !self.eat(&Tok::RP) {
                return Err("expected )".into());
            }
            return Ok(e);
        }
        let f = self.ident()?;
        self.criteria += 1;
        let neg = self.peek_kw("not");
        if neg {
            self.i += 1;
        }
        if self.peek_kw("is") {
            self.i += 1;
            let n = self.peek_kw("not");
            if n {
                self.i += 1;
            }
            self.kw("null")?;
            return Ok(Expr::Null(f, n));
        }
        if self.peek_kw("in") {
            self.i += 1;
            if !self.eat(&Tok::LP) {
                return Err("expected (".into());
            }
            let mut vs = vec![self.lit()?];
            while self.eat(&Tok::Comma) {
                vs.push(self.lit()?);
            }
            if !self.eat(&Tok::RP) {
                return Err("expected )".into());
            }
            return Ok(Expr::In(f, vs, neg));
        }
        if self.peek_kw("like") {
            self.i += 1;
            return match self.lit()? {
                Value::String(s) => Ok(Expr::Like(f, s, neg)),
                _ => Err("like needs a string".into()),
            };
        }
        if neg {
            return Err("unexpected not".into());
        }
        let op = match self.t.get(self.i) {
            Some(Tok::Op(o)) => o.clone(),
            other => return Err(format!("expected operator, got {other:?}")),
        };
        self.i += 1;
        Ok(Expr::Cmp(f, op, self.lit()?))
    }
}

fn parse_coql(s: &str) -> Result<Query, String> {
    let mut p = P {
        t: lex(s)?,
        i: 0,
        criteria: 0,
    };
    p.kw("select")?;
    let mut fields = vec![p.ident()?];
    while p.eat(&Tok::Comma) {
        fields.push(p.ident()?);
    }
    p.kw("from")?;
    let module = p.ident()?;
    let cond = if p.peek_kw("where") {
        p.i += 1;
        Some(p.expr()?)
    } else {
        None
    };
    let mut order = vec![];
    if p.peek_kw("order") {
        p.i += 1;
        p.kw("by")?;
        loop {
            let f = p.ident()?;
            let asc = if p.peek_kw("desc") {
                p.i += 1;
                false
            } else {
                if p.peek_kw("asc") {
                    p.i += 1;
                }
                true
            };
            order.push((f, asc));
            if !p.eat(&Tok::Comma) {
                break;
            }
        }
    }
    let (mut limit, mut offset) = (200, 0);
    if p.peek_kw("limit") {
        p.i += 1;
        let a = p.num()?;
        if p.eat(&Tok::Comma) {
            offset = a;
            limit = p.num()?;
        } else {
            limit = a;
            if p.peek_kw("offset") {
                p.i += 1;
                offset = p.num()?;
            }
        }
    }
    if p.i != p.t.len() {
        return Err(format!("unexpected token {:?}", p.t[p.i]));
    }
    Ok(Query {
        fields,
        module,
        cond,
        order,
        limit,
        offset,
        criteria: p.criteria,
    })
}

fn coql_cost(body: &[u8]) -> u64 {
    let limit = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| {
            b.get("select_query")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .and_then(|q| parse_coql(&q).ok())
        .map(|q| q.limit)
        .unwrap_or(200);
    match limit {
        0..=200 => 1,
        201..=1000 => 2,
        _ => 3,
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("id").and_then(as_text),
        _ => None,
    }
}

fn cmp_vals(a: &Value, b: &Value) -> Option<Ordering> {
    let (x, y) = (as_text(a)?, as_text(b)?);
    if let (Ok(p), Ok(q)) = (x.parse::<i128>(), y.parse::<i128>()) {
        return Some(p.cmp(&q));
    }
    if let (Ok(p), Ok(q)) = (
        DateTime::parse_from_rfc3339(&x),
        DateTime::parse_from_rfc3339(&y),
    ) {
        return Some(p.cmp(&q));
    }
    if let (Ok(p), Ok(q)) = (x.parse::<f64>(), y.parse::<f64>()) {
        return p.partial_cmp(&q);
    }
    Some(x.to_lowercase().cmp(&y.to_lowercase()))
}

fn like(s: &str, pat: &str) -> bool {
    let (s, pat) = (s.to_lowercase(), pat.to_lowercase());
    match (pat.strip_prefix('%'), pat.strip_suffix('%')) {
        (Some(_), Some(_)) if pat.len() >= 2 => s.contains(&pat[1..pat.len() - 1]),
        (Some(rest), None) => s.ends_with(rest),
        (None, Some(rest)) => s.starts_with(rest),
        _ => s == pat,
    }
}

fn eval(e: &Expr, r: &Value) -> bool {
    let get = |f: &str| r.get(f).cloned().unwrap_or(Value::Null);
    match e {
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
        Expr::Null(f, not) => get(f).is_null() != *not,
        Expr::In(f, vs, not) => {
            let v = get(f);
            !v.is_null() && vs.iter().any(|x| cmp_vals(&v, x) == Some(Ordering::Equal)) != *not
        }
        Expr::Like(f, p, not) => as_text(&get(f)).is_some_and(|s| like(&s, p) != *not),
        Expr::Cmp(f, op, lit) => {
            let Some(o) = cmp_vals(&get(f), lit) else {
                return false;
            };
            match op.as_str() {
                "=" => o == Ordering::Equal,
                "!=" | "<>" => o != Ordering::Equal,
                "<" => o == Ordering::Less,
                "<=" => o != Ordering::Greater,
                ">" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }
        }
    }
}

fn coql(st: &Inner, o: &Options, b: &Value) -> Resp {
    let Some(q) = b.get("select_query").and_then(Value::as_str) else {
        return err(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "select_query"}),
        );
    };
    let q = match parse_coql(q) {
        Ok(q) => q,
        Err(e) => {
            return err(
                400,
                "SYNTAX_ERROR",
                &format!("error in select query: {e}"),
                json!({}),
            );
        }
    };
    let Some(fields) = schema(&q.module) else {
        return err(
            400,
            "INVALID_QUERY",
            "invalid module given",
            json!({"module": q.module}),
        );
    };
    for f in q.fields.iter().chain(q.order.iter().map(|(f, _)| f)) {
        if !fields.iter().any(|d| d.api == f) {
            return err(
                400,
                "INVALID_QUERY",
                "invalid column given",
                json!({"column_name": f}),
            );
        }
    }
    if q.limit > 2000 || q.offset + q.limit > 100_000 || q.criteria > 25 || q.fields.len() > 50 {
        return err(
            400,
            "LIMIT_EXCEEDED",
            "limit exceeded",
            json!({"limit": q.limit, "offset": q.offset}),
        );
    }
    let mut rows: Vec<Value> = st
        .records
        .iter()
        .filter(|r| r.module == q.module && r.deleted.is_none())
        .map(|r| record_json(r, o))
        .filter(|r| q.cond.as_ref().is_none_or(|c| eval(c, r)))
        .collect();
    rows.sort_by(|a, b| {
        for (f, asc) in q
            .order
            .iter()
            .map(|(f, a)| (f.as_str(), *a))
            .chain([("id", true)])
        {
            let o = cmp_vals(&a[f], &b[f]).unwrap_or(Ordering::Equal);
            let o = if asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let total = rows.len();
    let wanted: Vec<&str> = q.fields.iter().map(String::as_str).collect();
    let data: Vec<Value> = rows
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|r| project(r, &wanted))
        .collect();
    if data.is_empty() {
        return Resp::empty();
    }
    Resp::ok(
        200,
        json!({"data": data, "info": {"count": data.len(), "more_records": total > q.offset + q.limit}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(o: Options) -> String {
        crate::emulate::serve_for_test(router(o)).await
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn call(c: &reqwest::Client, m: &str, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = c
            .request(m.parse().unwrap(), url)
            .header("Authorization", "Zoho-oauthtoken test-access-token");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let s = resp.status().as_u16();
        let t = resp.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn upsert_validation_trigger_delete() {
        let b = start(Options::default()).await;
        let c = client();
        let up = format!("{b}/crm/v8/Leads/upsert");
        let body = json!({"data": [{"Last_Name": "Boyle", "Email": "p@z.com"}],
            "duplicate_check_fields": ["Email"], "trigger": []});
        let (s, v) = call(&c, "POST", &up, Some(body)).await;
        assert_eq!(s, 200);
        assert_eq!(v["data"][0]["action"], "insert");
        let id = v["data"][0]["details"]["id"].as_str().unwrap().to_string();
        let mt = v["data"][0]["details"]["Modified_Time"].as_str().unwrap();
        assert!(mt.ends_with("+00:00") && mt.len() == 25);
        let body = json!({"data": [{"Last_Name": "Boyle2", "Email": "P@z.com"}],
            "duplicate_check_fields": ["Email"], "trigger": []});
        let (_, v) = call(&c, "POST", &up, Some(body)).await;
        assert_eq!(v["data"][0]["action"], "update");
        assert_eq!(v["data"][0]["duplicate_field"], "Email");
        assert_eq!(v["data"][0]["details"]["id"], id.as_str());
        // Mixed batch: order preserved, per-record errors.
        let body = json!({"data": [
            {"Last_Name": "A", "Email": "a@z.com"},
            {"Last_Name": "B", "Phone": 12},
            {"Email": "c@z.com"},
            {"Last_Name": "D", "Lead_Status": "Bogus"},
            {"Last_Name": "E", "Lead_Status": "Qualified"}]});
        let (s, v) = call(&c, "POST", &up, Some(body)).await;
        assert_eq!(s, 207);
        let d = &v["data"];
        assert_eq!(d[0]["code"], "SUCCESS");
        assert_eq!(d[1]["code"], "INVALID_DATA");
        assert_eq!(d[1]["details"]["api_name"], "Phone");
        assert_eq!(d[1]["details"]["expected_data_type"], "phone");
        assert_eq!(d[2]["code"], "MANDATORY_NOT_FOUND");
        assert_eq!(d[2]["details"]["api_name"], "Last_Name");
        assert_eq!(d[3]["code"], "INVALID_DATA");
        assert_eq!(d[3]["details"]["api_name"], "Lead_Status");
        assert_eq!(d[4]["code"], "SUCCESS");
        // Insert duplicate → DUPLICATE_DATA.
        let (s, v) = call(
            &c,
            "POST",
            &format!("{b}/crm/v8/Leads"),
            Some(json!({"data": [{"Last_Name": "X", "Email": "a@z.com"}]})),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(v["data"][0]["code"], "DUPLICATE_DATA");
        // >100 rejected.
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"Last_Name": format!("n{i}")}))
            .collect();
        let (s, v) = call(&c, "POST", &up, Some(json!({"data": many}))).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("LIMIT_EXCEEDED")));
        // Workflow trigger bookkeeping.
        let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
        let calls = st["write_calls"].as_array().unwrap();
        assert_eq!(calls[0]["workflows_fired"], false);
        assert_eq!(calls[2]["workflows_fired"], true);
        // Read, delete, deleted feed.
        let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads/{id}"), None).await;
        assert_eq!(s, 200);
        let (s, v) = call(&c, "DELETE", &format!("{b}/crm/v8/Leads?ids={id}"), None).await;
        assert_eq!((s, v["data"][0]["code"].as_str()), (200, Some("SUCCESS")));
        let (s, v) = call(
            &c,
            "GET",
            &format!("{b}/crm/v8/Leads/deleted?type=all"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v["data"][0]["id"], id.as_str());
        assert!(v["data"][0]["deleted_time"].is_string());
        let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads?fields=Email"), None).await;
        assert_eq!(s, 200);
        let (s, _) = call(&c, "GET", &format!("{b}/crm/v8/Leads"), None).await;
        assert_eq!(s, 400);
        let (_, v) = call(
            &c,
            "GET",
            &format!("{b}/crm/v8/settings/fields?module=Leads"),
            None,
        )
        .await;
        let ln = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["api_name"] == "Last_Name");
        assert_eq!(ln.unwrap()["system_mandatory"], true);
    }

    #[tokio::test]
    async fn coql_keyset_paging() {
        let b = start(Options::default()).await;
        let c = client();
        let data: Vec<Value> = (0..7)
            .map(|i| json!({"Last_Name": format!("n{i}")}))
            .collect();
        let (s, _) = call(
            &c,
            "POST",
            &format!("{b}/crm/v8/Contacts"),
            Some(json!({"data": data})),
        )
        .await;
        assert_eq!(s, 201);
        let (mut t, mut id) = ("2000-01-01T00:00:00+00:00".to_string(), "0".to_string());
        let mut seen = vec![];
        loop {
            let q = format!(
                "select Last_Name, Modified_Time from Contacts where (Modified_Time > '{t}' \
                or (Modified_Time = '{t}' and id > {id})) order by Modified_Time asc, id asc limit 3"
            );
            let (s, v) = call(
                &c,
                "POST",
                &format!("{b}/crm/v8/coql"),
                Some(json!({"select_query": q})),
            )
            .await;
            if s == 204 {
                break;
            }
            assert_eq!(s, 200);
            for r in v["data"].as_array().unwrap() {
                seen.push(r["Last_Name"].as_str().unwrap().to_string());
                t = r["Modified_Time"].as_str().unwrap().into();
                id = r["id"].as_str().unwrap().into();
            }
            if v["info"]["more_records"] == false {
                break;
            }
        }
        assert_eq!(seen.len(), 7);
        let q = json!({"select_query": "select Last_Name from Contacts where Modified_Time > '2000-01-01T00:00:00+00:00' and id > 1 limit 2, 2"});
        let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
        assert_eq!((s, v["info"]["count"].as_u64()), (200, Some(2)));
        let q = json!({"select_query": "select from Contacts"});
        let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("SYNTAX_ERROR")));
        let q = json!({"select_query": "select Last_Name from Contacts limit 2001"});
        let (s, _) = call(&c, "POST", &format!("{b}/crm/v8/coql"), Some(q)).await;
        assert_eq!(s, 400);
    }

    #[tokio::test]
    async fn auth_limits_and_faults() {
        let b = start(Options {
            credits_per_day: 40,
            concurrency_limit: 3,
            ..Options::default()
        })
        .await;
        let c = client();
        let lead = format!("{b}/crm/v8/Leads?fields=Email");
        let r = c
            .get(&lead)
            .header("Authorization", "Bearer test-access-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        // Fault 500 then success; fail-after-write.
        call(
            &c,
            "POST",
            &format!("{b}/_emulator/faults"),
            Some(json!({"path": "/Leads", "status": 500})),
        )
        .await;
        assert_eq!(call(&c, "GET", &lead, None).await.0, 500);
        assert_eq!(call(&c, "GET", &lead, None).await.0, 204);
        call(
            &c,
            "POST",
            &format!("{b}/_emulator/faults"),
            Some(json!({"path": "/Leads", "fail_after_write": true})),
        )
        .await;
        let (s, _) = call(
            &c,
            "POST",
            &format!("{b}/crm/v8/Leads"),
            Some(json!({"data": [{"Last_Name": "W"}]})),
        )
        .await;
        assert_eq!(s, 500);
        let (_, st) = call(&c, "GET", &format!("{b}/_emulator/state"), None).await;
        assert_eq!(st["records"]["Leads"].as_array().unwrap().len(), 1);
        // Concurrency cap.
        call(
            &c,
            "POST",
            &format!("{b}/_emulator/faults"),
            Some(json!({"path": "/Leads", "delay_ms": 400, "count": 6})),
        )
        .await;
        let hs: Vec<_> = (0..6)
            .map(|_| {
                let (c, u) = (c.clone(), lead.clone());
                tokio::spawn(async move { call(&c, "GET", &u, None).await.0 })
            })
            .collect();
        let mut codes = vec![];
        for h in hs {
            codes.push(h.await.unwrap());
        }
        assert_eq!(codes.iter().filter(|s| **s == 429).count(), 3, "{codes:?}");
        // Token expiry then refresh.
        call(
            &c,
            "POST",
            &format!("{b}/_emulator/faults"),
            Some(json!({"expire_tokens": true})),
        )
        .await;
        assert_eq!(
            call(&c, "GET", &lead, None).await.1["code"],
            "INVALID_TOKEN"
        );
        let tok: Value = c.post(format!("{b}/oauth/v2/token?grant_type=refresh_token&client_id=test-client-id&client_secret=test-client-secret&refresh_token=test-refresh-token"))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(tok["token_type"], "Bearer");
        let at = tok["access_token"].as_str().unwrap();
        let r = c
            .get(&lead)
            .header("Authorization", format!("Zoho-oauthtoken {at}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // Credits exhausted.
        let mut last = 0;
        for _ in 0..40 {
            last = c
                .get(&lead)
                .header("Authorization", format!("Zoho-oauthtoken {at}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
        }
        assert_eq!(last, 429);
    }

    #[tokio::test]
    async fn notifications_and_expiry() {
        let got = Arc::new(Mutex::new(Vec::<Value>::new()));
        let g2 = got.clone();
        let recv = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let g = g2.clone();
                async move {
                    g.lock().unwrap().push(v);
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/hook?src=t", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, recv).await.unwrap() });
        let b = start(Options::default()).await;
        let c = client();
        let w = json!({"watch": [{"channel_id": 1000, "events": ["Leads.all"], "notify_url": hook, "token": "tk"}]});
        let (s, v) = call(&c, "POST", &format!("{b}/crm/v8/actions/watch"), Some(w)).await;
        assert_eq!((s, v["watch"][0]["code"].as_str()), (200, Some("SUCCESS")));
        call(
            &c,
            "POST",
            &format!("{b}/crm/v8/Leads"),
            Some(json!({"data": [{"Last_Name": "N"}]})),
        )
        .await;
        for _ in 0..50 {
            if !got.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = got.lock().unwrap()[0].clone();
        assert_eq!(
            (
                n["operation"].as_str(),
                n["token"].as_str(),
                n["module"].as_str()
            ),
            (Some("insert"), Some("tk"), Some("Leads"))
        );
        assert_eq!(n["query_params"]["src"], "t");
        // Expiry beyond max → default 1 h; past expiry → channel dropped, no callback.
        {
            let app_state = call(&c, "GET", &format!("{b}/_emulator/state"), None)
                .await
                .1;
            assert_eq!(app_state["notifications"].as_array().unwrap().len(), 1);
        }
        let far = fmt_time(Utc::now() + chrono::Duration::days(7));
        let w = json!({"watch": [{"channel_id": 1000, "events": ["Leads.all"], "channel_expiry": far}]});
        let (_, v) = call(&c, "PATCH", &format!("{b}/crm/v8/actions/watch"), Some(w)).await;
        let exp = v["watch"][0]["details"]["events"][0]["channel_expiry"]
            .as_str()
            .unwrap();
        let exp = DateTime::parse_from_rfc3339(exp)
            .unwrap()
            .with_timezone(&Utc);
        assert!(exp <= Utc::now() + chrono::Duration::hours(1) + chrono::Duration::seconds(2));
    }
}
