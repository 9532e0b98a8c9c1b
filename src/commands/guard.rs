//! The guard rails shared by `apply`, `resume` and `status`: reading and checking plans (fresh or frozen in a
//! journal), refusing what root must not trust, and turning the engine's outcome into the command's result.

use super::{CommandError, CommandResult};
use crate::exec::journal::{self, Journal, Loaded, LockError, RootLock, Started};
use crate::exec::{EngineError, Outcome};
use crate::graph::{Program, StepGraph};
use crate::host::{files, systemd};
use crate::plan::Plan;
use std::path::Path;

/// Writes a line to stderr; never panics (with `policy.isolate`, the terminal kup was started from disappears
/// mid-update).
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Refuses a path that group or others may write: anyone who can edit it decides what root does.
pub(crate) fn refuse_loose(path: &Path, what: &str) -> CommandResult {
    match files::loosely_writable(path) {
        Some(mode) => Err(CommandError::Refused(format!(
            "{what} {} is writable by group or others (mode {mode:o})",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Refuses a journal root another user could change: a symlink of theirs on the way, a directory of theirs or one
/// they may write (as root; the journal decides what resume runs on the new kernel).
pub(crate) fn refuse_untrusted_journal(root: &Path) -> CommandResult {
    crate::host::trust::check_state_dir("the journal directory", root)
        .map_err(|e| CommandError::Refused(e.to_string()))
}

/// Checks a plan's bytes; on any error prints its diagnostics and returns the invalid-plan error.
pub(crate) fn check_plan(file: &str, bytes: &[u8]) -> Result<(Plan, StepGraph), CommandError> {
    crate::check::check(file, bytes).valid().map_err(|report| {
        use std::io::Write as _;
        let _ = write!(
            std::io::stderr(),
            "{}",
            report.render(super::stderr_color(), super::width())
        );
        CommandError::invalid_plan()
    })
}

/// The program of an apply directory's frozen plan, with the command line its apply computed.
pub(crate) fn program_of(
    dir: &Path,
    bytes: &[u8],
    kernel_cmdline: &str,
) -> Result<(Plan, Program), CommandError> {
    let file = dir.join(journal::PLAN_FILE).display().to_string();
    let (mut plan, graph) = check_plan(&file, bytes)?;
    // The journal root the apply directory is in, as the apply compiled it (`--journal` included).
    if let Some(root) = dir.parent() {
        plan.policy.journal = root.to_owned();
    }
    let program = crate::graph::compile(&plan, &graph, kernel_cmdline);
    Ok((plan, program))
}

/// An unfinished apply's directory, opened for `resume` or `abort`: its frozen plan's bytes and its journal, open
/// for appending, with what it holds (a torn last line is reported and dropped).
pub(crate) fn open_apply(dir: &Path) -> Result<(Vec<u8>, Journal, Loaded), CommandError> {
    let (bytes, _) = journal::frozen_plan(dir).map_err(|e| CommandError::Refused(e.to_string()))?;
    let (journal, loaded) =
        Journal::open(dir).map_err(|e| CommandError::NeedsOperator(e.to_string()))?;
    if let Some(tail) = &loaded.torn_tail {
        say(format_args!(
            "kup: the journal's last line was cut short by a crash and was dropped: {tail:?}"
        ));
    }
    Ok((bytes, journal, loaded))
}

/// The apply record a journal starts with; a journal without one needs an operator.
pub(crate) fn started<'a>(dir: &Path, loaded: &'a Loaded) -> Result<Started<'a>, CommandError> {
    journal::started(&loaded.records).ok_or_else(|| {
        CommandError::NeedsOperator(format!(
            "{}: the journal has no apply record",
            dir.display()
        ))
    })
}

/// Takes the journal root's lock, or says who holds it.
pub(crate) fn lock(root: &Path) -> Result<RootLock, CommandError> {
    journal::lock(root).map_err(|e| match e {
        LockError::Held { .. } => CommandError::Locked(e.to_string()),
        LockError::Io(_) => CommandError::Usage(e.to_string()),
    })
}

/// Clears what marks an apply as unfinished, once nothing is left to do.
pub(crate) fn finish_pending(root: &Path) {
    journal::clear_pending(root);
    systemd::remove_resume_unit();
}

/// What an apply or a resume runs the engine on: the plan, its compiled program, the journal root, and the mode
/// and kernel-load choice the apply started with.
pub(crate) struct EngineRun<'a> {
    pub plan: &'a Plan,
    pub program: &'a Program,
    pub root: &'a Path,
    pub mode: journal::Mode,
    pub kernel_load: bool,
}

/// Runs the engine over `run.program` with the real host, the plan's policy, Ctrl-C handling and live progress,
/// and the resume unit installed right before the kexec. `done` are the steps a resume found done already.
pub(crate) fn run_engine(
    run: &EngineRun<'_>,
    journal: &mut journal::Journal,
    update_failed: Option<String>,
    done: &std::collections::BTreeSet<crate::graph::StepId>,
) -> Result<Outcome, EngineError> {
    let hook = || super::apply::before_kexec(run.root);
    let engine = crate::exec::Engine {
        host: &crate::host::RealHost,
        program: run.program,
        options: crate::exec::Options {
            mode: run.mode,
            kernel_load: run.kernel_load,
            parallelism: run.plan.policy.parallelism as usize,
            on_failure: run.plan.policy.on_failure,
            interrupted: crate::host::machine::interrupt_flag(),
            update_failed,
        },
        before_kexec: &hook,
        progress: &crate::exec::progress::Progress::new(),
    };
    engine.run(journal, done)
}

/// The command's result for the engine's outcome.
pub(crate) fn outcome(result: Result<Outcome, EngineError>) -> CommandResult {
    match result {
        Ok(Outcome::Completed) => Ok(()),
        Ok(Outcome::RolledBack { reason }) => Err(CommandError::RolledBack(reason)),
        Ok(Outcome::Failed { reason }) => Err(CommandError::NeedsOperator(reason)),
        Err(e) => Err(CommandError::NeedsOperator(e.to_string())),
    }
}
