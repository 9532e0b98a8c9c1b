//! Undoing a run before the point of no return — after a failure, after a journal that can no longer be written,
//! and for `kup plan abort` — and ending a run's journal. An undo goes on when its records cannot be written: a
//! guest left paused because the journal's disk is full would be the worse outcome; the operator is told what the
//! journal lacks and what to run once it can be written again.

use super::Outcome;
use super::abort::Undo;
use super::engine::Engine;
use super::journal::{Event, FinalState, JournalError, Recorder};
use crate::action::ActionOutput;
use crate::graph::StepId;
use crate::host::Host;
use crate::plan::OnFailure;

/// A rollback's records: written until one fails, then no more (the journal stays a prefix of what happened,
/// as a crash would leave it), the undo going on regardless.
struct Unrecorded<'j> {
    journal: &'j mut dyn Recorder,
    lost: Option<JournalError>,
}

impl Unrecorded<'_> {
    fn append(&mut self, event: Event) {
        if self.lost.is_none()
            && let Err(e) = self.journal.append(event)
        {
            self.lost = Some(e);
        }
    }
}

/// What an undo's actions moved aside, for the operator: a failed save's partial state file, which still takes
/// its space (after ENOSPC, the disk stays full until it is deleted).
fn kept_aside(step: &StepId, outputs: &[ActionOutput]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ActionOutput::KeptAside {
                kept_aside: Some(path),
                bytes,
            } => Some(format!(
                "what {step} wrote is kept aside as {} ({:.1} MiB): an incomplete state that no restore reads; it \
                 still takes that space (a full disk stays full): delete it once you have looked at it",
                path.display(),
                bytes.unwrap_or(0) as f64 / f64::from(1 << 20)
            )),
            _ => None,
        })
        .collect()
}

/// `outcome` with the journal's failure `error` said: what it lacks, and what to run once it can be written.
/// `past_kexec`: whether the run had gone past the point of no return (then it can only go forward).
pub(super) fn unrecorded(outcome: Outcome, error: &JournalError, past_kexec: bool) -> Outcome {
    let what = match outcome {
        Outcome::Completed => "every step done".to_owned(),
        Outcome::RolledBack { reason } | Outcome::Failed { reason } => reason,
    };
    let then = if past_kexec {
        "once its file system has room again, run `kup plan resume` to finish"
    } else {
        "once its file system has room again, run `kup plan abort` to record the rollback (it runs again the \
         undos the journal lacks: kup's own are harmless to repeat, a custom step's `undo` must be too)"
    };
    Outcome::Failed {
        reason: format!("{what}; the journal cannot be written ({error}): {then}"),
    }
}

/// The record that ends a run's journal.
fn finished(outcome: &Outcome) -> Event {
    let (state, message) = match outcome {
        Outcome::Completed => (FinalState::Completed, "every step done".to_owned()),
        Outcome::RolledBack { reason } => (FinalState::RolledBack, reason.clone()),
        Outcome::Failed { reason } => (FinalState::Failed, reason.clone()),
    };
    Event::Finished { state, message }
}

impl<H: Host> Engine<'_, H> {
    /// Ends the journal with `outcome`, unless a record was `lost` already; a journal that could not be written
    /// turns the outcome into a failure that says so.
    pub(super) fn finish(
        &self,
        journal: &mut dyn Recorder,
        outcome: Outcome,
        lost: Option<JournalError>,
        past_kexec: bool,
    ) -> Outcome {
        let lost = lost.or_else(|| journal.append(finished(&outcome)).err());
        match lost {
            Some(e) => unrecorded(outcome, &e, past_kexec),
            None => outcome,
        }
    }

    /// A run whose journal could not be written: before the kexec everything done is undone (a step that
    /// failed meanwhile first), as after a failed step; past it, nothing more runs, and the state files of the
    /// guests not yet restored stay (only `verify` removes them).
    /// `failure`: what failed meanwhile, which the journal may not have recorded.
    pub(super) fn journal_failed(
        &self,
        journal: &mut dyn Recorder,
        (completed, failed): (&[usize], &[usize]),
        (error, failure): (JournalError, Option<String>),
        past_kexec: bool,
    ) -> (Outcome, Option<JournalError>) {
        let stopped = match failure {
            Some(failure) => format!("{failure}; kup stopped rather than go on without a journal"),
            None => "kup stopped rather than go on without a journal".to_owned(),
        };
        if past_kexec {
            let reason = format!(
                "{stopped}; nothing is lost: every guest not restored yet keeps its state file (only `verify`, \
                 once every guest runs, removes them)"
            );
            return (Outcome::Failed { reason }, Some(error));
        }
        let (outcome, _) = match self.options.on_failure {
            OnFailure::Rollback => self.rollback(journal, completed, failed, &stopped),
            OnFailure::Stop => (
                Outcome::Failed {
                    reason: format!("{stopped}; policy.on_failure = \"stop\": nothing was undone"),
                },
                None,
            ),
        };
        (outcome, Some(error))
    }

    /// `kup plan abort`: undoes what `undo` names of an apply that died before the point of no return, journalled
    /// like a rollback, and ends the journal `rolled-back` (or `failed` when an undo failed).
    pub(crate) fn abort(&self, journal: &mut dyn Recorder, undo: &Undo) -> Outcome {
        let find = |ids: &[StepId]| -> Vec<usize> {
            ids.iter()
                .filter_map(|id| self.program.steps.iter().position(|s| &s.id == id))
                .collect()
        };
        let (outcome, lost) = self.rollback(
            journal,
            &find(&undo.completed),
            &find(&undo.interrupted),
            "aborted by the operator (kup plan abort) before the kexec",
        );
        self.finish(journal, outcome, lost, false)
    }

    /// Undoes the `failed` steps, which may have done part of their work (a VM paused, then its save failed), then
    /// `completed` steps in reverse; undoing a half-done step may itself fail, which is recorded but does not make
    /// the rollback incomplete. Every undo runs even when its record cannot be written (the first such failure is
    /// returned).
    pub(super) fn rollback(
        &self,
        journal: &mut dyn Recorder,
        completed: &[usize],
        failed: &[usize],
        reason: &str,
    ) -> (Outcome, Option<JournalError>) {
        let mut records = Unrecorded {
            journal,
            lost: None,
        };
        records.append(Event::RollbackStarted {
            reason: reason.to_owned(),
        });
        self.progress.note(&format!("rolling back: {reason}"));
        let mut problems = Vec::new();
        let mut kept = Vec::new();
        for i in failed
            .iter()
            .copied()
            .chain(completed.iter().rev().copied())
        {
            let step = &self.program.steps[i];
            if step.rollback.is_empty() {
                continue;
            }
            let (outputs, event) = match self.perform(&step.rollback) {
                Ok(outputs) => {
                    self.progress.note(&format!("undone {}", step.id));
                    let event = Event::StepRolledBack {
                        step: step.id.clone(),
                    };
                    (outputs, event)
                }
                Err(f) => {
                    self.progress
                        .note(&format!("UNDO FAILED {}: {}", step.id, f.message));
                    if !failed.contains(&i) {
                        problems.push(format!("{}: {}", step.id, f.message));
                    }
                    let event = Event::RollbackFailed {
                        step: step.id.clone(),
                        error: f.message,
                    };
                    (f.done, event)
                }
            };
            for note in kept_aside(&step.id, &outputs) {
                self.progress.note(&note);
                kept.push(note);
            }
            records.append(event);
        }
        let mut reason = reason.to_owned();
        for note in kept {
            reason = format!("{reason}; {note}");
        }
        let outcome = if problems.is_empty() {
            Outcome::RolledBack { reason }
        } else {
            Outcome::Failed {
                reason: format!(
                    "{reason}; rollback incomplete, check by hand: {}; once what stopped them is fixed (a wedged \
                     QEMU answering again), `kup plan abort` runs those undos again",
                    problems.join("; ")
                ),
            }
        };
        (outcome, records.lost)
    }
}
