//! The inbound half of two-way sync: queued CRM ids → Postgres, in origin-tagged transactions.
//!
//! Owns the inbound worker. Invariants: ids leave the durable inbox only once their changes (or
//! deletions) were applied or set aside (dead-lettered: a record Postgres refuses for its
//! values, or whose CRM value does not map back, never blocks the others); transient failures
//! keep them and retry with backoff; deletions are applied before changes; a fatal error
//! (missing grants, a changed table) ends the worker (and with it the two-way sink).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::two_way::{OnCrmCreate, OnCrmDelete};
use crate::error::Backoff;
use crate::sink::SinkError;
use crate::sync::dead_letter::Skipped;
use crate::sync::plan::{CrmRecord, Side, new_row, plan};
use crate::sync::resolve::value_hash;
use crate::sync::store::{InboundChange, LedgerRow};

use crate::sync::engine::*;

/// How long the idle inbound worker waits before it looks at the inbox again without a
/// wake-up (ids another process committed, e.g. a worker that stopped before applying them).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Applies CRM changes and deletions to Postgres until shutdown: takes groups of up to
/// [`INBOUND_BATCH`] ids from the inbox (deletions first), retrying transient failures with
/// backoff; a group leaves the inbox only once applied.
pub(crate) async fn inbound_worker<C: Crm>(
    ctx: Arc<Context>,
    mut crm: C,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::new();
    loop {
        let taken = match ctx.inbox.next(INBOUND_BATCH as i64).await {
            Ok(Some(taken)) => {
                let applied = if taken.deleted {
                    apply_deletions(&ctx, &mut crm, &taken.ids).await
                } else {
                    apply_inbound(&ctx, &mut crm, &taken.ids).await
                };
                applied.map(|()| Some(taken))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(store_failed(e)),
        };
        let wait = match taken {
            Ok(Some(taken)) => match ctx.inbox.done(&taken).await {
                Ok(()) => {
                    backoff = Backoff::new();
                    continue;
                }
                Err(e) => retry_wait(&ctx, &mut backoff, store_failed(e))?,
            },
            Ok(None) => {
                report_links(ctx.as_ref(), retry_links(&ctx, &mut crm).await)?;
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    _ = ctx.inbox.woken() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            Err(e) => retry_wait(&ctx, &mut backoff, e)?,
        };
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Links pending at most per retry while idle.
const LINK_RETRY: i64 = 100;

/// Retries up to [`LINK_RETRY`] pending links of the sink; returns those still pending.
async fn retry_links<C: Crm>(
    ctx: &Context,
    crm: &mut C,
) -> Result<Vec<(String, String)>, SinkError> {
    let store = ctx.store.lock().await;
    let pending = store
        .pending_links(None, LINK_RETRY)
        .await
        .map_err(store_failed)?;
    complete_links(ctx, &store, crm, &pending).await
}

/// Logs links still pending (or a transient failure to link); a fatal error is returned.
fn report_links(
    ctx: &Context,
    linked: Result<Vec<(String, String)>, SinkError>,
) -> Result<(), SinkError> {
    match linked {
        Ok(pending) if !pending.is_empty() => {
            tracing::warn!(sink = %ctx.sink, records = pending.len(),
                "records created in the CRM are not linked to their rows yet; retrying later");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e @ SinkError::Fatal { .. }) => Err(e),
        Err(e) => {
            ctx.status.error(&e);
            tracing::warn!(sink = %ctx.sink, error = %e,
                "linking records created in the CRM failed; retrying later");
            Ok(())
        }
    }
}

/// The wait before retrying after a transient failure (logged); a fatal one is returned.
fn retry_wait(ctx: &Context, backoff: &mut Backoff, e: SinkError) -> Result<Duration, SinkError> {
    match e {
        e @ SinkError::Transient { retry_after, .. } => {
            ctx.status.error(&e);
            let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
            tracing::warn!(sink = %ctx.sink, error = %e,
                retry_in_ms = wait.as_millis() as u64, "inbound sync failed; retrying");
            Ok(wait)
        }
        fatal => Err(fatal),
    }
}

/// Deletes the rows linked to records deleted in the CRM (`on_crm_delete = "delete"`), with
/// their ledger rows, in one origin-tagged transaction. Unlinked records cost nothing; linked
/// ones are read first (one read per 50), and those that exist again keep their row.
async fn apply_deletions<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    ids: &[String],
) -> Result<(), SinkError> {
    if ctx.two_way.on_crm_delete != OnCrmDelete::Delete {
        return Ok(());
    }
    let mut store = ctx.store.lock().await;
    let linked = store.ledger_by_crm_ids(ids).await.map_err(store_failed)?;
    if linked.is_empty() {
        return Ok(());
    }
    let linked_ids: Vec<String> = linked.keys().cloned().collect();
    let alive: HashSet<String> = crm
        .read(ctx, ReadBy::CrmId, &linked_ids)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let changes = deletions(&linked, &alive);
    if changes.is_empty() {
        return Ok(());
    }
    // Each deletion's ledger row (forgotten with it; it names the CRM id of a refused one).
    let by_key: HashMap<&str, &LedgerRow> = linked.values().map(|l| (l.key.as_str(), l)).collect();
    let ledger: Vec<LedgerRow> = changes
        .iter()
        .filter_map(|c| match c {
            InboundChange::Delete { key } => by_key.get(key.as_str()).map(|l| (*l).clone()),
            _ => None,
        })
        .collect();
    ctx.write_inbound(&mut store, &changes, &ledger).await?;
    tracing::info!(sink = %ctx.sink, rows = changes.len(),
        "deleted rows whose CRM records were deleted");
    Ok(())
}

/// The row deletions for deleted CRM records linked in the ledger (by CRM id), except those
/// found to exist (`alive`); ordered by record key.
fn deletions(linked: &HashMap<String, LedgerRow>, alive: &HashSet<String>) -> Vec<InboundChange> {
    let keys: BTreeSet<&String> = linked
        .iter()
        .filter(|(crm_id, _)| !alive.contains(*crm_id))
        .map(|(_, l)| &l.key)
        .collect();
    keys.into_iter()
        .map(|key| InboundChange::Delete { key: key.clone() })
        .collect()
}

/// Reads the records and applies their plans in one origin-tagged transaction.
async fn apply_inbound<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    ids: &[String],
) -> Result<(), SinkError> {
    // Read and decide under the store lock, like the outbound side (see TwoWaySink::apply).
    let mut store = ctx.store.lock().await;
    let records = crm.read(ctx, ReadBy::CrmId, ids).await?;
    let crm_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let by_crm_id = store
        .ledger_by_crm_ids(&crm_ids)
        .await
        .map_err(store_failed)?;
    let key_of = |r: &CrmRecord| {
        by_crm_id.get(&r.id).map(|l| l.key.clone()).or_else(|| {
            r.properties
                .get(&ctx.id_property)
                .filter(|v| !v.is_empty())
                .cloned()
        })
    };
    let keys: Vec<String> = records.iter().filter_map(key_of).collect();
    let current = store.rows(&keys).await.map_err(store_failed)?;
    let ledger = store.ledger_by_keys(&keys).await.map_err(store_failed)?;
    let mut changes = Vec::new();
    let mut ledger_rows = Vec::new();
    let mut in_sync = Vec::new();
    let mut conflicts = Vec::new();
    let mut created = Vec::new();
    let mut unmappable = Vec::new();
    for r in &records {
        let Some(key) = key_of(r) else {
            if ctx.two_way.on_crm_create == OnCrmCreate::Insert {
                let new = new_row(ctx.mapping(), r);
                if let Some(column) = new.unfit.first() {
                    unmappable.push(Skipped::unmappable(&r.id, None, column));
                    continue;
                }
                changes.push(InboundChange::Insert { values: new.pull });
                ledger_rows.push(LedgerRow {
                    key: String::new(),
                    crm_id: Some(r.id.clone()),
                    fields: new.ledger,
                });
                created.push((changes.len() - 1, r.id.clone()));
            }
            continue;
        };
        let Some(row) = current.get(&key) else {
            // No row (deleted in Postgres, its archive pending): nothing to update.
            continue;
        };
        let p = plan(ctx.mapping(), Side::Inbound, row, Some(r), ledger.get(&key));
        if let Some(column) = p.unfit.first() {
            unmappable.push(Skipped::unmappable(&r.id, Some(key), column));
            continue;
        }
        let l = LedgerRow {
            key: key.clone(),
            crm_id: Some(r.id.clone()),
            fields: p.ledger,
        };
        conflicts.push((key.clone(), p.conflicts));
        if p.pull.is_empty() {
            ctx.count(&ctx.counters.echoes, "driftless_sync_echoes_total", 1);
            in_sync.push(l);
        } else {
            changes.push(InboundChange::Update {
                key,
                values: p.pull,
            });
            ledger_rows.push(l);
        }
    }
    store.save_ledger(&in_sync).await.map_err(store_failed)?;
    // Records Postgres refuses are set aside there; their keys come back empty.
    let keys = ctx
        .write_inbound(&mut store, &changes, &ledger_rows)
        .await?;
    // Link records created in the CRM to their new rows: set the id property there too.
    let mut links = Vec::new();
    let mut link_ledger = Vec::new();
    for (i, crm_id) in &created {
        let key = &keys[*i];
        if key.is_empty() {
            continue;
        }
        links.push((crm_id.clone(), key.clone()));
        link_ledger.push(LedgerRow {
            key: key.clone(),
            crm_id: Some(crm_id.clone()),
            fields: BTreeMap::from([(ctx.id_property.clone(), value_hash(key))]),
        });
    }
    store
        .save_pending_links(&link_ledger)
        .await
        .map_err(store_failed)?;
    // The rows exist now: a link the CRM does not confirm stays pending, retried later.
    let linked = complete_links(ctx, &store, crm, &links).await;
    drop(store);
    ctx.dead_letter(&unmappable).await?;
    report_links(ctx, linked)?;
    for (key, c) in &conflicts {
        ctx.record_conflicts(key, c).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_skip_restored_records() {
        let ledger = |key: &str, crm_id: &str| {
            (
                crm_id.to_string(),
                LedgerRow {
                    key: key.into(),
                    crm_id: Some(crm_id.into()),
                    fields: BTreeMap::new(),
                },
            )
        };
        let linked = HashMap::from([ledger("2", "902"), ledger("1", "901"), ledger("3", "903")]);
        let alive = HashSet::from(["903".to_string()]);
        assert_eq!(
            deletions(&linked, &alive),
            [
                InboundChange::Delete { key: "1".into() },
                InboundChange::Delete { key: "2".into() }
            ]
        );
    }
}
