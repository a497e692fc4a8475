//! driftless: change-data-capture from PostgreSQL to Kafka (and on to SaaS APIs).
pub mod error;
pub mod lsn;
