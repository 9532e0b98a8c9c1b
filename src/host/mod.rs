//! The only module with side effects on the host: syscalls, processes, sockets and sysfs. Everything else in kup is
//! data and decisions about data, so that a dry run and code review see exactly what this module will be asked to do.

pub mod files;
pub mod kexec;
pub mod process;
pub mod qmp;
pub mod sysfs;
pub mod vm;

pub use sysfs::SysfsRoot;

use crate::graph::action::{Action, PID_PLACEHOLDER, RebootMode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an action reports for the journal (a state file's size, a command's exit status, …).
pub type ActionOutput = Value;

/// Why a step's actions stopped: which action, and what went wrong, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFailure {
    pub index: usize,
    pub message: String,
}

/// Performs actions. The engine owns ordering, journaling and rollback; a `Host` only does what it is told, so the
/// engine can be exercised with a recording host and fault injection.
pub trait Host: Sync {
    /// Performs one step's actions in order, sharing connections between them (a QMP session per socket), and stops
    /// at the first failure.
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure>;
}

/// The machine kup runs on, sysfs and procfs read where they are mounted.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

/// The machine kup runs on, with sysfs and procfs paths read under another root: tests point it at a fake sysfs
/// tree; everything else (processes, sockets, files named by the plan) is real.
#[derive(Debug, Default, Clone)]
pub struct RealHostAt {
    pub sysfs: SysfsRoot,
}

impl RealHostAt {
    pub fn new(sysfs: SysfsRoot) -> Self {
        Self { sysfs }
    }
}

/// Longest interval between polls of a condition (a QMP status, a socket appearing).
const POLL: Duration = Duration::from_millis(20);

/// Polling that starts at 1 ms and doubles up to [`POLL`]: a shared-RAM save completes a few ms after `migrate`
/// returns, and a fixed 20 ms poll added ~15 ms per wait inside the guest's downtime (docs/benchmarks.md).
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(1))
    }

    fn wait(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(POLL);
    }
}

impl Host for RealHost {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        RealHostAt::default().perform(actions)
    }
}

impl Host for RealHostAt {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        let mut sessions: HashMap<PathBuf, qmp::QmpClient> = HashMap::new();
        let mut outputs = Vec::with_capacity(actions.len());
        for (index, action) in actions.iter().enumerate() {
            match perform_one(action, &mut sessions, &self.sysfs) {
                Ok(output) => outputs.push(output),
                Err(message) => return Err(ActionFailure { index, message }),
            }
        }
        Ok(outputs)
    }
}

fn session<'a>(
    sessions: &'a mut HashMap<PathBuf, qmp::QmpClient>,
    socket: &Path,
) -> Result<&'a mut qmp::QmpClient, String> {
    if !sessions.contains_key(socket) {
        let client = qmp::QmpClient::connect(socket).map_err(|e| e.to_string())?;
        sessions.insert(socket.to_path_buf(), client);
    }
    sessions
        .get_mut(socket)
        .ok_or_else(|| "QMP session vanished".to_owned())
}

fn perform_one(
    action: &Action,
    sessions: &mut HashMap<PathBuf, qmp::QmpClient>,
    sysfs: &SysfsRoot,
) -> Result<Value, String> {
    match action {
        Action::Exec { argv, timeout_ms } => {
            let outcome = process::run(argv, Duration::from_millis(*timeout_ms))?;
            Ok(json!({ "exit": outcome.status, "duration_ms": outcome.duration_ms }))
        }
        Action::Qmp {
            socket,
            command,
            args,
            file_uri: None,
        } => session(sessions, socket)?
            .execute(command, args)
            .map_err(|e| e.to_string()),
        Action::Qmp {
            socket,
            command,
            args,
            file_uri: Some(path),
        } => {
            // QEMU 7.2 exits when an incoming migration fails: a missing state file is reported before that.
            let incoming = command == "migrate-incoming";
            let size = if incoming {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("state file {}: {e}", path.display()))?;
                Some(meta.len())
            } else {
                None
            };
            let client = session(sessions, socket)?;
            let version = client.version().map_err(|e| e.to_string())?;
            let mut args = args.clone();
            if version.has_file_migration() {
                args["uri"] = Value::from(if incoming {
                    qmp::incoming_uri(version, path)
                } else {
                    qmp::outgoing_uri(version, path)
                });
            }
            client.execute(command, &args).map_err(|e| e.to_string())?;
            Ok(json!({ "uri": args["uri"], "qemu": version.to_string(), "size": size }))
        }
        Action::QmpWait {
            socket,
            command,
            field,
            until,
            timeout_ms,
        } => {
            let deadline = Instant::now() + Duration::from_millis(*timeout_ms);
            let client = session(sessions, socket)?;
            let mut backoff = Backoff::new();
            loop {
                let reply = client
                    .execute(command, &json!({}))
                    .map_err(|e| e.to_string())?;
                let value = reply.get(field).and_then(Value::as_str).unwrap_or("");
                if value == until {
                    return Ok(reply);
                }
                if matches!(
                    value,
                    "failed" | "cancelled" | "internal-error" | "guest-panicked" | "shutdown"
                ) {
                    let why = reply
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    // QEMU reports a state file it cannot write only as a broken pipe to `cat`.
                    let hint = if command == "query-migrate" && why.contains("Broken pipe") {
                        " (the state file could not be written: does its directory exist, is it writable, is \
                         the disk full?)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "{command}: {field} is \"{value}\", waiting for \"{until}\"{why}{hint}"
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{command}: {field} still \"{value}\" after {timeout_ms} ms, waiting for \"{until}\""
                    ));
                }
                backoff.wait();
            }
        }
        Action::WaitForSocket { path, timeout_ms } => {
            let deadline = Instant::now() + Duration::from_millis(*timeout_ms);
            let mut backoff = Backoff::new();
            loop {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Ok(Value::Null);
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} did not accept connections within {timeout_ms} ms",
                        path.display()
                    ));
                }
                backoff.wait();
            }
        }
        Action::KexecFileLoad {
            kernel,
            initrd,
            cmdline,
        } => {
            kexec::load_file(kernel, initrd.as_deref(), cmdline).map_err(|e| e.explain())?;
            Ok(Value::Null)
        }
        Action::KexecUnload => kexec::unload()
            .map(|()| Value::Null)
            .map_err(|e| e.explain()),
        Action::Reboot(mode) => {
            let systemd = systemd_is_pid1();
            if *mode == RebootMode::SystemdKexec && !systemd {
                return Err(
                    "policy.kexec = \"systemd\", but systemd does not run this host: use \"auto\" or \"direct\""
                        .to_owned(),
                );
            }
            if !kexec::is_loaded().map_err(|e| e.explain())? {
                return Err(
                    "no kernel is loaded for kexec (see `cat /sys/kernel/kexec_loaded`)".to_owned(),
                );
            }
            if systemd && *mode != RebootMode::DirectKexec {
                // The clean path: services stop and file systems unmount before systemd kexecs. The shutdown
                // stops this process with SIGTERM, possibly before `systemctl kexec` has even returned. kup catches
                // SIGTERM to roll back cleanly, which no longer applies once the kexec is queued: from before the
                // call on, SIGTERM terminates at once, so the shutdown never waits out its stop timeout for us.
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
                    return Err(e);
                }
                std::thread::sleep(Duration::from_secs(600));
                Err("`systemctl kexec` was queued but the system is still running".to_owned())
            } else {
                match kexec::execute_direct() {
                    Ok(never) => match never {},
                    Err(e) => Err(e.explain()),
                }
            }
        }
        Action::Sync => {
            nix::unistd::sync();
            Ok(Value::Null)
        }
        Action::ReadSysfs { path, expect } => {
            let found = read_sysfs(&sysfs.resolve(path))?;
            if found == *expect {
                Ok(json!({ "value": found }))
            } else {
                Err(format!(
                    "{} is \"{found}\", expected \"{expect}\"",
                    path.display()
                ))
            }
        }
        Action::CheckKernelImage { path, release } => {
            let image = crate::kernel_image::KernelImage::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(expected) = release
                && image.release() != expected
            {
                return Err(format!(
                    "{} is release {}, but the plan's kernel.version is {expected}",
                    path.display(),
                    image.release()
                ));
            }
            Ok(json!({ "release": image.release(), "version": image.version() }))
        }
        Action::CheckFile { path, sha256 } => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(expected) = sha256 {
                crate::kernel_image::verify_sha256(path, expected)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(json!({ "size": meta.len() }))
        }
        Action::CheckHostname { globs } => {
            let name = hostname()?;
            let matched = globs
                .iter()
                .filter_map(|g| crate::plan::glob::HostGlob::parse(g).ok())
                .any(|g| g.matches(&name));
            if globs.is_empty() || matched {
                Ok(json!({ "hostname": name }))
            } else {
                Err(format!(
                    "this host is \"{name}\"; the plan is for {}",
                    globs.join(", ")
                ))
            }
        }
        Action::Criu {
            argv,
            pidfile,
            timeout_ms,
        } => {
            let argv = if argv.iter().any(|a| a == PID_PLACEHOLDER) {
                let text = std::fs::read_to_string(pidfile)
                    .map_err(|e| format!("{}: {e}", pidfile.display()))?;
                let pid: u32 = text.trim().parse().map_err(|_| {
                    format!(
                        "{} does not hold a PID: {:?}",
                        pidfile.display(),
                        text.trim()
                    )
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
                argv.clone()
            };
            let outcome = process::run(&argv, Duration::from_millis(*timeout_ms))?;
            Ok(json!({ "exit": outcome.status, "duration_ms": outcome.duration_ms }))
        }
        Action::CommitFile { from, to } => files::commit(from, to),
        Action::KeepAside { path } => {
            files::keep_aside(path).map(|kept| json!({ "kept_aside": kept }))
        }
        Action::CheckSharedRam { socket } => {
            let client = session(sessions, socket)?;
            vm::check_shared_ram(client)
        }
        Action::QmpQuit { socket, timeout_ms } => {
            // The session of this step (if any) talks to the QEMU that is about to go.
            sessions.remove(socket);
            vm::quit_if_running(socket, Duration::from_millis(*timeout_ms))
        }
        Action::CheckPci {
            address,
            driver,
            iommu,
        } => sysfs::check_pci(sysfs, address, driver, *iommu),
        Action::CheckOutput {
            argv,
            expect,
            timeout_ms,
        } => {
            let captured = process::capture(argv, Duration::from_millis(*timeout_ms))?;
            let found = captured.stdout.trim();
            if expect.iter().any(|e| e == found) {
                Ok(json!({ "output": found, "exit": captured.code }))
            } else {
                Err(format!(
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
                ))
            }
        }
        Action::EnsureDir { path } => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            Ok(Value::Null)
        }
        Action::RemoveFile { path } => match std::fs::remove_file(path) {
            Ok(()) => Ok(json!({ "removed": true })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({ "removed": false })),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        },
    }
}

/// A sysfs attribute, trimmed; for a symlink (a device's `driver`), the last component of its target.
pub fn read_sysfs(path: &Path) -> Result<String, String> {
    sysfs::read_attribute(path)
}

pub fn hostname() -> Result<String, String> {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .map_err(|e| format!("cannot read the host name: {e}"))
}

/// Whether systemd runs this machine (it creates /run/systemd/system at boot; sd_booted(3) checks the same).
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The running kernel's boot id: it changes at every boot, kexec included, which is how `resume` proves a kexec.
pub fn boot_id() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read the boot id: {e}"))
}

/// Milliseconds since this kernel started (CLOCK_BOOTTIME, which counts suspend too).
pub fn uptime_ms() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    u64::try_from(t.tv_sec())
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::try_from(t.tv_nsec() / 1_000_000).ok()?)
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> Result<String, String> {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// A fake QEMU of `version` that answers every command with `{"return": {}}` and reports what it received.
    fn fake_qemu(version: (u64, u64)) -> (tempfile::TempDir, PathBuf, mpsc::Receiver<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let greeting = json!({"QMP": {"version": {"qemu": {"major": version.0, "minor": version.1, "micro": 0}}}});
            writeln!(stream, "{greeting}").unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::Null));
                writeln!(stream, "{{\"return\": {{}}}}").unwrap();
            }
        });
        (dir, path, rx)
    }

    fn migrate(socket: &Path, state: &Path) -> Action {
        Action::Qmp {
            socket: socket.to_owned(),
            command: "migrate".into(),
            args: json!({ "uri": format!("exec:cat > {}", state.display()) }),
            file_uri: Some(state.to_owned()),
        }
    }

    #[test]
    fn the_state_file_uri_follows_the_qemu_version() {
        for (version, expected) in [
            ((7, 2), "exec:cat > /var/lib/kup/s/vmstate.partial"),
            ((8, 2), "file:/var/lib/kup/s/vmstate.partial"),
        ] {
            let (_dir, socket, received) = fake_qemu(version);
            let out = RealHost
                .perform(&[migrate(
                    &socket,
                    Path::new("/var/lib/kup/s/vmstate.partial"),
                )])
                .unwrap();
            let sent = received.recv().unwrap();
            assert_eq!(sent["execute"], "migrate");
            assert_eq!(sent["arguments"]["uri"], expected, "QEMU {version:?}");
            assert_eq!(out[0]["uri"], expected);
        }
    }

    #[test]
    fn an_incoming_migration_without_its_state_file_fails_before_qemu_sees_it() {
        let (_dir, socket, received) = fake_qemu((7, 2));
        let missing = Path::new("/nonexistent/kup/vmstate");
        let action = Action::Qmp {
            socket: socket.clone(),
            command: "migrate-incoming".into(),
            args: json!({ "uri": "exec:cat /nonexistent/kup/vmstate" }),
            file_uri: Some(missing.to_owned()),
        };
        let failure = RealHost.perform(&[action]).unwrap_err();
        assert!(
            failure
                .message
                .contains("state file /nonexistent/kup/vmstate"),
            "{}",
            failure.message
        );
        assert!(received.try_recv().is_err(), "nothing was sent to QEMU");
    }
}
