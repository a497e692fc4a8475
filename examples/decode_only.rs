//! Benchmark helper (used by `scripts/bench-capture`): the capture pipeline without Kafka.
//!
//! Streams an existing pgoutput slot and, for every row change, builds the `ChangeEvent` and
//! serializes it (value + Kafka key) exactly as `driftless capture` does (mirrors
//! `Session::handle` / `row_change` / `send` in `src/capture/mod.rs`), but hands nothing to
//! Kafka. Flush is confirmed to Postgres every `--status-ms`. Stops like
//! `pg_recvlogical --endpos`: at the first commit, keepalive or WAL record at or past `--end-lsn`.
//!
//! Usage: `decode_only --slot SLOT --publication PUB --end-lsn X/Y [--url-env VAR] [--status-ms 100]`
//! (the Postgres URL is read from the environment variable, default `DRIFTLESS_SOURCE_URL`).
//! Prints one line: `rows=.. events=.. secs=.. payload_bytes=.. event_bytes=.. last_commit_end=..`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless::capture::normalize::{self, ColumnInfo, Images, RelationInfo, TxnContext};
use driftless::capture::value::PgType;
use driftless::event::{ChangeEvent, Op, pg_timestamp_to_rfc3339};
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

/// What `Session` keeps of the open transaction (without the Kafka bookkeeping).
struct OpenTxn {
    ctx: TxnContext,
}

/// Builds and serializes one event the way `Session::send` does (driftless envelope); returns
/// the bytes produced (payload + key) so the work cannot be optimized away.
fn serialize(ev: &ChangeEvent) -> usize {
    let payload = ev.to_json();
    let key = ev.kafka_key();
    payload.len() + key.map_or(0, |k| k.len())
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
    let mut relations: HashMap<u32, RelationInfo> = HashMap::new();
    let mut types: HashMap<u32, PgType> = HashMap::new();
    let mut txn: Option<OpenTxn> = None;
    let (mut rows, mut events, mut payload_bytes, mut event_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut flushed = Lsn::ZERO; // end LSN of the last complete transaction
    let mut received = Lsn::ZERO;
    let status_every = Duration::from_millis(a.status_ms);
    let mut last_status = Instant::now();
    let mut n = 0u64;
    let topic_prefix = "bench";
    loop {
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
                if txn.is_none() && wal_end >= a.end_lsn {
                    break;
                }
                if reply_requested || txn.is_none() {
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
                if txn.is_none() && wal_start >= a.end_lsn {
                    break;
                }
                payload_bytes += data.len() as u64;
                let lsn = wal_start;
                match decode(&data, &ctx)? {
                    Message::Begin(b) => {
                        if txn.is_some() {
                            bail!("BEGIN inside a transaction");
                        }
                        txn = Some(OpenTxn {
                            ctx: TxnContext {
                                db: database.as_str().into(),
                                commit_lsn: b.final_lsn,
                                xid: Some(b.xid),
                                commit_ts: Some(pg_timestamp_to_rfc3339(b.commit_ts).into()),
                                origin: None,
                                ordinal: 0,
                                snapshot: false,
                            },
                        });
                    }
                    Message::Commit(c) => {
                        txn.take().context("COMMIT outside a transaction")?;
                        flushed = c.end_lsn;
                        if c.end_lsn >= a.end_lsn {
                            break;
                        }
                    }
                    Message::Origin(o) => {
                        if let Some(t) = txn.as_mut() {
                            t.ctx.origin = Some(o.name);
                        }
                    }
                    Message::Relation(r) => {
                        let mut columns = Vec::with_capacity(r.columns.len());
                        for c in &r.columns {
                            let ty = types
                                .entry(c.type_oid)
                                .or_insert_with(|| {
                                    PgType::from_builtin_oid(c.type_oid).unwrap_or(PgType::Other)
                                })
                                .clone();
                            columns.push(ColumnInfo {
                                name: c.name.clone(),
                                type_oid: c.type_oid,
                                ty,
                            });
                        }
                        let ident = (r.replica_identity as char).to_string();
                        let key_names = catalog::key_columns(&sql, r.oid, &ident).await?;
                        let flags: Vec<bool> = r.columns.iter().map(|c| c.flags & 1 == 1).collect();
                        let topic = format!("{topic_prefix}.{}.{}", r.namespace, r.name);
                        let info = RelationInfo::new(
                            r.oid,
                            r.namespace,
                            r.name,
                            topic,
                            columns,
                            &key_names,
                            &flags,
                        );
                        relations.insert(info.oid, info);
                    }
                    Message::Type(_) | Message::Message(_) | Message::Truncate(_) => {}
                    msg @ (Message::Insert(_) | Message::Update(_) | Message::Delete(_)) => {
                        let open = txn.as_mut().context("row change outside a transaction")?;
                        let oid = match &msg {
                            Message::Insert(i) => i.relation_oid,
                            Message::Update(u) => u.relation_oid,
                            Message::Delete(d) => d.relation_oid,
                            _ => unreachable!(),
                        };
                        let rel = relations
                            .get(&oid)
                            .with_context(|| format!("change for unknown relation {oid}"))?;
                        let images: Vec<(Op, Images)> = match &msg {
                            Message::Insert(i) => {
                                vec![(Op::Create, normalize::insert_images(rel, &i.new))]
                            }
                            Message::Update(u) => {
                                normalize::update_images(rel, u.old.as_ref(), &u.new)
                            }
                            Message::Delete(d) => {
                                vec![(Op::Delete, normalize::delete_images(rel, &d.old))]
                            }
                            _ => unreachable!(),
                        };
                        let evs: Vec<ChangeEvent> = images
                            .into_iter()
                            .map(|(op, img)| open.ctx.event(rel, lsn, op, img))
                            .collect();
                        let topic = rel.topic.clone();
                        for ev in &evs {
                            event_bytes += (serialize(ev) + topic.len()) as u64;
                        }
                        rows += 1;
                        events += evs.len() as u64;
                    }
                    other => bail!(
                        "unexpected message for proto_version 1: tag {}",
                        other.tag()
                    ),
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
