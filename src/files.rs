//! The files driftless creates and the secret files it reads, and their permissions.
//!
//! Invariants: every file driftless creates (the checkpoint, the audit file) is created through
//! [`private`], with mode 0600 (owner read and write only) whatever the umask, because it
//! holds positions, keys and row identities of a production database; a secret file
//! (`url_file`) readable by group or others is reported by [`loose_permissions`], by its mode
//! only, never its content.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file driftless creates.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Options creating files with [`PRIVATE_MODE`]. The mode applies when the file is created;
/// an existing file keeps its own.
pub(crate) fn private() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(PRIVATE_MODE);
    options
}

/// The permission bits of `path` when group or others may read it (a secret file should be
/// 0600 or 0400), `None` when they may not or the file cannot be inspected.
pub(crate) fn loose_permissions(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn created_files_are_owner_only_whatever_the_umask_and_loose_secret_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("created");
        let mut f = private().write(true).create(true).open(&path).unwrap();
        f.write_all(b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE_MODE);
        assert_eq!(loose_permissions(&path), None);
        for (mode, loose) in [(0o644, true), (0o640, true), (0o604, true), (0o400, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(loose_permissions(&path), loose.then_some(mode), "{mode:o}");
        }
        assert_eq!(loose_permissions(&dir.path().join("missing")), None);
    }
}
