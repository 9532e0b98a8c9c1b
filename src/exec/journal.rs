//! The checkpoint journal: what an apply did, durable before the next thing happens, so that the plan can finish on
//! the new kernel — the kexec is a crash from kup's point of view — and an operator can see what happened.
//!
//! Layout under the journal root: `lock` (flock held for a whole apply or resume; holds the holder's pid),
//! `pending` (name of the apply directory that still has work; what the resume unit's `ConditionPathExists=` tests),
//! and one directory per apply with `plan.toml` (frozen copy), `plan.sha256` and `journal.jsonl` (one record per
//! line, fsync'd per record). Files are 0600, directories 0700.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const PLAN_FILE: &str = "plan.toml";
pub const PLAN_SHA_FILE: &str = "plan.sha256";
pub const PENDING_FILE: &str = "pending";
pub const LOCK_FILE: &str = "lock";

/// Test hook: the process SIGKILLs itself right after the record with this sequence number is durable. Fault
/// injection tests use it to prove that `resume` recovers from a crash at every point.
pub const CRASH_AFTER_RECORD_ENV: &str = "KUP_FAULT_CRASH_AFTER_RECORD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A real update: the kexec happens.
    Apply,
    /// Every step for real except the kexec, which is a no-op.
    Rehearse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalState {
    Completed,
    Failed,
    RolledBack,
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    ApplyStarted {
        plan: String,
        plan_path: String,
        plan_sha256: String,
        mode: Mode,
        kernel_load: bool,
        boot_id: String,
        release: String,
        hostname: String,
        pid: u32,
        /// The new kernel's command line as computed from the old kernel's /proc/cmdline: resume must not
        /// recompute it on the new kernel.
        kernel_cmdline: String,
    },
    StepStarted {
        step: String,
    },
    StepDone {
        step: String,
        duration_ms: u64,
        #[serde(default)]
        outputs: Vec<Value>,
    },
    StepFailed {
        step: String,
        duration_ms: u64,
        error: String,
    },
    RollbackStarted {
        reason: String,
    },
    StepRolledBack {
        step: String,
    },
    RollbackFailed {
        step: String,
        error: String,
    },
    /// Written, durable, just before the kexec is executed.
    Kexec {
        boot_id: String,
        release: String,
        kernel_cmdline: String,
    },
    ResumeStarted {
        boot_id: String,
        release: String,
        pid: u32,
        /// The boot changed since the kexec record.
        rebooted: bool,
        /// The running kernel is the one the plan asked for, with the command line kup gave it.
        on_new_kernel: bool,
        /// CLOCK_BOOTTIME: how long this kernel had been up. Precise where the wall clock is not (after a kexec it
        /// restarts from the RTC, which has one-second resolution).
        #[serde(default)]
        uptime_ms: Option<u64>,
    },
    /// The new kernel's boot phases (from its kernel log), recorded by the first resume after a kexec.
    BootReport {
        report: Value,
    },
    Finished {
        state: FinalState,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Wall-clock time: the monotonic clock restarts at the kexec.
    pub unix_ms: u64,
    pub time: String,
    #[serde(flatten)]
    pub event: Event,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds (civil-from-days, Howard Hinnant's algorithm).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Creates `path` (and parents) as 0700 directories.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// fsync of a directory, so a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a file atomically: temp file, fsync, rename, fsync of the directory. 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with another mode, for files others must read (a systemd unit).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
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
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// What reading a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub records: Vec<Record>,
    /// A last line cut short by a crash mid-write: dropped, and reported.
    pub torn_tail: Option<String>,
}

/// Parses journal text. Only the last line may be damaged (a crash mid-append); damage anywhere else is an error,
/// since it means the file was edited or the disk is corrupt.
pub fn parse(text: &str) -> Result<Loaded, String> {
    let mut records = Vec::new();
    let mut torn_tail = None;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Record>(line.trim_end()) {
            Ok(record) if complete => records.push(record),
            _ if last => torn_tail = Some(line.to_string()),
            Err(e) => return Err(format!("journal line {} is damaged: {e}", i + 1)),
            Ok(_) => unreachable!("an incomplete line is always the last"),
        }
    }
    Ok(Loaded { records, torn_tail })
}

/// An open journal, appended to record by record.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    next_seq: u64,
    crash_after: Option<u64>,
}

impl Journal {
    /// Creates `dir` with an empty journal.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        sync_dir(dir)?;
        Ok(Self::with_file(dir, file, 1))
    }

    fn with_file(dir: &Path, file: File, next_seq: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file,
            next_seq,
            crash_after: std::env::var(CRASH_AFTER_RECORD_ENV)
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Opens an existing journal for appending, dropping a torn last line first.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), String> {
        let path = dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let loaded = parse(&text)?;
        if let Some(tail) = &loaded.torn_tail {
            let keep = (text.len() - tail.len()) as u64;
            file.set_len(keep)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    format!("cannot drop the torn last line of {}: {e}", path.display())
                })?;
            file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
        }
        let next_seq = loaded.records.last().map_or(1, |r| r.seq + 1);
        Ok((Self::with_file(dir, file, next_seq), loaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and makes it durable before returning.
    pub fn append(&mut self, event: Event) -> std::io::Result<Record> {
        let unix_ms = now_ms();
        let record = Record {
            seq: self.next_seq,
            unix_ms,
            time: rfc3339(unix_ms),
            event,
        };
        let mut line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.next_seq += 1;
        if self.crash_after == Some(record.seq) {
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        }
        Ok(record)
    }
}

/// Reads a journal directory's records (read-only; a torn tail is reported, not repaired).
pub fn read(dir: &Path) -> Result<Loaded, String> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&String::from_utf8_lossy(&bytes))
}

/// The exclusive lock on a journal root, held for a whole apply or resume.
#[derive(Debug)]
pub struct RootLock {
    _lock: nix::fcntl::Flock<File>,
}

impl RootLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(root: &Path) -> Result<Self, LockError> {
        create_private_dir(root)
            .map_err(|e| LockError::Io(format!("cannot create {}: {e}", root.display())))?;
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    Held { pid: Option<u32> },
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { pid: Some(pid) } => write!(
                f,
                "another kup apply or resume is already running (pid {pid})"
            ),
            LockError::Held { pid: None } => {
                f.write_str("another kup apply or resume is already running")
            }
            LockError::Io(message) => f.write_str(message),
        }
    }
}

/// The apply directory named by `<root>/pending`, if any.
pub fn pending(root: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(root.join(PENDING_FILE)).ok()?;
    let name = name.trim();
    (!name.is_empty() && !name.contains('/')).then(|| root.join(name))
}

/// The most recent apply directory under `root` (names sort by start time).
pub fn latest(root: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(JOURNAL_FILE).is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_688_400_000), "2026-11-26T10:20:00.000Z");
    }

    fn record(seq: u64) -> String {
        let r = Record {
            seq,
            unix_ms: 1,
            time: rfc3339(1),
            event: Event::StepStarted {
                step: "preflight".into(),
            },
        };
        serde_json::to_string(&r).unwrap() + "\n"
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_reported() {
        let text = record(1) + &record(2) + "{\"seq\":3,\"unix";
        let loaded = parse(&text).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.torn_tail.as_deref(), Some("{\"seq\":3,\"unix"));
        // A complete-looking last line without its newline was cut too: it is not trusted.
        let text = record(1) + record(2).trim_end();
        assert_eq!(parse(&text).unwrap().records.len(), 1);
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let text = record(1) + "garbage\n" + &record(3);
        assert!(parse(&text).unwrap_err().contains("line 2"));
    }

    #[test]
    fn open_truncates_a_torn_tail_and_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(JOURNAL_FILE),
            record(1) + &record(2) + "{\"se",
        )
        .unwrap();
        let (mut journal, loaded) = Journal::open(dir.path()).unwrap();
        assert!(loaded.torn_tail.is_some());
        let next = journal
            .append(Event::StepStarted {
                step: "sync".into(),
            })
            .unwrap();
        assert_eq!(next.seq, 3);
        let again = read(dir.path()).unwrap();
        assert_eq!(again.records.len(), 3);
        assert!(again.torn_tail.is_none());
    }

    #[test]
    fn the_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RootLock::acquire(dir.path()).unwrap();
        match RootLock::acquire(dir.path()) {
            Err(LockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected the lock to be held, got {other:?}"),
        }
    }
}
