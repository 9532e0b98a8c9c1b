//! Making a state file durable under its final name. A guest's saved state is the only copy of the guest across
//! a kexec, so it is written under a temporary name and renamed only when complete and on disk, and a file an
//! earlier run left is moved aside rather than overwritten: it may be the only copy of some other attempt.

use super::HostError;
use crate::action::FileCommitted;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Highest `.kept-N` tried before giving up; a directory with that many leftovers needs an operator.
const MAX_KEPT: u32 = 1000;

/// fsync `from`, move an existing `to` aside, rename `from` to `to`, fsync the directory.
pub(crate) fn commit(from: &Path, to: &Path) -> Result<FileCommitted, HostError> {
    let file = File::open(from).map_err(|e| {
        HostError::check(format!(
            "the state was not written to {}: {e} (did the save fail?)",
            from.display()
        ))
    })?;
    file.sync_all()
        .map_err(|e| HostError::io(format!("cannot fsync {}", from.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| HostError::io(from.display().to_string(), e))?
        .len();
    if size == 0 {
        return Err(HostError::check(format!(
            "{} is empty: the save wrote nothing",
            from.display()
        )));
    }
    drop(file);
    let kept = keep_aside(to)?;
    std::fs::rename(from, to).map_err(|e| {
        HostError::io(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e,
        )
    })?;
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HostError::io(format!("cannot fsync directory {}", dir.display()), e))?;
    Ok(FileCommitted {
        path: to.to_owned(),
        size,
        kept_aside: kept,
    })
}

/// Renames an existing `path` to the first free `path.kept-N`; returns where it went.
pub(crate) fn keep_aside(path: &Path) -> Result<Option<PathBuf>, HostError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    for n in 1..=MAX_KEPT {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".kept-{n}"));
        let aside = PathBuf::from(name);
        if std::fs::symlink_metadata(&aside).is_err() {
            std::fs::rename(path, &aside).map_err(|e| {
                HostError::io(
                    format!(
                        "cannot move the earlier {} aside to {}",
                        path.display(),
                        aside.display()
                    ),
                    e,
                )
            })?;
            return Ok(Some(aside));
        }
    }
    Err(HostError::check(format!(
        "{} exists and {MAX_KEPT} earlier copies are kept beside it: remove the ones you do not need",
        path.display()
    )))
}

/// The permission bits of `path` when group or others may write it: someone but the owner could then change
/// what a root process will do.
pub(crate) fn loosely_writable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o022 != 0).then_some(mode & 0o777)
}

/// Whether `path` is a directory.
pub(crate) fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

/// `path` made absolute and free of symlinks, or as given when that fails.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Creates a directory and its parents (0755, before the umask), for files others read: man pages, metrics.
pub(crate) fn create_dir_all(path: &Path) -> Result<(), HostError> {
    std::fs::create_dir_all(path)
        .map_err(|e| HostError::io(format!("cannot create {}", path.display()), e))
}

/// Writes a file others may read (0644) atomically: a reader sees the old content or the new, never half of it.
pub(crate) fn write_readable(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    super::journal_files::write_atomic_mode(path, bytes, 0o644)
        .map_err(|e| HostError::io(format!("cannot write {}", path.display()), e))
}

/// Writes a file only its owner may read (0600): a plan names sockets, devices and the kernel to boot. Without
/// `replace` an existing file is refused (`create_new`, so no other writer slips in between); with it the file is
/// replaced atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), HostError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let context = || format!("cannot write {}", path.display());
    if replace {
        // The temporary file goes beside it, so a bare `plan.toml` needs its directory spelt out.
        let absolute = std::path::absolute(path).map_err(|e| HostError::io(context(), e))?;
        return super::journal_files::write_atomic_mode(&absolute, bytes, 0o600)
            .map_err(|e| HostError::io(context(), e));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => HostError::check(format!(
                "{} exists: kup plan init does not overwrite it (--force replaces it)",
                path.display()
            )),
            _ => HostError::io(context(), e),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| HostError::io(context(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory, and in it the paths of a partial save and of the state file it is committed to.
    fn vmstate() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (
            dir.path().join("vmstate.partial"),
            dir.path().join("vmstate"),
        );
        (dir, from, to)
    }

    #[test]
    fn commit_renames_and_keeps_earlier_files() {
        let (dir, from, to) = vmstate();
        std::fs::write(&from, b"first").unwrap();
        let out = commit(&from, &to).unwrap();
        assert_eq!(out.size, 5);
        assert_eq!(out.kept_aside, None);
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"first");

        for (n, text) in [(1, "second"), (2, "third")] {
            std::fs::write(&from, text).unwrap();
            let out = commit(&from, &to).unwrap();
            let kept = dir.path().join(format!("vmstate.kept-{n}"));
            assert_eq!(out.kept_aside, Some(kept));
            assert_eq!(std::fs::read_to_string(&to).unwrap(), text);
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vmstate.kept-1")).unwrap(),
            "first"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vmstate.kept-2")).unwrap(),
            "second"
        );
    }

    #[test]
    fn a_missing_or_empty_partial_file_is_an_error_and_keeps_the_old_one() {
        let (_dir, from, to) = vmstate();
        std::fs::write(&to, b"old").unwrap();
        let e = commit(&from, &to).unwrap_err().to_string();
        assert!(e.contains("did the save fail"), "{e}");
        std::fs::write(&from, b"").unwrap();
        let e = commit(&from, &to).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        assert_eq!(std::fs::read(&to).unwrap(), b"old");
    }
}
