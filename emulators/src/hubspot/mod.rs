//! In-memory emulator of the HubSpot CRM v3 API (`driftless-emulate hubspot`).
//!
//! Owns the router (real axum routes, served under both `/crm/v3/...` and the date-versioned
//! `/crm/.../2026-03/...` prefixes) and the request pipeline every non-test-control request goes
//! through, in this order: scripted fault, request accounting, authentication, rate limits,
//! scopes, the route, rate-limit headers, `X-HubSpot-Correlation-Id`. What it emulates:
//!
//! - Bearer auth; 401 `INVALID_AUTHENTICATION` / `EXPIRED_AUTHENTICATION` bodies.
//! - `POST /oauth/v1/token` and `/oauth/v3/token` (form-encoded, `refresh_token` grant).
//! - sliding 10 s window per token, 429 `TEN_SECONDLY_ROLLING` body.
//! - daily cap per private-app token, reset at midnight in the account's time zone
//!   ([`Options::time_zone`], default `US/Eastern`), 429 `DAILY`.
//! - `GET /account-info/v3/details` (and `/account-info/2026-03/details`) with the account's
//!   `timeZone`.
//! - `X-HubSpot-RateLimit-*` headers (no `-Daily*` for OAuth tokens) and
//!   `X-HubSpot-Correlation-Id` on every response.
//! - search has its own per-second limiter (429 `SECONDLY`), no rate-limit headers.
//! - batch size limits (100; 50 for batch/read with `propertiesWithHistory`).
//! - batch/create: 409 CONFLICT on an existing unique value, 207 when every input has an
//!   `objectWriteTraceId`.
//! - batch/upsert 200/207 shape with `new`, `status`, timestamps; archive 204; create 201.
//! - `idProperty` must be unique (`email` for contacts, `hasUniqueValue`), never
//!   `hs_object_id`.
//! - two inputs resolving to the same record → 400 for the whole batch.
//! - unknown / read-only properties and type-invalid values reject the whole batch (400
//!   `VALIDATION_ERROR`, nothing written; knob `batchInvalidInput`: `"multi_status_207"` makes
//!   them per-input errors of a 207, or a 400 when nothing succeeded); a non-string value
//!   rejects the whole request (400).
//! - a contact's `email` is stored lowercased (knob `lowercaseEmails`); lookups by `idProperty`
//!   match the stored value exactly.
//! - scopes: every token holds [`Options::token_scopes`] (all by default; knob `tokenScopes`);
//!   an endpoint whose scope is missing answers 403 `MISSING_SCOPES`. The token endpoint checks
//!   `client_id` and `client_secret` (400 `BAD_CLIENT_ID` / `BAD_CLIENT_SECRET`).
//! - `lastmodifieddate` / `hs_lastmodifieddate`, `updatedAt` and per-property history
//!   (`sourceType`/`sourceId`/`updatedByUserId`: `INTEGRATION` + [`Options::app_source_id`] for
//!   API writes, `CRM_UI` + `userId:N` for emulated UI edits).
//! - search: `total`, offset `after`, `limit` ≤ 200, 10 000 cap, archived excluded; an index
//!   lag ([`Options::search_index_lag`], knob `searchIndexLagMs`, default 2 s): search sees a
//!   write only once the lag has passed (before that, the previous version or nothing); reads
//!   by id and batch/read are not lagged.
//! - filter-group limits (5 groups / 10 per group / 25 total).
//! - properties API with seeded schemas.
//! - HubSpot error body everywhere, correlation id mirrored in the header.
//! - webhooks: a background dispatcher POSTs JSON arrays of ≤ `max_batch` events
//!   (`{contact,company,deal}.{creation,propertyChange,deletion}`, with `eventId`,
//!   `subscriptionId`, `portalId`, `appId`, `occurredAt`, `subscriptionType`, `attemptNumber`,
//!   `objectId`, `propertyName`/`propertyValue` or `changeFlag`, `changeSource`, `sourceId`)
//!   signed with `X-HubSpot-Signature` (v1, `X-HubSpot-Signature-Version: v1`),
//!   `X-HubSpot-Signature-v3` and `X-HubSpot-Request-Timestamp`
//!   (this crate's own signing code, not driftless's). Events are emitted for exactly the values a write
//!   changed (a no-op write emits nothing); values set at creation are `propertyChange`s too.
//!   One request at a time (`maxConcurrentRequests` = 1).
//! - retries on connect failure, timeout or any status outside {2xx, 400, 401, 403, 404,
//!   405}, up to `max_retries`, backing off `retry_base_ms · 2^(n-1)` (or `Retry-After` seconds
//!   on a 429), with `attemptNumber` counting up; test knobs shuffle the order, deliver every nth
//!   event twice or drop it.
//! - soft delete (`DELETE`, batch/archive) emitting `*.deletion`, `?archived=true` reads.
//!
//! Deliberate simplifications: no merge, gdpr-delete or restore (so no
//! `*.merge`, `*.restore` or `contact.privacyDeletion` events), no association events, one
//! webhook subscription (app) at a time, no webhook settings/subscriptions API (configure over
//! `/_emulator/webhooks`); an upsert whose unique value only matches an archived record creates
//! a new record (the archived one stays archived); a write that changes no value does not bump
//! `lastmodifieddate`; the list endpoint's `after` is the
//! last record id. The `reset_connection` fault unwinds the connection task with
//! `std::panic::resume_unwind` (no panic hook, no log noise): hyper drops the socket without
//! writing a response, so the client sees the connection closed (FIN; a RST only if unread
//! request bytes remain) — axum offers no true TCP reset.
//!
//! Test-control endpoints (not part of HubSpot): `GET /_emulator/state`, `POST /_emulator/reset`
//! (also removes the webhook subscription; keeps the options), `POST /_emulator/faults`,
//! `POST /_emulator/settings` (runtime knobs, see `settings`);
//! `POST|GET|DELETE /_emulator/webhooks` (subscription config, delivery stats; see
//! `HookConfig`); `POST /_emulator/objects/{type}` (create), `POST
//! /_emulator/objects/{type}/{id}/edit` and `.../{id}/archive`, each with optional
//! `{"properties": {..}, "userId": N}`: writes "in the HubSpot UI" (`CRM_UI`, `userId:N`,
//! default user 1) with history, last-modified bump and webhooks, bypassing auth and limits.
//!
//! Invariants: the state lock is never held across an `.await`; a response to a non-test-control
//! request always carries a fresh correlation id; unknown paths and methods answer with the same
//! HubSpot error bodies as the routes would (see `unmatched`).

#![allow(clippy::result_large_err)] // helpers return ready-made error `Response`s

mod account;
mod batch;
mod control;
mod faults;
mod hooks;
mod limits;
mod oauth;
mod objects;
mod records;
mod render;
mod response;
mod schema;
mod scopes;
mod search;
mod settings;
pub mod signature;
mod state;
mod validate;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get, post};
use tower::Layer as _;

use crate::http::trim_trailing_slashes;

use faults::FaultAction;
use response::{add_correlation_id, error};
use state::{Inner, Shared};

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
    /// Requests allowed per private-app token per day of the account (HubSpot: 250 000+).
    pub daily_limit: u64,
    /// The account's time zone: the daily cap resets at midnight there, and
    /// `/account-info/v3/details` names it (HubSpot: the account's setting; default
    /// `US/Eastern`, so that a client resetting at UTC midnight is caught).
    pub time_zone: chrono_tz::Tz,
    /// Search requests allowed per token per second (HubSpot: 5).
    pub search_per_second: u32,
    /// Maximum inputs per batch request.
    pub max_batch_inputs: usize,
    /// Hub (portal) id reported by the OAuth endpoint.
    pub hub_id: u64,
    /// `sourceId` recorded in property history for API writes (the writing app).
    pub app_source_id: String,
    /// How long a write takes to reach the search index (HubSpot: about 1-5 s); until then
    /// search answers from the record's previous indexed version.
    pub search_index_lag: Duration,
    /// What a batch create/update/upsert with an invalid property value answers.
    pub batch_invalid_input: BatchInvalidInput,
    /// Whether the contact `email` property is stored lowercased (HubSpot does).
    pub lowercase_emails: bool,
    /// Scopes granted to every token (private-app and OAuth); an endpoint whose scope is
    /// missing answers 403 `MISSING_SCOPES`.
    pub token_scopes: Vec<String>,
    /// The OAuth app's client id, checked by the token endpoint.
    pub client_id: String,
    /// The OAuth app's client secret, checked by the token endpoint.
    pub client_secret: String,
}

/// What a batch write with an invalid property value (unknown, read-only, not a valid value
/// of its type or enumeration) answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum BatchInvalidInput {
    /// 400 `VALIDATION_ERROR` for the whole batch, nothing written (HubSpot's documented answer).
    #[serde(rename = "whole_batch_400")]
    WholeBatch400,
    /// 207 with the invalid inputs in `errors[]` and the others written.
    #[serde(rename = "multi_status_207")]
    MultiStatus207,
}

/// Every scope an endpoint of this emulator needs (the default grant).
pub fn all_scopes() -> Vec<String> {
    schema::TYPES
        .iter()
        .flat_map(|t| {
            ["objects.{t}.read", "objects.{t}.write", "schemas.{t}.read"]
                .map(|s| format!("crm.{}", s.replace("{t}", t)))
        })
        .collect()
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
            time_zone: chrono_tz::US::Eastern,
            search_per_second: 5,
            max_batch_inputs: 100,
            hub_id: 62515,
            app_source_id: "driftless".into(),
            search_index_lag: Duration::from_millis(2000),
            batch_invalid_input: BatchInvalidInput::WholeBatch400,
            lowercase_emails: true,
            token_scopes: all_scopes(),
            client_id: "test-client-id".into(),
            client_secret: "test-client-secret".into(),
        }
    }
}

/// The emulator's HTTP routes; all state lives behind an `Arc<Mutex<..>>` inside the router.
pub fn router(options: Options) -> Router {
    routes(Arc::new(Mutex::new(Inner::new(options))))
}

/// The routes and pipeline around `shared`.
fn routes(shared: Shared) -> Router {
    let mut routes = Router::new();
    for prefix in ["/crm/v3/objects", "/crm/objects/2026-03"] {
        routes = routes
            .route(
                &format!("{prefix}/{{object}}"),
                get(objects::list).post(objects::create),
            )
            .route(
                &format!("{prefix}/{{object}}/{{id}}"),
                get(objects::read)
                    .patch(objects::update)
                    .delete(objects::archive)
                    .post(search::search),
            )
            .route(
                &format!("{prefix}/{{object}}/batch/{{operation}}"),
                post(batch::batch),
            );
    }
    let routes = routes
        .route("/crm/v3/properties/{object}", get(schema::properties))
        .route("/crm/properties/2026-03/{object}", get(schema::properties))
        .route("/account-info/v3/details", get(account::details))
        .route("/account-info/2026-03/details", get(account::details))
        .route("/oauth/v1/token", any(oauth::token))
        .route("/oauth/v3/token", any(oauth::token))
        .route("/_emulator/state", get(control::state))
        .route("/_emulator/reset", post(control::reset))
        .route("/_emulator/faults", post(control::add_faults))
        .route("/_emulator/settings", post(settings::settings))
        .route(
            "/_emulator/webhooks",
            post(hooks::configure)
                .get(hooks::describe)
                .delete(hooks::remove),
        )
        .route("/_emulator/objects/{object}", post(control::ui_create))
        .route(
            "/_emulator/objects/{object}/{id}/{operation}",
            post(control::ui_change),
        )
        .fallback(unmatched)
        .method_not_allowed_fallback(unmatched)
        .with_state(shared.clone());
    let pipeline = axum::middleware::from_fn_with_state(shared, pipeline).layer(routes);
    Router::new().fallback_service(pipeline)
}

/// Faults, accounting, authentication and rate limits around the routes (test-control requests
/// skip everything but the correlation id).
async fn pipeline(State(shared): State<Shared>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/_emulator/") {
        trim_trailing_slashes(&mut request, "/_emulator/objects/");
        let mut response = route(request, next).await;
        add_correlation_id(&mut response);
        return response;
    }
    let (delay, action) = faults::take(&mut shared.lock().unwrap(), &path);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let fail_after_write = match action {
        FaultAction::Respond(mut response) => {
            add_correlation_id(&mut response);
            return response;
        }
        FaultAction::Reset => {
            // Unwind the connection task without invoking the panic hook: hyper drops the
            // socket and the client sees the connection closed with no response.
            std::panic::resume_unwind(Box::new("emulated connection reset"));
        }
        FaultAction::FailAfterWrite => true,
        FaultAction::None => false,
    };
    let admission = limits::admit(&mut shared.lock().unwrap(), &path, request.headers());
    let mut response = match admission {
        Err(refusal) => refusal,
        Ok(grant) => {
            let granted = shared.lock().unwrap().opts.token_scopes.clone();
            let mut response = match scopes::check(&granted, request.method(), &path) {
                Err(refusal) => refusal,
                Ok(()) => {
                    trim_trailing_slashes(&mut request, "/crm/");
                    route(request, next).await
                }
            };
            if let Some(grant) = grant {
                limits::add_headers(&mut response, &shared.lock().unwrap(), &grant);
            }
            response
        }
    };
    if fail_after_write {
        response = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error",
        );
    }
    add_correlation_id(&mut response);
    response
}

/// Routes the request, except HEAD, which HubSpot's API does not serve here (axum would answer
/// it like GET): it gets the [`unmatched`] answer. Responses carry no `Allow` header.
async fn route(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::HEAD {
        unmatched(Method::HEAD, request.uri().clone()).await
    } else {
        next.run(request).await
    };
    response.headers_mut().remove(header::ALLOW);
    response
}

/// The answer for a path no route serves, or a method a path's route does not take: an object
/// path with an unknown type is a 400, other unknown test-control or API paths a 404.
async fn unmatched(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/_emulator/") {
        let object = path.strip_prefix("/_emulator/objects/").map(|rest| {
            let rest = rest.trim_end_matches('/');
            rest.split('/').next().unwrap_or_default()
        });
        if let Some(object) = object.filter(|_| method == Method::POST)
            && records::object_type(object).is_none()
        {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "unknown object type",
            );
        }
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "unknown emulator endpoint",
        );
    }
    let object = path
        .strip_prefix("/crm/v3/objects/")
        .or_else(|| path.strip_prefix("/crm/objects/2026-03/"));
    if let Some(rest) = object {
        let object = rest.split('/').next().unwrap_or_default();
        if let Err(refusal) = schema::api_object_type(object) {
            return refusal;
        }
    }
    let properties = path
        .strip_prefix("/crm/v3/properties/")
        .or_else(|| path.strip_prefix("/crm/properties/2026-03/"));
    if properties.is_some() && method == Method::GET {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "unknown object type",
        );
    }
    error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "Unknown endpoint",
    )
}
