//! driftless: change-data-capture from PostgreSQL to Kafka (and on to SaaS APIs).
//!
//! ```text
//!  Postgres WAL (pgoutput) ── postgres::replication ──► pgoutput::decode (pure)
//!      ──► capture (relations, normalize, progress) ──► event::ChangeEvent
//!      ──► kafka (idempotent producer, acks=all) ── acks ──► capture::progress
//!      ──► checkpoint (durable) ──► standby status (flush LSN) ──► Postgres
//! ```
//!
//! Guarantees: at-least-once delivery into Kafka with deterministic, byte-identical events;
//! Postgres's slot advances only past events Kafka acknowledged; the slot is never re-created
//! silently. See README.md for the operator's view.

pub mod app;
pub mod capture;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod destinations;
pub mod error;
pub mod event;
pub mod kafka;
pub mod lsn;
pub mod pgoutput;
pub mod pgtype;
pub mod postgres;
pub mod sink;
pub mod sync;
