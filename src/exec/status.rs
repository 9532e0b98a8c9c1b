//! What an apply did, folded from its journal: each step's state and timing, per-VM downtime and blackout, the kexec
//! gap and the new kernel's boot — the report operators read after an update (`kup plan status`).

use super::blackout::{Blackout, blackouts};
use super::journal::{Event, FinalState, Mode, Record};
use crate::graph::{Program, StepId};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ApplyState {
    Running,
    Completed,
    Failed,
    RolledBack,
    PendingResume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    RolledBack,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepStatus {
    pub(crate) id: StepId,
    pub(crate) phase: crate::graph::Phase,
    pub(crate) state: StepState,
    pub(crate) started: Option<String>,
    pub(crate) finished: Option<String>,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) error: Option<String>,
    /// What a live patch step's actions reported (`{"name", "loaded", "enabled", "transition"}`, …), as journaled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) outputs: Vec<Value>,
}

/// A live patch's state as the journal last saw it: the latest action output of a live patch plan that names it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LivepatchStatus {
    pub(crate) name: String,
    pub(crate) loaded: bool,
    pub(crate) enabled: bool,
    pub(crate) transition: bool,
}

impl LivepatchStatus {
    fn of(output: &Value) -> Option<Self> {
        Some(Self {
            name: output.get("name")?.as_str()?.to_owned(),
            loaded: output.get("loaded")?.as_bool()?,
            enabled: output.get("enabled")?.as_bool()?,
            transition: output.get("transition")?.as_bool()?,
        })
    }
}

fn is_livepatch_step(id: &StepId) -> bool {
    matches!(
        id,
        StepId::LivepatchLoad { .. }
            | StepId::LivepatchTransition { .. }
            | StepId::LivepatchRemove { .. }
    )
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct KexecStatus {
    pub(crate) from_release: String,
    pub(crate) to_release: Option<String>,
    pub(crate) cmdline: String,
    /// Wall-clock seconds from the durable kexec record to the first resume on the new kernel.
    pub(crate) gap_s: Option<f64>,
    pub(crate) on_new_kernel: Option<bool>,
    /// The new kernel's boot phases (`kup boot-time`'s report), when resume recorded them.
    pub(crate) boot: Option<Value>,
    /// How long the new kernel had been up when resume started (CLOCK_BOOTTIME; precise, unlike `gap_s`, whose
    /// clocks are the old kernel's and the new kernel's wall clocks, the latter read from a one-second RTC).
    pub(crate) new_kernel_uptime_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) plan: String,
    pub(crate) journal: String,
    pub(crate) mode: Mode,
    pub(crate) state: ApplyState,
    pub(crate) message: Option<String>,
    pub(crate) started: Option<String>,
    pub(crate) finished: Option<String>,
    pub(crate) steps: Vec<StepStatus>,
    pub(crate) vm_downtime_ms: BTreeMap<String, u64>,
    /// Each stopped guest's blackout, split into parts on the clocks they were measured with.
    pub(crate) blackout: BTreeMap<String, Blackout>,
    pub(crate) kexec: Option<KexecStatus>,
    /// A live patch plan's patch, as its last journaled check saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) livepatch: Option<LivepatchStatus>,
    /// A last journal line cut short by a crash (dropped when reading).
    pub(crate) torn_tail: bool,
}

// Long by design: one pass over the journal, one arm per record kind, all sharing the state being folded.
/// Folds `records` (of the apply in `journal`) over `program`'s steps. `holder_alive`: whether the process holding
/// the journal lock is alive, which tells "running" from "crashed, resume needed".
pub(crate) fn fold(
    journal: &str,
    records: &[Record],
    program: &Program,
    vm_names: &[String],
    holder_alive: bool,
    torn_tail: bool,
) -> Status {
    let mut plan = String::new();
    let mut mode = Mode::Apply;
    let mut from_release = String::new();
    let mut steps: Vec<StepStatus> = program
        .steps
        .iter()
        .map(|s| StepStatus {
            id: s.id.clone(),
            phase: s.phase,
            state: StepState::Pending,
            started: None,
            finished: None,
            duration_ms: None,
            error: None,
            outputs: Vec::new(),
        })
        .collect();
    let livepatch_plan = program.steps.iter().any(|s| is_livepatch_step(&s.id));
    let mut livepatch = None;
    let position: BTreeMap<StepId, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut started_ms: BTreeMap<StepId, u64> = BTreeMap::new();
    let mut done_ms: BTreeMap<StepId, u64> = BTreeMap::new();
    let mut finish: Option<(&Record, FinalState, String)> = None;
    let mut kexec: Option<(u64, String)> = None;
    let mut resumed_after_kexec: Option<(u64, String, bool, Option<u64>)> = None;
    let mut boot = None;
    for r in records {
        match &r.event {
            Event::ApplyStarted {
                plan: name,
                mode: m,
                release,
                ..
            } => {
                plan = name.clone();
                mode = *m;
                from_release = release.clone();
            }
            Event::StepStarted { step } => {
                if let Some(&i) = position.get(step) {
                    steps[i].state = StepState::Running;
                    steps[i].started = Some(r.time.clone());
                    steps[i].finished = None;
                    steps[i].error = None;
                }
                started_ms.entry(step.clone()).or_insert(r.unix_ms);
            }
            Event::StepDone {
                step,
                duration_ms,
                outputs,
            } => {
                if let Some(&i) = position.get(step) {
                    steps[i].state = StepState::Done;
                    steps[i].finished = Some(r.time.clone());
                    steps[i].duration_ms = Some(*duration_ms);
                    if is_livepatch_step(step) {
                        steps[i].outputs = outputs.clone();
                    }
                }
                if livepatch_plan {
                    livepatch = outputs
                        .iter()
                        .rev()
                        .find_map(LivepatchStatus::of)
                        .or(livepatch);
                }
                done_ms.insert(step.clone(), r.unix_ms);
            }
            Event::StepFailed {
                step,
                duration_ms,
                error,
            } => {
                if let Some(&i) = position.get(step) {
                    steps[i].state = StepState::Failed;
                    steps[i].finished = Some(r.time.clone());
                    steps[i].duration_ms = Some(*duration_ms);
                    steps[i].error = Some(error.clone());
                }
            }
            Event::StepRolledBack { step } => {
                // A failed step that was undone stays "failed": that is what the operator needs to see.
                if let Some(&i) = position.get(step)
                    && steps[i].state != StepState::Failed
                {
                    steps[i].state = StepState::RolledBack;
                }
            }
            Event::Kexec { kernel_cmdline, .. } => {
                kexec = Some((r.unix_ms, kernel_cmdline.clone()))
            }
            Event::ResumeStarted {
                release,
                rebooted,
                on_new_kernel,
                uptime_ms,
                ..
            } => {
                // A resume reopens an apply that had finished (a retry after a failure).
                finish = None;
                if *rebooted && kexec.is_some() && resumed_after_kexec.is_none() {
                    resumed_after_kexec =
                        Some((r.unix_ms, release.clone(), *on_new_kernel, *uptime_ms));
                }
            }
            // The report recorded before the kexec is the old kernel's; the new kernel's comes after the record.
            Event::BootReport { report } if kexec.is_some() => boot = Some(report.clone()),
            Event::BootReport { .. } => {}
            Event::Finished { state, message } => finish = Some((r, *state, message.clone())),
            Event::RollbackStarted { .. } | Event::RollbackFailed { .. } => {}
        }
    }
    let state = match &finish {
        Some((_, FinalState::Completed, _)) => ApplyState::Completed,
        Some((_, FinalState::RolledBack, _)) => ApplyState::RolledBack,
        Some((_, FinalState::Failed, _)) => ApplyState::Failed,
        None if holder_alive => ApplyState::Running,
        None => ApplyState::PendingResume,
    };
    let vm_downtime_ms = vm_names
        .iter()
        .filter_map(|vm| {
            // A restarted guest is down from its shutdown until its new QEMU runs.
            let paused = started_ms
                .get(&StepId::VmPause { vm: vm.clone() })
                .or_else(|| started_ms.get(&StepId::VmShutdown { vm: vm.clone() }))?;
            let resumed = done_ms
                .get(&StepId::VmResume { vm: vm.clone() })
                .or_else(|| done_ms.get(&StepId::VmBoot { vm: vm.clone() }))?;
            Some((vm.clone(), resumed.saturating_sub(*paused)))
        })
        .collect();
    // A rehearsal's kexec is a no-op: there is no gap to report. When the kernel that came back is not the new one,
    // there was no hand-over either: its boot and timing describe a failed update, not the kexec's cost.
    let kexec = kexec.filter(|_| mode == Mode::Apply).map(|(at, cmdline)| {
        let new = resumed_after_kexec.as_ref().filter(|r| r.2);
        KexecStatus {
            from_release,
            to_release: resumed_after_kexec.as_ref().map(|r| r.1.clone()),
            cmdline,
            gap_s: new.map(|r| r.0.saturating_sub(at) as f64 / 1000.0),
            on_new_kernel: resumed_after_kexec.as_ref().map(|r| r.2),
            boot: new.and(boot),
            new_kernel_uptime_s: new.and_then(|r| r.3).map(|ms| ms as f64 / 1000.0),
        }
    });
    Status {
        plan,
        journal: journal.to_owned(),
        mode,
        state,
        message: finish.as_ref().map(|(_, _, m)| m.clone()),
        started: records.first().map(|r| r.time.clone()),
        finished: finish.as_ref().map(|(r, _, _)| r.time.clone()),
        steps,
        vm_downtime_ms,
        blackout: blackouts(records, program, vm_names),
        kexec,
        livepatch,
        torn_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::blackout::fixtures::{Journal, lab_boot_report};

    #[test]
    fn status_reports_vm_downtime_the_kexec_gap_and_the_new_kernels_boot() {
        let bytes = std::fs::read("plans/single-qemu-shared-ram.toml").unwrap();
        let (plan, graph) = crate::check::check("p.toml", &bytes).valid().unwrap();
        let program = crate::graph::compile(&plan, &graph, "root=/dev/sda1");
        let boot = lab_boot_report();
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.started(2_000, "vm:db-1:pause")
            .done(2_005, "vm:db-1:pause", vec![])
            .kexec(3_001)
            .resumed(7_501, Some(3_250), Some(boot.clone()))
            .done(8_000, "vm:db-1:resume", vec![]);
        let records = j.records;
        let status = fold("/j", &records, &program, &["db-1".into()], false, false);
        assert_eq!(
            status.state,
            ApplyState::PendingResume,
            "no finished record and nobody holds the lock"
        );
        assert_eq!(status.vm_downtime_ms["db-1"], 6_000);
        let kexec = status.kexec.expect("kexec status");
        assert_eq!(kexec.gap_s, Some(4.5));
        assert_eq!(kexec.new_kernel_uptime_s, Some(3.25));
        assert_eq!(kexec.new_kernel_uptime_s, Some(3.25));
        assert_eq!(kexec.to_release.as_deref(), Some("6.12.9-lts"));
        assert_eq!(kexec.from_release, "6.1.0-old");
        assert_eq!(
            kexec.boot.as_ref().and_then(|b| b.get("cpus")),
            boot.get("cpus")
        );
        assert!(boot["time_to_init_s"].as_f64().is_some_and(|t| t > 0.0));
        let step = |id: &str| status.steps.iter().find(|s| s.id == *id).unwrap().state;
        assert_eq!(step("vm:db-1:pause"), StepState::Done);
        assert_eq!(step("vm:db-1:save"), StepState::Pending);
    }
}
