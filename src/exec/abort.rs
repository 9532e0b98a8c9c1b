//! `kup plan abort`'s decision: for an apply that died before the point of no return, which steps to undo and in
//! which order, from its journal. Pure, so that every crash point can be tested; the engine runs the undo.

use super::journal::{Event, Record};
use crate::graph::{Phase, Program, StepId};

/// Why an apply cannot be aborted; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AbortError {
    /// The journal does not start with an apply record.
    #[error("the journal does not start with an apply record")]
    NoApplyRecord,
    /// The kexec record is durable: past the point of no return nothing is rolled back.
    #[error(
        "the journal has the kexec record (seq {0}): the apply is past the point of no return and cannot be rolled \
         back. Run `kup plan resume` to finish it (it restores the guests), and `kup plan status` to see where it is"
    )]
    PastKexec(u64),
    /// The host booted again since the apply last ran: paused guests died with the old boot.
    #[error(
        "the host rebooted since the apply last ran (boot {0}, now {1}): the guests it paused are gone with that \
         boot, so there is nothing to resume. Run `kup plan resume`: it restores the guests whose state was saved"
    )]
    Rebooted(String, String),
}

/// The steps to undo: those interrupted or failed (they may have done part of their work) first, then those
/// done, newest first — the engine's rollback order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Undo {
    /// Started, or failed, and not undone.
    pub(crate) interrupted: Vec<StepId>,
    /// Done and not undone, in completion order (undone in reverse).
    pub(crate) completed: Vec<StepId>,
}

/// What to undo of the apply of `records`, on the boot `boot_id`.
pub(crate) fn decide(
    records: &[Record],
    program: &Program,
    boot_id: &str,
) -> Result<Undo, AbortError> {
    let Some(Event::ApplyStarted {
        boot_id: first_boot,
        ..
    }) = records.first().map(|r| &r.event)
    else {
        return Err(AbortError::NoApplyRecord);
    };
    if let Some(seq) = records
        .iter()
        .find(|r| matches!(r.event, Event::Kexec { .. }))
        .map(|r| r.seq)
    {
        return Err(AbortError::PastKexec(seq));
    }
    let last_boot = records
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::ResumeStarted { boot_id, .. } => Some(boot_id.as_str()),
            _ => None,
        })
        .unwrap_or(first_boot);
    if last_boot != boot_id {
        return Err(AbortError::Rebooted(
            last_boot.to_owned(),
            boot_id.to_owned(),
        ));
    }
    let before = |id: &StepId| {
        program
            .steps
            .iter()
            .any(|s| &s.id == id && s.phase != Phase::After)
    };
    let mut undo = Undo::default();
    for record in records {
        let (step, list) = match &record.event {
            Event::StepStarted { step } | Event::StepFailed { step, .. } => (step, Some(false)),
            Event::StepDone { step, .. } => (step, Some(true)),
            Event::StepRolledBack { step } => (step, None),
            _ => continue,
        };
        if !before(step) {
            continue;
        }
        undo.interrupted.retain(|s| s != step);
        undo.completed.retain(|s| s != step);
        match list {
            Some(true) => undo.completed.push(step.clone()),
            Some(false) => undo.interrupted.push(step.clone()),
            None => {}
        }
    }
    Ok(undo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::journal::Mode;
    use crate::exec::test_support::rec;

    fn program() -> Program {
        crate::exec::tests::program("plans/multi-vm-vfio-spdk.toml")
    }

    fn started() -> Record {
        rec(
            1,
            Event::ApplyStarted {
                plan: "t".into(),
                plan_path: "/t.toml".into(),
                plan_sha256: "x".into(),
                mode: Mode::Apply,
                kernel_load: true,
                boot_id: "boot-1".into(),
                release: "6.1.0".into(),
                hostname: "h".into(),
                pid: 1,
                kernel_cmdline: String::new(),
            },
        )
    }

    fn id(text: &str) -> StepId {
        text.parse().unwrap()
    }

    fn journal(events: Vec<Event>) -> Vec<Record> {
        let mut records = vec![started()];
        for (i, e) in events.into_iter().enumerate() {
            records.push(rec(i as u64 + 2, e));
        }
        records
    }

    fn done(step: &str) -> Event {
        Event::StepDone {
            step: id(step),
            duration_ms: 1,
            outputs: vec![],
        }
    }

    fn start(step: &str) -> Event {
        Event::StepStarted { step: id(step) }
    }

    #[test]
    fn interrupted_and_done_steps_are_undone_and_what_was_undone_is_not() {
        let records = journal(vec![
            start("preflight"),
            done("preflight"),
            start("kernel:load"),
            done("kernel:load"),
            start("vm:db-1:pause"),
            start("vm:db-2:pause"),
            done("vm:db-1:pause"),
            start("vm:db-1:save"),
            Event::StepFailed {
                step: id("vm:db-1:save"),
                duration_ms: 1,
                error: "x".into(),
            },
            // An earlier abort got this far before it died.
            Event::RollbackStarted { reason: "x".into() },
            Event::StepRolledBack {
                step: id("vm:db-1:save"),
            },
        ]);
        let undo = decide(&records, &program(), "boot-1").unwrap();
        assert_eq!(undo.interrupted, vec![id("vm:db-2:pause")]);
        assert_eq!(
            undo.completed,
            vec![id("preflight"), id("kernel:load"), id("vm:db-1:pause")]
        );
    }

    #[test]
    fn after_the_kexec_record_or_in_another_boot_abort_is_refused() {
        let records = journal(vec![
            done("preflight"),
            start("kexec"),
            Event::Kexec {
                boot_id: "boot-1".into(),
                release: "6.1.0".into(),
                kernel_cmdline: String::new(),
            },
        ]);
        assert_eq!(
            decide(&records, &program(), "boot-1"),
            Err(AbortError::PastKexec(4))
        );
        let records = journal(vec![done("preflight"), start("vm:db-1:pause")]);
        assert!(matches!(
            decide(&records, &program(), "boot-2"),
            Err(AbortError::Rebooted(..))
        ));
        assert_eq!(
            decide(&records[1..], &program(), "boot-1"),
            Err(AbortError::NoApplyRecord)
        );
    }

    /// The engine's side: a crash while db-2 was pausing (db-1 paused, the kernel loaded), then the abort, with a
    /// recording host: both guests continued, the kernel unloaded last, journalled like a rollback.
    #[test]
    fn the_engine_undoes_what_the_journal_says_and_records_it() {
        use crate::action::Action;
        use crate::exec::journal::{FinalState, Journal, read};
        use crate::exec::tests::RecordingHost;
        use crate::exec::{Engine, Options, Outcome, progress};
        use std::sync::Mutex;

        let program = program();
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(&dir.path().join("apply")).unwrap();
        for e in [
            started().event,
            start("preflight"),
            done("preflight"),
            start("kernel:load"),
            done("kernel:load"),
            start("vm:db-1:pause"),
            done("vm:db-1:pause"),
            start("vm:db-2:pause"),
        ] {
            journal.append(e).unwrap();
        }
        let records = read(&dir.path().join("apply")).unwrap().records;
        let undo = decide(&records, &program, "boot-1").unwrap();
        let host = RecordingHost {
            calls: Mutex::new(Vec::new()),
            fail: None,
        };
        let engine = Engine {
            host: &host,
            program: &program,
            options: Options::for_tests(crate::plan::OnFailure::Rollback),
            before_kexec: &|| Ok(()),
            progress: &progress::Progress::plain(),
        };
        let outcome = engine.abort(&mut journal, &undo);
        assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
        let calls = host.calls.into_inner().unwrap();
        let flat: Vec<&Action> = calls.iter().flatten().collect();
        let cont = |vm: &str| {
            flat.iter().position(|a| {
                matches!(a, Action::Qmp { command, socket, .. }
                if command == "cont" && socket.ends_with(format!("{vm}.qmp")))
            })
        };
        // The interrupted pause first, then the completed one.
        assert!(cont("db-2").unwrap() < cont("db-1").unwrap(), "{flat:?}");
        assert!(cont("monitor").is_none(), "monitor was never paused");
        assert!(matches!(flat.last(), Some(Action::KexecUnload)), "{flat:?}");
        // Nothing forward: no save, no kexec.
        assert!(!flat.iter().any(|a| matches!(a, Action::Reboot(_))
            || matches!(a, Action::Qmp { command, .. } if command == "migrate")));
        let after = read(&dir.path().join("apply")).unwrap().records;
        let events: Vec<&Event> = after[records.len()..].iter().map(|r| &r.event).collect();
        assert!(
            matches!(events[0], Event::RollbackStarted { .. }),
            "{events:?}"
        );
        let undone: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::StepRolledBack { step } => Some(step.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(undone, ["vm:db-2:pause", "vm:db-1:pause", "kernel:load"]);
        assert!(matches!(
            events.last(),
            Some(Event::Finished {
                state: FinalState::RolledBack,
                ..
            })
        ));
        // Aborting again undoes nothing more.
        let again = decide(&after, &program, "boot-1").unwrap();
        assert!(again.interrupted.is_empty(), "{again:?}");
        assert_eq!(again.completed, vec![id("preflight")]);
    }
}
