//! The libvirt, systemd, CRIU, hook and PCI drivers, as compiled from plans and performed by the real host on this
//! machine. systemd is not PID 1 here and CRIU 3.17 cannot run on its 6.18 kernel (see DESIGN.md), so here the tests
//! pin the exact argv and what an operator reads when a tool is missing or fails; their end-to-end behaviour is
//! tested inside the lab guest, which boots systemd and has CRIU. libvirt's end to end test, against a libvirtd of
//! its own, is tests/libvirt_vms.rs.

mod support;

use kup::action::Action;
use kup::graph::Program;
use kup::host::{Host, RealHost, RealHostAt, sysfs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use support::plans::{program, step};
use support::sysfs::FakeSysfs;

fn argvs(actions: &[Action]) -> Vec<Vec<String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Exec { argv, .. }
            | Action::CheckOutput { argv, .. }
            | Action::Criu { argv, .. } => Some(argv.clone()),
            _ => None,
        })
        .collect()
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_owned()).collect()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

const KERNEL: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n";

// --- libvirt ---------------------------------------------------------------------------------------------------

const LIBVIRT: &str =
    "[[vm]]\nname = \"web\"\nlibvirt = \"web-dom\"\nstate = \"/var/lib/kup/state/web\"\n";

#[test]
fn libvirt_saves_and_restores_with_virsh_bypassing_the_cache() {
    let p = program(&format!("{KERNEL}{LIBVIRT}"));
    let dir = "/var/lib/kup/state/web";
    assert_eq!(
        argvs(&step(&p, "vm:web:save").actions),
        [words(&[
            "virsh",
            "save",
            "--bypass-cache",
            "web-dom",
            &format!("{dir}/libvirt.save.partial")
        ])]
    );
    assert!(matches!(step(&p, "vm:web:save").actions.last(),
        Some(Action::CommitFile { from, to }) if from == Path::new(&format!("{dir}/libvirt.save.partial"))
            && to == Path::new(&format!("{dir}/libvirt.save"))));
    assert_eq!(
        argvs(&step(&p, "vm:web:restore").actions),
        [
            words(&[
                "virsh",
                "restore",
                "--bypass-cache",
                "--paused",
                &format!("{dir}/libvirt.save")
            ]),
            words(&["virsh", "domstate", "web-dom"]),
        ]
    );
    assert_eq!(
        argvs(&step(&p, "vm:web:resume").actions),
        [
            words(&["virsh", "resume", "web-dom"]),
            words(&["virsh", "domstate", "web-dom"])
        ]
    );
    let expects: Vec<&Vec<String>> = step(&p, "vm:web:restore")
        .actions
        .iter()
        .chain(&step(&p, "vm:web:resume").actions)
        .filter_map(|a| match a {
            Action::CheckOutput { expect, .. } => Some(expect),
            _ => None,
        })
        .collect();
    assert_eq!(expects, [&words(&["paused"]), &words(&["running"])]);
    // Every virsh call has a limit: a hung libvirtd must not hang the update.
    for s in &p.steps {
        for a in s.actions.iter().chain(&s.rollback) {
            if let Action::Exec { timeout_ms, .. } | Action::CheckOutput { timeout_ms, .. } = a {
                assert!(
                    *timeout_ms > 0 && *timeout_ms <= 600_000,
                    "{}",
                    a.describe()
                );
            }
        }
    }
}

/// `libvirt_uri` goes before the subcommand of every virsh call, the rollback's too.
#[test]
fn libvirt_uri_is_passed_to_every_virsh_call() {
    let uri = "qemu+unix:///system?socket=/srv/libvirt-sock";
    let p = program(&format!("{KERNEL}{LIBVIRT}libvirt_uri = \"{uri}\"\n"));
    let mut seen = 0;
    for s in &p.steps {
        for argv in argvs(&s.actions).iter().chain(&argvs(&s.rollback)) {
            if argv[0] == "virsh" {
                assert_eq!(argv[1..3], words(&["-c", uri]), "{argv:?}");
                seen += 1;
            }
        }
    }
    // preflight, save + its rollback (restore, domstate), restore (2), resume (2), verify.
    assert_eq!(seen, 9);
    assert_eq!(
        argvs(&step(&p, "vm:web:save").actions)[0],
        words(&[
            "virsh",
            "-c",
            uri,
            "save",
            "--bypass-cache",
            "web-dom",
            "/var/lib/kup/state/web/libvirt.save.partial"
        ])
    );
}

#[test]
fn missing_virsh_is_named() {
    let p = program(&format!("{KERNEL}{LIBVIRT}"));
    let check = step(&p, "preflight")
        .actions
        .iter()
        .find(|a| matches!(a, Action::CheckOutput { .. }))
        .unwrap()
        .clone();
    let e = RealHost.perform(&[check]).unwrap_err();
    if on_path("virsh") {
        // A host with libvirt but without this domain.
        assert!(
            e.message.contains("virsh domstate web-dom"),
            "{}",
            e.message
        );
    } else {
        assert!(
            e.message.contains("`virsh` is not installed"),
            "{}",
            e.message
        );
    }
}

/// A stand-in for virsh (the same action with argv[0] replaced) that reports a state: a domain that is not in the
/// expected one fails with what virsh said.
#[test]
fn a_domain_in_the_wrong_state_fails_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("virsh");
    std::fs::write(&fake, "#!/bin/sh\necho paused\necho\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = program(&format!("{KERNEL}{LIBVIRT}"));
    let mut check = step(&p, "vm:web:resume").actions[1].clone();
    if let Action::CheckOutput { argv, .. } = &mut check {
        argv[0] = fake.display().to_string();
    }
    let e = RealHost.perform(&[check]).unwrap_err();
    assert!(
        e.message
            .contains("printed \"paused\", expected \"running\""),
        "{}",
        e.message
    );
}

// --- systemd ---------------------------------------------------------------------------------------------------

const SYSTEMD: &str = "[[app]]\nname = \"spdk\"\nsystemd = \"spdk_tgt.service\"\n";

#[test]
fn systemd_apps_are_stopped_and_started_then_checked() {
    let p = program(&format!("{KERNEL}{SYSTEMD}"));
    assert_eq!(
        argvs(&step(&p, "app:spdk:save").actions),
        [
            words(&["systemctl", "stop", "spdk_tgt.service"]),
            words(&["systemctl", "is-active", "spdk_tgt.service"])
        ]
    );
    assert_eq!(
        argvs(&step(&p, "app:spdk:restore").actions),
        [
            words(&["systemctl", "start", "spdk_tgt.service"]),
            words(&["systemctl", "is-active", "spdk_tgt.service"])
        ]
    );
    assert_eq!(
        argvs(&step(&p, "app:spdk:save").rollback),
        argvs(&step(&p, "app:spdk:restore").actions)
    );
}

/// systemd is not PID 1 here: `systemctl stop` fails, and the failure carries systemctl's own explanation.
#[test]
fn systemctl_failures_carry_its_message() {
    let p = program(&format!("{KERNEL}{SYSTEMD}"));
    let e = RealHost
        .perform(&step(&p, "app:spdk:save").actions)
        .unwrap_err();
    assert_eq!(e.index, 0);
    if kup::host::machine::systemd_is_pid1() {
        assert!(e.message.contains("spdk_tgt.service"), "{}", e.message);
    } else if on_path("systemctl") {
        assert!(
            e.message
                .contains("`systemctl stop spdk_tgt.service` exited with status")
                && e.message.contains("systemd"),
            "{}",
            e.message
        );
    } else {
        assert!(e.message.contains("not installed"), "{}", e.message);
    }
}

// --- CRIU ------------------------------------------------------------------------------------------------------

#[test]
fn criu_dumps_and_restores_a_shell_job_by_pidfile() {
    let p = program(&format!(
        "{KERNEL}[[app]]\nname = \"fwd\"\ncriu = {{ pidfile = \"/run/fwd.pid\", images = \"/var/lib/kup/criu/fwd\" }}\n"
    ));
    assert_eq!(
        argvs(&step(&p, "app:fwd:save").actions),
        [words(&[
            "criu",
            "dump",
            "--tree",
            "{pid}",
            "--images-dir",
            "/var/lib/kup/criu/fwd",
            "--shell-job",
            "--log-file",
            "dump.log"
        ])]
    );
    assert_eq!(
        argvs(&step(&p, "app:fwd:restore").actions),
        [words(&[
            "criu",
            "restore",
            "--images-dir",
            "/var/lib/kup/criu/fwd",
            "--shell-job",
            "--restore-detached",
            "--pidfile",
            "/run/fwd.pid",
            "--log-file",
            "restore.log"
        ])]
    );
}

/// CRIU 3.17 fails `criu check` on this host's 6.18 kernel and is not installed here; what is tested is what kup
/// does around it: the PID comes from the pidfile of a real process, and a missing tool or pidfile is named.
#[test]
fn criu_errors_name_the_pidfile_or_the_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("app.pid");
    let images = tmp.path().join("images");
    let dump = |pidfile: &Path| Action::Criu {
        argv: words(&["criu", "dump", "--tree", "{pid}", "--images-dir"])
            .into_iter()
            .chain([images.display().to_string()])
            .collect(),
        pidfile: pidfile.to_owned(),
        timeout_ms: 10_000,
    };
    let e = RealHost.perform(&[dump(&pidfile)]).unwrap_err();
    assert!(e.message.contains("app.pid"), "{}", e.message);
    std::fs::write(&pidfile, "not a pid\n").unwrap();
    let e = RealHost.perform(&[dump(&pidfile)]).unwrap_err();
    assert!(e.message.contains("does not hold a PID"), "{}", e.message);

    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
    let e = RealHost.perform(&[dump(&pidfile)]);
    let _ = child.kill();
    let _ = child.wait();
    let e = e.unwrap_err();
    if on_path("criu") {
        // Installed but unable to dump on this kernel: the failure names the command with the real PID.
        assert!(
            e.message.contains(&format!("--tree {}", child.id())),
            "{}",
            e.message
        );
    } else {
        assert!(
            e.message.contains("`criu` is not installed"),
            "{}",
            e.message
        );
    }
}

// --- hooks -----------------------------------------------------------------------------------------------------

fn hook_plan(save: &[String], restore: &[String]) -> Program {
    let list = |a: &[String]| {
        a.iter()
            .map(|s| toml::Value::String(s.clone()).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    program(&format!(
        "{KERNEL}[[app]]\nname = \"agent\"\nsave = [{}]\nrestore = [{}]\n",
        list(save),
        list(restore)
    ))
}

/// Hooks are argv: a `$HOME` or a space in an argument reaches the program as written, with no shell between.
#[test]
fn hooks_run_as_argv_without_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join("a b $HOME;`x`");
    let save = words(&["touch"])
        .into_iter()
        .chain([odd.display().to_string()])
        .collect::<Vec<_>>();
    let restore = words(&["rm"])
        .into_iter()
        .chain([odd.display().to_string()])
        .collect::<Vec<_>>();
    let p = hook_plan(&save, &restore);
    RealHost
        .perform(&step(&p, "app:agent:save").actions)
        .unwrap();
    assert!(
        odd.exists(),
        "the file with the literal name was not created"
    );
    RealHost
        .perform(&step(&p, "app:agent:restore").actions)
        .unwrap();
    assert!(!odd.exists());
}

#[test]
fn a_failing_or_hanging_hook_fails_its_step() {
    let p = hook_plan(
        &words(&["sh", "-c", "echo cannot checkpoint >&2; exit 4"]),
        &words(&["sleep", "30"]),
    );
    let e = RealHost
        .perform(&step(&p, "app:agent:save").actions)
        .unwrap_err();
    assert!(
        e.message.contains("status 4") && e.message.contains("cannot checkpoint"),
        "{}",
        e.message
    );
    let mut hang = step(&p, "app:agent:restore").actions[0].clone();
    if let Action::Exec { timeout_ms, .. } = &mut hang {
        *timeout_ms = 300;
    }
    let started = Instant::now();
    let e = RealHost.perform(&[hang]).unwrap_err();
    assert!(
        e.message.contains("did not finish within 300 ms"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let missing = hook_plan(&words(&["/nonexistent/agent", "save"]), &words(&["true"]));
    let e = RealHost
        .perform(&step(&missing, "app:agent:save").actions)
        .unwrap_err();
    assert!(e.message.contains("is not installed"), "{}", e.message);
}

// --- PCI -------------------------------------------------------------------------------------------------------

const PCI: &str = "[[pci]]\naddress = \"0000:3B:00.0\"\n";

#[test]
fn pci_devices_are_checked_in_preflight_before_the_kexec_and_in_verify() {
    let p = program(&format!("{KERNEL}{PCI}"));
    let expected = Action::CheckPci {
        address: "0000:3b:00.0".into(),
        driver: "vfio-pci".into(),
        iommu: true,
    };
    for id in ["preflight", "pci:0000:3b:00.0:check", "verify"] {
        assert!(step(&p, id).actions.contains(&expected), "{id}");
    }
    let only = |id: &str| -> Vec<Action> {
        step(&p, id)
            .actions
            .iter()
            .filter(|a| matches!(a, Action::CheckPci { .. }))
            .cloned()
            .collect()
    };

    let good = FakeSysfs::with(&[("0000:3b:00.0", Some("vfio-pci"), Some(42))]);
    let host = RealHostAt::new(good.root());
    let out = host.perform(&only("preflight")).unwrap();
    let kup::action::ActionOutput::Pci(device) = &out[0] else {
        panic!("not a PCI device: {:?}", out[0]);
    };
    assert_eq!(device.iommu_group.as_deref(), Some("42"));
    assert_eq!(device.id, "8086:0a54");
    host.perform(&only("verify")).unwrap();

    let rebound = FakeSysfs::with(&[("0000:3b:00.0", Some("nvme"), Some(42))]);
    let e = RealHostAt::new(rebound.root())
        .perform(&only("pci:0000:3b:00.0:check"))
        .unwrap_err();
    assert!(
        e.message
            .contains("bound to \"nvme\", expected \"vfio-pci\""),
        "{}",
        e.message
    );

    let no_iommu = FakeSysfs::with(&[("0000:3b:00.0", Some("vfio-pci"), None)]);
    let e = RealHostAt::new(no_iommu.root())
        .perform(&only("preflight"))
        .unwrap_err();
    assert!(e.message.contains("the IOMMU is off"), "{}", e.message);

    let absent = FakeSysfs::with(&[]);
    let e = RealHostAt::new(absent.root())
        .perform(&only("preflight"))
        .unwrap_err();
    assert!(e.message.contains("does not exist"), "{}", e.message);
}

#[test]
fn a_vfio_device_in_an_iommu_group_passes() {
    let fake = FakeSysfs::new();
    fake.device("0000:3b:00.0", Some("vfio-pci"), Some(12));
    let out = sysfs::check_pci(&fake.root(), "0000:3b:00.0", "vfio-pci", true).unwrap();
    assert_eq!(out.iommu_group.as_deref(), Some("12"));
    assert_eq!(out.id, "8086:0a54");
}

/// `check_pci` of `address` for vfio-pci, with VFIO, fails saying `says`.
#[track_caller]
fn assert_vfio_check_says(fake: &FakeSysfs, address: &str, says: &str) {
    let e = sysfs::check_pci(&fake.root(), address, "vfio-pci", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains(says), "{e}");
}

#[test]
fn wrong_or_missing_driver_and_missing_device_are_named() {
    let fake = FakeSysfs::new();
    fake.device("0000:3b:00.0", Some("nvme"), Some(12));
    fake.device("0000:3c:00.0", None, Some(13));
    assert_vfio_check_says(
        &fake,
        "0000:3b:00.0",
        "bound to \"nvme\", expected \"vfio-pci\"",
    );
    assert_vfio_check_says(&fake, "0000:3c:00.0", "bound to no driver");
    assert_vfio_check_says(&fake, "0000:99:00.0", "does not exist");
    assert_vfio_check_says(&fake, "../../etc", "not a PCI address");
}

#[test]
fn iommu_off_is_told_apart_from_a_device_without_a_group() {
    let fake = FakeSysfs::new();
    fake.device("0000:3b:00.0", Some("vfio-pci"), None);
    assert_vfio_check_says(&fake, "0000:3b:00.0", "the IOMMU is off");
    // Without VFIO no group is needed.
    sysfs::check_pci(&fake.root(), "0000:3b:00.0", "vfio-pci", false).unwrap();
    fake.device("0000:3c:00.0", Some("vfio-pci"), Some(4));
    assert_vfio_check_says(
        &fake,
        "0000:3b:00.0",
        "in no IOMMU group although the IOMMU is on",
    );
}
