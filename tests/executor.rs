//! The executor under fault injection, with real processes and a real journal on disk: plans made of custom
//! `[[step]]`s run with `kup plan apply --rehearse --no-kernel-load` (never a kexec), and are failed, killed and
//! resumed at every point.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::plans::Scratch;
use support::{Kup, Run};

/// The test's directory, whose `vmlinuz` is not really a kernel (never loaded: `--no-kernel-load`), with the log its
/// steps write.
struct Lab {
    dir: Scratch,
}

impl Lab {
    fn new() -> Self {
        Self {
            dir: Scratch::with_kernel(b"not really a kernel"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    fn journal(&self) -> PathBuf {
        self.path("journal")
    }

    /// A step that appends `line` to the shared log (through a shell: the test's own helper process, not kup's).
    fn log_argv(&self, line: &str) -> String {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {line} >> {}\"]",
            self.path("log").display()
        )
    }

    fn write_plan(&self, steps: &str, policy: &str) -> PathBuf {
        let text = format!(
            "kup = 1\nname = \"fault injection\"\n\n[kernel]\nimage = \"{}\"\n\n{steps}\n[policy]\njournal = \"{}\"\n{policy}\n",
            self.path("vmlinuz").display(),
            self.journal().display()
        );
        self.dir.write_plan(&text)
    }

    fn log(&self) -> Vec<String> {
        support::lines_of(&self.path("log"))
    }

    fn kup(&self) -> Kup {
        Kup::new()
    }

    fn rehearse(&self, plan: &Path) -> Kup {
        self.kup()
            .args(["plan", "apply", "--rehearse", "--no-kernel-load", "--yes"])
            .arg(plan)
    }

    /// A rehearsal of `plan` that kills itself right after writing its `record`-th journal record.
    fn rehearse_killed_after(&self, plan: &Path, record: usize) -> Run {
        self.rehearse(plan)
            .crash_after_record(record.to_string())
            .run()
            .killed(&format!("record {record}"))
    }

    /// Starts a rehearsal and returns once its step has created the file `started`.
    fn rehearse_in_background(&self, plan: &Path) -> support::cli::Background {
        let child = self.rehearse(plan).spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.path("started").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the apply never started its step"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }

    fn resume(&self, extra: &[&str]) -> Kup {
        self.kup()
            .args(["plan", "resume", "--journal"])
            .arg(self.journal())
            .args(extra)
    }

    /// `kup plan status --format json`, which must succeed.
    fn status(&self) -> Value {
        self.kup().status_json(self.journal())
    }

    /// The directory of the apply's journal, as status reports it.
    fn journal_dir(&self) -> PathBuf {
        PathBuf::from(self.status()["journal"].as_str().unwrap())
    }

    fn journal_lines(&self) -> usize {
        std::fs::read_to_string(self.journal_dir().join("journal.jsonl"))
            .unwrap()
            .lines()
            .count()
    }
}

fn step_state(status: &Value, id: &str) -> String {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A chain of `n` before-kexec steps, step k failing when `fail == Some(k)`, each with an undo.
fn chain(lab: &Lab, n: usize, fail: Option<usize>) -> String {
    let mut steps = String::new();
    for k in 0..n {
        let run = if fail == Some(k) {
            "[\"/bin/sh\", \"-c\", \"exit 7\"]".to_owned()
        } else {
            lab.log_argv(&format!("run-{k}"))
        };
        let after = if k == 0 {
            String::new()
        } else {
            format!("after = [\"step:s{}\"]\n", k - 1)
        };
        steps += &format!(
            "[[step]]\nname = \"s{k}\"\nrun = {run}\nundo = {}\nbefore = [\"kexec\"]\n{after}\n",
            lab.log_argv(&format!("undo-{k}"))
        );
    }
    steps += &format!(
        "[[step]]\nname = \"after\"\nrun = {}\nafter = [\"kexec\"]\n\n",
        lab.log_argv("after")
    );
    steps
}

#[test]
fn a_rehearsal_runs_every_step_in_order_and_status_reports_timings() {
    let lab = Lab::new();
    let plan = lab.write_plan(&chain(&lab, 3, None), "parallelism = 2");
    lab.rehearse(&plan).run().status(0);
    assert_eq!(lab.log(), ["run-0", "run-1", "run-2", "after"]);
    let status = lab.status();
    assert_eq!(status["state"], "completed");
    assert_eq!(status["mode"], "rehearse");
    for step in status["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "done", "{step}");
        assert!(
            step["duration_ms"].is_u64()
                && step["started"].is_string()
                && step["finished"].is_string()
        );
    }
    // Nothing is left pending, so a resume has nothing to do.
    assert!(!lab.journal().join("pending").exists());
    lab.resume(&[])
        .run()
        .status(0)
        .stderr_has("nothing to resume");
}

#[test]
fn independent_steps_run_in_parallel_up_to_the_limit() {
    let lab = Lab::new();
    let mut steps = String::new();
    for k in 0..4 {
        steps += &format!(
            "[[step]]\nname = \"p{k}\"\nrun = [\"/bin/sh\", \"-c\", \"echo start >> {log}; sleep 0.4; echo end >> {log}\"]\nbefore = [\"kexec\"]\n\n",
            log = lab.path("log").display()
        );
    }
    let plan = lab.write_plan(&steps, "parallelism = 2");
    lab.rehearse(&plan).run().status(0);
    // With at most two at once, the log never shows three starts without an end in between.
    let mut running = 0i32;
    let mut peak = 0;
    for line in lab.log() {
        running += if line == "start" { 1 } else { -1 };
        peak = peak.max(running);
    }
    assert_eq!(peak, 2, "{:?}", lab.log());
}

#[test]
fn a_failure_at_every_position_before_the_kexec_rolls_back_in_reverse() {
    let n = 4;
    for fail in 0..n {
        let lab = Lab::new();
        let plan = lab.write_plan(&chain(&lab, n, Some(fail)), "");
        lab.rehearse(&plan)
            .run()
            .status(5)
            .stderr_has(format!("step:s{fail}"));
        let mut expected: Vec<String> = (0..fail).map(|k| format!("run-{k}")).collect();
        // The failed step is undone first (it may have done part of its work), then the others, newest first.
        expected.extend((0..=fail).rev().map(|k| format!("undo-{k}")));
        assert_eq!(lab.log(), expected, "failing step s{fail}");
        let status = lab.status();
        assert_eq!(status["state"], "rolled-back");
        assert_eq!(step_state(&status, &format!("step:s{fail}")), "failed");
        for k in 0..fail {
            assert_eq!(step_state(&status, &format!("step:s{k}")), "rolled-back");
        }
        assert_eq!(
            step_state(&status, "kexec"),
            "pending",
            "no kexec after a failure"
        );
        assert_eq!(step_state(&status, "step:after"), "pending");
        assert!(!lab.journal().join("pending").exists());
    }
}

#[test]
fn on_failure_stop_leaves_things_as_they_are() {
    let lab = Lab::new();
    let plan = lab.write_plan(&chain(&lab, 3, Some(1)), "on_failure = \"stop\"");
    lab.rehearse(&plan).run().status(6);
    assert_eq!(lab.log(), ["run-0"]);
    let status = lab.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(step_state(&status, "step:s0"), "done");
}

/// Before: `once` (not idempotent) then `again` (idempotent); after: `late` (not idempotent), `late-again`.
fn crash_plan(lab: &Lab) -> PathBuf {
    let steps = format!(
        "[[step]]\nname = \"once\"\nrun = {}\nbefore = [\"kexec\"]\n\n\
         [[step]]\nname = \"again\"\nrun = {}\nidempotent = true\nafter = [\"step:once\"]\nbefore = [\"kexec\"]\n\n\
         [[step]]\nname = \"late\"\nrun = {}\nafter = [\"kexec\"]\n\n\
         [[step]]\nname = \"late-again\"\nrun = {}\nidempotent = true\nafter = [\"step:late\"]\n\n",
        lab.log_argv("once"),
        lab.log_argv("again"),
        lab.log_argv("late"),
        lab.log_argv("late-again")
    );
    lab.write_plan(&steps, "parallelism = 1")
}

#[test]
fn killed_after_every_journal_record_resume_completes_without_repeating_a_step() {
    let reference = Lab::new();
    let plan = crash_plan(&reference);
    reference.rehearse(&plan).run().status(0);
    let records = reference.journal_lines();
    assert!(
        records > 10,
        "expected a record per step start and end, got {records}"
    );
    let mut refusals = 0;
    for crash_after in 1..records {
        let lab = Lab::new();
        let plan = crash_plan(&lab);
        lab.rehearse_killed_after(&plan, crash_after);
        let mut resumed = lab.resume(&[]).run();
        if resumed.code() == Some(6) {
            // Interrupted right after a non-idempotent step's start record: kup must not guess.
            let stderr = resumed.stderr();
            let step = ["step:once", "step:late"]
                .into_iter()
                .find(|s| stderr.contains(&format!("step {s} was interrupted")))
                .unwrap_or_else(|| panic!("record {crash_after}: unexpected refusal: {stderr}"));
            refusals += 1;
            // The operator checks (the step never got to run: the crash came right after its start record) and
            // asks for it to run again.
            resumed = lab.resume(&["--rerun", step]).run();
        }
        assert_eq!(
            resumed.code(),
            Some(0),
            "record {crash_after}: resume failed: {}",
            resumed.stderr()
        );
        let log = lab.log();
        for once in ["once", "late"] {
            assert_eq!(
                log.iter().filter(|l| *l == once).count(),
                1,
                "record {crash_after}: {once} in {log:?}"
            );
        }
        for again in ["again", "late-again"] {
            assert!(
                log.iter().any(|l| l == again),
                "record {crash_after}: {again} never ran: {log:?}"
            );
        }
        let status = lab.status();
        assert_eq!(status["state"], "completed", "record {crash_after}");
        assert!(!lab.journal().join("pending").exists());
    }
    assert_eq!(
        refusals, 2,
        "one refusal per non-idempotent step's start record"
    );
}

#[test]
fn a_torn_last_journal_line_is_dropped_and_the_plan_resumed() {
    let lab = Lab::new();
    let plan = crash_plan(&lab);
    // Crash after the third record (a step start or end), then simulate a crash mid-append.
    lab.rehearse_killed_after(&plan, 4);
    let journal = lab.journal_dir().join("journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).unwrap();
    text.push_str("{\"seq\":5,\"unix_ms\":17956");
    std::fs::write(&journal, text).unwrap();
    assert_eq!(lab.status()["torn_tail"], true);
    lab.resume(&["--rerun", "step:once"])
        .run()
        .status(0)
        .stderr_has("cut short");
    assert_eq!(lab.status()["state"], "completed");
    assert_eq!(lab.status()["torn_tail"], false);
}

#[test]
fn a_second_apply_while_one_runs_is_refused_with_the_holders_pid() {
    let lab = Lab::new();
    let steps = format!(
        "[[step]]\nname = \"slow\"\nrun = [\"/bin/sh\", \"-c\", \"touch {}; sleep 3\"]\nbefore = [\"kexec\"]\n",
        lab.path("started").display()
    );
    let plan = lab.write_plan(&steps, "");
    let mut first = lab.rehearse_in_background(&plan);
    lab.rehearse(&plan)
        .run()
        .status(4)
        .stderr_has(format!("already running (pid {})", first.id()));
    lab.resume(&[]).run().status(4);
    assert_eq!(lab.status()["state"], "running");
    assert!(first.wait().unwrap().success());
    assert_eq!(lab.status()["state"], "completed");
}

#[test]
fn a_plan_changed_between_apply_and_resume_is_refused() {
    let lab = Lab::new();
    let plan = crash_plan(&lab);
    lab.rehearse_killed_after(&plan, 3);
    // The operator edits the plan mid-update.
    let edited = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("fault injection", "edited");
    std::fs::write(&plan, &edited).unwrap();
    lab.resume(&[])
        .run()
        .status(3)
        .stderr_has("changed since this apply started");
    // Restoring it lets the resume go on; tampering with the frozen copy is refused too.
    std::fs::write(&plan, edited.replace("edited", "fault injection")).unwrap();
    let frozen = lab.journal_dir().join("plan.toml");
    let original = std::fs::read(&frozen).unwrap();
    std::fs::write(&frozen, b"kup = 1\n").unwrap();
    lab.resume(&[])
        .run()
        .status(3)
        .stderr_has("does not match its recorded sha256");
    std::fs::write(&frozen, original).unwrap();
    lab.resume(&[]).run().status(0);
}

#[test]
fn unsafe_permissions_are_refused() {
    let lab = Lab::new();
    let plan = crash_plan(&lab);
    std::fs::set_permissions(&plan, std::fs::Permissions::from_mode(0o666)).unwrap();
    lab.rehearse(&plan)
        .run()
        .status(3)
        .stderr_has("writable by group or others");
    std::fs::set_permissions(&plan, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(lab.journal()).unwrap();
    std::fs::set_permissions(lab.journal(), std::fs::Permissions::from_mode(0o777)).unwrap();
    lab.rehearse(&plan)
        .run()
        .status(3)
        .stderr_has("journal directory");
    assert!(lab.log().is_empty(), "nothing ran");
}

#[test]
fn without_yes_and_without_a_terminal_apply_refuses() {
    let lab = Lab::new();
    let plan = crash_plan(&lab);
    lab.kup()
        .args(["plan", "apply", "--rehearse", "--no-kernel-load"])
        .arg(&plan)
        .stdin("")
        .run()
        .status(3)
        .stderr_has("--yes");
    assert!(lab.log().is_empty());
}

#[test]
fn ctrl_c_before_the_kexec_lets_the_running_step_finish_then_rolls_back() {
    let lab = Lab::new();
    let steps = format!(
        "[[step]]\nname = \"first\"\nrun = {}\nundo = {}\nbefore = [\"kexec\"]\n\n\
         [[step]]\nname = \"slow\"\nrun = [\"/bin/sh\", \"-c\", \"touch {}; sleep 1; echo slow >> {}\"]\nundo = {}\nafter = [\"step:first\"]\nbefore = [\"kexec\"]\n\n\
         [[step]]\nname = \"never\"\nrun = {}\nafter = [\"step:slow\"]\nbefore = [\"kexec\"]\n",
        lab.log_argv("first"),
        lab.log_argv("undo-first"),
        lab.path("started").display(),
        lab.path("log").display(),
        lab.log_argv("undo-slow"),
        lab.log_argv("never"),
    );
    let plan = lab.write_plan(&steps, "");
    let mut apply = lab.rehearse_in_background(&plan);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(apply.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(apply.wait().unwrap().code(), Some(5));
    // The running step finished (its own process group did not get the signal), nothing new started, and both
    // were undone, newest first.
    assert_eq!(lab.log(), ["first", "slow", "undo-slow", "undo-first"]);
    let status = lab.status();
    assert_eq!(status["state"], "rolled-back");
    assert!(status["message"].as_str().unwrap().contains("interrupted"));
}

/// `kup plan abort` after a crash at each record of a chain's before-kexec part: the steps done are undone newest
/// first (an interrupted one first of all), never one twice; with nothing pending, abort is refused.
#[test]
fn abort_after_a_crash_undoes_the_done_steps_in_reverse() {
    let lab = Lab::new();
    let plan = lab.write_plan(&chain(&lab, 2, None), "");
    lab.kup()
        .args(["plan", "abort", "--journal"])
        .arg(lab.journal())
        .run()
        .status(3)
        .stderr_has("nothing to abort");
    // Killed right after s1's step-started record: s0 done, s1 interrupted (it never ran).
    lab.rehearse(&plan)
        .crash_after_record("step-started:step:s1")
        .run()
        .killed("after step:s1 started");
    assert_eq!(lab.log(), ["run-0"]);
    let abort = || {
        lab.kup()
            .args(["plan", "abort", "--journal"])
            .arg(lab.journal())
            .run()
    };
    abort().success();
    assert_eq!(lab.log(), ["run-0", "undo-1", "undo-0"]);
    let status = lab.status();
    assert_eq!(status["state"], "rolled-back", "{status}");
    assert!(!lab.journal().join("pending").exists());
    abort().status(3).stderr_has("no apply is pending");
    assert_eq!(
        lab.log(),
        ["run-0", "undo-1", "undo-0"],
        "nothing undone twice"
    );
}
