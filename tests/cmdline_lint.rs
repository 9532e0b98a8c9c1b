//! The kernel-parameter warnings as `kup plan validate` reports them: warnings in every format, and the exit code
//! of a plan that only warns stays 0.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn kup() -> Command {
    let mut cmd = Command::cargo_bin("kup").expect("kup binary");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

const TOO_NEW: &str = "tests/data/diagnostics/cmdline-param-too-new.toml";
const UNKNOWN: &str = "tests/data/diagnostics/cmdline-param-unknown.toml";

/// Severity, code and line of one finding.
type Finding = (String, String, u64);

#[test]
fn warnings_keep_the_exit_code_and_the_plan_valid() {
    let out = kup()
        .args(["plan", "validate", "--format", "json", TOO_NEW, UNKNOWN])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).expect("JSON");
    let plans = v["plans"].as_array().expect("plans");
    let found: Vec<(bool, Vec<Finding>)> = plans
        .iter()
        .map(|p| {
            let diagnostics = p["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["severity"].as_str().unwrap().to_owned(),
                        d["code"].as_str().unwrap().to_owned(),
                        d["line"].as_u64().unwrap(),
                    )
                })
                .collect();
            (p["valid"].as_bool().unwrap(), diagnostics)
        })
        .collect();
    let w = |code: &str, line| ("warning".to_owned(), format!("kup::plan::{code}"), line);
    assert_eq!(
        found,
        [
            (true, vec![w("cmdline-param-too-new", 9)]),
            (
                true,
                vec![
                    w("cmdline-param-unknown", 9),
                    w("cmdline-param-unknown", 10)
                ]
            ),
        ]
    );
}

#[test]
fn github_annotations_are_warnings() {
    kup()
        .args(["plan", "validate", "--format", "github", TOO_NEW])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with(format!(
            "::warning file={TOO_NEW},line=9,col=9,endLine=9,endColumn=25,title=kup%3A%3Aplan%3A%3Acmdline-param-too-new::`cpuhp.parallel` needs Linux 6.5"
        )))
        .stderr(predicate::str::contains("valid, 1 warning"));
}

/// Regression: the first version called ChromeOS's `noswap` a misspelt `nosmap`, and the EFI stub's two
/// `initrd=` (microcode, then the initramfs) a duplicate. The corpus's real command lines, judged against their
/// own releases, give no finding.
#[test]
fn the_corpus_command_lines_are_clean() {
    let dir = format!("{}/tests/data/dmesg", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut judged = 0;
    for file in files {
        let report = kup::boot::analyse(&std::fs::read(&file).unwrap());
        let Some(cmdline) = &report.cmdline else {
            continue;
        };
        judged += 1;
        let findings = kup::kparams::lint_cmdline(cmdline, report.kernel.as_deref());
        assert!(
            findings.is_empty(),
            "{}: {:?}",
            file.display(),
            findings.iter().map(|f| &f.message).collect::<Vec<_>>()
        );
    }
    assert!(
        judged >= 20,
        "only {judged} corpus logs have a command line"
    );
}
