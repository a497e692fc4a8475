//! Property tests: `decode(encode(m)) == m` for every variant, and `decode` never panics (and is
//! canonical: whatever it accepts re-encodes to the same bytes) on arbitrary or mutated input.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::*;

const KNOWN_TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrp";

fn ctx() -> impl Strategy<Value = DecodeContext> {
    (1u32..=4, any::<bool>()).prop_map(|(proto_version, in_stream)| DecodeContext {
        proto_version,
        in_stream,
    })
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Any string without NUL (the wire format terminates strings with NUL).
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

fn raw(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = TupleValue> {
    prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        raw(24).prop_map(TupleValue::Text),
        raw(24).prop_map(TupleValue::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    vec(value(), 0..8).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

/// The leading xid exists exactly when the context says we are in a stream (v2+).
fn xid(ctx: DecodeContext) -> BoxedStrategy<Option<u32>> {
    if ctx.has_stream_xid() {
        any::<u32>().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}

fn column() -> impl Strategy<Value = Column> {
    (any::<u8>(), text(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| Column {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    )
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (
        any::<u8>(),
        lsn(),
        lsn(),
        any::<i64>(),
        any::<u32>(),
        text(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_ts, xid, gid)| Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_ts,
                xid,
                gid,
            },
        )
}

/// Every variant, consistent with `ctx`.
fn message(ctx: DecodeContext) -> impl Strategy<Value = Message> {
    let abort_info = if ctx.proto_version >= 4 {
        proptest::option::of((lsn(), any::<i64>())).boxed()
    } else {
        Just(None).boxed()
    };
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_ts, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_ts,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_ts)| {
                Message::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                })
            }
        ),
        (lsn(), text()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            xid(ctx),
            any::<u32>(),
            text(),
            text(),
            any::<u8>(),
            vec(column(), 0..6)
        )
            .prop_map(|(xid, oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    xid,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (xid(ctx), any::<u32>(), text(), text()).prop_map(|(xid, oid, namespace, name)| {
            Message::Type(Type {
                xid,
                oid,
                namespace,
                name,
            })
        }),
        (xid(ctx), any::<u32>(), tuple()).prop_map(|(xid, relation_oid, new)| {
            Message::Insert(Insert {
                xid,
                relation_oid,
                new,
            })
        }),
        (
            xid(ctx),
            any::<u32>(),
            proptest::option::of(old_tuple()),
            tuple()
        )
            .prop_map(|(xid, relation_oid, old, new)| {
                Message::Update(Update {
                    xid,
                    relation_oid,
                    old,
                    new,
                })
            }),
        (xid(ctx), any::<u32>(), old_tuple()).prop_map(|(xid, relation_oid, old)| {
            Message::Delete(Delete {
                xid,
                relation_oid,
                old,
            })
        }),
        (xid(ctx), any::<u8>(), vec(any::<u32>(), 0..6)).prop_map(
            |(xid, options, relation_oids)| {
                Message::Truncate(Truncate {
                    xid,
                    options,
                    relation_oids,
                })
            }
        ),
        (xid(ctx), any::<bool>(), lsn(), text(), raw(32)).prop_map(
            |(xid, transactional, lsn, prefix, content)| {
                Message::Message(LogicalMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            }
        ),
        (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
            Message::StreamStart(StreamStart { xid, first_segment })
        }),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_ts)| {
                Message::StreamCommit(StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                })
            }
        ),
        (any::<u32>(), any::<u32>(), abort_info).prop_map(|(xid, subxid, info)| {
            Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn: info.map(|i| i.0),
                abort_ts: info.map(|i| i.1),
            })
        }),
        (lsn(), lsn(), any::<i64>(), any::<u32>(), text()).prop_map(
            |(prepare_lsn, end_lsn, prepare_ts, xid, gid)| {
                Message::BeginPrepare(BeginPrepare {
                    prepare_lsn,
                    end_lsn,
                    prepare_ts,
                    xid,
                    gid,
                })
            }
        ),
        prepare().prop_map(Message::Prepare),
        prepare().prop_map(Message::StreamPrepare),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<u32>(),
            text()
        )
            .prop_map(|(flags, commit_lsn, end_lsn, commit_ts, xid, gid)| {
                Message::CommitPrepared(CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_ts,
                    xid,
                    gid,
                })
            }),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            text()
        )
            .prop_map(
                |(flags, prepare_end_lsn, rollback_end_lsn, prepare_ts, rollback_ts, xid, gid)| {
                    Message::RollbackPrepared(RollbackPrepared {
                        flags,
                        prepare_end_lsn,
                        rollback_end_lsn,
                        prepare_ts,
                        rollback_ts,
                        xid,
                        gid,
                    })
                }
            ),
        (
            any::<u8>().prop_filter("unknown tag", |t| !KNOWN_TAGS.contains(t)),
            raw(32)
        )
            .prop_map(|(tag, body)| Message::Unknown { tag, body }),
    ]
}

fn ctx_and_message() -> impl Strategy<Value = (DecodeContext, Message)> {
    ctx().prop_flat_map(|c| (Just(c), message(c)))
}

fn error_offset(e: &DecodeError) -> usize {
    match e {
        DecodeError::Empty => 0,
        DecodeError::Truncated { offset, .. }
        | DecodeError::UnterminatedString { offset, .. }
        | DecodeError::InvalidUtf8 { offset, .. }
        | DecodeError::InvalidLength { offset, .. }
        | DecodeError::UnexpectedByte { offset, .. }
        | DecodeError::TrailingBytes { offset, .. } => *offset,
    }
}

/// Decodes arbitrary input: must not panic; an error points inside the input; an accepted
/// message re-encodes to exactly the input.
fn check_arbitrary(data: Vec<u8>, ctx: &DecodeContext) -> Result<(), TestCaseError> {
    let buf = Bytes::from(data);
    match decode(&buf, ctx) {
        Ok(msg) => prop_assert_eq!(Bytes::from(encode(&msg, ctx)), buf),
        Err(e) => {
            prop_assert!(
                error_offset(&e) <= buf.len(),
                "{} for {} bytes",
                e,
                buf.len()
            );
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decode_inverts_encode((ctx, msg) in ctx_and_message()) {
        let buf = Bytes::from(encode(&msg, &ctx));
        prop_assert_eq!(buf.first(), Some(&msg.tag()));
        prop_assert_eq!(decode(&buf, &ctx), Ok(msg));
    }

    #[test]
    fn strict_prefixes_are_rejected((ctx, msg) in ctx_and_message(), cut in any::<Index>()) {
        let buf = Bytes::from(encode(&msg, &ctx));
        let cut = cut.index(buf.len());
        let result = decode(&buf.slice(..cut), &ctx);
        match &msg {
            // An unknown body has no structure; Stream Abort without its v4 fields is valid.
            Message::Unknown { .. } => prop_assert_eq!(result.is_ok(), cut > 0),
            Message::StreamAbort(a) if a.abort_lsn.is_some() && cut == 9 => {
                prop_assert!(result.is_ok());
            }
            _ => prop_assert!(result.is_err(), "prefix {} of {:?} decoded: {:?}", cut, buf, result),
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(ctx in ctx(), data in vec(any::<u8>(), 0..256)) {
        check_arbitrary(data, &ctx)?;
    }

    #[test]
    fn never_panics_on_arbitrary_bytes_after_a_known_tag(
        ctx in ctx(),
        tag in select(KNOWN_TAGS),
        rest in vec(any::<u8>(), 0..128),
    ) {
        let mut data = vec![tag];
        data.extend(rest);
        check_arbitrary(data, &ctx)?;
    }

    #[test]
    fn never_panics_on_mutated_messages(
        (ctx, msg) in ctx_and_message(),
        mutations in vec((any::<Index>(), any::<u8>()), 1..4),
        decode_ctx in ctx(),
    ) {
        let mut data = encode(&msg, &ctx);
        for (at, byte) in mutations {
            let i = at.index(data.len());
            data[i] = byte;
        }
        check_arbitrary(data.clone(), &ctx)?;
        // The same bytes under another context (wrong version / stream state).
        check_arbitrary(data, &decode_ctx)?;
    }
}
