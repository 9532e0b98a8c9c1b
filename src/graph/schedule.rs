//! The earliest-start schedule of a step graph and what it says about downtime.
//!
//! Every step starts as soon as all the steps it waits for have ended, with unlimited parallelism.
//! `policy.parallelism` is not modelled — a bound would make the estimate depend on a scheduling order the executor
//! may not follow — so where more steps overlap than it allows, the estimate is optimistic and
//! [`Schedule::max_overlap`] lets the renderings say so. From that
//! schedule: the critical path (the chain of steps that ends last), each VM's downtime (from the start of its
//! pause to the end of its resume) and the host's downtime (from the first step that stops a workload or the
//! host's services to the last step that brings one back, or the kexec alone when nothing is stopped).

use super::{Phase, StepGraph, StepId, StepKind, code};
use crate::plan::{Diagnostic, MemoryMode, Plan, VmDriver};
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// One step as scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The step.
    pub id: StepId,
    pub(crate) phase: Phase,
    /// Earliest start, from the start of the plan.
    pub start: Duration,
    pub(crate) estimate: Duration,
    /// When `estimate` is measured (`--history`): how many runs it is the median of.
    pub(crate) measured: Option<usize>,
    pub end: Duration,
    /// Length of the longest chain of steps before this one: steps of one level never wait for each other, so
    /// each level is a group that can run at once.
    pub(crate) level: usize,
    /// On the critical path.
    pub(crate) critical: bool,
    /// Ids of the steps this one waits for directly, in schedule order.
    pub after: Vec<StepId>,
}

/// The schedule of a whole graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Every step, in an order that respects every edge (by start time, then plan order).
    pub slots: Vec<Slot>,
    /// Ids along the chain of steps that ends last.
    pub critical_path: Vec<StepId>,
    /// End of the last step: how long the whole plan is expected to take.
    pub total: Duration,
    /// Per VM, in plan order: from its pause's start to its resume's end.
    pub vm_downtime: Vec<(String, Duration)>,
    /// See the module documentation.
    pub(crate) host_downtime: Duration,
}

/// When each step starts and ends in the earliest-start schedule, and the order the steps are scheduled in: all
/// [`budget`] needs to know whether the plan is within `policy.max_downtime`, without the slots' ids.
struct Timing {
    start: Vec<Duration>,
    end: Vec<Duration>,
    level: Vec<usize>,
    order: Vec<NodeIndex>,
}

impl Timing {
    fn of(graph: &StepGraph) -> Self {
        let g = graph.graph();
        let n = g.node_count();
        let mut start = vec![Duration::ZERO; n];
        let mut end = vec![Duration::ZERO; n];
        let mut level = vec![0usize; n];
        let mut waiting: Vec<usize> = g
            .node_indices()
            .map(|i| g.neighbors_directed(i, Direction::Incoming).count())
            .collect();
        // Kahn's algorithm; among ready steps the earliest start goes first, then plan order.
        let mut ready: BinaryHeap<Reverse<(Duration, NodeIndex)>> = g
            .node_indices()
            .filter(|i| waiting[i.index()] == 0)
            .map(|i| Reverse((Duration::ZERO, i)))
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse((_, node))) = ready.pop() {
            let i = node.index();
            end[i] = start[i].saturating_add(g[node].estimate);
            order.push(node);
            for next in g.neighbors_directed(node, Direction::Outgoing) {
                let j = next.index();
                start[j] = start[j].max(end[i]);
                level[j] = level[j].max(level[i] + 1);
                waiting[j] = waiting[j].saturating_sub(1);
                if waiting[j] == 0 {
                    ready.push(Reverse((start[j], next)));
                }
            }
        }
        Self {
            start,
            end,
            level,
            order,
        }
    }

    /// Per VM, in plan order, from its pause's start to its resume's end; and the host's downtime (see the module
    /// documentation).
    fn downtimes(&self, graph: &StepGraph) -> (Vec<(String, Duration)>, Duration) {
        let g = graph.graph();
        let (start, end) = (&self.start, &self.end);
        let mut vm_downtime = Vec::new();
        let mut pauses: Vec<(usize, Duration)> = Vec::new();
        let mut resumes: Vec<(usize, Duration, String)> = Vec::new();
        let (mut down_from, mut down_to): (Option<Duration>, Option<Duration>) = (None, None);
        for node in g.node_indices() {
            let i = node.index();
            match g[node].kind {
                StepKind::VmPause { vm } | StepKind::VmShutdown { vm } => {
                    pauses.push((vm, start[i]))
                }
                StepKind::VmResume { vm } | StepKind::VmBoot { vm } => {
                    let name = g[node].id.vm().unwrap_or_default().to_owned();
                    resumes.push((vm, end[i], name));
                }
                _ => {}
            }
            // The host is down from the first step that stops a service to the last that restarts one; the kexec
            // does both.
            let (stops, restarts) = match g[node].kind {
                StepKind::VmPause { .. }
                | StepKind::VmShutdown { .. }
                | StepKind::AppSave { .. }
                | StepKind::Isolate => (true, false),
                StepKind::VmResume { .. }
                | StepKind::VmBoot { .. }
                | StepKind::AppRestore { .. } => (false, true),
                StepKind::Kexec => (true, true),
                _ => (false, false),
            };
            if stops {
                down_from = Some(down_from.map_or(start[i], |d| d.min(start[i])));
            }
            if restarts {
                down_to = Some(down_to.map_or(end[i], |d| d.max(end[i])));
            }
        }
        resumes.sort_by_key(|r| r.0);
        for (vm, resumed, name) in resumes {
            let paused = pauses
                .iter()
                .find(|p| p.0 == vm)
                .map_or(Duration::ZERO, |p| p.1);
            vm_downtime.push((name, resumed.saturating_sub(paused)));
        }
        let host_downtime = match (down_from, down_to) {
            (Some(from), Some(to)) => to.saturating_sub(from),
            _ => Duration::ZERO,
        };
        (vm_downtime, host_downtime)
    }
}

impl Schedule {
    pub(crate) fn of(graph: &StepGraph) -> Self {
        Self::from_timing(graph, Timing::of(graph))
    }

    /// The slots, the critical path and the downtimes of a computed timing.
    fn from_timing(graph: &StepGraph, timing: Timing) -> Self {
        let g = graph.graph();
        let n = g.node_count();
        let (start, end, order) = (&timing.start, &timing.end, &timing.order);
        // `order` holds every node: StepGraph::build refuses cycles.
        let position: Vec<usize> = {
            let mut p = vec![usize::MAX; n];
            for (k, node) in order.iter().enumerate() {
                p[node.index()] = k;
            }
            p
        };
        let total = end.iter().copied().max().unwrap_or_default();
        let mut critical = vec![false; n];
        let mut critical_path = Vec::new();
        // The last step to end, the first of them in schedule order on a tie; then back through the predecessor
        // that ended last.
        let mut at = order.iter().copied().find(|x| end[x.index()] == total);
        while let Some(node) = at {
            critical[node.index()] = true;
            critical_path.push(g[node].id.clone());
            at = g
                .neighbors_directed(node, Direction::Incoming)
                .max_by_key(|p| (end[p.index()], Reverse(position[p.index()])));
        }
        critical_path.reverse();
        let slots = order
            .iter()
            .map(|&node| {
                let i = node.index();
                let mut preds: Vec<NodeIndex> =
                    g.neighbors_directed(node, Direction::Incoming).collect();
                preds.sort_by_key(|p| position[p.index()]);
                preds.dedup();
                Slot {
                    id: g[node].id.clone(),
                    phase: g[node].phase,
                    start: start[i],
                    estimate: g[node].estimate,
                    measured: g[node].measured,
                    end: end[i],
                    level: timing.level[i],
                    critical: critical[i],
                    after: preds.iter().map(|p| g[*p].id.clone()).collect(),
                }
            })
            .collect();
        let (vm_downtime, host_downtime) = timing.downtimes(graph);
        Self {
            slots,
            critical_path,
            total,
            vm_downtime,
            host_downtime,
        }
    }

    /// The most steps running at the same moment (steps that take no time do not count).
    pub(crate) fn max_overlap(&self) -> usize {
        let mut events: Vec<(Duration, bool)> = self
            .slots
            .iter()
            .filter(|s| !s.estimate.is_zero())
            .flat_map(|s| [(s.start, true), (s.end, false)])
            .collect();
        // At the same instant an end comes before a start: back-to-back steps do not overlap.
        events.sort();
        let (mut now, mut most) = (0usize, 0usize);
        for (_, starts) in events {
            if starts {
                now += 1;
                most = most.max(now);
            } else {
                now = now.saturating_sub(1);
            }
        }
        most
    }

    /// The slot of step `id`.
    pub(crate) fn slot(&self, id: &StepId) -> Option<&Slot> {
        self.slots.iter().find(|s| s.id == *id)
    }

    /// The VM that is down longest, with its downtime (the first in plan order on a tie).
    pub(crate) fn worst_vm(&self) -> Option<(&str, Duration)> {
        worst_vm(&self.vm_downtime)
    }

    /// The downtime `policy.max_downtime` is held against: the worst VM's, or the host's in a plan without VMs.
    pub fn downtime(&self) -> Duration {
        held_downtime(&self.vm_downtime, self.host_downtime)
    }

    /// The steps that account for most of the window from `from` to `to`: the chain of steps that ends last at
    /// `last`, each clipped to the window, longest first.
    pub(crate) fn contributors(&self, last: &StepId, from: Duration) -> Vec<(StepId, Duration)> {
        let mut out = Vec::new();
        let mut at = self.slot(last);
        while let Some(slot) = at {
            let part = slot.end.saturating_sub(slot.start.max(from));
            if !part.is_zero() {
                out.push((slot.id.clone(), part));
            }
            if slot.start <= from {
                break;
            }
            at = slot
                .after
                .iter()
                .filter_map(|id| self.slot(id))
                .max_by_key(|s| s.end);
        }
        out.sort_by_key(|c| Reverse(c.1));
        out
    }
}

fn worst_vm(vm_downtime: &[(String, Duration)]) -> Option<(&str, Duration)> {
    vm_downtime
        .iter()
        .rev()
        .max_by_key(|v| v.1)
        .map(|(name, d)| (name.as_str(), *d))
}

fn held_downtime(vm_downtime: &[(String, Duration)], host_downtime: Duration) -> Duration {
    worst_vm(vm_downtime).map_or(host_downtime, |v| v.1)
}

/// Human form of a duration: milliseconds below a second, else seconds with up to three decimals.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let whole = ms / 1000;
    let frac = ms % 1000;
    if frac == 0 {
        format!("{whole} s")
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{} s", digits.trim_end_matches('0'))
    }
}

/// How a measured figure is shown: "measured, median of 3" ("measured, 1 run" for one).
pub(crate) fn measured_label(runs: usize) -> String {
    if runs == 1 {
        "measured, 1 run".to_owned()
    } else {
        format!("measured, median of {runs}")
    }
}

/// Step ids joined with `separator`, for messages and listings.
pub(crate) fn join_ids(ids: &[StepId], separator: &str) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// Milliseconds as a JSON-friendly integer, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// Long by design: the downtime-budget diagnostic with its contributors and remedies.
/// The `downtime-budget` finding, when the estimate exceeds `policy.max_downtime`. Within the budget, or without
/// one, only the steps' times are computed: the schedule's slots are for the finding.
pub(crate) fn budget(plan: &Plan, graph: &StepGraph) -> Option<Diagnostic> {
    let limit = plan.policy.max_downtime?;
    let timing = Timing::of(graph);
    let (vm_downtime, host_downtime) = timing.downtimes(graph);
    let downtime = held_downtime(&vm_downtime, host_downtime);
    if downtime <= limit {
        return None;
    }
    let schedule = &Schedule::from_timing(graph, timing);
    let (whose, from, last) = match schedule.worst_vm() {
        Some((name, _)) => {
            let vm = name.to_owned();
            let (down, up) = match schedule.slot(&StepId::VmShutdown { vm: vm.clone() }) {
                Some(_) => (StepId::VmShutdown { vm: vm.clone() }, StepId::VmBoot { vm }),
                None => (StepId::VmPause { vm: vm.clone() }, StepId::VmResume { vm }),
            };
            let from = schedule.slot(&down).map_or(Duration::ZERO, |s| s.start);
            (format!("vm {name}"), from, up)
        }
        None => (
            "the host".to_owned(),
            Duration::ZERO,
            schedule
                .critical_path
                .last()
                .cloned()
                .unwrap_or(StepId::Verify),
        ),
    };
    let contributors: Vec<String> = schedule
        .contributors(&last, from)
        .iter()
        .take(3)
        .map(|(id, d)| {
            let note = graph
                .step(id)
                .and_then(|s| match s.measured {
                    Some(runs) => Some(format!(" ({})", measured_label(runs))),
                    None => s.estimate_note.as_deref().map(|n| format!(" ({n})")),
                })
                .unwrap_or_default();
            format!("{id} {}{note}", human(*d))
        })
        .collect();
    let mut d = Diagnostic::error(
        code::DOWNTIME_BUDGET,
        format!(
            "estimated downtime of {whose} is {}, over the budget of {}",
            human(downtime),
            human(limit)
        ),
    );
    if let Some(span) = &plan.policy.max_downtime_span {
        d = d.at(
            span.clone(),
            format!("{whose} is estimated at {}", human(downtime)),
        );
    }
    // Only remedies that apply to this plan: shared RAM for a guest whose RAM is copied, the isolate if it is inside
    // the guests' window.
    let mut remedies = Vec::new();
    let worst = schedule
        .worst_vm()
        .and_then(|(name, _)| plan.vms.iter().find(|v| v.name == name));
    if let Some(vm) = worst {
        let copies = matches!(vm.driver, VmDriver::Libvirt { .. }) || vm.memory == MemoryMode::Copy;
        if copies {
            remedies.push(format!(
                "give {} shared RAM (a QMP guest with memory = \"shared\" saves only its device state)",
                vm.name
            ));
        }
    }
    // The isolate costs the guests time only when it waits for their saves (a guest without `unit`).
    let isolate_in_window = graph.step(&StepId::Isolate).is_some()
        && graph.steps().any(|s| {
            matches!(
                s.kind,
                StepKind::VmPause { .. } | StepKind::VmShutdown { .. }
            ) && graph.depends_on(&StepId::Isolate, &s.id)
        });
    if isolate_in_window {
        remedies.push(format!(
            "name every guest's `unit`, so that the isolate runs before the first pause (about {}), or drop \
             `policy.isolate`",
            human(super::cost::ISOLATE)
        ));
    }
    remedies.push("raise the budget".to_owned());
    Some(d.help(format!(
        "biggest contributors: {}; critical path: {} (`kup plan graph` shows the whole schedule). To fit: {}",
        contributors.join(", "),
        join_ids(&schedule.critical_path, " → "),
        remedies.join("; or ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_only_steps_running_at_once() {
        let slot = |start: u64, estimate: u64| Slot {
            id: StepId::Sync,
            phase: Phase::Before,
            start: Duration::from_millis(start),
            estimate: Duration::from_millis(estimate),
            measured: None,
            end: Duration::from_millis(start + estimate),
            level: 0,
            critical: false,
            after: Vec::new(),
        };
        let schedule = Schedule {
            slots: vec![
                slot(0, 10),
                slot(10, 5),
                slot(10, 5),
                slot(12, 0),
                slot(14, 10),
            ],
            critical_path: Vec::new(),
            total: Duration::from_millis(24),
            vm_downtime: Vec::new(),
            host_downtime: Duration::ZERO,
        };
        assert_eq!(schedule.max_overlap(), 3);
    }

    #[test]
    fn human_durations() {
        let human_ms = |ms| human(Duration::from_millis(ms));
        assert_eq!(human_ms(5), "5 ms");
        assert_eq!(human_ms(2000), "2 s");
        assert_eq!(human_ms(2500), "2.5 s");
        assert_eq!(human_ms(2105), "2.105 s");
    }
}
