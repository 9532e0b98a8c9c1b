//! The step graph: what a plan does, in which order, and how long the guests are down.
//!
//! Pure like [`crate::plan`]: a checked [`Plan`] becomes a DAG of steps with stable ids (`vm:db-1:save`), built-in
//! edges that encode what must precede what (a guest is paused before it is saved, everything is saved before
//! `kexec`), and the custom `[[step]]`s placed by their `before` / `after`. `kup plan validate`, `kup plan graph`
//! and the dry-run all read the same graph, so what review sees is what the executor will schedule.
//! docs/graph.md describes the model; [`cost`] holds the estimate's numbers, [`schedule`] the arithmetic.

pub mod compile;
pub mod cost;
pub mod render;
pub mod schedule;
pub mod step_id;

use crate::plan::structure::did_you_mean;
use crate::plan::{Diagnostic, Plan};
use petgraph::Direction;
use petgraph::algo::has_path_connecting;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

pub use compile::{CompiledStep, Program, compile, kernel_cmdline};
pub use schedule::Schedule;
pub use step_id::{StepId, StepKey};

/// Stable diagnostic codes of the graph checks.
pub mod code {
    pub const UNKNOWN_STEP: &str = "kup::plan::unknown-step";
    pub const STEP_CYCLE: &str = "kup::plan::step-cycle";
    pub const DOWNTIME_BUDGET: &str = "kup::plan::downtime-budget";
}

/// Above this many steps the graph keeps implied edges rather than spend V²/8 bytes on dropping them.
const MAX_REDUCED_STEPS: usize = 16_384;

/// Which side of the point of no return a step is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before `kexec`: undone on failure (VMs resumed, apps restarted, kernel unloaded).
    Before,
    /// The `kexec` itself.
    Kexec,
    /// On the new kernel: retried or left to the operator, never rolled back.
    After,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Before => "before",
            Phase::Kexec => "kexec",
            Phase::After => "after",
        })
    }
}

/// What a step does; indices point into the plan's `vms`, `apps`, `pci` and `steps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Preflight,
    KernelLoad,
    VmPause { vm: usize },
    VmSave { vm: usize },
    AppSave { app: usize },
    PciCheck { pci: usize },
    Sync,
    Isolate,
    Kexec,
    AppRestore { app: usize },
    VmRestore { vm: usize },
    VmResume { vm: usize },
    Verify,
    Custom { step: usize },
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct Step {
    /// Stable id, as custom steps and the journal name it.
    pub id: StepId,
    pub kind: StepKind,
    pub phase: Phase,
    pub estimate: Duration,
    /// The assumption behind the estimate, when the plan could state the real figure.
    pub estimate_note: Option<String>,
}

/// Why an edge exists: built in, or written in a custom step's `before` / `after` (which diagnostics point at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeOrigin {
    Builtin,
    Declared {
        span: Range<usize>,
        /// "step:drain-lb before vm:db-1:pause", as written.
        label: String,
    },
    /// Added to give a custom step its phase (see docs/graph.md, "Placing custom steps").
    Placement,
}

/// The plan's steps and their order. Edges point from a step to a step that must wait for it.
#[derive(Debug, Clone)]
pub struct StepGraph {
    graph: DiGraph<Step, EdgeOrigin>,
    /// Steps by the text of their id: what plans write in `before` / `after`.
    ids: BTreeMap<String, NodeIndex>,
}

impl StepGraph {
    /// Builds the graph of a checked plan, or reports unknown step ids and cycles among custom steps.
    pub fn build(plan: &Plan) -> Result<Self, Vec<Diagnostic>> {
        let mut g = Self {
            graph: DiGraph::new(),
            ids: BTreeMap::new(),
        };
        g.builtin(plan);
        let customs: Vec<NodeIndex> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                g.add(
                    plan,
                    StepId::Custom {
                        name: s.name.clone(),
                    },
                    StepKind::Custom { step: i },
                    Phase::Before,
                )
            })
            .collect();
        let mut errors = Vec::new();
        for (step, &node) in plan.steps.iter().zip(&customs) {
            let me = StepId::Custom {
                name: step.name.clone(),
            };
            for (list, before) in [(&step.before, true), (&step.after, false)] {
                for r in list {
                    let Some(&other) = g.ids.get(&r.id) else {
                        errors.push(g.unknown(plan, r));
                        continue;
                    };
                    let (from, to, word) = if before {
                        (node, other, "before")
                    } else {
                        (other, node, "after")
                    };
                    let origin = EdgeOrigin::Declared {
                        span: r.span.clone(),
                        label: format!("{me} {word} {}", r.id),
                    };
                    // A repeated entry adds nothing; the first one is what a cycle report points at.
                    if g.graph.find_edge(from, to).is_none() {
                        g.graph.add_edge(from, to, origin);
                    }
                }
            }
        }
        errors.extend(g.cycles());
        if !errors.is_empty() {
            return Err(errors);
        }
        g.place(plan, &customs);
        g.reduce();
        Ok(g)
    }

    /// Drops built-in and placement edges that another path already implies (`preflight → vm:x:pause` once a
    /// custom step sits between them), so every step lists only what it really waits for. Declared edges stay:
    /// they are what the user wrote.
    fn reduce(&mut self) {
        let Ok(order) = petgraph::algo::toposort(&self.graph, None) else {
            return;
        };
        // Reachability as bitsets, filled in reverse topological order: O(V·E/64), fine for thousands of guests.
        // Its V²/8 bytes are not spent on absurd plans (32 MiB at the cap): they keep the implied edges instead.
        let n = self.graph.node_count();
        if n > MAX_REDUCED_STEPS {
            return;
        }
        let words = n.div_ceil(64);
        let mut reach = vec![0u64; n * words];
        for &u in order.iter().rev() {
            let successors: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(u, Direction::Outgoing)
                .collect();
            for w in successors {
                let (wi, ui) = (w.index(), u.index());
                reach[ui * words + wi / 64] |= 1 << (wi % 64);
                for k in 0..words {
                    let bits = reach[wi * words + k];
                    reach[ui * words + k] |= bits;
                }
            }
        }
        let reaches = |from: NodeIndex, to: NodeIndex| {
            reach[from.index() * words + to.index() / 64] & (1 << (to.index() % 64)) != 0
        };
        let redundant: Vec<_> = self
            .graph
            .edge_references()
            .filter(|e| !matches!(e.weight(), EdgeOrigin::Declared { .. }))
            .filter(|e| {
                self.graph
                    .neighbors_directed(e.source(), Direction::Outgoing)
                    .any(|w| w != e.target() && reaches(w, e.target()))
            })
            .map(|e| e.id())
            .collect();
        let redundant: std::collections::HashSet<_> = redundant.into_iter().collect();
        self.graph.retain_edges(|_, e| !redundant.contains(&e));
    }

    fn add(&mut self, plan: &Plan, id: StepId, kind: StepKind, phase: Phase) -> NodeIndex {
        let estimate = cost::estimate(plan, &kind);
        let text = id.to_string();
        let node = self.graph.add_node(Step {
            id,
            kind,
            phase,
            estimate: estimate.duration,
            estimate_note: estimate.note,
        });
        self.ids.insert(text, node);
        node
    }

    /// The node of a built-in step.
    fn node(&self, id: &StepId) -> Option<NodeIndex> {
        self.ids.get(&id.to_string()).copied()
    }

    fn edge(&mut self, from: NodeIndex, to: NodeIndex) {
        self.graph.update_edge(from, to, EdgeOrigin::Builtin);
    }

    /// The built-in steps and edges; see docs/graph.md for why each edge exists.
    fn builtin(&mut self, plan: &Plan) {
        use Phase::{After, Before};
        let preflight = self.add(plan, StepId::Preflight, StepKind::Preflight, Before);
        let load = self.add(plan, StepId::KernelLoad, StepKind::KernelLoad, Before);
        self.edge(preflight, load);
        let checks: Vec<NodeIndex> = plan
            .pci
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let n = self.add(
                    plan,
                    StepId::PciCheck {
                        address: d.address.to_string(),
                    },
                    StepKind::PciCheck { pci: i },
                    Before,
                );
                self.edge(preflight, n);
                n
            })
            .collect();
        let mut saves = Vec::new();
        let mut pauses = Vec::new();
        for (i, vm) in plan.vms.iter().enumerate() {
            let pause = self.add(
                plan,
                StepId::VmPause {
                    vm: vm.name.clone(),
                },
                StepKind::VmPause { vm: i },
                Before,
            );
            // A kernel that fails to load (signature, size) or a device bound to the wrong driver stops the plan
            // before this guest loses a millisecond; and a paused guest does not wait out the kernel load.
            self.edge(load, pause);
            for address in &vm.devices {
                if let Some(j) = plan.pci.iter().position(|d| &d.address == address) {
                    self.edge(checks[j], pause);
                }
            }
            let save = self.add(
                plan,
                StepId::VmSave {
                    vm: vm.name.clone(),
                },
                StepKind::VmSave { vm: i },
                Before,
            );
            self.edge(pause, save);
            pauses.push(pause);
            saves.push(save);
        }
        for (i, app) in plan.apps.iter().enumerate() {
            let save = self.add(
                plan,
                StepId::AppSave {
                    app: app.name.clone(),
                },
                StepKind::AppSave { app: i },
                Before,
            );
            self.edge(load, save);
            saves.push(save);
        }
        let sync = self.add(plan, StepId::Sync, StepKind::Sync, Before);
        if saves.is_empty() {
            self.edge(preflight, sync);
        }
        for &s in &saves {
            self.edge(s, sync);
        }
        let mut last = sync;
        if plan.policy.isolate.is_some() {
            let isolate = self.add(plan, StepId::Isolate, StepKind::Isolate, Before);
            self.edge(sync, isolate);
            last = isolate;
        }
        let kexec = self.add(plan, StepId::Kexec, StepKind::Kexec, Phase::Kexec);
        self.edge(last, kexec);
        self.edge(load, kexec);
        for &c in &checks {
            self.edge(c, kexec);
        }
        let mut finals = Vec::new();
        for (i, app) in plan.apps.iter().enumerate() {
            let restore = self.add(
                plan,
                StepId::AppRestore {
                    app: app.name.clone(),
                },
                StepKind::AppRestore { app: i },
                After,
            );
            self.edge(kexec, restore);
            finals.push(restore);
        }
        for (i, vm) in plan.vms.iter().enumerate() {
            let restore = self.add(
                plan,
                StepId::VmRestore {
                    vm: vm.name.clone(),
                },
                StepKind::VmRestore { vm: i },
                After,
            );
            self.edge(kexec, restore);
            let resume = self.add(
                plan,
                StepId::VmResume {
                    vm: vm.name.clone(),
                },
                StepKind::VmResume { vm: i },
                After,
            );
            self.edge(restore, resume);
            finals.push(resume);
        }
        let verify = self.add(plan, StepId::Verify, StepKind::Verify, After);
        if finals.is_empty() {
            self.edge(kexec, verify);
        }
        for f in finals {
            self.edge(f, verify);
        }
    }

    fn unknown(&self, plan: &Plan, r: &crate::plan::StepRef) -> Diagnostic {
        let d = Diagnostic::error(code::UNKNOWN_STEP, format!("no step has the id `{}`", r.id))
            .at(r.span.clone(), "unknown step id");
        let custom = StepId::Custom { name: r.id.clone() }.to_string();
        if self.ids.contains_key(&custom) {
            return d.help(format!(
                "custom steps are named with a `step:` prefix: did you mean `{custom}`?"
            ));
        }
        if r.id == "isolate" && plan.policy.isolate.is_none() {
            return d.help("`isolate` exists only when `policy.isolate` names a target");
        }
        match did_you_mean(&r.id, self.ids.keys().map(String::as_str)) {
            Some(guess) => d.help(format!("did you mean `{guess}`?")),
            None => d.help(format!(
                "step ids in this plan: {}",
                self.ids.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// One diagnostic per strongly connected component: the shortest cycle through it, pointing at the
    /// `before` / `after` entries that close it. Built-in edges alone never form a cycle, so each has one.
    fn cycles(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut components = petgraph::algo::tarjan_scc(&self.graph);
        // Report in plan order, not in the algorithm's.
        for c in &mut components {
            c.sort();
        }
        components.sort();
        for component in components {
            let looped =
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some();
            if !looped {
                continue;
            }
            // Start from a custom step so the cycle is told from the user's side.
            let start = component
                .iter()
                .copied()
                .find(|&n| matches!(self.graph[n].kind, StepKind::Custom { .. }))
                .unwrap_or(component[0]);
            let path = self.shortest_cycle(start, &component);
            out.push(self.cycle_diagnostic(&path));
        }
        out
    }

    /// Nodes of a shortest cycle through `start` inside `component`, `start` first (not repeated at the end).
    fn shortest_cycle(&self, start: NodeIndex, component: &[NodeIndex]) -> Vec<NodeIndex> {
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for next in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if next == start {
                    let mut path = vec![n];
                    let mut at = n;
                    while at != start {
                        match previous.get(&at) {
                            Some(&p) => at = p,
                            None => break,
                        }
                        path.push(at);
                    }
                    path.reverse();
                    return path;
                }
                if component.contains(&next) && !previous.contains_key(&next) {
                    previous.insert(next, n);
                    queue.push_back(next);
                }
            }
        }
        vec![start]
    }

    fn cycle_diagnostic(&self, path: &[NodeIndex]) -> Diagnostic {
        let ids: Vec<String> = path.iter().map(|&n| self.graph[n].id.to_string()).collect();
        let mut chain = ids.join(" → ");
        chain.push_str(" → ");
        chain.push_str(&ids[0]);
        let mut declared = Vec::new();
        for (i, &from) in path.iter().enumerate() {
            let to = path[(i + 1) % path.len()];
            if let Some(e) = self.graph.find_edge(from, to)
                && let EdgeOrigin::Declared { span, label } = &self.graph[e]
            {
                declared.push((span.clone(), label.clone()));
            }
        }
        let mut d = Diagnostic::error(
            code::STEP_CYCLE,
            format!("steps wait for each other in a cycle: {chain}"),
        );
        let mut entries = declared.into_iter();
        if let Some((span, label)) = entries.next() {
            d = d.at(span, label);
        }
        for (span, label) in entries {
            d = d.related(span, label);
        }
        let through_kexec = path.iter().any(|&n| self.graph[n].kind == StepKind::Kexec);
        if through_kexec {
            d.help(
                "a custom step runs either before `kexec` (the point of no return) or after it, never both: \
                 drop the `before` or the `after` entry that puts it on the other side",
            )
        } else {
            d.help("each arrow is one step that must wait for the next; remove one of the marked entries")
        }
    }

    /// Gives every custom step its phase and ties it into the graph: a step that must run before `kexec` is in
    /// phase before, one that must run after it in phase after. A step constrained neither way runs after the
    /// steps it names if any of those is in phase after, else in phase before, after `preflight` — before the
    /// point of no return, where its failure can still be rolled back.
    fn place(&mut self, plan: &Plan, customs: &[NodeIndex]) {
        let (Some(kexec), Some(preflight), Some(verify)) = (
            self.node(&StepId::Kexec),
            self.node(&StepId::Preflight),
            self.node(&StepId::Verify),
        ) else {
            return;
        };
        for (i, &node) in customs.iter().enumerate() {
            let phase = if has_path_connecting(&self.graph, node, kexec, None) {
                Phase::Before
            } else if has_path_connecting(&self.graph, kexec, node, None) {
                Phase::After
            } else {
                let step = &plan.steps[i];
                let names_after_step = step
                    .before
                    .iter()
                    .chain(&step.after)
                    .filter_map(|r| self.ids.get(&r.id))
                    .any(|&n| self.graph[n].phase == Phase::After);
                if names_after_step {
                    self.graph.add_edge(kexec, node, EdgeOrigin::Placement);
                    Phase::After
                } else {
                    self.graph.add_edge(node, kexec, EdgeOrigin::Placement);
                    Phase::Before
                }
            };
            self.graph[node].phase = phase;
            match phase {
                // Unless it was asked to run before preflight (which is allowed: a notification, say).
                Phase::Before
                    if !has_path_connecting(&self.graph, preflight, node, None)
                        && !has_path_connecting(&self.graph, node, preflight, None) =>
                {
                    self.graph.add_edge(preflight, node, EdgeOrigin::Placement);
                }
                Phase::After
                    if !has_path_connecting(&self.graph, node, verify, None)
                        && !has_path_connecting(&self.graph, verify, node, None) =>
                {
                    // `verify` is last unless a step asked to run after it.
                    self.graph.add_edge(node, verify, EdgeOrigin::Placement);
                }
                _ => {}
            }
        }
    }

    /// Every step, in insertion order (built-in steps first, then custom steps in plan order).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.graph.node_weights()
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The step named `id`.
    pub fn step<K: StepKey + ?Sized>(&self, id: &K) -> Option<&Step> {
        self.ids.get(id.key().as_ref()).map(|&n| &self.graph[n])
    }

    /// Ids of the steps `id` waits for directly, in insertion order.
    pub fn after<K: StepKey + ?Sized>(&self, id: &K) -> Vec<&StepId> {
        let Some(&n) = self.ids.get(id.key().as_ref()) else {
            return Vec::new();
        };
        let mut preds: Vec<NodeIndex> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| e.source())
            .collect();
        preds.sort();
        preds.iter().map(|&p| &self.graph[p].id).collect()
    }

    /// Whether `later` waits for `earlier`, directly or through other steps.
    pub fn depends_on<A: StepKey + ?Sized, B: StepKey + ?Sized>(
        &self,
        later: &A,
        earlier: &B,
    ) -> bool {
        match (
            self.ids.get(later.key().as_ref()),
            self.ids.get(earlier.key().as_ref()),
        ) {
            (Some(&l), Some(&e)) => l != e && has_path_connecting(&self.graph, e, l, None),
            _ => false,
        }
    }

    /// The underlying petgraph graph, for callers that want its algorithms.
    pub fn graph(&self) -> &DiGraph<Step, EdgeOrigin> {
        &self.graph
    }

    /// The earliest-start schedule of this graph (see [`Schedule`]).
    pub fn schedule(&self) -> Schedule {
        Schedule::of(self)
    }
}

/// The graph checks `kup plan validate` runs on a plan that passed every other check: unknown step ids, cycles,
/// and the downtime estimate against `policy.max_downtime`. Returns the graph when no error was added.
pub fn check(plan: &Plan, out: &mut Vec<Diagnostic>) -> Option<StepGraph> {
    match StepGraph::build(plan) {
        Err(errors) => {
            out.extend(errors);
            None
        }
        Ok(graph) => match schedule::budget(plan, &graph, &graph.schedule()) {
            Some(d) => {
                out.push(d);
                None
            }
            None => Some(graph),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"kup = 1
[kernel]
image = "/boot/vmlinuz"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[[vm]]
name = "db"
libvirt = "db"
state = "/var/lib/kup/state/db"
"#;

    fn graph(extra: &str) -> StepGraph {
        let text = format!("{HEAD}{extra}");
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let plan = loaded
            .plan
            .unwrap_or_else(|| panic!("{}", loaded.report.render(false, 100)));
        StepGraph::build(&plan).unwrap()
    }

    fn custom(name: &str, keys: &str) -> String {
        format!("[[step]]\nname = \"{name}\"\nrun = [\"/bin/true\"]\n{keys}\n")
    }

    #[test]
    fn an_unplaced_custom_step_runs_before_kexec_after_preflight() {
        let g = graph(&custom("note", ""));
        assert_eq!(g.step("step:note").unwrap().phase, Phase::Before);
        assert!(g.depends_on("step:note", "preflight"));
        assert!(g.depends_on("kexec", "step:note"));
    }

    #[test]
    fn a_step_naming_only_after_phase_steps_runs_after_kexec() {
        let g = graph(&custom("smoke", "before = [\"verify\"]"));
        assert_eq!(g.step("step:smoke").unwrap().phase, Phase::After);
        assert!(g.depends_on("step:smoke", "kexec"));
        assert!(g.depends_on("verify", "step:smoke"));
    }

    #[test]
    fn a_step_may_follow_verify_or_precede_preflight() {
        let g = graph(&format!(
            "{}{}",
            custom("report", "after = [\"verify\"]"),
            custom("announce", "before = [\"preflight\"]")
        ));
        assert_eq!(g.step("step:report").unwrap().phase, Phase::After);
        assert!(g.depends_on("step:report", "verify"));
        assert_eq!(g.step("step:announce").unwrap().phase, Phase::Before);
        assert!(g.depends_on("preflight", "step:announce"));
        let schedule = g.schedule();
        assert_eq!(schedule.slots[0].id, "step:announce");
        assert_eq!(schedule.slots.last().unwrap().id, "step:report");
    }

    #[test]
    fn custom_steps_chain_through_each_other() {
        let g = graph(&format!(
            "{}{}",
            custom("a", "after = [\"vm:db:resume\"]"),
            custom("b", "after = [\"step:a\"]")
        ));
        assert_eq!(g.step("step:b").unwrap().phase, Phase::After);
        assert!(g.depends_on("step:b", "step:a"));
    }

    #[test]
    fn isolate_exists_only_when_the_policy_names_a_target() {
        assert!(graph("").step("isolate").is_none());
        let g = graph("[policy]\nisolate = \"rescue.target\"\n");
        assert!(g.depends_on("isolate", "sync"));
        assert!(g.depends_on("kexec", "isolate"));
    }

    #[test]
    fn repeated_entries_add_one_edge_and_redundant_builtin_edges_go() {
        let g = graph(&custom(
            "drain",
            "before = [\"vm:db:pause\", \"vm:db:pause\"]",
        ));
        assert_eq!(g.after("vm:db:pause"), ["kernel:load", "step:drain"]);
        // kernel:load → kexec is implied through the guest's save and sync.
        assert_eq!(g.after("kexec"), ["sync"]);
    }

    #[test]
    fn guests_wait_for_the_kernel_load_and_their_devices() {
        let text =
            format!("{HEAD}devices = [\"0000:3b:00.0\"]\n[[pci]]\naddress = \"0000:3b:00.0\"\n");
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.unwrap()).unwrap();
        assert_eq!(
            g.after("vm:db:pause"),
            ["kernel:load", "pci:0000:3b:00.0:check"]
        );
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let text = format!("{HEAD}{}", custom("x", "before = [\"step:x\"]"));
        let loaded = crate::check::check("t.toml", text.as_bytes());
        assert!(loaded.plan.is_none());
        let d = &loaded.report.diagnostics[0];
        assert_eq!(d.code, code::STEP_CYCLE);
        assert!(d.message.ends_with("step:x → step:x"), "{}", d.message);
    }
}
