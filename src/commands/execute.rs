//! `kup plan apply` (real or `--rehearse`), `kup plan resume` and `kup plan status`: the guard rails around the
//! engine — refusals before anything changes, the journal directory, the lock, the resume unit — and the reports.

use crate::exec::journal::{self, Event, Journal, Mode, RootLock};

/// `eprintln!` that cannot panic: with `policy.isolate`, the terminal kup was started from disappears mid-update.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}
use crate::exec::resume::{self, Now};
use crate::exec::status::{self, ApplyState, Status};
use crate::exec::{Engine, Options, Outcome};
use crate::exit;
use crate::graph::StepGraph;
use crate::graph::action::{self, Program};
use crate::host::{self, RealHost};
use crate::plan::{CmdlineSpec, Plan};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Where the resume unit goes, and the target that pulls it in at boot.
const UNIT_DIR: &str = "/etc/systemd/system";
const UNIT_NAME: &str = "kup-resume.service";
const UNIT_WANTS: &str = "multi-user.target.wants";
/// Set in the environment of the transient unit apply re-runs itself in, so it does not do so again.
const IN_UNIT_ENV: &str = "KUP_IN_UNIT";

pub struct ApplyArgs<'a> {
    pub plan: &'a Path,
    pub yes: bool,
    pub rehearse: bool,
    pub no_kernel_load: bool,
    pub journal: Option<&'a Path>,
}

fn refuse(message: impl std::fmt::Display) -> ExitCode {
    say!("kup: refused: {message}");
    exit::code(exit::REFUSED)
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    say!("kup: error: {message}");
    exit::code(code)
}

/// Group- or other-writable: someone but the owner could change what a root process will do.
fn loosely_writable(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o022 != 0).then_some(mode & 0o777)
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::kernel_image::Sha256Digest::of(bytes).to_string()
}

/// A plan needs root unless it is a rehearsal touching nothing privileged: no kernel load, no apps, no PCI, no
/// isolate (QMP sockets may belong to an unprivileged user).
fn needs_privilege(plan: &Plan, rehearse: bool, kernel_load: bool) -> bool {
    !rehearse
        || kernel_load
        || !plan.apps.is_empty()
        || !plan.pci.is_empty()
        || plan.policy.isolate.is_some()
}

fn load_plan_text(file: &str, bytes: &[u8]) -> Result<(Plan, StepGraph), ExitCode> {
    let loaded = crate::plan::load(file, bytes);
    match loaded.plan {
        Some(plan) => match StepGraph::build(&plan) {
            Ok(graph) => Ok((plan, graph)),
            Err(diagnostics) => {
                let report = crate::plan::PlanDiagnostics {
                    diagnostics,
                    ..loaded.report
                };
                say_raw!("{}", report.render(super::stderr_color(), super::width()));
                Err(exit::code(exit::INVALID_PLAN))
            }
        },
        None => {
            say_raw!(
                "{}",
                loaded.report.render(super::stderr_color(), super::width())
            );
            Err(exit::code(exit::INVALID_PLAN))
        }
    }
}

fn confirm(plan: &Plan, rehearse: bool) -> bool {
    let what = if rehearse {
        "Rehearse (no kexec)"
    } else {
        "Apply"
    };
    say_raw!(
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

/// The unit that runs `kup plan resume` on the new kernel; removed when the plan completes.
pub fn resume_unit(exe: &Path, root: &Path) -> String {
    format!(
        "# Written by kup before a kexec; removed when the plan completes.\n\
         [Unit]\n\
         Description=kup: finish the live kernel update from its journal\n\
         ConditionPathExists={pending}\n\
         After=local-fs.target\n\
         # The plan may isolate a target; this unit must outlive that.\n\
         IgnoreOnIsolate=yes\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} plan resume --journal {root}\n\
         # Apps restored with CRIU run in this unit's cgroup: when the oneshot ends, systemd must not kill them.\n\
         KillMode=process\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        pending = root.join(journal::PENDING_FILE).display(),
        exe = exe.display(),
        root = root.display(),
    )
}

fn install_resume_unit(root: &Path) -> Result<(), String> {
    if !host::systemd_is_pid1() {
        say!(
            "kup: systemd is not running this host: nothing will start `kup plan resume` on the new kernel by \
             itself; make the new system's init run `kup plan resume --journal {}`",
            root.display()
        );
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find kup's own path: {e}"))?;
    let unit = Path::new(UNIT_DIR).join(UNIT_NAME);
    // 0644 like every unit file: systemd warns about world-inaccessible units.
    journal::write_atomic_mode(&unit, resume_unit(&exe, root).as_bytes(), 0o644)
        .map_err(|e| format!("cannot write {}: {e}", unit.display()))?;
    let wants = Path::new(UNIT_DIR).join(UNIT_WANTS);
    std::fs::create_dir_all(&wants)
        .map_err(|e| format!("cannot create {}: {e}", wants.display()))?;
    let link = wants.join(UNIT_NAME);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&unit, &link)
        .map_err(|e| format!("cannot enable {UNIT_NAME}: {e}"))?;
    journal::sync_dir(&wants).map_err(|e| e.to_string())
}

fn remove_resume_unit() {
    let _ = std::fs::remove_file(Path::new(UNIT_DIR).join(UNIT_WANTS).join(UNIT_NAME));
    let _ = std::fs::remove_file(Path::new(UNIT_DIR).join(UNIT_NAME));
}

/// Clears what marks an apply as unfinished, once nothing is left to do.
fn finish_pending(root: &Path) {
    let _ = std::fs::remove_file(root.join(journal::PENDING_FILE));
    let _ = journal::sync_dir(root);
    remove_resume_unit();
}

/// When systemd runs the host and the plan isolates a target, kup must not run inside the caller's session (the
/// isolate stops it): the argv that re-runs this apply in a transient unit that survives the isolate.
pub fn transient_unit_argv(exe: &Path, args: &[String]) -> Vec<String> {
    let mut argv = vec![
        "systemd-run".to_owned(),
        "--unit=kup-apply".to_owned(),
        "--property=IgnoreOnIsolate=yes".to_owned(),
        "--collect".to_owned(),
        "--wait".to_owned(),
        "--pipe".to_owned(),
        format!("--setenv={IN_UNIT_ENV}=1"),
        "--".to_owned(),
        exe.display().to_string(),
    ];
    argv.extend(args.iter().cloned());
    argv
}

fn outcome_code(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Completed => exit::code(exit::SUCCESS),
        Outcome::RolledBack { reason } => fail(exit::ROLLED_BACK, format!("rolled back: {reason}")),
        Outcome::Failed { reason } => fail(exit::NEEDS_OPERATOR, reason),
    }
}

fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

pub fn apply(args: &ApplyArgs) -> ExitCode {
    let kernel_load = !args.no_kernel_load;
    let bytes = match std::fs::read(args.plan) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                exit::USAGE_OR_IO,
                format!("cannot read {}: {e}", args.plan.display()),
            );
        }
    };
    if let Some(mode) = loosely_writable(args.plan) {
        return refuse(format!(
            "{} is writable by group or others (mode {mode:o}): anyone who can edit it decides what root runs; \
             `chmod go-w` it",
            args.plan.display()
        ));
    }
    let (plan, graph) = match load_plan_text(&args.plan.display().to_string(), &bytes) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let hostname = match host::hostname() {
        Ok(h) => h,
        Err(e) => return fail(exit::USAGE_OR_IO, e),
    };
    if !plan.hosts.is_empty() && !plan.hosts.iter().any(|g| g.matches(&hostname)) {
        let globs: Vec<&str> = plan.hosts.iter().map(|g| g.as_str()).collect();
        return refuse(format!(
            "this host is \"{hostname}\"; the plan is for {}",
            globs.join(", ")
        ));
    }
    if !nix::unistd::geteuid().is_root() && needs_privilege(&plan, args.rehearse, kernel_load) {
        return refuse(
            "kup must run as root for this plan (kernel load, systemd, CRIU or PCI); only a --rehearse \
             --no-kernel-load of a plan with VMs and custom steps alone runs unprivileged",
        );
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return refuse(
                "standard input is not a terminal, so kup cannot ask: pass --yes to confirm",
            );
        }
        if !confirm(&plan, args.rehearse) {
            return refuse("not confirmed");
        }
    }
    if !args.rehearse
        && plan.policy.isolate.is_some()
        && host::systemd_is_pid1()
        && std::env::var_os(IN_UNIT_ENV).is_none()
    {
        let Ok(exe) = std::env::current_exe() else {
            return fail(exit::USAGE_OR_IO, "cannot find kup's own path");
        };
        let mut rerun: Vec<String> = std::env::args().skip(1).collect();
        if !rerun.iter().any(|a| a == "--yes") {
            rerun.push("--yes".to_owned());
        }
        let argv = transient_unit_argv(&exe, &rerun);
        say!(
            "kup: the plan isolates a target; continuing in a unit that survives it: {}",
            argv.join(" ")
        );
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status();
        return match status.map(|s| s.code()) {
            // kup validated the plan before re-running itself, so a 1 is systemd-run's own failure (no D-Bus, no
            // permission), not an invalid plan.
            Ok(Some(1)) => fail(
                exit::REFUSED,
                "systemd-run could not start the kup-apply unit (is D-Bus running?); nothing was changed by kup",
            ),
            Ok(Some(code)) => exit::code(u8::try_from(code).unwrap_or(exit::NEEDS_OPERATOR)),
            Ok(None) => fail(
                exit::NEEDS_OPERATOR,
                "the kup-apply unit was killed; see `kup plan status`",
            ),
            Err(e) => fail(exit::USAGE_OR_IO, format!("cannot run systemd-run: {e}")),
        };
    }
    let root = args
        .journal
        .map_or_else(|| plan.policy.journal.clone(), Path::to_path_buf);
    if let Some(mode) = loosely_writable(&root) {
        return refuse(format!(
            "journal directory {} is writable by group or others (mode {mode:o})",
            root.display()
        ));
    }
    let _lock = match RootLock::acquire(&root) {
        Ok(lock) => lock,
        Err(e @ journal::LockError::Held { .. }) => return fail(exit::LOCKED, e),
        Err(e) => return fail(exit::USAGE_OR_IO, e),
    };
    if let Some(dir) = journal::pending(&root) {
        return refuse(format!(
            "an earlier apply is not finished ({}): run `kup plan resume --journal {}` or inspect it with \
             `kup plan status --journal {}`",
            dir.display(),
            root.display(),
            root.display()
        ));
    }
    let running = if matches!(plan.kernel.cmdline, CmdlineSpec::Edit { inherit: true, .. }) {
        match std::fs::read_to_string("/proc/cmdline") {
            Ok(text) => text,
            Err(e) => return fail(exit::USAGE_OR_IO, format!("cannot read /proc/cmdline: {e}")),
        }
    } else {
        String::new()
    };
    let kernel_cmdline = match action::kernel_cmdline(&plan.kernel.cmdline, &running) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                exit::USAGE_OR_IO,
                format!("cannot build the new kernel command line: {e}"),
            );
        }
    };
    let program = action::compile(&plan, &graph, &kernel_cmdline);
    let (boot_id, release) = match (host::boot_id(), host::kernel_release()) {
        (Ok(b), Ok(r)) => (b, r),
        (Err(e), _) | (_, Err(e)) => return fail(exit::USAGE_OR_IO, e),
    };
    let now = journal::now_ms();
    let dir = root.join(format!(
        "{}-{}",
        journal::rfc3339(now).replace([':', '.'], ""),
        std::process::id()
    ));
    let plan_sha = sha256_hex(&bytes);
    let setup = || -> std::io::Result<Journal> {
        let journal = Journal::create(&dir)?;
        journal::write_atomic(&dir.join(journal::PLAN_FILE), &bytes)?;
        journal::write_atomic(
            &dir.join(journal::PLAN_SHA_FILE),
            format!("{plan_sha}\n").as_bytes(),
        )?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        journal::write_atomic(
            &root.join(journal::PENDING_FILE),
            format!("{name}\n").as_bytes(),
        )?;
        Ok(journal)
    };
    let mut journal = match setup() {
        Ok(j) => j,
        Err(e) => {
            return fail(
                exit::USAGE_OR_IO,
                format!("cannot create the journal in {}: {e}", dir.display()),
            );
        }
    };
    let mode = if args.rehearse {
        Mode::Rehearse
    } else {
        Mode::Apply
    };
    let started = Event::ApplyStarted {
        plan: plan.name.clone().unwrap_or_default(),
        plan_path: std::fs::canonicalize(args.plan)
            .unwrap_or_else(|_| args.plan.to_path_buf())
            .display()
            .to_string(),
        plan_sha256: plan_sha,
        mode,
        kernel_load,
        boot_id,
        release,
        hostname,
        pid: std::process::id(),
        kernel_cmdline,
    };
    if let Err(e) = journal.append(started) {
        return fail(exit::USAGE_OR_IO, format!("cannot write the journal: {e}"));
    }
    say!("kup: journal {}", dir.display());
    let before_kexec = || install_resume_unit(&root);
    let engine = Engine {
        host: &RealHost,
        program: &program,
        options: Options {
            mode,
            kernel_load,
            parallelism: plan.policy.parallelism as usize,
            on_failure: plan.policy.on_failure,
            interrupted: interrupt_flag(),
            update_failed: None,
        },
        before_kexec: &before_kexec,
        progress: &crate::exec::progress::Progress::new(),
    };
    match engine.run(&mut journal, &Default::default()) {
        Ok(outcome) => {
            if matches!(outcome, Outcome::Completed | Outcome::RolledBack { .. }) {
                finish_pending(&root);
            }
            outcome_code(&outcome)
        }
        Err(e) => fail(exit::NEEDS_OPERATOR, e),
    }
}

/// The frozen plan of an apply directory, checked against its recorded digest.
fn frozen_plan(dir: &Path) -> Result<(Vec<u8>, String), String> {
    let bytes = std::fs::read(dir.join(journal::PLAN_FILE))
        .map_err(|e| format!("cannot read the frozen plan: {e}"))?;
    let recorded = std::fs::read_to_string(dir.join(journal::PLAN_SHA_FILE))
        .map_err(|e| format!("cannot read the frozen plan's digest: {e}"))?;
    let actual = sha256_hex(&bytes);
    if recorded.trim() != actual {
        return Err(format!(
            "the frozen plan in {} does not match its recorded sha256 (recorded {}, now {actual}): it was changed \
             after the apply started",
            dir.display(),
            recorded.trim()
        ));
    }
    Ok((bytes, actual))
}

fn apply_started(records: &[journal::Record]) -> Option<(&str, &str)> {
    records.first().and_then(|r| match &r.event {
        Event::ApplyStarted {
            plan_path,
            kernel_cmdline,
            ..
        } => Some((plan_path.as_str(), kernel_cmdline.as_str())),
        _ => None,
    })
}

fn program_of(dir: &Path, bytes: &[u8], kernel_cmdline: &str) -> Result<(Plan, Program), ExitCode> {
    let (plan, graph) = load_plan_text(&dir.join(journal::PLAN_FILE).display().to_string(), bytes)?;
    let program = action::compile(&plan, &graph, kernel_cmdline);
    Ok((plan, program))
}

pub struct ResumeArgs<'a> {
    pub journal: &'a Path,
    pub rerun: &'a [String],
    pub mark_done: &'a [String],
}

pub fn resume(args: &ResumeArgs) -> ExitCode {
    let root = args.journal;
    if !root.is_dir() {
        // Nothing was ever applied with this journal root: do not create it.
        say!(
            "kup: nothing to resume in {} (no such directory)",
            root.display()
        );
        return exit::code(exit::SUCCESS);
    }
    if let Some(mode) = loosely_writable(root) {
        return refuse(format!(
            "journal directory {} is writable by group or others (mode {mode:o})",
            root.display()
        ));
    }
    let _lock = match RootLock::acquire(root) {
        Ok(lock) => lock,
        Err(e @ journal::LockError::Held { .. }) => return fail(exit::LOCKED, e),
        Err(e) => return fail(exit::USAGE_OR_IO, e),
    };
    let Some(dir) = journal::pending(root) else {
        say!("kup: nothing to resume in {}", root.display());
        remove_resume_unit();
        return exit::code(exit::SUCCESS);
    };
    let (bytes, _) = match frozen_plan(&dir) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    let (mut journal, loaded) = match Journal::open(&dir) {
        Ok(j) => j,
        Err(e) => return fail(exit::NEEDS_OPERATOR, e),
    };
    if let Some(tail) = &loaded.torn_tail {
        say!("kup: the journal's last line was cut short by a crash and was dropped: {tail:?}");
    }
    let Some((plan_path, kernel_cmdline)) = apply_started(&loaded.records) else {
        return fail(
            exit::NEEDS_OPERATOR,
            format!("{}: the journal has no apply record", dir.display()),
        );
    };
    if let Ok(current) = std::fs::read(plan_path)
        && current != bytes
    {
        return refuse(format!(
            "{plan_path} changed since this apply started; resume runs the plan as it was when applied (frozen in \
             {}). Restore the file, or move it aside if the change is intended for a later update",
            dir.display()
        ));
    }
    let (plan, program) = match program_of(&dir, &bytes, kernel_cmdline) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for id in args.mark_done {
        if !program.steps.iter().any(|s| &s.id == id) {
            return fail(
                exit::USAGE_OR_IO,
                format!("--mark-done {id}: the plan has no such step"),
            );
        }
        let event = Event::StepDone {
            step: id.clone(),
            duration_ms: 0,
            outputs: vec![serde_json::json!({ "marked_done_by_operator": true })],
        };
        if let Err(e) = journal.append(event) {
            return fail(exit::USAGE_OR_IO, format!("cannot write the journal: {e}"));
        }
    }
    let records = match journal::read(&dir) {
        Ok(l) => l.records,
        Err(e) => return fail(exit::NEEDS_OPERATOR, e),
    };
    let now = match (
        host::boot_id(),
        host::kernel_release(),
        std::fs::read_to_string("/proc/cmdline"),
    ) {
        (Ok(boot_id), Ok(release), Ok(proc_cmdline)) => Now {
            boot_id,
            release,
            proc_cmdline,
        },
        _ => {
            return fail(
                exit::USAGE_OR_IO,
                "cannot read the boot id, kernel release or /proc/cmdline",
            );
        }
    };
    let decision = match resume::decide(&records, &program, &plan, &now, args.rerun) {
        Ok(d) => d,
        Err(e) => return fail(exit::NEEDS_OPERATOR, e),
    };
    let mode = records
        .first()
        .and_then(|r| match &r.event {
            Event::ApplyStarted {
                mode, kernel_load, ..
            } => Some((*mode, *kernel_load)),
            _ => None,
        })
        .unwrap_or((Mode::Apply, true));
    let mut events = vec![Event::ResumeStarted {
        boot_id: now.boot_id.clone(),
        release: now.release.clone(),
        pid: std::process::id(),
        rebooted: decision.rebooted,
        on_new_kernel: decision.on_new_kernel,
        uptime_ms: host::uptime_ms(),
    }];
    events.extend(decision.record.iter().cloned());
    let first_after_kexec = decision.rebooted
        && !records
            .iter()
            .any(|r| matches!(r.event, Event::BootReport { .. }));
    if first_after_kexec && let Ok((log, _source)) = crate::boot::live::kernel_log() {
        let report = crate::boot::analyse(&log);
        if let Ok(report) = serde_json::to_value(report) {
            events.push(Event::BootReport { report });
        }
    }
    for event in events {
        if let Err(e) = journal.append(event) {
            return fail(exit::USAGE_OR_IO, format!("cannot write the journal: {e}"));
        }
    }
    if let Some(message) = &decision.update_failed {
        say!("kup: {message}");
    }
    say!(
        "kup: resuming {} ({} of {} steps already done)",
        dir.display(),
        decision.done.len(),
        program.steps.len()
    );
    let before_kexec = || install_resume_unit(root);
    let engine = Engine {
        host: &RealHost,
        program: &program,
        options: Options {
            mode: mode.0,
            kernel_load: mode.1,
            parallelism: plan.policy.parallelism as usize,
            on_failure: plan.policy.on_failure,
            interrupted: interrupt_flag(),
            update_failed: decision.update_failed.clone(),
        },
        before_kexec: &before_kexec,
        progress: &crate::exec::progress::Progress::new(),
    };
    match engine.run(&mut journal, &decision.done) {
        Ok(outcome) => {
            // A failed update whose steps all ran (the guests are back on the old kernel) leaves nothing to resume.
            let nothing_left = match &outcome {
                Outcome::Completed | Outcome::RolledBack { .. } => true,
                Outcome::Failed { reason } => decision.update_failed.as_ref() == Some(reason),
            };
            if nothing_left {
                finish_pending(root);
            }
            outcome_code(&outcome)
        }
        Err(e) => fail(exit::NEEDS_OPERATOR, e),
    }
}

/// Whether the process named in the lock file is alive (and is not us).
fn lock_holder_alive(root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(root.join(journal::LOCK_FILE)) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

pub fn load_status(root: &Path) -> Result<Status, String> {
    let dir = journal::pending(root)
        .or_else(|| journal::latest(root))
        .ok_or_else(|| format!("no apply has been journaled in {}", root.display()))?;
    let loaded = journal::read(&dir)?;
    let (bytes, _) = frozen_plan(&dir)?;
    let (_, kernel_cmdline) =
        apply_started(&loaded.records).ok_or("the journal has no apply record")?;
    let (plan, program) = program_of(&dir, &bytes, kernel_cmdline)
        .map_err(|_| "the frozen plan no longer validates".to_owned())?;
    let vms: Vec<String> = plan.vms.iter().map(|v| v.name.clone()).collect();
    let mut status = status::fold(
        &dir.display().to_string(),
        &loaded.records,
        &program,
        &vms,
        lock_holder_alive(root),
        loaded.torn_tail.is_some(),
    );
    if status.state == ApplyState::Running && journal::pending(root).is_none() {
        status.state = ApplyState::PendingResume;
    }
    Ok(status)
}

pub fn status(root: &Path, json: bool) -> ExitCode {
    let status = match load_status(root) {
        Ok(s) => s,
        Err(e) => return fail(exit::USAGE_OR_IO, e),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", human_status(&status));
    }
    exit::code(exit::SUCCESS)
}

fn human_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "plan    {}",
        if s.plan.is_empty() {
            "(unnamed)"
        } else {
            &s.plan
        }
    );
    let _ = writeln!(out, "journal {}", s.journal);
    let _ = writeln!(
        out,
        "state   {state}{}",
        s.message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    if s.torn_tail {
        let _ = writeln!(
            out,
            "note    the journal's last line was cut short by a crash"
        );
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<12} {:>10}  started",
        "step", "state", "duration"
    );
    for step in &s.steps {
        let st = serde_json::to_value(step.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<28} {:<12} {:>10}  {}",
            step.id,
            st,
            step.duration_ms
                .map(|d| format!("{d} ms"))
                .unwrap_or_default(),
            step.started.as_deref().unwrap_or("")
        );
        if let Some(e) = &step.error {
            let _ = writeln!(out, "{:<28} error: {e}", "");
        }
    }
    for (vm, ms) in &s.vm_downtime_ms {
        let _ = writeln!(out, "\nvm {vm} downtime: {ms} ms");
    }
    if let Some(k) = s.kexec.as_ref().filter(|k| k.on_new_kernel == Some(false)) {
        let _ = writeln!(
            out,
            "\nkexec   FAILED: {} came back instead of the new kernel",
            k.to_release.as_deref().unwrap_or("?")
        );
    } else if let Some(k) = &s.kexec {
        let _ = writeln!(
            out,
            "\nkexec   {} → {}  gap {}{}",
            k.from_release,
            k.to_release.as_deref().unwrap_or("(not resumed yet)"),
            k.gap_s
                .map(|g| format!("{g:.3} s"))
                .unwrap_or_else(|| "-".into()),
            k.new_kernel_uptime_s
                .map(|u| format!(
                    " (wall clocks, ±1 s; the new kernel had been up {u:.3} s at resume)"
                ))
                .unwrap_or_default()
        );
        if let Some(boot) = &k.boot {
            let get = |key: &str| boot.get(key).and_then(serde_json::Value::as_f64);
            let _ = writeln!(
                out,
                "boot    time to init {}  SMP bring-up {}",
                get("time_to_init_s")
                    .map(|v| format!("{v:.3} s"))
                    .unwrap_or_else(|| "-".into()),
                get("smp_bringup_s")
                    .map(|v| format!("{:.1} ms", v * 1000.0))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_unit_runs_resume_when_an_apply_is_pending_and_survives_isolate() {
        let unit = resume_unit(Path::new("/usr/local/bin/kup"), Path::new("/var/lib/kup"));
        assert!(unit.contains("ConditionPathExists=/var/lib/kup/pending\n"));
        assert!(unit.contains("ExecStart=/usr/local/bin/kup plan resume --journal /var/lib/kup\n"));
        // IgnoreOnIsolate is a [Unit] key: in [Service] systemd ignores it.
        let unit_section = &unit[unit.find("[Unit]").unwrap()..unit.find("[Service]").unwrap()];
        assert!(unit_section.contains("IgnoreOnIsolate=yes"));
        assert!(unit.contains("Type=oneshot") && unit.contains("WantedBy=multi-user.target"));
        // A CRIU-restored app is left in the unit's cgroup; the default KillMode would kill it (found in the lab).
        assert!(unit.lines().any(|line| line == "KillMode=process"));
    }

    #[test]
    fn apply_reruns_itself_in_a_unit_that_survives_the_isolate() {
        let args: Vec<String> = ["plan", "apply", "--yes", "/etc/kup/plan.toml"]
            .map(String::from)
            .to_vec();
        let argv = transient_unit_argv(Path::new("/usr/bin/kup"), &args);
        assert_eq!(argv[0], "systemd-run");
        assert!(argv.contains(&"--property=IgnoreOnIsolate=yes".to_owned()));
        assert!(
            argv.contains(&format!("--setenv={IN_UNIT_ENV}=1")),
            "the re-run must not re-run itself again"
        );
        let dashdash = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &argv[dashdash + 1..],
            [
                "/usr/bin/kup",
                "plan",
                "apply",
                "--yes",
                "/etc/kup/plan.toml"
            ]
        );
    }
}
