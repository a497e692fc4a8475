//! The split of a batch into CRM writes: upserts, deletes and entries refused by the mapping.
//! Pure.
//!
//! Owns the rule both CRM destinations follow. Invariants: creates, updates and snapshot reads
//! are upserts built from the row image (`after`); a delete, when the sink archives deletes,
//! is identified from the `before` image and else from the key; an entry that cannot be
//! mapped (no row image, no id, a value the mapping refuses) is [`Rejected`] with category
//! `MAPPING` and never silently dropped; deletes that the sink ignores, truncates and logical
//! messages produce nothing.

use std::future::Future;

use crate::config::sinks::OnDelete;
use crate::event::{ChangeEvent, Op, Row};
use crate::sink::batch::Batch;
use crate::sink::mapping::MappingError;
use crate::sink::{Outcome, Rejected, SinkError};

/// A batch split into what a CRM is asked to do.
#[derive(Debug)]
pub(crate) struct CrmBatch<U, D> {
    /// Upserts, in entry order.
    pub(crate) upserts: Vec<U>,
    /// Deletes: entry index and the destination id.
    pub(crate) deletes: Vec<(usize, D)>,
    /// Entries the mapping refused (poison).
    pub(crate) rejected: Vec<Rejected>,
}

/// The writes of a CRM, as [`CrmBatch::apply`] drives them.
pub(crate) trait CrmWrites {
    /// One upsert, carrying its entry index.
    type Upsert;
    /// A delete's destination id.
    type DeleteId;

    /// Applies `upserts` (at least one), recording applied and refused entries in `out`.
    fn upsert(
        &mut self,
        upserts: Vec<Self::Upsert>,
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Applies `deletes` (at least one, by entry index), recording them in `out`; a record
    /// already gone is applied.
    fn delete(
        &mut self,
        deletes: Vec<(usize, Self::DeleteId)>,
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl<U, D> CrmBatch<U, D> {
    /// Applies the split with `crm`: upserts first, then deletes. The outcome holds the
    /// mapping's refusals and the CRM's, in entry order.
    pub(crate) async fn apply<C>(self, crm: &mut C) -> Result<Outcome, SinkError>
    where
        C: CrmWrites<Upsert = U, DeleteId = D>,
    {
        let mut out = Outcome {
            rejected: self.rejected,
            destination_ids: Vec::new(),
        };
        if !self.upserts.is_empty() {
            crm.upsert(self.upserts, &mut out).await?;
        }
        if !self.deletes.is_empty() {
            crm.delete(self.deletes, &mut out).await?;
        }
        out.sort();
        Ok(out)
    }
}

/// A mapping refusal of entry `index`.
pub(crate) fn rejected(index: usize, message: String) -> Rejected {
    Rejected {
        index,
        category: "MAPPING".into(),
        message,
    }
}

/// Splits `batch`: `upsert(index, row)` maps an upsert's row image, `delete_id(row)` finds a
/// delete's destination id in a row image (`before`, else the key).
pub(crate) fn split<U, D>(
    batch: &Batch<ChangeEvent>,
    on_delete: OnDelete,
    mut upsert: impl FnMut(usize, &Row) -> Result<U, MappingError>,
    mut delete_id: impl FnMut(&Row) -> Result<D, MappingError>,
) -> CrmBatch<U, D> {
    let mut out = CrmBatch {
        upserts: Vec::new(),
        deletes: Vec::new(),
        rejected: Vec::new(),
    };
    for (index, entry) in batch.entries.iter().enumerate() {
        let ev = &entry.item;
        match ev.op {
            Op::Create | Op::Update | Op::Read => match ev.after.as_ref() {
                None => out
                    .rejected
                    .push(rejected(index, "event has no row image".into())),
                Some(row) => match upsert(index, row) {
                    Ok(u) => out.upserts.push(u),
                    Err(e) => out.rejected.push(rejected(index, e.to_string())),
                },
            },
            Op::Delete if on_delete == OnDelete::Archive => {
                let mut last_err = None;
                let found = [ev.before.as_ref(), ev.key.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|row| {
                        delete_id(row)
                            .map_err(|e| last_err = Some(e.to_string()))
                            .ok()
                    });
                match found {
                    Some(id) => out.deletes.push((index, id)),
                    None => out.rejected.push(rejected(
                        index,
                        last_err.unwrap_or_else(|| "delete carries no row image".into()),
                    )),
                }
            }
            Op::Delete | Op::Truncate | Op::Message => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::fields::FieldRule;
    use crate::sink::batch::Entry;
    use crate::sink::mapping::id_value;
    use crate::sink::test_support::event;

    fn batch(events: Vec<ChangeEvent>) -> Batch<ChangeEvent> {
        Batch {
            records: events.len(),
            entries: events
                .into_iter()
                .enumerate()
                .map(|(i, item)| Entry {
                    key: i.to_string().into_bytes(),
                    item,
                    positions: vec![],
                })
                .collect(),
            commit: Default::default(),
        }
    }

    fn email(row: &Row) -> Result<String, MappingError> {
        id_value(&[FieldRule::new("email", "email")], "email", row)
    }

    #[test]
    fn upserts_deletes_and_refusals_keep_their_entry_index() {
        let mut no_image = event(Op::Update, json!({}));
        no_image.after = None;
        let mut delete_by_key = event(Op::Delete, json!({}));
        delete_by_key.before = None;
        delete_by_key.key = json!({"email": "k@x"}).as_object().cloned();
        let b = batch(vec![
            event(Op::Create, json!({"email": "a@x"})),
            event(Op::Delete, json!({"email": "b@x"})),
            no_image,
            event(Op::Update, json!({"name": "no email"})),
            delete_by_key,
            event(Op::Delete, json!({"id": 7})),
        ]);
        let split = split(&b, OnDelete::Archive, |i, row| Ok((i, email(row)?)), email);
        assert_eq!(split.upserts, vec![(0, "a@x".to_string())]);
        assert_eq!(
            split.deletes,
            vec![(1, "b@x".to_string()), (4, "k@x".to_string())]
        );
        let refused: Vec<usize> = split.rejected.iter().map(|r| r.index).collect();
        assert_eq!(refused, vec![2, 3, 5]);
        assert!(split.rejected.iter().all(|r| r.category == "MAPPING"));
        assert_eq!(split.rejected[0].message, "event has no row image");
    }

    #[test]
    fn ignored_deletes_and_truncates_produce_nothing() {
        let b = batch(vec![
            event(Op::Delete, json!({"email": "b@x"})),
            event(Op::Truncate, json!({})),
        ]);
        let split = split(&b, OnDelete::Ignore, |i, _| Ok(i), email);
        assert!(split.upserts.is_empty() && split.deletes.is_empty());
        assert!(split.rejected.is_empty());
    }
}
