//! The command line as an operator or a CI job uses it: exit codes, the JSON and GitHub formats, `kup schema`.

mod support;

use support::{Kup, Run};

/// `kup plan validate --format json ARGS…`, run.
fn validate_json(args: &[&str]) -> Run {
    Kup::new()
        .args(["plan", "validate", "--format", "json"])
        .args(args)
        .run()
}

#[test]
fn shipped_plans_are_valid() {
    Kup::new()
        .args(["plan", "validate", "plans/"])
        .run()
        .status(0)
        .stdout_is("")
        .stderr_has("plans/multi-vm-vfio-spdk.toml: valid");
}

#[test]
fn an_invalid_plan_exits_1_with_its_diagnostic_on_stderr() {
    Kup::new()
        .args([
            "plan",
            "validate",
            "tests/data/diagnostics/unknown-key.toml",
        ])
        .run()
        .status(1)
        .stderr_has("kup::plan::unknown-key")
        .stderr_has("did you mean `image`?")
        .stderr_has("unknown-key.toml:4:1")
        .stderr_lacks("\u{1b}[");
}

#[test]
fn warnings_alone_keep_a_plan_valid() {
    Kup::new()
        .args(["plan", "validate", "tests/data/diagnostics/tmp-path.toml"])
        .run()
        .status(0)
        .stderr_has("valid, 1 warning");
}

#[test]
fn io_and_usage_errors_exit_2() {
    Kup::new()
        .args(["plan", "validate", "does/not/exist.toml"])
        .run()
        .status(2)
        .stderr_has("does/not/exist.toml");
    Kup::new().args(["plan", "validate"]).run().status(2);
    Kup::new()
        .args(["plan", "validate", "--format", "xml", "plans/"])
        .run()
        .status(2);
    Kup::new()
        .args(["plan", "validate"])
        .dir_arg()
        .run()
        .status(2)
        .stderr_has("no *.toml files");
}

#[test]
fn json_format_has_the_documented_shape() {
    let doc = validate_json(&[
        "plans/cmdline-cpuhp-parallel.toml",
        "tests/data/diagnostics/unknown-key.toml",
    ])
    .status(1)
    .stdout_json();
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
    let doc = validate_json(&["tests/data/diagnostics/volatile-path.toml"])
        .status(1)
        .stdout_json();
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
    let github = |plan: &str| {
        Kup::new()
            .args(["plan", "validate", "--format", "github", plan])
            .run()
    };
    github("tests/data/diagnostics/sha256.toml")
        .status(1)
        .stdout_starts_with(
            "::error file=tests/data/diagnostics/sha256.toml,line=5,col=10,endLine=5,endColumn=73,title=kup%3A%3Aplan%3A%3Asha256::",
        )
        .stdout_has("%0Ahelp: compute it with `sha256sum");
    github("tests/data/diagnostics/tmp-path.toml")
        .status(0)
        .stdout_starts_with("::warning file=");
}

#[test]
fn a_directory_is_searched_recursively() {
    let read = |path: &str| std::fs::read(path).unwrap();
    let doc = Kup::new()
        .args(["plan", "validate", "--format", "json"])
        .file("site-a/hv/edge.toml", read("plans/libvirt-criu.toml"))
        .file("bad.toml", read("tests/data/diagnostics/sha256.toml"))
        .file("notes.txt", "not a plan")
        .dir_arg()
        .run()
        .status(1)
        .stdout_json();
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
    Kup::new()
        .arg("schema")
        .run()
        .status(0)
        .stdout_is(checked_in);
}

/// Regression: `kup plan validate --format github plans/ | head -1` panicked ("failed printing to stdout: Broken
/// pipe") and exited 101. A reader that stops early must not change the answer: the plans here are invalid, so 1.
#[test]
fn a_reader_closing_stdout_early_does_not_change_the_exit_code() {
    for format in ["github", "json"] {
        let mut child = Kup::new()
            .args(["plan", "validate", "--format", format])
            // More output than a pipe buffers (64 KiB), so some write happens after the reader is gone.
            .args(std::iter::repeat_n("tests/data/diagnostics", 40))
            .spawn();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "--format {format}");
    }
}

/// `kup plan apply --dry-run` of `plan`, exited 0.
fn dry_run(plan: &str) -> Run {
    Kup::new()
        .args(["plan", "apply", "--dry-run"])
        .plan(plan)
        .run()
        .status(0)
}

#[test]
fn dry_run_lints_the_new_command_line_against_the_new_kernels_release() {
    let plan = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz-x\"\nversion = \"6.1.0-27-cloud-amd64\"\n\
                [kernel.cmdline]\ninherit = false\nappend = [\"console=ttyS0\", \"cpuhp.parallel=1\"]\n";
    dry_run(plan).stderr_has("warning: new kernel command line: `cpuhp.parallel` needs Linux 6.5");
    let json = Kup::new()
        .args(["plan", "apply", "--dry-run", "--format", "json"])
        .plan(plan)
        .run()
        .status(0)
        .stdout_json();
    assert!(
        json["cmdline_warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("cpuhp.parallel")),
        "{json}"
    );
}

#[test]
fn dry_run_advises_on_the_new_kernel_parallel_bring_up_turned_off() {
    let plan = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz-x\"\nversion = \"6.12.9-lts\"\n\
                [kernel.cmdline]\ninherit = false\nappend = [\"console=ttyS0\", \"quiet\", \"cpuhp.parallel=0\"]\n";
    dry_run(plan)
        .stderr_has(
            "brings CPUs up in parallel, but its command line turns that off with cpuhp.parallel=0",
        )
        .stderr_lacks("without quiet");
}

/// Regression: `kup plan apply --help` said applying for real was not implemented.
#[test]
fn apply_help_describes_the_real_apply() {
    let help = Kup::new()
        .args(["plan", "apply", "--help"])
        .run()
        .status(0)
        .stdout();
    assert!(!help.contains("not implemented"), "{help}");
    assert!(help.contains("kexec into the new kernel"), "{help}");
}

/// Regression: `inherit = false` beside `value` was refused as a conflict although it says the same thing;
/// `inherit = true` with `value` still contradicts it.
#[test]
fn inherit_false_agrees_with_a_whole_command_line_value() {
    let plan = |inherit: bool| {
        format!(
            "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n[kernel.cmdline]\ninherit = {inherit}\n\
             value = \"root=/dev/vda ro console=ttyS0\"\n"
        )
    };
    let validate = |plan: &str| Kup::new().args(["plan", "validate"]).plan(plan).run();
    validate(&plan(false))
        .status(0)
        .stderr_lacks("cmdline-conflict");
    validate(&plan(true))
        .status(1)
        .stderr_has("kup::plan::cmdline-conflict");
}

/// Regression: a plan without `[kernel]` reported only the missing table and hid every other semantic error.
#[test]
fn a_plan_without_a_kernel_table_still_reports_its_other_errors() {
    Kup::new()
        .args(["plan", "validate"])
        .plan("kup = 1\n[[vm]]\nname = \"db 1\"\nqmp = \"relative.sock\"\nrestart = [\"true\"]\n")
        .run()
        .status(1)
        .stderr_has("kup::plan::missing-key")
        .stderr_has("kup::plan::invalid-name")
        .stderr_has("kup::plan::relative-path");
}
