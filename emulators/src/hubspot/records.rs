//! Writes to the HubSpot emulator's records, and who made them.
//!
//! Owns the only code that changes records: [`write_as`] (create or update, with property history,
//! the last-modified bump and webhook events for exactly the values that changed) and
//! [`archive`] (soft delete with a `*.deletion` event). Both keep the unique-value index in step
//! with the live records, and [`find`] reads through it; both queue the new version for the
//! search index ([`Inner::index_later`]), which search sees only after the index lag.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::Utc;

use super::Options;
use super::hooks::emit;
use super::response::iso;
use super::schema::{TYPES, is_unique, modified_prop};
use super::state::{HistoryEntry, Inner, Record};

/// Finds a live (`archived = false`) or archived record by id or by unique property value.
/// Live records are found through the unique-value index; archived ones (several may share a
/// value) and non-unique properties by a scan, lowest id first.
pub(super) fn find(
    st: &Inner,
    t: &str,
    id: &str,
    id_prop: Option<&str>,
    archived: bool,
) -> Option<u64> {
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

/// Applies `props` to a new (`id = None`) or existing record as an API write by our app;
/// returns the id.
pub(super) fn write(
    st: &mut Inner,
    t: &'static str,
    id: Option<u64>,
    props: BTreeMap<String, String>,
) -> u64 {
    let src = WriteSource::api(&st.opts);
    write_as(st, t, id, props, &src)
}

/// Applies `props` to a new (`id = None`) or existing record on behalf of `src`: records
/// history, bumps the last-modified date when a value changed and emits `*.creation` /
/// `*.propertyChange` webhooks for exactly the values that changed. Returns the id.
pub(super) fn write_as(
    st: &mut Inner,
    t: &'static str,
    id: Option<u64>,
    props: BTreeMap<String, String>,
    src: &WriteSource,
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
            r.history.entry(k.into()).or_default().push(HistoryEntry {
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
        r.history.entry(k.clone()).or_default().push(HistoryEntry {
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
        r.history.entry(m.into()).or_default().push(HistoryEntry {
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
    if new || !changes.is_empty() {
        st.index_later(t, id, Instant::now());
    }
    id
}

/// Soft-deletes a live record on behalf of `src` and emits `*.deletion`; false when there is no
/// such live record.
pub(super) fn archive(st: &mut Inner, t: &'static str, id: u64, src: &WriteSource) -> bool {
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
    st.index_later(t, id, Instant::now());
    true
}

/// Who made a write: recorded in property history and in webhook `changeSource` / `sourceId`.
#[derive(Clone, Debug)]
pub(super) struct WriteSource {
    /// History `sourceType` and webhook `changeSource` (`INTEGRATION`, `CRM_UI`).
    pub(super) source_type: &'static str,
    /// History and webhook `sourceId` (our app for API writes, `userId:N` for UI edits).
    pub(super) source_id: String,
    /// History `updatedByUserId`.
    pub(super) user_id: Option<u64>,
}

impl WriteSource {
    /// An API write by the app that owns the tokens.
    pub(super) fn api(opts: &Options) -> WriteSource {
        WriteSource {
            source_type: "INTEGRATION",
            source_id: opts.app_source_id.clone(),
            user_id: None,
        }
    }

    /// An edit by user `user_id` in the HubSpot UI.
    pub(super) fn ui(user_id: u64) -> WriteSource {
        WriteSource {
            source_type: "CRM_UI",
            source_id: format!("userId:{user_id}"),
            user_id: Some(user_id),
        }
    }
}

/// Object type name used in `subscriptionType` (`contact.creation`, ...).
pub(super) fn singular(t: &str) -> &'static str {
    match t {
        "contacts" => "contact",
        "companies" => "company",
        _ => "deal",
    }
}

/// Accepts `contacts` / `contact` (etc.) in test-control paths.
pub(super) fn object_type(s: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| *t == s || singular(t) == s)
}
