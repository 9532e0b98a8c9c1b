//! The lab's own live patch works in a guest of the lab kernel: `lab/run-livepatch` boots a busybox guest that
//! loads `kup_lab_livepatch.ko`, sees the transition finish and ` kup-livepatch=1` on `/proc/cmdline`, disables
//! the patch, removes the module and sees the marker gone (lab/livepatch/guest-init lists its console protocol).
//!
//! It also pins a fact kup's design depends on: the kernel loads the copy whose `vermagic` names another release
//! (with `CONFIG_MODVERSIONS` it ignores the release part), so the release check is kup's to make.
//!
//! Needs `lab/setup` (as `tests/lab_boot.rs` does); without it this test fails and says so.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_lab_live_patch_marks_proc_cmdline_until_it_is_disabled_and_removed() {
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
    let output = Command::new(repo.join("lab/run-livepatch"))
        .arg(tmp.path())
        .env("KUP_LAB_DIR", &dir)
        .output()
        .unwrap();
    let console = fs::read_to_string(tmp.path().join("console.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "lab/run-livepatch failed ({}):\n{}\nconsole:\n{console}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = console
        .lines()
        .filter_map(|line| line.split_once("LAB-LIVEPATCH: ").map(|(_, rest)| rest))
        .collect();
    let position = |wanted: &str| {
        lines
            .iter()
            .position(|line| line.starts_with(wanted))
            .unwrap_or_else(|| panic!("no {wanted:?} in the guest's lines:\n{console}"))
    };
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
    let positions: Vec<usize> = order.iter().map(|m| position(m)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?} at {positions:?}:\n{console}"
    );
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
