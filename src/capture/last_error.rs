//! The last error of a capture process, kept beside the checkpoint in
//! `{state_dir}/{slot}.last_error.json` so that `driftless status` can show it from another
//! process.
//!
//! Invariants: the file holds only the error's text, class, hint and time, which never carry
//! row values or secrets (the errors' own invariant); it is owner-only (mode 0600); writing it
//! is best effort, a failure is logged and never stops capture.

use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) use crate::error::LastError;
use crate::error::{Classify, ErrorClass};
use crate::files;

fn path(state_dir: &Path, slot: &str) -> PathBuf {
    state_dir.join(format!("{slot}.last_error.json"))
}

/// Records `e` as the slot's last error (best effort).
pub(crate) fn record(state_dir: &Path, slot: &str, e: &(impl std::fmt::Display + Classify)) {
    // Capture either retries an error or stops on it.
    let class = match e.class() {
        ErrorClass::Transient => ErrorClass::Transient,
        _ => ErrorClass::Fatal,
    };
    let last = LastError::now(class, e.to_string(), e.hint());
    let path = path(state_dir, slot);
    let written = std::fs::create_dir_all(state_dir).and_then(|_| {
        files::private()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?
            .write_all(&serde_json::to_vec_pretty(&last).expect("serializes"))
    });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot record capture's last error");
    }
}

/// The slot's last recorded error, if any.
pub(crate) fn load(state_dir: &Path, slot: &str) -> Result<Option<LastError>, String> {
    let path = path(state_dir, slot);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is corrupt: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::error::PgError;

    #[test]
    fn records_and_loads_the_last_error_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "s").unwrap(), None);
        let io = PgError::Io(std::io::Error::other("gone"));
        record(dir.path(), "s", &io);
        let auth = PgError::Auth("refused".into());
        record(dir.path(), "s", &auth);
        let last = load(dir.path(), "s").unwrap().expect("recorded");
        assert_eq!(last.class, "fatal");
        assert_eq!(last.message, auth.to_string());
        assert_eq!(last.hint, auth.hint());
        let mode = std::fs::metadata(path(dir.path(), "s"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, files::PRIVATE_MODE);
        record(dir.path(), "s", &io);
        assert_eq!(load(dir.path(), "s").unwrap().unwrap().class, "transient");
    }
}
