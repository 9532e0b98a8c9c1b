//! The file primitives the journal stands on: private directories, atomic writes, an append-only log made durable
//! record by record or a batch of records at once, and the exclusive lock on a journal root. What goes in the files is `exec::journal`'s.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` (and parents) as 0700 directories.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// fsync of a directory, so a rename or a new file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a file atomically: temp file, fsync, rename, fsync of the directory. 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with another mode, for files others must read (a systemd unit).
pub(crate) fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            // A symlink planted at the temporary name is not written through.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Removes a file and makes the removal durable; a file already gone is fine.
pub(crate) fn remove_durably(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let _ = sync_dir(dir);
    }
}

/// A file's text, `None` when it cannot be read.
pub(crate) fn read_text(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A file's bytes.
pub(crate) fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Whether `dir` can be listed: the error says why not.
pub(crate) fn list_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::read_dir(dir).map(drop)
}

/// The directories under `root` that hold a file named `marker`, sorted by name.
pub(crate) fn dirs_holding(root: &Path, marker: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join(marker).is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// An append-only file: appends are written, then made durable (`fdatasync`) by [`AppendLog::sync`].
#[derive(Debug)]
pub(crate) struct AppendLog {
    file: File,
    path: PathBuf,
}

impl AppendLog {
    /// Creates a new, empty log (0600) and makes its directory entry durable.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Opens an existing log for appending and returns its text.
    pub(crate) fn open(path: &Path) -> std::io::Result<(Self, String)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok((
            Self {
                file,
                path: path.to_owned(),
            },
            text,
        ))
    }

    /// Cuts the log to its first `len` bytes, durably (a torn last line dropped).
    pub(crate) fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::End(0)).map(drop)
    }

    /// Appends `bytes`, durable only once [`AppendLog::sync`] returns: several records, one `fdatasync`. A write
    /// that fails part-way (a full disk takes what fits) is cut off again, so that no torn line is left for a
    /// later write to follow.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        self.file.write_all(bytes).inspect_err(|_| {
            let _ = self.file.set_len(len);
        })
    }

    /// Makes everything appended so far durable (`fdatasync`).
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Where the log is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The exclusive lock on a journal root, held for a whole apply or resume; the lock file names its holder's pid.
#[derive(Debug)]
pub(crate) struct RootLock {
    _lock: nix::fcntl::Flock<File>,
}

impl RootLock {
    /// Takes the lock on `root` (creating it, 0700) through the file `name` in it, or says who holds it.
    pub(crate) fn acquire(root: &Path, name: &str) -> Result<Self, LockError> {
        create_private_dir(root)
            .map_err(|e| LockError::Io(format!("cannot create {}: {e}", root.display())))?;
        let path = root.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.write_all(format!("{}\n", std::process::id()).as_bytes());
                let _ = lock.sync_all();
                Ok(Self { _lock: lock })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(LockError::Held {
                    pid: text.trim().parse().ok(),
                })
            }
            Err((_, e)) => Err(LockError::Io(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Why the journal root could not be locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LockError {
    /// Another apply or resume holds it.
    #[error("another kup apply or resume is already running{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The holder's pid, from the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("{0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RootLock::acquire(dir.path(), "lock").unwrap();
        match RootLock::acquire(dir.path(), "lock") {
            Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected the lock to be held, got {other:?}"),
        }
    }
}
