//! What an apply did, folded from its journal: each step's state and timing, per-VM downtime, the kexec gap and the
//! new kernel's boot — the report operators read after an update (`kup plan status`).

use super::journal::{Event, FinalState, Mode, Record};
use crate::graph::action::Program;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyState {
    Running,
    Completed,
    Failed,
    RolledBack,
    PendingResume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    RolledBack,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepStatus {
    pub id: String,
    pub phase: crate::graph::Phase,
    pub state: StepState,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KexecStatus {
    pub from_release: String,
    pub to_release: Option<String>,
    pub cmdline: String,
    /// Wall-clock seconds from the durable kexec record to the first resume on the new kernel.
    pub gap_s: Option<f64>,
    pub on_new_kernel: Option<bool>,
    /// The new kernel's boot phases (`kup boot-time`'s report), when resume recorded them.
    pub boot: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub plan: String,
    pub journal: String,
    pub mode: Mode,
    pub state: ApplyState,
    pub message: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub steps: Vec<StepStatus>,
    pub vm_downtime_ms: BTreeMap<String, u64>,
    pub kexec: Option<KexecStatus>,
    /// A last journal line cut short by a crash (dropped when reading).
    pub torn_tail: bool,
}

/// Folds `records` (of the apply in `journal`) over `program`'s steps. `holder_alive`: whether the process holding
/// the journal lock is alive, which tells "running" from "crashed, resume needed".
pub fn fold(
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
        })
        .collect();
    let position: BTreeMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut started_ms: BTreeMap<String, u64> = BTreeMap::new();
    let mut done_ms: BTreeMap<String, u64> = BTreeMap::new();
    let mut finish: Option<(&Record, FinalState, String)> = None;
    let mut kexec: Option<(u64, String)> = None;
    let mut resumed_after_kexec: Option<(u64, String, bool)> = None;
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
                step, duration_ms, ..
            } => {
                if let Some(&i) = position.get(step) {
                    steps[i].state = StepState::Done;
                    steps[i].finished = Some(r.time.clone());
                    steps[i].duration_ms = Some(*duration_ms);
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
                ..
            } => {
                // A resume reopens an apply that had finished (a retry after a failure).
                finish = None;
                if *rebooted && kexec.is_some() && resumed_after_kexec.is_none() {
                    resumed_after_kexec = Some((r.unix_ms, release.clone(), *on_new_kernel));
                }
            }
            Event::BootReport { report } => boot = Some(report.clone()),
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
            let paused = started_ms.get(&format!("vm:{vm}:pause"))?;
            let resumed = done_ms.get(&format!("vm:{vm}:resume"))?;
            Some((vm.clone(), resumed.saturating_sub(*paused)))
        })
        .collect();
    // A rehearsal's kexec is a no-op: there is no gap to report.
    let kexec = kexec
        .filter(|_| mode == Mode::Apply)
        .map(|(at, cmdline)| KexecStatus {
            from_release,
            to_release: resumed_after_kexec
                .as_ref()
                .map(|(_, release, _)| release.clone()),
            cmdline,
            gap_s: resumed_after_kexec
                .as_ref()
                .map(|(resumed, _, _)| resumed.saturating_sub(at) as f64 / 1000.0),
            on_new_kernel: resumed_after_kexec.as_ref().map(|(_, _, ok)| *ok),
            boot,
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
        kexec,
        torn_tail,
    }
}
