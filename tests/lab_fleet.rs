//! A fleet rollout with Ansible, proven on two real lab hosts that kexec. `lab/scenario/run-fleet` boots two systemd
//! lab guests with sshd (`lab/mkrootfs --sshd`), each reachable on a loopback port that QEMU's user networking
//! forwards, and runs `contrib/ansible/rolling-update.yml` from the lab's Ansible venv against them four times on
//! the same two hosts: in check mode (nothing may change), with a failing step in the first host's plan (it rolls
//! back, the rollout stops, the second host is never touched), for real (both hosts kexec from 6.1 into the new
//! kernel, one after the other), and once more (both are current: nothing happens). The role installs the static
//! musl kup built from this tree, so the hosts run the code under test.
//!
//! Needs `lab/setup` (and root for the root file system's debootstrap and PyPI for the venv, both cached under
//! `target/lab/`). A lab that is not set up fails these tests: a silently skipped lab proves nothing.

use serde_json::Value;
use std::process::Command;

#[path = "support/lab.rs"]
mod lab;
use lab::{Lab, Run, assert_succeeded, console_time, read_lossy};

const HOSTS: [&str; 2] = ["lab-host-1", "lab-host-2"];

/// The lab's Ansible venv's bin directory (`lab/ansible-venv` creates it when missing).
fn ansible_bin(lab: &Lab) -> std::path::PathBuf {
    let output = lab
        .script("ansible-venv")
        .output()
        .expect("lab/ansible-venv");
    assert_succeeded(&output, "lab/ansible-venv");
    std::path::PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// A phase's outputs (`OUTDIR/PHASE/`), with ansible-playbook's log printed if an assertion fails.
struct Phase {
    dir: std::path::PathBuf,
    name: &'static str,
}

impl Drop for Phase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = read_lossy(&self.dir.join("ansible.log")).unwrap_or_default();
            eprintln!("--- ansible-playbook of phase {}:\n{log}", self.name);
        }
    }
}

impl Phase {
    fn text(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.join(path))
            .unwrap_or_else(|e| panic!("phase {}: no {path}: {e}", self.name))
    }

    fn rc(&self) -> i32 {
        self.text("rc").trim().parse().expect("rc")
    }

    /// What the script read over SSH from `host` after the phase (`HOST/NAME`), trimmed.
    fn host(&self, host: &str, name: &str) -> String {
        self.text(&format!("{host}/{name}")).trim().to_owned()
    }

    fn json(&self, path: &str) -> Value {
        let text = self.text(path);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON ({e}):\n{text}"))
    }

    /// The lines of ansible-playbook's output, in the update play (after the validation play, which runs on the
    /// controller for every host), that report a task's result on `host`; the recap at the end does not count.
    fn results_in_update_play(&self, host: &str) -> Vec<String> {
        let log = self.text("ansible.log");
        let play = log
            .find("PLAY [Update the kernels")
            .unwrap_or_else(|| panic!("phase {}: no update play in the output", self.name));
        let needle = format!("[{host}");
        log[play..]
            .lines()
            .filter(|line| line.contains(&needle) && !line.starts_with(host))
            .map(str::to_owned)
            .collect()
    }

    /// The applies in `host`'s journal root after the phase (its directories; not `lock` or `pending`).
    fn applies(&self, host: &str) -> usize {
        self.host(host, "journal.ls")
            .lines()
            .filter(|l| !["lock", "pending"].contains(l))
            .count()
    }
}

/// The ansible content checks that need no host: `ansible-playbook --syntax-check`, `ansible-lint` (production
/// profile, offline) and the kup_handover action's unit tests.
#[test]
fn ansible_content_passes_syntax_check_lint_and_its_unit_tests() {
    let lab = Lab::get();
    let bin = ansible_bin(&lab);
    let contrib = lab.repo.join("contrib/ansible");
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(bin.join(program))
            .args(args)
            .current_dir(&contrib)
            .env("ANSIBLE_HOME", lab.dir.join("ansible-home"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{text}",
            output.status
        );
        text
    };
    let syntax = run(
        "ansible-playbook",
        &["-i", "localhost,", "--syntax-check", "rolling-update.yml"],
    );
    assert!(syntax.contains("playbook: rolling-update.yml"), "{syntax}");
    let lint = run("ansible-lint", &["--offline", "--profile", "production"]);
    assert!(lint.contains("Passed"), "{lint}");
    let unit = run(
        "python",
        &["-m", "unittest", "discover", "-v", "-s", "tests"],
    );
    assert!(unit.contains("OK"), "{unit}");
    assert!(
        unit.contains("test_kup_killed_by_the_kexec_shutdown_is_not_an_end"),
        "{unit}"
    );
}

/// An invalid plan stops the rollout on the controller, with kup's diagnostics, before any host is contacted: the
/// inventory's host listens nowhere, and the play must not even try it.
#[test]
fn an_invalid_plan_stops_the_rollout_before_any_host_is_contacted() {
    let lab = Lab::get();
    let bin = ansible_bin(&lab);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("hv-1.toml");
    std::fs::write(
        &plan,
        "kup = 1\nname = \"typo\"\n\n[kernel]\nimage = \"/boot/vmlinuz-new\"\nversion = \"6.12.1\"\nsha256 = \"00\"\n\n[policy]\njournl = \"/var/lib/kup\"\n",
    )
    .unwrap();
    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let inventory = dir.path().join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "fleet:\n  hosts:\n    hv-1:\n      ansible_host: 127.0.0.1\n      ansible_port: {port}\n      kup_plan: {}\n      kup_controller_binary: {}\n",
            plan.display(),
            env!("CARGO_BIN_EXE_kup")
        ),
    )
    .unwrap();
    let output = Command::new(bin.join("ansible-playbook"))
        .arg("-i")
        .arg(&inventory)
        .arg(lab.repo.join("contrib/ansible/rolling-update.yml"))
        .env("ANSIBLE_HOME", dir.path().join(".ansible"))
        .env("ANSIBLE_ROLES_PATH", lab.repo.join("contrib/ansible/roles"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "an invalid plan must fail the play:\n{text}"
    );
    assert!(text.contains("is not a valid plan"), "{text}");
    assert!(
        text.contains(
            "line 10:1 error kup::plan::unknown-key: unknown key `journl` in `policy` (did you mean `journal`?)"
        ),
        "kup's diagnostic, with its place, code and hint:\n{text}"
    );
    assert!(
        !text.contains("UNREACHABLE"),
        "the host was contacted:\n{text}"
    );
    assert!(
        !text.contains("PLAY [Update the kernels"),
        "the update play started:\n{text}"
    );
}

/// Check mode, a failed first host, the real rolling update, then the same playbook again, on the same two lab hosts.
#[test]
fn a_rolling_update_with_ansible_kexecs_two_lab_hosts_one_after_the_other() {
    let lab = Lab::get();
    let old = lab.kernel_version();
    let new = lab.new_kernel_version();
    let out = lab.dir.join("runs/fleet");
    let started = std::time::Instant::now();
    let output = lab
        .script("scenario/run-fleet")
        .args(["--quiet", "--phases", "check,fail,update,rerun"])
        .arg(&out)
        .output()
        .expect("lab/scenario/run-fleet");
    eprintln!(
        "lab/scenario/run-fleet: {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        output.status
    );
    let runs: Vec<Run> = HOSTS.iter().map(|h| Run::at(&lab, &out.join(h))).collect();
    assert_succeeded(&output, "lab/scenario/run-fleet");
    let phase = |name: &'static str| Phase {
        dir: out.join(name),
        name,
    };

    // Every host booted twice: 6.1, then (the update's kexec) the new kernel; nothing rebooted it otherwise.
    let boots: Vec<Vec<(String, String)>> = runs
        .iter()
        .map(|run| run.boots_in("/var/lib/kup-lab/boots.log"))
        .collect();
    for (host, boots) in HOSTS.iter().zip(&boots) {
        let releases: Vec<&str> = boots.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(releases, [old.as_str(), new.as_str()], "{host}'s boots");
        assert_ne!(boots[0].0, boots[1].0, "{host}: the kexec made a new boot");
    }

    // Check mode: the dry run ran on both hosts and showed its actions; nothing changed.
    {
        let check = phase("check");
        assert_eq!(check.rc(), 0, "check mode succeeds");
        let log = check.text("ansible.log");
        for (host, boots) in HOSTS.iter().zip(&boots) {
            assert!(
                log.contains(&format!("ok: [{host}] => {{"))
                    && log.contains("\"kexec: sync, reboot\""),
                "{host}'s dry run shows the kexec step's actions"
            );
            assert_eq!(
                check.host(host, "boot_id"),
                boots[0].0,
                "{host} did not reboot"
            );
            assert_eq!(check.host(host, "release"), old);
            assert_eq!(
                check.host(host, "installed"),
                "",
                "{host}: neither kup nor the plan installed"
            );
            assert_eq!(
                check.host(host, "journal.ls"),
                "",
                "{host}: no journal root"
            );
            assert_eq!(
                check.host(host, "leftovers"),
                "",
                "{host}: the dry run's copies were removed"
            );
        }
        assert!(
            check
                .dir
                .join("results")
                .read_dir()
                .unwrap()
                .next()
                .is_none()
        );
    }

    // A failing step before the kexec on the first host: it rolls back, and the rollout stops there.
    {
        let fail = phase("fail");
        assert_ne!(fail.rc(), 0, "the rollout fails");
        let result = fail.json("results/lab-host-1.json");
        assert_eq!(result["state"], "rolled-back", "{result:#}");
        assert_eq!(result["from_release"], old.as_str());
        assert_eq!(result["to_release"], old.as_str(), "no kexec");
        let failed = result["failed_steps"].to_string();
        assert!(
            failed.contains("step:fails"),
            "the failing step is named: {failed}"
        );
        let log = fail.text("ansible.log");
        assert!(
            log.contains("kup plan rolled-back on lab-host-1") && log.contains("step:fails"),
            "the play prints the state and the failing step"
        );
        let status = fail.json("lab-host-1/status.json");
        assert_eq!(status["state"], "rolled-back");
        assert_eq!(fail.host("lab-host-1", "boot_id"), boots[0][0].0);
        assert_eq!(
            fail.applies("lab-host-1"),
            1,
            "one apply journaled on lab-host-1"
        );
        // The second host: no task ran on it, nothing was installed, its journal root holds no apply.
        assert_eq!(
            fail.results_in_update_play("lab-host-2"),
            Vec::<String>::new(),
            "tasks ran on lab-host-2"
        );
        assert!(!fail.dir.join("results/lab-host-2.json").exists());
        assert_eq!(
            fail.host("lab-host-2", "journal.ls"),
            "",
            "lab-host-2's journal root"
        );
        assert_eq!(fail.host("lab-host-2", "installed"), "");
        assert_eq!(fail.host("lab-host-2", "boot_id"), boots[1][0].0);
    }

    // The rolling update: both hosts kexec'd into the new kernel, one after the other.
    let update = phase("update");
    assert_eq!(update.rc(), 0, "the rolling update succeeds");
    let report = update.json("report.json");
    assert_eq!(report["order"], serde_json::json!(HOSTS), "{report:#}");
    for (host, boots) in HOSTS.iter().zip(&boots) {
        let result = &report["hosts"][host];
        assert_eq!(result["state"], "completed", "{host}: {result:#}");
        assert_eq!(result["from_release"], old.as_str());
        assert_eq!(result["to_release"], new.as_str());
        let gap = result["kexec_gap_s"].as_f64();
        assert!(
            gap.is_some_and(|g| (0.0..120.0).contains(&g)),
            "{host}'s kexec gap: {result:#}"
        );
        assert_eq!(update.host(host, "release"), new);
        assert_eq!(update.host(host, "boot_id"), boots[1].0);
        let status = update.json(&format!("{host}/status.json"));
        assert_eq!(status["state"], "completed", "{host}: {status:#}");
        assert_eq!(status["kexec"]["from_release"], old.as_str());
        assert_eq!(status["kexec"]["to_release"], new.as_str());
        assert!(
            status["kexec"]["cmdline"]
                .as_str()
                .is_some_and(|c| c.contains(&format!("kup.fleet={host}")))
        );
        assert_eq!(
            update.host(host, "installed"),
            "/usr/local/bin/kup\n/etc/kup/plan.toml"
        );
    }
    // The journal roots: lab-host-1 holds the rolled-back apply and the completed one, lab-host-2 only its update.
    assert_eq!(
        (update.applies("lab-host-1"), update.applies("lab-host-2")),
        (2, 1)
    );
    // Each host's after-kexec step ran once, on its new boot.
    for (run, boots) in runs.iter().zip(&boots) {
        assert_eq!(
            run.must_lines("/var/lib/kup-lab/after-kexec.log"),
            [boots[1].0.clone()]
        );
    }

    // One after the other: lab-host-2's apply started after lab-host-1's had completed (the journals' times, from
    // each guest's clock, which QEMU's RTC set from this machine's), and its kexec came later on the consoles (both
    // QEMUs started together, their consoles are stamped from that start).
    let h1 = &report["hosts"]["lab-host-1"];
    let h2 = &report["hosts"]["lab-host-2"];
    let (finished1, started2) = (
        h1["finished"].as_str().unwrap(),
        h2["started"].as_str().unwrap(),
    );
    assert!(
        started2 > finished1,
        "lab-host-2 started {started2}, lab-host-1 finished {finished1}"
    );
    let kexec = |run: &Run| console_time(run, "kexec_core: Starting new kernel");
    assert!(
        kexec(&runs[0]) + 5.0 < kexec(&runs[1]),
        "lab-host-1 kexec'd first"
    );
    for run in &runs {
        let console = read_lossy(&run.out.join("console.log")).unwrap();
        assert_eq!(
            console.matches("kexec_core: Starting new kernel").count(),
            1,
            "{}: exactly one kexec",
            run.out.display()
        );
    }

    // The same playbook again: both hosts run the plan's release, so nothing is applied and nothing reboots.
    let rerun = phase("rerun");
    assert_eq!(rerun.rc(), 0, "the second run succeeds");
    let report = rerun.json("report.json");
    assert_eq!(
        report["order"],
        serde_json::json!([]),
        "no host updated: {report:#}"
    );
    for (host, boots) in HOSTS.iter().zip(&boots) {
        let result = &report["hosts"][host];
        assert_eq!(result["state"], "current", "{host}: {result:#}");
        assert_eq!(result["from_release"], new.as_str());
        assert_eq!(
            rerun.host(host, "boot_id"),
            boots[1].0,
            "{host} did not reboot"
        );
        // Nothing changed on the host (the result file written on the controller, `[HOST -> localhost]`, aside).
        let changed: Vec<String> = rerun
            .results_in_update_play(host)
            .into_iter()
            .filter(|l| l.starts_with("changed:") && !l.contains(" -> localhost]"))
            .collect();
        assert_eq!(
            changed,
            Vec::<String>::new(),
            "{host}: tasks changed something"
        );
    }
    assert_eq!(
        (rerun.applies("lab-host-1"), rerun.applies("lab-host-2")),
        (2, 1),
        "no new apply"
    );
}
