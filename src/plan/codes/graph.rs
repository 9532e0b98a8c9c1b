//! The codes of the step graph's checks (`src/graph/`): unknown step ids, cycles, the downtime budget.

use super::{CodeDoc, Pass::Graph, example};
use crate::plan::Severity::Error;

pub(super) const CODES: &[CodeDoc] = &[
    CodeDoc {
        code: "kup::plan::unknown-step",
        title: "before/after names no step",
        severity: Error,
        pass: Graph,
        means: "A `before` / `after` id that is not a step of this plan (a typo, `drain` for `step:drain`, `isolate` without `policy.isolate`). Help: the closest id.",
        why: "`before` and `after` place a custom step relative to another step by its id; an id that is not in the graph cannot be ordered against.",
        fix: "Use an id that `kup plan graph` lists.",
        examples: "`unknown-step.toml`, `unknown-step--isolate.toml`",
        example: example!("unknown-step"),
    },
    CodeDoc {
        code: "kup::plan::step-cycle",
        title: "custom steps ordered in a cycle",
        severity: Error,
        pass: Graph,
        means: "Custom steps whose `before` / `after` form a cycle, or a step constrained to run both before and after the kexec. Names the steps of the cycle and points at its entries.",
        why: "In a cycle every step waits for another, so none of them could ever start; a step both before and after the kexec cannot run at all.",
        fix: "Break the cycle.",
        examples: "`step-cycle.toml`, `step-cycle--kexec.toml`",
        example: example!("step-cycle"),
    },
    CodeDoc {
        code: "kup::plan::downtime-budget",
        title: "the estimated downtime exceeds policy.max_downtime",
        severity: Error,
        pass: Graph,
        means: "The estimated downtime of the worst VM (or the host, without VMs) exceeds `policy.max_downtime`. Help: the critical path and its biggest contributors.",
        why: "The estimate is how long the worst guest would be paused; a plan that expects to exceed `policy.max_downtime` is refused before it starts rather than found to be too slow while guests are down.",
        fix: "Raise the budget, or shorten the critical path (shared RAM, fewer services to stop).",
        examples: "`downtime-budget.toml`",
        example: example!("downtime-budget"),
    },
];
