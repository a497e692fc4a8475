//! Benchmark helper (used by `scripts/bench-capture`): the capture pipeline without Kafka.
//!
//! Streams an existing pgoutput slot through the same [`Assembler`] as `driftless capture`
//! (transactions, relations, row changes → `ChangeEvent`s) and serializes every event (value +
//! Kafka key, driftless envelope) as the capture session does, but hands nothing to Kafka.
//! Column types come from the built-in table (no catalog lookups), key columns from the
//! catalog. Flush is confirmed to Postgres every `--status-ms`. Stops like
//! `pg_recvlogical --endpos`: at the first commit, keepalive or WAL record at or past `--end-lsn`.
//!
//! Usage: `decode_only --slot SLOT --publication PUB --end-lsn X/Y [--url-env VAR] [--status-ms 100]`
//! (the Postgres URL is read from the environment variable, default `DRIFTLESS_SOURCE_URL`).
//! Prints one line: `rows=.. events=.. secs=.. payload_bytes=.. event_bytes=.. last_commit_end=..`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless::capture::assemble::{Assembler, Output, RelationFacts};
use driftless::capture::value::PgType;
use driftless::event::ChangeEvent;
use driftless::lsn::Lsn;
use driftless::pgoutput::{DecodeContext, Message, decode};
use driftless::postgres::catalog;
use driftless::postgres::connect::{ConnectParams, connect_sql};
use driftless::postgres::replication::{ReplicationConnection, ReplicationMessage};

struct Args {
    slot: String,
    publication: String,
    end_lsn: Lsn,
    url_env: String,
    status_ms: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = std::env::args().skip(1);
    let (mut slot, mut publication, mut end_lsn) = (None, None, None);
    let mut url_env = "DRIFTLESS_SOURCE_URL".to_string();
    let mut status_ms = 100;
    while let Some(k) = a.next() {
        let mut v = || a.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--slot" => slot = Some(v()?),
            "--publication" => publication = Some(v()?),
            "--end-lsn" => {
                let s = v()?;
                end_lsn = Some(
                    s.parse::<Lsn>()
                        .map_err(|e| anyhow::anyhow!("--end-lsn: {e:?}"))?,
                )
            }
            "--url-env" => url_env = v()?,
            "--status-ms" => status_ms = v()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        slot: slot.context("--slot is required")?,
        publication: publication.context("--publication is required")?,
        end_lsn: end_lsn.context("--end-lsn is required")?,
        url_env,
        status_ms,
    })
}

/// Builds and serializes one event the way `Session::send` does (driftless envelope); returns
/// the bytes produced (payload + key) so the work cannot be optimized away.
fn serialize(ev: &ChangeEvent) -> usize {
    let payload = ev.to_json();
    let key = ev.kafka_key();
    payload.len() + key.map_or(0, |k| k.len())
}

/// A Relation's facts without catalog type lookups: built-in types, anything else as text.
async fn describe(
    sql: &tokio_postgres::Client,
    types: &mut HashMap<u32, PgType>,
    r: &driftless::pgoutput::Relation,
    topic_prefix: &str,
) -> anyhow::Result<RelationFacts> {
    let types = r
        .columns
        .iter()
        .map(|c| {
            types
                .entry(c.type_oid)
                .or_insert_with(|| PgType::from_builtin_oid(c.type_oid).unwrap_or(PgType::Other))
                .clone()
        })
        .collect();
    let ident = (r.replica_identity as char).to_string();
    Ok(RelationFacts {
        topic: format!("{topic_prefix}.{}.{}", r.namespace, r.name),
        types,
        key_names: catalog::key_columns(sql, r.oid, &ident).await?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let a = args()?;
    let url = std::env::var(&a.url_env).with_context(|| format!("{} is not set", a.url_env))?;
    let params = ConnectParams::from_url(&url)?;
    let sql = connect_sql(&params).await?;
    let database: String = sql
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0);
    let repl = ReplicationConnection::connect(&params).await?;
    let publication = format!("\"{}\"", a.publication);
    let mut stream = repl
        .start_logical(
            &a.slot,
            Lsn::ZERO,
            &[
                ("proto_version", "1"),
                ("publication_names", publication.as_str()),
                ("messages", "true"),
            ],
        )
        .await?;
    let ctx = DecodeContext {
        proto_version: 1,
        in_stream: false,
    };
    let topic_prefix = "bench";
    let mut assembler = Assembler::new(&database, format!("{topic_prefix}.messages"), Lsn::ZERO);
    let mut types: HashMap<u32, PgType> = HashMap::new();
    let mut outputs = Vec::new();
    let (mut rows, mut events, mut payload_bytes, mut event_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut flushed = Lsn::ZERO; // end LSN of the last complete transaction
    let mut received = Lsn::ZERO;
    let status_every = Duration::from_millis(a.status_ms);
    let mut last_status = Instant::now();
    let mut n = 0u64;
    'stream: loop {
        n += 1;
        if n.is_multiple_of(256) && last_status.elapsed() >= status_every {
            stream
                .send_status(received.max(flushed), flushed, flushed, false)
                .await?;
            last_status = Instant::now();
        }
        let Some(m) = stream.next().await? else {
            bail!("server ended the replication stream before {}", a.end_lsn);
        };
        match m {
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                received = received.max(wal_end);
                let idle = !assembler.in_transaction();
                if idle && wal_end >= a.end_lsn {
                    break;
                }
                if reply_requested || idle {
                    stream
                        .send_status(received.max(flushed), flushed, flushed, false)
                        .await?;
                    last_status = Instant::now();
                }
            }
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                received = received.max(wal_end);
                if !assembler.in_transaction() && wal_start >= a.end_lsn {
                    break;
                }
                payload_bytes += data.len() as u64;
                let msg = decode(&data, &ctx)?;
                if matches!(
                    msg,
                    Message::Insert(_) | Message::Update(_) | Message::Delete(_)
                ) {
                    rows += 1;
                }
                assembler.apply(msg, wal_start, &mut outputs)?;
                for out in outputs.drain(..) {
                    match out {
                        Output::Begin { .. } | Output::Control { .. } => {}
                        Output::Event { topic, event, .. } => {
                            event_bytes += (serialize(&event) + topic.len()) as u64;
                            events += 1;
                        }
                        Output::Commit { end_lsn, .. } => {
                            flushed = end_lsn;
                            if end_lsn >= a.end_lsn {
                                break 'stream;
                            }
                        }
                        Output::Describe(r) => {
                            let facts = describe(&sql, &mut types, &r, topic_prefix).await?;
                            assembler.relation(r, facts);
                        }
                    }
                }
            }
        }
    }
    stream
        .send_status(received.max(flushed), flushed, flushed, false)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rows={rows} events={events} secs={secs:.3} payload_bytes={payload_bytes} \
         event_bytes={event_bytes} last_commit_end={flushed}"
    );
    Ok(())
}
