//! The HubSpot emulator's in-memory state.
//!
//! Owns the records of every object type with their property history, the unique-value index,
//! issued OAuth tokens, the rate-limit windows, request statistics, queued faults and the webhook
//! subscription, and the search index. Invariants: the unique-value index holds exactly the
//! unique property values of live records (see [`Inner::unique`]); the search index holds, per
//! record, the newest version written at least [`Options::search_index_lag`] ago (see
//! [`Inner::indexed`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};

use super::Options;
use super::faults::Fault;
use super::hooks::Hooks;
use super::schema::TYPES;

/// The state shared by the routes, the pipeline and the webhook dispatcher.
pub(super) type Shared = Arc<Mutex<Inner>>;

/// One entry of a property's history.
#[derive(Clone, Debug)]
pub(super) struct HistoryEntry {
    pub(super) value: String,
    pub(super) timestamp: DateTime<Utc>,
    pub(super) source_type: &'static str,
    pub(super) source_id: String,
    pub(super) user_id: Option<u64>,
}

/// One CRM object.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub(super) id: u64,
    pub(super) props: BTreeMap<String, String>,
    pub(super) history: BTreeMap<String, Vec<HistoryEntry>>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) archived: bool,
    pub(super) archived_at: Option<DateTime<Utc>>,
}

/// An issued OAuth access token.
pub(super) struct OauthToken {
    pub(super) expires_at: DateTime<Utc>,
}

/// Everything the emulator knows.
pub(super) struct Inner {
    pub(super) opts: Options,
    pub(super) objects: BTreeMap<&'static str, BTreeMap<u64, Record>>,
    /// Unique-value index of the *live* records: type → unique property → value → record id.
    /// Maintained by `write_as` and `archive` (the only writers of `props` / `archived`), so
    /// lookups by `idProperty` cost O(1) instead of a scan of every record. Archived records are
    /// not indexed: they never match an upsert, and `?archived=true` reads scan.
    pub(super) unique: HashMap<&'static str, HashMap<String, HashMap<String, u64>>>,
    pub(super) next_id: u64,
    pub(super) oauth: HashMap<String, OauthToken>,
    pub(super) expired_static: bool,
    pub(super) burst: HashMap<String, VecDeque<Instant>>,
    pub(super) secondly: HashMap<String, VecDeque<Instant>>,
    pub(super) daily: HashMap<String, (NaiveDate, u64)>,
    pub(super) arrivals: VecDeque<Instant>,
    pub(super) max_in_window: usize,
    pub(super) total_requests: u64,
    pub(super) rate_limited: u64,
    /// Properties received in batch create/update/upsert inputs (what the client sent).
    pub(super) input_properties: u64,
    pub(super) by_path: BTreeMap<String, u64>,
    pub(super) faults: VecDeque<Fault>,
    pub(super) hooks: Option<Hooks>,
    pub(super) next_event_id: u64,
    /// What search sees: type → id → the record's version as indexed (without history).
    /// Versions reach it from [`Inner::indexing`] once due ([`Inner::catch_up_index`]).
    pub(super) indexed: BTreeMap<&'static str, BTreeMap<u64, Record>>,
    /// Versions on their way to the search index, in write order: (due, type, version).
    pub(super) indexing: VecDeque<(Instant, &'static str, Record)>,
}

impl Inner {
    pub(super) fn new(opts: Options) -> Self {
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
            input_properties: 0,
            by_path: BTreeMap::new(),
            faults: VecDeque::new(),
            hooks: None,
            next_event_id: 1,
            indexed: TYPES.iter().map(|t| (*t, BTreeMap::new())).collect(),
            indexing: VecDeque::new(),
        }
    }

    /// Queues the current version of record `id` (written at `now`) for the search index; it
    /// is indexed at once when the lag is zero.
    pub(super) fn index_later(&mut self, t: &'static str, id: u64, now: Instant) {
        let Some(r) = self.objects[t].get(&id) else {
            return;
        };
        let version = Record {
            history: BTreeMap::new(),
            ..r.clone()
        };
        self.indexing
            .push_back((now + self.opts.search_index_lag, t, version));
        self.catch_up_index(now);
    }

    /// Moves every version due at `now` into the search index, in write order.
    pub(super) fn catch_up_index(&mut self, now: Instant) {
        while self.indexing.front().is_some_and(|(due, ..)| *due <= now) {
            let (_, t, version) = self.indexing.pop_front().expect("checked");
            let index = self.indexed.get_mut(t).expect("type");
            index.insert(version.id, version);
        }
    }
}
