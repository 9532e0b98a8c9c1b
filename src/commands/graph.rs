//! `kup plan graph`: shows the steps a plan will run, their order, what can run at once and the downtime estimate,
//! as text for people, DOT or Mermaid for diagrams, or JSON for tools.

use super::{CommandError, CommandResult};
use crate::graph::{StepGraph, render};
use crate::plan;
use clap::ValueEnum;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
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
pub(crate) fn render(plan: &plan::Plan, graph: &StepGraph, format: Format) -> String {
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

/// Loads and checks a plan file; on any error prints its diagnostics (stderr). Warnings do not stop a valid plan,
/// but the operator still sees them.
pub(crate) fn load_valid(path: &Path) -> Result<(plan::Plan, StepGraph), CommandError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let checked = crate::check::check(&path.display().to_string(), &bytes);
    if !checked.report.diagnostics.is_empty() {
        eprint!(
            "{}",
            checked.report.render(super::stderr_color(), super::width())
        );
    }
    checked.valid().map_err(|_| CommandError::invalid_plan())
}

/// `kup plan graph`.
pub(crate) fn run(path: &Path, format: Format) -> CommandResult {
    let (plan, graph) = load_valid(path)?;
    print!("{}", render(&plan, &graph, format));
    Ok(())
}
