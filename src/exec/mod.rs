//! Execution: the engine that runs a compiled plan on a [`crate::host::Host`], the journal that makes it survive
//! the kexec, the decisions `resume` takes from that journal, and the status folded from it.
//!
//! The engine knows nothing about what actions do; it decides what runs when, and what a failure means: before
//! `kexec`, undo what was done (or stop, by policy); after it, keep going with whatever does not depend on the
//! failure and leave the rest to `resume` or an operator — never roll back past the kexec.

pub(crate) mod abort;
pub(crate) mod blackout;
mod engine;
pub(crate) mod history;
pub mod journal;
pub(crate) mod progress;
mod rehearsal;
pub(crate) mod resume;
mod rollback;
pub(crate) mod status;

pub(crate) use engine::Engine;

/// Fixtures for the tests of code that reads journals.
#[cfg(test)]
pub(crate) mod test_support {
    use super::journal::{Event, Record, rfc3339};

    /// Record `seq`, stamped `seq` ms after the epoch.
    pub(crate) fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            unix_ms: seq,
            time: rfc3339(seq),
            event,
        }
    }
}

use crate::host::HostError;
use crate::plan::OnFailure;
use journal::{JournalError, Mode};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Why the engine could not run a program to an outcome (the outcome itself, a failed step included, is not an
/// error: it is recorded and returned).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// A record could not be made durable: the engine stops rather than act without a journal.
    #[error("cannot write the journal: {0}")]
    Journal(#[from] JournalError),
    /// A thread holding the journal panicked.
    #[error("journal lock poisoned")]
    Poisoned,
    /// The host could not say which boot this is, or the hook before the kexec failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// How the engine runs a program.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Apply or rehearse.
    pub(crate) mode: Mode,
    /// In a rehearsal: load (and unload) the kernel for real.
    pub(crate) kernel_load: bool,
    /// How many steps may run at once.
    pub(crate) parallelism: usize,
    /// What a failure before the kexec does.
    pub(crate) on_failure: OnFailure,
    /// Set by Ctrl-C: launch nothing new, let running steps finish, roll back if before the kexec.
    pub(crate) interrupted: Arc<AtomicBool>,
    /// The update already failed (resume found the old kernel): a run whose steps all succeed still ends failed.
    pub(crate) update_failed: Option<String>,
}

#[cfg(test)]
impl Options {
    /// A real apply (not a rehearsal) with the kernel loaded, four steps at once, nothing interrupted.
    pub(crate) fn for_tests(on_failure: OnFailure) -> Self {
        Self {
            mode: Mode::Apply,
            kernel_load: true,
            parallelism: 4,
            on_failure,
            interrupted: Arc::new(AtomicBool::new(false)),
            update_failed: None,
        }
    }
}

/// How a run ended (the process does not return from a real kexec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every step done.
    Completed,
    /// A step before the kexec failed and everything done was undone.
    RolledBack {
        /// Which step, and why.
        reason: String,
    },
    /// The update needs an operator.
    Failed {
        /// What failed and what to do.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Action, ActionFailure, ActionOutput};
    use crate::graph::Program;
    use crate::host::{BootIdentity, Host, HostError};
    use journal::Journal;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// Records what the engine hands it; fails the first action matching `fail`.
    pub(super) struct RecordingHost {
        pub(super) calls: Mutex<Vec<Vec<Action>>>,
        pub(super) fail: Option<fn(&Action) -> bool>,
    }

    impl Host for RecordingHost {
        fn identity(&self) -> Result<BootIdentity, HostError> {
            Ok(BootIdentity {
                boot_id: "00000000-0000-0000-0000-000000000001".into(),
                release: "6.1.0-test".into(),
            })
        }

        fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
            self.calls.lock().unwrap().push(actions.to_vec());
            match actions.iter().position(|a| self.fail.is_some_and(|f| f(a))) {
                Some(index) => Err(ActionFailure {
                    index,
                    message: "injected".into(),
                    done: vec![ActionOutput::None; index],
                }),
                None => Ok(vec![ActionOutput::None; actions.len()]),
            }
        }
    }

    pub(super) fn program(path: &str) -> Program {
        let bytes = std::fs::read(path).unwrap();
        let (plan, graph) = crate::check::check(path, &bytes).valid().unwrap();
        crate::graph::compile(&plan, &graph, "root=/dev/sda1 cpuhp.parallel=1")
    }

    /// Runs `program` on a recording host that fails the first action matching `fail`, rolling back on a failure
    /// before the kexec: the outcome and every call the host received.
    fn run_failing(program: &Program, fail: fn(&Action) -> bool) -> (Outcome, Vec<Vec<Action>>) {
        let host = RecordingHost {
            calls: Mutex::new(Vec::new()),
            fail: Some(fail),
        };
        let outcome = run(program, &host, OnFailure::Rollback);
        (outcome, host.calls.into_inner().unwrap())
    }

    fn run(program: &Program, host: &RecordingHost, on_failure: OnFailure) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("apply")).unwrap();
        let engine = Engine {
            host,
            program,
            options: Options::for_tests(on_failure),
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
        let (outcome, calls) = run_failing(
            &program,
            |a| matches!(a, Action::Qmp { command, socket, .. } if command == "migrate" && socket.ends_with("db-2.qmp")),
        );
        assert!(
            matches!(&outcome, Outcome::RolledBack { reason } if reason.contains("vm:db-2:save")),
            "{outcome:?}"
        );
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
    fn a_failed_restore_after_the_kexec_stops_only_its_own_guest() {
        let program = program("plans/multi-vm-vfio-spdk.toml");
        // db-1's RAM is not what was saved.
        let (outcome, calls) = run_failing(
            &program,
            |a| matches!(a, Action::CheckRamDigest { record, .. } if record.ends_with("db-1/vmstate.ram-digest")),
        );
        assert!(
            matches!(&outcome, Outcome::Failed { reason }
                if reason.contains("after the kexec: vm:db-1:restore: injected")),
            "{outcome:?}"
        );
        // The recording host is handed a whole step: the failed restore's own actions after its check never ran.
        let flat: Vec<&Action> = calls
            .iter()
            .filter(|c| !c.iter().any(|a| matches!(a, Action::CheckRamDigest { record, .. } if record.ends_with("db-1/vmstate.ram-digest"))))
            .flatten()
            .collect();
        let cont = |vm: &str| {
            flat.iter().any(|a| {
                matches!(a, Action::Qmp { command, socket, .. }
                if command == "cont" && socket.ends_with(format!("{vm}.qmp")))
            })
        };
        let restarted = |vm: &str| {
            flat.iter().any(|a| {
                matches!(a, Action::Qmp { command, socket, .. }
                if command == "migrate-incoming" && socket.ends_with(format!("{vm}.qmp")))
            })
        };
        // The other guests are restored and resumed; db-1 is neither, and nothing was rolled back.
        for vm in ["db-2", "monitor"] {
            assert!(
                restarted(vm) && cont(vm),
                "{vm} was not restored and resumed"
            );
        }
        assert!(!restarted("db-1"), "db-1 restarted");
        assert!(!cont("db-1"), "db-1 continued");
        assert!(!flat.iter().any(|a| matches!(a, Action::KexecUnload)));
        // verify (which would remove the state files) waits for every guest: it did not run.
        assert!(
            !flat
                .iter()
                .any(|a| matches!(a, Action::RemoveFile { path } if path.ends_with("vmstate")))
        );
    }

    #[test]
    fn a_stuck_live_patch_transition_disables_and_removes_the_patch() {
        let program = program("plans/livepatch.toml");
        let (outcome, calls) = run_failing(&program, |a| {
            matches!(a, Action::WaitLivepatchTransition { .. })
        });
        assert!(
            matches!(&outcome, Outcome::RolledBack { reason }
                if reason.contains("livepatch:livepatch_cmdline_fix:transition")),
            "{outcome:?}"
        );
        let flat: Vec<&Action> = calls.iter().flatten().collect();
        assert!(!flat.iter().any(|a| matches!(
            a,
            Action::Reboot(_) | Action::KexecFileLoad { .. } | Action::KexecUnload
        )));
        let load = flat
            .iter()
            .position(|a| matches!(a, Action::LoadModule { .. }))
            .expect("the module was loaded");
        // After the failed wait: the load's undo, disable then delete_module, and nothing else.
        let after: Vec<&&Action> = flat[load + 1..]
            .iter()
            .filter(|a| !matches!(a, Action::WaitLivepatchTransition { .. }))
            .collect();
        assert!(
            matches!(
                after.as_slice(),
                [Action::DisableLivepatch { .. }, Action::UnloadModule { .. }]
            ),
            "{after:?}"
        );
    }
}
