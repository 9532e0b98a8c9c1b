//! Reads the step durations earlier applies measured out of journal roots (`--history DIR`), for the graph's
//! estimate: the journals are `exec`'s, the figures become plain [`crate::graph::History`] data.

use super::journal::{self, Event, JOURNAL_FILE, Mode, Record};
use crate::graph::{History, PastApply, StepId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// A root given is not a directory holding applies.
    #[error("{}: not a journal root (a directory of apply directories): {source}", .root.display())]
    Root {
        /// The root as given.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A root given is one apply's directory.
    #[error(
        "{}: this is one apply's directory; --history takes journal roots (its parent, {})",
        .0.display(),
        .0.parent().unwrap_or(Path::new("/")).display()
    )]
    ApplyDir(PathBuf),
}

/// What reading the roots gave: the history, and the applies that could not be read (a damaged journal does not
/// hide the others; the caller says which were left out).
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) history: History,
    pub(crate) skipped: Vec<String>,
}

/// Every apply under the journal roots `roots`, oldest first across them (by the wall-clock time of their first
/// record), as one history.
pub(crate) fn read(roots: &[PathBuf]) -> Result<Read, HistoryError> {
    let mut applies = Vec::new();
    let mut skipped = Vec::new();
    for root in roots {
        if is_apply_dir(root) {
            return Err(HistoryError::ApplyDir(root.clone()));
        }
        if let Err(source) = crate::host::journal_files::list_dir(root) {
            return Err(HistoryError::Root {
                root: root.clone(),
                source,
            });
        }
        for dir in crate::host::journal_files::dirs_holding(root, JOURNAL_FILE) {
            match journal::read(&dir) {
                Ok(loaded) => applies.extend(past_apply(&loaded.records)),
                Err(e) => skipped.push(format!("{}: {e}", dir.display())),
            }
        }
    }
    applies.sort_by_key(|(started, _)| *started);
    let mut history = History::default();
    for (_, apply) in applies {
        history.add(apply);
    }
    Ok(Read { history, skipped })
}

/// The steps one journal measured, with the wall-clock time the apply started. A step's `step-done` duration is
/// its measured time, except where that figure says nothing about a real apply:
/// - the kexec: its `step-done` is written on the new kernel with no duration. A real apply's kexec takes from
///   the `kexec` record to the first resume on the new kernel (the old kernel's shutdown, the boot, the units
///   before kup's — what [`crate::graph::cost::KEXEC`] estimates); a rehearsal's is a no-op and is not counted;
/// - in a rehearsal, live-patch steps (not loaded for real) and, with `--no-kernel-load`, the kernel load.
///
/// A step run again by a resume counts its last run.
pub(crate) fn past_apply(records: &[Record]) -> Option<(u64, PastApply)> {
    let first = records.first()?;
    let Event::ApplyStarted {
        plan,
        hostname,
        mode,
        kernel_load,
        ..
    } = &first.event
    else {
        return None;
    };
    let rehearsal = *mode == Mode::Rehearse;
    let counts = |step: &StepId| match step {
        StepId::Kexec => false,
        StepId::LivepatchLoad { .. }
        | StepId::LivepatchTransition { .. }
        | StepId::LivepatchRemove { .. } => !rehearsal,
        StepId::KernelLoad => !rehearsal || *kernel_load,
        _ => true,
    };
    let mut steps: Vec<(StepId, Duration)> = Vec::new();
    let mut kexec_at = None;
    for record in records {
        match &record.event {
            Event::StepDone {
                step, duration_ms, ..
            } if counts(step) => {
                steps.retain(|(s, _)| s != step);
                steps.push((step.clone(), Duration::from_millis(*duration_ms)));
            }
            Event::Kexec { .. } if !rehearsal => kexec_at = Some(record.unix_ms),
            Event::ResumeStarted {
                rebooted: true,
                on_new_kernel: true,
                ..
            } => {
                if let Some(at) = kexec_at.take() {
                    let gap = record.unix_ms.saturating_sub(at);
                    steps.push((StepId::Kexec, Duration::from_millis(gap)));
                }
            }
            _ => {}
        }
    }
    Some((
        first.unix_ms,
        PastApply {
            plan: plan.clone(),
            host: hostname.clone(),
            steps,
        },
    ))
}

/// Whether `dir` looks like a single apply directory rather than a root: the mistake `--history` most invites.
fn is_apply_dir(dir: &Path) -> bool {
    dir.join(JOURNAL_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::blackout::fixtures::{Journal, kexec_of_one_guest};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn measured(records: &[Record]) -> Vec<(String, Duration)> {
        let (_, apply) = past_apply(records).unwrap();
        apply
            .steps
            .into_iter()
            .map(|(s, d)| (s.to_string(), d))
            .collect()
    }

    #[test]
    fn a_real_applys_kexec_is_measured_from_its_record_to_the_resume_on_the_new_kernel() {
        let j = kexec_of_one_guest(Some(4_300), None);
        let (started, apply) = past_apply(&j.records).unwrap();
        assert_eq!(
            (started, apply.plan.as_str(), apply.host.as_str()),
            (1_000, "p", "h")
        );
        assert_eq!(
            measured(&j.records),
            [
                ("vm:db-1:pause".to_owned(), ms(4)),
                ("vm:db-1:save".into(), ms(95)),
                // kexec record at 3 001, first resume at 7 501; the step-done with no duration is not counted.
                ("kexec".into(), ms(4_500)),
                ("vm:db-1:restore".into(), ms(390)),
                ("vm:db-1:resume".into(), ms(53)),
            ]
        );
    }

    #[test]
    fn a_rehearsals_kexec_and_skipped_kernel_load_are_not_measured() {
        let mut j = Journal::new(Mode::Rehearse, 1_000);
        if let Event::ApplyStarted { kernel_load, .. } = &mut j.records[0].event {
            *kernel_load = false;
        }
        j.started(1_001, "kernel:load")
            .done(1_002, "kernel:load", vec![])
            .pause_and_save("db-1", 2_000, 2_003, 2_100)
            .kexec(3_001)
            .done(3_002, "kexec", vec![])
            // Run again by a resume: the last run counts.
            .started(3_100, "vm:db-1:save")
            .done(3_150, "vm:db-1:save", vec![]);
        assert_eq!(
            measured(&j.records),
            [
                ("vm:db-1:pause".to_owned(), ms(4)),
                ("vm:db-1:save".into(), ms(50))
            ]
        );
    }

    #[test]
    fn a_journal_without_its_apply_record_measures_nothing() {
        let mut j = kexec_of_one_guest(None, None);
        j.records.remove(0);
        assert!(past_apply(&j.records).is_none());
    }
}
