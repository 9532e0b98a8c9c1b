//! `kup plan graph`: shows the steps a plan will run, their order, what can run at once and the downtime estimate,
//! as text for people, DOT or Mermaid for diagrams, or JSON for tools.

use crate::exit;
use crate::graph::{StepGraph, render};
use crate::plan;
use clap::ValueEnum;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Ordered listing with phases, parallel groups, the critical path and the estimate.
    Text,
    /// Graphviz DOT (`| dot -Tsvg`).
    Dot,
    /// Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// JSON, shape documented in docs/graph.md.
    Json,
}

/// Renders the graph of a loaded, valid plan in `format`.
pub fn render(plan: &plan::Plan, graph: &StepGraph, format: Format) -> String {
    let schedule = graph.schedule();
    match format {
        Format::Text => render::text(plan, graph, &schedule),
        Format::Dot => render::dot(plan, &schedule),
        Format::Mermaid => render::mermaid(&schedule),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&render::json(&schedule)).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// Loads a plan file; on any error prints its diagnostics (stderr) and returns the exit code to use.
pub fn load_valid(path: &Path) -> Result<(plan::Plan, StepGraph), ExitCode> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return Err(exit::code(exit::USAGE_OR_IO));
        }
    };
    let loaded = plan::load(&path.display().to_string(), &bytes);
    let Some(plan) = loaded.plan else {
        eprint!(
            "{}",
            loaded.report.render(super::stderr_color(), super::width())
        );
        return Err(exit::code(exit::INVALID_PLAN));
    };
    // Warnings do not stop a valid plan, but the operator should still see them.
    if !loaded.report.diagnostics.is_empty() {
        eprint!(
            "{}",
            loaded.report.render(super::stderr_color(), super::width())
        );
    }
    match StepGraph::build(&plan) {
        Ok(graph) => Ok((plan, graph)),
        // `load` already ran the same checks, so this is unreachable in practice; report rather than panic.
        Err(diagnostics) => {
            let report = plan::PlanDiagnostics {
                diagnostics,
                ..loaded.report
            };
            eprint!("{}", report.render(super::stderr_color(), super::width()));
            Err(exit::code(exit::INVALID_PLAN))
        }
    }
}

pub fn run(path: &Path, format: Format) -> ExitCode {
    match load_valid(path) {
        Ok((plan, graph)) => {
            print!("{}", render(&plan, &graph, format));
            exit::code(exit::SUCCESS)
        }
        Err(code) => code,
    }
}
