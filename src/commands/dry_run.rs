//! `kup plan apply --dry-run`: prints every action a plan would take, in execution order, with exact argv, QMP
//! JSON and syscall arguments, the rollback of each step before the point of no return, and the estimate.
//!
//! Needs no root and changes nothing: it reads the plan and, when the plan inherits the command line, the running
//! kernel's command line (`--current-cmdline`, by default `/proc/cmdline`).

use super::{CommandError, CommandResult};
use crate::graph::render;
use crate::graph::schedule::human;
use crate::graph::{self, Program, StepId};
use crate::plan::CmdlineSpec;
use clap::ValueEnum;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Numbered steps with their actions and rollbacks.
    Human,
    /// JSON: the compiled program (shape in docs/graph.md).
    Json,
}

#[derive(Serialize)]
struct JsonDryRun<'a> {
    plan: Option<&'a str>,
    #[serde(flatten)]
    program: &'a Program,
    critical_path: &'a [StepId],
    estimated_downtime_ms: u64,
    vm_downtime_ms: BTreeMap<String, u64>,
    /// The new command line linted against the new kernel's release (absent when there is nothing to say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cmdline_warnings: Vec<String>,
}

/// The new command line linted against the release the kexec will boot: the image's own (its setup header), when
/// the image is readable here, else the plan's `kernel.version`.
fn cmdline_warnings(plan: &crate::plan::Plan, cmdline: &str) -> Vec<String> {
    let Some(kernel) = &plan.kernel else {
        return Vec::new();
    };
    let from_image = crate::host::kernel_file::read_image(&kernel.image)
        .ok()
        .map(|image| image.release().to_owned());
    let release = from_image.or_else(|| kernel.version.clone());
    let lint = crate::kparams::lint_cmdline(cmdline, release.as_deref())
        .into_iter()
        .map(|f| format!("{} ({})", f.message, f.help));
    // Advice about the kernel to come (parallel bring-up turned off on a kernel that has it, a chatty serial
    // console), while it is still cheap to change.
    let target = crate::boot::target::TargetKernel {
        release: release.as_deref(),
        cmdline,
    };
    let advice = crate::boot::target::advise_target(&target, None)
        .into_iter()
        .map(|r| r.message);
    lint.chain(advice).collect()
}

/// `kup plan apply --dry-run`.
pub(crate) fn run(path: &Path, format: Format, current_cmdline: &Path) -> CommandResult {
    let (plan, graph) = super::graph::load_valid(path)?;
    let spec = plan.kernel.as_ref().map(|k| &k.cmdline);
    let inherits = matches!(spec, Some(CmdlineSpec::Edit { inherit: true, .. }));
    let running = if inherits {
        std::fs::read_to_string(current_cmdline).map_err(|e| {
            CommandError::Usage(format!(
                "the plan inherits the running command line, but {} cannot be read: {e}",
                current_cmdline.display()
            ))
        })?
    } else {
        String::new()
    };
    // A live patch plan boots no kernel: its command line is empty.
    let cmdline = match spec {
        Some(spec) => graph::kernel_cmdline(spec, &running).map_err(|e| {
            CommandError::Usage(format!("cannot build the new kernel command line: {e}"))
        })?,
        None => String::new(),
    };
    let program = graph::compile(&plan, &graph, &cmdline);
    let warnings = cmdline_warnings(&plan, &cmdline);
    let schedule = graph.schedule();
    let estimate = render::json(&schedule);
    match format {
        Format::Json => {
            let out = JsonDryRun {
                plan: plan.name.as_deref(),
                program: &program,
                critical_path: &schedule.critical_path,
                estimated_downtime_ms: estimate.estimated_downtime_ms,
                vm_downtime_ms: estimate.vm_downtime_ms,
                cmdline_warnings: warnings,
            };
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => {
            let source = if plan.is_livepatch() {
                "none: a live patch boots no kernel".to_owned()
            } else if inherits {
                format!("{} with the plan's edits", current_cmdline.display())
            } else {
                "from the plan".to_owned()
            };
            print!("{}", human_listing(plan.name.as_deref(), &program, &source));
            for warning in &warnings {
                eprintln!("warning: new kernel command line: {warning}");
            }
            println!(
                "\nestimate: {} in all (critical path {}); host down {}{}",
                human(schedule.total),
                graph::schedule::join_ids(&schedule.critical_path, " → "),
                human(schedule.host_downtime),
                schedule
                    .vm_downtime
                    .iter()
                    .map(|(vm, d)| format!("; vm {vm} down {}", human(*d)))
                    .collect::<String>()
            );
        }
    }
    Ok(())
}

fn human_listing(name: Option<&str>, program: &Program, source: &str) -> String {
    let mut out =
        String::from("dry run: nothing is changed; steps in an order that respects every edge\n");
    if let Some(name) = name {
        let _ = writeln!(out, "plan: {name}");
    }
    let _ = writeln!(
        out,
        "new kernel command line ({source}):\n  {}",
        program.kernel_cmdline
    );
    for (i, step) in program.steps.iter().enumerate() {
        let after = if step.after.is_empty() {
            String::new()
        } else {
            format!(", after {}", graph::schedule::join_ids(&step.after, ", "))
        };
        let _ = writeln!(
            out,
            "\n{}. {} [{}, ~{}{after}]",
            i + 1,
            step.id,
            step.phase,
            human(std::time::Duration::from_millis(step.estimate_ms))
        );
        if step.actions.is_empty() {
            let _ = writeln!(out, "     (no action: marks a point in the schedule)");
        }
        for a in &step.actions {
            let _ = writeln!(out, "     {}", a.describe());
        }
        if !step.rollback.is_empty() {
            let _ = writeln!(out, "   rollback:");
            for a in &step.rollback {
                let _ = writeln!(out, "     {}", a.describe());
            }
        }
    }
    out
}
