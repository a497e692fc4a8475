//! Generic-webhook destination: change events POSTed as JSON, signed per Standard Webhooks 1.0.
//!
//! Owns the HTTP side of a `kind = "webhook"` sink (the Standard Webhooks 1.0
//! contract): request bodies, the `webhook-id` / `webhook-timestamp` /
//! `webhook-signature` headers, response classification and the SSRF guard. Tested against the
//! in-process receiver emulator (`driftless_emulators::webhook`).
//!
//! Invariants:
//! - bodies: `mode = "batch"` sends `{"type": "driftless.changes", "events": [...]}` (at most
//!   `batch_max_events` events, each the [`ChangeEvent`] exactly as on Kafka); `mode = "single"`
//!   sends one request per event, the body being the event;
//! - `webhook-id` depends only on the mode and the event ids in the request
//!   (`msg_` + 32 hex digits of SHA-256), so a retried request carries the id of its first
//!   attempt and receivers can de-duplicate on it; the timestamp and signature are those of the
//!   attempt;
//! - 2xx = applied; 408, 429, 5xx, timeouts and connection failures are
//!   [`SinkError::Transient`] (honouring `Retry-After`, seconds or HTTP date); 401/403, 404/405,
//!   410 and every 3xx are [`SinkError::Fatal`] with a hint (misconfiguration or a disabled
//!   endpoint: dead-lettering every event would be worse than stopping); any other 4xx is poison:
//!   a batch is bisected until the refused events are isolated, and each is [`Rejected`] with
//!   category `HTTP_<status>`;
//! - SSRF guard: redirects are never followed, no proxy from the environment is used, and unless
//!   `allow_private_destinations = true` a request to an address [`is_forbidden_destination`]
//!   refuses is never made: IP-literal hosts are checked before each request and names are
//!   resolved by [`GuardedResolver`] on every new connection (so a DNS change cannot smuggle
//!   a private address in); when only forbidden addresses remain the error is fatal;
//! - logs and errors carry statuses, counts and the host only: never the URL's path or query
//!   (they may hold tokens), event values, response bodies or the secret.

pub(crate) mod signature;
pub(crate) mod ssrf;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::sink::batch::Batch;
use crate::sink::bisect::Bisection;
use crate::sink::http;
use crate::sink::{Outcome, Rejected, Sink, SinkError};
use signature::{Secret, sign};
use ssrf::{ForbiddenDestination, GuardedResolver, is_forbidden_destination};

use crate::config::sinks::{OnDelete, SinkKind, ValidSink, WebhookMode};
use crate::event::{ChangeEvent, Op};

/// Connect timeout: a receiver that cannot accept a TCP/TLS connection in 5 s is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The `type` of a batch body.
pub(crate) const BATCH_TYPE: &str = "driftless.changes";

/// The webhook sink.
#[derive(Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    host: String,
    secret: Secret,
    mode: WebhookMode,
    allow_private: bool,
    on_delete: OnDelete,
    max_events: usize,
}

/// What one response means.
#[derive(Debug)]
enum Verdict {
    Applied,
    /// The receiver refused these events for good (4xx other than the fatal ones).
    Refused(u16),
    Failed(SinkError),
}

#[derive(Serialize)]
struct BatchBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    events: Vec<&'a ChangeEvent>,
}

const PRIVATE_HINT: &str = "deliver to a public address, or set allow_private_destinations = true \
     on the sink if this internal endpoint is intended";

/// The `webhook-id` of a request carrying `event_ids` in `mode`: stable across retries.
pub(crate) fn message_id<'a>(
    mode: WebhookMode,
    event_ids: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut h = Sha256::new();
    h.update(match mode {
        WebhookMode::Batch => b"batch".as_slice(),
        WebhookMode::Single => b"single".as_slice(),
    });
    for id in event_ids {
        // Length-prefixed, so no two id lists hash the same input.
        h.update((id.len() as u64).to_be_bytes());
        h.update(id.as_bytes());
    }
    let digest = h.finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// Classifies a response (pure apart from `Retry-After` dates being relative to the clock).
fn classify(status: u16, headers: &HeaderMap, host: &str) -> Verdict {
    match status {
        200..=299 => Verdict::Applied,
        300..=399 => {
            let to = headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| reqwest::Url::parse(l).ok())
                .and_then(|u| u.host_str().map(String::from))
                .unwrap_or_else(|| "elsewhere".into());
            Verdict::Failed(SinkError::fatal(
                format!("webhook receiver {host} answered {status}, a redirect to {to}"),
                "set url to the final endpoint: redirects are never followed, so a receiver \
                 cannot point deliveries at internal addresses",
            ))
        }
        401 | 403 => Verdict::Failed(SinkError::fatal(
            format!("webhook receiver {host} refused the delivery ({status})"),
            "check that the receiver verifies with the secret in the sink's secret_env and \
             accepts deliveries from driftless",
        )),
        404 | 405 => Verdict::Failed(SinkError::fatal(
            format!("webhook receiver {host} answered {status}: no such endpoint"),
            "check the sink's url (path and method POST)",
        )),
        410 => Verdict::Failed(SinkError::fatal(
            format!("webhook receiver {host} answered 410 Gone: the endpoint is disabled"),
            "re-enable the endpoint at the receiver or point url at a new one, then restart \
             the sink (nothing was acknowledged, so no event is lost)",
        )),
        408 | 429 | 500..=599 => Verdict::Failed(SinkError::transient(
            format!("webhook receiver {host} answered {status}"),
            http::retry_after(headers),
        )),
        400..=499 => Verdict::Refused(status),
        _ => Verdict::Failed(SinkError::transient(
            format!("webhook receiver {host} answered unexpected status {status}"),
            None,
        )),
    }
}

/// The error's text without its URL (the path or query may hold a token).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// Classifies a transport error: a forbidden destination is fatal, anything else transient.
fn transport_error(e: &reqwest::Error, host: &str) -> SinkError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<ForbiddenDestination>() {
            return SinkError::fatal(format!("webhook destination refused: {f}"), PRIVATE_HINT);
        }
        source = s.source();
    }
    let kind = http::transport_kind(e);
    SinkError::transient(
        format!("webhook receiver {host}: {kind}: {}", without_url(e)),
        None,
    )
}

impl WebhookSink {
    /// Builds the client (reqwest with rustls, no redirects, no environment proxy, the guarded
    /// resolver). Fails (fatal) when the sink is not a webhook sink or its URL is an IP literal
    /// that is forbidden and not allowed. No I/O.
    pub(crate) fn new(sink: &ValidSink, secret: Secret) -> Result<Self, SinkError> {
        let SinkKind::Webhook {
            url,
            mode,
            allow_private_destinations,
            timeout_ms,
            ..
        } = &sink.kind
        else {
            return Err(super::wrong_kind(sink, "webhook", "webhook"));
        };
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                SinkError::fatal(
                    format!("sink {}: url is not an http(s) URL", sink.name),
                    "set url to the receiver's http(s) endpoint",
                )
            })?;
        let host = url.host_str().unwrap_or_default().to_string();
        let client = http::build(
            http::builder(CONNECT_TIMEOUT, Duration::from_millis(*timeout_ms))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver {
                    allow_private: *allow_private_destinations,
                })),
        )?;
        let s = WebhookSink {
            client,
            url,
            host,
            secret,
            mode: *mode,
            allow_private: *allow_private_destinations,
            on_delete: sink.on_delete,
            max_events: sink.batch_max_events.max(1),
        };
        s.check_literal_host()?;
        Ok(s)
    }

    /// Refuses an IP-literal host that is forbidden (names are checked by the resolver).
    fn check_literal_host(&self) -> Result<(), SinkError> {
        let ip = match self.url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if !self.allow_private && is_forbidden_destination(ip) {
            return Err(SinkError::fatal(
                format!("webhook destination refused: {ip} is a forbidden address"),
                PRIVATE_HINT,
            ));
        }
        Ok(())
    }

    /// One signed POST; the verdict of its response.
    async fn deliver(&self, msg_id: &str, body: Vec<u8>, events: usize) -> Verdict {
        if let Err(e) = self.check_literal_host() {
            return Verdict::Failed(e);
        }
        let ts = chrono::Utc::now().timestamp();
        let signature = sign(&self.secret, msg_id, ts, &body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Verdict::Failed(transport_error(&e, &self.host)),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // Drain the body so the connection can be reused; its content is never logged.
        let _ = resp.bytes().await;
        tracing::debug!(host = %self.host, status, events, "webhook delivery answered");
        classify(status, &headers, &self.host)
    }

    /// Batch mode: one request per group, bisecting groups the receiver refuses.
    async fn apply_batched(
        &self,
        items: Vec<(usize, &ChangeEvent)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        let mut work = Bisection::new(&items, self.max_events);
        while let Some(group) = work.next_group() {
            let msg_id = message_id(self.mode, group.iter().map(|(_, e)| e.id.as_str()));
            let body = serde_json::to_vec(&BatchBody {
                kind: BATCH_TYPE,
                events: group.iter().map(|(_, e)| *e).collect(),
            })
            .map_err(|e| SinkError::fatal(format!("cannot encode events: {e}"), "report a bug"))?;
            match self.deliver(&msg_id, body, group.len()).await {
                Verdict::Applied => {
                    out.destination_ids
                        .extend(group.iter().map(|(i, _)| (*i, msg_id.clone())));
                }
                Verdict::Refused(status) if group.len() == 1 => {
                    out.rejected.push(refused(group[0].0, status, &self.host));
                }
                Verdict::Refused(status) => {
                    tracing::debug!(
                        host = %self.host,
                        status,
                        events = group.len(),
                        "webhook receiver refused the batch; bisecting"
                    );
                    work.split(group);
                }
                Verdict::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Single mode: one request per event.
    async fn apply_single(
        &self,
        items: Vec<(usize, &ChangeEvent)>,
        out: &mut Outcome,
    ) -> Result<(), SinkError> {
        for (index, event) in items {
            let msg_id = message_id(self.mode, [event.id.as_str()]);
            let body = serde_json::to_vec(event).map_err(|e| {
                SinkError::fatal(format!("cannot encode an event: {e}"), "report a bug")
            })?;
            match self.deliver(&msg_id, body, 1).await {
                Verdict::Applied => out.destination_ids.push((index, msg_id)),
                Verdict::Refused(status) => out.rejected.push(refused(index, status, &self.host)),
                Verdict::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn refused(index: usize, status: u16, host: &str) -> Rejected {
    Rejected {
        index,
        category: format!("HTTP_{status}"),
        message: format!("webhook receiver {host} refused the event ({status})"),
    }
}

impl Sink for WebhookSink {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        let mut out = Outcome::default();
        let items: Vec<(usize, &ChangeEvent)> = batch
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !(e.item.op == Op::Delete && self.on_delete == OnDelete::Ignore))
            .map(|(i, e)| (i, &e.item))
            .collect();
        let n = items.len();
        if n > 0 {
            match self.mode {
                WebhookMode::Batch => self.apply_batched(items, &mut out).await?,
                WebhookMode::Single => self.apply_single(items, &mut out).await?,
            }
        }
        out.sort();
        tracing::debug!(
            host = %self.host,
            events = n,
            rejected = out.rejected.len(),
            "webhook batch applied"
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
