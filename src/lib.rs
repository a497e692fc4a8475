//! driftless: change-data-capture from PostgreSQL to Kafka, and from Kafka to SaaS APIs
//! (HubSpot, Zoho CRM, signed webhooks), with two-way sync back into Postgres.
//!
//! ```text
//!  capture   Postgres WAL ── postgres::replication ──► pgoutput (decode, pure)
//!              ──► capture::assemble (pure) ──► event::ChangeEvent
//!              ──► kafka (acks=all) ── acks ──► capture::progress ──► checkpoint ──► flush LSN
//!  sinks     Kafka topic ──► sink::runner ──► sink::batch ──► destinations::{hubspot,zoho,webhook}
//!              CRM sinks: sink::crm reads sink::ledger (Postgres) ──► plan (stale, links,
//!              identity, changed fields) ──► upserts, deletes ──► ledger rows written
//!              ──► offsets stored only after the destination accepted (or the dead letter is durable)
//!  two-way   CRM webhooks / notifications + sync::reconcile ──► sync::inbound ──► Postgres
//!              (origin-tagged, so capture marks them and the same sink never echoes them)
//!            sync::outbound wraps a CRM destination: writes filtered by sync::plan
//!  app       wires the three, supervises every task, maps errors to exit codes
//! ```
//!
//! Guarantees: at-least-once delivery into Kafka with deterministic, byte-identical events;
//! Postgres's slot advances only past events Kafka acknowledged; the slot is never re-created
//! silently; a sink's offsets never pass a change its destination did not accept. See
//! README.md for the operator's view.
//!
//! # Layout
//!
//! Layers point down (a test, `tests/layering.rs`, enforces it): `app` → `destinations` →
//! `sync` → `sink` → `capture` → {`kafka`, `postgres`, `pgoutput`} → {`event`, `checkpoint`}
//! → {`config`, `pgtype`, `error`, `lsn`} → `files`.
//!
//! | module | one sentence |
//! |---|---|
//! | [`app`] | the composition root: runs a subcommand, supervises its tasks, owns the exit codes |
//! | [`cli`] | the command line's clap types, nothing else |
//! | [`destinations`] | one folder per SaaS API: its sink, client, two-way adapter, receiver, signatures |
//! | [`sync`] | the destination-agnostic two-way engine: plan, resolve, store, inbound, outbound, reconcile |
//! | [`sink`] | the destination-agnostic sink engine: runner, batches, mapping, audit, HTTP policy, the sink ledger and the CRM write flow |
//! | [`capture`] | Postgres → Kafka: the session shell around the pure assembler and normalizer |
//! | [`kafka`] | every use of rdkafka, behind the `Publisher` / `Subscription` seams |
//! | [`postgres`] | every connection to Postgres: replication protocol, SQL, quoting, TLS |
//! | [`pgoutput`] | the pure pgoutput codec (decode and encode), fuzzed and tested on captured bytes |
//! | [`event`] | the change event every stage exchanges |
//! | [`checkpoint`] | capture's durable resume point beside the slot |
//! | [`config`] | parse, validate (every problem with its field path), then build; the ground floor |
//! | [`pgtype`] | Postgres type identities shared by the catalog and value conversion |
//! | [`error`] | the transient / poison / fatal classification and the one backoff |
//! | [`lsn`] | log sequence numbers |
//! | `files` | the files driftless creates (mode 0600) and the secret files it reads |

pub mod app;
pub mod capture;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod destinations;
pub mod error;
pub mod event;
pub(crate) mod files;
pub mod kafka;
pub mod lsn;
pub mod pgoutput;
pub mod pgtype;
pub mod postgres;
pub mod sink;
pub mod sync;
