//! The one checking entry point: a plan's bytes become the checked plan, its step graph and every diagnostic.
//!
//! It composes the two pure layers — [`crate::plan`] (syntax, structure, meaning) and [`crate::graph`] (step ids,
//! cycles, the downtime budget) — so that `plan` need not know the graph exists, and every command builds the
//! graph once, here.

use crate::graph::{self, History, StepGraph};
use crate::plan::{self, Plan, PlanDiagnostics};

/// What checking one plan file found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Present only when there is no error.
    pub plan: Option<Plan>,
    /// The plan's step graph, present with the plan.
    pub(crate) graph: Option<StepGraph>,
    /// Every diagnostic, errors and warnings, in source order.
    pub report: PlanDiagnostics,
}

impl Checked {
    /// The plan and its graph, when the plan is valid.
    pub(crate) fn valid(self) -> Result<(Plan, StepGraph), PlanDiagnostics> {
        match (self.plan, self.graph) {
            (Some(plan), Some(graph)) => Ok((plan, graph)),
            _ => Err(self.report),
        }
    }
}

/// Checks a plan file's bytes (`file` is how the user named it, used in every message). The graph's checks run
/// only on a plan that passed every other check: they need a whole, meaningful plan.
pub fn check(file: &str, bytes: &[u8]) -> Checked {
    check_with_history(file, bytes, None)
}

/// [`check`], with the downtime estimate taken from `history` where earlier applies of the plan measured a step.
pub fn check_with_history(file: &str, bytes: &[u8], history: Option<&History>) -> Checked {
    let plan::Loaded { plan, mut report } = plan::load(file, bytes);
    let graph = plan
        .as_ref()
        .and_then(|p| graph::check(p, history, &mut report.diagnostics));
    report.sort();
    Checked {
        plan: plan.filter(|_| graph.is_some()),
        graph,
        report,
    }
}
