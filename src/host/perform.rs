//! Performing one action: a dispatch over small functions, one per kind of action.

use super::{
    HostError, SysfsRoot, files, flush, journal_files, kernel_file, kexec, livepatch, machine,
    migration, pci_bind, process, qmp, qmp_wait, ram_digest, sysfs, target, trust, vm,
};
use crate::action::{Action, ActionOutput, PID_PLACEHOLDER, RebootMode};
use crate::hostglob::HostGlob;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// QMP sessions of one step, by socket: the commands of a step share a connection.
pub(super) type Sessions = HashMap<PathBuf, qmp::QmpClient>;

/// Longest interval between polls of a condition (a QMP status, a socket appearing).
const POLL: Duration = Duration::from_millis(20);

/// Polling that starts at 1 ms and doubles up to [`POLL`]: a shared-RAM save completes a few ms after `migrate`
/// returns, and a fixed 20 ms poll added ~15 ms per wait inside the guest's downtime (docs/benchmarks.md).
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(Duration::from_millis(1))
    }

    pub(super) fn wait(&mut self) {
        std::thread::sleep(self.next());
    }

    /// The next pause, without sleeping it (a wait that may end early on an event).
    pub(super) fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(POLL);
        pause
    }
}

fn ms(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms)
}

// Long by design: the dispatch, one arm per action kind, each a call to a small function.
/// Performs `action`, reusing the step's QMP sessions.
pub(super) fn one(
    action: &Action,
    sessions: &mut Sessions,
    sysfs: &SysfsRoot,
) -> Result<ActionOutput, HostError> {
    match action {
        Action::Exec { argv, timeout_ms } => exec(argv, *timeout_ms),
        Action::Qmp {
            socket,
            command,
            args,
            file_uri: None,
        } => {
            let reply = session(sessions, socket)?.execute(command, args)?;
            // `stop` and `cont` change whether the guest runs, and their reply is always empty: what is worth
            // keeping is when it came, the instant the guest stopped or ran again.
            Ok(if matches!(command.as_str(), "stop" | "cont") {
                ActionOutput::Acknowledged {
                    acked_unix_ms: machine::unix_ms(),
                }
            } else {
                ActionOutput::Reply(reply)
            })
        }
        Action::Qmp {
            socket,
            command,
            args,
            file_uri: Some(path),
        } => migrate(session(sessions, socket)?, command, args, path),
        Action::QmpWait(w) => qmp_wait::wait(session(sessions, &w.socket)?, w),
        Action::WaitForSocket { path, timeout_ms } => wait_for_socket(path, *timeout_ms),
        Action::KexecFileLoad {
            kernel,
            initrd,
            cmdline,
        } => {
            kexec::load_file(kernel, initrd.as_deref(), cmdline)?;
            Ok(ActionOutput::None)
        }
        Action::KexecUnload => {
            kexec::unload()?;
            Ok(ActionOutput::None)
        }
        Action::Reboot(mode) => reboot(*mode),
        Action::Sync => {
            nix::unistd::sync();
            Ok(ActionOutput::None)
        }
        Action::Preflush {
            sockets,
            dirs,
            budget_ms,
        } => {
            let mut paths = Vec::new();
            for socket in sockets {
                paths.extend(flush::ram_files_of(session(sessions, socket)?, sysfs)?);
            }
            flush::preflush(sysfs, paths, dirs, ms(*budget_ms)).map(ActionOutput::Preflushed)
        }
        Action::SyncFs { ram_records, dirs } => {
            flush::sync_fs(sysfs, ram_records, dirs).map(ActionOutput::Synced)
        }
        Action::CheckKexecEnabled => {
            machine::check_kexec_enabled(sysfs)?;
            Ok(ActionOutput::None)
        }
        Action::CheckKernelImage { path, release } => check_kernel_image(path, release.as_deref()),
        Action::CheckTargetKernel {
            image,
            release,
            initrd,
            cmdline,
        } => target::check(sysfs, image, release.as_deref(), initrd.as_deref(), cmdline),
        Action::CheckFile { path, sha256 } => check_file(path, sha256.as_deref()),
        Action::CheckHostname { globs } => check_hostname(globs),
        Action::Criu {
            argv,
            pidfile,
            timeout_ms,
        } => criu(argv, pidfile, *timeout_ms),
        Action::CommitFile { from, to } => files::commit(from, to).map(ActionOutput::Committed),
        Action::KeepAside { path } => files::keep_aside(path).map(|kept| ActionOutput::KeptAside {
            bytes: kept.as_ref().map(|(_, bytes)| *bytes),
            kept_aside: kept.map(|(path, _)| path),
        }),
        Action::CheckSharedRam { socket, cmdline } => {
            vm::check_shared_ram(session(sessions, socket)?, sysfs, cmdline.as_deref())
                .map(|backends| ActionOutput::SharedRam { backends })
        }
        Action::RecordRamDigest { socket, record } => {
            ram_digest::record(session(sessions, socket)?, sysfs, record)
        }
        Action::CheckRamDigest { record, state } => ram_digest::check(record, state),
        Action::QmpQuit { socket, timeout_ms } => {
            // The session of this step (if any) talks to the QEMU that is about to go.
            sessions.remove(socket);
            vm::quit_if_running(socket, ms(*timeout_ms))
        }
        Action::QmpPowerdown { socket, timeout_ms } => {
            sessions.remove(socket);
            vm::power_down(socket, ms(*timeout_ms))
        }
        Action::CheckPci {
            address,
            driver,
            iommu,
        } => sysfs::check_pci(sysfs, address, driver, *iommu).map(ActionOutput::Pci),
        Action::BindPci(bind) => pci_bind::bind_pci(
            sysfs,
            &pci_bind::RealKernel,
            &pci_bind::BindRequest::from(bind),
        )
        .map(ActionOutput::PciBound),
        Action::CheckOutput {
            argv,
            expect,
            timeout_ms,
        } => check_output(argv, expect, *timeout_ms),
        Action::CheckExecutables { programs } => {
            for program in programs {
                trust::check_executable(program)?;
            }
            Ok(ActionOutput::None)
        }
        Action::CheckSocketOwner { socket, owner } => {
            trust::check_socket_owner(socket, owner.as_deref())?;
            Ok(ActionOutput::None)
        }
        Action::EnsureDir { path } => {
            // Before and after: a symlink planted on the way is not followed into, and what was created (or
            // found) is a directory no other user can write.
            trust::check_state_dir("the state directory", path)?;
            journal_files::create_private_dir(path)
                .map_err(|e| HostError::io(format!("cannot create {}", path.display()), e))?;
            trust::check_state_dir("the state directory", path)?;
            // An existing directory on a read-only (or full) file system is found now, before any guest pauses.
            files::probe_writable(path)?;
            Ok(ActionOutput::None)
        }
        Action::MigrationSetup(setup) => migration::setup(session(sessions, &setup.socket)?, setup),
        Action::CheckMigratable { socket, memory } => {
            migration::check_migratable(session(sessions, socket)?, *memory)
        }
        Action::WriteFile { path, contents } => write_file(path, contents),
        Action::RemoveFile { path } => {
            files::remove_state_file(path).map(|removed| ActionOutput::Removed { removed })
        }
        Action::CheckLivepatchSupport => {
            livepatch::check_support(sysfs).map(|()| ActionOutput::None)
        }
        Action::CheckLivepatchModule { path, name } => {
            livepatch::check_module(sysfs, path, name).map(ActionOutput::LivepatchModule)
        }
        Action::LoadModule { path } => livepatch::load(path).map(|()| ActionOutput::None),
        Action::WaitLivepatchTransition { name, timeout_ms } => {
            livepatch::wait_transition(sysfs, name, ms(*timeout_ms)).map(ActionOutput::Livepatch)
        }
        Action::CheckLivepatch { name, loaded } => {
            livepatch::check(sysfs, name, *loaded).map(ActionOutput::Livepatch)
        }
        Action::DisableLivepatch { name, timeout_ms } => {
            livepatch::disable(sysfs, name, ms(*timeout_ms)).map(ActionOutput::Livepatch)
        }
        Action::UnloadModule { name, timeout_ms } => {
            livepatch::unload(name, ms(*timeout_ms)).map(|()| ActionOutput::None)
        }
    }
}

fn session<'a>(
    sessions: &'a mut Sessions,
    socket: &Path,
) -> Result<&'a mut qmp::QmpClient, HostError> {
    if !sessions.contains_key(socket) {
        let client = qmp::QmpClient::connect(socket)?;
        sessions.insert(socket.to_path_buf(), client);
    }
    sessions
        .get_mut(socket)
        .ok_or_else(|| HostError::Qmp(qmp::QmpError("QMP session vanished".to_owned())))
}

fn exec(argv: &[String], timeout_ms: u64) -> Result<ActionOutput, HostError> {
    let started_unix_ms = machine::unix_ms();
    let outcome = process::run(argv, ms(timeout_ms))?;
    Ok(ActionOutput::Exited {
        exit: outcome.status,
        duration_ms: outcome.duration_ms,
        started_unix_ms,
    })
}

/// `migrate` / `migrate-incoming` to or from a state file, with the URI QEMU's version takes.
fn migrate(
    client: &mut qmp::QmpClient,
    command: &str,
    args: &Value,
    path: &Path,
) -> Result<ActionOutput, HostError> {
    // QEMU 7.2 exits when an incoming migration fails: a missing state file is reported before that.
    let incoming = command == "migrate-incoming";
    if !incoming {
        files::refuse_symlink(path)?;
    }
    let size = if incoming {
        let meta = std::fs::metadata(path)
            .map_err(|e| HostError::io(format!("state file {}", path.display()), e))?;
        Some(meta.len())
    } else {
        None
    };
    let version = client.version()?;
    if !incoming && completed_while_kup_was_gone(client, path)? {
        // A save re-run by resume after kup died mid-migration: QEMU goes on (or finished) writing the state on its
        // own and refuses a second migration; the rest of the step waits for it and commits the file.
        return Ok(ActionOutput::Migration {
            uri: args["uri"].as_str().unwrap_or_default().to_owned(),
            qemu: version.to_string(),
            size: None,
        });
    }
    let mut args = args.clone();
    if version.has_file_migration() {
        args["uri"] = Value::from(qmp::migration_uri(version, path, incoming));
    }
    if incoming && version.has_incoming_exit_on_error() {
        args["exit-on-error"] = Value::from(false);
    }
    let note = client.note().map(|n| format!(" ({n})")).unwrap_or_default();
    client.execute(command, &args).map_err(|e| {
        // QEMU ≥ 8.2 opens a `file:` state file in `migrate` itself and fails there.
        let hint = if !incoming && ["No such file", "Permission denied", "Read-only", "No space"]
            .iter()
            .any(|m| e.0.contains(m))
        {
            " (the state file could not be written: does its directory exist, is it writable, is the disk full?)"
        } else {
            ""
        };
        HostError::Qmp(qmp::QmpError(format!("{e}{hint}{note}")))
    })?;
    Ok(ActionOutput::Migration {
        uri: args["uri"].as_str().unwrap_or_default().to_owned(),
        qemu: version.to_string(),
        size,
    })
}

/// Whether the save being re-run by resume (kup died mid-migration) is already under way or done in QEMU: a
/// migration still running (the wait after `migrate` follows it), or one that completed with the guest not run
/// since (`postmigrate`) and its file at `path`. Within an apply only this step migrates the guest.
fn completed_while_kup_was_gone(
    client: &mut qmp::QmpClient,
    path: &Path,
) -> Result<bool, HostError> {
    let migration = client.execute("query-migrate", &json!({}))?;
    let state = migration
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if ["setup", "active", "device", "pre-switchover", "wait-unplug"].contains(&state) {
        return Ok(true);
    }
    if state != "completed" {
        return Ok(false);
    }
    let status = client.execute("query-status", &json!({}))?;
    Ok(
        status.get("status").and_then(Value::as_str) == Some("postmigrate")
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0),
    )
}

fn wait_for_socket(path: &Path, timeout_ms: u64) -> Result<ActionOutput, HostError> {
    let deadline = Instant::now() + ms(timeout_ms);
    let mut backoff = Backoff::new();
    loop {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(ActionOutput::None);
        }
        if Instant::now() >= deadline {
            return Err(HostError::Timeout(format!(
                "{} did not accept connections within {timeout_ms} ms",
                path.display()
            )));
        }
        backoff.wait();
    }
}

/// The kexec itself: through systemd when it runs the host (unless the plan asks for the direct path).
fn reboot(mode: RebootMode) -> Result<ActionOutput, HostError> {
    let systemd = machine::systemd_is_pid1();
    if mode == RebootMode::SystemdKexec && !systemd {
        return Err(HostError::check(
            "policy.kexec = \"systemd\", but systemd does not run this host: use \"auto\" or \"direct\"",
        ));
    }
    if !kexec::is_loaded()? {
        return Err(HostError::check(
            "no kernel is loaded for kexec (see `cat /sys/kernel/kexec_loaded`)",
        ));
    }
    if systemd && mode != RebootMode::DirectKexec {
        // The clean path: services stop and file systems unmount before systemd kexecs. The shutdown stops this
        // process with SIGTERM, possibly before `systemctl kexec` has even returned. kup catches SIGTERM to roll
        // back cleanly, which no longer applies once the kexec is queued: from before the call on, SIGTERM
        // terminates at once, so the shutdown never waits out its stop timeout for us.
        let terminate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let _ = signal_hook::flag::register_conditional_default(
            signal_hook::consts::SIGTERM,
            std::sync::Arc::clone(&terminate),
        );
        if let Err(e) = process::run(
            &["systemctl".to_owned(), "kexec".to_owned()],
            Duration::from_secs(30),
        ) {
            // Nothing was queued: SIGTERM means "stop and roll back" again.
            terminate.store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(e.into());
        }
        std::thread::sleep(Duration::from_secs(600));
        Err(HostError::Timeout(
            "`systemctl kexec` was queued but the system is still running".to_owned(),
        ))
    } else {
        match kexec::execute_direct() {
            Ok(never) => match never {},
            Err(e) => Err(e.into()),
        }
    }
}

fn check_kernel_image(path: &Path, release: Option<&str>) -> Result<ActionOutput, HostError> {
    let image = kernel_file::read_image(path).map_err(|source| HostError::KernelImage {
        path: path.to_owned(),
        source,
    })?;
    if let Some(expected) = release
        && image.release() != expected
    {
        return Err(HostError::check(format!(
            "{} is release {}, but the plan's kernel.version is {expected}",
            path.display(),
            image.release()
        )));
    }
    Ok(ActionOutput::KernelImage {
        release: image.release().to_owned(),
        version: image.version().to_owned(),
    })
}

fn check_file(path: &Path, sha256: Option<&str>) -> Result<ActionOutput, HostError> {
    let meta = std::fs::metadata(path).map_err(|e| HostError::io(path.display().to_string(), e))?;
    if let Some(expected) = sha256 {
        kernel_file::verify_sha256(path, expected).map_err(|source| HostError::KernelImage {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(ActionOutput::File { size: meta.len() })
}

fn check_hostname(globs: &[String]) -> Result<ActionOutput, HostError> {
    let name = machine::hostname()?;
    let mut parsed = Vec::with_capacity(globs.len());
    for g in globs {
        parsed.push(HostGlob::parse(g).map_err(|(at, why)| {
            HostError::check(format!(
                "host glob {g:?} is invalid at character {at}: {why}"
            ))
        })?);
    }
    if parsed.is_empty() || parsed.iter().any(|g| g.matches(&name)) {
        Ok(ActionOutput::Hostname { hostname: name })
    } else {
        Err(HostError::check(format!(
            "this host is \"{name}\"; the plan is for {}",
            globs.join(", ")
        )))
    }
}

/// `criu dump` / `criu restore`, with the PID read from the app's pidfile put in place of [`PID_PLACEHOLDER`].
fn criu(argv: &[String], pidfile: &Path, timeout_ms: u64) -> Result<ActionOutput, HostError> {
    let argv: Vec<String> = if argv.iter().any(|a| a == PID_PLACEHOLDER) {
        let text = std::fs::read_to_string(pidfile)
            .map_err(|e| HostError::io(pidfile.display().to_string(), e))?;
        let pid: u32 = text.trim().parse().map_err(|_| {
            HostError::check(format!(
                "{} does not hold a PID: {:?}",
                pidfile.display(),
                text.trim()
            ))
        })?;
        argv.iter()
            .map(|a| {
                if a == PID_PLACEHOLDER {
                    pid.to_string()
                } else {
                    a.clone()
                }
            })
            .collect()
    } else {
        argv.to_vec()
    };
    exec(&argv, timeout_ms)
}

fn check_output(
    argv: &[String],
    expect: &[String],
    timeout_ms: u64,
) -> Result<ActionOutput, HostError> {
    let captured = process::capture(argv, ms(timeout_ms))?;
    let found = captured.stdout.trim();
    if expect.iter().any(|e| e == found) {
        return Ok(ActionOutput::Printed {
            output: found.to_owned(),
            exit: captured.code,
        });
    }
    Err(HostError::check(format!(
        "`{}` printed {found:?}, expected {}{}",
        argv.join(" "),
        expect
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(" or "),
        match captured.code {
            Some(0) | None => String::new(),
            Some(code) => format!(" (exit status {code}: {})", captured.tail),
        }
    )))
}

/// A drop-in systemd reads: its directory created, and refused when another user could write to it (and so swap
/// what systemd loads), then the file written atomically.
fn write_file(path: &Path, contents: &str) -> Result<ActionOutput, HostError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    files::create_dir_all(dir)?;
    trust::check_state_dir("the drop-in directory", dir)?;
    files::write_readable(path, contents.as_bytes())?;
    Ok(ActionOutput::None)
}
