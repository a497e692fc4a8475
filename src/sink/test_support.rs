//! Shared helpers of the sink and destination unit tests: change events, batches of them,
//! the in-process emulators, and readers of outcomes and errors. Test-only.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::batch::{Batch, Batcher, Position};
use super::mapping::SchemaProblem;
use super::{Outcome, SinkError};
use crate::config::fields::FieldRule;
use crate::config::sinks::{Auth, OnDelete, SinkKind, ValidSink};
use crate::config::{SecretSource, TableName};
use crate::event::{ChangeEvent, EVENT_FORMAT, Op, SnapshotMark, Source};
use crate::lsn::Lsn;

/// Serves an in-process emulator on a free port; its base URL.
pub(crate) async fn serve(router: axum::Router) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    driftless_emulators::serve_for_test(router).await
}

/// `GET {base}/_emulator/state` of an in-process emulator.
pub(crate) async fn emulator_state(base: &str) -> Value {
    reqwest::get(format!("{base}/_emulator/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Scripts a fault of an in-process emulator (`POST {base}/_emulator/faults`).
pub(crate) async fn emulator_fault(base: &str, fault: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_emulator/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An event of `public.customers` carrying `row` (as `before` for a delete). Events made later
/// have later source positions (ids `0/1:{n}`), as capture's would.
pub(crate) fn event(op: Op, row: Value) -> ChangeEvent {
    static ORDINAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ordinal = ORDINAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let row = row.as_object().cloned();
    let (before, after) = if op == Op::Delete {
        (row, None)
    } else {
        (None, row)
    };
    ChangeEvent {
        id: format!("0/1:{ordinal}"),
        op,
        source: Source {
            version: EVENT_FORMAT.into(),
            db: "db".into(),
            schema: "public".into(),
            table: "customers".into(),
            lsn: Lsn(1),
            commit_lsn: Lsn(1),
            xid: Some(1),
            commit_ts: Some("2026-11-27T00:00:00.000000Z".into()),
            origin: None,
            snapshot: false,
            mark: SnapshotMark::Streamed,
            schema_version: "0000000000000000".into(),
            commit_us: None,
            prev_commit_end: None,
        },
        key: None,
        before,
        after,
        unchanged_toast: vec![],
        truncate: None,
        message: None,
        key_change: None,
    }
}

/// `event` made an update (`e` keeps its row image).
pub(crate) fn as_update(mut e: ChangeEvent) -> ChangeEvent {
    e.op = Op::Update;
    e
}

/// One batch of `events`, in order, at offsets 0.. of partition 0; an event's key is its row's
/// `id` (else `email`, else its index), so events of one record coalesce.
pub(crate) fn batch(events: Vec<ChangeEvent>) -> Batch<ChangeEvent> {
    let mut b = Batcher::new(1000, Duration::from_secs(1));
    let now = Instant::now();
    for (i, e) in events.into_iter().enumerate() {
        let key = e
            .after
            .as_ref()
            .or(e.before.as_ref())
            .and_then(|r| r.get("id").or_else(|| r.get("email")))
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_else(|| i.to_string().into_bytes());
        let at = Position {
            partition: 0,
            offset: i as i64,
        };
        b.push(key, e, at, now);
    }
    b.take().unwrap()
}

/// The rejected entries of `out` as (index, category).
pub(crate) fn rejected(out: &Outcome) -> Vec<(usize, &str)> {
    out.rejected
        .iter()
        .map(|r| (r.index, r.category.as_str()))
        .collect()
}

/// The entry indexes `out` applied.
pub(crate) fn applied(out: &Outcome) -> Vec<usize> {
    out.destination_ids.iter().map(|d| d.0).collect()
}

/// The `retry_after` and message of a transient error; panics on anything else.
pub(crate) fn transient<T: std::fmt::Debug>(r: Result<T, SinkError>) -> (Option<Duration>, String) {
    match r {
        Err(SinkError::Transient {
            retry_after,
            message,
        }) => (retry_after, message),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// The message and hint of a fatal error; panics on anything else.
pub(crate) fn fatal<T: std::fmt::Debug>(r: Result<T, SinkError>) -> (String, String) {
    match r {
        Err(SinkError::Fatal { message, hint }) => (message, hint),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

/// Asserts the config paths of `problems`, in order.
pub(crate) fn assert_problem_paths(problems: &[SchemaProblem], expected: &[&str]) {
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, expected, "{problems:#?}");
}

/// Applies `creates` (one per record), then `update` of the first record: every entry is
/// applied, and the update lands on the record the first create made.
pub(crate) async fn assert_update_keeps_the_record(
    s: &mut impl super::Sink,
    creates: Vec<ChangeEvent>,
    update: ChangeEvent,
) {
    let n = creates.len();
    let out = s.apply(&batch(creates)).await.unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    assert_eq!(out.destination_ids.len(), n);
    let out2 = s.apply(&batch(vec![update])).await.unwrap();
    assert_eq!(
        out2.destination_ids,
        vec![(0, out.destination_ids[0].1.clone())]
    );
}

/// A rule mapping `column` to `property` through the value map `pairs`.
pub(crate) fn mapped_rule(column: &str, property: &str, pairs: &[(&str, &str)]) -> FieldRule {
    let mut rule = FieldRule::new(column, property);
    rule.map = Some(
        pairs
            .iter()
            .map(|(from, to)| (from.to_string(), to.to_string()))
            .collect(),
    );
    rule
}

/// A sink `name` of `kind` for `public.customers` with `fields`: deletes archived, batches of
/// 100 events or 1 s, no id property, auth, base URL, schedule or two-way sync.
pub(crate) fn sink_config(name: &str, kind: SinkKind, fields: Vec<FieldRule>) -> ValidSink {
    ValidSink {
        name: name.into(),
        kind,
        table: TableName {
            schema: "public".into(),
            name: "customers".into(),
        },
        id_property: None,
        auth: None,
        base_url: String::new(),
        on_delete: OnDelete::Archive,
        fields,
        batch_max_events: 100,
        batch_max_wait_ms: 1000,
        schedule: None,
        verify_every: None,
        two_way: None,
    }
}

/// A CRM sink: [`sink_config`] matching records on `id_property`, with a token read from
/// `token_env`, sending to `base_url`.
pub(crate) fn crm_config(
    name: &str,
    kind: SinkKind,
    fields: Vec<FieldRule>,
    id_property: &str,
    token_env: &str,
    base_url: &str,
) -> ValidSink {
    ValidSink {
        id_property: Some(id_property.into()),
        auth: Some(Auth::Token(SecretSource::Env(token_env.into()))),
        base_url: base_url.into(),
        ..sink_config(name, kind, fields)
    }
}

/// Applies `good` followed by `poison` in one batch, checks that only `good` was applied, and
/// returns the outcome (for the caller's checks of the rejections).
pub(crate) async fn apply_with_poison(
    s: &mut impl super::Sink,
    good: ChangeEvent,
    poison: Vec<ChangeEvent>,
) -> Outcome {
    let events = std::iter::once(good).chain(poison).collect();
    let out = s.apply(&batch(events)).await.unwrap();
    assert_eq!(applied(&out), [0], "{out:?}");
    out
}
