//! Two-way sync (issue 4): changes made in the CRM flow back into Postgres.
//!
//! Layout, pure cores first: [`resolve`] is the per-field rule (ledger, ownership, timestamps);
//! [`plan`] turns a Postgres row, a CRM record and the ledger into a per-record plan;
//! [`hubspot_signature`] signs and verifies HubSpot webhooks. I/O shells: [`store`] keeps the
//! durable state in Postgres (ledger and identity links, reconciliation cursor) and writes
//! inbound changes in transactions tagged with the sink's replication origin, so capture marks
//! them and the same sink does not send them back; [`engine`] runs the outbound wrapper, the
//! inbound worker and the reconciliation over any [`engine::Crm`]; [`hubspot`] is the HubSpot
//! adapter and its webhook receiver; [`zoho`] the Zoho adapter (COQL reads and
//! reconciliation, notification channel and receiver).

pub mod engine;
pub mod hubspot;
pub mod hubspot_signature;
pub mod plan;
pub mod resolve;
pub mod store;
pub mod zoho;
