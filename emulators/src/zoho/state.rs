//! The Zoho emulator's in-memory state.
//!
//! Owns the records of every module, access tokens and their mint history, the concurrency
//! gate's in-flight counts, the credit ledger, write and workflow logs, notification channels and
//! the callbacks sent, queued faults and the behaviour knobs (which a reset keeps). Invariant: `in_flight` counts exactly the live
//! [`FlightGuard`]s of each token.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::Method;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Options;
use super::knobs::Knobs;

/// A notification callback to send: the channel's URL and the payload.
pub(super) type Delivery = (String, Value);

/// One record of a module (soft-deleted ones stay, with `deleted` set).
pub(super) struct Record {
    pub(super) id: u64,
    pub(super) module: String,
    pub(super) fields: Map<String, Value>,
    pub(super) created: DateTime<Utc>,
    pub(super) modified: DateTime<Utc>,
    pub(super) deleted: Option<DateTime<Utc>>,
}

/// An access token: who minted it (none for the configured ones), when, and until when.
pub(super) struct Token {
    pub(super) refresh: Option<String>,
    /// The scopes granted when it was minted (None: a configured token, which has the scopes
    /// of the `grantedScopes` knob).
    pub(super) scopes: Option<Vec<String>>,
    pub(super) expires: Instant,
    pub(super) issued: Instant,
}

/// A notification channel (`/actions/watch`).
pub(super) struct Channel {
    pub(super) channel_id: String,
    pub(super) events: Vec<String>,
    pub(super) notify_url: String,
    pub(super) token: Option<String>,
    pub(super) expiry: DateTime<Utc>,
    pub(super) affected_values: bool,
}

/// One scripted fault as posted to `/_emulator/faults`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Fault {
    pub(super) path: Option<String>,
    pub(super) method: Option<String>,
    pub(super) count: Option<u32>,
    pub(super) status: Option<u16>,
    pub(super) delay_ms: Option<u64>,
    pub(super) fail_after_write: bool,
    pub(super) expire_tokens: bool,
    /// Answer with an HTML page (`status`, default 200) instead of the API's JSON.
    pub(super) html: bool,
}

/// Everything the emulator knows.
pub(super) struct Inner {
    pub(super) records: Vec<Record>,
    pub(super) next_id: u64,
    pub(super) tokens: HashMap<String, Token>,
    pub(super) mints: HashMap<String, VecDeque<Instant>>,
    pub(super) in_flight: HashMap<String, usize>,
    pub(super) max_concurrent: usize,
    pub(super) credits: VecDeque<(Instant, u64)>,
    pub(super) request_counts: BTreeMap<String, u64>,
    pub(super) write_calls: Vec<Value>,
    pub(super) workflow_runs: u64,
    pub(super) channels: Vec<Channel>,
    pub(super) notifications: Vec<Value>,
    pub(super) faults: Vec<Fault>,
    pub(super) rejected_429: u64,
    /// The behaviour knobs (kept across resets).
    pub(super) knobs: Knobs,
}

impl Inner {
    pub(super) fn new(o: &Options) -> Self {
        let now = Instant::now();
        let tokens = o
            .access_tokens
            .iter()
            .map(|t| {
                let tok = Token {
                    refresh: None,
                    scopes: None,
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
            knobs: o.knobs.clone(),
        }
    }

    pub(super) fn take_fault(&mut self, path: &str, method: &Method) -> Option<Fault> {
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

/// The state shared by the routes and the pipeline.
#[derive(Clone)]
pub(super) struct App {
    pub(super) opts: Arc<Options>,
    pub(super) st: Arc<Mutex<Inner>>,
    pub(super) client: Option<reqwest::Client>,
}

impl App {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// POSTs notification callbacks in the background (when enabled; they are logged in the
    /// state either way).
    pub(super) fn send(&self, deliveries: Vec<Delivery>) {
        let Some(client) = self
            .client
            .as_ref()
            .filter(|_| self.opts.send_notifications)
        else {
            return;
        };
        for (url, payload) in deliveries {
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.post(&url).json(&payload).send().await {
                    tracing::warn!(%url, error = %e, "zoho emulator: notification failed");
                }
            });
        }
    }
}

/// Holds one concurrency slot of a token; frees it when dropped.
pub(super) struct FlightGuard {
    pub(super) st: Arc<Mutex<Inner>>,
    pub(super) token: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut s = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = s.in_flight.get_mut(&self.token) {
            *n = n.saturating_sub(1);
        }
    }
}
