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
    let files = support::cli::field_of_each(&doc["plans"], "file");
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

/// `kup plan status --journal DIR` on this host, of the journal of a real kexec written on another machine — the
/// lab reads it back from its guest's disk — with the records, action outputs and boot report in the shapes kup
/// writes them: every part of a guest's blackout is there, on its clock, and they add up.
#[test]
fn status_of_a_journal_copied_off_another_machine_gives_every_blackout_part() {
    use kup::action::ActionOutput;
    use kup::exec::journal::{Event, FinalState, Mode, Record, rfc3339};
    use serde_json::{Value, json};
    use sha2::Digest;

    let copy = tempfile::tempdir().unwrap();
    let root = copy.path().join("journal");
    let apply = root.join("2026-12-01T101010000Z-321");
    std::fs::create_dir_all(&apply).unwrap();
    let plan = std::fs::read("plans/single-qemu-shared-ram.toml").unwrap();
    std::fs::write(apply.join("plan.toml"), &plan).unwrap();
    let digest: String = sha2::Sha256::digest(&plan)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(apply.join("plan.sha256"), format!("{digest}\n")).unwrap();
    // The guest's kup held the lock under a pid that means something else here: the finished record decides.
    std::fs::write(root.join("lock"), "1\n").unwrap();

    let output = |o: ActionOutput| serde_json::to_value(o).unwrap();
    let dmesg = std::fs::read("tests/data/dmesg/lab-qemu-tcg-smp2.txt").unwrap();
    let boot = serde_json::to_value(kup::boot::analyse(&dmesg)).unwrap();
    let step = |s: &str| s.parse().unwrap();
    let done = |s: &str, duration_ms, outputs| Event::StepDone {
        step: step(s),
        duration_ms,
        outputs,
    };
    let t0 = 1_795_000_000_000;
    let events: Vec<(u64, Event)> = vec![
        (
            0,
            Event::ApplyStarted {
                plan: "hv".into(),
                plan_path: "/mnt/disk/plan.toml".into(),
                plan_sha256: digest.clone(),
                mode: Mode::Apply,
                kernel_load: true,
                boot_id: "old".into(),
                release: "6.1.0-56-cloud-amd64".into(),
                hostname: "lab".into(),
                pid: 321,
                kernel_cmdline: "console=ttyS0 panic=-1 cpuhp.parallel=1".into(),
            },
        ),
        (
            1,
            Event::StepStarted {
                step: step("vm:db-1:pause"),
            },
        ),
        (
            9,
            done(
                "vm:db-1:pause",
                8,
                vec![
                    Value::Null,
                    json!({"qemu": "10.0.0"}),
                    output(ActionOutput::Acknowledged {
                        acked_unix_ms: t0 + 8,
                    }),
                ],
            ),
        ),
        (
            10,
            Event::StepStarted {
                step: step("vm:db-1:save"),
            },
        ),
        (60, done("vm:db-1:save", 50, vec![Value::Null; 4])),
        (61, Event::StepStarted { step: step("sync") }),
        (70, done("sync", 9, vec![Value::Null])),
        (
            71,
            Event::StepStarted {
                step: step("kexec"),
            },
        ),
        (
            80,
            Event::Kexec {
                boot_id: "old".into(),
                release: "6.1.0-56-cloud-amd64".into(),
                kernel_cmdline: "console=ttyS0 panic=-1 cpuhp.parallel=1".into(),
            },
        ),
        // The new kernel: its wall clock from the RTC, up 4.6 s when resume started 5.08 s after the record.
        (
            5_160,
            Event::ResumeStarted {
                boot_id: "new".into(),
                release: "7.3.4+deb13-cloud-amd64".into(),
                pid: 88,
                rebooted: true,
                on_new_kernel: true,
                uptime_ms: Some(4_600),
            },
        ),
        (5_161, done("kexec", 0, vec![])),
        (5_162, Event::BootReport { report: boot }),
        (
            5_170,
            Event::StepStarted {
                step: step("vm:db-1:restore"),
            },
        ),
        (5_570, done("vm:db-1:restore", 400, vec![Value::Null; 7])),
        (
            5_571,
            Event::StepStarted {
                step: step("vm:db-1:resume"),
            },
        ),
        (
            5_590,
            done(
                "vm:db-1:resume",
                19,
                vec![
                    Value::Null,
                    output(ActionOutput::Acknowledged {
                        acked_unix_ms: t0 + 5_585,
                    }),
                    json!({"status": "running"}),
                ],
            ),
        ),
        (
            5_591,
            Event::StepStarted {
                step: step("verify"),
            },
        ),
        (5_600, done("verify", 9, vec![])),
        (
            5_601,
            Event::Finished {
                state: FinalState::Completed,
                message: "every step done".into(),
            },
        ),
    ];
    let mut text = String::new();
    for (seq, (dt, event)) in events.into_iter().enumerate() {
        let record = Record {
            seq: seq as u64 + 1,
            unix_ms: t0 + dt,
            time: rfc3339(t0 + dt),
            event,
        };
        text += &(serde_json::to_string(&record).unwrap() + "\n");
    }
    std::fs::write(apply.join("journal.jsonl"), text).unwrap();

    let status = Kup::new().status_json(&root);
    assert_eq!(status["state"], "completed", "{status:#}");
    let b = &status["blackout"]["db-1"];
    let parts: Vec<(&str, i64, &str)> = b["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("{status:#}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["ms"].as_i64().unwrap(),
                p["clock"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("pause_save", 52, "old-realtime"),
            ("until_kexec", 20, "old-realtime"),
            // 5 160 − 4 600 − 80: the new kernel started 480 ms after the record, on two wall clocks.
            ("kexec_to_kernel_start", 480, "old-to-new-realtime"),
            ("kernel_to_init", 3_921, "new-monotonic"),
            ("init_to_resume", 679, "new-boottime"),
            ("wait_before_restore", 10, "new-realtime"),
            ("restore", 400, "new-realtime"),
            ("resume", 15, "new-realtime"),
        ],
        "{b:#}"
    );
    assert_eq!(b["total_ms"], 5_585 - 8);
    assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), 5_585 - 8);
    assert_eq!(b["outside_kernel_boot_ms"], 5_577 - 3_921);
    assert!(b["notes"].is_null(), "{b:#}");
    // The same in the human report's table.
    Kup::new()
        .args(["plan", "status", "--journal"])
        .arg(&root)
        .run()
        .success()
        .stdout_has("blackout 5577 ms")
        .stdout_has("kernel_to_init              3921 ms  new-monotonic")
        .stdout_has("outside the kernel's boot: 1656 ms, 1356 ms over the 300 ms goal");
}

/// `kup plan validate DIR` with `jobs` threads (`None`: the default, one per core) in `format`.
fn validate_generated(dir: &std::path::Path, format: &str, jobs: Option<&str>) -> Run {
    let mut kup = Kup::new()
        .env("NO_COLOR", "1")
        .args(["plan", "validate", "--format", format]);
    if let Some(jobs) = jobs {
        kup = kup.args(["--jobs", jobs]);
    }
    kup.arg(dir).run()
}

#[test]
fn validating_many_files_in_parallel_prints_what_the_sequential_run_prints() {
    let dir = tempfile::tempdir().unwrap();
    let written = support::plan_gen::write_plans(dir.path(), 400, 7).unwrap();
    // The mix is what makes the comparison worth something: findings must come out next to the right file.
    assert!(
        written.invalid > 20 && written.invalid < 100,
        "{} invalid",
        written.invalid
    );
    for format in ["human", "json", "github"] {
        let sequential = validate_generated(dir.path(), format, Some("1")).status(1);
        for jobs in [None, Some("2"), Some("7")] {
            let parallel = validate_generated(dir.path(), format, jobs).status(1);
            assert!(
                parallel.stdout() == sequential.stdout()
                    && parallel.stderr() == sequential.stderr(),
                "--format {format} --jobs {jobs:?} differs from --jobs 1"
            );
        }
        if format == "json" {
            // Every file in name order, each with the finding the generator put in it.
            let doc = sequential.stdout_json();
            let manifest = std::fs::read_to_string(dir.path().join("manifest.tsv")).unwrap();
            let plans = doc["plans"].as_array().unwrap();
            assert_eq!(plans.len(), written.count);
            for (plan, line) in plans.iter().zip(manifest.lines()) {
                let (file, expected) = line.split_once('\t').unwrap();
                let shown = plan["file"].as_str().unwrap();
                assert!(
                    shown.ends_with(file),
                    "{shown} out of order, expected {file}"
                );
                let codes = support::cli::field_of_each(&plan["diagnostics"], "code");
                if expected == "valid" {
                    assert!(plan["valid"].as_bool().unwrap(), "{file}: {codes:?}");
                } else {
                    assert!(
                        codes.contains(&expected),
                        "{file}: {codes:?}, expected {expected}"
                    );
                }
            }
        }
    }
    // What a person reads at the end: one summary line per file, in order (the first 40 of them).
    let human = validate_generated(dir.path(), "human", Some("3")).status(1);
    let prefix = format!("{}/", dir.path().display());
    let summaries: Vec<String> = human
        .stderr()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .take(40)
        .map(|l| l.replacen(&prefix, "DIR/", 1))
        .collect();
    insta::assert_snapshot!(summaries.join("\n"));
}

#[test]
fn the_first_unreadable_file_in_order_is_reported_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    support::plan_gen::write_plans(dir.path(), 50, 3).unwrap();
    // Dangling links: listed as plan files, unreadable.
    for name in ["plan-00020x.toml", "plan-00040x.toml"] {
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join(name)).unwrap();
    }
    let sequential = validate_generated(dir.path(), "json", Some("1"))
        .status(2)
        .stderr_has("plan-00020x.toml");
    for jobs in ["2", "5"] {
        let parallel = validate_generated(dir.path(), "json", Some(jobs)).status(2);
        assert_eq!(parallel.stderr(), sequential.stderr(), "--jobs {jobs}");
        assert_eq!(parallel.stdout(), "");
    }
}

#[test]
fn zero_jobs_is_a_usage_error() {
    Kup::new()
        .args(["plan", "validate", "--jobs", "0", "plans/"])
        .run()
        .status(2);
}
