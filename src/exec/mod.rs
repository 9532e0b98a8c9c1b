//! The engine: runs a compiled plan's steps on a [`Host`] in dependency order with bounded parallelism, journals
//! every step before and after it runs, and rolls back on a failure before the point of no return.
//!
//! It knows nothing about what actions do; it decides what runs when, and what a failure means: before `kexec`,
//! undo what was done (or stop, by policy); after it, keep going with whatever does not depend on the failure and
//! leave the rest to `resume` or an operator — never roll back past the kexec.

pub mod journal;
pub mod progress;
pub mod resume;
pub mod status;

use crate::graph::Phase;
use crate::graph::action::{Action, CompiledStep, Program};
use crate::graph::schedule::millis as ms;
use crate::host::{ActionFailure, ActionOutput, Host};
use crate::plan::OnFailure;
use journal::{Event, FinalState, Journal, Mode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The id of the point of no return.
pub const KEXEC: &str = "kexec";

/// How the engine runs a program.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// In a rehearsal: load (and unload) the kernel for real.
    pub kernel_load: bool,
    pub parallelism: usize,
    pub on_failure: OnFailure,
    /// Set by Ctrl-C: launch nothing new, let running steps finish, roll back if before the kexec.
    pub interrupted: Arc<AtomicBool>,
    /// The update already failed (resume found the old kernel): a run whose steps all succeed still ends failed.
    pub update_failed: Option<String>,
}

/// How a run ended (the process does not return from a real kexec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    RolledBack { reason: String },
    Failed { reason: String },
}

/// Performs a rehearsal's substitutions: the kexec becomes a no-op (or an unload of the kernel loaded for the
/// rehearsal), so a rehearsal cannot reboot the host whatever the plan says.
struct Rehearsal<'a, H: Host> {
    inner: &'a H,
    kernel_load: bool,
}

impl<H: Host> Host for Rehearsal<'_, H> {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        let substituted: Vec<Option<Action>> = actions
            .iter()
            .map(|a| match a {
                // Whatever the kexec method, a rehearsal never reboots.
                Action::Reboot(_) => self.kernel_load.then_some(Action::KexecUnload),
                // Without a kernel load nothing about kexec is exercised, including the preflight's check that
                // kexec is allowed (a host without CONFIG_KEXEC can rehearse everything else).
                Action::KexecFileLoad { .. }
                | Action::KexecUnload
                | Action::CheckKernelImage { .. }
                    if !self.kernel_load =>
                {
                    None
                }
                Action::ReadSysfs { path, .. }
                    if !self.kernel_load
                        && path.to_string_lossy().starts_with("/proc/sys/kernel/kexec") =>
                {
                    None
                }
                other => Some(other.clone()),
            })
            .collect();
        let real: Vec<Action> = substituted.iter().flatten().cloned().collect();
        let mut outputs = self
            .inner
            .perform(&real)
            .map_err(|f| ActionFailure {
                // Point at the plan's action, not at its place in the substituted list.
                index: substituted
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.is_some())
                    .nth(f.index)
                    .map_or(f.index, |(i, _)| i),
                message: f.message,
            })?
            .into_iter();
        Ok(substituted
            .iter()
            .map(|a| match a {
                Some(_) => outputs.next().unwrap_or_default(),
                None => serde_json::json!({ "rehearsal": "skipped" }),
            })
            .collect())
    }
}

/// The state of one step during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
}

pub struct Engine<'a, H: Host> {
    pub host: &'a H,
    pub program: &'a Program,
    pub options: Options,
    /// Runs just before the kexec executes, after its journal record is durable (installs the resume unit).
    pub before_kexec: &'a (dyn Fn() -> Result<(), String> + Sync),
    pub progress: &'a progress::Progress,
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
    pub fn run(&self, journal: &mut Journal, done: &BTreeSet<String>) -> Result<Outcome, String> {
        let steps = &self.program.steps;
        let index: BTreeMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut state: Vec<State> = steps
            .iter()
            .map(|s| {
                if done.contains(&s.id) {
                    State::Done
                } else {
                    State::Pending
                }
            })
            .collect();
        // Completion order of before-phase steps: rollback undoes them in reverse.
        let mut completed_before: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(i, s)| state[*i] == State::Done && s.phase == Phase::Before)
            .map(|(i, _)| i)
            .collect();
        let journal = Mutex::new(journal);
        let record = |event: Event| -> Result<(), String> {
            let mut j = journal
                .lock()
                .map_err(|_| "journal lock poisoned".to_owned())?;
            j.append(event)
                .map(drop)
                .map_err(|e| format!("cannot write the journal: {e}"))
        };
        let parallelism = self.options.parallelism.max(1);
        let mut first_failure: Option<(usize, String)> = None;
        let mut after_failures: Vec<String> = Vec::new();
        let mut journal_error: Option<String> = None;

        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<(usize, Duration, Result<Vec<ActionOutput>, String>)>();
            let mut running = 0usize;
            loop {
                let stop = first_failure.is_some()
                    || journal_error.is_some()
                    || self.options.interrupted.load(Ordering::SeqCst);
                if !stop {
                    for i in 0..steps.len() {
                        if running >= parallelism {
                            break;
                        }
                        let step = &steps[i];
                        let ready = state[i] == State::Pending
                            && step.after.iter().all(|d| {
                                index
                                    .get(d.as_str())
                                    .is_none_or(|&j| state[j] == State::Done)
                            });
                        // The kexec runs alone: nothing may be mid-flight when the host goes down.
                        let alone = step.phase != Phase::Kexec || running == 0;
                        if !ready || !alone {
                            continue;
                        }
                        if let Err(e) = record(Event::StepStarted {
                            step: step.id.clone(),
                        }) {
                            journal_error = Some(e);
                            break;
                        }
                        state[i] = State::Running;
                        running += 1;
                        self.progress.start(&step.id);
                        let tx = tx.clone();
                        let record = &record;
                        scope.spawn(move || {
                            let t0 = Instant::now();
                            let result = if step.phase == Phase::Kexec {
                                self.kexec(step, record)
                            } else {
                                self.perform(&step.actions)
                                    .map_err(|f| Self::describe(step, &f))
                            };
                            let _ = tx.send((i, t0.elapsed(), result));
                        });
                        if step.phase == Phase::Kexec {
                            break;
                        }
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok((i, took, result)) = rx.recv() else {
                    break;
                };
                running -= 1;
                let step = &steps[i];
                match result {
                    Ok(outputs) => {
                        state[i] = State::Done;
                        if step.phase == Phase::Before {
                            completed_before.push(i);
                        }
                        self.progress.done(&step.id, took);
                        if let Err(e) = record(Event::StepDone {
                            step: step.id.clone(),
                            duration_ms: ms(took),
                            outputs,
                        }) {
                            journal_error = Some(e);
                        }
                    }
                    Err(error) => {
                        state[i] = State::Failed;
                        self.progress.failed(&step.id, &error);
                        if let Err(e) = record(Event::StepFailed {
                            step: step.id.clone(),
                            duration_ms: ms(took),
                            error: error.clone(),
                        }) {
                            journal_error = Some(e);
                        }
                        if step.phase == Phase::After {
                            after_failures.push(format!("{}: {error}", step.id));
                        } else if first_failure.is_none() {
                            first_failure = Some((i, error));
                        }
                    }
                }
            }
        });

        let journal = journal
            .into_inner()
            .map_err(|_| "journal lock poisoned".to_owned())?;
        if let Some(e) = journal_error {
            return Err(e);
        }
        let interrupted = self.options.interrupted.load(Ordering::SeqCst);
        let kexec_done = index.get(KEXEC).is_none_or(|&k| state[k] == State::Done);
        let reason = match (&first_failure, interrupted && !kexec_done) {
            (Some((i, error)), _) => Some(format!("step {} failed: {error}", steps[*i].id)),
            (None, true) => Some("interrupted (Ctrl-C) before the kexec".to_owned()),
            (None, false) => None,
        };
        let outcome = if let Some(reason) = reason {
            match self.options.on_failure {
                OnFailure::Rollback => {
                    let failed = first_failure.as_ref().map(|(i, _)| *i);
                    self.rollback(journal, &completed_before, failed, &reason)?
                }
                OnFailure::Stop => Outcome::Failed {
                    reason: format!("{reason}; policy.on_failure = \"stop\": nothing was undone"),
                },
            }
        } else if !after_failures.is_empty() {
            Outcome::Failed {
                reason: format!(
                    "after the kexec: {}; the steps that depend on them did not run — fix the cause and run `kup plan resume` to retry",
                    after_failures.join("; ")
                ),
            }
        } else if state.iter().any(|s| *s != State::Done) {
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
        };
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
            .map_err(|e| format!("cannot write the journal: {e}"))?;
        Ok(outcome)
    }

    /// The point of no return: the record first (durable), then the resume hook, then the kexec itself.
    fn kexec(
        &self,
        step: &CompiledStep,
        record: &(dyn Fn(Event) -> Result<(), String> + Sync),
    ) -> Result<Vec<ActionOutput>, String> {
        // The step's actions up to the reboot (its sync) run before the record: what the journal calls done must be
        // on disk before the record that says the kexec is under way.
        let split = step
            .actions
            .iter()
            .position(|a| matches!(a, Action::Reboot(_)))
            .unwrap_or(step.actions.len());
        let (before, reboot) = step.actions.split_at(split);
        let mut outputs = self.perform(before).map_err(|f| Self::describe(step, &f))?;
        record(Event::Kexec {
            boot_id: crate::host::boot_id()?,
            release: crate::host::kernel_release()?,
            kernel_cmdline: self.program.kernel_cmdline.clone(),
        })?;
        self.progress.note(
            "kexec record durable in the journal; executing the kexec (the point of no return)",
        );
        if self.options.mode == Mode::Apply {
            (self.before_kexec)()?;
        }
        let rest = self.perform(reboot).map_err(|f| {
            let f = ActionFailure {
                index: f.index + before.len(),
                message: f.message,
            };
            Self::describe(step, &f)
        })?;
        outputs.extend(rest);
        Ok(outputs)
    }

    /// Undoes `completed` steps in reverse, then the `failed` one, which may have done part of its work (a VM paused,
    /// then its save failed); undoing a half-done step may itself fail, which is recorded but does not make the
    /// rollback incomplete.
    fn rollback(
        &self,
        journal: &mut Journal,
        completed: &[usize],
        failed: Option<usize>,
        reason: &str,
    ) -> Result<Outcome, String> {
        let write = |journal: &mut Journal, event| {
            journal
                .append(event)
                .map(drop)
                .map_err(|e| format!("cannot write the journal: {e}"))
        };
        write(
            journal,
            Event::RollbackStarted {
                reason: reason.to_owned(),
            },
        )?;
        self.progress.note(&format!("rolling back: {reason}"));
        let mut problems = Vec::new();
        for i in failed.into_iter().chain(completed.iter().rev().copied()) {
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
                    if Some(i) != failed {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::StepGraph;

    /// Records what the engine hands it; fails the first action matching `fail`.
    struct RecordingHost {
        calls: Mutex<Vec<Vec<Action>>>,
        fail: Option<fn(&Action) -> bool>,
    }

    impl Host for RecordingHost {
        fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
            self.calls.lock().unwrap().push(actions.to_vec());
            match actions.iter().position(|a| self.fail.is_some_and(|f| f(a))) {
                Some(index) => Err(ActionFailure {
                    index,
                    message: "injected".into(),
                }),
                None => Ok(vec![serde_json::Value::Null; actions.len()]),
            }
        }
    }

    fn program(path: &str) -> Program {
        let bytes = std::fs::read(path).unwrap();
        let plan = crate::plan::load(path, &bytes).plan.unwrap();
        let graph = StepGraph::build(&plan).unwrap();
        crate::graph::action::compile(&plan, &graph, "root=/dev/sda1 cpuhp.parallel=1")
    }

    fn run(program: &Program, host: &RecordingHost, on_failure: OnFailure) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("apply")).unwrap();
        let engine = Engine {
            host,
            program,
            options: Options {
                mode: Mode::Apply,
                kernel_load: true,
                parallelism: 4,
                on_failure,
                interrupted: Arc::new(AtomicBool::new(false)),
                update_failed: None,
            },
            before_kexec: &|| Ok(()),
            progress: &progress::Progress::plain(),
        };
        engine.run(&mut journal, &BTreeSet::new()).unwrap()
    }

    #[test]
    fn the_executor_receives_exactly_the_dry_runs_actions() {
        for plan in [
            "plans/multi-vm-vfio-spdk.toml",
            "plans/libvirt-criu.toml",
            "plans/single-qemu-shared-ram.toml",
        ] {
            let program = program(plan);
            let host = RecordingHost {
                calls: Mutex::new(Vec::new()),
                fail: None,
            };
            assert_eq!(
                run(&program, &host, OnFailure::Rollback),
                Outcome::Completed,
                "{plan}"
            );
            // Every action, as many times as printed (the kexec step reaches the host in two calls, split around
            // the journal's kexec record).
            let key = |a: &Action| serde_json::to_string(a).unwrap();
            let mut received: Vec<String> = host
                .calls
                .into_inner()
                .unwrap()
                .iter()
                .flatten()
                .map(key)
                .collect();
            let mut printed: Vec<String> = program
                .steps
                .iter()
                .flat_map(|s| &s.actions)
                .map(key)
                .collect();
            received.sort();
            printed.sort();
            assert_eq!(received, printed, "{plan}");
        }
    }

    #[test]
    fn a_failed_save_resumes_every_paused_vm_and_unloads_the_kernel() {
        let program = program("plans/multi-vm-vfio-spdk.toml");
        let host = RecordingHost {
            calls: Mutex::new(Vec::new()),
            fail: Some(
                |a| matches!(a, Action::Qmp { command, socket, .. } if command == "migrate" && socket.ends_with("db-2.qmp")),
            ),
        };
        let outcome = run(&program, &host, OnFailure::Rollback);
        assert!(
            matches!(&outcome, Outcome::RolledBack { reason } if reason.contains("vm:db-2:save")),
            "{outcome:?}"
        );
        let calls = host.calls.into_inner().unwrap();
        let flat: Vec<&Action> = calls.iter().flatten().collect();
        assert!(
            !flat.iter().any(|a| matches!(a, Action::Reboot(_))),
            "no kexec after a failure"
        );
        for vm in ["db-1", "db-2", "monitor"] {
            let paused = flat.iter().any(|a| matches!(a, Action::Qmp { command, socket, .. } if command == "stop" && socket.ends_with(format!("{vm}.qmp"))));
            let resumed = flat.iter().any(|a| matches!(a, Action::Qmp { command, socket, .. } if command == "cont" && socket.ends_with(format!("{vm}.qmp"))));
            assert_eq!(
                paused, resumed,
                "vm {vm}: paused {paused}, resumed {resumed}"
            );
        }
        // The kernel loaded first is unloaded last.
        assert!(
            matches!(flat.last(), Some(Action::KexecUnload)),
            "{:?}",
            flat.last()
        );
    }

    #[test]
    fn a_rehearsal_never_hands_a_reboot_to_the_host() {
        let program = program("plans/single-qemu-shared-ram.toml");
        for kernel_load in [true, false] {
            let host = RecordingHost {
                calls: Mutex::new(Vec::new()),
                fail: None,
            };
            let rehearsal = Rehearsal {
                inner: &host,
                kernel_load,
            };
            for step in &program.steps {
                rehearsal.perform(&step.actions).unwrap();
            }
            let calls = host.calls.into_inner().unwrap();
            let flat: Vec<&Action> = calls.iter().flatten().collect();
            assert!(!flat.iter().any(|a| matches!(a, Action::Reboot(_))));
            assert_eq!(
                flat.iter()
                    .any(|a| matches!(a, Action::KexecFileLoad { .. })),
                kernel_load
            );
            assert_eq!(
                flat.iter().any(|a| matches!(a, Action::KexecUnload)),
                kernel_load
            );
        }
    }
}
