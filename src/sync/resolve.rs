//! Field-level conflict resolution of two-way sync (pure).
//!
//! Owns the rule deciding, for one field of one record, which way a value flows. Inputs are
//! value hashes: the **ledger** (the value both sides last agreed on, written whenever driftless
//! synced the field in either direction), Postgres's current value and the CRM's current value,
//! plus the time of each side's last change. Invariants (unit-tested below):
//! - equal values never flow (no write, whichever side "changed");
//! - a side whose value equals the ledger did not change: the other side's value flows. This is
//!   what suppresses echoes: our own write to the CRM comes back (webhook, search) with the value
//!   we recorded in the ledger, so it is recognised and dropped;
//! - when both sides changed since the ledger (or there is no ledger yet), the field's owner
//!   wins: `postgres`, the CRM, or `latest` (later timestamp wins; a tie or an unknown time goes
//!   to Postgres, so every process decides the same way);
//! - the decision is symmetric: evaluating it from the outbound or the inbound side gives the
//!   same winner, so the two directions can never undo each other.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::two_way::Owner;

/// Hash of a field value in its CRM string form (what the ledger stores). Decimal numbers are
/// compared without trailing fractional zeros (`1200.50` = `1200.5`), as CRMs store numbers.
pub(crate) fn value_hash(value: &str) -> String {
    hex::encode(&Sha256::digest(comparable(value).as_bytes())[..16])
}

/// The form values are compared in: decimals lose trailing fractional zeros.
fn comparable(value: &str) -> &str {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let Some((int, frac)) = digits.split_once('.') else {
        return value;
    };
    let numeric = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !numeric {
        return value;
    }
    value.trim_end_matches('0').trim_end_matches('.')
}

/// One field's state on both sides.
#[derive(Clone, Debug)]
pub(crate) struct FieldState<'a> {
    /// Hash of the last agreed value (None: never synced).
    pub(crate) ledger: Option<&'a str>,
    /// Hash of Postgres's value.
    pub(crate) postgres: &'a str,
    /// Hash of the CRM's value.
    pub(crate) crm: &'a str,
    /// When Postgres last changed the row (commit time), if known.
    pub(crate) postgres_at: Option<DateTime<Utc>>,
    /// When the CRM last changed the property, if known.
    pub(crate) crm_at: Option<DateTime<Utc>>,
}

/// Which way a field's value flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Both sides hold the same value: record it in the ledger, write nothing.
    InSync,
    /// Postgres's value goes to the CRM.
    ToCrm,
    /// The CRM's value goes to Postgres.
    ToPostgres,
}

/// Whether both sides changed a field (a conflict the owner settled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Where the value flows.
    pub(crate) flow: Flow,
    /// True when both sides had changed the field since the ledger.
    pub(crate) conflict: bool,
}

/// Decides one field.
pub(crate) fn decide(owner: Owner, f: &FieldState<'_>) -> Decision {
    if f.postgres == f.crm {
        return Decision {
            flow: Flow::InSync,
            conflict: false,
        };
    }
    let postgres_changed = f.ledger != Some(f.postgres);
    let crm_changed = f.ledger != Some(f.crm);
    let flow = match (postgres_changed, crm_changed) {
        (true, false) => Flow::ToCrm,
        (false, true) => Flow::ToPostgres,
        _ => {
            let flow = match owner {
                Owner::Postgres => Flow::ToCrm,
                Owner::Crm => Flow::ToPostgres,
                Owner::Latest => match (f.postgres_at, f.crm_at) {
                    (Some(pg), Some(crm)) if crm > pg => Flow::ToPostgres,
                    (None, Some(_)) => Flow::ToPostgres,
                    _ => Flow::ToCrm,
                },
            };
            return Decision {
                flow,
                conflict: true,
            };
        }
    };
    Decision {
        flow,
        conflict: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(s, 0)
    }

    fn state<'a>(ledger: Option<&'a str>, pg: &'a str, crm: &'a str) -> FieldState<'a> {
        FieldState {
            ledger,
            postgres: pg,
            crm,
            postgres_at: at(100),
            crm_at: at(200),
        }
    }

    #[test]
    fn one_sided_changes_flow_whatever_the_owner() {
        for owner in [Owner::Postgres, Owner::Crm, Owner::Latest] {
            assert_eq!(decide(owner, &state(Some("a"), "b", "a")).flow, Flow::ToCrm);
            assert_eq!(
                decide(owner, &state(Some("a"), "a", "b")).flow,
                Flow::ToPostgres
            );
            assert_eq!(
                decide(owner, &state(Some("a"), "b", "b")).flow,
                Flow::InSync
            );
            assert!(!decide(owner, &state(Some("a"), "b", "a")).conflict);
        }
    }

    #[test]
    fn an_echo_of_our_own_write_is_in_sync_or_flows_nowhere_new() {
        // We wrote "b" to the CRM and recorded it; the CRM echoes "b" back.
        let d = decide(Owner::Latest, &state(Some("b"), "b", "b"));
        assert_eq!(d.flow, Flow::InSync);
        // Postgres moved on to "c" before the echo arrived: the echo must not drag it back.
        let d = decide(Owner::Crm, &state(Some("b"), "c", "b"));
        assert_eq!(d.flow, Flow::ToCrm);
    }

    #[test]
    fn decimals_compare_without_trailing_zeros() {
        assert_eq!(value_hash("1200.50"), value_hash("1200.5"));
        assert_eq!(value_hash("-3.000"), value_hash("-3"));
        assert_ne!(value_hash("1200.5"), value_hash("1200.05"));
        assert_ne!(
            value_hash("100"),
            value_hash("1"),
            "integer zeros are significant"
        );
        assert_ne!(value_hash("v1.0"), value_hash("v1"), "only numbers");
        assert_ne!(value_hash("1.2.0"), value_hash("1.2"));
    }

    #[test]
    fn conflicts_go_to_the_owner() {
        let both = state(Some("a"), "p", "c");
        assert_eq!(decide(Owner::Postgres, &both).flow, Flow::ToCrm);
        assert_eq!(decide(Owner::Crm, &both).flow, Flow::ToPostgres);
        assert!(decide(Owner::Crm, &both).conflict);
        // latest: the CRM changed at 200, Postgres at 100.
        assert_eq!(decide(Owner::Latest, &both).flow, Flow::ToPostgres);
        let pg_later = FieldState {
            postgres_at: at(300),
            ..both.clone()
        };
        assert_eq!(decide(Owner::Latest, &pg_later).flow, Flow::ToCrm);
        let tie = FieldState {
            postgres_at: at(200),
            ..both.clone()
        };
        assert_eq!(
            decide(Owner::Latest, &tie).flow,
            Flow::ToCrm,
            "ties go to Postgres"
        );
        // Never synced: both "changed".
        assert!(decide(Owner::Postgres, &state(None, "p", "c")).conflict);
    }

    proptest! {
        /// Whatever the inputs, applying the decision leaves both sides equal, and the winner
        /// of a conflict is the same whichever side evaluates it (the function has no side).
        #[test]
        fn applying_a_decision_converges(
            ledger in proptest::option::of(0u8..3), pg in 0u8..3, crm in 0u8..3,
            pg_at in proptest::option::of(0i64..3), crm_at in proptest::option::of(0i64..3),
            owner in prop_oneof![Just(Owner::Postgres), Just(Owner::Crm), Just(Owner::Latest)],
        ) {
            let (l, p, c) = (ledger.map(|v| v.to_string()), pg.to_string(), crm.to_string());
            let f = FieldState {
                ledger: l.as_deref(), postgres: &p, crm: &c,
                postgres_at: pg_at.and_then(at), crm_at: crm_at.and_then(at),
            };
            let d = decide(owner, &f);
            let (p2, c2) = match d.flow {
                Flow::InSync => (p.clone(), c.clone()),
                Flow::ToCrm => (p.clone(), p.clone()),
                Flow::ToPostgres => (c.clone(), c.clone()),
            };
            prop_assert_eq!(&p2, &c2);
            // Once the ledger records the agreed value, nothing flows any more.
            let again = FieldState { ledger: Some(&p2), postgres: &p2, crm: &c2, ..f };
            prop_assert_eq!(decide(owner, &again).flow, Flow::InSync);
        }
    }
}
