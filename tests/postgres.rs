//! The postgres layer against a live server: the replication-protocol client (login, TLS modes,
//! slots, the CopyBoth stream, status updates, cancel safety), the ordinary SQL connection, and
//! the server's text formats against the value converter and the built-in OID table.
//!
//! Each replication test works in a database of its own ([`TestDb`]); a test fails (never
//! skips) when `DRIFTLESS_PG_URL` or `DRIFTLESS_PG_CA` is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, Bytes};
use driftless::capture::value::text_to_json;
use driftless::error::{Classify, ErrorClass};
use driftless::lsn::Lsn;
use driftless::pgtype::PgType;
use driftless::postgres::connect::{
    ChannelBindingMode, ConnectParams, Password, SslMode, connect_sql,
};
use driftless::postgres::error::PgError;
use driftless::postgres::replication::{
    ReplicationConnection, ReplicationMessage, ReplicationStream, SlotCreated,
};
use driftless::postgres::sql::publication_names;
use serde_json::{Value, json};

use crate::support::*;

/// Parameters for the test cluster's `postgres` database.
fn server_params() -> ConnectParams {
    ConnectParams::from_url(&pg_admin_url()).expect("DRIFTLESS_PG_URL parses")
}

/// Parameters for a test's own database.
fn db_params(db: &TestDb) -> ConnectParams {
    ConnectParams::from_url(&db.url).expect("the test database URL parses")
}

/// The CA certificate of the test server (its self-signed certificate).
fn server_ca() -> PathBuf {
    std::env::var("DRIFTLESS_PG_CA")
        .unwrap_or_else(|_| {
            panic!("DRIFTLESS_PG_CA is not set: run `eval \"$(scripts/pg-start --env)\"`")
        })
        .into()
}

/// Writes a fresh self-signed CA (not the server's) into `dir`.
fn wrong_ca(dir: &Path) -> PathBuf {
    let cert = dir.join("wrong-ca.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=wrong-ca", "-keyout"])
        .arg(dir.join("wrong-ca.key"))
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    cert
}

/// A database of its own with a table and a publication, and a slot name; dropped by
/// `cleanup`.
struct Fixture {
    db: TestDb,
    params: ConnectParams,
    sql: tokio_postgres::Client,
    table: String,
    publication: String,
    slot: String,
}

impl Fixture {
    async fn new(tag: &str) -> Fixture {
        let db = TestDb::new(tag).await;
        let params = db_params(&db);
        let sql = connect_sql(&params).await.unwrap();
        let table = "rc_t".to_string();
        let publication = "rc_p".to_string();
        sql.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text);
             CREATE PUBLICATION {publication} FOR TABLE {table};"
        ))
        .await
        .unwrap();
        Fixture {
            db,
            params,
            sql,
            table,
            publication,
            slot: unique("rc_slot"),
        }
    }

    fn options(&self) -> String {
        publication_names(&[&self.publication])
    }

    /// Creates the slot on `repl` (no exported snapshot) and streams from its consistent point
    /// with protocol 1 and the fixture's publication.
    async fn stream_from_new_slot(
        &self,
        mut repl: ReplicationConnection,
    ) -> (SlotCreated, ReplicationStream) {
        let created = repl
            .create_logical_slot(&self.slot, false, false)
            .await
            .unwrap();
        let pubs = self.options();
        let stream = repl
            .start_logical(
                &self.slot,
                created.consistent_point,
                &[("proto_version", "1"), ("publication_names", &pubs)],
            )
            .await
            .unwrap();
        (created, stream)
    }

    async fn cleanup(self) {
        drop_slot_when_released(&self.sql, &self.slot).await;
        drop(self.sql);
        self.db.drop_db().await;
    }
}

/// Drops a slot once its walsender has let go of it (dropping a stream is asynchronous).
async fn drop_slot_when_released(sql: &tokio_postgres::Client, slot: &str) {
    for _ in 0..80 {
        let r = sql
            .execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
                 where slot_name = $1",
                &[&slot],
            )
            .await;
        match r {
            Ok(_) => return,
            Err(e) if e.code().map(|c| c.code()) == Some("55006") => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("drop slot {slot}: {e:?}"),
        }
    }
    panic!("slot {slot} stayed active");
}

/// The next XLogData payload, skipping keepalives; fails after `limit`.
async fn next_data(stream: &mut ReplicationStream, limit: Duration) -> Bytes {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("timed out waiting for XLogData");
        match next.unwrap().expect("stream ended") {
            ReplicationMessage::XLogData { data, .. } => return data,
            ReplicationMessage::Keepalive { .. } => {}
        }
    }
}

/// The end LSN of a pgoutput Commit message.
fn commit_end_lsn(data: &[u8]) -> Lsn {
    assert_eq!(data[0], b'C');
    Lsn(u64::from_be_bytes(data[10..18].try_into().unwrap()))
}

/// The first column (as text) and the length of the second of a pgoutput Insert.
fn insert_values(data: &[u8]) -> (String, usize) {
    assert_eq!(data[0], b'I');
    assert_eq!(data[5], b'N');
    let mut rest = &data[6..];
    assert_eq!(rest.get_u16(), 2);
    let mut cols = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest.get_u8(), b't');
        let len = rest.get_u32() as usize;
        cols.push(rest[..len].to_vec());
        rest.advance(len);
    }
    (String::from_utf8(cols[0].clone()).unwrap(), cols[1].len())
}

async fn confirmed_flush(sql: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = sql
        .query_opt(
            "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0).map(|s| s.parse().unwrap())
}

async fn ssl_of_pid(sql: &tokio_postgres::Client, pid: i32) -> bool {
    sql.query_one("select ssl from pg_stat_ssl where pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn login_identify_system_and_session_settings() {
    let db = TestDb::new("login").await;
    let params = db_params(&db);
    for mode in [SslMode::Disable, SslMode::Prefer] {
        let p = ConnectParams {
            sslmode: mode,
            ..params.clone()
        };
        let mut repl = ReplicationConnection::connect(&p).await.unwrap();
        assert_eq!(repl.is_tls(), mode == SslMode::Prefer);
        assert!(repl.backend_pid().is_some());
        let info = repl.identify_system().await.unwrap();
        assert!(info.system_id.parse::<u64>().is_ok(), "{info:?}");
        assert!(info.timeline >= 1);
        assert!(info.xlogpos > Lsn::ZERO);
        assert_eq!(info.dbname.as_deref(), Some(p.dbname.as_str()));
        // SQL works on a replication=database connection, and SESSION_OPTIONS applied.
        let rows = repl
            .simple_query("select current_setting('TimeZone'), 1::int, null::text")
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![Some("UTC".to_string()), Some("1".into()), None]]
        );
        // A server error keeps the connection usable.
        let err = repl
            .simple_query("select * from no_such_table")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("42P01"), "{err:?}");
        let rows = repl.simple_query("SHOW DateStyle").await.unwrap();
        assert_eq!(rows, vec![vec![Some("ISO, MDY".to_string())]]);
    }
    db.drop_db().await;
}

#[tokio::test]
async fn wrong_password_and_refused_connection_are_classified() {
    let params = server_params();
    let bad = ConnectParams {
        password: Some(Password::new("not-the-password-xyz")),
        ..params.clone()
    };
    let err = ReplicationConnection::connect(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some("28P01"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.hint().unwrap().contains("pg_hba.conf"));
    assert!(!format!("{err} {err:?}").contains("not-the-password-xyz"));

    let none = ConnectParams {
        password: None,
        ..params.clone()
    };
    let err = ReplicationConnection::connect(&none).await.unwrap_err();
    assert!(matches!(err, PgError::Auth(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);

    let refused = ConnectParams { port: 1, ..params };
    let err = ReplicationConnection::connect(&refused).await.unwrap_err();
    assert!(matches!(err, PgError::Io(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn tls_modes() {
    let params = server_params();
    let sql = connect_sql(&params).await.unwrap();
    let with = |mode: SslMode, root: Option<std::path::PathBuf>| ConnectParams {
        sslmode: mode,
        sslrootcert: root,
        ..params.clone()
    };
    // require without a root: TLS, and the server sees this walsender as TLS.
    let repl = ReplicationConnection::connect(&with(SslMode::Require, None))
        .await
        .unwrap();
    assert!(repl.is_tls());
    assert!(ssl_of_pid(&sql, repl.backend_pid().unwrap()).await);
    // disable: plaintext.
    let repl = ReplicationConnection::connect(&with(SslMode::Disable, None))
        .await
        .unwrap();
    assert!(!repl.is_tls());
    assert!(!ssl_of_pid(&sql, repl.backend_pid().unwrap()).await);
    // verify-full and verify-ca against the server's CA; host 127.0.0.1 is in the SAN.
    assert_eq!(params.host, "127.0.0.1");
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let repl = ReplicationConnection::connect(&with(mode, Some(server_ca()))).await;
        assert!(repl.unwrap().is_tls(), "{mode}");
    }
    // A CA that did not sign the server certificate fails, under every verifying mode.
    let dir = tempfile::tempdir().unwrap();
    let wrong = wrong_ca(dir.path());
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
        let err = ReplicationConnection::connect(&with(mode, Some(wrong.clone())))
            .await
            .unwrap_err();
        assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
    }
}

#[tokio::test]
async fn snapshot_stream_and_feedback() {
    let fx = Fixture::new("repl_snapshot").await;
    let table = &fx.table;
    fx.sql
        .batch_execute(&format!(
            "INSERT INTO {table} SELECT g, 'before' FROM generate_series(1, 3) g"
        ))
        .await
        .unwrap();
    let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
    let created = repl
        .create_logical_slot(&fx.slot, true, false)
        .await
        .unwrap();
    assert_eq!(created.slot_name, fx.slot);
    assert!(created.consistent_point > Lsn::ZERO);
    let snapshot = created.snapshot_name.clone().expect("exported snapshot");

    // Changed after the slot: in the stream, not in the snapshot.
    fx.sql
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (4, 'after');
             SELECT pg_logical_emit_message(true, 'driftless', 'hello');"
        ))
        .await
        .unwrap();
    let snap = connect_sql(&fx.params).await.unwrap();
    snap.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}';"
    ))
    .await
    .unwrap();
    let n: i64 = snap
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 3,
        "the exported snapshot sees exactly the rows before the slot"
    );
    snap.batch_execute("COMMIT").await.unwrap();

    let pubs = fx.options();
    let mut stream = repl
        .start_logical(
            &fx.slot,
            created.consistent_point,
            &[
                ("proto_version", "1"),
                ("publication_names", &pubs),
                ("messages", "true"),
            ],
        )
        .await
        .unwrap();
    let limit = Duration::from_secs(20);
    let begin = next_data(&mut stream, limit).await;
    assert_eq!(begin[0], b'B');
    let relation = next_data(&mut stream, limit).await;
    assert_eq!(relation[0], b'R');
    let insert = next_data(&mut stream, limit).await;
    assert_eq!(insert_values(&insert), ("4".to_string(), 5));
    // The transactional logical message was emitted in the same (implicit) transaction.
    let message = next_data(&mut stream, limit).await;
    assert_eq!(message[0], b'M');
    assert!(
        message.ends_with(b"driftless\0\0\0\0\x05hello"),
        "{message:?}"
    );
    let end = commit_end_lsn(&next_data(&mut stream, limit).await);
    assert!(end > created.consistent_point);

    assert!(confirmed_flush(&fx.sql, &fx.slot).await.unwrap() < end);
    stream.send_status(end, end, end, false).await.unwrap();
    let mut confirmed = None;
    for _ in 0..100 {
        confirmed = confirmed_flush(&fx.sql, &fx.slot).await;
        if confirmed == Some(end) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        confirmed,
        Some(end),
        "confirmed_flush_lsn follows the status update"
    );
    drop(stream);
    fx.cleanup().await;
}

#[tokio::test]
async fn slot_errors_are_classified_and_drop_slot_works() {
    let fx = Fixture::new("repl_slot_errors").await;
    let pubs = fx.options();
    let options = [("proto_version", "1"), ("publication_names", pubs.as_str())];
    let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
    let created = repl
        .create_logical_slot(&fx.slot, false, false)
        .await
        .unwrap();
    // The same name again: duplicate object, fatal; the connection stays usable.
    let err = repl
        .create_logical_slot(&fx.slot, false, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42710"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    let mut stream = repl
        .start_logical(&fx.slot, created.consistent_point, &options)
        .await
        .unwrap();
    // A second consumer of an active slot: object in use, transient (retry later).
    let other = ReplicationConnection::connect(&fx.params).await.unwrap();
    let err = other
        .start_logical(&fx.slot, created.consistent_point, &options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("55006"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    // A slot that does not exist: undefined object, fatal.
    let missing = ReplicationConnection::connect(&fx.params).await.unwrap();
    let err = missing
        .start_logical("rc_test_no_such_slot", Lsn::ZERO, &options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42704"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    // Invalid names and NUL bytes never reach the server; the connection stays usable.
    let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
    let err = repl
        .create_logical_slot("Bad\"Name", false, false)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Config(_)), "{err:?}");
    let err = repl.simple_query("select 'a\0b'").await.unwrap_err();
    assert!(matches!(err, PgError::Config(_)), "{err:?}");
    repl.identify_system().await.unwrap();
    // The walsender is terminated mid-stream: its FATAL arrives as a transient error.
    let pid = stream.backend_pid().unwrap();
    fx.sql
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = loop {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
        match next.expect("stream did not end") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without the server's error"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Some("57P01"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(stream.next().await.unwrap().is_none());
    // DROP_REPLICATION_SLOT ... WAIT waits for the walsender to let go of it.
    drop(stream);
    repl.drop_slot(&fx.slot, true).await.unwrap();
    assert_eq!(confirmed_flush(&fx.sql, &fx.slot).await, None);
    fx.cleanup().await;
}

#[tokio::test]
async fn keepalive_requesting_a_reply_is_parsed() {
    let fx = Fixture::new("repl_keepalive").await;
    let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
    // wal_sender_timeout is user-settable: make the server ask for a reply within ~1 s.
    repl.simple_query("SET wal_sender_timeout = '2s'")
        .await
        .unwrap();
    let (created, mut stream) = fx.stream_from_new_slot(repl).await;
    assert_eq!(created.snapshot_name, None);
    let mut replies = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while replies < 3 {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no keepalive asking for a reply")
            .unwrap()
            .expect("stream ended");
        if let ReplicationMessage::Keepalive {
            wal_end,
            reply_requested: true,
            ..
        } = message
        {
            assert!(wal_end >= created.consistent_point);
            replies += 1;
            // Replying keeps the connection alive past wal_sender_timeout.
            let at = created.consistent_point;
            stream.send_status(at, at, at, false).await.unwrap();
        }
    }
    drop(stream);
    fx.cleanup().await;
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let fx = Fixture::new("repl_cancel").await;
    const ROWS: i32 = 300;
    const BATCH: i32 = 50;
    let repl = ReplicationConnection::connect(&fx.params).await.unwrap();
    let (_, mut stream) = fx.stream_from_new_slot(repl).await;
    let writer = {
        let params = fx.params.clone();
        let table = fx.table.clone();
        tokio::spawn(async move {
            let sql = connect_sql(&params).await.unwrap();
            for first in (1..=ROWS).step_by(BATCH as usize) {
                sql.batch_execute(&format!(
                    "INSERT INTO {table} SELECT g, repeat(md5(g::text), 625) \
                     FROM generate_series({first}, {}) g",
                    first + BATCH - 1
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut ids = Vec::new();
    let mut commits = 0;
    let mut cancelled = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while commits < ROWS / BATCH {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; got {} rows",
            ids.len()
        );
        // Alternate between cancelling after one scheduler round and after ~1 ms.
        let message = if cancelled.is_multiple_of(2) {
            tokio::select! {
                biased;
                m = stream.next() => m,
                _ = tokio::task::yield_now() => {
                    cancelled += 1;
                    continue;
                }
            }
        } else {
            match tokio::time::timeout(Duration::from_micros(500), stream.next()).await {
                Ok(m) => m,
                Err(_) => {
                    cancelled += 1;
                    continue;
                }
            }
        };
        if let ReplicationMessage::XLogData { data, .. } = message.unwrap().unwrap() {
            match data[0] {
                b'I' => {
                    let (id, len) = insert_values(&data);
                    assert_eq!(len, 20_000);
                    ids.push(id.parse::<i32>().unwrap());
                }
                b'C' => commits += 1,
                _ => {}
            }
        }
    }
    writer.await.unwrap();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
    assert!(
        cancelled > 10,
        "the test must actually cancel next() ({cancelled})"
    );
    eprintln!("next_is_cancel_safe: {cancelled} cancelled calls; no bytes lost");
    drop(stream);
    fx.cleanup().await;
}

/// Runs `select ssl from pg_stat_ssl` for the session itself.
async fn session_uses_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn sql_connection_applies_tls_modes_and_session_options() {
    let base = server_params();
    let with = |mode: SslMode, root: Option<PathBuf>, host: &str| ConnectParams {
        sslmode: mode,
        sslrootcert: root,
        host: host.to_string(),
        ..base.clone()
    };
    // disable: plaintext.
    let c = connect_sql(&with(SslMode::Disable, None, "127.0.0.1"))
        .await
        .unwrap();
    assert!(!session_uses_ssl(&c).await);
    // prefer and require (no verification): TLS.
    for mode in [SslMode::Prefer, SslMode::Require] {
        let c = connect_sql(&with(mode, None, "127.0.0.1")).await.unwrap();
        assert!(session_uses_ssl(&c).await, "{mode}");
    }
    // verify-full against the server's CA; the certificate has SAN 127.0.0.1 and localhost.
    for host in ["127.0.0.1", "localhost"] {
        let c = connect_sql(&with(SslMode::VerifyFull, Some(server_ca()), host))
            .await
            .unwrap();
        assert!(session_uses_ssl(&c).await, "{host}");
    }
    // Session settings are applied.
    let row = c
        .query_one(
            "select current_setting('DateStyle'), current_setting('TimeZone'), \
             current_setting('IntervalStyle'), current_setting('extra_float_digits'), \
             current_setting('bytea_output'), current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<String> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(
        got,
        ["ISO, MDY", "UTC", "iso_8601", "3", "hex", "driftless"]
    );
}

#[tokio::test]
async fn sql_connection_rejects_untrusted_certificates() {
    let base = server_params();
    let dir = tempfile::tempdir().unwrap();
    let wrong = wrong_ca(dir.path());
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
        let params = ConnectParams {
            sslmode: mode,
            sslrootcert: Some(wrong.clone()),
            ..base.clone()
        };
        let err = connect_sql(&params).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fatal, "{mode}: {err}");
        assert!(err.hint().unwrap().contains("sslrootcert"), "{mode}: {err}");
    }
}

#[tokio::test]
async fn sql_connection_wrong_password_is_fatal() {
    let base = server_params();
    let params = ConnectParams {
        password: Some(Password::new("definitely-not-the-password")),
        ..base
    };
    let err = connect_sql(&params).await.unwrap_err();
    assert_eq!(err.code(), Some("28P01"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.hint().unwrap().contains("pg_hba.conf"));
    assert!(!err.to_string().contains("definitely-not-the-password"));
}

#[tokio::test]
async fn sql_connection_refused_is_transient() {
    let base = server_params();
    // Port 1 on loopback: nothing listens there.
    let params = ConnectParams { port: 1, ..base };
    let err = connect_sql(&params).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

/// `channel_binding=require` against the real server (which offers SCRAM-SHA-256-PLUS over
/// TLS): both clients log in over TLS (the server checks the binding data, so a wrong
/// certificate hash would fail), and fail closed without TLS. SCRAM without TLS still works
/// without it.
#[tokio::test]
async fn channel_binding_against_the_server() {
    let base = server_params();
    let admin = connect_sql(&base).await.unwrap();
    let with = |mode: SslMode, root: Option<PathBuf>, binding: ChannelBindingMode| ConnectParams {
        sslmode: mode,
        sslrootcert: root,
        channel_binding: binding,
        ..base.clone()
    };
    let require = ChannelBindingMode::Require;
    for params in [
        with(SslMode::Require, None, require),
        with(SslMode::Prefer, None, require),
        with(SslMode::VerifyFull, Some(server_ca()), require),
    ] {
        let repl = ReplicationConnection::connect(&params).await;
        let repl = repl.unwrap_or_else(|e| panic!("{:?}: {e:?}", params.sslmode));
        assert!(repl.is_tls());
        assert!(ssl_of_pid(&admin, repl.backend_pid().unwrap()).await);
        let sql = connect_sql(&params).await.unwrap();
        assert!(session_uses_ssl(&sql).await, "{:?}", params.sslmode);
    }
    let plain = with(SslMode::Disable, None, require);
    let err = ReplicationConnection::connect(&plain).await.unwrap_err();
    assert!(
        matches!(&err, PgError::Auth(m) if m.contains("not TLS")),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    let err = connect_sql(&plain).await.unwrap_err();
    assert!(
        matches!(&err, PgError::Auth(m) if m.contains("not TLS")),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    // Plain SCRAM: without TLS, and over TLS with binding disabled.
    for params in [
        with(SslMode::Disable, None, ChannelBindingMode::Prefer),
        with(SslMode::Require, None, ChannelBindingMode::Disable),
    ] {
        let repl = ReplicationConnection::connect(&params).await.unwrap();
        assert_eq!(repl.is_tls(), params.sslmode == SslMode::Require);
        let sql = connect_sql(&params).await.unwrap();
        assert_eq!(
            session_uses_ssl(&sql).await,
            params.sslmode == SslMode::Require
        );
    }
}

/// `driftless check` warns (and still succeeds) when the source URL's TLS is unverified, and
/// says nothing about TLS under `verify-full`.
#[tokio::test(flavor = "multi_thread")]
async fn check_warns_when_tls_is_off_or_unverified() {
    let db = TestDb::new("tlswarn").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let setup = Setup::new(&db, &["public.t"], "", "");
    let (base, _) = db.url.split_once('?').unwrap();
    let ca = server_ca();
    for (query, warning) in [
        ("sslmode=prefer", Some("sslmode=prefer")),
        ("sslmode=disable", Some("not encrypted")),
        ("sslmode=require", Some("without sslrootcert")),
        (
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()) as &str,
            None,
        ),
    ] {
        let out = setup
            .command("check")
            .env("DRIFTLESS_SOURCE_URL", format!("{base}?{query}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{query}: {err}");
        match warning {
            Some(w) => {
                assert!(
                    err.contains("warning: [postgres] source URL"),
                    "{query}: {err}"
                );
                assert!(
                    err.contains(w) && err.contains("verify-full"),
                    "{query}: {err}"
                );
            }
            None => assert!(!err.contains("warning"), "{query}: {err}"),
        }
    }
    db.drop_db().await;
}

/// Runs `sql` (one row) on an ordinary connection, which uses the capture session settings;
/// every field as its text.
async fn server_text(sql: &str) -> Vec<String> {
    let client = connect(&pg_admin_url()).await;
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .expect("the query returns a row");
    (0..row.len())
        .map(|i| row.get(i).unwrap_or_default().to_owned())
        .collect()
}

/// Values rendered by the live PostgreSQL under the capture session settings: checks both our
/// idea of the text format and the OID table.
#[tokio::test]
async fn server_text_formats_and_builtin_oids() {
    let cases: Vec<(&str, Value)> = vec![
        ("true", json!(true)),
        ("false", json!(false)),
        ("(-32768)::int2", json!(-32768)),
        ("2147483647::int4", json!(2147483647)),
        ("(-9223372036854775808)::int8", json!(i64::MIN)),
        ("4294967295::oid", json!(4294967295u32)),
        ("1.1::float4", json!(1.1)),
        ("123456789.123::float4", json!(123456790.0)),
        ("3.4028235e38::float4", json!(3.4028235e38)),
        ("'-Infinity'::float4", json!("-Infinity")),
        ("0.1::float8", json!(0.1)),
        ("0.1::float8 + 0.2::float8", json!(0.30000000000000004)),
        ("5e-324::float8", json!(5e-324)),
        ("'NaN'::float8", json!("NaN")),
        (
            "123456789012345678901234567890.000000001::numeric",
            json!("123456789012345678901234567890.000000001"),
        ),
        ("'NaN'::numeric", json!("NaN")),
        ("'-Infinity'::numeric", json!("-Infinity")),
        ("'12.34'::money", json!("$12.34")),
        ("''::text", json!("")),
        ("'😀 𝄞 ü'::varchar", json!("😀 𝄞 ü")),
        ("'ab'::char(4)", json!("ab  ")),
        ("'x'::\"char\"", json!("x")),
        ("'pg'::name", json!("pg")),
        (
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (
            "'{\"b\": [1, 2.5, null], \"a\": \"😀\"}'::jsonb",
            json!({"a": "😀", "b": [1, 2.5, null]}),
        ),
        ("'{\"b\":1, \"a\":2}'::json", json!({"b": 1, "a": 2})),
        ("'null'::jsonb", Value::Null),
        ("'\\x0102ff'::bytea", json!("AQL/")),
        ("''::bytea", json!("")),
        (
            "'2024-03-01 12:34:56.123456+05:30'::timestamptz",
            json!("2024-03-01T07:04:56.123456Z"),
        ),
        (
            "'2024-03-01 12:34:56'::timestamptz",
            json!("2024-03-01T12:34:56.000000Z"),
        ),
        ("'infinity'::timestamptz", json!("infinity")),
        (
            "'0044-03-15 12:00 BC'::timestamptz",
            json!("0044-03-15 12:00:00+00 BC"),
        ),
        (
            "'10000-01-01'::timestamptz",
            json!("10000-01-01 00:00:00+00"),
        ),
        (
            "'2024-03-01 12:34:56.5'::timestamp",
            json!("2024-03-01T12:34:56.500000"),
        ),
        ("'-infinity'::timestamp", json!("-infinity")),
        ("'2024-03-01'::date", json!("2024-03-01")),
        ("'infinity'::date", json!("infinity")),
        ("'4713-01-01 BC'::date", json!("4713-01-01 BC")),
        ("'12:34:56.123'::time", json!("12:34:56.123000")),
        ("'24:00:00'::time", json!("24:00:00.000000")),
        ("'12:34:56.1+05:30'::timetz", json!("12:34:56.100000+05:30")),
        ("'01:02:03+00'::timetz", json!("01:02:03.000000+00:00")),
        (
            "'12:00-00:00:15'::timetz",
            json!("12:00:00.000000-00:00:15"),
        ),
        (
            "'1 year 2 mons 3 days 04:05:06.5'::interval",
            json!("P1Y2M3DT4H5M6.5S"),
        ),
        ("'-1.5 sec'::interval", json!("PT-1.5S")),
        ("'192.168.0.1/24'::inet", json!("192.168.0.1/24")),
        ("'(1,2)'::point", json!("(1,2)")),
        ("B'101'", json!("101")),
        ("'[1,5)'::int4range", json!("[1,5)")),
        (
            "ARRAY['a,b','c\"d',NULL,'NULL','',' x ','back\\slash','{}','😀']::text[]",
            json!([
                "a,b",
                "c\"d",
                null,
                "NULL",
                "",
                " x ",
                "back\\slash",
                "{}",
                "😀"
            ]),
        ),
        ("'{{1,2},{3,NULL}}'::int[]", json!([[1, 2], [3, null]])),
        ("'[0:1]={1,2}'::int8[]", json!([1, 2])),
        ("'[1:1][-2:-1]={{1,2}}'::int2[]", json!([[1, 2]])),
        ("'{}'::int4[]", json!([])),
        ("'{{{1}},{{2}}}'::oid[]", json!([[[1]], [[2]]])),
        ("'{t,f,NULL}'::bool[]", json!([true, false, null])),
        (
            "'{1.5,NaN,-Infinity}'::float8[]",
            json!([1.5, "NaN", "-Infinity"]),
        ),
        ("'{1.1,NULL}'::float4[]", json!([1.1, null])),
        ("'{1.50,NaN}'::numeric[]", json!(["1.50", "NaN"])),
        (
            "'{(1,1),(0,0);(2,2),(1,1)}'::box[]",
            json!(["(1,1),(0,0)", "(2,2),(1,1)"]),
        ),
        (
            "ARRAY['2024-01-01 00:00:00+00'::timestamptz, 'infinity', NULL]",
            json!(["2024-01-01T00:00:00.000000Z", "infinity", null]),
        ),
        (
            "ARRAY['2024-01-01 10:00'::timestamp]",
            json!(["2024-01-01T10:00:00.000000"]),
        ),
        (
            "ARRAY['{\"a\": 1}'::jsonb, '[1,2]', 'null', '\"s\"']",
            json!([{"a": 1}, [1, 2], null, "s"]),
        ),
        ("ARRAY['{\"a\":1}'::json]", json!([{"a": 1}])),
        ("ARRAY['\\x01'::bytea, '']", json!(["AQ==", ""])),
        (
            "ARRAY['2024-03-01'::date, 'infinity']",
            json!(["2024-03-01", "infinity"]),
        ),
        ("ARRAY['12:00'::time]", json!(["12:00:00.000000"])),
        (
            "ARRAY['12:00+01'::timetz]",
            json!(["12:00:00.000000+01:00"]),
        ),
        ("ARRAY['1 day'::interval]", json!(["P1D"])),
        (
            "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
            json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        ),
        (
            "ARRAY['a b'::varchar, 'NULL', 'null', '😀']",
            json!(["a b", "NULL", "null", "😀"]),
        ),
        ("ARRAY['x'::bpchar(2)]", json!(["x "])),
        ("'{a,b}'::name[]", json!(["a", "b"])),
        ("ARRAY['$1.00'::money]", json!(["$1.00"])),
        ("ARRAY['10.0.0.1'::inet, NULL]", json!(["10.0.0.1", null])),
        ("ARRAY['[1,2]'::int4range]", json!(["[1,3)"])),
    ];
    let sql = format!(
        "SELECT {}",
        cases
            .iter()
            .map(|(e, _)| format!("pg_typeof({e})::oid, {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let fields = server_text(&sql).await;
    assert_eq!(fields.len(), cases.len() * 2, "{fields:?}");
    for ((expr, expected), pair) in cases.iter().zip(fields.chunks(2)) {
        let oid: u32 = pair[0].parse().unwrap();
        let ty = PgType::from_builtin_oid(oid).unwrap_or_else(|| panic!("{expr}: oid {oid}"));
        assert_eq!(
            &text_to_json(&ty, &pair[1]),
            expected,
            "{expr} ({oid}) text {:?}",
            pair[1]
        );
    }

    // The OID table against pg_type: every pg_catalog base/range/multirange type that has
    // an array type is known, and its array maps to Array of it with its typdelim.
    let rows = server_text(
        "SELECT string_agg(concat_ws(':', oid, typname, typarray, typdelim), ' ') FROM pg_type \
         WHERE typnamespace = 'pg_catalog'::regnamespace AND typtype IN ('b', 'r', 'm') \
         AND typarray <> 0 AND typname NOT LIKE '\\_%'",
    )
    .await;
    let mut checked = 0;
    for row in rows[0].split(' ') {
        let parts: Vec<&str> = row.split(':').collect();
        let (oid, name, array): (u32, &str, u32) = (
            parts[0].parse().unwrap(),
            parts[1],
            parts[2].parse().unwrap(),
        );
        let delimiter = parts[3].as_bytes()[0];
        let ty = PgType::from_builtin_oid(oid).unwrap_or_else(|| panic!("{name} ({oid})"));
        let expected = PgType::Array {
            element: Box::new(ty),
            delimiter,
        };
        assert_eq!(
            PgType::from_builtin_oid(array),
            Some(expected),
            "{name} array {array}"
        );
        checked += 1;
    }
    assert!(checked > 60, "{checked}");
}
