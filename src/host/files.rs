//! Making a state file durable under its final name. A guest's saved state is the only copy of the guest across
//! a kexec, so it is written under a temporary name and renamed only when complete and on disk, and a file an
//! earlier run left is moved aside rather than overwritten: it may be the only copy of some other attempt.

use super::HostError;
use crate::action::FileCommitted;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Highest `.kept-N` tried before giving up; a directory with that many leftovers needs an operator.
const MAX_KEPT: u32 = 1000;

/// A state file's directory, opened once so that every operation on the file is relative to it: a symlink planted
/// at the file's name is never followed, and the directory cannot be swapped between two operations. Another
/// user's symlink on the way to it is refused.
struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl StateDir {
    /// The directory of `file`, and the file's name in it.
    fn of(file: &Path) -> Result<(Self, PathBuf), HostError> {
        let name = file
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| HostError::check(format!("{} names no file", file.display())))?;
        let path = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        super::trust::check_state_dir("the state directory", &path)?;
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            HostError::io(
                format!("cannot open directory {}", path.display()),
                e.into(),
            )
        })?;
        Ok((Self { fd, path }, name))
    }

    /// `name` in this directory, as shown in messages.
    fn show(&self, name: &Path) -> String {
        self.path.join(name).display().to_string()
    }

    /// Whether `name` exists (a symlink counts: it is moved aside, not followed).
    fn exists(&self, name: &Path) -> Result<bool, HostError> {
        self.size(name).map(|size| size.is_some())
    }

    /// The size of `name` (a symlink's own), `None` when there is none.
    fn size(&self, name: &Path) -> Result<Option<u64>, HostError> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(u64::try_from(stat.st_size).unwrap_or(0))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(HostError::io(
                format!("cannot stat {}", self.show(name)),
                e.into(),
            )),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), nix::errno::Errno> {
        renameat(&self.fd, from, &self.fd, to)
    }

    fn sync(&self) -> Result<(), HostError> {
        nix::unistd::fsync(&self.fd).map_err(|e| {
            HostError::io(
                format!("cannot fsync directory {}", self.path.display()),
                e.into(),
            )
        })
    }
}

/// fsync `from`, move an existing `to` aside, rename `from` to `to`, fsync the directory — all relative to the
/// directory they are in (the two must share it), following no symlink at either name.
pub(crate) fn commit(from: &Path, to: &Path) -> Result<FileCommitted, HostError> {
    if from.parent() != to.parent() {
        return Err(HostError::check(format!(
            "{} and {} are not in one directory",
            from.display(),
            to.display()
        )));
    }
    let (dir, from_name) = StateDir::of(from)?;
    let to_name = to
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| HostError::check(format!("{} names no file", to.display())))?;
    let fd = openat(
        &dir.fd,
        &from_name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        HostError::check(format!(
            "the state was not written to {}: {} (did the save fail?)",
            from.display(),
            std::io::Error::from(e)
        ))
    })?;
    let file = File::from(fd);
    file.sync_all()
        .map_err(|e| HostError::io(format!("cannot fsync {}", from.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| HostError::io(from.display().to_string(), e))?;
    if !meta.is_file() {
        return Err(HostError::check(format!(
            "{} is not a regular file: the save did not write it",
            from.display()
        )));
    }
    let size = meta.len();
    if size == 0 {
        return Err(HostError::check(format!(
            "{} is empty: the save wrote nothing",
            from.display()
        )));
    }
    drop(file);
    let kept = keep_aside_in(&dir, &to_name)?.map(|(path, _)| path);
    dir.rename(&from_name, &to_name).map_err(|e| {
        HostError::io(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e.into(),
        )
    })?;
    dir.sync()?;
    Ok(FileCommitted {
        path: to.to_owned(),
        size,
        kept_aside: kept,
    })
}

/// Renames an existing `path` (a symlink too: it is moved, not followed) to the first free `path.kept-N`;
/// returns where it went and its size. A rename writes no data: it works on a full disk too.
pub(crate) fn keep_aside(path: &Path) -> Result<Option<(PathBuf, u64)>, HostError> {
    let (dir, name) = StateDir::of(path)?;
    keep_aside_in(&dir, &name)
}

fn keep_aside_in(dir: &StateDir, name: &Path) -> Result<Option<(PathBuf, u64)>, HostError> {
    let Some(size) = dir.size(name)? else {
        return Ok(None);
    };
    for n in 1..=MAX_KEPT {
        let mut aside = name.as_os_str().to_owned();
        aside.push(format!(".kept-{n}"));
        let aside = PathBuf::from(aside);
        if !dir.exists(&aside)? {
            dir.rename(name, &aside).map_err(|e| {
                HostError::io(
                    format!(
                        "cannot move the earlier {} aside to {}",
                        dir.show(name),
                        dir.show(&aside)
                    ),
                    e.into(),
                )
            })?;
            dir.sync()?;
            return Ok(Some((dir.path.join(aside), size)));
        }
    }
    Err(HostError::check(format!(
        "{} exists and {MAX_KEPT} earlier copies are kept beside it: remove the ones you do not need",
        dir.show(name)
    )))
}

/// Removes a state file, relative to its directory (a symlink at its name is removed, never followed), and
/// makes the removal durable; `false` when there was none.
pub(crate) fn remove_state_file(path: &Path) -> Result<bool, HostError> {
    let (dir, name) = match StateDir::of(path) {
        Ok(found) => found,
        // No directory, no file: nothing to remove.
        Err(HostError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    match unlinkat(&dir.fd, &name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {
            dir.sync()?;
            Ok(true)
        }
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(HostError::io(
            format!("cannot remove {}", path.display()),
            e.into(),
        )),
    }
}

/// Creates and removes a file in `dir` (never following a symlink): a read-only or full file system fails here.
pub(crate) fn probe_writable(dir: &Path) -> Result<(), HostError> {
    let (state, name) =
        StateDir::of(&dir.join(format!(".kup-write-probe.{}", std::process::id())))?;
    let fd = openat(
        &state.fd,
        &name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| {
        HostError::io(
            format!("the state directory {} is not writable", dir.display()),
            e.into(),
        )
    })?;
    drop(fd);
    let _ = unlinkat(&state.fd, &name, UnlinkatFlags::NoRemoveDir);
    Ok(())
}

/// Refuses to write a state file through a symlink: QEMU opens `path` itself (`file:` or `cat >`), following it.
pub(crate) fn refuse_symlink(path: &Path) -> Result<(), HostError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(HostError::check(format!(
            "refusing to save to {}: it is a symlink (owner {}); a state file is never written through a \
             symlink — remove it",
            path.display(),
            super::trust::user_name(std::os::unix::fs::MetadataExt::uid(&meta))
        ))),
        _ => Ok(()),
    }
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
    fn symlinks_at_state_file_names_are_moved_or_removed_never_followed() {
        let (dir, from, to) = vmstate();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // A symlink at the partial name is not committed (its target is not fsynced and renamed in).
        std::os::unix::fs::symlink(&victim, &from).unwrap();
        let e = commit(&from, &to).unwrap_err().to_string();
        assert!(e.contains("did the save fail"), "{e}");
        std::fs::remove_file(&from).unwrap();
        // A symlink at the final name is moved aside as a link, its target untouched.
        std::os::unix::fs::symlink(&victim, &to).unwrap();
        std::fs::write(&from, b"state").unwrap();
        let out = commit(&from, &to).unwrap();
        let kept = out.kept_aside.unwrap();
        assert!(
            std::fs::symlink_metadata(&kept)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&to).unwrap(), b"state");
        // Removing a state file that is a symlink removes the link, not the file it points to.
        assert!(remove_state_file(&kept).unwrap());
        assert!(!remove_state_file(&kept).unwrap());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!remove_state_file(&dir.path().join("no-dir/vmstate")).unwrap());
        // QEMU would write through a link: refused before the save.
        std::os::unix::fs::symlink(&victim, &from).unwrap();
        let e = refuse_symlink(&from).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
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
