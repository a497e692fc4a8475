//! Two-way sync (issue 4): changes made in the CRM flow back into Postgres.
//!
//! Layout: [`resolve`] is the pure per-field rule (ledger, ownership, timestamps); [`store`]
//! keeps the durable state in Postgres (ledger and identity links, reconciliation cursor) and
//! writes inbound changes in transactions tagged with the sink's replication origin, so capture
//! marks them and the same sink does not send them back; [`hubspot_signature`] verifies
//! HubSpot's webhook signatures; [`hubspot`] is the HubSpot side (outbound conflict check,
//! webhook receiver, search reconciliation); [`zoho`] is the Zoho side (COQL reads and
//! reconciliation, notification channel and receiver).

pub mod engine;
pub mod hubspot;
pub mod hubspot_signature;
pub mod plan;
pub mod resolve;
pub mod store;
pub mod zoho;
