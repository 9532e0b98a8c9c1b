//! The engine proper: runs a compiled plan's steps on a [`Host`] in dependency order with bounded parallelism,
//! journals every step before and after it runs, and rolls back on a failure before the point of no return.

use super::abort::Undo;
use super::journal::{Event, FinalState, Journal, Mode};
use super::rehearsal::Rehearsal;
use super::{EngineError, Options, Outcome, progress};
use crate::action::{Action, ActionFailure, ActionOutput};
use crate::graph::schedule::millis as ms;
use crate::graph::{CompiledStep, Phase, Program, StepId};
use crate::host::{Host, HostError};
use crate::plan::OnFailure;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// Why a step failed, as its `step-failed` record says.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// One of its actions failed (the message names which).
    #[error("{0}")]
    Action(String),
    /// The engine could not go on (the journal, the kexec record).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// An action's output as the journal keeps it.
fn journal_output(output: &ActionOutput) -> serde_json::Value {
    serde_json::to_value(output).unwrap_or(serde_json::Value::Null)
}

/// What a run has found so far.
struct Tally {
    /// Each step's state, by program index.
    state: Vec<State>,
    /// Before-phase steps in completion order (rollback undoes them in reverse).
    completed_before: Vec<usize>,
    /// The first step that failed before the kexec, and why.
    first_failure: Option<(usize, String)>,
    /// Steps that failed after the kexec ("id: why").
    after_failures: Vec<String>,
    /// A record that could not be written: the run stops.
    journal_error: Option<EngineError>,
}

/// The state of one step during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
}

/// Runs one program; see the module documentation.
pub(crate) struct Engine<'a, H: Host> {
    /// Where the actions are performed.
    pub(crate) host: &'a H,
    /// What to run.
    pub(crate) program: &'a Program,
    /// How to run it.
    pub(crate) options: Options,
    /// Runs just before the kexec executes, after its journal record is durable (installs the resume unit).
    pub(crate) before_kexec: &'a (dyn Fn() -> Result<(), HostError> + Sync),
    /// Where progress goes.
    pub(crate) progress: &'a progress::Progress,
}

impl<H: Host> Engine<'_, H> {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        match self.options.mode {
            Mode::Apply => self.host.perform(actions),
            Mode::Rehearse => Rehearsal {
                inner: self.host,
                kernel_load: self.options.kernel_load,
            }
            .perform(actions),
        }
    }

    fn describe(step: &CompiledStep, failure: &ActionFailure) -> String {
        match step.actions.get(failure.index) {
            Some(action) => format!(
                "{} [action {} of {}: {}]",
                failure.message,
                failure.index + 1,
                step.actions.len(),
                action.describe()
            ),
            None => failure.message.clone(),
        }
    }

    /// Runs every step not in `done`, journaling as it goes, and finishes the journal with the outcome.
    pub(crate) fn run(
        &self,
        journal: &mut Journal,
        done: &BTreeSet<StepId>,
    ) -> Result<Outcome, EngineError> {
        let steps = &self.program.steps;
        let index: BTreeMap<&StepId, usize> =
            steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
        let state: Vec<State> = steps
            .iter()
            .map(|s| {
                if done.contains(&s.id) {
                    State::Done
                } else {
                    State::Pending
                }
            })
            .collect();
        let mut tally = Tally {
            // Completion order of before-phase steps: rollback undoes them in reverse.
            completed_before: steps
                .iter()
                .enumerate()
                .filter(|(i, s)| state[*i] == State::Done && s.phase == Phase::Before)
                .map(|(i, _)| i)
                .collect(),
            state,
            first_failure: None,
            after_failures: Vec::new(),
            journal_error: None,
        };
        let journal = Mutex::new(journal);
        let record = |event: Event| -> Result<(), EngineError> {
            let mut j = journal.lock().map_err(|_| EngineError::Poisoned)?;
            j.append(event).map(drop).map_err(EngineError::Journal)
        };
        self.schedule(&index, &mut tally, &record);
        let journal = journal.into_inner().map_err(|_| EngineError::Poisoned)?;
        if let Some(e) = tally.journal_error.take() {
            return Err(e);
        }
        let outcome = self.conclude(journal, &index, &tally)?;
        let (final_state, message) = match &outcome {
            Outcome::Completed => (FinalState::Completed, "every step done".to_owned()),
            Outcome::RolledBack { reason } => (FinalState::RolledBack, reason.clone()),
            Outcome::Failed { reason } => (FinalState::Failed, reason.clone()),
        };
        journal
            .append(Event::Finished {
                state: final_state,
                message,
            })
            .map_err(EngineError::Journal)?;
        Ok(outcome)
    }

    /// Launches every ready step (at most `parallelism` at once, the kexec alone) on its own thread, and records
    /// each as it ends, until nothing more can run: all done, or a failure or an interrupt stopped the launches.
    fn schedule(
        &self,
        index: &BTreeMap<&StepId, usize>,
        tally: &mut Tally,
        record: &(dyn Fn(Event) -> Result<(), EngineError> + Sync),
    ) {
        let steps = &self.program.steps;
        let parallelism = self.options.parallelism.max(1);
        std::thread::scope(|scope| {
            let (tx, rx) =
                mpsc::channel::<(usize, Duration, Result<Vec<ActionOutput>, StepError>)>();
            let mut running = 0usize;
            loop {
                let stop = tally.first_failure.is_some()
                    || tally.journal_error.is_some()
                    || self.options.interrupted.load(Ordering::SeqCst);
                for (i, step) in steps.iter().enumerate() {
                    if stop || running >= parallelism {
                        break;
                    }
                    let ready = tally.state[i] == State::Pending
                        && step
                            .after
                            .iter()
                            .all(|d| index.get(d).is_none_or(|&j| tally.state[j] == State::Done));
                    // The kexec runs alone: nothing may be mid-flight when the host goes down.
                    let alone = step.phase != Phase::Kexec || running == 0;
                    if !ready || !alone {
                        continue;
                    }
                    if let Err(e) = record(Event::StepStarted {
                        step: step.id.clone(),
                    }) {
                        tally.journal_error = Some(e);
                        break;
                    }
                    tally.state[i] = State::Running;
                    running += 1;
                    self.progress.start(&step.id.to_string());
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let t0 = Instant::now();
                        let result = if step.phase == Phase::Kexec {
                            self.kexec(step, record)
                        } else {
                            self.perform(&step.actions)
                                .map_err(|f| StepError::Action(Self::describe(step, &f)))
                        };
                        let _ = tx.send((i, t0.elapsed(), result));
                    });
                    if step.phase == Phase::Kexec {
                        break;
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok((i, took, result)) = rx.recv() else {
                    break;
                };
                running -= 1;
                self.ended(i, took, result, tally, record);
            }
        });
    }

    /// Records how step `i` ended.
    fn ended(
        &self,
        i: usize,
        took: Duration,
        result: Result<Vec<ActionOutput>, StepError>,
        tally: &mut Tally,
        record: &(dyn Fn(Event) -> Result<(), EngineError> + Sync),
    ) {
        let step = &self.program.steps[i];
        let written = match result {
            Ok(outputs) => {
                tally.state[i] = State::Done;
                if step.phase == Phase::Before {
                    tally.completed_before.push(i);
                }
                self.progress.done(&step.id.to_string(), took);
                record(Event::StepDone {
                    step: step.id.clone(),
                    duration_ms: ms(took),
                    outputs: outputs.iter().map(journal_output).collect(),
                })
            }
            Err(error) => {
                let error = error.to_string();
                tally.state[i] = State::Failed;
                self.progress.failed(&step.id.to_string(), &error);
                let written = record(Event::StepFailed {
                    step: step.id.clone(),
                    duration_ms: ms(took),
                    error: error.clone(),
                });
                if step.phase == Phase::After {
                    tally.after_failures.push(format!("{}: {error}", step.id));
                } else if tally.first_failure.is_none() {
                    tally.first_failure = Some((i, error));
                }
                written
            }
        };
        if let Err(e) = written {
            tally.journal_error = Some(e);
        }
    }

    /// What the run's tally means: roll back (or stop) after a failure before the kexec, report failures after it,
    /// or complete.
    fn conclude(
        &self,
        journal: &mut Journal,
        index: &BTreeMap<&StepId, usize>,
        tally: &Tally,
    ) -> Result<Outcome, EngineError> {
        let interrupted = self.options.interrupted.load(Ordering::SeqCst);
        let kexec_done = index
            .get(&StepId::Kexec)
            .is_none_or(|&k| tally.state[k] == State::Done);
        let reason = match (&tally.first_failure, interrupted && !kexec_done) {
            (Some((i, error)), _) => Some(format!(
                "step {} failed: {error}",
                self.program.steps[*i].id
            )),
            (None, true) => Some("interrupted (Ctrl-C) before the kexec".to_owned()),
            (None, false) => None,
        };
        Ok(if let Some(reason) = reason {
            match self.options.on_failure {
                OnFailure::Rollback => {
                    let failed: Vec<usize> = tally.first_failure.iter().map(|(i, _)| *i).collect();
                    self.rollback(journal, &tally.completed_before, &failed, &reason)?
                }
                OnFailure::Stop => Outcome::Failed {
                    reason: format!("{reason}; policy.on_failure = \"stop\": nothing was undone"),
                },
            }
        } else if !tally.after_failures.is_empty() {
            Outcome::Failed {
                reason: format!(
                    "after the kexec: {}; the steps that depend on them did not run — fix the cause and run `kup plan resume` to retry",
                    tally.after_failures.join("; ")
                ),
            }
        } else if tally.state.iter().any(|s| *s != State::Done) {
            Outcome::Failed {
                reason: "interrupted (Ctrl-C) after the kexec; run `kup plan resume` to finish"
                    .to_owned(),
            }
        } else if let Some(reason) = &self.options.update_failed {
            Outcome::Failed {
                reason: reason.clone(),
            }
        } else {
            Outcome::Completed
        })
    }

    /// The point of no return: the record first (durable), then the resume hook, then the kexec itself.
    fn kexec(
        &self,
        step: &CompiledStep,
        record: &(dyn Fn(Event) -> Result<(), EngineError> + Sync),
    ) -> Result<Vec<ActionOutput>, StepError> {
        // The step's actions up to the reboot (its sync) run before the record: what the journal calls done must be
        // on disk before the record that says the kexec is under way.
        let split = step
            .actions
            .iter()
            .position(|a| matches!(a, Action::Reboot(_)))
            .unwrap_or(step.actions.len());
        let (before, reboot) = step.actions.split_at(split);
        let mut outputs = self
            .perform(before)
            .map_err(|f| StepError::Action(Self::describe(step, &f)))?;
        let identity = self.host.identity().map_err(EngineError::Host)?;
        record(Event::Kexec {
            boot_id: identity.boot_id,
            release: identity.release,
            kernel_cmdline: self.program.kernel_cmdline.clone(),
        })?;
        self.progress.note(
            "kexec record durable in the journal; executing the kexec (the point of no return)",
        );
        if self.options.mode == Mode::Apply {
            (self.before_kexec)().map_err(EngineError::Host)?;
        }
        let rest = self.perform(reboot).map_err(|f| {
            let f = ActionFailure {
                index: f.index + before.len(),
                message: f.message,
            };
            StepError::Action(Self::describe(step, &f))
        })?;
        outputs.extend(rest);
        Ok(outputs)
    }

    /// `kup plan abort`: undoes what `undo` names of an apply that died before the point of no return, journalled
    /// like a rollback, and ends the journal `rolled-back` (or `failed` when an undo failed).
    pub(crate) fn abort(&self, journal: &mut Journal, undo: &Undo) -> Result<Outcome, EngineError> {
        let find = |ids: &[StepId]| -> Vec<usize> {
            ids.iter()
                .filter_map(|id| self.program.steps.iter().position(|s| &s.id == id))
                .collect()
        };
        let outcome = self.rollback(
            journal,
            &find(&undo.completed),
            &find(&undo.interrupted),
            "aborted by the operator (kup plan abort) before the kexec",
        )?;
        let (state, message) = match &outcome {
            Outcome::RolledBack { reason } => (FinalState::RolledBack, reason.clone()),
            Outcome::Failed { reason } => (FinalState::Failed, reason.clone()),
            Outcome::Completed => (FinalState::Completed, String::new()),
        };
        journal
            .append(Event::Finished { state, message })
            .map_err(EngineError::Journal)?;
        Ok(outcome)
    }

    /// Undoes the `failed` steps, which may have done part of their work (a VM paused, then its save failed), then
    /// `completed` steps in reverse; undoing a half-done step may itself fail, which is recorded but does not make
    /// the rollback incomplete.
    fn rollback(
        &self,
        journal: &mut Journal,
        completed: &[usize],
        failed: &[usize],
        reason: &str,
    ) -> Result<Outcome, EngineError> {
        let write = |journal: &mut Journal, event| {
            journal
                .append(event)
                .map(drop)
                .map_err(EngineError::Journal)
        };
        write(
            journal,
            Event::RollbackStarted {
                reason: reason.to_owned(),
            },
        )?;
        self.progress.note(&format!("rolling back: {reason}"));
        let mut problems = Vec::new();
        for i in failed
            .iter()
            .copied()
            .chain(completed.iter().rev().copied())
        {
            let step = &self.program.steps[i];
            if step.rollback.is_empty() {
                continue;
            }
            match self.perform(&step.rollback) {
                Ok(_) => {
                    self.progress.note(&format!("undone {}", step.id));
                    write(
                        journal,
                        Event::StepRolledBack {
                            step: step.id.clone(),
                        },
                    )?;
                }
                Err(f) => {
                    self.progress
                        .note(&format!("UNDO FAILED {}: {}", step.id, f.message));
                    if !failed.contains(&i) {
                        problems.push(format!("{}: {}", step.id, f.message));
                    }
                    write(
                        journal,
                        Event::RollbackFailed {
                            step: step.id.clone(),
                            error: f.message,
                        },
                    )?;
                }
            }
        }
        Ok(if problems.is_empty() {
            Outcome::RolledBack {
                reason: reason.to_owned(),
            }
        } else {
            Outcome::Failed {
                reason: format!(
                    "{reason}; rollback incomplete, check by hand: {}",
                    problems.join("; ")
                ),
            }
        })
    }
}
