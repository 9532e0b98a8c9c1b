//! The lab's own live patch works in a guest of the lab kernel: `lab/run-livepatch` boots a busybox guest that
//! loads `kup_lab_livepatch.ko`, sees the transition finish and ` kup-livepatch=1` on `/proc/cmdline`, disables
//! the patch, removes the module and sees the marker gone (lab/livepatch/guest-init lists its console protocol).
//!
//! It also pins a fact kup's design depends on: the kernel loads the copy whose `vermagic` names another release
//! (with `CONFIG_MODVERSIONS` it ignores the release part), so the release check is kup's to make.
//!
//! And kup's own live patch plans in a guest (`lab/run-livepatch-kup`): apply, status, remove, and the refusal of
//! the wrong-release copy at preflight.
//!
//! Needs `lab/setup` (as `tests/lab_boot.rs` does); without it this test fails and says so.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Runs `lab/SCRIPT` (a live patch guest) in the lab and returns the lab kernel's release and the guest console;
/// fails, showing the console, unless the script succeeded.
fn run_guest(script: &str) -> (String, String) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("KUP_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/lab"));
    assert!(
        dir.join("ready").is_file(),
        "the lab is not set up in {}: run `lab/setup` (as root), then run the tests again",
        dir.display()
    );
    let release = fs::read_to_string(dir.join("kernel/version"))
        .unwrap()
        .trim()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(repo.join("lab").join(script))
        .arg(tmp.path())
        .env("KUP_LAB_DIR", &dir)
        .output()
        .unwrap();
    let console = fs::read_to_string(tmp.path().join("console.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "lab/{script} failed ({}):\n{}\nconsole:\n{console}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (release, console)
}

/// Where the guest printed the line starting with `wanted`; a panic showing the console when it did not.
fn position_of(lines: &[&str], wanted: &str, console: &str) -> usize {
    lines
        .iter()
        .position(|line| line.starts_with(wanted))
        .unwrap_or_else(|| panic!("no {wanted:?} in the guest's lines:\n{console}"))
}

/// The guest printed lines starting with each of `order`, in that order.
fn assert_in_order(lines: &[&str], order: &[String], console: &str) {
    let positions: Vec<usize> = order
        .iter()
        .map(|m| position_of(lines, m, console))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?} at {positions:?}:\n{console}"
    );
}

#[test]
fn the_lab_live_patch_marks_proc_cmdline_until_it_is_disabled_and_removed() {
    let (release, console) = run_guest("run-livepatch");
    let lines: Vec<&str> = console
        .lines()
        .filter_map(|line| line.split_once("LAB-LIVEPATCH: ").map(|(_, rest)| rest))
        .collect();
    let position = |wanted: &str| position_of(&lines, wanted, &console);
    // In this order: loaded, patched, marker; disabled, removed, marker gone; the wrong-release copy loads.
    let order = [
        format!("init on {release}"),
        "cmdline before: console=ttyS0 panic=-1".to_string(),
        "insmod rc=0".to_string(),
        "transition 0 after".to_string(),
        "cmdline patched: console=ttyS0 panic=-1 kup-livepatch=1".to_string(),
        "marker present".to_string(),
        "disable: transition done".to_string(),
        "rmmod rc=0".to_string(),
        "cmdline after: console=ttyS0 panic=-1".to_string(),
        "marker gone".to_string(),
        "wrong-release insmod rc=0".to_string(),
        "PASS".to_string(),
    ];
    assert_in_order(&lines, &order, &console);
    assert!(
        lines[position("transition 0 after")].ends_with("enabled=1"),
        "{console}"
    );
    assert_eq!(
        lines[position("cmdline after:")],
        "cmdline after: console=ttyS0 panic=-1",
        "{console}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("FAIL")), "{console}");
    // The kernel's own words: a live patch taints, and the patch ran both transitions.
    for marker in [
        "kup_lab_livepatch: tainting kernel with TAINT_LIVEPATCH",
        "livepatch: 'kup_lab_livepatch': patching complete",
        "livepatch: 'kup_lab_livepatch': unpatching complete",
    ] {
        assert!(
            console.contains(marker),
            "console lacks {marker:?}:\n{console}"
        );
    }
}

/// One `LAB-LIVEPATCH-KUP:` line's text after the prefix, for each such line of `console`.
fn kup_lines(console: &str) -> Vec<&str> {
    console
        .lines()
        .filter_map(|line| line.split_once("LAB-LIVEPATCH-KUP: ").map(|(_, rest)| rest))
        .collect()
}

/// kup itself in a lab guest (`lab/run-livepatch-kup`, protocol in lab/livepatch/kup-guest-init): `kup plan apply
/// --yes` of a `[livepatch]` plan loads the lab's patch (marker on /proc/cmdline, status completed with every step
/// done), a plan with `action = "remove"` takes it out again (marker gone), and the copy whose vermagic names
/// another release is refused at preflight with both releases named: exit 5, nothing loaded.
#[test]
fn kup_applies_removes_and_refuses_live_patches_in_a_lab_guest() {
    let (release, console) = run_guest("run-livepatch-kup");
    let lines = kup_lines(&console);
    let position = |wanted: &str| position_of(&lines, wanted, &console);
    let order = [
        format!("init on {release}"),
        "cmdline before: console=ttyS0 panic=-1".to_string(),
        "apply rc=0".to_string(),
        "loaded yes".to_string(),
        "transition 0 enabled 1".to_string(),
        "marker present".to_string(),
        "status-apply ".to_string(),
        "remove rc=0".to_string(),
        "cmdline after: console=ttyS0 panic=-1".to_string(),
        "marker gone".to_string(),
        "status-remove ".to_string(),
        "wrong-release rc=5".to_string(),
        "wrong-release nothing loaded".to_string(),
        "PASS".to_string(),
    ];
    assert_in_order(&lines, &order, &console);
    assert!(!lines.iter().any(|l| l.starts_with("FAIL")), "{console}");

    let status = |prefix: &str| -> serde_json::Value {
        let line = lines[position(prefix)].strip_prefix(prefix).unwrap();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{prefix}: {e}: {line}"))
    };
    let applied = status("status-apply ");
    assert_eq!(applied["state"], "completed", "{applied:#}");
    let ids: Vec<&str> = applied["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "preflight",
            "livepatch:kup_lab_livepatch:load",
            "livepatch:kup_lab_livepatch:transition",
            "verify"
        ]
    );
    assert!(
        applied["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "done" && s["phase"] == "before"),
        "{applied:#}"
    );
    assert_eq!(
        applied["livepatch"],
        serde_json::json!({"name": "kup_lab_livepatch", "loaded": true, "enabled": true, "transition": false})
    );
    let removed = status("status-remove ");
    assert_eq!(removed["state"], "completed", "{removed:#}");
    assert_eq!(
        removed["steps"][1]["id"],
        "livepatch:kup_lab_livepatch:remove"
    );
    assert_eq!(removed["livepatch"]["loaded"], false, "{removed:#}");

    // The refusal names both releases, and the kernel saw one load and one unload only.
    let built_for = console
        .split_once("was built for kernel ")
        .and_then(|(_, rest)| rest.split_once(" (its vermagic), but the running kernel is "))
        .unwrap_or_else(|| panic!("no refusal naming two releases:\n{console}"));
    assert_ne!(built_for.0, release, "{console}");
    assert!(built_for.1.starts_with(&release), "{console}");
    // dmesg as the guest printed it at the end: one patching and one unpatching transition in all.
    let dmesg = console
        .split_once("LAB-LIVEPATCH-KUP: dmesg begin")
        .and_then(|(_, rest)| rest.split_once("LAB-LIVEPATCH-KUP: dmesg end"))
        .map(|(dmesg, _)| dmesg)
        .unwrap_or_else(|| panic!("no dmesg in the console:\n{console}"));
    for marker in [
        "livepatch: 'kup_lab_livepatch': patching complete",
        "livepatch: 'kup_lab_livepatch': unpatching complete",
    ] {
        assert_eq!(dmesg.matches(marker).count(), 1, "{marker}:\n{dmesg}");
    }
}
