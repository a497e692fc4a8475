//! Two-way sync: changes made in the CRM flow back into Postgres. Destination-agnostic: every
//! CRM-specific part lives in its folder under [`crate::destinations`] as an [`engine::Crm`].
//!
//! Pure cores: [`resolve`] is the per-field rule (ledger, ownership, timestamps); [`plan`]
//! turns a Postgres row, a CRM record and the ledger into a per-record plan. Shared vocabulary:
//! [`engine`] (the `Crm` trait, the context both halves share, the receivers' state). Loops:
//! [`outbound`] (Postgres → CRM), [`inbound`] (CRM → Postgres), [`reconcile`] (re-reads the
//! CRM from durable cursors). I/O shells: [`inbox`] keeps the CRM ids waiting for the inbound
//! worker and the reconciliation cursors; [`store`] keeps the ledger and identity links and
//! writes inbound changes in transactions tagged with the sink's replication origin, so
//! capture marks them and the same sink does not send them back; [`dead_letter`] sets aside
//! the inbound records Postgres refuses.

pub(crate) mod dead_letter;
pub(crate) mod engine;
pub(crate) mod inbound;
pub(crate) mod inbox;
pub(crate) mod outbound;
pub(crate) mod plan;
pub(crate) mod reconcile;
pub(crate) mod resolve;
pub mod store;
