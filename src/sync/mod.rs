//! Two-way sync (issue 4): SaaS changes flowing back into Postgres.

pub mod hubspot_signature;
