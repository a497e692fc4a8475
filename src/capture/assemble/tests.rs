//! The assembler fed with the messages captured from a real server
//! (`tests/fixtures/pgoutput/`, see its README for the transactions tx1–tx10).

use bytes::Bytes;

use super::*;
use crate::pgoutput::tests::{V1_CHANGES, V2_STREAM, records};
use crate::pgoutput::{DecodeContext, decode};

const V1: DecodeContext = DecodeContext {
    proto_version: 1,
    in_stream: false,
};

fn v1_changes() -> Vec<(Lsn, Message)> {
    records(V1_CHANGES)
        .into_iter()
        .map(|r| (r.lsn, decode(&r.data, &V1).unwrap()))
        .collect()
}

/// What the shell would resolve: built-in types (anything else as text), `id` as the key.
fn facts(r: &pgoutput::Relation) -> RelationFacts {
    RelationFacts {
        topic: format!("t.{}.{}", r.namespace, r.name),
        types: r
            .columns
            .iter()
            .map(|c| PgType::from_builtin_oid(c.type_oid).unwrap_or(PgType::Other))
            .collect(),
        key_names: vec!["id".into()],
    }
}

/// Runs messages through an assembler as the shell does (answering `Describe` at once).
fn assemble(
    a: &mut Assembler,
    msgs: impl IntoIterator<Item = (Lsn, Message)>,
) -> Result<Vec<Output>, CaptureError> {
    let mut all = Vec::new();
    for (lsn, msg) in msgs {
        let mut out = Vec::new();
        a.apply(msg, lsn, &mut out)?;
        for o in out {
            match o {
                Output::Describe(r) => {
                    let f = facts(&r);
                    a.relation(r, f);
                }
                o => all.push(o),
            }
        }
    }
    Ok(all)
}

fn assembler(resume: Lsn) -> Assembler {
    Assembler::new("db", "t.messages".into(), resume)
}

/// `B`, `C`, or `{op}:{table}` per output.
fn shape(outputs: &[Output]) -> String {
    outputs
        .iter()
        .map(|o| match o {
            Output::Begin { .. } => "B".to_string(),
            Output::Commit { .. } => "C".to_string(),
            Output::Event { event, .. } => format!("{}:{}", event.op.code(), event.source.table),
            Output::Describe(_) => "R".to_string(),
            Output::Control { watermark, .. } => (if *watermark { "W" } else { "Q" }).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn events(outputs: &[Output]) -> Vec<(&str, &ChangeEvent, Option<i64>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event {
                topic,
                event,
                timestamp_ms,
            } => Some((&**topic, event, *timestamp_ms)),
            _ => None,
        })
        .collect()
}

fn key(ev: &ChangeEvent) -> String {
    String::from_utf8(ev.kafka_key().expect("a key")).unwrap()
}

#[test]
fn the_captured_transactions_become_events_in_order() {
    let out = assemble(&mut assembler(Lsn::ZERO), v1_changes()).unwrap();
    assert_eq!(
        shape(&out),
        [
            "B c:items c:items C",         // tx1
            "B u:items C",                 // tx2
            "B d:items c:items C",         // tx3: key change = delete + insert
            "B c:audit u:audit d:audit C", // tx4
            "B d:items C",                 // tx5
            "B m: c:items C",              // tx6: transactional message + insert
            "B m: C",                      // non-transactional message
            "B c:moods C",                 // tx7
            "B t:items t:audit C",         // tx8
            "B c:moods C",                 // tx9
            "B c:moods c:items C",         // tx10
        ]
        .join(" ")
    );
    let evs = events(&out);
    let topics: Vec<&str> = evs.iter().map(|(t, ..)| *t).collect();
    assert_eq!(&topics[..3], ["t.public.items"; 3]);
    assert_eq!(topics[5], "t.public.audit");
    assert_eq!(topics[9], "t.messages");
    assert_eq!(topics[11], "t.messages");

    let keys: Vec<String> = evs
        .iter()
        .filter(|(_, e, _)| e.source.table.as_ref() == "items")
        .filter(|(_, e, _)| e.op != Op::Truncate)
        .map(|(_, e, _)| format!("{}{}", e.op.code(), key(e)))
        .collect();
    assert_eq!(
        keys,
        [
            r#"c{"id":1}"#,
            r#"c{"id":2}"#,
            r#"u{"id":1}"#,
            r#"d{"id":2}"#,
            r#"c{"id":3}"#,
            r#"d{"id":3}"#,
            r#"c{"id":4}"#,
            r#"c{"id":10}"#
        ]
    );
    // tx2 did not send the TOASTed column: it is listed, not invented.
    assert_eq!(evs[2].1.unchanged_toast, ["big"]);
    // tx8: TRUNCATE ... RESTART IDENTITY CASCADE.
    let t = evs[13].1.truncate.as_ref().unwrap();
    assert!(t.cascade && t.restart_identity);
    // tx9 ran under a replication origin.
    assert_eq!(evs[14].1.source.origin, None);
    assert_eq!(evs[15].1.source.origin.as_deref(), Some("upstream_a"));
}

#[test]
fn events_carry_their_transaction_and_commits_their_end_lsn() {
    let msgs = v1_changes();
    let commits: Vec<Lsn> = msgs
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Commit(c) => Some(c.end_lsn),
            _ => None,
        })
        .collect();
    let standalone = msgs
        .iter()
        .find_map(|(_, m)| match m {
            Message::Message(m) if !m.transactional => Some(m.lsn),
            _ => None,
        })
        .unwrap();
    let out = assemble(&mut assembler(Lsn::ZERO), msgs).unwrap();

    let ends: Vec<Lsn> = out
        .iter()
        .filter_map(|o| match o {
            Output::Commit { end_lsn, .. } => Some(*end_lsn),
            _ => None,
        })
        .collect();
    let mut expected = commits.clone();
    expected.insert(6, standalone);
    assert_eq!(ends, expected);

    // Within a unit, every event has the Begin's commit LSN and the next ordinal; the commit
    // time is the record timestamp (none for the standalone message).
    let mut unit: Option<(Lsn, u64)> = None;
    for o in &out {
        match o {
            Output::Begin { commit_lsn } => unit = Some((*commit_lsn, 0)),
            Output::Event {
                event,
                timestamp_ms,
                ..
            } => {
                let (lsn, n) = unit.as_mut().expect("event inside a unit");
                assert_eq!(event.source.commit_lsn, *lsn);
                assert_eq!(event.id, format!("{lsn}:{n}"));
                assert_eq!(event.source.db.as_ref(), "db");
                *n += 1;
                let alone = event.source.xid.is_none();
                assert_eq!(timestamp_ms.is_none(), alone);
                assert_eq!(event.source.commit_ts.is_none(), alone);
            }
            Output::Commit { commit_ms, .. } => {
                let (lsn, _) = unit.take().expect("commit closes a unit");
                assert_eq!(commit_ms.is_none(), lsn == standalone);
            }
            Output::Describe(_) | Output::Control { .. } => unreachable!(),
        }
    }
}

#[test]
fn transactions_committed_before_the_resume_point_produce_no_events() {
    let msgs = v1_changes();
    // Resume at tx6's commit: tx1–tx5 were acknowledged before.
    let tx6 = msgs
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Begin(b) => Some(b.final_lsn),
            _ => None,
        })
        .nth(5)
        .unwrap();
    let out = assemble(&mut assembler(tx6), msgs.clone()).unwrap();
    let s = shape(&out);
    assert!(
        s.starts_with("B C B C B C B C B C B m: c:items C B m: C"),
        "{s}"
    );
    let all = assemble(&mut assembler(Lsn::ZERO), msgs).unwrap();
    // What is not skipped is byte-identical to a full run.
    let json =
        |o: &[Output]| -> Vec<Vec<u8>> { events(o).iter().map(|(_, e, _)| e.to_json()).collect() };
    let (kept, full) = (json(&out), json(&all));
    assert_eq!(kept[..], full[full.len() - kept.len()..]);
}

#[test]
fn protocol_violations_are_errors() {
    let msgs = v1_changes();
    let find = |tag: fn(&Message) -> bool| msgs.iter().find(|(_, m)| tag(m)).unwrap().clone();
    let relation = find(|m| matches!(m, Message::Relation(_)));
    let begin = find(|m| matches!(m, Message::Begin(_)));
    let commit = find(|m| matches!(m, Message::Commit(_)));
    let insert = find(|m| matches!(m, Message::Insert(_)));
    let truncate = find(|m| matches!(m, Message::Truncate(_)));
    let protocol = |r: Result<Vec<Output>, CaptureError>| match r {
        Err(CaptureError::Protocol(m)) => m,
        other => panic!("expected a protocol error, got {other:?}"),
    };

    let e = protocol(assemble(
        &mut assembler(Lsn::ZERO),
        [relation.clone(), insert.clone()],
    ));
    assert_eq!(e, "row change outside a transaction");
    let e = protocol(assemble(&mut assembler(Lsn::ZERO), [truncate.clone()]));
    assert_eq!(e, "TRUNCATE outside a transaction");
    let e = protocol(assemble(&mut assembler(Lsn::ZERO), [commit]));
    assert_eq!(e, "COMMIT outside a transaction");
    let e = protocol(assemble(
        &mut assembler(Lsn::ZERO),
        [begin.clone(), begin.clone()],
    ));
    assert_eq!(e, "BEGIN inside a transaction");
    let e = protocol(assemble(&mut assembler(Lsn::ZERO), [begin.clone(), insert]));
    assert!(e.starts_with("change for unknown relation"), "{e}");

    let v2 = DecodeContext {
        proto_version: 2,
        in_stream: false,
    };
    let stream_start = records(V2_STREAM)
        .into_iter()
        .map(|r| decode(&r.data, &v2).unwrap())
        .find(|m| matches!(m, Message::StreamStart(_)))
        .unwrap();
    let e = protocol(assemble(
        &mut assembler(Lsn::ZERO),
        [(Lsn(1), stream_start)],
    ));
    assert!(e.contains("StreamStart"), "{e}");
}

#[test]
fn heartbeats_advance_the_position_but_send_nothing() {
    let heartbeat = |lsn| {
        Message::Message(pgoutput::LogicalMessage {
            xid: None,
            transactional: false,
            lsn,
            prefix: HEARTBEAT_PREFIX.into(),
            content: Bytes::new(),
        })
    };
    let mut a = assembler(Lsn::ZERO);
    let out = assemble(&mut a, [(Lsn(7), heartbeat(Lsn(7)))]).unwrap();
    assert!(matches!(
        out[..],
        [
            Output::Begin { commit_lsn: Lsn(7) },
            Output::Commit {
                end_lsn: Lsn(7),
                commit_ms: None
            }
        ]
    ));
    // Inside a transaction a heartbeat is nothing at all.
    let begin = v1_changes().into_iter().next().unwrap();
    assert!(matches!(begin.1, Message::Begin(_)));
    let out = assemble(&mut a, [begin, (Lsn(9), heartbeat(Lsn(9)))]).unwrap();
    assert_eq!(shape(&out), "B");
    assert!(a.in_transaction());
}

#[test]
fn backfill_watermarks_and_requests_go_to_the_shell_and_are_never_published() {
    use crate::capture::backfill::{REQUEST_PREFIX, WATERMARK_PREFIX};
    let message = |lsn, prefix: &str, transactional, content: &'static str| {
        Message::Message(pgoutput::LogicalMessage {
            xid: None,
            transactional,
            lsn,
            prefix: prefix.into(),
            content: Bytes::from_static(content.as_bytes()),
        })
    };
    let mut a = assembler(Lsn::ZERO);
    let out = assemble(
        &mut a,
        [(Lsn(7), message(Lsn(7), WATERMARK_PREFIX, false, "low:1"))],
    )
    .unwrap();
    assert_eq!(shape(&out), "W B C");
    assert!(matches!(
        &out[0],
        Output::Control { watermark: true, content, lsn: Lsn(7) } if content == "low:1"
    ));
    // A request inside a transaction: no event, the transaction goes on.
    let begin = v1_changes().into_iter().next().unwrap();
    let out = assemble(
        &mut a,
        [
            begin,
            (Lsn(9), message(Lsn(9), REQUEST_PREFIX, true, "public.t")),
        ],
    )
    .unwrap();
    assert_eq!(shape(&out), "B Q");
    assert!(a.in_transaction());
}
