//! The step graph: what a plan does, in which order, and how long the guests are down.
//!
//! Pure like [`crate::plan`]: a checked [`Plan`] becomes a DAG of steps with stable ids (`vm:db-1:save`), built-in
//! edges that encode what must precede what (a guest is paused before it is saved, everything is saved before
//! `kexec`), and the custom `[[step]]`s placed by their `before` / `after`. `kup plan validate`, `kup plan graph`
//! and the dry-run all read the same graph, so what review sees is what the executor will schedule.
//! docs/graph.md describes the model; `cost` holds the estimate's numbers, `schedule` the arithmetic.

mod build;
pub(crate) mod compile;
pub(crate) mod cost;
mod cycles;
pub mod history;
pub(crate) mod render;
pub(crate) mod schedule;
pub(crate) mod step_id;

use crate::plan::{Diagnostic, Plan};
use petgraph::Direction;
use petgraph::algo::has_path_connecting;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

pub(crate) use compile::kernel_cmdline;
pub use compile::{CompiledStep, Program, compile};
pub use history::{History, Measured, PastApply};
pub(crate) use schedule::Schedule;
pub use step_id::{StepId, StepKey};

/// Stable diagnostic codes of the graph checks.
pub mod code {
    /// A `before` / `after` names a step that does not exist.
    pub const UNKNOWN_STEP: &str = "kup::plan::unknown-step";
    /// The steps' order has a cycle: no step of it could ever start.
    pub const STEP_CYCLE: &str = "kup::plan::step-cycle";
    pub(crate) const DOWNTIME_BUDGET: &str = "kup::plan::downtime-budget";
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
pub(crate) enum StepKind {
    Preflight,
    KernelLoad,
    VmPause {
        vm: usize,
    },
    VmSave {
        vm: usize,
    },
    /// `vm:NAME:shutdown`: a `handover = "restart"` guest powered off.
    VmShutdown {
        vm: usize,
    },
    AppSave {
        app: usize,
    },
    PciCheck {
        pci: usize,
    },
    /// `pci:ADDR:bind`: after the kexec, before the restore of the guest that owns the device.
    PciBind {
        pci: usize,
    },
    /// `preflush`: before the first guest or app goes down.
    Preflush,
    Sync,
    Isolate,
    Kexec,
    AppRestore {
        app: usize,
    },
    VmRestore {
        vm: usize,
    },
    VmResume {
        vm: usize,
    },
    /// `vm:NAME:boot`: a `handover = "restart"` guest started again.
    VmBoot {
        vm: usize,
    },
    Verify,
    Custom {
        step: usize,
    },
    /// `livepatch:NAME:load`: the plan's live patch module loaded (`finit_module`).
    LivepatchLoad,
    /// `livepatch:NAME:transition`: every task switched to the patched code.
    LivepatchTransition,
    /// `livepatch:NAME:remove`: the patch disabled, its transition back finished, the module removed.
    LivepatchRemove,
}

impl StepKind {
    /// The id of the step of this kind in `plan` (kinds point into the plan's tables by index).
    pub(crate) fn id(&self, plan: &Plan) -> StepId {
        let vm = |i: usize| plan.vms.get(i).map(|v| v.name.clone()).unwrap_or_default();
        let app = |i: usize| plan.apps.get(i).map(|a| a.name.clone()).unwrap_or_default();
        let patch = || {
            plan.livepatch
                .as_ref()
                .map(|l| l.name.clone())
                .unwrap_or_default()
        };
        let address = |i: usize| {
            plan.pci
                .get(i)
                .map(|d| d.address.to_string())
                .unwrap_or_default()
        };
        match *self {
            StepKind::Preflight => StepId::Preflight,
            StepKind::KernelLoad => StepId::KernelLoad,
            StepKind::VmPause { vm: i } => StepId::VmPause { vm: vm(i) },
            StepKind::VmSave { vm: i } => StepId::VmSave { vm: vm(i) },
            StepKind::AppSave { app: i } => StepId::AppSave { app: app(i) },
            StepKind::PciCheck { pci } => StepId::PciCheck {
                address: address(pci),
            },
            StepKind::PciBind { pci } => StepId::PciBind {
                address: address(pci),
            },
            StepKind::Preflush => StepId::Preflush,
            StepKind::Sync => StepId::Sync,
            StepKind::Isolate => StepId::Isolate,
            StepKind::Kexec => StepId::Kexec,
            StepKind::AppRestore { app: i } => StepId::AppRestore { app: app(i) },
            StepKind::VmRestore { vm: i } => StepId::VmRestore { vm: vm(i) },
            StepKind::VmResume { vm: i } => StepId::VmResume { vm: vm(i) },
            StepKind::VmShutdown { vm: i } => StepId::VmShutdown { vm: vm(i) },
            StepKind::VmBoot { vm: i } => StepId::VmBoot { vm: vm(i) },
            StepKind::Verify => StepId::Verify,
            StepKind::Custom { step } => StepId::Custom {
                name: plan
                    .steps
                    .get(step)
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
            },
            StepKind::LivepatchLoad => StepId::LivepatchLoad { name: patch() },
            StepKind::LivepatchTransition => StepId::LivepatchTransition { name: patch() },
            StepKind::LivepatchRemove => StepId::LivepatchRemove { name: patch() },
        }
    }

    /// The side of the kexec a step of this kind is on; a custom step starts before it and is placed once the
    /// graph is built (docs/graph.md, "Placing custom steps"). A live patch plan has no kexec: its builder puts
    /// every step, `verify` included, before the (absent) point of no return.
    pub(crate) fn phase(&self) -> Phase {
        match self {
            StepKind::Kexec => Phase::Kexec,
            StepKind::AppRestore { .. }
            | StepKind::PciBind { .. }
            | StepKind::VmRestore { .. }
            | StepKind::VmResume { .. }
            | StepKind::VmBoot { .. }
            | StepKind::Verify => Phase::After,
            _ => Phase::Before,
        }
    }
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct Step {
    /// Stable id, as custom steps and the journal name it.
    pub id: StepId,
    pub(crate) kind: StepKind,
    /// Where the step runs relative to the kexec.
    pub phase: Phase,
    /// How long it is expected to take, for the critical path and the downtime estimate.
    pub estimate: Duration,
    /// The assumption behind the estimate, when the plan could state the real figure.
    pub(crate) estimate_note: Option<String>,
    /// When the estimate is a measured figure (`--history`): how many runs it is the median of.
    pub(crate) measured: Option<usize>,
}

/// Why an edge exists: built in, or written in a custom step's `before` / `after` (which diagnostics point at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EdgeOrigin {
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
    /// Steps by the text of their id: what plans write in `before` / `after`. Hashed: every step is inserted and
    /// looked up while the graph is built, and only an unknown id's finding lists them, sorted.
    ids: HashMap<String, NodeIndex>,
    /// Set by [`StepGraph::use_history`]: what the measured figures rest on.
    history: Option<HistoryUsed>,
}

/// The earlier applies a graph's measured figures come from, for the renderings to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryUsed {
    /// Applies of this plan in the history.
    pub(crate) applies: usize,
    /// The hosts they ran on.
    pub(crate) hosts: Vec<String>,
    /// Steps whose figure is measured.
    pub(crate) measured: usize,
}

impl StepGraph {
    /// Every step, in insertion order (built-in steps first, then custom steps in plan order).
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.graph.node_weights()
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// No steps at all.
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
    pub(crate) fn graph(&self) -> &DiGraph<Step, EdgeOrigin> {
        &self.graph
    }

    /// Replaces the cost model's figure of every step that earlier applies of this plan measured by the median of
    /// its last runs; the other steps keep the model's estimate. A measured step's note (an assumption of the
    /// model, such as a guessed memory size) no longer applies and is dropped.
    pub(crate) fn use_history(&mut self, plan: &Plan, history: &History) {
        let name = plan.name.as_deref().unwrap_or_default();
        let mut measured = 0;
        for step in self.graph.node_weights_mut() {
            if let Some(m) = history.measured(name, &step.id) {
                step.estimate = m.median;
                step.estimate_note = None;
                step.measured = Some(m.runs);
                measured += 1;
            }
        }
        let (applies, hosts) = history.applies(name);
        self.history = Some(HistoryUsed {
            applies,
            hosts: hosts.into_iter().map(str::to_owned).collect(),
            measured,
        });
    }

    /// What the measured figures rest on, when [`StepGraph::use_history`] was called.
    pub(crate) fn history(&self) -> Option<&HistoryUsed> {
        self.history.as_ref()
    }

    /// The earliest-start schedule of this graph (see `Schedule`).
    pub fn schedule(&self) -> Schedule {
        Schedule::of(self)
    }
}

/// The graph checks `kup plan validate` runs on a plan that passed every other check: unknown step ids, cycles,
/// and the downtime estimate against `policy.max_downtime`. Returns the graph when no error was added.
/// With `history`, the estimate uses the figures earlier applies of the plan measured.
pub(crate) fn check(
    plan: &Plan,
    history: Option<&History>,
    out: &mut Vec<Diagnostic>,
) -> Option<StepGraph> {
    match StepGraph::build(plan) {
        Err(errors) => {
            out.extend(errors);
            None
        }
        Ok(mut graph) => {
            if let Some(history) = history {
                graph.use_history(plan, history);
            }
            match schedule::budget(plan, &graph) {
                Some(d) => {
                    out.push(d);
                    None
                }
                None => Some(graph),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan's first lines, a pinned kernel, for the tests of the graph and of its compilation to add to.
    pub(super) const KERNEL: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n\
        sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n";
    /// A libvirt guest, `db`.
    const DB: &str = "[[vm]]\nname = \"db\"\nlibvirt = \"db\"\nstate = \"/var/lib/kup/state/db\"\n";

    fn graph(extra: &str) -> StepGraph {
        let text = format!("{KERNEL}{DB}{extra}");
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let plan = loaded
            .plan
            .unwrap_or_else(|| panic!("{}", loaded.report.render(false, 100)));
        StepGraph::build(&plan).unwrap()
    }

    fn phase(g: &StepGraph, id: &str) -> Phase {
        g.step(id).unwrap_or_else(|| panic!("no step {id}")).phase
    }

    /// `id` is in `phase`, and each `(later, earlier)` pair is an edge of the graph.
    #[track_caller]
    fn assert_placed(g: &StepGraph, (id, phase_): (&str, Phase), edges: &[(&str, &str)]) {
        assert_eq!(phase(g, id), phase_);
        for &(later, earlier) in edges {
            assert!(g.depends_on(later, earlier), "{later} after {earlier}");
        }
    }

    fn custom(name: &str, keys: &str) -> String {
        format!("[[step]]\nname = \"{name}\"\nrun = [\"/bin/true\"]\n{keys}\n")
    }

    #[test]
    fn a_lone_custom_step_runs_before_kexec_unless_it_names_only_after_phase_steps() {
        // (the step, its keys, its phase, (later, earlier) edges)
        let cases = [
            // Unplaced: before the kexec, after preflight.
            (
                "note",
                "",
                Phase::Before,
                [("step:note", "preflight"), ("kexec", "step:note")],
            ),
            // Naming only after-phase steps: after the kexec.
            (
                "smoke",
                "before = [\"verify\"]",
                Phase::After,
                [("step:smoke", "kexec"), ("verify", "step:smoke")],
            ),
        ];
        for (name, keys, phase_, edges) in cases {
            let g = graph(&custom(name, keys));
            assert_placed(&g, (&format!("step:{name}"), phase_), &edges);
        }
    }

    #[test]
    fn a_step_may_follow_verify_or_precede_preflight() {
        let g = graph(&format!(
            "{}{}",
            custom("report", "after = [\"verify\"]"),
            custom("announce", "before = [\"preflight\"]")
        ));
        assert_placed(
            &g,
            ("step:report", Phase::After),
            &[("step:report", "verify")],
        );
        assert_placed(
            &g,
            ("step:announce", Phase::Before),
            &[("preflight", "step:announce")],
        );
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
        assert_placed(&g, ("step:b", Phase::After), &[("step:b", "step:a")]);
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
        assert_eq!(g.after("vm:db:pause"), ["preflush", "step:drain"]);
        // kernel:load → kexec is implied through the guest's save and sync.
        assert_eq!(g.after("kexec"), ["sync"]);
    }

    #[test]
    fn guests_wait_for_the_kernel_load_and_their_devices() {
        let text = format!(
            "{KERNEL}{DB}devices = [\"0000:3b:00.0\"]\n[[pci]]\naddress = \"0000:3b:00.0\"\n"
        );
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.unwrap()).unwrap();
        assert_eq!(
            g.after("vm:db:pause"),
            ["pci:0000:3b:00.0:check", "preflush"]
        );
        assert_eq!(g.after("preflush"), ["kernel:load"]);
    }

    #[test]
    fn the_preflush_runs_after_the_load_and_the_shutdowns_before_anything_goes_down() {
        let text = format!(
            "{KERNEL}{DB}\
             [[vm]]\nname = \"old\"\nqmp = \"/run/old.qmp\"\nstate = \"/var/lib/kup/state/old\"\n\
             handover = \"restart\"\nrestart = [\"/bin/true\"]\n\
             [[app]]\nname = \"spdk\"\nsystemd = \"spdk.service\"\n"
        );
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.expect("valid")).unwrap();
        assert_eq!(g.after("preflush"), ["vm:old:shutdown"]);
        assert_eq!(g.after("vm:db:pause"), ["preflush"]);
        // An app no guest needs stops before the guests go down, so before the preflush too (its stop may write).
        assert_eq!(g.after("app:spdk:save"), ["kernel:load"]);
        assert!(g.depends_on("preflush", "app:spdk:save"));
        assert!(g.depends_on("vm:old:shutdown", "kernel:load"));
        // A plan with nothing that goes down has no preflush.
        let bare = crate::check::check("t.toml", KERNEL.as_bytes());
        let g = StepGraph::build(&bare.plan.unwrap()).unwrap();
        assert!(g.step("preflush").is_none());
    }

    #[test]
    fn a_device_is_bound_after_the_kexec_before_its_guest_is_restored() {
        let text = format!(
            "{KERNEL}{DB}devices = [\"0000:3b:00.0\"]\n\
             [[vm]]\nname = \"web\"\nlibvirt = \"web\"\nstate = \"/var/lib/kup/state/web\"\n\
             [[pci]]\naddress = \"0000:3b:00.0\"\n[[pci]]\naddress = \"0000:af:00.0\"\ndriver = \"nvme\"\n"
        );
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.unwrap()).unwrap();
        assert_placed(
            &g,
            ("pci:0000:3b:00.0:bind", Phase::After),
            &[("pci:0000:3b:00.0:bind", "kexec")],
        );
        assert_eq!(g.after("pci:0000:3b:00.0:bind"), ["kexec"]);
        // (kexec → vm:db:restore is implied through the bind, and dropped.)
        assert_eq!(g.after("vm:db:restore"), ["pci:0000:3b:00.0:bind"]);
        // Another guest does not wait for a device it does not own.
        assert_eq!(g.after("vm:web:restore"), ["kexec"]);
        // A device no guest owns is still bound, and checked by verify after its bind.
        assert_eq!(g.after("pci:0000:af:00.0:bind"), ["kexec"]);
        assert!(g.after("verify").contains(&&StepId::PciBind {
            address: "0000:af:00.0".into()
        }));
        assert!(g.depends_on("verify", "pci:0000:3b:00.0:bind"));
        // The guest's downtime includes the bind; the other guest's does not.
        let down: std::collections::HashMap<_, _> = g.schedule().vm_downtime.into_iter().collect();
        assert_eq!(down["db"] - down["web"], cost::PCI_BIND);
    }

    /// `db` (libvirt) needing the systemd app `spdk`, with `extra` after the app.
    fn needing_spdk(extra: &str) -> String {
        format!(
            "{KERNEL}{DB}needs = [\"spdk\"]\n[[app]]\nname = \"spdk\"\nsystemd = \"spdk_tgt.service\"\n{extra}"
        )
    }

    #[test]
    fn a_custom_step_between_a_needed_app_and_its_guest_closes_a_cycle() {
        // db's save → spdk's save (the guest needs it) → step:x → db's pause → db's save.
        let text = needing_spdk(&custom(
            "x",
            "after = [\"app:spdk:save\"]\nbefore = [\"vm:db:pause\"]",
        ));
        let loaded = crate::check::check("t.toml", text.as_bytes());
        assert!(loaded.plan.is_none());
        let d = &loaded.report.diagnostics[0];
        assert_eq!(d.code, code::STEP_CYCLE);
        assert_eq!(
            d.message,
            "steps wait for each other in a cycle: step:x → vm:db:pause → vm:db:save → app:spdk:save → step:x"
        );
        // It points at both entries that close it.
        assert!(d.span.is_some());
        assert_eq!(d.related.len(), 1);
    }

    #[test]
    fn a_needed_app_stops_after_its_guest_and_starts_before_it() {
        let text = needing_spdk(
            "[[vm]]\nname = \"web\"\nlibvirt = \"web\"\nstate = \"/var/lib/kup/state/web\"\n",
        );
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.unwrap()).unwrap();
        assert_eq!(g.after("app:spdk:save"), ["vm:db:save"]);
        assert_eq!(g.after("vm:db:restore"), ["app:spdk:restore"]);
        // web does not need it.
        assert_eq!(g.after("vm:web:restore"), ["kexec"]);
        assert!(!g.depends_on("app:spdk:save", "vm:web:save"));
    }

    #[test]
    fn a_step_tied_to_no_guest_runs_before_every_pause_and_a_tied_one_stays_put() {
        let text = format!(
            "{KERNEL}{DB}[[vm]]\nname = \"web\"\nlibvirt = \"web\"\nstate = \"/var/lib/kup/state/web\"\n{}{}{}",
            custom("note", ""),
            custom("fence", "before = [\"kexec\"]"),
            custom("copy", "after = [\"vm:db:save\"]"),
        );
        let loaded = crate::check::check("t.toml", text.as_bytes());
        let g = StepGraph::build(&loaded.plan.unwrap()).unwrap();
        for step in ["step:note", "step:fence"] {
            for pause in ["vm:db:pause", "vm:web:pause"] {
                assert!(g.depends_on(pause, step), "{pause} after {step}");
            }
        }
        // Tied to db's save: it does not hold web's pause back (which would serialise the guests).
        assert!(!g.depends_on("vm:web:pause", "step:copy"));
        assert!(g.depends_on("kexec", "step:copy"));
    }

    #[test]
    fn an_isolate_that_keeps_every_guest_runs_before_the_first_pause() {
        let g = graph("unit = \"libvirtd.service\"\n[policy]\nisolate = \"rescue.target\"\n");
        assert_eq!(g.after("isolate"), ["kernel:load"]);
        assert_eq!(g.after("vm:db:pause"), ["preflush"]);
        assert_eq!(g.after("preflush"), ["isolate"]);
        assert!(!g.depends_on("isolate", "sync"));
        // Its time left the guest's downtime: the same plan without `unit` is down that much longer.
        let late = graph("[policy]\nisolate = \"rescue.target\"\n");
        let (e, l) = (g.schedule().downtime(), late.schedule().downtime());
        assert_eq!(l - e, cost::ISOLATE);
        // Over budget, the isolate is offered as a remedy only where it is inside the guest's window.
        let help = |keys: &str| {
            let text = format!(
                "{KERNEL}{DB}{keys}[policy]\nisolate = \"rescue.target\"\nmax_downtime = \"1s\"\n"
            );
            let loaded = crate::check::check("t.toml", text.as_bytes());
            let d = loaded
                .report
                .diagnostics
                .iter()
                .find(|d| d.code == code::DOWNTIME_BUDGET);
            d.and_then(|d| d.help.clone()).unwrap_or_default()
        };
        assert!(
            help("").contains("name every guest's `unit`"),
            "{}",
            help("")
        );
        let early = help("unit = \"libvirtd.service\"\n");
        assert!(
            early.contains("raise the budget") && !early.contains("policy.isolate"),
            "{early}"
        );
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let text = format!("{KERNEL}{DB}{}", custom("x", "before = [\"step:x\"]"));
        let loaded = crate::check::check("t.toml", text.as_bytes());
        assert!(loaded.plan.is_none());
        let d = &loaded.report.diagnostics[0];
        assert_eq!(d.code, code::STEP_CYCLE);
        assert!(d.message.ends_with("step:x → step:x"), "{}", d.message);
    }
}
