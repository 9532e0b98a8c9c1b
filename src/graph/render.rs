//! Renderings of a step graph and its schedule: a listing for people, DOT for Graphviz, Mermaid for GitHub
//! (it renders in Markdown), and JSON whose shape docs/graph.md documents. Pure string building, so snapshot tests
//! pin every byte an operator or a tool sees.

use super::history::LAST_RUNS;
use super::schedule::{Schedule, Slot, human, join_ids, measured_label, millis};
use super::{HistoryUsed, Phase, StepGraph, StepId};
use crate::plan::Plan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

fn phase_title(phase: Phase) -> &'static str {
    match phase {
        Phase::Before => "before kexec: rolled back on failure",
        Phase::Kexec => "kexec: the point of no return",
        Phase::After => "after kexec: retried or left to the operator, never rolled back",
    }
}

/// Slots grouped by level: each group can run at once.
fn groups(schedule: &Schedule) -> Vec<Vec<&Slot>> {
    let mut by_level: BTreeMap<usize, Vec<&Slot>> = BTreeMap::new();
    for slot in &schedule.slots {
        by_level.entry(slot.level).or_default().push(slot);
    }
    by_level.into_values().collect()
}

// Long by design: the listing's lines, top to bottom.
/// The human listing: phases, parallel groups, the critical path and the estimate.
pub(crate) fn text(plan: &Plan, graph: &StepGraph, schedule: &Schedule) -> String {
    let mut out = String::new();
    if let Some(name) = &plan.name {
        let _ = writeln!(out, "plan: {name}");
    }
    let _ = writeln!(
        out,
        "{} steps; * marks the critical path; times are earliest starts from the beginning of the plan",
        schedule.slots.len()
    );
    let history = graph.history();
    if let Some(h) = history {
        let _ = writeln!(out, "{}", history_line(plan, h));
    }
    let width = schedule
        .slots
        .iter()
        .map(|s| s.id.to_string().chars().count())
        .max()
        .unwrap_or(0);
    let mut phase = None;
    for (number, group) in groups(schedule).iter().enumerate() {
        let Some(first) = group.first() else {
            continue;
        };
        if phase != Some(first.phase) {
            phase = Some(first.phase);
            let title = if plan.is_livepatch() {
                "no kexec (a live patch of the running kernel): every step rolled back on failure"
            } else {
                phase_title(first.phase)
            };
            let _ = writeln!(out, "\n{title}");
        }
        let parallel = if group.len() > 1 {
            format!(" ({} in parallel)", group.len())
        } else {
            String::new()
        };
        let _ = writeln!(out, "  group {}{parallel}", number + 1);
        for slot in group {
            let mark = if slot.critical { '*' } else { ' ' };
            let mut line = format!(
                "    {mark} {:width$}  at {:>9}  takes {:>9}",
                slot.id,
                human(slot.start),
                human(slot.estimate),
            );
            if history.is_some() {
                let source = slot.measured.map_or("estimated".to_owned(), measured_label);
                let _ = write!(line, " ({source})");
            }
            if !slot.after.is_empty() {
                let _ = write!(line, "  after {}", join_ids(&slot.after, ", "));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let _ = writeln!(
        out,
        "\ncritical path ({}): {}",
        human(schedule.total),
        join_ids(&schedule.critical_path, " → ")
    );
    let _ = writeln!(
        out,
        "host downtime: {} (first workload or service stopped to last one back)",
        human(schedule.host_downtime)
    );
    for (vm, down) in &schedule.vm_downtime {
        let _ = writeln!(out, "vm {vm} downtime: {}", human(*down));
    }
    if plan.is_livepatch() {
        let _ = writeln!(
            out,
            "guest downtime: 0 ms ({} guest(s) in the plan, none paused: the running kernel is patched under them)",
            plan.vms.len()
        );
    }
    if let Some(limit) = plan.policy.max_downtime {
        let verdict = if schedule.downtime() <= limit {
            "within budget"
        } else {
            "OVER BUDGET"
        };
        let _ = writeln!(
            out,
            "budget (policy.max_downtime): {}, estimate {}: {verdict}",
            human(limit),
            human(schedule.downtime())
        );
    }
    let overlap = schedule.max_overlap();
    let parallelism = usize::try_from(plan.policy.parallelism).unwrap_or(usize::MAX);
    if overlap > parallelism {
        let _ = writeln!(
            out,
            "note: up to {overlap} steps overlap in this schedule but policy.parallelism is {parallelism}: some will \
             start later than shown"
        );
    }
    for step in graph.steps() {
        if let Some(note) = &step.estimate_note {
            let _ = writeln!(out, "note: {}: {note}", step.id);
        }
    }
    out
}

/// What the figures of a graph with `--history` rest on.
fn history_line(plan: &Plan, h: &HistoryUsed) -> String {
    let hosts = if h.hosts.is_empty() {
        String::new()
    } else {
        format!(" on {}", h.hosts.join(", "))
    };
    match (&plan.name, h.applies) {
        (None, _) => "history: the plan has no name, by which earlier applies are found: every figure is estimated \
                      by the cost model"
            .to_owned(),
        (Some(_), 0) => "history: no earlier apply of this plan in the journals given: every figure is estimated by \
                         the cost model"
            .to_owned(),
        (Some(_), applies) => format!(
            "history: {applies} earlier appl{} of this plan{hosts}; {} steps measured (the median of each one's last \
             {LAST_RUNS} runs), the others estimated by the cost model",
            if applies == 1 { "y" } else { "ies" },
            h.measured
        ),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

// Long by design: the DOT document top to bottom: clusters by phase, then edges.
/// Graphviz DOT: one cluster per phase, the critical path in bold red.
pub(crate) fn dot(plan: &Plan, schedule: &Schedule) -> String {
    let mut out = String::from("digraph kup {\n");
    if let Some(name) = &plan.name {
        let _ = writeln!(out, "  label=\"{}\";\n  labelloc=t;", dot_escape(name));
    }
    out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    for phase in [Phase::Before, Phase::Kexec, Phase::After] {
        let _ = writeln!(out, "  subgraph cluster_{phase} {{");
        let _ = writeln!(out, "    label=\"{}\";", phase_title(phase));
        for slot in schedule.slots.iter().filter(|s| s.phase == phase) {
            let style = if slot.critical {
                ", color=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    \"{id}\" [label=\"{id}\\n{}\"{style}];",
                human(slot.estimate),
                id = dot_escape(&slot.id.to_string())
            );
        }
        out.push_str("  }\n");
    }
    let critical: Vec<&StepId> = schedule.critical_path.iter().collect();
    for slot in &schedule.slots {
        for before in &slot.after {
            let on_path = critical
                .windows(2)
                .any(|w| *w[0] == *before && *w[1] == slot.id);
            let style = if on_path {
                " [color=red, penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{style};",
                dot_escape(&before.to_string()),
                dot_escape(&slot.id.to_string())
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// A Mermaid flowchart: GitHub renders it inside a ```mermaid block.
pub(crate) fn mermaid(schedule: &Schedule) -> String {
    let node: BTreeMap<&StepId, usize> = schedule
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.id, i))
        .collect();
    let mut out = String::from("flowchart TD\n");
    for phase in [Phase::Before, Phase::Kexec, Phase::After] {
        let _ = writeln!(out, "  subgraph phase_{phase}[\"{}\"]", phase_title(phase));
        for (i, slot) in schedule.slots.iter().enumerate() {
            if slot.phase == phase {
                let _ = writeln!(
                    out,
                    "    s{i}[\"{}<br/>{}\"]",
                    mermaid_escape(&slot.id.to_string()),
                    human(slot.estimate)
                );
            }
        }
        out.push_str("  end\n");
    }
    for (i, slot) in schedule.slots.iter().enumerate() {
        for before in &slot.after {
            if let Some(b) = node.get(before) {
                let _ = writeln!(out, "  s{b} --> s{i}");
            }
        }
    }
    let critical: Vec<String> = schedule
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.critical)
        .map(|(i, _)| format!("s{i}"))
        .collect();
    if !critical.is_empty() {
        out.push_str("  classDef critical stroke:#d00,stroke-width:3px\n");
        let _ = writeln!(out, "  class {} critical", critical.join(","));
    }
    out
}

/// The JSON shape of `kup plan graph --format json` (documented in docs/graph.md).
#[derive(Debug, Serialize)]
pub(crate) struct JsonGraph {
    pub(crate) steps: Vec<JsonStep>,
    pub(crate) critical_path: Vec<StepId>,
    /// The host's downtime (see [`Schedule::host_downtime`]).
    pub(crate) estimated_downtime_ms: u64,
    pub(crate) vm_downtime_ms: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct JsonStep {
    pub(crate) id: StepId,
    pub(crate) phase: Phase,
    pub(crate) after: Vec<StepId>,
    pub(crate) estimate_ms: u64,
    /// Present when `estimate_ms` is measured (`--history`): how many runs it is the median of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) measured_runs: Option<usize>,
    pub(crate) critical: bool,
}

pub(crate) fn json(schedule: &Schedule) -> JsonGraph {
    JsonGraph {
        steps: schedule
            .slots
            .iter()
            .map(|s| JsonStep {
                id: s.id.clone(),
                phase: s.phase,
                after: s.after.clone(),
                estimate_ms: millis(s.estimate),
                measured_runs: s.measured,
                critical: s.critical,
            })
            .collect(),
        critical_path: schedule.critical_path.clone(),
        estimated_downtime_ms: millis(schedule.host_downtime),
        vm_downtime_ms: schedule
            .vm_downtime
            .iter()
            .map(|(vm, d)| (vm.clone(), millis(*d)))
            .collect(),
    }
}
