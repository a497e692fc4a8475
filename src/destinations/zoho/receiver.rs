//! The notification side of a Zoho two-way sink: the receiver and the watch channel.
//!
//! Owns the route Zoho posts notifications to and the channel that makes Zoho post them.
//! Invariants: a notification is accepted only with the channel's token (compared in constant
//! time), answered at once after its ids are queued (503 when the queue is full), and
//! de-duplicated; the channel id is stable per sink and its token fresh per start; a channel
//! left subscribed by an earlier start (Zoho refuses to subscribe its id again) is taken over
//! with PUT; the channel is renewed half-way to its expiry (re-created when Zoho forgot it) and
//! deleted at shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::ZohoSink;
use super::two_way::{is_record_id, parse_time, record_id, zoho_time};
use crate::config::two_way::OnCrmDelete;
use crate::sink::SinkError;
use crate::sync::engine::{Inbound, Receiver};

/// Lifetime asked for the watch channel (Zoho allows up to a day).
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(6 * 3_600);

/// A notification as Zoho posts it (the fields driftless uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notification {
    /// Module API name.
    pub(crate) module: String,
    /// `insert`, `update` or `delete`.
    pub(crate) operation: String,
    /// Record ids (digits only; others are dropped).
    pub(crate) ids: Vec<String>,
    /// The channel's token.
    pub(crate) token: Option<String>,
}

/// Parses a notification body (None: not a notification).
pub(crate) fn parse_notification(body: &[u8]) -> Option<Notification> {
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
pub(crate) fn token_matches(expected: &str, got: Option<&str>) -> bool {
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
pub(crate) fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn body_id(body: &[u8]) -> i64 {
    let digest = Sha256::digest(body);
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(eight)
}

/// The notification route of a Zoho two-way sink: check the token, de-duplicate, queue ids.
/// The receiver's `object` is the module's API name and its `secret` the channel's token.
pub(crate) fn notification_router(receiver: Receiver) -> axum::Router {
    receiver.router(receive)
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let notification = parse_notification(&body);
    let token = notification.as_ref().and_then(|n| n.token.as_deref());
    if !token_matches(&r.secret, token) {
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
    if !n.module.eq_ignore_ascii_case(&r.object) || n.ids.is_empty() {
        return StatusCode::NO_CONTENT;
    }
    let item = match n.operation.as_str() {
        "insert" | "update" => Inbound::Changed(n.ids),
        "delete" if r.ctx.two_way.on_crm_delete == OnCrmDelete::Delete => Inbound::Deleted(n.ids),
        _ => return StatusCode::NO_CONTENT,
    };
    r.deliver(&[id], vec![item]).await
}

/// The watch channel of a sink.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    /// Channel id (stable per sink name, so a restart takes the previous channel over).
    pub(crate) id: u64,
    /// Token Zoho sends back with every notification.
    pub(crate) token: String,
    /// Where Zoho posts.
    pub(crate) notify_url: String,
    /// `{Module}.all`.
    pub(crate) events: Vec<String>,
}

impl Channel {
    /// A channel for `sink` on `module` with a fresh token.
    pub(crate) fn new(sink: &str, module: &str, notify_url: &str) -> Channel {
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
    pub(crate) fn body(&self, expiry: DateTime<Utc>) -> Value {
        json!({"watch": [{
            "channel_id": self.id,
            "events": self.events,
            "channel_expiry": zoho_time(expiry.timestamp_millis()),
            "token": self.token,
            "notify_url": self.notify_url,
        }]})
    }
}

/// Creates (`create`) or renews the channel; returns its expiry as Zoho reports it. Zoho
/// refuses to create a channel whose id is still subscribed (a worker that did not shut down
/// cleanly left it): that one is taken over with PUT, which sets this start's token, URL and
/// events.
pub(crate) async fn watch_channel(
    zoho: &ZohoSink,
    channel: &Channel,
    create: bool,
) -> Result<DateTime<Utc>, SinkError> {
    let asked = Utc::now() + chrono::Duration::from_std(CHANNEL_LIFETIME).unwrap_or_default();
    let body = channel.body(asked);
    let method = if create {
        reqwest::Method::POST
    } else {
        reqwest::Method::PATCH
    };
    let (mut status, mut answer) = zoho
        .call(method, "/crm/v8/actions/watch", Some(&body))
        .await?;
    if create && answer["watch"][0]["code"] == "DUPLICATE_DATA" {
        tracing::info!(
            channel = channel.id,
            "Zoho watch channel exists; taking it over"
        );
        (status, answer) = zoho
            .call(reqwest::Method::PUT, "/crm/v8/actions/watch", Some(&body))
            .await?;
    }
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
pub(crate) async fn keep_channel(
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
