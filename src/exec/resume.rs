//! Deciding how to continue an apply from its journal: did a kexec happen (the boot id changed), into the kernel the
//! plan asked for, and which interrupted steps may safely run again. Pure, so every crash point can be tested.

use super::KEXEC;
use super::journal::{Event, Mode, Record};
use crate::cmdline::Cmdline;
use crate::graph::action::Program;
use crate::plan::Plan;
use std::collections::{BTreeMap, BTreeSet};

/// Facts about the machine `resume` runs on.
#[derive(Debug, Clone)]
pub struct Now {
    pub boot_id: String,
    pub release: String,
    pub proc_cmdline: String,
}

/// What `resume` will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Steps that count as done for scheduling.
    pub done: BTreeSet<String>,
    /// Records to write before running (the kexec's outcome, learnt only now).
    pub record: Vec<Event>,
    /// The boot changed since the apply (or last resume) last wrote.
    pub rebooted: bool,
    pub on_new_kernel: bool,
    /// Set when the update itself failed (old kernel came back, host rebooted before the kexec): the VMs are
    /// restored anyway and the run ends failed with this message.
    pub update_failed: Option<String>,
}

/// Whether a built-in step may run twice (custom steps say so in the plan).
pub fn idempotent(plan: &Plan, id: &str) -> bool {
    if let Some(name) = id.strip_prefix("step:") {
        return plan.steps.iter().any(|s| s.name == name && s.idempotent);
    }
    let kind = id.rsplit(':').next().unwrap_or(id);
    match kind {
        "preflight" | "load" | "check" | "sync" | "isolate" | "verify" | "pause" | "resume" => true,
        // A save writes a temporary file and renames it: repeating it overwrites nothing that matters.
        "save" => id.starts_with("vm:"),
        _ => false,
    }
}

/// The last thing the journal says about each step.
pub fn step_states(records: &[Record]) -> BTreeMap<String, &Event> {
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

pub fn decide(
    records: &[Record],
    program: &Program,
    plan: &Plan,
    now: &Now,
    rerun: &[String],
) -> Result<Decision, String> {
    let Some(start) = records.first() else {
        return Err("the journal is empty".to_owned());
    };
    let Event::ApplyStarted {
        mode,
        boot_id: first_boot,
        kernel_cmdline,
        ..
    } = &start.event
    else {
        return Err("the journal does not start with an apply record".to_owned());
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
    let known: BTreeSet<&str> = program.steps.iter().map(|s| s.id.as_str()).collect();
    for id in rerun {
        if !known.contains(id.as_str()) {
            return Err(format!("--rerun {id}: the plan has no such step"));
        }
    }
    for step in &program.steps {
        let id = step.id.as_str();
        match states.get(id) {
            Some(Event::StepDone { .. }) => {
                decision.done.insert(step.id.clone());
            }
            Some(Event::StepStarted { .. })
                if id != KEXEC && !idempotent(plan, id) && !rerun.iter().any(|r| r == id) =>
            {
                return Err(format!(
                    "step {id} was interrupted: it started but the journal does not say it finished, and it is \
                         not idempotent, so kup will not run it again blindly. Check what it did (its effect on the \
                         host), then run `kup plan resume --rerun {id}` to run it again or `--mark-done {id}` if it \
                         completed"
                ));
            }
            _ => {}
        }
    }
    let kexec_started = matches!(
        states.get(KEXEC),
        Some(Event::StepStarted { .. }) | Some(Event::StepFailed { .. })
    );
    let kexec_done = decision.done.contains(KEXEC);
    if kexec_done || !known.contains(KEXEC) {
        return Ok(decision);
    }
    match kexec_record {
        Some((kexec_boot, old_release)) if kexec_started && now.boot_id != kexec_boot => {
            let cmdline_ok = same_cmdline(&now.proc_cmdline, kernel_cmdline);
            let release_ok = plan
                .kernel
                .version
                .as_deref()
                .is_none_or(|v| v == now.release);
            decision.rebooted = true;
            decision.on_new_kernel = cmdline_ok && release_ok;
            decision.done.insert(KEXEC.to_owned());
            if decision.on_new_kernel {
                decision.record.push(Event::StepDone {
                    step: KEXEC.to_owned(),
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
                        plan.kernel.version.as_deref().unwrap_or("?")
                    )
                } else {
                    "the running kernel's command line is not the one kup loaded".to_owned()
                };
                let message = format!(
                    "THE UPDATE FAILED: the host rebooted after the kexec record but is not running the new kernel \
                     ({why}; the old kernel or a normal reboot came back). The VMs are being restored on this kernel."
                );
                decision.record.push(Event::StepFailed {
                    step: KEXEC.to_owned(),
                    duration_ms: 0,
                    error: message.clone(),
                });
                decision.update_failed = Some(message);
            }
        }
        Some(_) if kexec_started => {
            // Same boot as the kexec record: the kexec did not happen.
            if *mode == Mode::Rehearse || rerun.iter().any(|r| r == KEXEC) {
                // A rehearsal's kexec is a no-op, and the operator asked for it: run it again.
            } else {
                return Err(
                    "kup stopped while executing the kexec, but this is still the same boot: the kexec did not happen. \
                     Check `cat /sys/kernel/kexec_loaded`, then run `kup plan resume --rerun kexec` to try again"
                        .to_owned(),
                );
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
                step: KEXEC.to_owned(),
                duration_ms: 0,
                error: message.clone(),
            });
            decision.update_failed = Some(message);
        }
        _ => {}
    }
    Ok(decision)
}
