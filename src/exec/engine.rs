//! The engine proper: runs a compiled plan's steps on a [`Host`] in dependency order with bounded parallelism,
//! journals every step before and after it runs, and rolls back on a failure before the point of no return.
//!
//! It works in rounds: the records of the steps that ended (all that ended by then, not only the first) and of the
//! steps they make ready are written, made durable with one `fdatasync`, and only then are those steps started — a
//! step runs only once its start is durable, and a round costs one sync however many steps it ends and starts.
//! One exception keeps the sync out of the downtime where nothing depends on it: a round that starts only steps
//! that are idempotent and have nothing to undo (`sync`, a guest's resume after the kexec, `verify`, the checks)
//! starts them first and syncs while they run ([`deferrable`]). Every record is still durable as early as before;
//! only such a step may act before its start is: after a crash `resume` runs it again whether or not its start was
//! recorded, and a rollback or `abort` has nothing of it to undo.

use super::journal::{Event, JournalError, Mode, Recorder};
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

/// What to do about a step that failed after the kexec, beyond retrying it: a guest whose restored QEMU was lost
/// before its resume (killed, crashed) has nothing left to `cont`; its state file is still there (`verify` did not
/// run), so its restore must run again — after the operator ends a QEMU that still runs but cannot be reached (its
/// socket gone), or the restore's new QEMU finds the guest's pidfile and socket taken.
fn after_hint(step: &StepId) -> String {
    match step {
        StepId::VmResume { vm } => format!(
            " (if its QEMU is gone or cannot be reached, end it if it still runs, then run `kup plan resume --rerun \
             vm:{vm}:restore` to load its state again)"
        ),
        _ => String::new(),
    }
}

/// Whether `step` may start before its `step-started` record is durable: it is safe to run again (after a crash
/// `resume` runs it whether or not its start was recorded) and has nothing to undo (a rollback or `abort` would not
/// look for it). The kexec never: its record is the point of no return.
fn deferrable(step: &CompiledStep) -> bool {
    step.idempotent && step.rollback.is_empty() && step.phase != Phase::Kexec
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

/// The journal as the scheduler's threads share it: records written, and synced once per round.
struct Records<'j> {
    journal: Mutex<&'j mut dyn Recorder>,
    /// Whether a record was written since the last sync.
    unsynced: std::sync::atomic::AtomicBool,
}

impl<'j> Records<'j> {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, &'j mut dyn Recorder>, EngineError> {
        self.journal.lock().map_err(|_| EngineError::Poisoned)
    }

    /// Writes a record, durable at the round's [`Records::sync`].
    fn write(&self, event: Event) -> Result<(), EngineError> {
        self.lock()?.write(event).map_err(EngineError::Journal)?;
        self.unsynced.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Makes the round's records durable; nothing to do when none was written.
    fn sync(&self) -> Result<(), EngineError> {
        if self.unsynced.swap(false, Ordering::SeqCst) {
            self.lock()?.sync().map_err(EngineError::Journal)?;
        }
        Ok(())
    }

    /// Writes a record and makes it durable at once (the kexec's, from its own thread).
    fn append(&self, event: Event) -> Result<(), EngineError> {
        self.write(event)?;
        self.sync()
    }
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
    pub(super) fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
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
        journal: &mut dyn Recorder,
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
        let records = Records {
            journal: Mutex::new(journal),
            unsynced: std::sync::atomic::AtomicBool::new(false),
        };
        self.schedule(&index, &mut tally, &records);
        let journal = records
            .journal
            .into_inner()
            .map_err(|_| EngineError::Poisoned)?;
        let past_kexec = self
            .program
            .steps
            .iter()
            .enumerate()
            .any(|(i, s)| s.phase != Phase::Before && tally.state[i] != State::Pending);
        let (outcome, lost) = match tally.journal_error.take() {
            Some(EngineError::Journal(error)) => {
                let failed: Vec<usize> = (0..steps.len())
                    .filter(|&i| tally.state[i] == State::Failed && steps[i].phase == Phase::Before)
                    .collect();
                // What failed meanwhile, which the journal may not have recorded.
                let failure = match &tally.first_failure {
                    Some((i, e)) => Some(format!("step {} failed: {e}", steps[*i].id)),
                    None if !tally.after_failures.is_empty() => Some(format!(
                        "after the kexec: {}",
                        tally.after_failures.join("; ")
                    )),
                    None => None,
                };
                self.journal_failed(
                    journal,
                    (&tally.completed_before, &failed),
                    (error, failure),
                    past_kexec,
                )
            }
            Some(other) => return Err(other),
            None => self.conclude(journal, &index, &tally),
        };
        Ok(self.finish(journal, outcome, lost, past_kexec))
    }

    /// Launches every ready step (at most `parallelism` at once, the kexec alone) on its own thread, and records
    /// each as it ends, until nothing more can run: all done, or a failure or an interrupt stopped the launches.
    /// Each round writes the records of the steps that ended and of those it starts, syncs them once, then starts.
    fn schedule(&self, index: &BTreeMap<&StepId, usize>, tally: &mut Tally, records: &Records<'_>) {
        let steps = &self.program.steps;
        let parallelism = self.options.parallelism.max(1);
        std::thread::scope(|scope| {
            let (tx, rx) =
                mpsc::channel::<(usize, Duration, Result<Vec<ActionOutput>, StepError>)>();
            let mut running = 0usize;
            loop {
                let launch = self.ready(index, tally, records, running, parallelism);
                let start = |i: usize| {
                    let step = &steps[i];
                    self.progress.start(&step.id.to_string());
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let t0 = Instant::now();
                        let result = if step.phase == Phase::Kexec {
                            self.kexec(step, &|event| records.append(event))
                        } else {
                            self.perform(&step.actions)
                                .map_err(|f| StepError::Action(Self::describe(step, &f)))
                        };
                        let _ = tx.send((i, t0.elapsed(), result));
                    });
                };
                // One sync for the round: the ends recorded since the last one and the starts just written; before
                // the starts, unless every step of the round may act before its start is durable.
                if !launch.is_empty() && launch.iter().all(|&i| deferrable(&steps[i])) {
                    running += launch.len();
                    launch.iter().for_each(|&i| start(i));
                    if let Err(e) = records.sync() {
                        tally.journal_error.get_or_insert(e);
                    }
                } else if let Err(e) = records.sync() {
                    for &i in &launch {
                        tally.state[i] = State::Pending;
                    }
                    tally.journal_error.get_or_insert(e);
                } else {
                    running += launch.len();
                    launch.iter().for_each(|&i| start(i));
                }
                if running == 0 {
                    break;
                }
                let Ok(first) = rx.recv() else {
                    break;
                };
                // Every step that has ended by now, not only the first: their records share the round's sync.
                for (i, took, result) in std::iter::once(first).chain(rx.try_iter()) {
                    running -= 1;
                    self.ended(i, took, result, tally, records);
                }
            }
        });
    }

    /// The steps to start in this round, their `step-started` records written (not yet durable) and their state
    /// `Running`: every ready step while fewer than `parallelism` run, the kexec alone.
    fn ready(
        &self,
        index: &BTreeMap<&StepId, usize>,
        tally: &mut Tally,
        records: &Records<'_>,
        running: usize,
        parallelism: usize,
    ) -> Vec<usize> {
        let mut launch = Vec::new();
        let stop = tally.first_failure.is_some()
            || tally.journal_error.is_some()
            || self.options.interrupted.load(Ordering::SeqCst);
        if stop {
            return launch;
        }
        for (i, step) in self.program.steps.iter().enumerate() {
            if running + launch.len() >= parallelism {
                break;
            }
            let ready = tally.state[i] == State::Pending
                && step
                    .after
                    .iter()
                    .all(|d| index.get(d).is_none_or(|&j| tally.state[j] == State::Done));
            // The kexec runs alone: nothing may be mid-flight when the host goes down.
            let alone = step.phase != Phase::Kexec || (running == 0 && launch.is_empty());
            if !ready || !alone {
                continue;
            }
            if let Err(e) = records.write(Event::StepStarted {
                step: step.id.clone(),
            }) {
                tally.journal_error = Some(e);
                break;
            }
            tally.state[i] = State::Running;
            launch.push(i);
            if step.phase == Phase::Kexec {
                break;
            }
        }
        launch
    }

    /// Records how step `i` ended.
    fn ended(
        &self,
        i: usize,
        took: Duration,
        result: Result<Vec<ActionOutput>, StepError>,
        tally: &mut Tally,
        records: &Records<'_>,
    ) {
        let record = |event| records.write(event);
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
                    tally.after_failures.push(format!(
                        "{}: {error}{}",
                        step.id,
                        after_hint(&step.id)
                    ));
                } else if tally.first_failure.is_none() {
                    tally.first_failure = Some((i, error));
                }
                written
            }
        };
        if let Err(e) = written {
            tally.journal_error.get_or_insert(e);
        }
    }

    /// What the run's tally means: roll back (or stop) after a failure before the kexec, report failures after it,
    /// or complete.
    fn conclude(
        &self,
        journal: &mut dyn Recorder,
        index: &BTreeMap<&StepId, usize>,
        tally: &Tally,
    ) -> (Outcome, Option<JournalError>) {
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
        if let Some(reason) = reason {
            return match self.options.on_failure {
                OnFailure::Rollback => {
                    let failed: Vec<usize> = tally.first_failure.iter().map(|(i, _)| *i).collect();
                    self.rollback(journal, &tally.completed_before, &failed, &reason)
                }
                OnFailure::Stop => (
                    Outcome::Failed {
                        reason: format!(
                            "{reason}; policy.on_failure = \"stop\": nothing was undone"
                        ),
                    },
                    None,
                ),
            };
        }
        let outcome = if !tally.after_failures.is_empty() {
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
        };
        (outcome, None)
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
                done: f.done,
            };
            StepError::Action(Self::describe(step, &f))
        })?;
        outputs.extend(rest);
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::journal::JournalError;
    use crate::host::BootIdentity;

    /// What the engine did, in order, as the recording journal and host saw it.
    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        /// A record written (its event name), for a step when it names one.
        Write(String, Option<StepId>),
        Sync,
        SyncFailed,
        Perform(Vec<Action>),
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<Op>>);

    impl Log {
        fn push(&self, op: Op) {
            self.0.lock().unwrap().push(op);
        }
    }

    /// A journal that writes nothing: it logs each write and sync, and fails sync number `fail_sync`.
    struct RecordingJournal<'a> {
        log: &'a Log,
        syncs: usize,
        fail_sync: Option<usize>,
    }

    impl Recorder for RecordingJournal<'_> {
        fn write(&mut self, event: Event) -> Result<(), JournalError> {
            let step = match &event {
                Event::StepStarted { step }
                | Event::StepDone { step, .. }
                | Event::StepFailed { step, .. } => Some(step.clone()),
                _ => None,
            };
            let name = serde_json::to_value(&event).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned();
            self.log.push(Op::Write(name, step));
            Ok(())
        }

        fn sync(&mut self) -> Result<(), JournalError> {
            self.syncs += 1;
            if Some(self.syncs) == self.fail_sync {
                self.log.push(Op::SyncFailed);
                return Err(JournalError::Io {
                    what: "write",
                    path: "journal.jsonl".into(),
                    source: std::io::Error::other("injected"),
                });
            }
            self.log.push(Op::Sync);
            Ok(())
        }
    }

    /// A host that logs what it is asked to perform, in the same log as the journal's writes and syncs.
    struct LoggingHost<'a>(&'a Log);

    impl Host for LoggingHost<'_> {
        fn identity(&self) -> Result<BootIdentity, HostError> {
            Ok(BootIdentity {
                boot_id: "00000000-0000-0000-0000-000000000001".into(),
                release: "6.1.0-test".into(),
            })
        }

        fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
            self.0.push(Op::Perform(actions.to_vec()));
            Ok(vec![ActionOutput::None; actions.len()])
        }
    }

    fn run(program: &Program, fail_sync: Option<usize>) -> (Result<Outcome, EngineError>, Vec<Op>) {
        let log = Log::default();
        let mut journal = RecordingJournal {
            log: &log,
            syncs: 0,
            fail_sync,
        };
        let engine = Engine {
            host: &LoggingHost(&log),
            program,
            options: Options::for_tests(crate::plan::OnFailure::Rollback),
            before_kexec: &|| Ok(()),
            progress: &progress::Progress::plain(),
        };
        let outcome = engine.run(&mut journal, &BTreeSet::new());
        (outcome, log.0.into_inner().unwrap())
    }

    /// The steps `actions` may be a call of: those with exactly these actions, or the kexec's two halves.
    fn steps_of<'p>(program: &'p Program, actions: &[Action]) -> Vec<&'p StepId> {
        program
            .steps
            .iter()
            .filter(|s| {
                s.actions == actions
                    || (s.phase == Phase::Kexec
                        && !actions.is_empty()
                        && (s.actions.starts_with(actions) || s.actions.ends_with(actions)))
            })
            .map(|s| &s.id)
            .collect()
    }

    /// Where step `id`'s start was written.
    fn started_at(ops: &[Op], id: &StepId) -> Option<usize> {
        ops.iter()
            .position(|op| matches!(op, Op::Write(e, Some(s)) if e == "step-started" && s == id))
    }

    fn step<'p>(program: &'p Program, id: &str) -> &'p CompiledStep {
        let id: StepId = id.parse().unwrap();
        program.steps.iter().find(|s| s.id == id).unwrap()
    }

    #[test]
    fn only_idempotent_steps_with_nothing_to_undo_may_start_before_their_start_is_durable() {
        let program = super::super::tests::program("plans/multi-vm-vfio-spdk.toml");
        for id in ["sync", "vm:db-1:resume", "verify", "preflight", "preflush"] {
            assert!(deferrable(step(&program, id)), "{id}");
        }
        // A pause and a save are undone by a rollback or an abort, which must know they started; a restore and
        // the kexec must not run twice.
        for id in [
            "vm:db-1:pause",
            "vm:db-1:save",
            "vm:db-1:restore",
            "kexec",
            "kernel:load",
            "isolate",
            "app:spdk:save",
        ] {
            assert!(!deferrable(step(&program, id)), "{id}");
        }
    }

    #[test]
    fn each_round_syncs_once_and_a_step_runs_only_once_its_start_is_durable() {
        let program = super::super::tests::program("plans/multi-vm-vfio-spdk.toml");
        let (outcome, ops) = run(&program, None);
        assert_eq!(outcome.unwrap(), Outcome::Completed);
        for (p, op) in ops.iter().enumerate() {
            let Op::Perform(actions) = op else { continue };
            let of = steps_of(&program, actions);
            let durable = of.iter().any(|id| {
                started_at(&ops, id).is_some_and(|w| w < p && ops[w..p].contains(&Op::Sync))
            });
            // A deferrable step may act first, but its round's sync follows before anything else is recorded:
            // after the round's writes come its steps' actions and the sync, then the next round's records.
            let deferred = of.iter().any(|id| {
                let s = program.steps.iter().find(|s| &s.id == *id).unwrap();
                deferrable(s)
                    && started_at(&ops, id).is_some_and(|w| {
                        let sync = w + ops[w..].iter().position(|o| *o == Op::Sync).unwrap();
                        let acts = w + ops[w..]
                            .iter()
                            .position(|o| !matches!(o, Op::Write(..)))
                            .unwrap();
                        w < p && !ops[acts..sync].iter().any(|o| matches!(o, Op::Write(..)))
                    })
            });
            assert!(
                durable || deferred,
                "performed before its start was synced: {actions:?}\n{ops:#?}"
            );
        }
        let writes = ops.iter().filter(|o| matches!(o, Op::Write(..))).count();
        let syncs = ops.iter().filter(|o| **o == Op::Sync).count();
        // Every step's start and end (and the run's other records) are written; a round's records share a sync.
        assert!(writes >= 2 * program.steps.len(), "{writes} writes");
        assert!(
            syncs < writes * 2 / 3,
            "{syncs} syncs for {writes} records: not batched\n{ops:#?}"
        );
        // No sync without a record to make durable, and none left undurable at the end.
        for pair in ops.windows(2) {
            assert!(pair != [Op::Sync, Op::Sync], "an empty sync\n{ops:#?}");
        }
        assert_eq!(ops.last(), Some(&Op::Sync));
        // Steps that become ready together start in one round: the three guests' pauses wait on the same steps.
        let pauses: Vec<usize> = ["db-1", "db-2", "monitor"]
            .iter()
            .map(|vm| started_at(&ops, &format!("vm:{vm}:pause").parse().unwrap()).unwrap())
            .collect();
        let (first, last) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(
            !ops[*first..*last].contains(&Op::Sync),
            "the pauses were synced one by one\n{ops:#?}"
        );
    }

    fn is_stop(a: &Action) -> bool {
        matches!(a, Action::Qmp { command, .. } if command == "stop")
    }

    fn is_cont(a: &Action) -> bool {
        matches!(a, Action::Qmp { command, .. } if command == "cont")
    }

    #[test]
    fn a_round_whose_sync_fails_starts_none_of_its_steps() {
        let program = super::super::tests::program("plans/multi-vm-vfio-spdk.toml");
        let (_, ops) = run(&program, None);
        let total = ops.iter().filter(|o| **o == Op::Sync).count();
        for fail in 1..=total {
            let (outcome, ops) = run(&program, Some(fail));
            // Rounds depend on which steps end together: this run may have had fewer syncs.
            if !ops.contains(&Op::SyncFailed) {
                assert_eq!(outcome.unwrap(), Outcome::Completed);
                continue;
            }
            let failed = ops.iter().position(|o| *o == Op::SyncFailed).unwrap();
            // A round's sync fails the run: before the kexec record it rolls back and says to run abort once the
            // journal can be written, past it it stops and says to resume; the kexec record's (synced by the kexec
            // step itself) fails that step, which rolls back.
            let past = ops[..failed]
                .iter()
                .any(|o| matches!(o, Op::Write(e, None) if e == "kexec"));
            let then = if past {
                "kup plan resume"
            } else {
                "kup plan abort"
            };
            assert!(
                matches!(&outcome, Ok(Outcome::Failed { reason })
                    if reason.contains("the journal cannot be written") && reason.contains(then))
                    || matches!(&outcome, Ok(Outcome::RolledBack { reason })
                        if reason.contains("step kexec failed: cannot write the journal")),
                "sync {fail}: {outcome:?}"
            );
            // Before the kexec the steps done are undone: the guests paused run again.
            if !past
                && ops[..failed]
                    .iter()
                    .any(|o| matches!(o, Op::Perform(a) if a.iter().any(is_stop)))
            {
                assert!(
                    ops[failed..]
                        .iter()
                        .any(|o| matches!(o, Op::Perform(a) if a.iter().any(is_cont))),
                    "sync {fail}: a paused guest was not resumed\n{ops:#?}"
                );
            }
            let last_sync = ops[..failed]
                .iter()
                .rposition(|o| *o == Op::Sync)
                .map_or(0, |i| i + 1);
            // The starts written for the failed sync's round.
            let unsynced: Vec<&StepId> = ops[last_sync..failed]
                .iter()
                .filter_map(|op| match op {
                    Op::Write(e, Some(s)) if e == "step-started" => Some(s),
                    _ => None,
                })
                .collect();
            for op in &ops[failed..] {
                if let Op::Perform(actions) = op {
                    assert!(
                        !actions.iter().any(|a| matches!(a, Action::Reboot(_))),
                        "sync {fail}: the kexec ran without its record\n{ops:#?}"
                    );
                    let of = steps_of(&program, actions);
                    let may = |id: &&StepId| {
                        !unsynced.contains(id)
                            || deferrable(program.steps.iter().find(|s| &s.id == *id).unwrap())
                    };
                    assert!(
                        of.iter().any(may) || of.is_empty(),
                        "sync {fail}: a step whose start is not durable ran: {of:?}\n{ops:#?}"
                    );
                }
            }
            // Nothing starts after a failed sync: the run stops (steps already running finish).
            assert!(
                !ops[failed..]
                    .iter()
                    .any(|o| matches!(o, Op::Write(e, _) if e == "step-started")),
                "sync {fail}: a step started after the failed sync\n{ops:#?}"
            );
        }
    }
}
