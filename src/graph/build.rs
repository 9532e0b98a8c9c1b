//! Building the step graph: the built-in steps and the edges that say what must precede what, the custom steps
//! placed by their `before` / `after`, and the reduction that drops edges other paths already imply.

use super::{
    EdgeOrigin, MAX_REDUCED_STEPS, Phase, Step, StepGraph, StepId, StepKey, StepKind, cost,
};
use crate::plan::{Diagnostic, Plan};
use petgraph::Direction;
use petgraph::algo::{DfsSpace, has_path_connecting};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

impl StepGraph {
    /// Builds the graph of a checked plan, or reports unknown step ids and cycles among custom steps.
    pub fn build(plan: &Plan) -> Result<Self, Vec<Diagnostic>> {
        // About as many steps as the plan will have (four per guest, two per app and device): the graph is not
        // regrown while it is built.
        let steps =
            8 + 4 * plan.vms.len() + 2 * (plan.apps.len() + plan.pci.len()) + plan.steps.len();
        let mut g = Self {
            graph: DiGraph::with_capacity(steps, 2 * steps),
            ids: HashMap::with_capacity(steps),
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
        let mut drop = vec![false; self.graph.edge_count()];
        for e in redundant {
            drop[e.index()] = true;
        }
        // retain_edges visits the edges from the last: each index is still the original one when it is visited.
        self.graph.retain_edges(|_, e| !drop[e.index()]);
    }

    pub(super) fn add(&mut self, plan: &Plan, kind: StepKind) -> NodeIndex {
        let id = kind.id(plan);
        let phase = kind.phase();
        let estimate = cost::estimate(plan, &kind);
        let text = id.key().into_owned();
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
        self.ids.get(id.key().as_ref()).copied()
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
        // An app no guest needs is stopped before the first pause: it does not need the guests stopped, so its
        // stop stays out of their downtime.
        let needed: Vec<bool> = (0..plan.apps.len())
            .map(|app| plan.vms.iter().any(|v| v.needs.contains(&app)))
            .collect();
        let free_saves: Vec<NodeIndex> = (0..plan.apps.len())
            .filter(|&app| !needed[app])
            .map(|app| self.add_after(plan, StepKind::AppSave { app }, &[load]))
            .collect();
        // The isolate stops every unit its target does not want. It runs before the first pause when nothing it
        // would stop is still needed: every guest's unit and every needed app's unit are kept out of it
        // (`IgnoreOnIsolate=yes`, see compile/host_steps.rs). A guest without `unit`, or a needed app kup knows
        // no unit of (CRIU, hooks), would die in it: then it waits until every save is done, as it must.
        let early = plan.policy.isolate.is_some()
            && plan.vms.iter().all(|v| v.unit.is_some())
            && plan.apps.iter().enumerate().all(|(app, a)| {
                !needed[app] || matches!(a.kind, crate::plan::AppKind::Systemd { .. })
            });
        let mut gate = vec![load];
        gate.extend(&free_saves);
        let isolate = early.then(|| {
            let mut first = gate.clone();
            first.extend(&checks);
            self.add_after(plan, StepKind::Isolate, &first)
        });
        gate.extend(isolate);
        let mut saves = free_saves.clone();
        // Per guest, in plan order: the step after which it is down and its state durable (save or shutdown).
        let mut saved = vec![None; plan.vms.len()];
        // Guests the plan reboots are shut down first: their power-off takes seconds, which must not be spent
        // while the saved guests are already paused.
        let mut shutdowns = Vec::new();
        // Made when the first guest or app that goes down needs it, so it runs after every shutdown: as late as
        // possible before the first pause, which leaves the guests the least time to dirty RAM again.
        let mut preflush = None;
        let restarted_first = plan.vms.iter().enumerate().filter(|(_, g)| g.restarts());
        let saved_then = plan.vms.iter().enumerate().filter(|(_, g)| !g.restarts());
        for (vm, guest) in restarted_first.chain(saved_then) {
            // A kernel that fails to load (signature, size) or a device bound to the wrong driver stops the plan
            // before this guest loses a millisecond; and a paused guest does not wait out the kernel load, the
            // early isolate or the stop of an app no guest needs.
            let down = if guest.restarts() {
                let down = self.add_after(plan, StepKind::VmShutdown { vm }, &gate);
                shutdowns.push(down);
                down
            } else {
                let before = self.preflush(plan, &mut preflush, &gate, &shutdowns);
                self.add_after(plan, StepKind::VmPause { vm }, &[before])
            };
            for address in &guest.devices {
                if let Some(j) = plan.pci.iter().position(|d| &d.address == address) {
                    self.edge(checks[j], down);
                }
            }
            let done = if guest.restarts() {
                down
            } else {
                self.add_after(plan, StepKind::VmSave { vm }, &[down])
            };
            saved[vm] = Some(done);
            saves.push(done);
        }
        // An app a guest needs (SPDK serving its disks) is stopped only once every guest that needs it is saved.
        for app in (0..plan.apps.len()).filter(|&app| needed[app]) {
            let mut first = vec![load];
            first.extend(
                plan.vms
                    .iter()
                    .zip(&saved)
                    .filter(|(v, _)| v.needs.contains(&app))
                    .filter_map(|(_, s)| *s),
            );
            saves.push(self.add_after(plan, StepKind::AppSave { app }, &first));
        }
        let sync = self.add_after(plan, StepKind::Sync, or(&saves, &[preflight]));
        let last = match (plan.policy.isolate.is_some(), isolate) {
            (true, None) => self.add_after(plan, StepKind::Isolate, &[sync]),
            _ => sync,
        };
        let kexec = self.add_after(plan, StepKind::Kexec, &[last, load]);
        if let Some(isolate) = isolate {
            self.edge(isolate, kexec);
        }
        for &c in &checks {
            self.edge(c, kexec);
        }
        // The new kernel bound each device to its default driver at boot: it is bound as planned again before the
        // guest that owns it is restored (its QEMU opens the device), and before `verify` checks it.
        let binds: Vec<NodeIndex> = (0..plan.pci.len())
            .map(|pci| self.add_after(plan, StepKind::PciBind { pci }, &[kexec]))
            .collect();
        let mut finals = binds.clone();
        // An app a guest needs is back before that guest is restored (its QEMU opens the vhost-user socket).
        let mut restores = vec![None; plan.apps.len()];
        for app in (0..plan.apps.len()).filter(|&app| needed[app]) {
            let node = self.add_after(plan, StepKind::AppRestore { app }, &[kexec]);
            restores[app] = Some(node);
            finals.push(node);
        }
        let mut guests_back = Vec::new();
        for (vm, guest) in plan.vms.iter().enumerate() {
            // A device goes back to its planned driver, and an app the guest needs is started, before the guest
            // comes back.
            let before_guest = |this: &mut Self, node| {
                for address in &guest.devices {
                    if let Some(j) = plan.pci.iter().position(|d| &d.address == address) {
                        this.edge(binds[j], node);
                    }
                }
                for &app in &guest.needs {
                    if let Some(r) = restores[app] {
                        this.edge(r, node);
                    }
                }
            };
            if guest.restarts() {
                let boot = self.add_after(plan, StepKind::VmBoot { vm }, &[kexec]);
                before_guest(self, boot);
                guests_back.push(boot);
                continue;
            }
            let restore = self.add_after(plan, StepKind::VmRestore { vm }, &[kexec]);
            before_guest(self, restore);
            guests_back.push(self.add_after(plan, StepKind::VmResume { vm }, &[restore]));
        }
        finals.extend(&guests_back);
        // On the new kernel the guests come first; an app no guest needs is started once they all run again.
        for app in (0..plan.apps.len()).filter(|&app| !needed[app]) {
            let mut first = vec![kexec];
            first.extend(&guests_back);
            finals.push(self.add_after(plan, StepKind::AppRestore { app }, &first));
        }
        self.add_after(plan, StepKind::Verify, or(&finals, &[kexec]));
    }

    /// The `preflush` step, added after the kernel load and the shutdowns the first time a guest or an app about to
    /// go down asks for it: everything `sync` flushes inside their downtime is written back first while they run.
    fn preflush(
        &mut self,
        plan: &Plan,
        preflush: &mut Option<NodeIndex>,
        gate: &[NodeIndex],
        shutdowns: &[NodeIndex],
    ) -> NodeIndex {
        if let Some(node) = *preflush {
            return node;
        }
        let mut first = gate.to_vec();
        first.extend(shutdowns);
        let node = self.add_after(plan, StepKind::Preflush, &first);
        *preflush = Some(node);
        node
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
        // One search space for every reachability question: nodes are not added while steps are placed.
        let mut space = DfsSpace::new(&self.graph);
        for &node in customs {
            self.graph[node].phase = Phase::Before;
            let mut connected = |g: &Self, a, b| {
                has_path_connecting(&g.graph, a, b, Some(&mut space))
                    || has_path_connecting(&g.graph, b, a, Some(&mut space))
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
        // One search space for every reachability question: nodes are not added while steps are placed.
        let mut space = DfsSpace::new(&self.graph);
        let mut path = |graph: &DiGraph<Step, EdgeOrigin>, from, to| {
            has_path_connecting(graph, from, to, Some(&mut space))
        };
        for (i, &node) in customs.iter().enumerate() {
            let phase = if path(&self.graph, node, kexec) {
                Phase::Before
            } else if path(&self.graph, kexec, node) {
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
                    if !path(&self.graph, preflight, node)
                        && !path(&self.graph, node, preflight) =>
                {
                    self.graph.add_edge(preflight, node, EdgeOrigin::Placement);
                }
                Phase::After
                    if !path(&self.graph, node, verify) && !path(&self.graph, verify, node) =>
                {
                    // `verify` is last unless a step asked to run after it.
                    self.graph.add_edge(node, verify, EdgeOrigin::Placement);
                }
                _ => {}
            }
        }
        self.before_first_pause(customs);
    }

    /// A custom step before the kexec that is tied to no guest — no path leads from it to a guest's pause, save
    /// or shutdown, or back — does not need the guests stopped: it runs before every guest's pause (or
    /// shutdown), so it never runs, nor fails, inside their downtime. Tied steps stay where their entries put them.
    fn before_first_pause(&mut self, customs: &[NodeIndex]) {
        let guest_steps: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|&n| {
                matches!(
                    self.graph[n].kind,
                    StepKind::VmPause { .. }
                        | StepKind::VmSave { .. }
                        | StepKind::VmShutdown { .. }
                )
            })
            .collect();
        let downs: Vec<NodeIndex> = guest_steps
            .iter()
            .copied()
            .filter(|&n| !matches!(self.graph[n].kind, StepKind::VmSave { .. }))
            .collect();
        // Everything a guest step reaches, and everything that reaches one: two walks, not one per pair. Taken
        // before any edge is added, so the edges added below (each into a pause) close no cycle: a pause reaches
        // none of the steps they start from.
        let tied = |dir: Direction| {
            let mut seen = vec![false; self.graph.node_count()];
            let mut stack = guest_steps.clone();
            while let Some(n) = stack.pop() {
                for m in self.graph.neighbors_directed(n, dir) {
                    if !std::mem::replace(&mut seen[m.index()], true) {
                        stack.push(m);
                    }
                }
            }
            seen
        };
        let (after_guests, before_guests) = (tied(Direction::Outgoing), tied(Direction::Incoming));
        let free: Vec<NodeIndex> = customs
            .iter()
            .copied()
            .filter(|n| self.graph[*n].phase == Phase::Before)
            .filter(|n| !after_guests[n.index()] && !before_guests[n.index()])
            .collect();
        for node in free {
            for &down in &downs {
                self.graph.add_edge(node, down, EdgeOrigin::Placement);
            }
        }
    }
}

/// `steps`, or `otherwise` when there are none: what a step joining them waits for.
fn or<'a>(steps: &'a [NodeIndex], otherwise: &'a [NodeIndex]) -> &'a [NodeIndex] {
    if steps.is_empty() { otherwise } else { steps }
}
