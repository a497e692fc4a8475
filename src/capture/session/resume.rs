//! The resume point of a capture session: the slot's life cycle against driftless's own
//! checkpoint. A first start creates the slot (and snapshots); a later start resumes from the
//! checkpoint, never from a slot that is ahead of it, never re-creating a dropped slot; a
//! standby in recovery whose slot is a synchronized copy is waited for (transient) until its
//! promotion. A server on another timeline than the checkpoint's (a promoted standby) is
//! resumed only if its timeline forked from the checkpoint's at or after the checkpoint's LSN:
//! otherwise the new primary writes other changes at LSNs capture already confirmed, and the
//! server would skip them (refused).

use tokio_postgres::Client;

use super::Session;
use crate::capture::CaptureError;
use crate::capture::progress::UnitId;
use crate::checkpoint::{Checkpoint, Phase};
use crate::config::{SnapshotMode, ValidConfig};
use crate::kafka::Publisher;
use crate::lsn::Lsn;
use crate::postgres::SourceError;
use crate::postgres::catalog;
use crate::postgres::replication::{ReplicationConnection, history};

impl<P: Publisher<UnitId>> Session<'_, P> {
    /// Decides where to stream from, creating the slot (and snapshotting) on a first start.
    pub(super) async fn resume_point(
        &mut self,
        repl: &mut ReplicationConnection,
        timeline: u32,
    ) -> Result<Lsn, CaptureError> {
        let cfg = self.cfg;
        let slot = catalog::slot_state(&self.sql, &cfg.slot).await?;
        let saved = self.store.load()?;
        let refuse = |message: String, hint: String| -> CaptureError {
            SourceError::Refused { message, hint }.into()
        };
        if let Some(cp) = &saved
            && (cp.system_id != self.checkpoint.system_id || cp.database != self.database)
        {
            return Err(refuse(
                format!(
                    "checkpoint {} belongs to cluster {} database {}, not to this server's \
                     cluster {} database {}",
                    self.store.path().display(),
                    cp.system_id,
                    cp.database,
                    self.checkpoint.system_id,
                    self.database
                ),
                "point capture.state_dir at this source's own state, or move the old \
                 checkpoint away to start a new capture (with a new snapshot)"
                    .into(),
            ));
        }
        match (saved, slot) {
            (Some(cp), Some(state)) if cp.phase == Phase::Streaming => {
                self.checkpoint = cp;
                let cp = &self.checkpoint;
                if state.slot_type != "logical"
                    || state.plugin.as_deref() != Some("pgoutput")
                    || state.database.as_deref() != Some(self.database.as_str())
                {
                    return Err(refuse(
                        format!(
                            "slot {} is not a pgoutput slot of database {}",
                            cfg.slot, cp.database
                        ),
                        "choose another source.slot".into(),
                    ));
                }
                if state.wal_status.as_deref() == Some("lost") {
                    return Err(refuse(
                        format!(
                            "slot {} has been invalidated (wal_status = lost): the WAL after \
                             {} was removed and those changes cannot be captured",
                            cfg.slot, cp.flushed_lsn
                        ),
                        format!(
                            "raise max_slot_wal_keep_size; then drop the slot and remove {} to \
                             start over with a new snapshot",
                            self.store.path().display()
                        ),
                    ));
                }
                match state.confirmed_flush_lsn {
                    Some(confirmed) if confirmed > cp.flushed_lsn => Err(refuse(
                        format!(
                            "slot {} confirmed_flush_lsn {confirmed} is ahead of driftless's \
                             checkpoint {}: the slot was advanced or re-created by someone else, \
                             and the changes in between would be lost",
                            cfg.slot, cp.flushed_lsn
                        ),
                        format!(
                            "if that loss is acceptable, remove {} and drop the slot to start \
                             over with a new snapshot",
                            self.store.path().display()
                        ),
                    )),
                    _ => {
                        self.check_timeline(repl, timeline).await?;
                        if cfg.failover {
                            // Idempotent; turns failover on for a slot created without it.
                            repl.enable_failover(&cfg.slot).await?;
                        }
                        Ok(self.checkpoint.flushed_lsn)
                    }
                }
            }
            (Some(cp), None) if cp.phase == Phase::Streaming => Err(self.missing_slot(&cp)),
            (None, Some(_)) => Err(refuse(
                format!(
                    "replication slot {} exists but driftless has no checkpoint for it ({})",
                    cfg.slot,
                    self.store.path().display()
                ),
                format!(
                    "if the slot is not driftless's, choose another source.slot; if driftless's \
                     state was lost, drop it (SELECT pg_drop_replication_slot('{}')) to start \
                     over with a new snapshot",
                    cfg.slot
                ),
            )),
            (saved, existing) => {
                // First start, or a start interrupted before streaming began: (re)create.
                if saved.is_some() && existing.is_some() {
                    tracing::info!(slot = %cfg.slot, "dropping the slot of an unfinished start");
                    catalog::drop_slot(&self.sql, &cfg.slot).await?;
                }
                self.first_start(repl).await
            }
        }
    }

    /// Refuses a server whose timeline forked from the checkpoint's before the checkpoint's
    /// LSN; otherwise records the server's timeline in the checkpoint.
    async fn check_timeline(
        &mut self,
        repl: &mut ReplicationConnection,
        server: u32,
    ) -> Result<(), CaptureError> {
        let cp = &self.checkpoint;
        if let Some(ours) = cp.timeline
            && ours != server
        {
            let content = if server > ours {
                Some(repl.timeline_history(server).await?)
            } else {
                None
            };
            if let Some(message) = fork_refusal(ours, server, cp.flushed_lsn, content.as_deref()) {
                return Err(SourceError::Refused {
                    message,
                    hint: format!(
                        "set synchronized_standby_slots on the primary (see the README, \
                         \"Failover\") so a standby always has what capture confirmed; to \
                         start over with a new snapshot, drop the slot and remove {}",
                        self.store.path().display()
                    ),
                }
                .into());
            }
            tracing::info!(from = ours, to = server, "the server's timeline changed");
        }
        if self.checkpoint.timeline != Some(server) {
            self.checkpoint.timeline = Some(server);
            self.store.store(&self.checkpoint)?;
        }
        Ok(())
    }

    /// The refusal when the checkpoint says driftless streamed from a slot that is gone.
    fn missing_slot(&self, cp: &Checkpoint) -> CaptureError {
        SourceError::Refused {
            message: format!(
                "replication slot {} is missing, but driftless streamed from it up to {}: \
                 it was dropped{}, and changes after that point cannot be recovered from it",
                self.cfg.slot,
                cp.flushed_lsn,
                if self.cfg.failover {
                    " (or this server is a standby promoted before it had synchronized the \
                     slot: pg_replication_slots.synced on the standby shows its copy)"
                } else {
                    ""
                }
            ),
            hint: format!(
                "driftless never re-creates a slot silently; to start over with a new \
                 snapshot, remove {}",
                self.store.path().display()
            ),
        }
        .into()
    }

    pub(super) async fn check_slot_not_ahead(&self, resume: Lsn) -> Result<(), CaptureError> {
        let state = catalog::slot_state(&self.sql, &self.cfg.slot).await?;
        match state.and_then(|s| s.confirmed_flush_lsn) {
            Some(c) if c > resume => Err(SourceError::Refused {
                message: format!(
                    "slot {} moved to {c} while driftless was starting at {resume}",
                    self.cfg.slot
                ),
                hint: "another process uses this slot; stop it".into(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    async fn first_start(&mut self, repl: &mut ReplicationConnection) -> Result<Lsn, CaptureError> {
        let cfg = self.cfg;
        self.checkpoint.phase = Phase::Creating;
        self.store.store(&self.checkpoint)?;
        let export = cfg.snapshot == SnapshotMode::Initial;
        let created = repl
            .create_logical_slot(&cfg.slot, export, cfg.failover)
            .await?;
        tracing::info!(slot = %cfg.slot, consistent_point = %created.consistent_point,
            "replication slot created");
        self.checkpoint.consistent_point = created.consistent_point;
        self.checkpoint.flushed_lsn = created.consistent_point;
        if let (true, Some(name)) = (export, created.snapshot_name.as_deref()) {
            self.checkpoint.phase = Phase::Snapshotting;
            self.store.store(&self.checkpoint)?;
            self.snapshot(name, created.consistent_point).await?;
        }
        self.checkpoint.phase = Phase::Streaming;
        self.store.store(&self.checkpoint)?;
        Ok(created.consistent_point)
    }
}

/// A standby in recovery whose slot is a copy synchronized from its primary (or, with
/// `source.failover`, any standby: the failover slot lives on the primary) can serve capture
/// only once it is promoted: during a failover, or when the address moved to it before its
/// promotion. That is transient (retried with backoff), never a reason to stop; it is checked
/// before capture writes anything (publication, slot).
pub(super) async fn wait_for_promotion(
    cfg: &ValidConfig,
    sql: &Client,
) -> Result<(), CaptureError> {
    let slot = catalog::slot_state(sql, &cfg.slot).await?;
    let copy = cfg.failover || slot.as_ref().is_some_and(|s| s.synced);
    if !copy || !catalog::in_recovery(sql).await? {
        return Ok(());
    }
    let has = if slot.is_some_and(|s| s.synced) {
        "a copy of the slot synchronized from its primary"
    } else {
        "no synchronized copy of the slot yet"
    };
    Err(SourceError::NotReady {
        message: format!(
            "the server is a standby in recovery with {has} ({}): capture resumes once it is \
             promoted",
            cfg.slot
        ),
        hint: "driftless retries until the server is promoted; if it is not meant to be, point \
               the source URL at the primary"
            .into(),
    }
    .into())
}

/// Why capture must not resume at `flushed` (confirmed on timeline `ours`) on a server on
/// timeline `server`, whose history file is `history` (`None` when the server's timeline is
/// not later than ours); `None` when it may.
fn fork_refusal(ours: u32, server: u32, flushed: Lsn, history: Option<&str>) -> Option<String> {
    let Some(history) = history.filter(|_| server > ours) else {
        return Some(format!(
            "the server is on timeline {server}, not after capture's checkpoint's timeline \
             {ours}: it is not the promoted successor of the server capture streamed from (an \
             old primary?), and resuming at {flushed} could skip or invent changes"
        ));
    };
    match history::switch_point(history, ours) {
        Ok(Some(fork)) if flushed > fork => Some(format!(
            "the promoted server's timeline {server} forked from timeline {ours} at {fork}, \
             before capture's checkpoint {flushed}: the old primary sent capture changes the \
             new primary never had, and the changes the new primary writes after {fork} would \
             be skipped"
        )),
        Ok(Some(_)) => None,
        Ok(None) => Some(format!(
            "the server's timeline {server} does not descend from capture's checkpoint's \
             timeline {ours}: resuming at {flushed} could skip or invent changes"
        )),
        Err(e) => Some(format!(
            "cannot tell where timeline {server} forked from capture's checkpoint's timeline \
             {ours}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORY_3: &str = "1\t0/3000158\tno recovery target specified\n\
        2\t0/5000000\tno recovery target specified\n";

    #[test]
    fn a_checkpoint_at_or_before_the_fork_resumes() {
        assert_eq!(fork_refusal(1, 3, Lsn(0x300_0158), Some(HISTORY_3)), None);
        assert_eq!(fork_refusal(2, 3, Lsn(0x400_0000), Some(HISTORY_3)), None);
    }

    #[test]
    fn a_checkpoint_past_the_fork_is_refused() {
        let m = fork_refusal(1, 3, Lsn(0x300_0159), Some(HISTORY_3)).unwrap();
        assert!(
            m.contains(
                "forked from timeline 1 at 0/3000158, before capture's checkpoint \
                 0/3000159"
            ),
            "{m}"
        );
        assert!(m.contains("would be skipped"), "{m}");
    }

    #[test]
    fn an_unrelated_or_older_timeline_is_refused() {
        let m = fork_refusal(4, 5, Lsn(1), Some(HISTORY_3)).unwrap();
        assert!(m.contains("does not descend"), "{m}");
        let m = fork_refusal(3, 2, Lsn(1), None).unwrap();
        assert!(m.contains("old primary"), "{m}");
        let m = fork_refusal(1, 3, Lsn(1), Some("garbage\n")).unwrap();
        assert!(m.contains("cannot tell where timeline 3 forked"), "{m}");
    }
}
