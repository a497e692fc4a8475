use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::sink::batch::Entry;
use crate::sink::test_support::event;

/// An entry of key `key` at position `0/{lsn}:0`; `row` is the row image (the key alone for
/// a delete, as REPLICA IDENTITY DEFAULT sends it).
fn entry(key: &str, op: Op, lsn: u64, row: Value) -> Entry<ChangeEvent> {
    let mut item = event(op, row);
    item.id = format!("0/{lsn:X}:0");
    Entry {
        key: key.as_bytes().to_vec(),
        item,
        positions: vec![],
    }
}

fn batch(entries: Vec<Entry<ChangeEvent>>) -> Batch<ChangeEvent> {
    Batch {
        records: entries.len(),
        entries,
        commit: Default::default(),
    }
}

/// Maps `email` to the identity and every other column to a property.
fn mapped(b: &Batch<ChangeEvent>) -> Vec<Change<Value>> {
    changes(b, |row| {
        let email = row["email"].as_str().ok_or(MappingError::MissingId {
            column: "email".into(),
        })?;
        let properties = row
            .iter()
            .filter(|(k, _)| *k != "id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((email.to_string(), properties))
    })
}

fn link(record: &str, email: &str, lsn: u64, fields: &[(&str, Value)]) -> Link {
    Link {
        record_id: Some(record.into()),
        identity: Some(identity_digest(email)),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), value_digest(v)))
            .collect(),
        position: SourcePosition {
            commit_lsn: Lsn(lsn),
            ordinal: 0,
        },
        tombstone: false,
    }
}

fn view(links: Vec<(&str, Link)>) -> View {
    View {
        links: links
            .into_iter()
            .map(|(k, l)| (key_digest(k.as_bytes()), l))
            .collect(),
    }
}

fn run(b: &Batch<ChangeEvent>, v: &View, on_delete: OnDelete) -> Plan<Value> {
    plan(b, mapped(b), v, on_delete)
}

fn ids(pairs: &[(usize, &str)]) -> Outcome {
    Outcome {
        rejected: vec![],
        destination_ids: pairs.iter().map(|(i, id)| (*i, id.to_string())).collect(),
    }
}

fn written(p: &Plan<Value>, out: &Outcome) -> BTreeMap<String, Link> {
    p.links(out)
        .into_iter()
        .map(|(k, l)| (hex::encode(&k[..4]), l))
        .collect()
}

fn short(key: &str) -> String {
    hex::encode(&key_digest(key.as_bytes())[..4])
}

#[test]
fn a_change_not_newer_than_the_ledger_is_skipped_as_stale() {
    let v = view(vec![("1", link("R1", "a@x", 10, &[]))]);
    let b = batch(vec![
        entry(
            "1",
            Op::Update,
            10,
            json!({"id": 1, "email": "a@x", "name": "old"}),
        ),
        entry("2", Op::Create, 9, json!({"id": 2, "email": "b@x"})),
    ]);
    let p = run(&b, &v, OnDelete::Archive);
    assert_eq!(p.skipped, vec![(0, Skip::Stale)]);
    assert_eq!(p.stale(), 1);
    assert_eq!(p.upserts.len(), 1);
    assert_eq!(p.upserts[0].index, 1);
    // The stale entry leaves its ledger row alone.
    let rows = written(&p, &ids(&[(1, "R2")]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[&short("2")].record_id.as_deref(), Some("R2"));
}

#[test]
fn a_key_only_delete_removes_the_record_linked_to_its_key() {
    let v = view(vec![("1", link("R1", "a@x", 5, &[]))]);
    let b = batch(vec![entry("1", Op::Delete, 6, json!({"id": 1}))]);
    let p = run(&b, &v, OnDelete::Archive);
    assert_eq!(p.deletes, vec![(0, "R1".to_string())]);
    let out = ids(&[(0, "R1")]);
    assert_eq!(p.deletes_to_run(&out), vec![(0, "R1".to_string())]);
    let rows = written(&p, &out);
    let row = &rows[&short("1")];
    assert!(row.tombstone);
    assert_eq!(row.record_id, None);
    assert_eq!(row.position.commit_lsn, Lsn(6));
}

#[test]
fn a_delete_of_a_key_never_linked_deletes_nothing_but_is_noted() {
    let b = batch(vec![entry("1", Op::Delete, 6, json!({"id": 1}))]);
    let p = run(&b, &View::default(), OnDelete::Archive);
    assert!(p.deletes.is_empty());
    assert_eq!(p.skipped, vec![(0, Skip::NothingToDelete)]);
    let rows = written(&p, &Outcome::default());
    assert!(rows[&short("1")].tombstone);
}

#[test]
fn an_ignored_delete_keeps_the_record_noted_on_the_tombstone() {
    let v = view(vec![("1", link("R1", "a@x", 5, &[]))]);
    let b = batch(vec![entry("1", Op::Delete, 6, json!({"id": 1}))]);
    let p = run(&b, &v, OnDelete::Ignore);
    assert!(p.deletes.is_empty());
    let row = &written(&p, &Outcome::default())[&short("1")];
    assert!(row.tombstone);
    assert_eq!(row.record_id.as_deref(), Some("R1"));
}

#[test]
fn delete_and_reinsert_of_one_email_in_a_batch_keeps_the_record_for_the_new_key() {
    let v = view(vec![("1", link("R1", "a@x", 5, &[]))]);
    let b = batch(vec![
        entry("1", Op::Delete, 6, json!({"id": 1})),
        entry("2", Op::Create, 6, json!({"id": 2, "email": "A@x"})),
    ]);
    let p = run(&b, &v, OnDelete::Archive);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(p.upserts.len(), 1);
    // The upsert by email lands on R1: R1 stays, only key 1's link goes.
    let out = ids(&[(1, "R1")]);
    assert!(p.deletes_to_run(&out).is_empty());
    let rows = written(&p, &out);
    assert_eq!(rows[&short("1")].record_id, None);
    assert!(rows[&short("1")].tombstone);
    assert_eq!(rows[&short("2")].record_id.as_deref(), Some("R1"));
}

#[test]
fn a_record_another_live_key_links_to_is_not_deleted() {
    let v = view(vec![
        ("1", link("R1", "a@x", 5, &[])),
        ("3", link("R1", "c@x", 5, &[])),
    ]);
    let b = batch(vec![entry("1", Op::Delete, 6, json!({"id": 1}))]);
    let p = run(&b, &v, OnDelete::Archive);
    assert!(p.deletes_to_run(&Outcome::default()).is_empty());
}

#[test]
fn a_second_key_with_a_linked_email_is_rejected_naming_both_keys() {
    let v = view(vec![("1", link("R1", "a@x", 5, &[]))]);
    let b = batch(vec![entry(
        "2",
        Op::Create,
        6,
        json!({"id": 2, "email": "a@x"}),
    )]);
    let p = run(&b, &v, OnDelete::Archive);
    assert!(p.upserts.is_empty());
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].category, "IDENTITY_CONFLICT");
    let message = &p.rejected[0].message;
    assert!(message.contains(&key_hash(b"2")), "{message}");
    assert!(message.contains(&key_hash(b"1")), "{message}");
    assert!(!message.contains("a@x"), "no values in reasons: {message}");
    // The rejected key gets no ledger row.
    assert!(written(&p, &Outcome::default()).is_empty());
}

#[test]
fn two_new_keys_with_one_email_in_a_batch_keep_the_first() {
    let b = batch(vec![
        entry("1", Op::Create, 6, json!({"id": 1, "email": "a@x"})),
        entry("2", Op::Create, 6, json!({"id": 2, "email": "a@x"})),
    ]);
    let p = run(&b, &View::default(), OnDelete::Archive);
    assert_eq!(p.upserts.iter().map(|u| u.index).collect::<Vec<_>>(), [0]);
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].index, 1);
}

#[test]
fn an_email_moved_between_rows_is_no_conflict() {
    let v = view(vec![
        ("1", link("R1", "a@x", 5, &[])),
        ("2", link("R2", "b@x", 5, &[])),
    ]);
    let b = batch(vec![
        entry("1", Op::Update, 6, json!({"id": 1, "email": "c@x"})),
        entry("2", Op::Update, 7, json!({"id": 2, "email": "a@x"})),
    ]);
    let p = run(&b, &v, OnDelete::Archive);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(p.upserts.len(), 2);
}

#[test]
fn only_changed_properties_are_sent_and_an_unchanged_row_sends_nothing() {
    let fields = [
        ("email", json!("a@x")),
        ("name", json!("Ada")),
        ("city", json!("Oslo")),
    ];
    let v = view(vec![
        ("1", link("R1", "a@x", 5, &fields)),
        ("2", link("R2", "b@x", 5, &[("email", json!("b@x"))])),
    ]);
    let b = batch(vec![
        entry(
            "1",
            Op::Update,
            6,
            json!({"id": 1, "email": "a@x", "name": "Ada", "city": "Bergen"}),
        ),
        entry("2", Op::Update, 6, json!({"id": 2, "email": "b@x"})),
    ]);
    let p = run(&b, &v, OnDelete::Archive);
    assert_eq!(p.upserts.len(), 1);
    assert_eq!(p.upserts[0].properties.keys().collect::<Vec<_>>(), ["city"]);
    assert_eq!(p.skipped, vec![(1, Skip::Unchanged)]);
    assert_eq!(p.linked_skips(), vec![(1, "R2".to_string())]);
    let rows = written(&p, &ids(&[(0, "R1")]));
    // The ledger now holds the new city's hash and the old hashes of the rest.
    assert_eq!(
        rows[&short("1")].fields["city"],
        value_digest(&json!("Bergen"))
    );
    assert_eq!(
        rows[&short("1")].fields["name"],
        value_digest(&json!("Ada"))
    );
    assert_eq!(rows[&short("2")].position.commit_lsn, Lsn(6));
}

#[test]
fn a_new_identity_sends_every_property() {
    let fields = [("email", json!("a@x")), ("name", json!("Ada"))];
    let v = view(vec![("1", link("R1", "a@x", 5, &fields))]);
    let b = batch(vec![entry(
        "1",
        Op::Update,
        6,
        json!({"id": 1, "email": "new@x", "name": "Ada"}),
    )]);
    let p = run(&b, &v, OnDelete::Archive);
    assert_eq!(p.upserts[0].properties.len(), 2);
    let rows = written(&p, &ids(&[(0, "R9")]));
    assert_eq!(rows[&short("1")].record_id.as_deref(), Some("R9"));
}

#[test]
fn a_rejected_entry_keeps_its_old_ledger_row() {
    let v = view(vec![("1", link("R1", "a@x", 5, &[]))]);
    let b = batch(vec![entry(
        "1",
        Op::Update,
        6,
        json!({"id": 1, "email": "a@x", "name": "x"}),
    )]);
    let p = run(&b, &v, OnDelete::Archive);
    let out = Outcome {
        rejected: vec![Rejected {
            index: 0,
            category: "INVALID".into(),
            message: String::new(),
        }],
        destination_ids: vec![],
    };
    assert!(p.links(&out).is_empty());
}

#[test]
fn positions_come_from_the_event_id() {
    let mut e = event(Op::Create, json!({}));
    e.id = "16/B374D848:7".into();
    assert_eq!(
        SourcePosition::of(&e),
        Some(SourcePosition {
            commit_lsn: "16/B374D848".parse().unwrap(),
            ordinal: 7
        })
    );
    e.id = "not-an-id".into();
    assert_eq!(SourcePosition::of(&e), None);
}
