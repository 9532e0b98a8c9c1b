//! `kup plan abort`: for an apply that died before the point of no return, undo what it did — resume the guests
//! it paused, restart the apps it stopped, unload the kernel — instead of going on; `resume` goes forward.

use super::guard::{
    finish_pending, lock, open_apply, outcome, program_of, refuse_loose, say, started,
};
use super::{CommandError, CommandResult};
use crate::exec::Outcome;
use crate::exec::abort;
use crate::exec::journal;
use crate::host::{files, machine};
use std::path::Path;

/// `kup plan abort [--journal DIR]`.
pub(crate) fn run(root: &Path, metrics_textfile: Option<&Path>) -> CommandResult {
    if !files::is_dir(root) {
        return Err(CommandError::Refused(format!(
            "nothing to abort in {}: no such directory",
            root.display()
        )));
    }
    refuse_loose(root, "journal directory")?;
    super::guard::refuse_untrusted_journal(root)?;
    let _lock = lock(root)?;
    let Some(dir) = journal::pending(root) else {
        return Err(CommandError::Refused(format!(
            "nothing to abort in {}: no apply is pending",
            root.display()
        )));
    };
    let (bytes, mut journal, loaded) = open_apply(&dir)?;
    let started = started(&dir, &loaded)?;
    let (mode, kernel_load) = (started.mode, started.kernel_load);
    let (plan, program) = program_of(&dir, &bytes, started.kernel_cmdline)?;
    let boot_id = machine::boot_id().map_err(|e| CommandError::Usage(e.to_string()))?;
    let undo = abort::decide(&loaded.records, &program, &boot_id)
        .map_err(|e| CommandError::Refused(e.to_string()))?;
    say(format_args!(
        "kup: aborting {}: undoing {} interrupted and {} completed steps",
        dir.display(),
        undo.interrupted.len(),
        undo.completed.len()
    ));
    let engine = crate::exec::Engine {
        host: &crate::host::RealHost,
        program: &program,
        options: crate::exec::Options {
            mode,
            kernel_load,
            parallelism: plan.policy.parallelism as usize,
            on_failure: plan.policy.on_failure,
            interrupted: machine::interrupt_flag(),
            update_failed: None,
        },
        // Never called: an abort runs no step forward, the kexec least of all.
        before_kexec: &|| Ok(()),
        progress: &crate::exec::progress::Progress::new(),
    };
    let result = engine.abort(&mut journal, &undo);
    if let Some(path) = super::metrics::target(metrics_textfile, &dir, &plan) {
        super::metrics::write(&path, root, &plan);
    }
    match result {
        Outcome::RolledBack { reason } => {
            finish_pending(root);
            say(format_args!("kup: rolled back: {reason}"));
            Ok(())
        }
        other => outcome(Ok(other)),
    }
}
