//! Deciding how to continue an apply from its journal: did a kexec happen (the boot id changed), into the kernel the
//! plan asked for, and which interrupted steps may safely run again. Pure, so every crash point can be tested.

use super::journal::{Event, Mode, Record};
use crate::cmdline::Cmdline;
use crate::graph::{Phase, Program, StepId};
use std::collections::{BTreeMap, BTreeSet};

/// Why `resume` will not go on by itself; each says what the operator should check or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResumeError {
    /// Nothing was ever recorded.
    #[error("the journal is empty")]
    EmptyJournal,
    /// The first record is not the apply's.
    #[error("the journal does not start with an apply record")]
    NoApplyRecord,
    /// `--rerun` names no step of the plan.
    #[error("--rerun {0}: the plan has no such step")]
    UnknownStep(String),
    /// A step that is not safe to repeat started and did not finish.
    #[error(
        "step {0} was interrupted: it started but the journal does not say it finished, and it is not idempotent, \
         so kup will not run it again blindly. Check what it did (its effect on the host), then run `kup plan \
         resume --rerun {0}` to run it again or `--mark-done {0}` if it completed"
    )]
    Interrupted(StepId),
    /// kup stopped during the kexec step in the same boot.
    #[error(
        "kup stopped while executing the kexec, but this is still the same boot: the kexec did not happen. Check \
         `cat /sys/kernel/kexec_loaded`, then run `kup plan resume --rerun kexec` to try again"
    )]
    KexecInterrupted,
}

/// Facts about the machine `resume` runs on.
#[derive(Debug, Clone)]
pub(crate) struct Now {
    pub(crate) boot_id: String,
    pub(crate) release: String,
    pub(crate) proc_cmdline: String,
}

/// What `resume` will do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// Steps that count as done for scheduling.
    pub(crate) done: BTreeSet<StepId>,
    /// Records to write before running (the kexec's outcome, learnt only now).
    pub(crate) record: Vec<Event>,
    /// The boot changed since the apply (or last resume) last wrote.
    pub(crate) rebooted: bool,
    pub(crate) on_new_kernel: bool,
    /// Set when the update itself failed (old kernel came back, host rebooted before the kexec): the VMs are
    /// restored anyway and the run ends failed with this message.
    pub(crate) update_failed: Option<String>,
}

/// The last thing the journal says about each step.
pub(crate) fn step_states(records: &[Record]) -> BTreeMap<StepId, &Event> {
    let mut states = BTreeMap::new();
    for r in records {
        match &r.event {
            Event::StepStarted { step }
            | Event::StepDone { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepRolledBack { step } => {
                states.insert(step.clone(), &r.event);
            }
            _ => {}
        }
    }
    states
}

/// The kernel accepted exactly the command line kup gave it (the kernel may normalise whitespace).
fn same_cmdline(a: &str, b: &str) -> bool {
    Cmdline::parse(a) == Cmdline::parse(b)
}

// Long by design: the resume decision reads as one table of cases (done, interrupted, kexec proven, kexec failed, host rebooted early); splitting it would hide which case wins.
/// Decides how to continue the apply of `records` on the machine `now`, re-running the `rerun` steps although
/// they are not idempotent (the operator checked them).
pub(crate) fn decide(
    records: &[Record],
    program: &Program,
    now: &Now,
    rerun: &[String],
) -> Result<Decision, ResumeError> {
    let Some(start) = records.first() else {
        return Err(ResumeError::EmptyJournal);
    };
    let Event::ApplyStarted {
        mode,
        boot_id: first_boot,
        kernel_cmdline,
        ..
    } = &start.event
    else {
        return Err(ResumeError::NoApplyRecord);
    };
    // The boot this apply last ran in: a resume in a later boot counts.
    let last_boot = records
        .iter()
        .rev()
        .find_map(|r| match &r.event {
            Event::ResumeStarted { boot_id, .. } | Event::Kexec { boot_id, .. } => {
                Some(boot_id.as_str())
            }
            _ => None,
        })
        .unwrap_or(first_boot);
    let states = step_states(records);
    let kexec_record = records.iter().rev().find_map(|r| match &r.event {
        Event::Kexec {
            boot_id, release, ..
        } => Some((boot_id.as_str(), release.as_str())),
        _ => None,
    });
    let mut decision = Decision {
        done: BTreeSet::new(),
        record: Vec::new(),
        rebooted: now.boot_id != last_boot,
        on_new_kernel: false,
        update_failed: None,
    };
    let known: BTreeSet<&StepId> = program.steps.iter().map(|s| &s.id).collect();
    let mut rerun_ids = BTreeSet::new();
    for text in rerun {
        match text.parse::<StepId>() {
            Ok(id) if known.contains(&id) => {
                rerun_ids.insert(id);
            }
            _ => return Err(ResumeError::UnknownStep(text.clone())),
        }
    }
    for step in &program.steps {
        match states.get(&step.id) {
            // A step after the kexec that completed but whose effect was lost (a restored guest's QEMU died
            // before its resume): the operator asks for it again.
            Some(Event::StepDone { .. })
                if step.phase == Phase::After && rerun_ids.contains(&step.id) => {}
            Some(Event::StepDone { .. }) => {
                decision.done.insert(step.id.clone());
            }
            Some(Event::StepStarted { .. })
                if step.id != StepId::Kexec
                    && !step.idempotent
                    && !rerun_ids.contains(&step.id) =>
            {
                return Err(ResumeError::Interrupted(step.id.clone()));
            }
            _ => {}
        }
    }
    // What follows a step after the kexec that runs (again) runs again too: it acted on what an earlier run made (a
    // custom step after a restore acted on the QEMU that was lost), and a step whose direct predecessors are all
    // done would otherwise start alongside it. Only a step run again (`--rerun`) or failed since can have done
    // steps after it.
    let mut again: BTreeSet<&StepId> = program
        .steps
        .iter()
        .filter(|s| s.phase == Phase::After && !decision.done.contains(&s.id))
        .map(|s| &s.id)
        .collect();
    while let Some(step) = program
        .steps
        .iter()
        .find(|s| !again.contains(&s.id) && s.after.iter().any(|d| again.contains(d)))
    {
        again.insert(&step.id);
        decision.done.remove(&step.id);
    }
    let kexec_started = matches!(
        states.get(&StepId::Kexec),
        Some(Event::StepStarted { .. }) | Some(Event::StepFailed { .. })
    );
    let kexec_done = decision.done.contains(&StepId::Kexec);
    if kexec_done || !known.contains(&StepId::Kexec) {
        return Ok(decision);
    }
    match kexec_record {
        Some((kexec_boot, old_release)) if kexec_started && now.boot_id != kexec_boot => {
            let cmdline_ok = same_cmdline(&now.proc_cmdline, kernel_cmdline);
            let release_ok = program
                .target_release
                .as_deref()
                .is_none_or(|v| v == now.release);
            decision.rebooted = true;
            decision.on_new_kernel = cmdline_ok && release_ok;
            decision.done.insert(StepId::Kexec);
            if decision.on_new_kernel {
                decision.record.push(Event::StepDone {
                    step: StepId::Kexec,
                    duration_ms: 0,
                    outputs: vec![
                        serde_json::json!({ "release": now.release, "from_release": old_release }),
                    ],
                });
            } else {
                let why = if !release_ok {
                    format!(
                        "the running kernel is {} but the plan asked for {}",
                        now.release,
                        program.target_release.as_deref().unwrap_or("?")
                    )
                } else {
                    "the running kernel's command line is not the one kup loaded".to_owned()
                };
                let message = format!(
                    "THE UPDATE FAILED: the host rebooted after the kexec record but is not running the new kernel \
                     ({why}; the old kernel or a normal reboot came back). What was saved before the kexec (guests, apps) is being restored on this kernel."
                );
                decision.record.push(Event::StepFailed {
                    step: StepId::Kexec,
                    duration_ms: 0,
                    error: message.clone(),
                });
                decision.update_failed = Some(message);
            }
        }
        Some(_) if kexec_started => {
            // Same boot as the kexec record: the kexec did not happen.
            if *mode == Mode::Rehearse || rerun_ids.contains(&StepId::Kexec) {
                // A rehearsal's kexec is a no-op, and the operator asked for it: run it again.
            } else {
                return Err(ResumeError::KexecInterrupted);
            }
        }
        _ if decision.rebooted => {
            // No kexec record, yet a new boot: the host went down during the steps before the kexec. Running
            // guests died with it; what was saved can still be restored.
            let message = "THE UPDATE FAILED: the host rebooted before the kexec (power loss or a crash). Guests \
                           whose state was saved are being restored; others must be started by hand."
                .to_owned();
            for step in program
                .steps
                .iter()
                .filter(|s| s.phase != crate::graph::Phase::After)
            {
                decision.done.insert(step.id.clone());
            }
            decision.record.push(Event::StepFailed {
                step: StepId::Kexec,
                duration_ms: 0,
                error: message.clone(),
            });
            decision.update_failed = Some(message);
        }
        _ => {}
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::journal::{Mode, Record};

    const PLAN: &str = r#"
kup = 1
[kernel]
image = "/boot/vmlinuz-new"
version = "6.12.9"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[[step]]
name = "before"
run = ["/bin/true"]
before = ["kexec"]
[[step]]
name = "after"
run = ["/bin/true"]
after = ["kexec"]
"#;

    fn setup() -> ((), Program) {
        ((), compiled(PLAN))
    }

    /// The program of `PLAN` with a QMP guest `db` of `memory` mode, then `more`.
    fn with_db(memory: &str, more: &str) -> Program {
        compiled(&format!(
            "{PLAN}[[vm]]\nname = \"db\"\nqmp = \"/run/qemu/db.qmp\"\nstate = \"/var/lib/kup/db\"\nmemory = \"{memory}\"\nrestart = [\"/bin/true\"]\n\n{more}"
        ))
    }

    /// The program of plan `text`, checked (it must be valid) and compiled.
    fn compiled(text: &str) -> Program {
        let (plan, graph) = crate::check::check("t.toml", text.as_bytes())
            .valid()
            .expect("valid plan");
        crate::graph::compile(&plan, &graph, "root=/dev/sda1 cpuhp.parallel=1")
    }

    const KEXEC: StepId = StepId::Kexec;

    fn id(text: &str) -> StepId {
        text.parse().unwrap()
    }

    use crate::exec::test_support::rec;

    /// The journal of an apply that got as far as executing the kexec.
    fn up_to_kexec(program: &Program, mode: Mode) -> Vec<Record> {
        let mut records = vec![rec(
            1,
            Event::ApplyStarted {
                plan: "t".into(),
                plan_path: "/t.toml".into(),
                plan_sha256: "x".into(),
                mode,
                kernel_load: true,
                boot_id: "boot-1".into(),
                release: "6.1.0".into(),
                hostname: "h".into(),
                pid: 1,
                kernel_cmdline: "root=/dev/sda1 cpuhp.parallel=1".into(),
            },
        )];
        for step in program.steps.iter().take_while(|s| s.id != KEXEC) {
            let n = records.len() as u64 + 1;
            records.push(rec(
                n,
                Event::StepStarted {
                    step: step.id.clone(),
                },
            ));
            records.push(rec(
                n + 1,
                Event::StepDone {
                    step: step.id.clone(),
                    duration_ms: 1,
                    outputs: vec![],
                },
            ));
        }
        let n = records.len() as u64 + 1;
        records.push(rec(n, Event::StepStarted { step: KEXEC }));
        records.push(rec(
            n + 1,
            Event::Kexec {
                boot_id: "boot-1".into(),
                release: "6.1.0".into(),
                kernel_cmdline: "x".into(),
            },
        ));
        records
    }

    fn now(boot_id: &str, release: &str, cmdline: &str) -> Now {
        Now {
            boot_id: boot_id.into(),
            release: release.into(),
            proc_cmdline: cmdline.into(),
        }
    }

    /// What resume decides after an apply's durable kexec record, in another boot of `release` with `cmdline`.
    fn resumed_in_boot_2(release: &str, cmdline: &str) -> Decision {
        let ((), program) = setup();
        let records = up_to_kexec(&program, Mode::Apply);
        decide(&records, &program, &now("boot-2", release, cmdline), &[]).unwrap()
    }

    #[test]
    fn the_new_kernel_with_our_cmdline_proves_the_kexec() {
        let d = resumed_in_boot_2("6.12.9", "root=/dev/sda1  cpuhp.parallel=1\n");
        assert!(d.rebooted && d.on_new_kernel && d.update_failed.is_none());
        assert!(
            d.done.contains(&KEXEC)
                && d.done.contains(&id("step:before"))
                && !d.done.contains(&id("step:after"))
        );
        assert!(matches!(&d.record[..], [Event::StepDone { step, .. }] if *step == KEXEC));
    }

    #[test]
    fn the_old_kernel_coming_back_is_a_failed_update_that_still_restores() {
        let d = resumed_in_boot_2("6.1.0", "root=/dev/sda1 quiet");
        assert!(d.rebooted && !d.on_new_kernel);
        let message = d.update_failed.expect("a failed update");
        assert!(
            message.contains("6.1.0") && message.contains("6.12.9"),
            "{message}"
        );
        // The after-kexec steps still run: the kexec counts as done for scheduling.
        assert!(d.done.contains(&KEXEC) && !d.done.contains(&id("step:after")));
        assert!(matches!(&d.record[..], [Event::StepFailed { step, .. }] if *step == KEXEC));
    }

    #[test]
    fn the_right_release_with_another_cmdline_is_not_our_kexec() {
        let d = resumed_in_boot_2("6.12.9", "root=/dev/sda1");
        assert!(!d.on_new_kernel && d.update_failed.is_some());
    }

    #[test]
    fn a_kexec_that_did_not_happen_in_the_same_boot_needs_an_operator() {
        let ((), program) = setup();
        let records = up_to_kexec(&program, Mode::Apply);
        let same_boot = now("boot-1", "6.1.0", "x");
        let err = decide(&records, &program, &same_boot, &[]).unwrap_err();
        assert!(err.to_string().contains("--rerun kexec"), "{err}");
        // The operator may ask for it again; a rehearsal's no-op kexec is simply run again.
        assert!(decide(&records, &program, &same_boot, &["kexec".into()]).is_ok());
        let rehearsal = up_to_kexec(&program, Mode::Rehearse);
        let d = decide(&rehearsal, &program, &same_boot, &[]).unwrap();
        assert!(!d.done.contains(&KEXEC));
    }

    #[test]
    fn a_reboot_before_the_kexec_restores_what_was_saved_and_fails_the_update() {
        let ((), program) = setup();
        let mut records = up_to_kexec(&program, Mode::Apply);
        records.truncate(3); // apply-started, preflight started and done
        let d = decide(&records, &program, &now("boot-2", "6.1.0", "x"), &[]).unwrap();
        assert!(
            d.rebooted
                && d.update_failed
                    .as_deref()
                    .is_some_and(|m| m.contains("before the kexec"))
        );
        assert!(
            d.done.contains(&KEXEC)
                && d.done.contains(&id("step:before"))
                && !d.done.contains(&id("step:after"))
        );
    }

    #[test]
    fn a_crash_before_the_kexec_in_the_same_boot_continues_forward() {
        let ((), program) = setup();
        let mut records = up_to_kexec(&program, Mode::Apply);
        records.truncate(3);
        let d = decide(&records, &program, &now("boot-1", "6.1.0", "x"), &[]).unwrap();
        assert!(!d.rebooted && d.update_failed.is_none() && d.record.is_empty());
        assert!(d.done.contains(&id("preflight")) && !d.done.contains(&KEXEC));
    }

    #[test]
    fn unknown_rerun_ids_are_rejected() {
        let ((), program) = setup();
        let records = up_to_kexec(&program, Mode::Apply);
        let same_boot = now("boot-1", "x", "x");
        assert!(decide(&records, &program, &same_boot, &["nope".into()]).is_err());
    }

    #[test]
    fn a_restore_refused_on_its_ram_digest_runs_again_and_checks_again() {
        let program = with_db("shared", "");
        let mut records = up_to_kexec(&program, Mode::Apply);
        let n = records.len() as u64;
        records.push(rec(
            n + 1,
            Event::StepDone {
                step: KEXEC,
                duration_ms: 0,
                outputs: vec![],
            },
        ));
        records.push(rec(
            n + 2,
            Event::StepStarted {
                step: id("vm:db:restore"),
            },
        ));
        records.push(rec(
            n + 3,
            Event::StepFailed {
                step: id("vm:db:restore"),
                duration_ms: 1,
                error: "the guest's RAM in /ram is not what was saved".into(),
            },
        ));
        let d = decide(&records, &program, &now("boot-2", "6.12.9", "x"), &[]).unwrap();
        // Not done, and not an interrupted step that needs --rerun: the resume runs it again, digest check first.
        assert!(!d.done.contains(&id("vm:db:restore")), "{d:?}");
        let restore = program
            .steps
            .iter()
            .find(|s| s.id == id("vm:db:restore"))
            .unwrap();
        assert!(
            matches!(
                restore.actions.first(),
                Some(crate::action::Action::CheckRamDigest { .. })
            ),
            "{:?}",
            restore.actions.first()
        );
    }

    /// A restore done whose QEMU was lost before its resume: `--rerun` runs it again, and what follows it (a custom
    /// step between it and the resume, the resume) again too; a done step before the kexec is never run again.
    #[test]
    fn a_done_restore_rerun_runs_again_with_what_follows_it() {
        let program = with_db(
            "copy",
            "[[step]]\nname = \"poke\"\nrun = [\"/bin/true\"]\nafter = [\"vm:db:restore\"]\nbefore = [\"vm:db:resume\"]\n",
        );
        let mut records = up_to_kexec(&program, Mode::Apply);
        let mut n = records.len() as u64;
        let mut push = |records: &mut Vec<Record>, event: Event| {
            n += 1;
            records.push(rec(n, event));
        };
        push(
            &mut records,
            Event::StepDone {
                step: KEXEC,
                duration_ms: 0,
                outputs: vec![],
            },
        );
        for step in ["vm:db:restore", "step:poke", "step:after"] {
            push(
                &mut records,
                Event::StepDone {
                    step: id(step),
                    duration_ms: 1,
                    outputs: vec![],
                },
            );
        }
        push(
            &mut records,
            Event::StepFailed {
                step: id("vm:db:resume"),
                duration_ms: 1,
                error: "QEMU reset the connection".into(),
            },
        );
        let now = now("boot-2", "6.12.9", "x");
        let plain = decide(&records, &program, &now, &[]).unwrap();
        assert!(plain.done.contains(&id("vm:db:restore")), "{plain:?}");
        let again = decide(&records, &program, &now, &["vm:db:restore".into()]).unwrap();
        for step in ["vm:db:restore", "step:poke", "vm:db:resume", "verify"] {
            assert!(!again.done.contains(&id(step)), "{step}: {again:?}");
        }
        for step in ["step:after", "vm:db:save", "kexec"] {
            assert!(again.done.contains(&id(step)), "{step}: {again:?}");
        }
        let before = decide(&records, &program, &now, &["vm:db:save".into()]).unwrap();
        assert_eq!(before.done, plain.done);
        // That restore run again fails: the next resume runs it again, and what follows it, without `--rerun`.
        push(
            &mut records,
            Event::StepStarted {
                step: id("vm:db:restore"),
            },
        );
        push(
            &mut records,
            Event::StepFailed {
                step: id("vm:db:restore"),
                duration_ms: 1,
                error: "the pidfile is locked".into(),
            },
        );
        let next = decide(&records, &program, &now, &[]).unwrap();
        assert_eq!(next.done, again.done);
    }
}
