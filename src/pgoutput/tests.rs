//! Unit tests: messages captured from a real PostgreSQL 15 server (see
//! `tests/fixtures/pgoutput/README.md`), hand-built protocol v3/v4 messages, and malformed input.

use bytes::Bytes;

use super::*;

const V1: DecodeContext = DecodeContext {
    proto_version: 1,
    in_stream: false,
};

/// The fixtures captured from PostgreSQL 15 (see their README).
pub(crate) const V1_CHANGES: &[u8] = include_bytes!("../../tests/fixtures/pgoutput/v1_changes.bin");
const V1_BINARY: &[u8] = include_bytes!("../../tests/fixtures/pgoutput/v1_binary.bin");
pub(crate) const V2_STREAM: &[u8] = include_bytes!("../../tests/fixtures/pgoutput/v2_stream.bin");

/// One record of a fixture file: `u64 lsn | u32 xid | u32 len | len bytes`, all big-endian.
pub(crate) struct Record {
    /// The `lsn` column of `pg_logical_slot_peek_binary_changes`.
    pub(crate) lsn: Lsn,
    /// The `xid` column (0 for a non-transactional message).
    pub(crate) xid: u32,
    /// The message.
    pub(crate) data: Bytes,
}

/// Splits a fixture file into its records (also read by capture's assembler tests).
pub(crate) fn records(file: &'static [u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(16);
        let lsn = u64::from_be_bytes(head[0..8].try_into().unwrap());
        let xid = u32::from_be_bytes(head[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
        let (data, tail) = tail.split_at(len);
        out.push(Record {
            lsn: Lsn(lsn),
            xid,
            data: Bytes::from_static(data),
        });
        rest = tail;
    }
    out
}

/// Decodes a fixture, tracking Stream Start / Stop as a consumer must, and checks that every
/// message re-encodes to exactly the captured bytes.
fn decode_all(recs: &[Record], proto_version: u32) -> Vec<Message> {
    let mut ctx = DecodeContext {
        proto_version,
        in_stream: false,
    };
    let mut out = Vec::new();
    for (i, rec) in recs.iter().enumerate() {
        let msg = decode(&rec.data, &ctx).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(
            encode(&msg, &ctx),
            rec.data,
            "record {i} does not re-encode identically"
        );
        match msg {
            Message::StreamStart(_) => ctx.in_stream = true,
            Message::StreamStop => ctx.in_stream = false,
            _ => {}
        }
        out.push(msg);
    }
    out
}

/// The records of a fixture `file` and their messages, decoded with [`decode_all`].
fn fixture(file: &'static [u8], proto_version: u32) -> (Vec<Record>, Vec<Message>) {
    let recs = records(file);
    let msgs = decode_all(&recs, proto_version);
    (recs, msgs)
}

fn tags(msgs: &[Message]) -> String {
    let tags: Vec<String> = msgs
        .iter()
        .map(|m| char::from(m.tag()).to_string())
        .collect();
    tags.join(" ")
}

/// The values of a tuple as text; NULL as `None`; unchanged TOAST as `Some("<toast>")`.
fn texts(t: &Tuple) -> Vec<Option<&str>> {
    t.0.iter()
        .map(|v| match v {
            TupleValue::Null => None,
            TupleValue::UnchangedToast => Some("<toast>"),
            TupleValue::Text(b) => Some(std::str::from_utf8(b).unwrap()),
            TupleValue::Binary(_) => panic!("unexpected binary value"),
        })
        .collect()
}

fn assert_within(value: &Bytes, input: &Bytes) {
    let range = input.as_ptr_range();
    let v = value.as_ptr_range();
    assert!(
        range.start <= v.start && v.end <= range.end,
        "value is not a zero-copy slice of the input"
    );
}

macro_rules! expect {
    ($msg:expr, $variant:path) => {
        match $msg {
            $variant(m) => m,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

/// Asserts that `msg` is an Insert into `relation_oid` of `values` (as [`texts`] gives them).
fn assert_insert(msg: &Message, relation_oid: u32, values: &[Option<&str>]) {
    let ins = expect!(msg, Message::Insert);
    assert_eq!(
        (ins.relation_oid, texts(&ins.new)),
        (relation_oid, values.to_vec())
    );
}

const INT4: u32 = 23;
const INT8: u32 = 20;
const TEXT: u32 = 25;
const NUMERIC: u32 = 1700;
const TEXT_ARRAY: u32 = 1009;
const TIMESTAMPTZ: u32 = 1184;

#[test]
fn v1_fixture_decodes_every_captured_message() {
    let (recs, msgs) = fixture(V1_CHANGES, 1);
    assert_eq!(
        tags(&msgs),
        "B R I I C B U C B U C B R I U D C B D C B M I C M B Y R I C B R R T C B O I C B I R I C"
    );

    // Every Begin is closed by a Commit at the same LSN and timestamp; the xid is the server's.
    let mut open: Option<(&Begin, u32)> = None;
    for (msg, rec) in msgs.iter().zip(&recs) {
        match msg {
            Message::Begin(b) => {
                assert!(open.is_none());
                assert_eq!(b.xid, rec.xid);
                assert!(b.final_lsn > Lsn::ZERO);
                open = Some((b, rec.xid));
            }
            Message::Commit(c) => {
                let (b, xid) = open.take().expect("Commit without Begin");
                assert_eq!(rec.xid, xid);
                assert_eq!(c.flags, 0);
                assert_eq!(c.commit_lsn, b.final_lsn);
                assert!(c.end_lsn > c.commit_lsn);
                assert_eq!(c.commit_ts, b.commit_ts);
            }
            _ => {}
        }
    }
    assert!(open.is_none());
}

#[test]
fn v1_fixture_relation_insert_and_toast() {
    let (recs, msgs) = fixture(V1_CHANGES, 1);

    let items = expect!(&msgs[1], Message::Relation);
    assert_eq!(
        (items.xid, items.namespace.as_str(), items.name.as_str()),
        (None, "public", "items")
    );
    assert_eq!(items.replica_identity, b'd');
    let cols: Vec<(&str, u32, i32, bool)> = items
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid, c.type_modifier, c.is_key()))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", INT4, -1, true),
            ("name", TEXT, -1, false),
            // numeric(10,2): ((10 << 16) | 2) + VARHDRSZ
            ("price", NUMERIC, (10 << 16 | 2) + 4, false),
            ("tags", TEXT_ARRAY, -1, false),
            ("note", TEXT, -1, false),
            ("big", TEXT, -1, false),
        ]
    );

    let first = expect!(&msgs[2], Message::Insert);
    assert_eq!((first.xid, first.relation_oid), (None, items.oid));
    let v = texts(&first.new);
    assert_eq!(
        v[..5],
        [Some("1"), Some("widget"), Some("9.99"), Some("{a,b}"), None]
    );
    let big = v[5].unwrap();
    assert_eq!(big.len(), 320 * 32);
    assert!(big.bytes().all(|b| b.is_ascii_hexdigit()));
    for value in &first.new.0 {
        if let TupleValue::Text(b) = value {
            assert_within(b, &recs[2].data);
        }
    }

    let second = expect!(&msgs[3], Message::Insert);
    assert_eq!(
        texts(&second.new),
        [
            Some("2"),
            Some("gadget"),
            None,
            None,
            Some("note \"quoted\""),
            Some("small")
        ]
    );

    // UPDATE items SET price = 10.50 WHERE id = 1: no old tuple, the TOASTed column is 'u'.
    let upd = expect!(&msgs[6], Message::Update);
    assert_eq!((upd.relation_oid, &upd.old), (items.oid, &None));
    assert_eq!(
        texts(&upd.new),
        [
            Some("1"),
            Some("widget"),
            Some("10.50"),
            Some("{a,b}"),
            None,
            Some("<toast>")
        ]
    );
    assert_eq!(upd.new.0[5], TupleValue::UnchangedToast);

    // UPDATE items SET id = 3 WHERE id = 2: the old key is sent ('K'), other columns NULL.
    let upd = expect!(&msgs[9], Message::Update);
    let old = upd.old.as_ref().expect("old key");
    assert!(old.is_key_only());
    assert_eq!(
        texts(old.tuple()),
        [Some("2"), None, None, None, None, None]
    );
    assert_eq!(texts(&upd.new)[..2], [Some("3"), Some("gadget")]);

    // DELETE FROM items WHERE id = 3 under REPLICA IDENTITY DEFAULT.
    let del = expect!(&msgs[18], Message::Delete);
    assert_eq!(del.relation_oid, items.oid);
    assert!(matches!(&del.old, OldTuple::Key(_)));
    assert_eq!(
        texts(del.old.tuple()),
        [Some("3"), None, None, None, None, None]
    );
}

#[test]
fn v1_fixture_replica_identity_full() {
    let (_, msgs) = fixture(V1_CHANGES, 1);
    let audit = expect!(&msgs[12], Message::Relation);
    assert_eq!(audit.name, "audit");
    assert_eq!(audit.replica_identity, b'f');
    assert!(audit.columns.iter().all(Column::is_key));
    let types: Vec<u32> = audit.columns.iter().map(|c| c.type_oid).collect();
    assert_eq!(types, [INT8, TEXT, TIMESTAMPTZ]);

    assert_insert(
        &msgs[13],
        audit.oid,
        &[Some("1"), Some("alice"), Some("2024-01-02 03:04:05+00")],
    );

    let upd = expect!(&msgs[14], Message::Update);
    let old = upd.old.as_ref().expect("full old row");
    assert!(matches!(old, OldTuple::Full(_)));
    assert_eq!(texts(old.tuple())[1], Some("alice"));
    assert_eq!(texts(&upd.new)[1], Some("bob"));

    let del = expect!(&msgs[15], Message::Delete);
    assert!(!del.old.is_key_only());
    assert_eq!(
        texts(del.old.tuple()),
        [Some("1"), Some("bob"), Some("2024-01-02 03:04:05+00")]
    );
}

#[test]
fn v1_fixture_logical_messages() {
    let (recs, msgs) = fixture(V1_CHANGES, 1);
    let begin = expect!(&msgs[20], Message::Begin);
    let m = expect!(&msgs[21], Message::Message);
    assert!(m.transactional);
    assert_eq!((m.xid, m.prefix.as_str()), (None, "driftless"));
    assert_eq!(&m.content[..], b"transactional payload");
    assert!(m.lsn > Lsn::ZERO && m.lsn < begin.final_lsn);
    assert_within(&m.content, &recs[21].data);

    let m = expect!(&msgs[24], Message::Message);
    assert!(!m.transactional);
    assert_eq!(recs[24].xid, 0);
    assert_eq!(m.prefix, "driftless-nt");
    assert_eq!(&m.content[..], [0x00, 0xff, 0x01]);
    assert_eq!(m.lsn, recs[24].lsn);
}

#[test]
fn v1_fixture_type_truncate_origin() {
    let (_, msgs) = fixture(V1_CHANGES, 1);
    let items = expect!(&msgs[1], Message::Relation);
    let audit = expect!(&msgs[12], Message::Relation);

    // CREATE TYPE mood AS ENUM (...): a Type message precedes the first Relation using it.
    let ty = expect!(&msgs[26], Message::Type);
    assert_eq!(
        (ty.xid, ty.namespace.as_str(), ty.name.as_str()),
        (None, "public", "mood")
    );
    let moods = expect!(&msgs[27], Message::Relation);
    assert_eq!(moods.name, "moods");
    assert_eq!(moods.columns[1].name, "feeling");
    assert_eq!(moods.columns[1].type_oid, ty.oid);
    let ins = expect!(&msgs[28], Message::Insert);
    assert_eq!(texts(&ins.new), [Some("1"), Some("happy")]);

    // TRUNCATE items, audit RESTART IDENTITY CASCADE
    let tr = expect!(&msgs[33], Message::Truncate);
    assert_eq!(tr.xid, None);
    assert_eq!(tr.options, TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY);
    let mut oids = tr.relation_oids.clone();
    oids.sort_unstable();
    let mut want = vec![items.oid, audit.oid];
    want.sort_unstable();
    assert_eq!(oids, want);

    // A transaction from replication origin upstream_a, with pg_replication_origin_xact_setup(
    // '1/2345678', '2024-05-06 07:08:09+00'): the origin timestamp becomes the commit time.
    let begin = expect!(&msgs[35], Message::Begin);
    assert_eq!(begin.commit_ts, 768_294_489_000_000);
    let origin = expect!(&msgs[36], Message::Origin);
    assert_eq!(origin.name, "upstream_a");
    assert_eq!(origin.commit_lsn, "1/2345678".parse().unwrap());
    assert_insert(&msgs[37], moods.oid, &[Some("2"), Some("sad")]);
}

#[test]
fn v1_binary_fixture_has_binary_values() {
    let (recs, msgs) = fixture(V1_BINARY, 1);
    assert_eq!(tags(&msgs), "B Y R I R I C");
    let moods = expect!(&msgs[2], Message::Relation);
    let ins = expect!(&msgs[3], Message::Insert);
    assert_eq!(ins.relation_oid, moods.oid);
    assert_eq!(
        ins.new.0,
        [
            TupleValue::Binary(Bytes::from_static(&[0, 0, 0, 3])),
            TupleValue::Binary(Bytes::from_static(b"ok")),
        ]
    );
    let ins = expect!(&msgs[5], Message::Insert);
    assert_eq!(
        ins.new.0[0],
        TupleValue::Binary(Bytes::copy_from_slice(&10i32.to_be_bytes()))
    );
    assert_eq!(ins.new.0[1], TupleValue::Binary(Bytes::from_static(b"bin")));
    assert!(
        matches!(ins.new.0[2], TupleValue::Binary(_)),
        "numeric in binary form"
    );
    assert_eq!(ins.new.0[4..], [TupleValue::Null, TupleValue::Null]);
    for v in &ins.new.0 {
        if let TupleValue::Binary(b) = v {
            assert_within(b, &recs[5].data);
        }
    }
}

#[test]
fn v2_stream_fixture() {
    let (_, msgs) = fixture(V2_STREAM, 2);

    // Walk the stream as a consumer would: every data message inside a stream carries the
    // streamed xid; outside a stream only stream-control messages appear.
    let mut current: Option<u32> = None;
    let mut segments: Vec<(u32, bool)> = Vec::new();
    let mut inserts = std::collections::HashMap::<u32, usize>::new();
    let mut ends = Vec::new();
    // (top-level xid of the stream, xid carried by the message)
    let mut carried = std::collections::BTreeSet::new();
    for msg in &msgs {
        let xid = match msg {
            Message::StreamStart(s) => {
                assert_eq!(current.replace(s.xid), None);
                segments.push((s.xid, s.first_segment));
                continue;
            }
            Message::StreamStop => {
                assert!(current.take().is_some());
                continue;
            }
            Message::StreamCommit(c) => {
                assert_eq!(current, None);
                assert_eq!(c.flags, 0);
                assert!(c.end_lsn > c.commit_lsn);
                ends.push(('c', c.xid, c.xid));
                continue;
            }
            Message::StreamAbort(a) => {
                assert_eq!(current, None);
                assert_eq!((a.abort_lsn, a.abort_ts), (None, None));
                ends.push(('A', a.xid, a.subxid));
                continue;
            }
            Message::Insert(i) => {
                *inserts.entry(current.unwrap()).or_default() += 1;
                i.xid
            }
            Message::Relation(Relation { xid, .. })
            | Message::Update(Update { xid, .. })
            | Message::Delete(Delete { xid, .. })
            | Message::Message(LogicalMessage { xid, .. }) => *xid,
            other => panic!("unexpected message in the stream fixture: {other:?}"),
        };
        let top = current.expect("data message outside a stream");
        carried.insert((top, xid.expect("streamed data messages carry an xid")));
    }
    assert_eq!(current, None);

    // tx11 (committed), tx12 (rolled back), tx13 (subtransaction rolled back, then committed).
    let [(_, x11, _), (_, x12, x12s), (_, x13, x13s), (_, x13c, _)] = ends[..] else {
        panic!("unexpected stream ends {ends:?}");
    };
    assert_eq!(ends.iter().map(|e| e.0).collect::<String>(), "cAAc");
    assert_eq!(x12s, x12, "a top-level abort names the xid itself");
    assert_ne!(x13s, x13, "a subtransaction abort names the subxid");
    assert_eq!(x13c, x13);
    assert_eq!(
        segments,
        [(x11, true), (x11, false), (x12, true), (x13, true)]
    );
    assert_eq!(inserts[&x11], 700);
    // Changes carry the xid of the (sub)transaction that made them, not the stream's.
    let want: std::collections::BTreeSet<_> =
        [(x11, x11), (x12, x12), (x13, x13), (x13, x13s)].into();
    assert_eq!(carried, want);

    // The logical message and the first row of tx11 are streamed with their xid.
    let m = expect!(&msgs[1], Message::Message);
    assert_eq!((m.xid, m.transactional), (Some(x11), true));
    assert_eq!(&m.content[..], b"in stream");
    let bulk = expect!(&msgs[2], Message::Relation);
    assert_eq!((bulk.xid, bulk.name.as_str()), (Some(x11), "bulk"));
    assert_insert(&msgs[3], bulk.oid, &[Some("1"), Some("row 1")]);
}

#[test]
fn stream_messages_need_the_stream_context() {
    let recs = records(V2_STREAM);
    // recs[3] is a streamed Insert: without in_stream its xid is read as the relation OID and
    // the tuple kind lands on a relation OID byte.
    let outside = DecodeContext {
        proto_version: 2,
        in_stream: false,
    };
    assert!(decode(&recs[3].data, &outside).is_err());
    let inside = DecodeContext {
        proto_version: 2,
        in_stream: true,
    };
    assert!(matches!(
        decode(&recs[3].data, &inside),
        Ok(Message::Insert(_))
    ));
    // Protocol 1 has no streaming: in_stream is ignored.
    let v1_stream = DecodeContext {
        proto_version: 1,
        in_stream: true,
    };
    let rec = &records(V1_CHANGES)[2];
    assert!(matches!(
        decode(&rec.data, &v1_stream),
        Ok(Message::Insert(_))
    ));
}

/// Big-endian builder for hand-made messages (independent of `encode`).
fn be(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

#[test]
fn hand_built_two_phase_messages() {
    let v3 = DecodeContext {
        proto_version: 3,
        in_stream: false,
    };
    let gid = b"gid-1\0";
    let prepare_lsn = 0x0000_0001_0000_0010u64.to_be_bytes();
    let end_lsn = 0x0000_0001_0000_0040u64.to_be_bytes();
    let ts = 1_000_000i64.to_be_bytes();
    let ts2 = 2_000_000i64.to_be_bytes();
    let xid = 777u32.to_be_bytes();

    let b = be(&[b"b", &prepare_lsn, &end_lsn, &ts, &xid, gid]);
    let want = BeginPrepare {
        prepare_lsn: Lsn(0x1_0000_0010),
        end_lsn: Lsn(0x1_0000_0040),
        prepare_ts: 1_000_000,
        xid: 777,
        gid: "gid-1".into(),
    };
    assert_eq!(decode(&b, &v3), Ok(Message::BeginPrepare(want)));

    let prep = Prepare {
        flags: 0,
        prepare_lsn: Lsn(0x1_0000_0010),
        end_lsn: Lsn(0x1_0000_0040),
        prepare_ts: 1_000_000,
        xid: 777,
        gid: "gid-1".into(),
    };
    let p = be(&[b"P\0", &prepare_lsn, &end_lsn, &ts, &xid, gid]);
    assert_eq!(decode(&p, &v3), Ok(Message::Prepare(prep.clone())));
    let sp = be(&[b"p\0", &prepare_lsn, &end_lsn, &ts, &xid, gid]);
    assert_eq!(decode(&sp, &v3), Ok(Message::StreamPrepare(prep)));

    let k = be(&[b"K\0", &prepare_lsn, &end_lsn, &ts2, &xid, gid]);
    let want = CommitPrepared {
        flags: 0,
        commit_lsn: Lsn(0x1_0000_0010),
        end_lsn: Lsn(0x1_0000_0040),
        commit_ts: 2_000_000,
        xid: 777,
        gid: "gid-1".into(),
    };
    assert_eq!(decode(&k, &v3), Ok(Message::CommitPrepared(want)));

    let r = be(&[b"r\0", &prepare_lsn, &end_lsn, &ts, &ts2, &xid, gid]);
    let want = RollbackPrepared {
        flags: 0,
        prepare_end_lsn: Lsn(0x1_0000_0010),
        rollback_end_lsn: Lsn(0x1_0000_0040),
        prepare_ts: 1_000_000,
        rollback_ts: 2_000_000,
        xid: 777,
        gid: "gid-1".into(),
    };
    assert_eq!(decode(&r, &v3), Ok(Message::RollbackPrepared(want)));

    for m in [b, p, sp, k, r] {
        assert_eq!(encode(&decode(&m, &v3).unwrap(), &v3), m);
    }
}

#[test]
fn stream_abort_abort_info_only_with_v4_parallel() {
    let xid = 5u32.to_be_bytes();
    let sub = 6u32.to_be_bytes();
    let lsn = 0xABu64.to_be_bytes();
    let ts = 42i64.to_be_bytes();
    let short = be(&[b"A", &xid, &sub]);
    let long = be(&[b"A", &xid, &sub, &lsn, &ts]);
    let plain = StreamAbort {
        xid: 5,
        subxid: 6,
        abort_lsn: None,
        abort_ts: None,
    };
    for v in 2..=4 {
        let ctx = DecodeContext {
            proto_version: v,
            in_stream: false,
        };
        assert_eq!(
            decode(&short, &ctx),
            Ok(Message::StreamAbort(plain.clone()))
        );
    }
    let v3 = DecodeContext {
        proto_version: 3,
        in_stream: false,
    };
    assert!(matches!(
        decode(&long, &v3),
        Err(DecodeError::TrailingBytes {
            tag: b'A',
            offset: 9,
            remaining: 16
        })
    ));
    let v4 = DecodeContext {
        proto_version: 4,
        in_stream: false,
    };
    let parallel = StreamAbort {
        abort_lsn: Some(Lsn(0xAB)),
        abort_ts: Some(42),
        ..plain
    };
    assert_eq!(
        decode(&long, &v4),
        Ok(Message::StreamAbort(parallel.clone()))
    );
    assert_eq!(encode(&Message::StreamAbort(parallel), &v4), long);
    assert!(matches!(
        decode(&long.slice(..20), &v4),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn unknown_tag_is_not_an_error() {
    let buf = Bytes::from_static(b"Zsome body");
    assert_eq!(
        decode(&buf, &V1),
        Ok(Message::Unknown {
            tag: b'Z',
            body: Bytes::from_static(b"some body")
        })
    );
    assert_eq!(
        decode(&Bytes::from_static(b"E"), &V1),
        Ok(Message::StreamStop)
    );
}

#[test]
fn malformed_input_gives_precise_errors() {
    use DecodeError::*;
    let oid = 1u32.to_be_bytes();
    // Begin cut in the middle of its timestamp.
    let begin = be(&[b"B", &[0; 8], &[0; 3]]);
    let cases: Vec<(Bytes, DecodeError)> = vec![
        (Bytes::new(), Empty),
        (
            begin.clone(),
            Truncated {
                what: "Begin commit_ts",
                offset: 9,
                needed: 8,
                available: 3,
            },
        ),
        // A text value of length -1 and of length i32::MAX must not allocate.
        (
            be(&[b"I", &oid, b"N\0\x01t", &(-1i32).to_be_bytes()]),
            InvalidLength {
                what: "text value length",
                offset: 9,
                len: -1,
            },
        ),
        (
            be(&[b"I", &oid, b"N\0\x01b", &i32::MAX.to_be_bytes(), b"xy"]),
            Truncated {
                what: "binary value",
                offset: 13,
                needed: i32::MAX as usize,
                available: 2,
            },
        ),
        // A huge column count with no data behind it.
        (
            be(&[b"I", &oid, b"N\xff\xff"]),
            Truncated {
                what: "tuple value kind",
                offset: 8,
                needed: 1,
                available: 0,
            },
        ),
        // A negative truncate count.
        (
            be(&[b"T", &(-5i32).to_be_bytes(), b"\0"]),
            InvalidLength {
                what: "Truncate relation count",
                offset: 1,
                len: -5,
            },
        ),
        // Bad tuple kinds.
        (
            be(&[b"I", &oid, b"X\0\0"]),
            UnexpectedByte {
                what: "Insert tuple kind",
                offset: 5,
                found: b'X',
                expected: "'N'",
            },
        ),
        (
            be(&[b"U", &oid, b"K\0\0K\0\0"]),
            UnexpectedByte {
                what: "Update new tuple kind",
                offset: 8,
                found: b'K',
                expected: "'N'",
            },
        ),
        (
            be(&[b"I", &oid, b"N\0\x01x"]),
            UnexpectedByte {
                what: "tuple value kind",
                offset: 8,
                found: b'x',
                expected: "'n', 'u', 't' or 'b'",
            },
        ),
        // Strings: missing NUL, invalid UTF-8.
        (
            be(&[b"O", &[0; 8], b"no-nul"]),
            UnterminatedString {
                what: "Origin name",
                offset: 9,
            },
        ),
        (
            be(&[b"O", &[0; 8], b"\xff\xfe\0"]),
            InvalidUtf8 {
                what: "Origin name",
                offset: 9,
            },
        ),
        // Trailing bytes after a complete message.
        (
            Bytes::from_static(b"E\0"),
            TrailingBytes {
                tag: b'E',
                offset: 1,
                remaining: 1,
            },
        ),
        // Flag bytes outside 0/1.
        (
            be(&[b"S", &1u32.to_be_bytes(), b"\x02"]),
            UnexpectedByte {
                what: "Stream Start first_segment",
                offset: 5,
                found: 2,
                expected: "0 or 1",
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(decode(&input, &V1), Err(want), "{input:?}");
    }

    let e = decode(&begin, &V1).unwrap_err().to_string();
    assert!(
        e.contains("Begin commit_ts") && e.contains("offset 9"),
        "{e}"
    );
}

#[test]
fn every_strict_prefix_of_a_fixture_message_is_an_error() {
    let recs = records(V1_CHANGES);
    for rec in recs.iter().filter(|r| r.data.len() < 1000) {
        for cut in 0..rec.data.len() {
            assert!(
                decode(&rec.data.slice(..cut), &V1).is_err(),
                "prefix {cut} of {:?}",
                rec.data
            );
        }
    }
}
