//! Integration tests: the real `driftless` binary against a real PostgreSQL (15, and 14, 16, 17,
//! 18 for the capture and replication tests) and a real Kafka-protocol broker (tansu) over TCP.
//! One test per behaviour, named for it.

// The tests read and write Kafka as an outside client would, so they use rdkafka directly.
#![allow(clippy::disallowed_types)]

mod support;

mod bad_input;
mod capture;
mod capture_backfill;
mod capture_failover;
mod capture_filters;
mod capture_restart;
mod contract;
mod e2e;
mod hubspot_strict;
mod layering;
mod ledger;
mod pg_versions;
mod postgres;
mod privileges;
mod relations;
mod sink;
mod sink_start;
mod status;
mod two_way_hubspot;
mod two_way_recovery;
mod two_way_refusals;
mod two_way_startup;
mod two_way_zoho;
mod types;
