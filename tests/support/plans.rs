//! Plans as the engine sees them, for the tests and benchmarks that perform compiled steps themselves.

#![allow(dead_code)] // each test binary uses a different part

use kup::graph::StepGraph;
use kup::graph::{self, CompiledStep, Program};

/// The plan in `text` compiled as `kup plan apply` compiles it on a host booted with `console=ttyS0`; a plan that
/// does not load is a panic with its diagnostics and its text.
pub fn program(text: &str) -> Program {
    let loaded = kup::check::check("plan.toml", text.as_bytes());
    let plan = loaded
        .plan
        .unwrap_or_else(|| panic!("{}\n{text}", loaded.report.render(false, 120)));
    let graph = StepGraph::build(&plan).unwrap();
    graph::compile(&plan, &graph, "console=ttyS0")
}

/// The compiled step `id`, or a panic naming it.
pub fn step<'a>(program: &'a Program, id: &str) -> &'a CompiledStep {
    program
        .steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}
