//! Building the step graph: the built-in steps and the edges that say what must precede what, the custom steps
//! placed by their `before` / `after`, and the reduction that drops edges other paths already imply.

use super::{EdgeOrigin, MAX_REDUCED_STEPS, Phase, Step, StepGraph, StepId, StepKind, cost};
use crate::plan::{Diagnostic, Plan};
use petgraph::Direction;
use petgraph::algo::has_path_connecting;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

impl StepGraph {
    /// Builds the graph of a checked plan, or reports unknown step ids and cycles among custom steps.
    pub fn build(plan: &Plan) -> Result<Self, Vec<Diagnostic>> {
        let mut g = Self {
            graph: DiGraph::new(),
            ids: BTreeMap::new(),
            history: None,
        };
        g.builtin(plan);
        let customs: Vec<NodeIndex> = (0..plan.steps.len())
            .map(|step| g.add(plan, StepKind::Custom { step }))
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
    pub(super) fn reduce(&mut self) {
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

    pub(super) fn add(&mut self, plan: &Plan, kind: StepKind) -> NodeIndex {
        let id = kind.id(plan);
        let phase = kind.phase();
        let estimate = cost::estimate(plan, &kind);
        let text = id.to_string();
        let node = self.graph.add_node(Step {
            id,
            kind,
            phase,
            estimate: estimate.duration,
            estimate_note: estimate.note,
            measured: None,
        });
        self.ids.insert(text, node);
        node
    }

    /// The node of a built-in step.
    pub(super) fn node(&self, id: &StepId) -> Option<NodeIndex> {
        self.ids.get(&id.to_string()).copied()
    }

    pub(super) fn edge(&mut self, from: NodeIndex, to: NodeIndex) {
        self.graph.update_edge(from, to, EdgeOrigin::Builtin);
    }

    /// Adds a step of `kind` that runs after each of `first`.
    fn add_after(&mut self, plan: &Plan, kind: StepKind, first: &[NodeIndex]) -> NodeIndex {
        let node = self.add(plan, kind);
        for &f in first {
            self.edge(f, node);
        }
        node
    }

    /// The built-in steps and edges; see docs/graph.md for why each edge exists.
    pub(super) fn builtin(&mut self, plan: &Plan) {
        if plan.is_livepatch() {
            return self.builtin_livepatch(plan);
        }
        let preflight = self.add(plan, StepKind::Preflight);
        let load = self.add_after(plan, StepKind::KernelLoad, &[preflight]);
        let checks: Vec<NodeIndex> = (0..plan.pci.len())
            .map(|pci| self.add_after(plan, StepKind::PciCheck { pci }, &[preflight]))
            .collect();
        let mut saves = Vec::new();
        // Guests the plan reboots are shut down first: their power-off takes seconds, which must not be spent
        // while the saved guests are already paused.
        let mut shutdowns = Vec::new();
        let restarted_first = plan.vms.iter().enumerate().filter(|(_, g)| g.restarts());
        let saved_then = plan.vms.iter().enumerate().filter(|(_, g)| !g.restarts());
        for (vm, guest) in restarted_first.chain(saved_then) {
            // A kernel that fails to load (signature, size) or a device bound to the wrong driver stops the plan
            // before this guest loses a millisecond; and a paused guest does not wait out the kernel load.
            let down = if guest.restarts() {
                let down = self.add_after(plan, StepKind::VmShutdown { vm }, &[load]);
                shutdowns.push(down);
                down
            } else {
                let mut first = vec![load];
                first.extend(&shutdowns);
                self.add_after(plan, StepKind::VmPause { vm }, &first)
            };
            for address in &guest.devices {
                if let Some(j) = plan.pci.iter().position(|d| &d.address == address) {
                    self.edge(checks[j], down);
                }
            }
            saves.push(if guest.restarts() {
                down
            } else {
                self.add_after(plan, StepKind::VmSave { vm }, &[down])
            });
        }
        for app in 0..plan.apps.len() {
            saves.push(self.add_after(plan, StepKind::AppSave { app }, &[load]));
        }
        let sync = self.add_after(plan, StepKind::Sync, or(&saves, &[preflight]));
        let mut last = sync;
        if plan.policy.isolate.is_some() {
            last = self.add_after(plan, StepKind::Isolate, &[sync]);
        }
        let kexec = self.add_after(plan, StepKind::Kexec, &[last, load]);
        for &c in &checks {
            self.edge(c, kexec);
        }
        // The new kernel bound each device to its default driver at boot: it is bound as planned again before the
        // guest that owns it is restored (its QEMU opens the device), and before `verify` checks it.
        let binds: Vec<NodeIndex> = (0..plan.pci.len())
            .map(|pci| self.add_after(plan, StepKind::PciBind { pci }, &[kexec]))
            .collect();
        let mut finals = binds.clone();
        for app in 0..plan.apps.len() {
            finals.push(self.add_after(plan, StepKind::AppRestore { app }, &[kexec]));
        }
        for (vm, guest) in plan.vms.iter().enumerate() {
            // A device goes back to its planned driver before the guest that owns it comes back.
            let after_binds = |this: &mut Self, node| {
                for address in &guest.devices {
                    if let Some(j) = plan.pci.iter().position(|d| &d.address == address) {
                        this.edge(binds[j], node);
                    }
                }
            };
            if guest.restarts() {
                let boot = self.add_after(plan, StepKind::VmBoot { vm }, &[kexec]);
                after_binds(self, boot);
                finals.push(boot);
                continue;
            }
            let restore = self.add_after(plan, StepKind::VmRestore { vm }, &[kexec]);
            after_binds(self, restore);
            finals.push(self.add_after(plan, StepKind::VmResume { vm }, &[restore]));
        }
        self.add_after(plan, StepKind::Verify, or(&finals, &[kexec]));
    }

    /// A live patch plan's steps: `preflight`, then `livepatch:NAME:load` and `livepatch:NAME:transition` (or
    /// `livepatch:NAME:remove`), then `verify`. No guest, app or device step: the running kernel is patched under
    /// them. There is no kexec, so every step is in phase before, `verify` included: any failure rolls back.
    fn builtin_livepatch(&mut self, plan: &Plan) {
        let preflight = self.add(plan, StepKind::Preflight);
        let remove = plan
            .livepatch
            .as_ref()
            .is_some_and(|l| l.action == crate::plan::LivepatchAction::Remove);
        let last = if remove {
            let remove = self.add(plan, StepKind::LivepatchRemove);
            self.edge(preflight, remove);
            remove
        } else {
            let load = self.add(plan, StepKind::LivepatchLoad);
            self.edge(preflight, load);
            let transition = self.add(plan, StepKind::LivepatchTransition);
            self.edge(load, transition);
            transition
        };
        let verify = self.add(plan, StepKind::Verify);
        self.graph[verify].phase = Phase::Before;
        self.edge(last, verify);
    }

    /// Custom steps of a plan without a kexec (a live patch): all in phase before, after `preflight` and before
    /// `verify` unless they asked to run before the one or after the other.
    fn place_without_kexec(&mut self, customs: &[NodeIndex]) {
        let (Some(preflight), Some(verify)) =
            (self.node(&StepId::Preflight), self.node(&StepId::Verify))
        else {
            return;
        };
        for &node in customs {
            self.graph[node].phase = Phase::Before;
            let connected = |g: &Self, a, b| {
                has_path_connecting(&g.graph, a, b, None)
                    || has_path_connecting(&g.graph, b, a, None)
            };
            if !connected(self, preflight, node) {
                self.graph.add_edge(preflight, node, EdgeOrigin::Placement);
            }
            if !connected(self, node, verify) {
                self.graph.add_edge(node, verify, EdgeOrigin::Placement);
            }
        }
    }

    /// Gives every custom step its phase and ties it into the graph: a step that must run before `kexec` is in
    /// phase before, one that must run after it in phase after. A step constrained neither way runs after the
    /// steps it names if any of those is in phase after, else in phase before, after `preflight` — before the
    /// point of no return, where its failure can still be rolled back.
    pub(super) fn place(&mut self, plan: &Plan, customs: &[NodeIndex]) {
        if self.node(&StepId::Kexec).is_none() {
            return self.place_without_kexec(customs);
        }
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
}

/// `steps`, or `otherwise` when there are none: what a step joining them waits for.
fn or<'a>(steps: &'a [NodeIndex], otherwise: &'a [NodeIndex]) -> &'a [NodeIndex] {
    if steps.is_empty() { otherwise } else { steps }
}
