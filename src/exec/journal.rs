//! The checkpoint journal: what an apply did, durable before the next thing happens, so that the plan can finish on
//! the new kernel — the kexec is a crash from kup's point of view — and an operator can see what happened.
//!
//! Layout under the journal root: `lock` (flock held for a whole apply or resume; holds the holder's pid),
//! `pending` (name of the apply directory that still has work; what the resume unit's `ConditionPathExists=` tests),
//! and one directory per apply with `plan.toml` (frozen copy), `plan.sha256` and `journal.jsonl` (one record per
//! line; a step's start durable before it runs, one `fdatasync` per scheduling round). Files are 0600, directories
//! 0700.

use crate::graph::StepId;
use crate::host::journal_files::{self, AppendLog};
pub(crate) use crate::host::journal_files::{LockError, RootLock, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub(crate) const JOURNAL_FILE: &str = "journal.jsonl";
pub(crate) const PLAN_FILE: &str = "plan.toml";
pub(crate) const PLAN_SHA_FILE: &str = "plan.sha256";
pub(crate) const PENDING_FILE: &str = "pending";
pub(crate) const LOCK_FILE: &str = "lock";
/// The `--metrics-textfile` path an apply was given, so that its resume on the new kernel writes there too.
pub(crate) const METRICS_FILE: &str = "metrics-textfile";

/// Test hook, compiled only with the `fault-injection` feature (never into a release binary): the process SIGKILLs
/// itself right after the record with this sequence number is durable — or, when the value is an event name such
/// as `kexec`, right after the first record of that event; `EVENT:STEP` (`step-done:vm:db-1:save`) right after that
/// event of that step. Fault injection tests use it to prove that `resume`
/// recovers from a crash at every point.
#[cfg(feature = "fault-injection")]
pub(crate) const CRASH_AFTER_RECORD_ENV: &str = "KUP_FAULT_CRASH_AFTER_RECORD";

/// How an apply runs, as recorded at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A real update: the kexec happens.
    Apply,
    /// Every step for real except the kexec, which is a no-op.
    Rehearse,
}

/// How an apply or resume ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalState {
    /// Every step ran.
    Completed,
    /// Something failed and was left as it is: policy `stop`, a failure after the point of no return, a failed
    /// rollback.
    Failed,
    /// A step failed before the kexec and every step done before it was undone.
    RolledBack,
}

/// One journal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The first record of an apply: what is being applied, where, and by whom.
    ApplyStarted {
        /// The plan's `name`; empty when it has none.
        plan: String,
        /// Where the plan was read from.
        plan_path: String,
        /// SHA-256 of the plan text, hex; the frozen copy (`plan.toml`) must match it.
        plan_sha256: String,
        /// Apply or rehearse.
        mode: Mode,
        /// Whether the new kernel is loaded (`false` for `--rehearse --no-kernel-load`).
        kernel_load: bool,
        /// `boot_id` of the kernel the apply started on.
        boot_id: String,
        /// `uname -r` of the kernel the apply started on.
        release: String,
        /// The host's name.
        hostname: String,
        /// Process id of the applying kup.
        pid: u32,
        /// The new kernel's command line as computed from the old kernel's /proc/cmdline: resume must not
        /// recompute it on the new kernel.
        kernel_cmdline: String,
    },
    /// A step began; without a matching end record it was interrupted.
    StepStarted {
        /// The step.
        step: StepId,
    },
    /// A step succeeded.
    StepDone {
        /// The step.
        step: StepId,
        /// How long it ran, in ms.
        duration_ms: u64,
        /// What each of its actions reported, in order (`null` for nothing): exit statuses, migrations, PCI devices,
        /// the kernel image's release.
        #[serde(default)]
        outputs: Vec<Value>,
    },
    /// A step failed.
    StepFailed {
        /// The step.
        step: StepId,
        /// How long it ran before failing, in ms.
        duration_ms: u64,
        /// Why it failed.
        error: String,
    },
    /// Rollback began after a failure before the point of no return.
    RollbackStarted {
        /// The failure that caused it.
        reason: String,
    },
    /// A step's rollback actions succeeded.
    StepRolledBack {
        /// The step undone.
        step: StepId,
    },
    /// A step's rollback actions failed; the host needs an operator.
    RollbackFailed {
        /// The step that could not be undone.
        step: StepId,
        /// Why.
        error: String,
    },
    /// Written, durable, just before the kexec is executed.
    Kexec {
        /// `boot_id` of the kernel being left; resume compares it with the running one to prove the kexec happened.
        boot_id: String,
        /// `uname -r` of the kernel being left.
        release: String,
        /// The command line the new kernel was loaded with.
        kernel_cmdline: String,
    },
    /// A resume began (on the new kernel, after a crash, or to retry).
    ResumeStarted {
        /// `boot_id` of the kernel resume runs on.
        boot_id: String,
        /// `uname -r` of the kernel resume runs on.
        release: String,
        /// Process id of the resuming kup.
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
    /// A kernel's boot phases (`kup boot-time`'s report): the old kernel's, recorded by apply at its start, and the
    /// new kernel's, recorded by the first resume after the kexec (after the `kexec` record).
    BootReport {
        /// The `kup boot-time` JSON report.
        report: Value,
    },
    /// The last record: the apply or resume ended.
    Finished {
        /// How it ended.
        state: FinalState,
        /// `every step done`, or why not.
        message: String,
    },
}

/// One line of `journal.jsonl`: an event with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1-based, one more than the previous record's.
    pub seq: u64,
    /// Wall-clock time: the monotonic clock restarts at the kexec.
    pub unix_ms: u64,
    /// `unix_ms` as RFC 3339 UTC, for people reading the file.
    pub time: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The wall clock in Unix ms: the same clock as the instants hosts put in action outputs, so they compare.
pub(crate) fn now_ms() -> u64 {
    crate::host::machine::unix_ms()
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
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    journal_files::create_private_dir(path)
}

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// "open", "read", "write", "drop the torn last line of".
        what: &'static str,
        /// The journal file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An earlier write or sync of this journal failed (a full disk): nothing more is written, so that the file
    /// stays a prefix of what happened — what a crash at that record would have left, which resume and abort
    /// handle — rather than a record missing between two others.
    #[error("cannot write {} since an earlier write failed: {first}", .path.display())]
    Stopped {
        /// The journal file.
        path: PathBuf,
        /// Why the first write failed.
        first: String,
    },
    /// A line other than the last does not parse: the file was edited or the disk is corrupt.
    #[error("journal line {line} is damaged: {reason}")]
    Damaged {
        /// 1-based.
        line: usize,
        /// serde's message.
        reason: String,
    },
}

/// What reading a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The complete records, in order.
    pub records: Vec<Record>,
    /// A last line cut short by a crash mid-write: dropped, and reported.
    pub(crate) torn_tail: Option<String>,
}

/// Parses journal text. Only the last line may be damaged (a crash mid-append); damage anywhere else is an error,
/// since it means the file was edited or the disk is corrupt. Public for the fuzz targets (fuzz/): it is what
/// [`read`] and `Journal::open` run on the file's text.
pub fn parse(text: &str) -> Result<Loaded, JournalError> {
    let mut records = Vec::new();
    let mut torn_tail = None;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Record>(line.trim_end()) {
            Ok(record) if complete => records.push(record),
            _ if last => torn_tail = Some(line.to_string()),
            Err(e) => {
                return Err(JournalError::Damaged {
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
            Ok(_) => unreachable!("an incomplete line is always the last"),
        }
    }
    Ok(Loaded { records, torn_tail })
}

/// An open journal, appended to record by record.
#[derive(Debug)]
pub(crate) struct Journal {
    log: AppendLog,
    next_seq: u64,
    /// The first failed write or sync: every later one is refused ([`JournalError::Stopped`]).
    failed: Option<String>,
    #[cfg(feature = "fault-injection")]
    crash_after: Option<String>,
}

impl Journal {
    /// Creates `dir` with an empty journal.
    pub(crate) fn create(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let log = AppendLog::create(&dir.join(JOURNAL_FILE))?;
        Ok(Self::with_log(log, 1))
    }

    fn with_log(log: AppendLog, next_seq: u64) -> Self {
        Self {
            log,
            next_seq,
            failed: None,
            #[cfg(feature = "fault-injection")]
            crash_after: crate::host::machine::env(CRASH_AFTER_RECORD_ENV),
        }
    }

    /// Opens an existing journal for appending, dropping a torn last line first.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Loaded), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let io = |what, source| JournalError::Io {
            what,
            path: path.clone(),
            source,
        };
        let (mut log, text) = AppendLog::open(&path).map_err(|e| io("open", e))?;
        let loaded = parse(&text)?;
        if let Some(tail) = &loaded.torn_tail {
            let keep = (text.len() - tail.len()) as u64;
            log.truncate(keep)
                .map_err(|e| io("drop the torn last line of", e))?;
        }
        let next_seq = loaded.records.last().map_or(1, |r| r.seq + 1);
        Ok((Self::with_log(log, next_seq), loaded))
    }

    /// Appends one record and makes it durable before returning.
    pub(crate) fn append(&mut self, event: Event) -> Result<Record, JournalError> {
        let record = self.write(event)?;
        self.sync()?;
        Ok(record)
    }

    /// Appends one record, durable once [`Journal::sync`] returns: the engine writes all the records of a
    /// scheduling round, then makes them durable with one `fdatasync` before it starts the round's steps.
    pub(crate) fn write(&mut self, event: Event) -> Result<Record, JournalError> {
        self.refuse_after_failure()?;
        let unix_ms = now_ms();
        let record = Record {
            seq: self.next_seq,
            unix_ms,
            time: rfc3339(unix_ms),
            event,
        };
        let mut line = serde_json::to_string(&record).map_err(|e| JournalError::Io {
            what: "write",
            path: self.log.path().to_owned(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let written = self.log.write(line.as_bytes());
        self.check(written)?;
        self.next_seq += 1;
        // The crash comes right after this record is durable, before any later record of its batch is written.
        #[cfg(feature = "fault-injection")]
        if self.crash_after.as_ref().is_some_and(|at| {
            *at == record.seq.to_string()
                || serde_json::to_value(&record.event).is_ok_and(|v| {
                    v["event"] == at.as_str()
                        || v["step"]
                            .as_str()
                            .zip(v["event"].as_str())
                            .is_some_and(|(step, event)| *at == format!("{event}:{step}"))
                })
        }) {
            self.sync()?;
            crate::host::machine::crash_now();
        }
        Ok(record)
    }

    /// Makes every record written so far durable.
    pub(crate) fn sync(&mut self) -> Result<(), JournalError> {
        self.refuse_after_failure()?;
        let synced = self.log.sync();
        self.check(synced)
    }

    fn refuse_after_failure(&self) -> Result<(), JournalError> {
        match &self.failed {
            Some(first) => Err(JournalError::Stopped {
                path: self.log.path().to_owned(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A write's or sync's result; a failure stops the journal.
    fn check(&mut self, result: std::io::Result<()>) -> Result<(), JournalError> {
        result.map_err(|source| {
            self.failed = Some(source.to_string());
            JournalError::Io {
                what: "write",
                path: self.log.path().to_owned(),
                source,
            }
        })
    }
}

/// What the engine needs of a journal: records written, then made durable together. A trait so that the engine's
/// unit tests can see the order of writes, syncs and actions.
pub(crate) trait Recorder: Send {
    /// Appends a record, durable at the next [`Recorder::sync`].
    fn write(&mut self, event: Event) -> Result<(), JournalError>;
    /// Makes every record written so far durable.
    fn sync(&mut self) -> Result<(), JournalError>;
    /// Appends a record and makes it durable.
    fn append(&mut self, event: Event) -> Result<(), JournalError> {
        self.write(event)?;
        self.sync()
    }
}

impl Recorder for Journal {
    fn write(&mut self, event: Event) -> Result<(), JournalError> {
        Journal::write(self, event).map(drop)
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        Journal::sync(self)
    }
}

/// Reads a journal directory's records (read-only; a torn tail is reported, not repaired).
pub fn read(dir: &Path) -> Result<Loaded, JournalError> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = journal_files::read_bytes(&path).map_err(|source| JournalError::Io {
        what: "read",
        path: path.clone(),
        source,
    })?;
    parse(&String::from_utf8_lossy(&bytes))
}

/// Takes the exclusive lock on a journal root, or says who holds it.
pub(crate) fn lock(root: &Path) -> Result<RootLock, LockError> {
    RootLock::acquire(root, LOCK_FILE)
}

/// What an apply's first record says about how to run it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started<'a> {
    /// The plan file as applied.
    pub(crate) plan_path: &'a str,
    /// The new kernel's command line, computed from the old kernel's.
    pub(crate) kernel_cmdline: &'a str,
    /// Apply or rehearse.
    pub(crate) mode: Mode,
    /// Whether a rehearsal loads the kernel.
    pub(crate) kernel_load: bool,
}

/// The apply record that starts `records`, if it does.
pub(crate) fn started(records: &[Record]) -> Option<Started<'_>> {
    records.first().and_then(|r| match &r.event {
        Event::ApplyStarted {
            plan_path,
            kernel_cmdline,
            mode,
            kernel_load,
            ..
        } => Some(Started {
            plan_path,
            kernel_cmdline,
            mode: *mode,
            kernel_load: *kernel_load,
        }),
        _ => None,
    })
}

/// Whether the journal already holds the new kernel's boot report: one recorded after the kexec record.
pub fn has_new_kernel_boot_report(records: &[Record]) -> bool {
    records
        .iter()
        .skip_while(|r| !matches!(r.event, Event::Kexec { .. }))
        .any(|r| matches!(r.event, Event::BootReport { .. }))
}

/// Marks `dir` as the apply with work left (what the resume unit's `ConditionPathExists=` tests).
pub(crate) fn set_pending(root: &Path, dir: &Path) -> std::io::Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_atomic(&root.join(PENDING_FILE), format!("{name}\n").as_bytes())
}

/// Clears the pending mark once nothing is left to do.
pub(crate) fn clear_pending(root: &Path) {
    journal_files::remove_durably(&root.join(PENDING_FILE));
}

/// The frozen plan of an apply directory and its digest, checked against the recorded one.
pub(crate) fn frozen_plan(dir: &Path) -> Result<(Vec<u8>, String), FrozenPlanError> {
    let bytes = journal_files::read_bytes(&dir.join(PLAN_FILE)).map_err(FrozenPlanError::Plan)?;
    let recorded =
        journal_files::read_bytes(&dir.join(PLAN_SHA_FILE)).map_err(FrozenPlanError::Digest)?;
    let recorded = String::from_utf8_lossy(&recorded).trim().to_owned();
    let actual = crate::kernel_image::Sha256Digest::of(&bytes).to_string();
    if recorded != actual {
        return Err(FrozenPlanError::Changed {
            dir: dir.to_owned(),
            recorded,
            actual,
        });
    }
    Ok((bytes, actual))
}

/// Why an apply's frozen plan cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrozenPlanError {
    /// `plan.toml` is unreadable.
    #[error("cannot read the frozen plan: {0}")]
    Plan(std::io::Error),
    /// `plan.sha256` is unreadable.
    #[error("cannot read the frozen plan's digest: {0}")]
    Digest(std::io::Error),
    /// The plan no longer has the digest recorded when the apply started.
    #[error(
        "the frozen plan in {} does not match its recorded sha256 (recorded {recorded}, now {actual}): it was \
         changed after the apply started",
        .dir.display()
    )]
    Changed {
        /// The apply directory.
        dir: PathBuf,
        /// The digest recorded at the start.
        recorded: String,
        /// The digest now.
        actual: String,
    },
}

/// The apply directory named by `<root>/pending`, if any.
pub(crate) fn pending(root: &Path) -> Option<PathBuf> {
    let name = journal_files::read_text(&root.join(PENDING_FILE))?;
    let name = name.trim();
    (!name.is_empty() && !name.contains('/')).then(|| root.join(name))
}

/// The most recent apply directory under `root` (names sort by start time).
pub(crate) fn latest(root: &Path) -> Option<PathBuf> {
    journal_files::dirs_holding(root, JOURNAL_FILE).pop()
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
                step: StepId::Preflight,
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

    /// The journal fuzz target's seeds (fuzz/corpus/journal) must stay journals this version reads: a seed that no
    /// longer parses would leave the fuzzer mutating garbage.
    #[test]
    fn the_fuzz_seeds_are_journals_this_version_reads() {
        let completed = parse(include_str!(
            "../../fuzz/corpus/journal/rehearse-completed.jsonl"
        ))
        .unwrap();
        assert_eq!(completed.records.len(), 12);
        assert!(completed.torn_tail.is_none());
        let rolled_back =
            parse(include_str!("../../fuzz/corpus/journal/rolled-back.jsonl")).unwrap();
        assert_eq!(rolled_back.records.len(), 7);
        assert!(rolled_back.torn_tail.is_some());
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let text = record(1) + "garbage\n" + &record(3);
        assert!(parse(&text).unwrap_err().to_string().contains("line 2"));
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
            .append(Event::StepStarted { step: StepId::Sync })
            .unwrap();
        assert_eq!(next.seq, 3);
        let again = read(dir.path()).unwrap();
        assert_eq!(again.records.len(), 3);
        assert!(again.torn_tail.is_none());
    }
}
