//! Compiling steps into actions: what each step does, as data — the exact argv, QMP command and syscall arguments, and how a step before the
//! point of no return is undone.
//!
//! Actions are data so that the dry-run prints precisely what apply would do, and so that one engine can hand them
//! either to the real host or to a recording fake. Compiling is pure: the only input from the host, the running
//! kernel's command line, is passed in by the caller.

mod app;
mod checks;
mod host_steps;
mod kernel;
mod livepatch;
mod pci;
mod vm;

pub(crate) use kernel::kernel_cmdline;

use super::schedule::millis as ms;
use super::{Phase, StepGraph, StepId, StepKind};
use crate::action::Action;
use crate::plan::Plan;
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Migration bandwidth set before saving: QEMU 7.2 caps migration at 128 MiB/s by default, which turns a 1.4 s
/// save into 12 s. 100 GiB/s is "unlimited" for any disk and well inside QEMU's accepted range.
pub(crate) const MIGRATION_MAX_BANDWIDTH: u64 = 100 << 30;
/// File in a VM's `state` directory that holds its migration stream (QMP driver).
pub(crate) const QMP_STATE_FILE: &str = "vmstate";
/// File in a VM's `state` directory that records how the state was saved (QMP driver): capabilities and parameters
/// the restore must set again, as JSON.
pub const MIGRATION_RECORD: &str = "vmstate.migration";
/// File in a VM's `state` directory that holds the digest of a shared-RAM guest's RAM files at its save (QMP
/// driver), which the restore checks before loading the state onto them.
pub const RAM_DIGEST_RECORD: &str = "vmstate.ram-digest";
/// File in a VM's `state` directory that holds `virsh save`'s image (libvirt driver).
pub(crate) const LIBVIRT_STATE_FILE: &str = "libvirt.save";
/// Suffix of a state file while it is being written: a crash or a failed save never leaves a truncated file
/// under the name the restore reads.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";
/// How long the old QEMU may take to close its QMP socket after `quit` (its process may live on for seconds
/// while the kernel frees its memory; that is not waited for).
pub(crate) const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for a QEMU restart command (`systemctl start qemu@…`).
pub(crate) const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted QEMU may take to open its QMP socket.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// Lower bound for waiting on a migration or an incoming state: ten times the estimate, at least this.
pub(crate) const MIN_MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Limit for systemctl, virsh and CRIU commands.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit for loading a PCI driver's module, and for the driver to take a device after `drivers_probe`: a probe is
/// synchronous on most drivers, so this bounds a driver that defers or hangs, not the normal case. Generous: the
/// lab host (TCG, a loaded machine) once needed more than 10 s for `modprobe vfio-pci` (four xz-compressed modules)
/// on the new kernel, and the bind runs while the guest is down anyway.
pub(crate) const PCI_BIND_TIMEOUT: Duration = Duration::from_secs(60);
/// The target `isolate` is undone with.
pub(crate) const ISOLATE_ROLLBACK_TARGET: &str = "default.target";

/// A step's actions and, for a step before `kexec`, the actions that undo it. Actions run in order and the first
/// that fails fails the step, so `verify` removes state files only after every check passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompiledStep {
    /// The step.
    pub id: StepId,
    /// Its side of the point of no return.
    pub(crate) phase: Phase,
    /// The steps it waits for.
    pub after: Vec<StepId>,
    /// The cost model's estimate.
    pub(crate) estimate_ms: u64,
    /// What it does, in order.
    pub actions: Vec<Action>,
    /// Run in reverse step order when a later step before `kexec` fails (`policy.on_failure = "rollback"`).
    pub rollback: Vec<Action>,
    /// Whether it may run again after an interruption (built-in steps by kind, custom steps as the plan says).
    #[serde(skip)]
    pub(crate) idempotent: bool,
}

/// The whole plan as actions, in an order that respects every edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    /// The new kernel's command line, exactly as handed to `kexec_file_load`.
    pub(crate) kernel_cmdline: String,
    /// Every step, in an order that respects every edge.
    pub steps: Vec<CompiledStep>,
    /// The release the plan pins (`kernel.version`): what `uname -r` must say after the kexec.
    #[serde(skip)]
    pub(crate) target_release: Option<String>,
}

/// Compiles every step of `graph` in schedule order. `kernel_cmdline` is the result of `kernel_cmdline`.
pub fn compile(plan: &Plan, graph: &StepGraph, kernel_cmdline: &str) -> Program {
    let schedule = graph.schedule();
    // A custom step before the kexec may have written anywhere: only a host-wide `sync(2)` makes that durable.
    let customs_before = schedule
        .slots
        .iter()
        .any(|s| matches!(s.id, StepId::Custom { .. }) && s.phase == Phase::Before);
    let steps = schedule
        .slots
        .iter()
        .filter_map(|slot| {
            let step = graph.step(&slot.id)?;
            let (actions, rollback) = step_actions(
                plan,
                step.kind,
                step.estimate,
                kernel_cmdline,
                customs_before,
            );
            let idempotent = match step.kind {
                StepKind::Custom { step } => plan.steps.get(step).is_some_and(|s| s.idempotent),
                // `virsh resume` of a domain that already runs fails ("domain is already running"): run again
                // after an interruption, a libvirt guest's resume would fail a hand-over that worked.
                StepKind::VmResume { vm } if plan.vms.get(vm).is_some_and(vm::is_libvirt) => false,
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
    let mut steps: Vec<CompiledStep> = steps;
    check_programs_at_preflight(&mut steps);
    Program {
        kernel_cmdline: kernel_cmdline.to_owned(),
        steps,
        target_release: plan.kernel.as_ref().and_then(|k| k.version.clone()),
    }
}

/// Puts first in the preflight a check of every program any step (or undo) will run: a hook, a restart command
/// or CRIU that another user could replace would run as root, so the apply is refused before anything changes.
fn check_programs_at_preflight(steps: &mut [CompiledStep]) {
    let mut programs: Vec<String> = Vec::new();
    for action in steps
        .iter()
        .flat_map(|s| s.actions.iter().chain(&s.rollback))
    {
        if let Action::Exec { argv, .. }
        | Action::Criu { argv, .. }
        | Action::CheckOutput { argv, .. } = action
            && let Some(program) = argv.first()
            && !programs.contains(program)
        {
            programs.push(program.clone());
        }
    }
    if let Some(preflight) = steps.iter_mut().find(|s| s.id == StepId::Preflight)
        && !programs.is_empty()
    {
        preflight
            .actions
            .insert(0, Action::CheckExecutables { programs });
    }
}

/// A step's actions and the actions that undo it.
type Compiled = (Vec<Action>, Vec<Action>);

/// The actions of one step and of its rollback: one compile function per kind of step.
fn step_actions(
    plan: &Plan,
    kind: StepKind,
    estimate: Duration,
    cmdline: &str,
    customs_before: bool,
) -> Compiled {
    let migration_timeout = ms(estimate.saturating_mul(10).max(MIN_MIGRATION_TIMEOUT));
    let vm = |i: usize| plan.vms.get(i);
    let app = |i: usize| plan.apps.get(i);
    let patch = plan.livepatch.as_ref();
    match kind {
        StepKind::Preflight => match patch {
            Some(l) => (livepatch::preflight(plan, l), Vec::new()),
            None => (checks::preflight(plan, cmdline), Vec::new()),
        },
        StepKind::KernelLoad => plan
            .kernel
            .as_ref()
            .map(|k| kernel::load(k, cmdline))
            .unwrap_or_default(),
        StepKind::PciCheck { pci } => checks::pci(plan.pci.get(pci)),
        StepKind::PciBind { pci } => pci::bind(plan, plan.pci.get(pci)),
        StepKind::VmPause { vm: i } => vm::pause(vm(i), plan.policy.save_channels),
        StepKind::VmSave { vm: i } => vm::save(vm(i), migration_timeout),
        StepKind::AppSave { app: i } => app::save(app(i)),
        StepKind::Preflush => host_steps::preflush(plan),
        StepKind::Sync => host_steps::sync(plan),
        StepKind::Isolate => host_steps::isolate(plan),
        StepKind::Kexec => kernel::kexec(plan.policy.kexec, customs_before),
        StepKind::AppRestore { app: i } => app::restore(app(i)),
        StepKind::VmRestore { vm: i } => vm::restore(vm(i), migration_timeout),
        StepKind::VmResume { vm: i } => vm::resume(vm(i)),
        StepKind::VmShutdown { vm: i } => vm::shutdown(vm(i)),
        StepKind::VmBoot { vm: i } => vm::boot(vm(i)),
        StepKind::Verify => match patch {
            Some(l) => (livepatch::verify(l), Vec::new()),
            None => {
                let mut actions = checks::verify(plan);
                actions.extend(host_steps::remove_isolate_drop_ins(plan));
                (actions, Vec::new())
            }
        },
        StepKind::Custom { step } => host_steps::custom(plan.steps.get(step)),
        StepKind::LivepatchLoad => patch.map(livepatch::load).unwrap_or_default(),
        StepKind::LivepatchTransition => patch.map(livepatch::transition).unwrap_or_default(),
        StepKind::LivepatchRemove => patch.map(livepatch::remove).unwrap_or_default(),
    }
}

pub(super) fn exec(argv: &[&str], timeout: Duration) -> Action {
    Action::Exec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(timeout),
    }
}

pub(super) fn qmp(socket: &Path, command: &str, args: serde_json::Value) -> Action {
    Action::Qmp {
        socket: socket.to_owned(),
        command: command.to_owned(),
        args,
        file_uri: None,
    }
}

pub(super) fn handshake(socket: &Path) -> Action {
    qmp(socket, "qmp_capabilities", json!({}))
}

pub(super) fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub(super) fn hook(argv: &[String]) -> Action {
    Action::Exec {
        argv: argv.to_vec(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::RebootMode;
    use crate::plan::CmdlineSpec;
    use std::path::PathBuf;

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
            assert_eq!(kexec.actions, vec![Action::Reboot(mode)], "{method}");
        }
    }

    /// The actions of step `id` in the program of `text`.
    fn actions_of(text: &str, id: &str) -> Vec<Action> {
        let (plan, graph) = crate::check::check("p.toml", text.as_bytes())
            .valid()
            .expect("valid");
        let program = compile(&plan, &graph, "root=/dev/sda1");
        let step = program.steps.iter().find(|s| s.id == id);
        step.map(|s| s.actions.clone()).unwrap_or_default()
    }

    const FLUSHED: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n\
        [[vm]]\nname = \"shared\"\nqmp = \"/run/shared.qmp\"\nstate = \"/srv/state/shared\"\n\
        memory = \"shared\"\nrestart = [\"/bin/true\"]\n\
        [[vm]]\nname = \"copied\"\nqmp = \"/run/copied.qmp\"\nstate = \"/srv/state/copied\"\n\
        restart = [\"/bin/true\"]\n\
        [[vm]]\nname = \"web\"\nlibvirt = \"web\"\nstate = \"/srv/state/web\"\n\
        [[app]]\nname = \"fwd\"\ncriu = { pidfile = \"/run/fwd.pid\", images = \"/srv/criu/fwd\" }\n\
        [policy]\njournal = \"/var/lib/kup\"\n";

    #[test]
    fn the_preflush_and_sync_cover_shared_ram_state_images_and_journal() {
        let dirs: Vec<PathBuf> = [
            "/srv/criu/fwd",
            "/srv/state/copied",
            "/srv/state/shared",
            "/srv/state/web",
            "/var/lib/kup",
        ]
        .map(PathBuf::from)
        .into();
        assert_eq!(
            actions_of(FLUSHED, "preflush"),
            [
                handshake(Path::new("/run/shared.qmp")),
                Action::Preflush {
                    sockets: vec!["/run/shared.qmp".into()],
                    dirs: dirs.clone(),
                    budget_ms: 10_000,
                }
            ]
        );
        assert_eq!(
            actions_of(FLUSHED, "sync"),
            [Action::SyncFs {
                ram_records: vec!["/srv/state/shared/vmstate.ram-digest".into()],
                dirs,
            }]
        );
    }

    #[test]
    fn the_kexec_syncs_the_whole_host_only_after_a_custom_step() {
        assert!(
            !actions_of(FLUSHED, "kexec")
                .iter()
                .any(|a| matches!(a, Action::Sync))
        );
        let with_step = format!("{FLUSHED}[[step]]\nname = \"mark\"\nrun = [\"/bin/true\"]\n");
        assert!(matches!(
            actions_of(&with_step, "kexec").as_slice(),
            [Action::Sync, Action::Reboot(_)]
        ));
        // A custom step after the kexec writes nothing the kexec could lose.
        let after = format!(
            "{FLUSHED}[[step]]\nname = \"mark\"\nrun = [\"/bin/true\"]\nafter = [\"vm:web:resume\"]\n"
        );
        assert!(matches!(
            actions_of(&after, "kexec").as_slice(),
            [Action::Reboot(_)]
        ));
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

    #[test]
    fn a_libvirt_resume_is_not_run_twice() {
        let text = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n\
                    [[vm]]\nname = \"web\"\nlibvirt = \"web\"\nstate = \"/var/lib/kup/web\"\n\
                    [[vm]]\nname = \"db\"\nqmp = \"/run/db.qmp\"\nrestart = [\"true\"]\n\
                    state = \"/var/lib/kup/db\"\n";
        let (plan, graph) = crate::check::check("p.toml", text.as_bytes())
            .valid()
            .expect("valid");
        let program = compile(&plan, &graph, "root=/dev/sda1");
        let idempotent = |id: &str| {
            program
                .steps
                .iter()
                .find(|s| s.id == id)
                .expect(id)
                .idempotent
        };
        assert!(!idempotent("vm:web:resume"));
        assert!(idempotent("vm:db:resume"));
        assert!(idempotent("vm:web:save"));
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
                Action::MigrationSetup(setup) => Some(format!("setup:{:?}", setup.side)),
                _ => None,
            })
            .collect()
    }

    /// A QMP guest with shared RAM.
    fn shared() -> String {
        format!(
            r#"{}[[vm]]
name = "db"
qmp = "/run/qemu/db.qmp"
state = "/var/lib/kup/state/my db"
memory = "shared"
restart = ["systemctl", "start", "qemu@db.service"]
"#,
            crate::graph::tests::KERNEL
        )
    }

    #[test]
    fn shared_ram_sets_up_the_migration_on_both_sides() {
        let p = program(&shared());
        assert_eq!(
            commands(&p, "vm:db:pause"),
            ["qmp_capabilities", "setup:Save", "stop"]
        );
        assert_eq!(
            commands(&p, "vm:db:restore"),
            ["qmp_capabilities", "setup:Restore", "migrate-incoming"]
        );
        let dir = Path::new("/var/lib/kup/state/my db");
        let pause = p.steps.iter().find(|s| s.id == "vm:db:pause").unwrap();
        assert_eq!(
            pause.actions[1],
            Action::MigrationSetup(crate::action::MigrationSetup {
                socket: "/run/qemu/db.qmp".into(),
                side: crate::action::MigrationSide::Save,
                memory: crate::action::MigrationMemory::Shared,
                channels: None,
                max_bandwidth: MIGRATION_MAX_BANDWIDTH,
                state: dir.join("vmstate.partial"),
                record: dir.join("vmstate.migration"),
            })
        );
        // The dry run shows what each QEMU version gets.
        let shown = pause.actions[1].describe();
        assert!(shown.contains(r#"on QEMU >= 8.2: {"execute":"migrate-set-parameters","arguments":{"mode":"cpr-reboot"}}"#), "{shown}");
        assert!(shown.contains("on QEMU < 8.2: "), "{shown}");
        let restore = p.steps.iter().find(|s| s.id == "vm:db:restore").unwrap();
        // The RAM digest first, before any QEMU is ended or started; then the old QEMU's `quit`.
        assert_eq!(
            restore.actions[0],
            Action::CheckRamDigest {
                record: dir.join("vmstate.ram-digest"),
                state: dir.join("vmstate"),
            }
        );
        assert!(matches!(restore.actions[1], Action::QmpQuit { .. }));
        assert!(matches!(restore.actions.last(), Some(Action::QmpWait(w)) if w.until == "paused"));
        let save = p.steps.iter().find(|s| s.id == "vm:db:save").unwrap();
        // Written under a temporary name, renamed once complete; the old QEMU is not waited for.
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
        // The digest is recorded once the migration completed, before the commit; the rollback drops it.
        let n = save.actions.len();
        assert!(matches!(&save.actions[n - 3], Action::QmpWait(w) if w.until == "completed"));
        assert!(
            matches!(&save.actions[n - 2], Action::RecordRamDigest { record, .. } if record == &dir.join("vmstate.ram-digest"))
        );
        assert_eq!(
            save.rollback.last(),
            Some(&Action::RemoveFile {
                path: dir.join("vmstate.ram-digest")
            })
        );
        let verify = p.steps.iter().find(|s| s.id == "verify").unwrap();
        assert!(verify.actions.contains(&Action::RemoveFile {
            path: dir.join("vmstate.ram-digest")
        }));
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
        assert!(
            preflight
                .actions
                .iter()
                .any(|a| matches!(a, Action::CheckMigratable { .. }))
        );
        for name in ["vmstate", "vmstate.partial"] {
            assert!(preflight.actions.contains(&Action::KeepAside {
                path: dir.join(name)
            }));
        }
        // A failed save's partial state is kept aside first, before the undo needs the QEMU.
        assert_eq!(
            save.rollback.first(),
            Some(&Action::KeepAside {
                path: dir.join("vmstate.partial")
            })
        );
    }

    #[test]
    fn copied_ram_has_no_digest_and_the_shared_ram_check_gets_the_new_command_line() {
        let copy = program(&shared().replace("memory = \"shared\"", "memory = \"copy\""));
        let digests = |p: &Program| {
            p.steps
                .iter()
                .flat_map(|s| s.actions.iter().chain(&s.rollback))
                .filter(|a| {
                    matches!(a, Action::RecordRamDigest { .. } | Action::CheckRamDigest { .. })
                        || matches!(a, Action::RemoveFile { path } if path.ends_with("vmstate.ram-digest"))
                })
                .count()
        };
        assert_eq!(digests(&copy), 0);
        let shared = program(&shared());
        // Recorded, checked, removed by the save's rollback and by verify.
        assert_eq!(digests(&shared), 4);
        let check = shared.steps[0]
            .actions
            .iter()
            .find_map(|a| match a {
                Action::CheckSharedRam { cmdline, .. } => Some(cmdline.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(check.as_deref(), Some(shared.kernel_cmdline.as_str()));
    }

    #[test]
    fn policy_save_channels_reaches_the_copied_ram_setup_and_is_bounded() {
        let copy = shared().replace("memory = \"shared\"", "memory = \"copy\"");
        let channels = |program: &Program| {
            let pause = program
                .steps
                .iter()
                .find(|s| s.id == "vm:db:pause")
                .unwrap();
            match &pause.actions[1] {
                Action::MigrationSetup(setup) => (setup.channels, setup.memory),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            channels(&program(&copy)),
            (None, crate::action::MigrationMemory::Copy)
        );
        let three = format!("{copy}[policy]\nsave_channels = 3\n");
        assert_eq!(channels(&program(&three)).0, Some(3));
        let shown = program(&three)
            .steps
            .iter()
            .find(|s| s.id == "vm:db:pause")
            .unwrap()
            .actions[1]
            .describe();
        assert!(shown.contains(r#""multifd-channels":3"#), "{shown}");
        assert!(shown.contains("on QEMU >= 9.1: "), "{shown}");
        for bad in ["0", "256", "-1"] {
            let text = format!("{copy}[policy]\nsave_channels = {bad}\n");
            let report = crate::check::check("t.toml", text.as_bytes())
                .valid()
                .err()
                .unwrap_or_else(|| panic!("save_channels = {bad} accepted"));
            let rendered = report.render(false, 100);
            assert!(rendered.contains("out-of-range"), "{rendered}");
            assert!(rendered.contains("between 1 and 255"), "{rendered}");
        }
    }

    #[test]
    fn only_steps_before_kexec_have_rollbacks() {
        let p = program(&shared());
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

    #[test]
    fn the_isolate_keeps_the_guests_and_apps_units_and_undoes_that() {
        let text = format!(
            "{}unit = \"qemu@db.service\"\n[[app]]\nname = \"spdk\"\nsystemd = \"spdk_tgt.service\"\n\
             [policy]\nisolate = \"rescue.target\"\n",
            shared()
        );
        let p = program(&text);
        let drop_in = |unit: &str| {
            std::path::PathBuf::from(format!(
                "/run/systemd/system/{unit}.d/kup-keep-on-isolate.conf"
            ))
        };
        let argv = |a: &Action| match a {
            Action::Exec { argv, .. } => argv.join(" "),
            other => panic!("not an exec: {other:?}"),
        };
        let isolate = p.steps.iter().find(|s| s.id == "isolate").unwrap();
        for (i, unit) in ["qemu@db.service", "spdk_tgt.service"].iter().enumerate() {
            let Action::WriteFile { path, contents } = &isolate.actions[i] else {
                panic!("{:?}", isolate.actions[i]);
            };
            assert_eq!(*path, drop_in(unit));
            // A [Unit] key: in [Service] systemd ignores it.
            assert!(
                contents.contains("[Unit]\nIgnoreOnIsolate=yes\n"),
                "{contents}"
            );
        }
        assert_eq!(argv(&isolate.actions[2]), "systemctl daemon-reload");
        assert_eq!(argv(&isolate.actions[3]), "systemctl isolate rescue.target");
        assert_eq!(isolate.actions.len(), 4);
        // Undone: the default target back, then the drop-ins gone and systemd told.
        assert_eq!(
            argv(&isolate.rollback[0]),
            "systemctl isolate default.target"
        );
        assert_eq!(
            isolate.rollback[1..3],
            [
                Action::RemoveFile {
                    path: drop_in("qemu@db.service")
                },
                Action::RemoveFile {
                    path: drop_in("spdk_tgt.service")
                },
            ]
        );
        assert_eq!(argv(&isolate.rollback[3]), "systemctl daemon-reload");
        // After the kexec (a rehearsal keeps /run), verify removes them last, once everything else passed.
        let verify = p.steps.iter().find(|s| s.id == "verify").unwrap();
        assert_eq!(
            verify.actions[verify.actions.len() - 3..],
            isolate.rollback[1..]
        );
        // Without `policy.isolate` nothing is written or removed.
        let plain = program(&format!("{}unit = \"qemu@db.service\"\n", shared()));
        assert!(
            plain
                .steps
                .iter()
                .flat_map(|s| &s.actions)
                .all(|a| !matches!(a, Action::WriteFile { .. }))
        );
        let verify = plain.steps.iter().find(|s| s.id == "verify").unwrap();
        assert!(
            verify
                .actions
                .iter()
                .all(|a| !matches!(a, Action::Exec { .. }))
        );
    }
}
