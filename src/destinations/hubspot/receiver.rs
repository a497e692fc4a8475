//! The signed webhook receiver of a HubSpot two-way sink.
//!
//! Owns the route HubSpot posts property changes and deletions to. Invariants: a delivery is
//! accepted only with a valid signature (v3; v1/v2 only if configured), answered at once (204)
//! after the object ids are queued (503 when the queue is full, so HubSpot retries), and
//! de-duplicated on `eventId`; refusals are counted and logged without bodies; `*.deletion`
//! events queue [`Inbound::Deleted`] only with `on_crm_delete = "delete"`; with
//! `[sinks.inbound] public_url` (a proxy in front of the receiver) v2/v3 signatures are checked
//! against that URL only ([`signed_urls`]), otherwise against the request's `Host`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::Utc;
use serde_json::Value;
use std::collections::BTreeSet;

use super::signature;
use crate::config::two_way::OnCrmDelete;
use crate::sync::engine::{Inbound, Receiver};

/// The webhook route of a two-way sink: verify, de-duplicate, queue the object ids. The
/// receiver's `object` is the object's API name (`contacts`) and its `secret` the app's client
/// secret.
pub(crate) fn webhook_router(mut receiver: Receiver) -> axum::Router {
    // HubSpot event types name the object in the singular: contact.propertyChange.
    receiver.object = receiver
        .object
        .trim_end_matches('s')
        .replace("companie", "company");
    receiver.router(receive)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The URLs a delivery to `uri` may have been signed for (v2/v3 signatures cover the full URL
/// HubSpot posted to). With a `public_url` (the app's target URL, as a proxy in front of the
/// receiver is reached): that URL as written, or, when it has no path, its origin followed by the
/// request's path and query. Without: `http(s)://{host}{uri}` (a proxy may terminate TLS).
pub(crate) fn signed_urls(public_url: Option<&str>, host: &str, uri: &Uri) -> Vec<String> {
    match public_url {
        Some(public) => {
            let origin_only = url::Url::parse(public)
                .is_ok_and(|u| u.path() == "/" && u.query().is_none() && !public.ends_with('/'));
            if origin_only {
                let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
                vec![format!("{public}{path_and_query}")]
            } else {
                vec![public.to_string()]
            }
        }
        None => vec![
            format!("https://{host}{uri}"),
            format!("http://{host}{uri}"),
        ],
    }
}

/// Checks a webhook's signature: v3 over the URL it was sent to ([`signed_urls`]), or v1/v2
/// when legacy signatures are accepted.
fn authentic(r: &Receiver, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let host = header(headers, "host").unwrap_or_default();
    let urls = signed_urls(r.ctx.two_way.public_url.as_deref(), host, uri);
    let now_ms = Utc::now().timestamp_millis();
    if let (Some(sig), Some(ts)) = (
        header(headers, "x-hubspot-signature-v3"),
        header(headers, "x-hubspot-request-timestamp"),
    ) {
        let Ok(ts) = signature::parse_timestamp(ts) else {
            return false;
        };
        return urls
            .iter()
            .any(|u| signature::verify_v3(&r.secret, "POST", u, body, sig, ts, now_ms).is_ok());
    }
    if !r.ctx.two_way.accept_legacy_signatures {
        return false;
    }
    let Some(sig) = header(headers, "x-hubspot-signature") else {
        return false;
    };
    match header(headers, "x-hubspot-signature-version") {
        Some("v2") => urls
            .iter()
            .any(|u| signature::verify_v2(&r.secret, "POST", u, body, sig).is_ok()),
        _ => signature::verify_v1(&r.secret, body, sig).is_ok(),
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !authentic(&r, &uri, &headers, &body) {
        return r
            .ctx
            .refuse("webhook refused: missing, bad or stale signature");
    }
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut ids = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let deletes = r.ctx.two_way.on_crm_delete == OnCrmDelete::Delete;
    let mut duplicates = 0;
    let mut fresh = Vec::new();
    {
        let mut seen = r.seen.lock().expect("not poisoned");
        for e in &events {
            if let Some(id) = e["eventId"].as_i64() {
                if !seen.insert(id) {
                    duplicates += 1;
                    continue;
                }
                fresh.push(id);
            }
            let kind = e["subscriptionType"].as_str().unwrap_or_default();
            let (object, action) = kind.split_once('.').unwrap_or_default();
            if object != r.object {
                continue;
            }
            let Some(id) = e["objectId"].as_i64() else {
                continue;
            };
            match action {
                "creation" | "propertyChange" | "restore" => {
                    ids.insert(id.to_string());
                }
                "deletion" if deletes => {
                    deleted.insert(id.to_string());
                }
                _ => {}
            }
        }
    }
    r.ctx.count_duplicates(duplicates);
    let items = vec![
        Inbound::Changed(ids.into_iter().collect()),
        Inbound::Deleted(deleted.into_iter().collect()),
    ];
    r.deliver(&fresh, items).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_a_proxy_signatures_cover_the_public_url() {
        let uri: Uri = "/hooks/hubspot?x=1".parse().unwrap();
        // No public_url: the Host the receiver saw, over https or http.
        assert_eq!(
            signed_urls(None, "127.0.0.1:8090", &uri),
            [
                "https://127.0.0.1:8090/hooks/hubspot?x=1",
                "http://127.0.0.1:8090/hooks/hubspot?x=1"
            ]
        );
        // The full target URL (the proxy may rewrite the path): as written.
        let public = "https://sync.example.com/driftless/hooks";
        assert_eq!(signed_urls(Some(public), "127.0.0.1:8090", &uri), [public]);
        // An origin: the request's path and query follow it.
        assert_eq!(
            signed_urls(Some("https://sync.example.com"), "127.0.0.1:8090", &uri),
            ["https://sync.example.com/hooks/hubspot?x=1"]
        );
        // A signature computed for the public URL verifies; one for the local URL does not.
        let (secret, body, ts) = ("s3cret", b"[]".as_slice(), 1_700_000_000_000);
        let sig = signature::sign_v3(secret, "POST", public, body, ts);
        let verifies = |urls: Vec<String>| {
            urls.iter()
                .any(|u| signature::verify_v3(secret, "POST", u, body, &sig, ts, ts).is_ok())
        };
        assert!(verifies(signed_urls(Some(public), "127.0.0.1:8090", &uri)));
        assert!(!verifies(signed_urls(None, "127.0.0.1:8090", &uri)));
    }
}
