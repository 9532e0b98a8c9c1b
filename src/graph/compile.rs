//! What each step does, as data: the exact argv, QMP command and syscall arguments, and how a step before the
//! point of no return is undone.
//!
//! Actions are data so that the dry-run prints precisely what apply would do, and so that one engine can hand them
//! either to the real host or to a recording fake. Compiling is pure: the only input from the host, the running
//! kernel's command line, is passed in by the caller.

use super::schedule::millis as ms;
use super::{Phase, StepGraph, StepId, StepKind};
use crate::action::{Action, PID_PLACEHOLDER, RebootMode, shell_quote};
use crate::cmdline::{Cmdline, CmdlineEdit, CmdlineError};
use crate::plan::{AppKind, CmdlineSpec, KexecMethod, Loader, MemoryMode, Plan, Vm, VmDriver};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Migration bandwidth set before saving: QEMU 7.2 caps migration at 128 MiB/s by default, which turns a 1.4 s
/// save into 12 s. 100 GiB/s is "unlimited" for any disk and well inside QEMU's accepted range.
pub const MIGRATION_MAX_BANDWIDTH: u64 = 100 << 30;
/// File in a VM's `state` directory that holds its migration stream (QMP driver).
pub const QMP_STATE_FILE: &str = "vmstate";
/// File in a VM's `state` directory that holds `virsh save`'s image (libvirt driver).
pub const LIBVIRT_STATE_FILE: &str = "libvirt.save";
/// Suffix of a state file while it is being written: a crash or a failed save never leaves a truncated file
/// under the name the restore reads.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// How long the old QEMU may take to close its QMP socket after `quit` (its process may live on for seconds
/// while the kernel frees its memory; that is not waited for).
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for a QEMU restart command (`systemctl start qemu@…`).
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted QEMU may take to open its QMP socket.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Lower bound for waiting on a migration or an incoming state: ten times the estimate, at least this.
pub const MIN_MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Limit for systemctl, virsh and CRIU commands.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// The target `isolate` is undone with.
pub const ISOLATE_ROLLBACK_TARGET: &str = "default.target";

/// A step's actions and, for a step before `kexec`, the actions that undo it. Actions run in order and the first
/// that fails fails the step, so `verify` removes state files only after every check passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompiledStep {
    /// The step.
    pub id: StepId,
    /// Its side of the point of no return.
    pub phase: Phase,
    /// The steps it waits for.
    pub after: Vec<StepId>,
    /// The cost model's estimate.
    pub estimate_ms: u64,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// Run in reverse step order when a later step before `kexec` fails (`policy.on_failure = "rollback"`).
    pub rollback: Vec<Action>,
    /// Whether it may run again after an interruption (built-in steps by kind, custom steps as the plan says).
    #[serde(skip)]
    pub idempotent: bool,
}

/// The whole plan as actions, in an order that respects every edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    /// The new kernel's command line, exactly as handed to `kexec_file_load`.
    pub kernel_cmdline: String,
    /// Every step, in an order that respects every edge.
    pub steps: Vec<CompiledStep>,
    /// The release the plan pins (`kernel.version`): what `uname -r` must say after the kexec.
    #[serde(skip)]
    pub target_release: Option<String>,
}

/// The new kernel's command line from the plan and the running kernel's (`/proc/cmdline`), via [`crate::cmdline`];
/// an inherited `BOOT_IMAGE=` is dropped.
pub fn kernel_cmdline(spec: &CmdlineSpec, running: &str) -> Result<String, CmdlineError> {
    match spec {
        CmdlineSpec::Replace(text) => Ok(text.trim().to_owned()),
        CmdlineSpec::Edit {
            inherit,
            remove,
            set,
            append,
        } => {
            let edit = CmdlineEdit {
                inherit: *inherit,
                remove: remove.clone(),
                set: set.clone(),
                append: append.clone(),
            };
            // BOOT_IMAGE is the boot loader's note of which image it booted: inherited, it would name the old
            // kernel (kdump and friends read it). kexec-tools' --reuse-cmdline drops it too.
            let mut running = Cmdline::parse(running);
            running.remove("BOOT_IMAGE");
            edit.apply(&running)?.render()
        }
    }
}

fn exec(argv: &[&str], timeout: Duration) -> Action {
    Action::Exec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(timeout),
    }
}

fn qmp(socket: &Path, command: &str, args: serde_json::Value) -> Action {
    Action::Qmp {
        socket: socket.to_owned(),
        command: command.to_owned(),
        args,
        file_uri: None,
    }
}

/// `migrate` into a state file; completion is awaited by a following `QmpWait` on `query-migrate`.
fn migrate_to(socket: &Path, path: &Path) -> Action {
    Action::Qmp {
        socket: socket.to_owned(),
        command: "migrate".to_owned(),
        args: json!({ "uri": format!("exec:cat > {}", shell_quote(path)) }),
        file_uri: Some(path.to_owned()),
    }
}

/// `migrate-incoming` from a state file, into a QEMU started with `-incoming defer`.
fn migrate_from(socket: &Path, path: &Path) -> Action {
    Action::Qmp {
        socket: socket.to_owned(),
        command: "migrate-incoming".to_owned(),
        args: json!({ "uri": format!("exec:cat {}", shell_quote(path)) }),
        file_uri: Some(path.to_owned()),
    }
}

fn handshake(socket: &Path) -> Action {
    qmp(socket, "qmp_capabilities", json!({}))
}

fn ignore_shared(socket: &Path) -> Action {
    qmp(
        socket,
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
}

fn state_file(vm: &Vm) -> PathBuf {
    match vm.driver {
        VmDriver::Qmp { .. } => vm.state.join(QMP_STATE_FILE),
        VmDriver::Libvirt { .. } => vm.state.join(LIBVIRT_STATE_FILE),
    }
}

/// Where a state file is written before [`Action::CommitFile`] gives it its name.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

fn commit(vm: &Vm) -> Action {
    let to = state_file(vm);
    Action::CommitFile {
        from: partial(&to),
        to,
    }
}

fn virsh(args: &[&str], timeout_ms: u64) -> Action {
    let mut argv = vec!["virsh".to_owned()];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    Action::Exec { argv, timeout_ms }
}

/// `virsh domstate DOMAIN` printing one of `states`.
fn domstate(domain: &str, states: &[&str]) -> Action {
    Action::CheckOutput {
        argv: vec!["virsh".into(), "domstate".into(), domain.to_owned()],
        expect: states.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

/// `systemctl is-active UNIT` printing one of `states`.
fn unit_state(unit: &str, states: &[&str]) -> Action {
    Action::CheckOutput {
        argv: vec!["systemctl".into(), "is-active".into(), unit.to_owned()],
        expect: states.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

fn pci_check(d: &crate::plan::PciDevice) -> Action {
    Action::CheckPci {
        address: d.address.to_string(),
        driver: d.driver.clone(),
        iommu: d.driver == "vfio-pci",
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Compiles every step of `graph` in schedule order. `kernel_cmdline` is the result of [`kernel_cmdline`].
pub fn compile(plan: &Plan, graph: &StepGraph, kernel_cmdline: &str) -> Program {
    let schedule = graph.schedule();
    let steps = schedule
        .slots
        .iter()
        .filter_map(|slot| {
            let step = graph.step(&slot.id)?;
            let (actions, rollback) = step_actions(plan, step.kind, step.estimate, kernel_cmdline);
            let idempotent = match step.kind {
                StepKind::Custom { step } => plan.steps.get(step).is_some_and(|s| s.idempotent),
                _ => step.id.builtin_idempotent().unwrap_or(false),
            };
            Some(CompiledStep {
                idempotent,
                id: slot.id.clone(),
                phase: slot.phase,
                after: slot.after.clone(),
                estimate_ms: ms(slot.estimate),
                actions,
                rollback: if slot.phase == Phase::Before {
                    rollback
                } else {
                    Vec::new()
                },
            })
        })
        .collect();
    Program {
        kernel_cmdline: kernel_cmdline.to_owned(),
        steps,
        target_release: plan.kernel.version.clone(),
    }
}

/// The actions of one step and of its rollback.
fn step_actions(
    plan: &Plan,
    kind: StepKind,
    estimate: Duration,
    cmdline: &str,
) -> (Vec<Action>, Vec<Action>) {
    let migration_timeout = ms(estimate.saturating_mul(10).max(MIN_MIGRATION_TIMEOUT));
    let none = Vec::new;
    match kind {
        StepKind::Preflight => (preflight(plan), none()),
        StepKind::KernelLoad => {
            let k = &plan.kernel;
            match k.loader {
                Loader::File => (
                    vec![Action::KexecFileLoad {
                        kernel: k.image.clone(),
                        initrd: k.initrd.clone(),
                        cmdline: cmdline.to_owned(),
                    }],
                    vec![Action::KexecUnload],
                ),
                Loader::Legacy => {
                    let mut argv =
                        vec!["kexec".to_owned(), "--load".to_owned(), path_str(&k.image)];
                    if let Some(initrd) = &k.initrd {
                        argv.push(format!("--initrd={}", initrd.display()));
                    }
                    argv.push(format!("--command-line={cmdline}"));
                    (
                        vec![Action::Exec {
                            argv,
                            timeout_ms: ms(COMMAND_TIMEOUT),
                        }],
                        vec![exec(&["kexec", "--unload"], COMMAND_TIMEOUT)],
                    )
                }
            }
        }
        StepKind::PciCheck { pci } => match plan.pci.get(pci) {
            Some(d) => (vec![pci_check(d)], none()),
            None => (none(), none()),
        },
        StepKind::VmPause { vm } => match plan.vms.get(vm).map(|v| (v, &v.driver)) {
            Some((v, VmDriver::Qmp { socket, .. })) => {
                let mut actions = vec![
                    handshake(socket),
                    // Set before `stop` so that nothing but the stop itself happens while the guest is paused.
                    qmp(
                        socket,
                        "migrate-set-parameters",
                        json!({"max-bandwidth": MIGRATION_MAX_BANDWIDTH}),
                    ),
                ];
                if v.memory == MemoryMode::Shared {
                    actions.push(ignore_shared(socket));
                }
                actions.push(qmp(socket, "stop", json!({})));
                (
                    actions,
                    vec![handshake(socket), qmp(socket, "cont", json!({}))],
                )
            }
            // `virsh save` pauses the domain itself.
            _ => (none(), none()),
        },
        StepKind::VmSave { vm } => match plan.vms.get(vm).map(|v| (v, &v.driver)) {
            Some((v, VmDriver::Qmp { socket, .. })) => (
                vec![
                    handshake(socket),
                    migrate_to(socket, &partial(&state_file(v))),
                    Action::QmpWait {
                        socket: socket.clone(),
                        command: "query-migrate".into(),
                        field: "status".into(),
                        until: "completed".into(),
                        timeout_ms: migration_timeout,
                    },
                    // The old QEMU is left as it is: the kexec ends it, and waiting for its exit (1–2 s while
                    // the kernel frees its RAM) would only lengthen the downtime.
                    commit(v),
                ],
                // The source QEMU stays alive (the kexec ends it), so the pause's `cont` resumes it; a
                // migration still running is cancelled first.
                vec![
                    handshake(socket),
                    qmp(socket, "migrate_cancel", json!({})),
                    Action::RemoveFile {
                        path: partial(&state_file(v)),
                    },
                ],
            ),
            Some((v, VmDriver::Libvirt { domain })) => {
                let file = path_str(&state_file(v));
                let part = path_str(&partial(&state_file(v)));
                (
                    vec![
                        // Its exit status is the whole truth: afterwards a persistent domain is "shut off" and a
                        // transient one is gone, so there is no state worth checking.
                        virsh(
                            &["save", "--bypass-cache", domain, &part],
                            migration_timeout,
                        ),
                        commit(v),
                    ],
                    vec![
                        virsh(&["restore", "--bypass-cache", &file], migration_timeout),
                        domstate(domain, &["running"]),
                    ],
                )
            }
            None => (none(), none()),
        },
        StepKind::AppSave { app } => match plan.apps.get(app).map(|a| &a.kind) {
            Some(AppKind::Systemd { unit }) => (
                vec![
                    exec(&["systemctl", "stop", unit], COMMAND_TIMEOUT),
                    // A unit that failed while stopping is stopped too; anything else is not.
                    unit_state(unit, &["inactive", "failed"]),
                ],
                vec![
                    exec(&["systemctl", "start", unit], COMMAND_TIMEOUT),
                    unit_state(unit, &["active"]),
                ],
            ),
            Some(AppKind::Criu { pidfile, images }) => (
                vec![criu_dump(pidfile, images)],
                vec![criu_restore(pidfile, images)],
            ),
            Some(AppKind::Hooks { save, restore }) => (
                save.iter().map(|argv| hook(argv)).collect(),
                restore.iter().map(|argv| hook(argv)).collect(),
            ),
            None => (none(), none()),
        },
        StepKind::Sync => (vec![Action::Sync], none()),
        StepKind::Isolate => match &plan.policy.isolate {
            Some(target) => (
                vec![exec(&["systemctl", "isolate", target], COMMAND_TIMEOUT)],
                vec![exec(
                    &["systemctl", "isolate", ISOLATE_ROLLBACK_TARGET],
                    COMMAND_TIMEOUT,
                )],
            ),
            None => (none(), none()),
        },
        StepKind::Kexec => {
            let mode = match plan.policy.kexec {
                KexecMethod::Auto => RebootMode::Kexec,
                KexecMethod::Systemd => RebootMode::SystemdKexec,
                KexecMethod::Direct => RebootMode::DirectKexec,
            };
            // A custom step may write after the plan's `sync` step: flush again right before the point of no return
            // (the engine writes the durable kexec record between the two).
            (vec![Action::Sync, Action::Reboot(mode)], none())
        }
        StepKind::AppRestore { app } => match plan.apps.get(app).map(|a| &a.kind) {
            Some(AppKind::Systemd { unit }) => (
                vec![
                    exec(&["systemctl", "start", unit], COMMAND_TIMEOUT),
                    unit_state(unit, &["active"]),
                ],
                none(),
            ),
            Some(AppKind::Criu { pidfile, images }) => {
                (vec![criu_restore(pidfile, images)], none())
            }
            Some(AppKind::Hooks { restore, .. }) => {
                (restore.iter().map(|argv| hook(argv)).collect(), none())
            }
            None => (none(), none()),
        },
        StepKind::VmRestore { vm } => match plan.vms.get(vm).map(|v| (v, &v.driver)) {
            Some((v, VmDriver::Qmp { socket, restart })) => {
                let mut actions = vec![
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
                ];
                // The destination must agree with the stream, or QEMU exits.
                if v.memory == MemoryMode::Shared {
                    actions.push(ignore_shared(socket));
                }
                actions.push(migrate_from(socket, &state_file(v)));
                actions.push(Action::QmpWait {
                    socket: socket.clone(),
                    command: "query-status".into(),
                    field: "status".into(),
                    until: "paused".into(),
                    timeout_ms: migration_timeout,
                });
                (actions, none())
            }
            Some((v, VmDriver::Libvirt { domain })) => (
                vec![
                    virsh(
                        &[
                            "restore",
                            "--bypass-cache",
                            "--paused",
                            &path_str(&state_file(v)),
                        ],
                        migration_timeout,
                    ),
                    domstate(domain, &["paused"]),
                ],
                none(),
            ),
            None => (none(), none()),
        },
        StepKind::VmResume { vm } => match plan.vms.get(vm).map(|v| &v.driver) {
            Some(VmDriver::Qmp { socket, .. }) => (
                vec![
                    handshake(socket),
                    qmp(socket, "cont", json!({})),
                    Action::QmpWait {
                        socket: socket.clone(),
                        command: "query-status".into(),
                        field: "status".into(),
                        until: "running".into(),
                        timeout_ms: ms(SOCKET_TIMEOUT),
                    },
                ],
                none(),
            ),
            Some(VmDriver::Libvirt { domain }) => (
                vec![
                    exec(&["virsh", "resume", domain], COMMAND_TIMEOUT),
                    domstate(domain, &["running"]),
                ],
                none(),
            ),
            None => (none(), none()),
        },
        StepKind::Verify => (verify(plan), none()),
        StepKind::Custom { step } => match plan.steps.get(step) {
            Some(s) => (
                vec![Action::Exec {
                    argv: s.run.clone(),
                    timeout_ms: ms(s.timeout),
                }],
                s.undo.iter().map(|argv| hook(argv)).collect(),
            ),
            None => (none(), none()),
        },
    }
}

fn hook(argv: &[String]) -> Action {
    Action::Exec {
        argv: argv.to_vec(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

fn criu_dump(pidfile: &Path, images: &Path) -> Action {
    Action::Criu {
        argv: vec![
            "criu".into(),
            "dump".into(),
            "--tree".into(),
            PID_PLACEHOLDER.into(),
            "--images-dir".into(),
            path_str(images),
            // A process started from a shell keeps its session and terminal; CRIU refuses those without this.
            "--shell-job".into(),
            // Relative to the images directory: the log stays next to the images it explains.
            "--log-file".into(),
            "dump.log".into(),
        ],
        pidfile: pidfile.to_owned(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

fn criu_restore(pidfile: &Path, images: &Path) -> Action {
    Action::Criu {
        argv: vec![
            "criu".into(),
            "restore".into(),
            "--images-dir".into(),
            path_str(images),
            "--shell-job".into(),
            "--restore-detached".into(),
            "--pidfile".into(),
            path_str(pidfile),
            "--log-file".into(),
            "restore.log".into(),
        ],
        pidfile: pidfile.to_owned(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

/// Checks that nothing has been changed yet and that everything the plan needs is there.
fn preflight(plan: &Plan) -> Vec<Action> {
    let mut actions = Vec::new();
    if !plan.hosts.is_empty() {
        actions.push(Action::CheckHostname {
            globs: plan.hosts.iter().map(|g| g.to_string()).collect(),
        });
    }
    actions.push(Action::CheckKexecEnabled);
    actions.push(Action::CheckFile {
        path: plan.kernel.image.clone(),
        sha256: plan.kernel.sha256.clone(),
    });
    actions.push(Action::CheckKernelImage {
        path: plan.kernel.image.clone(),
        release: plan.kernel.version.clone(),
    });
    if let Some(initrd) = &plan.kernel.initrd {
        actions.push(Action::CheckFile {
            path: initrd.clone(),
            sha256: None,
        });
    }
    // Created here, not when saving: a missing or read-only directory then fails before any guest is paused.
    for vm in &plan.vms {
        actions.push(Action::EnsureDir {
            path: vm.state.clone(),
        });
    }
    // A state file under the name a restore or a rollback reads must be this run's: an earlier run's is moved
    // aside now, before anything pauses, rather than restored by mistake after a failed save.
    for vm in &plan.vms {
        actions.push(Action::KeepAside {
            path: state_file(vm),
        });
    }
    for app in &plan.apps {
        if let AppKind::Criu { images, .. } = &app.kind {
            actions.push(Action::EnsureDir {
                path: images.clone(),
            });
        }
    }
    for d in &plan.pci {
        actions.push(pci_check(d));
    }
    for vm in &plan.vms {
        actions.extend(vm_running(vm));
        // Checked before anything pauses: with RAM that does not survive the kexec, "shared" would lose the guest.
        if let (VmDriver::Qmp { socket, .. }, MemoryMode::Shared) = (&vm.driver, vm.memory) {
            actions.push(Action::CheckSharedRam {
                socket: socket.clone(),
            });
        }
    }
    actions
}

fn vm_running(vm: &Vm) -> Vec<Action> {
    match &vm.driver {
        VmDriver::Qmp { socket, .. } => vec![
            handshake(socket),
            Action::QmpWait {
                socket: socket.clone(),
                command: "query-status".into(),
                field: "status".into(),
                until: "running".into(),
                timeout_ms: ms(SOCKET_TIMEOUT),
            },
        ],
        VmDriver::Libvirt { domain } => vec![domstate(domain, &["running"])],
    }
}

/// Every guest running, every device bound as planned; then, and only then, the state files go.
fn verify(plan: &Plan) -> Vec<Action> {
    let mut actions: Vec<Action> = plan.vms.iter().flat_map(vm_running).collect();
    for d in &plan.pci {
        actions.push(pci_check(d));
    }
    for vm in &plan.vms {
        actions.push(Action::RemoveFile {
            path: state_file(vm),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_kexec_chooses_how_the_kexec_executes() {
        for (method, mode) in [
            ("", RebootMode::Kexec),
            ("kexec = \"auto\"", RebootMode::Kexec),
            ("kexec = \"systemd\"", RebootMode::SystemdKexec),
            ("kexec = \"direct\"", RebootMode::DirectKexec),
        ] {
            let text =
                format!("kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n[policy]\n{method}\n");
            let (plan, graph) = crate::check::check("p.toml", text.as_bytes())
                .valid()
                .expect("valid");
            let program = compile(&plan, &graph, "root=/dev/sda1");
            let kexec = program
                .steps
                .iter()
                .find(|s| s.id == StepId::Kexec)
                .expect("a kexec step");
            assert_eq!(
                kexec.actions,
                vec![Action::Sync, Action::Reboot(mode)],
                "{method}"
            );
        }
    }

    #[test]
    fn cmdline_edits_apply_to_the_running_kernel() {
        let spec = CmdlineSpec::Edit {
            inherit: true,
            remove: vec!["quiet".into()],
            set: vec![("cpuhp.parallel".into(), "1".into())],
            append: vec!["nosmt".into()],
        };
        assert_eq!(
            kernel_cmdline(&spec, "BOOT_IMAGE=/vmlinuz-old root=/dev/sda1 quiet ro\n").unwrap(),
            "root=/dev/sda1 ro cpuhp.parallel=1 nosmt"
        );
        let fresh = CmdlineSpec::Edit {
            inherit: false,
            remove: vec![],
            set: vec![],
            append: vec!["console=ttyS0".into()],
        };
        assert_eq!(kernel_cmdline(&fresh, "ignored").unwrap(), "console=ttyS0");
        let replace = CmdlineSpec::Replace(" root=/dev/vda ".into());
        assert_eq!(kernel_cmdline(&replace, "x").unwrap(), "root=/dev/vda");
    }

    fn program(text: &str) -> Program {
        let (plan, graph) = crate::check::check("t.toml", text.as_bytes())
            .valid()
            .unwrap_or_else(|report| panic!("{}", report.render(false, 100)));
        compile(&plan, &graph, "root=/dev/vda")
    }

    fn commands(program: &Program, id: &str) -> Vec<String> {
        let step = program.steps.iter().find(|s| s.id == *id).unwrap();
        step.actions
            .iter()
            .filter_map(|a| match a {
                Action::Qmp { command, .. } => Some(command.clone()),
                _ => None,
            })
            .collect()
    }

    const SHARED: &str = r#"kup = 1
[kernel]
image = "/boot/vmlinuz"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[[vm]]
name = "db"
qmp = "/run/qemu/db.qmp"
state = "/var/lib/kup/state/my db"
memory = "shared"
restart = ["systemctl", "start", "qemu@db.service"]
"#;

    #[test]
    fn shared_ram_sets_ignore_shared_on_both_sides() {
        let p = program(SHARED);
        assert_eq!(
            commands(&p, "vm:db:pause"),
            [
                "qmp_capabilities",
                "migrate-set-parameters",
                "migrate-set-capabilities",
                "stop"
            ]
        );
        assert_eq!(
            commands(&p, "vm:db:restore"),
            [
                "qmp_capabilities",
                "migrate-set-capabilities",
                "migrate-incoming"
            ]
        );
        let restore = p.steps.iter().find(|s| s.id == "vm:db:restore").unwrap();
        assert!(matches!(restore.actions[0], Action::QmpQuit { .. }));
        assert!(
            matches!(restore.actions.last(), Some(Action::QmpWait { until, .. }) if until == "paused")
        );
        let save = p.steps.iter().find(|s| s.id == "vm:db:save").unwrap();
        // Written under a temporary name, renamed once complete; the old QEMU is not waited for.
        let dir = Path::new("/var/lib/kup/state/my db");
        assert!(save.actions.iter().any(|a| matches!(a,
            Action::Qmp { file_uri: Some(path), .. } if path == &dir.join("vmstate.partial"))));
        assert_eq!(
            save.actions.last(),
            Some(&Action::CommitFile {
                from: dir.join("vmstate.partial"),
                to: dir.join("vmstate")
            })
        );
        assert!(
            !save
                .actions
                .iter()
                .any(|a| matches!(a, Action::QmpQuit { .. }))
        );
        // The state path has a space: QEMU runs the exec: URI through /bin/sh, and the dry run shows it quoted.
        let shown = save.actions[1].describe();
        assert!(
            shown.contains(r#"exec:cat > '/var/lib/kup/state/my db/vmstate.partial'"#),
            "{shown}"
        );
        let preflight = p.steps.iter().find(|s| s.id == "preflight").unwrap();
        assert!(
            preflight
                .actions
                .iter()
                .any(|a| matches!(a, Action::CheckSharedRam { .. }))
        );
        assert!(preflight.actions.contains(&Action::KeepAside {
            path: dir.join("vmstate")
        }));
    }

    #[test]
    fn only_steps_before_kexec_have_rollbacks() {
        let p = program(SHARED);
        for step in &p.steps {
            if step.phase != Phase::Before {
                assert!(step.rollback.is_empty(), "{}", step.id);
            }
        }
        let pause = p.steps.iter().find(|s| s.id == "vm:db:pause").unwrap();
        assert!(matches!(&pause.rollback[1], Action::Qmp { command, .. } if command == "cont"));
        let load = p.steps.iter().find(|s| s.id == "kernel:load").unwrap();
        assert_eq!(load.rollback, [Action::KexecUnload]);
    }
}
