//! `kup plan graph`: shows the steps a plan will run, their order, what can run at once and the downtime estimate,
//! as text for people, DOT or Mermaid for diagrams, or JSON for tools.

use super::{CommandError, CommandResult};
use crate::graph::{History, StepGraph, render};
use crate::plan;
use clap::ValueEnum;
use std::path::{Path, PathBuf};

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
    load_valid_with_history(path, None)
}

/// [`load_valid`], the estimate taken from `history` where it measured a step.
fn load_valid_with_history(
    path: &Path,
    history: Option<&History>,
) -> Result<(plan::Plan, StepGraph), CommandError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let checked = crate::check::check_with_history(&path.display().to_string(), &bytes, history);
    if !checked.report.diagnostics.is_empty() {
        eprint!(
            "{}",
            checked.report.render(super::stderr_color(), super::width())
        );
    }
    checked.valid().map_err(|_| CommandError::invalid_plan())
}

/// The history of the journal roots `--history` named (none: `None`, the cost model alone). An apply whose journal
/// cannot be read is left out, with a warning on stderr.
pub(crate) fn read_history(roots: &[PathBuf]) -> Result<Option<History>, CommandError> {
    if roots.is_empty() {
        return Ok(None);
    }
    let read = crate::exec::history::read(roots).map_err(|e| CommandError::Usage(e.to_string()))?;
    for skipped in &read.skipped {
        eprintln!("warning: --history: left out {skipped}");
    }
    Ok(Some(read.history))
}

/// `kup plan graph`; with journal roots in `history`, measured step durations replace the cost model's.
pub(crate) fn run(path: &Path, format: Format, history: &[PathBuf]) -> CommandResult {
    let history = read_history(history)?;
    let (plan, graph) = load_valid_with_history(path, history.as_ref())?;
    print!("{}", render(&plan, &graph, format));
    Ok(())
}
