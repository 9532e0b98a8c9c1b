//! `kup plan resume`: finishes an apply from its journal — on the new kernel (run by `kup-resume.service`), after
//! a crash, or to retry — after proving from the journal whether the kexec happened, and into which kernel.

use super::guard::{
    EngineRun, finish_pending, lock, open_apply, outcome, program_of, refuse_loose, run_engine,
    say, started,
};
use super::{CommandError, CommandResult};
use crate::exec::Outcome;
use crate::exec::journal::{self, Event, Journal};
use crate::exec::resume::{self, Decision, Now};
use crate::graph::Program;
use crate::host::{files, kmsg, machine, systemd};
use std::path::PathBuf;

/// `kup plan resume`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ResumeArgs {
    /// Journal root.
    #[arg(long, value_name = "DIR", default_value = crate::plan::DEFAULT_JOURNAL)]
    pub(crate) journal: PathBuf,
    /// Run this interrupted step again although it is not idempotent (after checking what it did), or a step after
    /// the kexec that completed but whose effect was lost (a restore whose QEMU died before its resume).
    #[arg(long, value_name = "STEP")]
    pub(crate) rerun: Vec<String>,
    /// Record this interrupted step as done (after checking that it completed).
    #[arg(long, value_name = "STEP")]
    pub(crate) mark_done: Vec<String>,
    /// Write the outcome as node_exporter textfile metrics to this file, atomically (default: the path the apply
    /// was given, else `policy.metrics`).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_textfile: Option<PathBuf>,
}

/// `kup plan resume`.
pub(crate) fn run(args: &ResumeArgs) -> CommandResult {
    let root = args.journal.as_path();
    if !files::is_dir(root) {
        // Nothing was ever applied with this journal root: do not create it.
        say(format_args!(
            "kup: nothing to resume in {} (no such directory)",
            root.display()
        ));
        return Ok(());
    }
    refuse_loose(root, "journal directory")?;
    super::guard::refuse_untrusted_journal(root)?;
    let _lock = lock(root)?;
    let Some(dir) = journal::pending(root) else {
        say(format_args!("kup: nothing to resume in {}", root.display()));
        systemd::remove_resume_unit();
        return Ok(());
    };
    let (bytes, mut journal, loaded) = open_apply(&dir)?;
    let started = started(&dir, &loaded)?;
    if let Ok(current) = std::fs::read(started.plan_path)
        && current != bytes
    {
        return Err(CommandError::Refused(format!(
            "{} changed since this apply started; resume runs the plan as it was when applied (frozen in \
             {}). Restore the file, or move it aside if the change is intended for a later update",
            started.plan_path,
            dir.display()
        )));
    }
    let (plan, program) = program_of(&dir, &bytes, started.kernel_cmdline)?;
    mark_done(&mut journal, &program, &args.mark_done)?;
    let records = journal::read(&dir)
        .map_err(|e| CommandError::NeedsOperator(e.to_string()))?
        .records;
    let now = Now {
        boot_id: machine::boot_id().map_err(|e| CommandError::Usage(e.to_string()))?,
        release: machine::kernel_release().map_err(|e| CommandError::Usage(e.to_string()))?,
        proc_cmdline: machine::proc_cmdline().map_err(|e| CommandError::Usage(e.to_string()))?,
    };
    let decision = resume::decide(&records, &program, &now, &args.rerun)
        .map_err(|e| CommandError::NeedsOperator(e.to_string()))?;
    record_resume(&mut journal, &records, &now, &decision)?;
    if let Some(message) = &decision.update_failed {
        say(format_args!("kup: {message}"));
    }
    say(format_args!(
        "kup: resuming {} ({} of {} steps already done)",
        dir.display(),
        decision.done.len(),
        program.steps.len()
    ));
    let run = EngineRun {
        plan: &plan,
        program: &program,
        root,
        mode: started.mode,
        kernel_load: started.kernel_load,
    };
    let result = execute(&run, &mut journal, &decision);
    if let Some(path) = super::metrics::target(args.metrics_textfile.as_deref(), &dir, &plan) {
        super::metrics::write(&path, root, &plan);
    }
    result
}

/// A record this resume could not write before it ran anything: nothing was done, and the same resume works once
/// the journal can be written again (a full disk freed).
fn unwritten(e: journal::JournalError) -> CommandError {
    CommandError::Usage(format!(
        "cannot write the journal: {e}; nothing was done: once its file system has room again, run `kup plan \
         resume` again"
    ))
}

/// Records the operator's `--mark-done` steps as done.
fn mark_done(journal: &mut Journal, program: &Program, ids: &[String]) -> CommandResult {
    for text in ids {
        let step = program
            .steps
            .iter()
            .find(|s| s.id == text.as_str())
            .ok_or_else(|| {
                CommandError::Usage(format!("--mark-done {text}: the plan has no such step"))
            })?;
        let event = Event::StepDone {
            step: step.id.clone(),
            duration_ms: 0,
            outputs: vec![serde_json::json!({ "marked_done_by_operator": true })],
        };
        journal.append(event).map_err(unwritten)?;
    }
    Ok(())
}

/// The resume's own records: that it started (and on which kernel), what the decision learnt, and — the first
/// time after a kexec — the new kernel's boot report.
fn record_resume(
    journal: &mut Journal,
    records: &[journal::Record],
    now: &Now,
    decision: &Decision,
) -> CommandResult {
    let mut events = vec![Event::ResumeStarted {
        boot_id: now.boot_id.clone(),
        release: now.release.clone(),
        pid: machine::pid(),
        rebooted: decision.rebooted,
        on_new_kernel: decision.on_new_kernel,
        uptime_ms: machine::uptime_ms(),
    }];
    events.extend(decision.record.iter().cloned());
    let first_after_kexec = decision.rebooted && !journal::has_new_kernel_boot_report(records);
    if first_after_kexec && let Some(report) = running_kernel_boot() {
        events.push(report);
    }
    for event in events {
        journal.append(event).map_err(unwritten)?;
    }
    Ok(())
}

/// The running kernel's boot report, as a journal record; `None` when its log cannot be read.
pub(crate) fn running_kernel_boot() -> Option<Event> {
    let (log, _source) = kmsg::kernel_log().ok()?;
    let report = serde_json::to_value(crate::boot::analyse(&log)).ok()?;
    Some(Event::BootReport { report })
}

/// Runs the rest of the program; a failed update whose steps all ran (the guests back on the old kernel) leaves
/// nothing to resume.
fn execute(run: &EngineRun<'_>, journal: &mut Journal, decision: &Decision) -> CommandResult {
    let result = run_engine(run, journal, decision.update_failed.clone(), &decision.done);
    let nothing_left = match &result {
        Ok(Outcome::Completed | Outcome::RolledBack { .. }) => true,
        Ok(Outcome::Failed { reason }) => decision.update_failed.as_ref() == Some(reason),
        Err(_) => false,
    };
    if nothing_left {
        finish_pending(run.root);
    }
    outcome(result)
}
