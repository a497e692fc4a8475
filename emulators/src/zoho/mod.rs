//! In-memory emulator of the Zoho CRM v8 REST API (`driftless-emulate zoho`).
//!
//! Owns the router (real axum routes under `/crm/v8`) and the request pipeline every
//! non-test-control request goes through, in this order: request accounting, scripted fault,
//! authentication, concurrency gate and credit ledger, the route, notification callbacks. What it
//! emulates:
//! - `Authorization: Zoho-oauthtoken <t>` only (`Bearer` fails); invalid/expired → 401
//!   `INVALID_TOKEN`.
//! - `POST /oauth/v2/token` (query string or urlencoded body); ≤10 mints per refresh token
//!   per 10 min; ≤30 live access tokens per refresh token (oldest evicted).
//! - insert / update / upsert, ≤100 records (else 400 `LIMIT_EXCEEDED`), `data[]` in input
//!   order mixing success and error items. HTTP status: all ok → 201 (insert) / 200 (update,
//!   upsert); mixed → 207; all failed → 400.
//! - upsert matching by `duplicate_check_fields` order, else system field then unique fields.
//! - `DUPLICATE_DATA` (with `duplicate_record.id`), `MANDATORY_NOT_FOUND`, `INVALID_DATA`
//!   (type, picklist, `maximum_length`, invalid id), `NOT_ALLOWED` (read-only), `INVALID_MODULE`.
//! - OAuth scopes per token (`ZohoCRM.modules[.{module}].{op}`, `ZohoCRM.settings.{x}.READ`,
//!   `ZohoCRM.notifications.{op}`, `ZohoCRM.coql.READ` plus the module's READ for COQL; `ALL`
//!   covers every op): outside them → 401 `OAUTH_SCOPE_MISMATCH`.
//! - concurrency gate per access token (429 `TOO_MANY_REQUESTS`).
//! - rolling-24 h credit ledger; 1 credit per call, COQL 1/2/3 by LIMIT band; exhausted →
//!   429 `TOO_MANY_REQUESTS` (the same body as the concurrency gate) or 429 `LIMIT_REACHED`,
//!   by the `creditExhaustedBody` knob.
//! - `trigger` absent → workflows "run"; `[]` → none; logged in `/_emulator/state`.
//! - `Modified_Time`/`Created_Time` as `YYYY-MM-DDTHH:MM:SS+00:00`, `Modified_By`;
//!   soft delete to the recycle bin; `GET /{Module}/deleted?type=all|recycle|permanent`.
//! - COQL subset: `select f,.. from M [where <expr>] [order by f [asc|desc],..]
//!   [limit n [offset m] | limit m, n]` with `and`/`or`/parentheses, `= != <> < <= > >=`,
//!   `like`, `in`, `not in`, `is [not] null`; LIMIT ≤2000, OFFSET+LIMIT ≤100 000, ≤25 criteria,
//!   ≤50 `in` values; more than two criteria only grouped in pairs; reserved words as field
//!   names only quoted; parse errors → 400 `SYNTAX_ERROR`; `info{count, more_records}`.
//! - `/crm/v8/actions/watch` POST/GET/PATCH/PUT/DELETE; POST of a subscribed channel id →
//!   `DUPLICATE_DATA` (update it with PUT/PATCH); expiry default 1 h, capped at
//!   [`Options::max_channel_expiry`]; callbacks POSTed asynchronously, none after expiry.
//! - `GET /crm/v8/settings/fields?module=X` for Leads, Contacts, Accounts, Deals.
//!
//! Not implemented / simplified: `X-EXTERNAL` external-id writes, the sub-concurrency gate of 10
//! for heavy calls, `/search`, `page_token`, `If-Modified-Since`, bulk write. Unknown field names in writes
//! are ignored (as Zoho does). OAuth errors return HTTP 200 with `{"error": ..}` like Zoho, except
//! the mint-rate error (400). All tokens act as the single user [`Options::user_id`].
//!
//! The unverified readings are [`Knobs`], defaulting to the stricter one.
//!
//! Test control (not Zoho): `GET /_emulator/state`, `POST /_emulator/reset` (keeps the knobs),
//! `POST /_emulator/settings` (a JSON object of camelCase knobs; 204; unknown knob → 400),
//! `POST /_emulator/faults` (one fault object, an array, or `{"faults": [...]}`; each fault has
//! optional `path` substring, `method`, `count` (default 1), `status`, `delay_ms`,
//! `fail_after_write`, `expire_tokens`, `html`: an HTML page with `status`, default 200, as a
//! proxy or a login page in front of the API would answer).

//!
//! Invariants: the state lock is never held across an `.await`; a request counts against the
//! concurrency gate of its token for as long as it is being answered (delays included); unknown
//! paths and methods answer with Zoho's error bodies (see `unmatched`).

mod control;
mod coql;
mod knobs;
mod notify;
mod oauth;
mod records;
mod response;
mod schema;
mod state;
mod write;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tower::Layer as _;

use crate::http::trim_trailing_slashes;

use response::{Resp, err, fault_response};
use state::{App, FlightGuard, Inner};

pub use knobs::{ALL_SCOPES, CreditExhaustedBody, DuplicateChannelId, Knobs};

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
    /// Behaviour knobs at start (also settable at run time, `POST /_emulator/settings`).
    pub knobs: Knobs,
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
            knobs: Knobs::default(),
            concurrency_limit: 10,
            max_channel_expiry: Duration::from_secs(86_400),
            send_notifications: true,
            user_id: "5545974000000240001".into(),
            user_name: "Driftless Integration".into(),
        }
    }
}

/// The emulator's HTTP routes.
pub fn router(options: Options) -> Router {
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
    let routes = Router::new()
        .route("/oauth/v2/token", any(oauth::token))
        .route("/crm/v8/coql", post(coql::query))
        .route("/crm/v8/settings/fields", get(schema::fields))
        .route("/crm/v8/settings/modules", get(schema::modules))
        .route(
            "/crm/v8/actions/watch",
            post(notify::subscribe)
                .patch(notify::update)
                .put(notify::update)
                .get(notify::channels)
                .delete(notify::unsubscribe),
        )
        .route(
            "/crm/v8/{module}",
            get(records::list)
                .post(write::insert)
                .put(write::update)
                .delete(records::delete_by_ids),
        )
        .route(
            "/crm/v8/{module}/{id}",
            get(records::read)
                .post(write::upsert)
                .put(write::update_by_id)
                .delete(records::delete_by_id),
        )
        .route("/_emulator/state", get(control::state))
        .route("/_emulator/reset", post(control::reset))
        .route(
            "/_emulator/settings",
            post(control::settings).get(control::knob_values),
        )
        .route(
            "/_emulator/faults",
            post(control::add_faults).delete(control::clear_faults),
        )
        .fallback(unmatched)
        .method_not_allowed_fallback(unmatched)
        .with_state(app.clone());
    let pipeline = axum::middleware::from_fn_with_state(app, pipeline).layer(routes);
    Router::new().fallback_service(pipeline)
}

/// Accounting, faults, authentication, the concurrency gate and the credit ledger around the
/// routes (test-control requests skip all of it).
async fn pipeline(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/_emulator/") {
        return route(request, next).await;
    }
    let method = request.method().clone();
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
        if fault.html {
            return crate::http::html_page(fault.status.unwrap_or(200));
        }
        if let Some(s) = fault.status {
            return fault_response(s).into_response();
        }
        return route(request, next).await;
    }
    // Authentication.
    let token = request
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Zoho-oauthtoken "))
        .map(|t| t.trim().to_string());
    let Some(token) = token else {
        return err(
            401,
            "AUTHENTICATION_FAILURE",
            "Authentication failed",
            json!({}),
        )
        .into_response();
    };
    let (cost, coql_module) = if path.ends_with("/coql") {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let read = (coql::cost(&body), coql::module(&body));
        request = Request::from_parts(parts, Body::from(body));
        read
    } else {
        (1, None)
    };
    let needs = knobs::needs(method.as_str(), &path, coql_module.as_deref());
    let _guard = match admit(&app, &token, &needs, cost) {
        Ok(guard) => guard,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if fault.html {
        return crate::http::html_page(fault.status.unwrap_or(200));
    }
    if let Some(s) = fault.status {
        return fault_response(s).into_response();
    }
    trim_trailing_slashes(&mut request, "/crm/v8/");
    let response = route(request, next).await;
    if fault.fail_after_write {
        return fault_response(500).into_response();
    }
    response
}

/// Checks the token, its scopes against `needs`, the concurrency gate and the rolling-24-hour
/// credits (charging `cost`); the guard holds the request's concurrency slot until dropped.
fn admit(app: &App, token: &str, needs: &[knobs::Need], cost: u64) -> Result<FlightGuard, Resp> {
    let mut st = app.lock();
    let now = Instant::now();
    let scopes = match st.tokens.get(token) {
        Some(t) if t.expires > now => t.scopes.clone(),
        _ => return Err(err(401, "INVALID_TOKEN", "invalid oauth token", json!({}))),
    };
    let granted = scopes.unwrap_or_else(|| st.knobs.granted_scopes.clone());
    if !needs.iter().all(|n| n.met_by(&granted)) {
        return Err(err(
            401,
            "OAUTH_SCOPE_MISMATCH",
            "invalid oauth scope to access this URL",
            json!({}),
        ));
    }
    let n = st.in_flight.get(token).copied().unwrap_or(0);
    if n >= app.opts.concurrency_limit {
        st.rejected_429 += 1;
        return Err(too_many_requests());
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
    if used + cost > st.knobs.credits_per_day {
        st.rejected_429 += 1;
        return Err(match st.knobs.credit_exhausted_body {
            CreditExhaustedBody::TooManyRequests => too_many_requests(),
            CreditExhaustedBody::LimitReached => {
                err(429, "LIMIT_REACHED", "API limit reached", json!({}))
            }
        });
    }
    st.credits.push_back((now, cost));
    st.in_flight.insert(token.to_string(), n + 1);
    let total: usize = st.in_flight.values().sum();
    st.max_concurrent = st.max_concurrent.max(total);
    Ok(FlightGuard {
        st: app.st.clone(),
        token: token.to_string(),
    })
}

/// The concurrency gate's refusal (and, with the default knob, the credit ledger's).
fn too_many_requests() -> Resp {
    err(
        429,
        "TOO_MANY_REQUESTS",
        "too many requests, please try again after some time",
        json!({}),
    )
}

/// Routes the request, except HEAD, which Zoho's API does not serve here (axum would answer it
/// like GET): it gets the [`unmatched`] answer. Responses carry no `Allow` header.
async fn route(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::HEAD {
        unmatched(request.uri().clone()).await.into_response()
    } else {
        next.run(request).await
    };
    response.headers_mut().remove(header::ALLOW);
    response
}

/// The answer for a path no route serves, or a method a path's route does not take: an unknown
/// module is a 400 `INVALID_MODULE`, a known path with the wrong method a 405, anything else a
/// 404 `INVALID_URL_PATTERN`.
async fn unmatched(uri: Uri) -> Resp {
    let path = uri.path();
    let url_pattern = || {
        err(
            404,
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
            json!({}),
        )
    };
    if path.starts_with("/_emulator/") {
        return err(
            404,
            "INVALID_URL_PATTERN",
            "unknown emulator endpoint",
            json!({}),
        );
    }
    let Some(rest) = path.strip_prefix("/crm/v8/") else {
        return url_pattern();
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let wrong_method = || {
        err(
            405,
            "INVALID_REQUEST_METHOD",
            "The http request method type is not a valid one",
            json!({}),
        )
    };
    if segments == ["actions", "watch"] {
        return wrong_method();
    }
    if schema::schema(segments[0]).is_none() {
        return schema::invalid_module(json!({"resource_path_index": 0}));
    }
    if segments.len() <= 2 {
        return wrong_method();
    }
    url_pattern()
}
