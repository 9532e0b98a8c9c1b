//! `kup plan apply` for real or `--rehearse`: the refusals before anything changes, the journal, the lock, the
//! transient unit that survives `policy.isolate`, and the engine run that ends in the kexec.

use super::guard::{
    EngineRun, check_plan, finish_pending, lock, outcome, refuse_loose, run_engine, say,
};
use super::{CommandError, CommandResult};
use crate::exec::Outcome;
use crate::exec::journal::{self, Event, Journal, Mode};
use crate::exit;
use crate::host::{files, machine, systemd};
use crate::plan::{CmdlineSpec, Plan};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// `kup plan apply` without `--dry-run`.
pub(crate) struct ApplyArgs<'a> {
    /// The plan file.
    pub(crate) plan: &'a Path,
    /// Do not ask.
    pub(crate) yes: bool,
    /// Everything but the kexec.
    pub(crate) rehearse: bool,
    /// With `rehearse`: leave the kernel alone.
    pub(crate) no_kernel_load: bool,
    /// Journal root instead of the plan's.
    pub(crate) journal: Option<&'a Path>,
    /// Where to write the metrics instead of `policy.metrics`.
    pub(crate) metrics_textfile: Option<&'a Path>,
}

/// A plan needs root unless it is a rehearsal touching nothing privileged: no kernel load, no apps, no PCI, no
/// isolate (QMP sockets may belong to an unprivileged user).
fn needs_privilege(plan: &Plan, rehearse: bool, kernel_load: bool) -> bool {
    !rehearse
        || kernel_load
        || plan.is_livepatch()
        || !plan.apps.is_empty()
        || !plan.pci.is_empty()
        || plan.policy.isolate.is_some()
}

fn confirm(plan: &Plan, rehearse: bool) -> bool {
    let what = if rehearse {
        "Rehearse (no kexec)"
    } else {
        "Apply"
    };
    if let Some(l) = &plan.livepatch {
        let _ = write!(
            std::io::stderr(),
            "{what} plan \"{}\" on this host: {} live patch {} in the running kernel (no guest is paused, nothing \
             reboots). Type 'yes' to continue: ",
            plan.name.as_deref().unwrap_or("(unnamed)"),
            if l.action == crate::plan::LivepatchAction::Remove {
                "removes"
            } else {
                "loads"
            },
            l.name
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        return std::io::stdin().lock().read_line(&mut answer).is_ok() && answer.trim() == "yes";
    }
    let _ = write!(
        std::io::stderr(),
        "{what} plan \"{}\" on this host: pauses {} VM(s), stops {} app(s){}. Type 'yes' to continue: ",
        plan.name.as_deref().unwrap_or("(unnamed)"),
        plan.vms.len(),
        plan.apps.len(),
        if rehearse {
            ""
        } else {
            ", then kexecs into the new kernel"
        }
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

/// Everything checked before the journal exists: the host, privileges, the operator's yes.
fn preconditions(args: &ApplyArgs, plan: &Plan, hostname: &str) -> CommandResult {
    if !plan.hosts.is_empty() && !plan.hosts.iter().any(|g| g.matches(hostname)) {
        let globs: Vec<&str> = plan.hosts.iter().map(|g| g.as_str()).collect();
        return Err(CommandError::Refused(format!(
            "this host is \"{hostname}\"; the plan is for {}",
            globs.join(", ")
        )));
    }
    if !machine::is_root() && needs_privilege(plan, args.rehearse, !args.no_kernel_load) {
        return Err(CommandError::Refused(
            "kup must run as root for this plan (kernel load, systemd, CRIU or PCI); only a --rehearse \
             --no-kernel-load of a plan with VMs and custom steps alone runs unprivileged"
                .to_owned(),
        ));
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CommandError::Refused(
                "standard input is not a terminal, so kup cannot ask: pass --yes to confirm"
                    .to_owned(),
            ));
        }
        if !confirm(plan, args.rehearse) {
            return Err(CommandError::Refused("not confirmed".to_owned()));
        }
    }
    Ok(())
}

/// When systemd runs the host and the plan isolates a target, kup must not run inside the caller's session (the
/// isolate stops it): it re-runs this apply in a transient unit that survives the isolate.
fn rerun_in_unit() -> CommandResult {
    let exe = systemd::own_exe().map_err(|e| CommandError::Usage(e.to_string()))?;
    let mut rerun = machine::own_args();
    if !rerun.iter().any(|a| a == "--yes") {
        rerun.push("--yes".to_owned());
    }
    let argv = systemd::transient_unit_argv(&exe, &rerun);
    say(format_args!(
        "kup: the plan isolates a target; continuing in a unit that survives it: {}",
        argv.join(" ")
    ));
    match systemd::run_attached(&argv) {
        Ok(Some(0)) => Ok(()),
        // kup validated the plan before re-running itself, so a 1 is systemd-run's own failure (no D-Bus, no
        // permission), not an invalid plan.
        Ok(Some(1)) => Err(CommandError::Refused(
            "systemd-run could not start the kup-apply unit (is D-Bus running?); nothing was changed by kup"
                .to_owned(),
        )),
        Ok(Some(code)) => Err(CommandError::Reported(
            u8::try_from(code).unwrap_or(exit::NEEDS_OPERATOR),
        )),
        Ok(None) => Err(CommandError::NeedsOperator(
            "the kup-apply unit was killed; see `kup plan status`".to_owned(),
        )),
        Err(e) => Err(CommandError::Usage(e.to_string())),
    }
}

/// The new kernel's command line, from the running kernel's when the plan inherits it.
fn new_cmdline(plan: &Plan) -> Result<String, CommandError> {
    // A live patch plan boots no kernel: no command line to build.
    let Some(kernel) = &plan.kernel else {
        return Ok(String::new());
    };
    let running = if matches!(kernel.cmdline, CmdlineSpec::Edit { inherit: true, .. }) {
        machine::proc_cmdline().map_err(|e| CommandError::Usage(e.to_string()))?
    } else {
        String::new()
    };
    crate::graph::kernel_cmdline(&kernel.cmdline, &running)
        .map_err(|e| CommandError::Usage(format!("cannot build the new kernel command line: {e}")))
}

/// The journal of this apply: its directory with the frozen plan and its digest, marked pending.
fn create_journal(
    root: &Path,
    bytes: &[u8],
    metrics: Option<&Path>,
) -> Result<(Journal, PathBuf, String), CommandError> {
    let dir = root.join(format!(
        "{}-{}",
        journal::rfc3339(journal::now_ms()).replace([':', '.'], ""),
        machine::pid()
    ));
    let plan_sha = crate::kernel_image::Sha256Digest::of(bytes).to_string();
    let setup = || -> std::io::Result<Journal> {
        let journal = Journal::create(&dir)?;
        journal::write_atomic(&dir.join(journal::PLAN_FILE), bytes)?;
        journal::write_atomic(
            &dir.join(journal::PLAN_SHA_FILE),
            format!("{plan_sha}\n").as_bytes(),
        )?;
        if let Some(metrics) = metrics {
            let text = format!("{}\n", metrics.display());
            journal::write_atomic(&dir.join(journal::METRICS_FILE), text.as_bytes())?;
        }
        journal::set_pending(root, &dir)?;
        Ok(journal)
    };
    let journal = setup().map_err(|e| {
        CommandError::Usage(format!(
            "cannot create the journal in {}: {e}",
            dir.display()
        ))
    })?;
    Ok((journal, dir, plan_sha))
}

/// Installs the resume unit right before the kexec, when systemd will boot the new kernel.
pub(crate) fn before_kexec(root: &Path) -> Result<(), crate::host::HostError> {
    if !machine::systemd_is_pid1() {
        say(format_args!(
            "kup: systemd is not running this host: nothing will start `kup plan resume` on the new kernel by \
             itself; make the new system's init run `kup plan resume --journal {}`",
            root.display()
        ));
        return Ok(());
    }
    systemd::install_resume_unit(root, &root.join(journal::PENDING_FILE))
}

/// `kup plan apply PLAN` (real or rehearsed).
pub(crate) fn run(args: &ApplyArgs) -> CommandResult {
    let bytes = std::fs::read(args.plan)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", args.plan.display())))?;
    if let Some(mode) = files::loosely_writable(args.plan) {
        return Err(CommandError::Refused(format!(
            "{} is writable by group or others (mode {mode:o}): anyone who can edit it decides what root runs; \
             `chmod go-w` it",
            args.plan.display()
        )));
    }
    if let Some(path) = args.metrics_textfile.filter(|p| p.is_relative()) {
        return Err(CommandError::Usage(format!(
            "--metrics-textfile {}: write an absolute path (the resume after the kexec runs from `/`)",
            path.display()
        )));
    }
    let (mut plan, graph) = check_plan(&args.plan.display().to_string(), &bytes)?;
    let hostname = machine::hostname().map_err(|e| CommandError::Usage(e.to_string()))?;
    preconditions(args, &plan, &hostname)?;
    if !args.rehearse
        && plan.policy.isolate.is_some()
        && machine::systemd_is_pid1()
        && !systemd::in_transient_unit()
    {
        return rerun_in_unit();
    }
    let root = args
        .journal
        .map_or_else(|| plan.policy.journal.clone(), Path::to_path_buf);
    refuse_loose(&root, "journal directory")?;
    super::guard::refuse_untrusted_journal(&root)?;
    let _lock = lock(&root)?;
    if let Some(dir) = journal::pending(&root) {
        return Err(CommandError::Refused(format!(
            "an earlier apply is not finished ({}): run `kup plan resume --journal {}` or inspect it with \
             `kup plan status --journal {}`",
            dir.display(),
            root.display(),
            root.display()
        )));
    }
    let kernel_cmdline = new_cmdline(&plan)?;
    // The journal this apply writes, `--journal` included: the flushes before the kexec cover its file system.
    plan.policy.journal.clone_from(&root);
    let program = crate::graph::compile(&plan, &graph, &kernel_cmdline);
    let identity = machine::identity().map_err(|e| CommandError::Usage(e.to_string()))?;
    let (mut journal, dir, plan_sha256) = create_journal(&root, &bytes, args.metrics_textfile)?;
    let mode = if args.rehearse {
        Mode::Rehearse
    } else {
        Mode::Apply
    };
    let started = Event::ApplyStarted {
        plan: plan.name.clone().unwrap_or_default(),
        plan_path: files::canonical(args.plan).display().to_string(),
        plan_sha256,
        mode,
        kernel_load: !args.no_kernel_load,
        boot_id: identity.boot_id,
        release: identity.release,
        hostname,
        pid: machine::pid(),
        kernel_cmdline,
    };
    journal
        .append(started)
        .map_err(|e| CommandError::Usage(format!("cannot write the journal: {e}")))?;
    // The old kernel's boot, so that every apply can show its before and after (`kup boot-time --journal`).
    if let Some(report) = super::resume::running_kernel_boot() {
        journal
            .append(report)
            .map_err(|e| CommandError::Usage(format!("cannot write the journal: {e}")))?;
    }
    say(format_args!("kup: journal {}", dir.display()));
    let run = EngineRun {
        plan: &plan,
        program: &program,
        root: &root,
        mode,
        kernel_load: !args.no_kernel_load,
    };
    let result = execute(&run, &mut journal);
    if let Some(path) = super::metrics::target(args.metrics_textfile, &dir, &plan) {
        super::metrics::write(&path, &root, &plan);
    }
    result
}

/// Runs the engine over a fresh journal and clears the pending mark when nothing is left to do.
fn execute(run: &EngineRun<'_>, journal: &mut Journal) -> CommandResult {
    let result = run_engine(run, journal, None, &Default::default());
    if matches!(result, Ok(Outcome::Completed | Outcome::RolledBack { .. })) {
        finish_pending(run.root);
    }
    outcome(result)
}
