//! `kup boot-time --compare BEFORE AFTER` and `--journal DIR`: two corpus boots compared (pinned as human and JSON
//! snapshots), and the command as an operator runs it — two files, a file and standard input, a journal with and
//! without the old kernel's report.

use assert_cmd::Command;
use kup::boot::compare::{BootSummary, compare, human};
use kup::exec::journal::{Event, Record, rfc3339};
use predicates::prelude::*;
use serde_json::Value;

const DMESG: &str = "tests/data/dmesg";

fn kup() -> Command {
    let mut cmd = Command::cargo_bin("kup").expect("kup binary");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// The JSON a successful run printed on stdout.
fn json_stdout(assert: assert_cmd::assert::Assert) -> Value {
    let assert = assert.success();
    serde_json::from_slice(&assert.get_output().stdout).expect("JSON on stdout")
}

fn summary(name: &str) -> BootSummary {
    let path = format!("{}/{DMESG}/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).expect("corpus log");
    BootSummary::of(&kup::boot::analyse(&bytes), name)
}

/// Pairs compared in the snapshots: the lab guest at -smp 1 and -smp 4 (same kernel, same command line), and two
/// real machines across the 6.5 boundary (6.4 → 6.6).
const PAIRS: &[(&str, &str, &str)] = &[
    (
        "lab-smp1-vs-smp4",
        "lab-qemu-tcg-smp1.txt",
        "lab-qemu-tcg-smp4.txt",
    ),
    (
        "real-6.4-vs-6.6",
        "18-huananzhi-x99-qd4-xeon-6.4-cachyos.txt",
        "24-virtualbox-vm-6.6-arch.txt",
    ),
];

#[test]
fn corpus_pairs_match_their_snapshots() {
    for (name, before, after) in PAIRS {
        let c = compare(&summary(before), &summary(after));
        insta::assert_snapshot!(format!("{name}.human"), human(&c, false));
        insta::assert_json_snapshot!(format!("{name}.json"), c);
    }
}

#[test]
fn lab_pair_hand_checked() {
    let c = compare(
        &summary("lab-qemu-tcg-smp1.txt"),
        &summary("lab-qemu-tcg-smp4.txt"),
    );
    // From the raw lines: smp1 brings up 1 CPU in 5.8 ms, smp4 4 CPUs in 392.9 ms (TCG).
    let smp = &c.phases[1];
    assert_eq!(smp.name, "smp_bringup");
    assert!(
        smp.duration
            .delta_ms
            .is_some_and(|d| (d - 387.1).abs() < 0.1),
        "{smp:?}"
    );
    assert_eq!(c.before.cpus, Some(1));
    assert_eq!(c.after.cpus, Some(4));
    let stayed: Vec<&str> = c
        .recommendations
        .stayed
        .iter()
        .map(|r| r.code.as_str())
        .collect();
    assert_eq!(stayed, ["serial-console-not-quiet"]);
    assert!(c.notes.iter().any(|n| n.contains("(1 before, 4 after)")));
}

/// The documented shape (docs/boot-time.md, "Comparing two boots").
fn assert_comparison_shape(v: &Value) {
    for side in ["before", "after"] {
        let s = &v[side];
        assert!(
            s["source"].is_string() && s["clock"].is_string(),
            "{side}: {s}"
        );
        assert!(s["kernel"].is_null() || s["kernel"].is_string());
        assert!(s["cpus"].is_null() || s["cpus"].is_u64());
        assert!(s["cmdline"].is_null() || s["cmdline"].is_string());
    }
    let delta = |d: &Value| {
        for key in ["before_s", "after_s", "delta_ms", "delta_pct"] {
            assert!(d[key].is_null() || d[key].is_f64(), "{key}: {d}");
        }
    };
    delta(&v["time_to_init"]);
    delta(&v["smp_bringup"]);
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 5);
    for p in phases {
        assert!(
            p["name"].is_string()
                && p["before_present"].is_boolean()
                && p["after_present"].is_boolean()
        );
        delta(p);
    }
    for list in ["appeared", "disappeared", "stayed"] {
        for r in v["recommendations"][list]
            .as_array()
            .expect("recommendation list")
        {
            for key in ["code", "message", "evidence"] {
                assert!(r[key].is_string(), "{list} {key}: {r}");
            }
        }
    }
    assert!(v["notes"].is_array());
    assert_eq!(v["compare_version"], 1);
}

#[test]
fn two_files_through_the_binary() {
    let before = format!("{DMESG}/lab-qemu-tcg-smp1.txt");
    let after = format!("{DMESG}/lab-qemu-tcg-smp4.txt");
    let out = kup()
        .args([
            "boot-time",
            "--compare",
            &before,
            &after,
            "--format",
            "json",
        ])
        .assert()
        .stderr(predicate::str::is_empty());
    let v = json_stdout(out);
    assert_comparison_shape(&v);
    assert_eq!(v["before"]["source"], before.as_str());
    assert_eq!(v["after"]["cpus"], 4);

    kup()
        .args(["boot-time", "--compare", &before, &after])
        .env("NO_COLOR", "1")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "smp_bringup         5.8 ms   392.9 ms  +387.1 ms",
        ))
        .stdout(predicate::str::contains(
            "stayed       [serial-console-not-quiet]",
        ));
}

#[test]
fn one_side_from_standard_input() {
    let log = std::fs::read(format!(
        "{}/{DMESG}/lab-qemu-tcg-smp4.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let out = kup()
        .args([
            "boot-time",
            "--compare",
            &format!("{DMESG}/lab-qemu-tcg-smp1.txt"),
            "-",
            "--format",
            "json",
        ])
        .write_stdin(log)
        .assert();
    let v = json_stdout(out);
    assert_eq!(v["after"]["source"], "-");
    assert_eq!(v["after"]["cpus"], 4);
}

#[test]
fn usage_errors_exit_2() {
    kup()
        .args(["boot-time", "--compare", "-", "-"])
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "only one of the two logs can be `-`",
        ));
    kup()
        .args([
            "boot-time",
            "--compare",
            "/nonexistent/a.log",
            &format!("{DMESG}/lab-qemu-tcg-smp1.txt"),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read /nonexistent/a.log"));
    // Two values, and not together with --dmesg.
    kup().args(["boot-time", "--compare", "a"]).assert().code(2);
    kup()
        .args(["boot-time", "--dmesg", "a", "--compare", "a", "b"])
        .assert()
        .code(2);
}

fn report_of(name: &str) -> Value {
    let bytes = std::fs::read(format!("{}/{DMESG}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::to_value(kup::boot::analyse(&bytes)).unwrap()
}

/// A journal root holding one apply whose journal has these events (and nothing else it needs: `boot-time` reads
/// only the records).
fn journal_with(events: Vec<Event>) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let apply = root.path().join("20261201T090000Z-1");
    std::fs::create_dir_all(&apply).unwrap();
    let mut lines = String::new();
    for (seq, event) in events.into_iter().enumerate() {
        let record = Record {
            seq: seq as u64,
            unix_ms: 1_795_000_000_000 + seq as u64,
            time: rfc3339(1_795_000_000_000 + seq as u64),
            event,
        };
        lines += &(serde_json::to_string(&record).unwrap() + "\n");
    }
    std::fs::write(apply.join("journal.jsonl"), lines).unwrap();
    root
}

fn kexec() -> Event {
    Event::Kexec {
        boot_id: "boot-1".into(),
        release: "6.1.0-56-cloud-amd64".into(),
        kernel_cmdline: "console=ttyS0 panic=-1".into(),
    }
}

#[test]
fn a_journal_without_the_old_kernels_report_says_so() {
    let root = journal_with(vec![
        kexec(),
        Event::BootReport {
            report: report_of("lab-qemu-tcg-smp4.txt"),
        },
    ]);
    kup()
        .args(["boot-time", "--journal"])
        .arg(root.path())
        .assert()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(
            "has the new kernel's boot report but none of the old kernel's boot",
        ))
        .stderr(predicate::str::contains("journalctl -k -b -1"));
}

#[test]
fn a_journal_with_both_reports_compares_them() {
    let root = journal_with(vec![
        Event::BootReport {
            report: report_of("lab-qemu-tcg-smp1.txt"),
        },
        kexec(),
        Event::BootReport {
            report: report_of("lab-qemu-tcg-smp4.txt"),
        },
    ]);
    let out = kup()
        .args(["boot-time", "--format", "json", "--journal"])
        .arg(root.path())
        .assert();
    let v = json_stdout(out);
    assert_comparison_shape(&v);
    assert_eq!(v["before"]["source"], "journal before");
    assert_eq!(v["before"]["cpus"], 1);
    assert_eq!(v["after"]["cpus"], 4);
    // The same comparison as from the two logs.
    let from_logs = compare(
        &summary("lab-qemu-tcg-smp1.txt"),
        &summary("lab-qemu-tcg-smp4.txt"),
    );
    assert_eq!(
        v["phases"],
        serde_json::to_value(&from_logs.phases).unwrap()
    );
}

#[test]
fn a_journal_without_any_report_or_apply() {
    let root = journal_with(vec![kexec()]);
    kup()
        .args(["boot-time", "--journal"])
        .arg(root.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "has no boot report of the new kernel",
        ));
    let empty = tempfile::tempdir().unwrap();
    kup()
        .args(["boot-time", "--journal"])
        .arg(empty.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no apply has been journaled"));
}
