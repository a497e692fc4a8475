//! driftless's own durable checkpoint, kept beside (not in) the replication slot.
//!
//! Owns the file `{state_dir}/{slot}.checkpoint.json`. It records which cluster and slot the
//! capture belongs to, the phase (creating the slot, snapshotting, streaming) and the LSN last
//! confirmed to Postgres. Invariants:
//! - it is written (temp file, fsync, rename, fsync dir) *before* Postgres is told the LSN it
//!   holds, so the slot's `confirmed_flush_lsn` can never legitimately be ahead of it; when it
//!   is, someone else moved the slot (or re-created it) and capture refuses to start;
//! - the stored LSN never decreases within a phase;
//! - the stored timeline is the server's when capture last started streaming, so a promoted
//!   server whose timeline forked before the stored LSN is recognized (and refused);
//! - the file is owner-only (mode 0600, [`crate::files`]).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files;
use crate::lsn::Lsn;

/// Life-cycle phase of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// About to create the slot; a slot found in this phase is ours and may be re-created.
    Creating,
    /// Slot created, initial snapshot in progress (not resumable: it is redone on restart).
    Snapshotting,
    /// Streaming from the slot.
    Streaming,
}

/// The checkpoint's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// `IDENTIFY_SYSTEM` system identifier of the cluster.
    pub system_id: String,
    /// Database name.
    pub database: String,
    /// Slot name.
    pub slot: String,
    /// Phase.
    pub phase: Phase,
    /// The slot's consistent point when driftless created it.
    pub consistent_point: Lsn,
    /// Last LSN confirmed to Postgres as flushed.
    pub flushed_lsn: Lsn,
    /// The server's timeline (`IDENTIFY_SYSTEM`) when capture last started streaming; `None`
    /// in a checkpoint of an older version. A server on another timeline (a promoted standby)
    /// must have forked from this one at or after `flushed_lsn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The tables capture covered (`schema.table`) when this was written; `None` in a
    /// checkpoint of an older version. A table configured later is backfilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Backfills not yet complete, the first one running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfills: Vec<BackfillProgress>,
}

/// One table's backfill progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackfillProgress {
    /// `schema.table`.
    pub table: String,
    /// The primary-key values (as text, in key order) of the last row read and acknowledged;
    /// `None` before the first chunk.
    pub after_key: Option<Vec<String>>,
    /// Rows sent so far.
    pub rows: u64,
}

/// Errors reading or writing the checkpoint (all fatal: they concern local disk).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O failure.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Unreadable content.
    #[error("checkpoint {path} is corrupt: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// The checkpoint file of one slot.
#[derive(Clone, Debug)]
pub(crate) struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    /// The store for `slot` under `state_dir`.
    pub(crate) fn new(state_dir: &Path, slot: &str) -> Self {
        CheckpointStore {
            path: state_dir.join(format!("{slot}.checkpoint.json")),
        }
    }

    /// Path of the file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads the checkpoint; `None` if there is none yet.
    pub(crate) fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CheckpointError::Corrupt {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Durably replaces the checkpoint.
    pub(crate) fn store(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = files::private()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        // A temp file left by an older version may predate the mode: it is ours, tighten it.
        f.set_permissions(std::fs::Permissions::from_mode(files::PRIVATE_MODE))
            .map_err(|e| self.io(e))?;
        let body = serde_json::to_vec_pretty(checkpoint).expect("checkpoint serializes");
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }

    /// Removes the checkpoint (after the slot was deliberately dropped).
    #[cfg(test)]
    pub(crate) fn remove(&self) -> Result<(), CheckpointError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "s1");
        assert_eq!(store.load().unwrap(), None);
        let mut cp = Checkpoint {
            version: 1,
            system_id: "7".into(),
            database: "app".into(),
            slot: "s1".into(),
            phase: Phase::Streaming,
            consistent_point: Lsn(5),
            flushed_lsn: Lsn(10),
            timeline: Some(2),
            tables: Some(vec!["public.t".into()]),
            backfills: vec![BackfillProgress {
                table: "public.t".into(),
                after_key: Some(vec!["7".into()]),
                rows: 7,
            }],
        };
        store.store(&cp).unwrap();
        cp.flushed_lsn = Lsn(20);
        store.store(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner only");
        store.remove().unwrap();
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn a_checkpoint_without_a_timeline_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "s1");
        std::fs::write(
            store.path(),
            br#"{"version":1,"system_id":"7","database":"app","slot":"s1","phase":"streaming",
                "consistent_point":"0/5","flushed_lsn":"0/A"}"#,
        )
        .unwrap();
        let cp = store.load().unwrap().unwrap();
        assert_eq!((cp.timeline, cp.flushed_lsn), (None, Lsn(10)));
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "s1");
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(CheckpointError::Corrupt { .. })));
    }
}
