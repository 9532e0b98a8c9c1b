//! The command line as an operator or a CI job uses it: exit codes, the JSON and GitHub formats, `kup schema`.

use assert_cmd::Command;
use predicates::prelude::*;

fn kup() -> Command {
    let mut cmd = Command::cargo_bin("kup").unwrap();
    cmd.env("NO_COLOR", "1").env_remove("COLUMNS");
    cmd
}

fn json(args: &[&str]) -> (i32, serde_json::Value) {
    let output = kup()
        .args(["plan", "validate", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
    (output.status.code().unwrap(), value)
}

#[test]
fn shipped_plans_are_valid() {
    kup()
        .args(["plan", "validate", "plans/"])
        .assert()
        .code(0)
        .stdout("")
        .stderr(predicate::str::contains(
            "plans/multi-vm-vfio-spdk.toml: valid",
        ));
}

#[test]
fn an_invalid_plan_exits_1_with_its_diagnostic_on_stderr() {
    kup()
        .args([
            "plan",
            "validate",
            "tests/data/diagnostics/unknown-key.toml",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("kup::plan::unknown-key"))
        .stderr(predicate::str::contains("did you mean `image`?"))
        .stderr(predicate::str::contains("unknown-key.toml:4:1"))
        .stderr(predicate::str::contains("\u{1b}[").not());
}

#[test]
fn warnings_alone_keep_a_plan_valid() {
    kup()
        .args(["plan", "validate", "tests/data/diagnostics/tmp-path.toml"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("valid, 1 warning"));
}

#[test]
fn io_and_usage_errors_exit_2() {
    kup()
        .args(["plan", "validate", "does/not/exist.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("does/not/exist.toml"));
    kup().args(["plan", "validate"]).assert().code(2);
    kup()
        .args(["plan", "validate", "--format", "xml", "plans/"])
        .assert()
        .code(2);
    let empty = tempfile::tempdir().unwrap();
    kup()
        .args(["plan", "validate"])
        .arg(empty.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no *.toml files"));
}

#[test]
fn json_format_has_the_documented_shape() {
    let (code, doc) = json(&[
        "plans/cmdline-cpuhp-parallel.toml",
        "tests/data/diagnostics/unknown-key.toml",
    ]);
    assert_eq!(code, 1);
    let plans = doc["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["file"], "plans/cmdline-cpuhp-parallel.toml");
    assert_eq!(plans[0]["valid"], true);
    assert_eq!(plans[0]["diagnostics"], serde_json::json!([]));
    assert_eq!(plans[1]["valid"], false);
    let d = &plans[1]["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "kup::plan::unknown-key");
    assert_eq!(d["message"], "unknown key `imgae` in `kernel`");
    assert_eq!(d["line"], 4);
    assert_eq!(d["column"], 1);
    assert_eq!(d["help"], "did you mean `image`?");
}

#[test]
fn json_positions_point_at_the_offending_value() {
    let (code, doc) = json(&["tests/data/diagnostics/volatile-path.toml"]);
    assert_eq!(code, 1);
    let diagnostics = doc["plans"][0]["diagnostics"].as_array().unwrap();
    let at: Vec<(u64, u64)> = diagnostics
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_u64().unwrap()))
        .collect();
    // state = "/dev/shm/kup/db-1" is on line 10, its value starts at column 9; journal = "/run/kup" on line 14.
    assert_eq!(at, vec![(10, 9), (14, 11)]);
}

#[test]
fn github_format_prints_workflow_annotations() {
    kup()
        .args(["plan", "validate", "--format", "github", "tests/data/diagnostics/sha256.toml"])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with(
            "::error file=tests/data/diagnostics/sha256.toml,line=5,col=10,endLine=5,endColumn=73,title=kup%3A%3Aplan%3A%3Asha256::",
        ))
        .stdout(predicate::str::contains("%0Ahelp: compute it with `sha256sum"));
    kup()
        .args([
            "plan",
            "validate",
            "--format",
            "github",
            "tests/data/diagnostics/tmp-path.toml",
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("::warning file="));
}

#[test]
fn a_directory_is_searched_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("site-a/hv");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy("plans/libvirt-criu.toml", nested.join("edge.toml")).unwrap();
    std::fs::copy(
        "tests/data/diagnostics/sha256.toml",
        dir.path().join("bad.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a plan").unwrap();
    let (code, doc) = json(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let files: Vec<&str> = doc["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    assert!(
        files[0].ends_with("bad.toml") && files[1].ends_with("site-a/hv/edge.toml"),
        "{files:?}"
    );
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let checked_in = std::fs::read_to_string("schemas/kup-plan.schema.json").unwrap();
    kup().arg("schema").assert().code(0).stdout(checked_in);
}

/// Regression: `kup plan validate --format github plans/ | head -1` panicked ("failed printing to stdout: Broken
/// pipe") and exited 101. A reader that stops early must not change the answer: the plans here are invalid, so 1.
#[test]
fn a_reader_closing_stdout_early_does_not_change_the_exit_code() {
    for format in ["github", "json"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kup"))
            .args(["plan", "validate", "--format", format])
            // More output than a pipe buffers (64 KiB), so some write happens after the reader is gone.
            .args(std::iter::repeat_n("tests/data/diagnostics", 40))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "--format {format}");
    }
}
