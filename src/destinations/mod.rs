//! Destinations: one folder per SaaS API, each with the same file set.
//!
//! | folder       | owns                                                                   |
//! |--------------|------------------------------------------------------------------------|
//! | `hubspot/`   | HubSpot CRM v3: the sink, its client, the two-way adapter and receiver |
//! | `zoho/`      | Zoho CRM v8: the sink, its client, the two-way adapter and receiver    |
//! | `webhook/`   | signed Standard Webhooks POSTs and the SSRF guard                      |
//! | `oauth.rs`   | OAuth refresh-token credentials shared by the CRMs                     |
//!
//! Invariants: a destination imports the engines ([`crate::sink`], [`crate::sync`]) and never
//! the other way round; its transport stays inside its folder. A new destination is one folder
//! here plus one variant where destinations are built ([`crate::app::destination`]).

pub mod hubspot;
pub mod oauth;
pub mod webhook;
pub mod zoho;
