//! What kup asks of systemd: the `kup-resume.service` unit that finishes an update on the new kernel, and the
//! transient unit an apply re-runs itself in so that `policy.isolate` does not stop it.

use super::HostError;
use super::journal_files::{sync_dir, write_atomic_mode};
use std::path::Path;

/// Where the resume unit goes, and the target that pulls it in at boot.
const UNIT_DIR: &str = "/etc/systemd/system";
const UNIT_NAME: &str = "kup-resume.service";
const UNIT_WANTS: &str = "multi-user.target.wants";
/// Set in the environment of the transient unit apply re-runs itself in, so it does not do so again.
pub(crate) const IN_UNIT_ENV: &str = "KUP_IN_UNIT";

/// The unit that runs `kup plan resume` on the new kernel while `pending` exists; removed when the plan completes.
///
/// It starts as early as resume's inputs allow rather than after `basic.target` like a default service: the guests
/// are down until it runs. What it waits for, and why, is in the unit's own comments, for the operator who reads it.
pub(crate) fn resume_unit(exe: &Path, root: &Path, pending: &Path) -> String {
    format!(
        "# Written by kup before a kexec; removed when the plan completes. Drop-ins in kup-resume.service.d/ are\n\
         # kept: add there what this host's guests need that kup cannot know (After=network-online.target when a\n\
         # guest's tap joins a bridge the network configuration creates).\n\
         [Unit]\n\
         Description=kup: finish the live kernel update from its journal\n\
         ConditionPathExists={pending}\n\
         # Early: the guests are down until resume runs, and a default service waits for basic.target.\n\
         DefaultDependencies=no\n\
         # The journal: without it resume can do nothing.\n\
         RequiresMountsFor={root}\n\
         # The state and shared RAM files: every local file system, ordered but not required, so that a file system\n\
         # that fails to mount fails only its guests' restores, not the whole resume (systemd 256's WantsMountsFor=\n\
         # would name just theirs). A nofail mount is not part of local-fs.target: give it\n\
         # x-systemd.before=kup-resume.service. local-fs.target also orders this after the remount of / read-write.\n\
         After=local-fs.target\n\
         # The kernel modules resume and QEMU need: modules-load.d (vfio-pci, tun, bridges a host loads there) and\n\
         # udev's coldplug, which loads the drivers of the hardware present (kvm_intel/kvm_amd: /dev/kvm) without\n\
         # waiting for them; binding a device to vfio-pci is resume's own step (modprobe, driver_override).\n\
         After=systemd-modules-load.service systemd-udev-trigger.service systemd-journald.socket\n\
         # libvirt's daemon, for `virsh restore`: its sockets come after sysinit.target, so on a libvirt host\n\
         # this waits for that much of the boot. An After= on a unit the boot does not start orders nothing.\n\
         After=libvirtd.socket libvirtd.service virtqemud.socket virtqemud.service\n\
         # Not Before=sysinit.target: a restore may start a unit (`systemctl start qemu@db-1.service`, an app's\n\
         # unit) that waits for sysinit.target and basic.target like any default service, and would then wait\n\
         # for resume while resume waits for it. Ordering the rest of the boot after resume would not start it\n\
         # sooner either: only the After= lines decide when it starts.\n\
         # Stopped by a shutdown like any service (DefaultDependencies=no drops that too).\n\
         Conflicts=shutdown.target\n\
         Before=shutdown.target\n\
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
        pending = pending.display(),
        exe = exe.display(),
        root = root.display(),
    )
}

/// This program's own path, for units that run it again.
pub(crate) fn own_exe() -> Result<std::path::PathBuf, HostError> {
    std::env::current_exe().map_err(|e| HostError::io("cannot find kup's own path", e))
}

/// Writes and enables [`resume_unit`] (0644, like every unit file: systemd warns about world-inaccessible units).
pub(crate) fn install_resume_unit(root: &Path, pending: &Path) -> Result<(), HostError> {
    let exe = own_exe()?;
    let unit = Path::new(UNIT_DIR).join(UNIT_NAME);
    write_atomic_mode(&unit, resume_unit(&exe, root, pending).as_bytes(), 0o644)
        .map_err(|e| HostError::io(format!("cannot write {}", unit.display()), e))?;
    let wants = Path::new(UNIT_DIR).join(UNIT_WANTS);
    std::fs::create_dir_all(&wants)
        .map_err(|e| HostError::io(format!("cannot create {}", wants.display()), e))?;
    let link = wants.join(UNIT_NAME);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&unit, &link)
        .map_err(|e| HostError::io(format!("cannot enable {UNIT_NAME}"), e))?;
    sync_dir(&wants).map_err(|e| HostError::io(format!("cannot fsync {}", wants.display()), e))
}

/// Removes the resume unit, if it is there.
pub(crate) fn remove_resume_unit() {
    let _ = std::fs::remove_file(Path::new(UNIT_DIR).join(UNIT_WANTS).join(UNIT_NAME));
    let _ = std::fs::remove_file(Path::new(UNIT_DIR).join(UNIT_NAME));
}

/// Whether this process runs in the transient unit of [`transient_unit_argv`].
pub(crate) fn in_transient_unit() -> bool {
    std::env::var_os(IN_UNIT_ENV).is_some()
}

/// The argv that re-runs kup with `args` in a transient unit that survives the isolate.
pub(crate) fn transient_unit_argv(exe: &Path, args: &[String]) -> Vec<String> {
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

/// Runs `argv` (a [`transient_unit_argv`]) with this terminal, and returns its exit code (`None`: killed).
pub(crate) fn run_attached(argv: &[String]) -> Result<Option<i32>, HostError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HostError::check("empty command"))?;
    std::process::Command::new(program)
        .args(args)
        .status()
        .map(|s| s.code())
        .map_err(|e| HostError::io(format!("cannot run {program}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resume unit of `/usr/local/bin/kup` for the journal root `root`, with its pending mark in it.
    fn unit_for(root: &str) -> String {
        let root = Path::new(root);
        resume_unit(Path::new("/usr/local/bin/kup"), root, &root.join("pending"))
    }

    #[test]
    fn the_resume_unit_runs_resume_when_an_apply_is_pending_and_survives_isolate() {
        let unit = unit_for("/var/lib/kup");
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
    fn the_resume_unit_starts_early_and_waits_only_for_what_resume_needs() {
        let unit = unit_for("/srv/kup");
        let lines: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.contains(&"DefaultDependencies=no"));
        assert!(lines.contains(&"RequiresMountsFor=/srv/kup"));
        let after: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("After="))
            .flat_map(|l| l.split(' '))
            .collect();
        assert_eq!(
            after,
            [
                "local-fs.target",
                "systemd-modules-load.service",
                "systemd-udev-trigger.service",
                "systemd-journald.socket",
                "libvirtd.socket",
                "libvirtd.service",
                "virtqemud.socket",
                "virtqemud.service"
            ]
        );
        // Not before sysinit.target (a restore's `systemctl start` would deadlock), still stopped by a shutdown.
        let before: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("Before="))
            .collect();
        assert_eq!(before, ["shutdown.target"]);
        assert!(lines.contains(&"Conflicts=shutdown.target"));
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
