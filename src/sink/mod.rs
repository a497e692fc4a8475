//! Sinks: Kafka change topics → SaaS APIs (HubSpot, Zoho CRM, webhooks).
//!
//! Being built (issue 3). Present so far: the pure batching/coalescing rules ([`batch`]) and the field mapping
//! with its schema check ([`mapping`]). The
//! runner (consumer group with manual offset store), destinations, dead letters and replay
//! build on them.

pub mod batch;
pub mod mapping;
pub mod webhook_signature;
