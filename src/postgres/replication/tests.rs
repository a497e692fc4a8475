//! Unit tests of the replication client without a server: command building, framing, error
//! fields, cancel safety against a fake walsender, and the SSLRequest fallback rule. The tests
//! against a live server are in `tests/postgres.rs`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{Frame, parse_copy_data, parse_frame, server_error};
use super::*;
use crate::error::{Classify, ErrorClass};
use crate::postgres::connect::SslMode;
use crate::postgres::sql::{publication_names, quote_ident, quote_literal};
use crate::postgres::tls::test_support::wrong_ca;
use crate::postgres::transport::{Transport, open_transport};

#[test]
fn validates_slot_names() {
    for ok in ["a", "driftless_main", "s_123", &"x".repeat(63)] {
        validate_slot_name(ok).unwrap();
    }
    for bad in [
        "",
        "Upper",
        "with-dash",
        "sp ace",
        "q\"uote",
        "é",
        &"x".repeat(64),
    ] {
        let err = validate_slot_name(bad).unwrap_err();
        assert!(matches!(err, PgError::Config(_)), "{bad:?}");
    }
}

#[test]
fn quotes_commands() {
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_literal("it's"), "'it''s'");
    let pubs = publication_names(&["p1", "we\"ird,'name"]);
    assert_eq!(pubs, "\"p1\",\"we\"\"ird,'name\"");
    let sql = start_replication_command(
        "slot_1",
        Lsn(0x16_B374_D848),
        &[
            ("proto_version", "1"),
            ("publication_names", &pubs),
            ("messages", "true"),
        ],
    )
    .unwrap();
    assert_eq!(
        sql,
        "START_REPLICATION SLOT \"slot_1\" LOGICAL 16/B374D848 (\"proto_version\" '1', \
         \"publication_names\" '\"p1\",\"we\"\"ird,''name\"', \"messages\" 'true')"
    );
    assert_eq!(
        start_replication_command("s", Lsn::ZERO, &[]).unwrap(),
        "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
    );
    assert!(start_replication_command("S; DROP", Lsn::ZERO, &[]).is_err());
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn xlog(wal_start: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![b'w'];
    body.extend_from_slice(&wal_start.to_be_bytes());
    body.extend_from_slice(&(wal_start + 100).to_be_bytes());
    body.extend_from_slice(&7i64.to_be_bytes());
    body.extend_from_slice(payload);
    frame(b'd', &body)
}

#[test]
fn frames_arrive_byte_by_byte() {
    let mut wire = xlog(1, b"Bbegin");
    let mut keepalive = vec![b'k'];
    keepalive.extend_from_slice(&9u64.to_be_bytes());
    keepalive.extend_from_slice(&(-3i64).to_be_bytes());
    keepalive.push(1);
    wire.extend(frame(b'd', &keepalive));
    wire.extend(frame(b'W', &[0, 0, 0]));
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in wire {
        buf.put_u8(byte);
        if let Some(f) = parse_frame(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got.len(), 3);
    let mut got = got.into_iter();
    let mut next_copy_data = || {
        let Some(Frame::Message(Message::CopyData(d))) = got.next() else {
            panic!("expected a CopyData frame")
        };
        parse_copy_data(d.into_bytes()).unwrap()
    };
    assert_eq!(
        next_copy_data(),
        ReplicationMessage::XLogData {
            wal_start: Lsn(1),
            wal_end: Lsn(101),
            server_clock: 7,
            data: Bytes::from_static(b"Bbegin"),
        }
    );
    assert_eq!(
        next_copy_data(),
        ReplicationMessage::Keepalive {
            wal_end: Lsn(9),
            server_clock: -3,
            reply_requested: true
        }
    );
    assert!(matches!(got.next(), Some(Frame::CopyBothResponse)));
}

#[test]
fn rejects_bad_frames() {
    let mut huge = BytesMut::from(&[b'd', 0x40, 0, 0, 5][..]);
    assert!(matches!(parse_frame(&mut huge), Err(PgError::Protocol(_))));
    let mut short = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
    assert!(matches!(parse_frame(&mut short), Err(PgError::Protocol(_))));
    let mut unknown = BytesMut::from(&frame(b'~', b"x")[..]);
    assert!(matches!(
        parse_frame(&mut unknown),
        Err(PgError::Protocol(_))
    ));
    assert!(parse_copy_data(Bytes::from_static(b"w123")).is_err());
    assert!(parse_copy_data(Bytes::from_static(b"k1")).is_err());
    assert!(parse_copy_data(Bytes::from_static(b"zzz")).is_err());
    assert!(parse_copy_data(Bytes::new()).is_err());
    // 1 GiB exactly is allowed (header only, so not complete yet).
    let mut max = BytesMut::from(&[b'd', 0x40, 0, 0, 0][..]);
    assert!(parse_frame(&mut max).unwrap().is_none());
}

#[test]
fn server_errors_keep_detail_out_of_display() {
    let mut body = Vec::new();
    for (t, v) in [
        (b'S', "ERROR"),
        (b'C', "23505"),
        (b'M', "dup"),
        (b'D', "Key (x)=(42)"),
    ] {
        body.push(t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut buf = BytesMut::from(&frame(b'E', &body)[..]);
    let Some(Frame::Message(Message::ErrorResponse(e))) = parse_frame(&mut buf).unwrap() else {
        panic!()
    };
    let err = server_error(e.fields());
    assert_eq!(err.to_string(), "postgres server error 23505");
    let PgError::Server { detail, .. } = err else {
        panic!()
    };
    assert_eq!(detail.as_deref(), Some("Key (x)=(42)"));
}

#[tokio::test]
async fn next_is_cancel_safe_with_frames_split_anywhere() {
    use tokio::net::TcpListener;
    const N: u64 = 200;
    let payload = |i: u64| vec![(i % 251) as u8; (i as usize * 37) % 3000 + 1];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A fake walsender that dribbles frames out in odd-sized chunks with pauses.
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        sock.set_nodelay(true).unwrap();
        let mut wire = Vec::new();
        for i in 0..N {
            wire.extend(xlog(i, &payload(i)));
            if i % 10 == 0 {
                let mut keepalive = vec![b'k'];
                keepalive.extend_from_slice(&i.to_be_bytes());
                keepalive.extend_from_slice(&0i64.to_be_bytes());
                keepalive.push(0);
                wire.extend(frame(b'd', &keepalive));
            }
        }
        wire.extend(frame(b'c', &[]));
        let (mut pos, mut k) = (0, 0);
        while pos < wire.len() {
            let n = [1, 3, 7, 64, 500, 5, 4096][k % 7].min(wire.len() - pos);
            sock.write_all(&wire[pos..pos + n]).await.unwrap();
            pos += n;
            k += 1;
            if k % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        // Keep the socket open until the client has read everything.
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = ReplicationStream {
        conn: Conn::new(Transport::Plain(tcp)),
        ended: false,
    };
    let (mut xlogs, mut keepalives, mut cancelled, mut mid_frame) = (Vec::new(), 0, 0, 0);
    loop {
        let next = tokio::select! {
            biased;
            m = stream.next() => m.unwrap(),
            _ = tokio::task::yield_now() => {
                cancelled += 1;
                mid_frame += u32::from(!stream.conn.rbuf.is_empty());
                continue;
            }
        };
        match next {
            None => break,
            Some(ReplicationMessage::XLogData {
                wal_start, data, ..
            }) => {
                assert_eq!(data, payload(wal_start.0), "frame {wal_start}");
                xlogs.push(wal_start.0);
            }
            Some(ReplicationMessage::Keepalive { .. }) => keepalives += 1,
        }
    }
    assert_eq!(xlogs, (0..N).collect::<Vec<_>>());
    assert_eq!(keepalives, N / 10);
    assert!(
        mid_frame > 10,
        "{mid_frame} of {cancelled} cancellations were mid-frame"
    );
    // After CopyDone the stream stays ended.
    assert!(stream.next().await.unwrap().is_none());
    drop(stream);
    server.await.unwrap();
}

/// A fake server that answers one SSL request with `N` and reports what it received.
async fn refuse_tls(
    mode: SslMode,
    root: Option<std::path::PathBuf>,
) -> (Result<bool, PgError>, Vec<u8>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        sock.read_exact(&mut request).await.unwrap();
        sock.write_all(b"N").await.unwrap();
        request.to_vec()
    });
    let params = ConnectParams {
        port,
        sslmode: mode,
        sslrootcert: root,
        ..ConnectParams::from_url("postgres://u:pw@127.0.0.1/db").unwrap()
    };
    let result = open_transport(&params)
        .await
        .map(|t| matches!(t, Transport::Tls(_)));
    (result, server.await.unwrap())
}

#[tokio::test]
async fn refused_tls_falls_back_only_under_prefer() {
    let (result, request) = refuse_tls(SslMode::Prefer, None).await;
    assert!(!result.unwrap(), "prefer continues in plaintext");
    assert_eq!(
        request,
        [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
        "an SSLRequest"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = wrong_ca(dir.path());
    for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
        let (result, _) = refuse_tls(mode, Some(root.clone())).await;
        let err = result.unwrap_err();
        assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
    }
}
