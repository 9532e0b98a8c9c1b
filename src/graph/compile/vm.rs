//! A guest's steps — pause, save, restore, resume — for both drivers: QEMU over QMP (the migration stream into a
//! state file, `x-ignore-shared` for RAM that survives the kexec) and libvirt (`virsh save` / `restore`).

use super::{
    COMMAND_TIMEOUT, Compiled, LIBVIRT_STATE_FILE, MIGRATION_MAX_BANDWIDTH, MIGRATION_RECORD,
    PARTIAL_SUFFIX, QMP_STATE_FILE, QUIT_TIMEOUT, RAM_DIGEST_RECORD, RESTART_TIMEOUT,
    SOCKET_TIMEOUT, handshake, ms, path_str, qmp,
};
use crate::action::{Action, MigrationMemory, MigrationSetup, MigrationSide, QmpWait, shell_quote};
use crate::plan::{Handover, MemoryMode, Vm, VmDriver};
use serde_json::json;
use std::path::{Path, PathBuf};

/// `migrate` into a state file (`exec:cat > FILE`) or `migrate-incoming` from one (`exec:cat FILE`, into a QEMU
/// started with `-incoming defer`); a save's completion is awaited by a following `QmpWait` on `query-migrate`.
fn migration(socket: &Path, command: &str, cat: &str, path: &Path) -> Action {
    Action::Qmp {
        socket: socket.to_owned(),
        command: command.to_owned(),
        args: json!({ "uri": format!("exec:cat {cat}{}", shell_quote(path)) }),
        file_uri: Some(path.to_owned()),
    }
}

fn migrate_to(socket: &Path, path: &Path) -> Action {
    migration(socket, "migrate", "> ", path)
}

fn migrate_from(socket: &Path, path: &Path) -> Action {
    migration(socket, "migrate-incoming", "", path)
}

pub(super) fn memory(vm: &Vm) -> MigrationMemory {
    match vm.memory {
        MemoryMode::Shared => MigrationMemory::Shared,
        MemoryMode::Copy => MigrationMemory::Copy,
    }
}

/// Beside the state file: the save's migration choice, which the restore sets again.
pub(super) fn migration_record(vm: &Vm) -> PathBuf {
    vm.state.join(MIGRATION_RECORD)
}

/// Beside the state file: the digest of a shared-RAM guest's RAM files at its save, which its restore checks.
pub(super) fn ram_digest_record(vm: &Vm) -> PathBuf {
    vm.state.join(RAM_DIGEST_RECORD)
}

/// A QMP guest whose RAM is expected to survive the kexec in its backend file, not in the state file.
pub(super) fn shared_qmp(vm: &Vm) -> bool {
    matches!(vm.driver, VmDriver::Qmp { .. }) && vm.memory == MemoryMode::Shared
}

/// The capabilities and parameters of a save or a restore, chosen on the host by the QEMU's version and offer.
fn setup(vm: &Vm, socket: &Path, side: MigrationSide, channels: Option<u32>) -> Action {
    Action::MigrationSetup(MigrationSetup {
        socket: socket.to_owned(),
        side,
        memory: memory(vm),
        channels,
        max_bandwidth: MIGRATION_MAX_BANDWIDTH,
        state: partial(&state_file(vm)),
        record: migration_record(vm),
    })
}

pub(super) fn state_file(vm: &Vm) -> PathBuf {
    match vm.driver {
        VmDriver::Qmp { .. } => vm.state.join(QMP_STATE_FILE),
        VmDriver::Libvirt { .. } => vm.state.join(LIBVIRT_STATE_FILE),
    }
}

/// A QMP guest's socket; `None` for libvirt.
pub(super) fn qmp_socket(vm: &Vm) -> Option<PathBuf> {
    match &vm.driver {
        VmDriver::Qmp { socket, .. } => Some(socket.clone()),
        VmDriver::Libvirt { .. } => None,
    }
}

pub(super) fn is_libvirt(vm: &Vm) -> bool {
    matches!(vm.driver, VmDriver::Libvirt { .. })
}

/// Where a state file is written before [`Action::CommitFile`] gives it its name.
pub(super) fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

pub(super) fn commit(vm: &Vm) -> Action {
    let to = state_file(vm);
    Action::CommitFile {
        from: partial(&to),
        to,
    }
}

/// `virsh [-c URI] ARGS…`: the plan's `libvirt_uri`, else virsh's default connection.
pub(super) fn virsh(uri: Option<&str>, args: &[&str], timeout_ms: u64) -> Action {
    Action::Exec {
        argv: virsh_argv(uri, args),
        timeout_ms,
    }
}

fn virsh_argv(uri: Option<&str>, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["virsh".to_owned()];
    if let Some(uri) = uri {
        argv.extend(["-c".to_owned(), uri.to_owned()]);
    }
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    argv
}

/// `virsh [-c URI] domstate DOMAIN` printing one of `states`.
pub(super) fn domstate(uri: Option<&str>, domain: &str, states: &[&str]) -> Action {
    Action::CheckOutput {
        argv: virsh_argv(uri, &["domstate", domain]),
        expect: states.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

/// `vm:NAME:pause`: the migration set up, then `stop` over QMP (`virsh save` pauses a libvirt domain itself).
pub(super) fn pause(vm: Option<&Vm>, channels: Option<u32>) -> Compiled {
    let Some((v, VmDriver::Qmp { socket, .. })) = vm.map(|v| (v, &v.driver)) else {
        return (Vec::new(), Vec::new());
    };
    let actions = vec![
        handshake(socket),
        // Set before `stop` so that nothing but the stop itself happens while the guest is paused.
        setup(v, socket, MigrationSide::Save, channels),
        qmp(socket, "stop", json!({})),
    ];
    (
        actions,
        vec![
            handshake(socket),
            qmp(socket, "cont", json!({})),
            // A guest left in cpr-reboot mode, or with mapped-ram on, could not be live-migrated later.
            setup(v, socket, MigrationSide::Undo, channels),
        ],
    )
}

/// `vm:NAME:save`: the state into `NAME.partial`, committed under its name once complete.
pub(super) fn save(vm: Option<&Vm>, migration_timeout: u64) -> Compiled {
    match vm.map(|v| (v, &v.driver)) {
        Some((v, VmDriver::Qmp { socket, .. })) => {
            let mut actions = vec![
                handshake(socket),
                migrate_to(socket, &partial(&state_file(v))),
                QmpWait::status(socket, "query-migrate", "completed", migration_timeout),
            ];
            // The RAM is not in the state file: what it was at the save is recorded (the guest is paused and its
            // migration done, so the pages no longer change), before the commit, so that a committed state file
            // always has its digest beside it.
            if shared_qmp(v) {
                actions.push(Action::RecordRamDigest {
                    socket: socket.clone(),
                    record: ram_digest_record(v),
                });
            }
            // The old QEMU is left as it is: the kexec ends it, and waiting for its exit (1–2 s while the
            // kernel frees its RAM) would only lengthen the downtime.
            actions.push(commit(v));
            // The source QEMU stays alive (the kexec ends it), so the pause's `cont` resumes it; a migration still
            // running is cancelled first. What the failed save wrote is kept aside — the only trace of what went
            // wrong, never under a name a restore reads, never overwritten by the next save — and first, before
            // anything that needs the QEMU (gone or wedged, it fails the rest of the undo).
            let mut rollback = vec![
                Action::KeepAside {
                    path: partial(&state_file(v)),
                },
                handshake(socket),
                qmp(socket, "migrate_cancel", json!({})),
            ];
            // The guest runs on: its RAM moves away from the digest.
            if shared_qmp(v) {
                rollback.push(Action::RemoveFile {
                    path: ram_digest_record(v),
                });
            }
            (actions, rollback)
        }
        Some((v, VmDriver::Libvirt { domain, uri })) => {
            let uri = uri.as_deref();
            let file = path_str(&state_file(v));
            let part = path_str(&partial(&state_file(v)));
            (
                vec![
                    // Its exit status is the whole truth: afterwards a persistent domain is "shut off" and a
                    // transient one is gone, so there is no state worth checking.
                    virsh(
                        uri,
                        &["save", "--bypass-cache", domain, &part],
                        migration_timeout,
                    ),
                    commit(v),
                ],
                vec![
                    virsh(
                        uri,
                        &["restore", "--bypass-cache", &file],
                        migration_timeout,
                    ),
                    domstate(uri, domain, &["running"]),
                ],
            )
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// `vm:NAME:restore`: a new QEMU (`-incoming defer`) loads the state file and stays paused.
pub(super) fn restore(vm: Option<&Vm>, migration_timeout: u64) -> Compiled {
    match vm.map(|v| (v, &v.driver)) {
        Some((
            v,
            VmDriver::Qmp {
                socket, restart, ..
            },
        )) => {
            let mut actions = Vec::new();
            // First, before any QEMU is ended or started: device state loaded onto RAM that did not survive (a
            // power cut or a cold boot wiped the persistent memory) would run the guest on garbage. A resume that
            // runs this step again checks again.
            if shared_qmp(v) {
                actions.push(Action::CheckRamDigest {
                    record: ram_digest_record(v),
                    state: state_file(v),
                });
            }
            actions.extend([
                // Only a rehearsal (or a restore retried after its QEMU started) finds the old QEMU alive.
                Action::QmpQuit {
                    socket: socket.clone(),
                    timeout_ms: ms(QUIT_TIMEOUT),
                },
                Action::Exec {
                    argv: restart.clone(),
                    timeout_ms: ms(RESTART_TIMEOUT),
                },
                Action::WaitForSocket {
                    path: socket.clone(),
                    timeout_ms: ms(SOCKET_TIMEOUT),
                },
                handshake(socket),
            ]);
            // The destination must agree with the stream, or QEMU exits.
            actions.push(setup(v, socket, MigrationSide::Restore, None));
            actions.push(migrate_from(socket, &state_file(v)));
            actions.push(QmpWait::status(
                socket,
                "query-status",
                "paused",
                migration_timeout,
            ));
            (actions, Vec::new())
        }
        Some((v, VmDriver::Libvirt { domain, uri })) => (
            vec![
                virsh(
                    uri.as_deref(),
                    &[
                        "restore",
                        "--bypass-cache",
                        "--paused",
                        &path_str(&state_file(v)),
                    ],
                    migration_timeout,
                ),
                domstate(uri.as_deref(), domain, &["paused"]),
            ],
            Vec::new(),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

/// `vm:NAME:resume`: `cont`, then the guest must be seen running.
pub(super) fn resume(vm: Option<&Vm>) -> Compiled {
    match vm.map(|v| &v.driver) {
        Some(VmDriver::Qmp { socket, .. }) => (
            vec![
                handshake(socket),
                qmp(socket, "cont", json!({})),
                wait_running(socket),
            ],
            Vec::new(),
        ),
        Some(VmDriver::Libvirt { domain, uri }) => (
            vec![
                virsh(uri.as_deref(), &["resume", domain], ms(COMMAND_TIMEOUT)),
                domstate(uri.as_deref(), domain, &["running"]),
            ],
            Vec::new(),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

/// The socket, `restart` and shutdown timeout of a guest the plan restarts across the kexec.
fn restarted(vm: Option<&Vm>) -> Option<(&Path, &[String], std::time::Duration)> {
    match vm.map(|v| (&v.driver, v.handover)) {
        Some((
            VmDriver::Qmp {
                socket, restart, ..
            },
            Handover::Restart { shutdown_timeout },
        )) => Some((socket, restart, shutdown_timeout)),
        _ => None,
    }
}

/// A fresh QEMU from the plan's `restart`, its socket answering and its guest running.
fn cold_start(socket: &Path, restart: &[String]) -> Vec<Action> {
    vec![
        Action::Exec {
            argv: restart.to_vec(),
            timeout_ms: ms(RESTART_TIMEOUT),
        },
        Action::WaitForSocket {
            path: socket.to_owned(),
            timeout_ms: ms(SOCKET_TIMEOUT),
        },
        handshake(socket),
        wait_running(socket),
    ]
}

/// `vm:NAME:shutdown`: the guest powered off (ACPI, then `quit`); undone by starting it again.
pub(super) fn shutdown(vm: Option<&Vm>) -> Compiled {
    let Some((socket, restart, timeout)) = restarted(vm) else {
        return (Vec::new(), Vec::new());
    };
    (
        vec![Action::QmpPowerdown {
            socket: socket.to_owned(),
            timeout_ms: ms(timeout),
        }],
        cold_start(socket, restart),
    )
}

/// `vm:NAME:boot`: the guest started again from scratch by its `restart`.
pub(super) fn boot(vm: Option<&Vm>) -> Compiled {
    match restarted(vm) {
        Some((socket, restart, _)) => (cold_start(socket, restart), Vec::new()),
        None => (Vec::new(), Vec::new()),
    }
}

/// Waits until QEMU reports the guest `running`.
fn wait_running(socket: &Path) -> Action {
    QmpWait::status(socket, "query-status", "running", ms(SOCKET_TIMEOUT))
}

/// The checks that a guest runs, as `preflight` and `verify` make them.
pub(super) fn running(vm: &Vm) -> Vec<Action> {
    match &vm.driver {
        VmDriver::Qmp { socket, .. } => vec![handshake(socket), wait_running(socket)],
        VmDriver::Libvirt { domain, uri } => vec![domstate(uri.as_deref(), domain, &["running"])],
    }
}
