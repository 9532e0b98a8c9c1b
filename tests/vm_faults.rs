//! Faults with real guests (the lab's QEMU; `KUP_LAB_DIR`): kup killed in the middle of a rehearsal, then aborted
//! with `kup plan abort` or finished with `kup plan resume`; every guest ends running with its memory intact, or
//! its state kept. One QEMU per run (the first of `KUP_TEST_QEMU`, else 7.2) keeps the time within CI's budget.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::Kup;
use support::guests::{self, Guest, Lab, Qemu, Ram, Spec};

struct Fixture {
    lab: Lab,
    tmp: tempfile::TempDir,
    qemu: Qemu,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let lab = Lab::get();
        // Under target/, not /tmp: state and RAM files must be on a disk file system (kup refuses tmpfs).
        let tmp = tempfile::Builder::new()
            .prefix(&format!("vm_faults-{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let qemu = Qemu::under_test()[0];
        Fixture { lab, tmp, qemu }
    }

    fn guest(&self, name: &str, ram: Ram) -> Guest {
        let spec = Spec {
            qemu: self.qemu,
            ..Spec::new(name, ram)
        };
        Guest::start(
            &self.lab,
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            &self.tmp.path().join(name),
            spec,
        )
    }

    /// A shared-RAM and a copied-RAM guest, booted in parallel, their patterns written.
    fn two_guests(&self) -> (Guest, Guest) {
        let (shared, copied) = std::thread::scope(|s| {
            let a = s.spawn(|| self.guest("fs", Ram::SharedFile));
            let b = s.spawn(|| self.guest("fc", Ram::Anonymous));
            (a.join().unwrap(), b.join().unwrap())
        });
        shared.write_patterns(41);
        copied.write_patterns(51);
        (shared, copied)
    }

    fn journal(&self) -> PathBuf {
        self.tmp.path().join("journal")
    }

    fn plan(&self, guests: &[(&Guest, &str)]) -> String {
        guests::plan_with(&self.lab, &self.journal(), guests)
    }

    fn kup(&self) -> Kup {
        Kup::new().timeout(Duration::from_secs(120))
    }

    fn rehearse(&self, text: &str) -> Kup {
        self.kup()
            .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
            .plan(text)
    }

    /// A rehearsal of `text` with the QMP reply timeout shortened to 1 s (a wedged QEMU's wait), and how long it took.
    fn rehearse_wedged(&self, text: &str) -> (support::Run, Duration) {
        let started = std::time::Instant::now();
        let run = self
            .rehearse(text)
            .env("KUP_FAULT_QMP_TIMEOUT_MS", "1000")
            .run();
        (run, started.elapsed())
    }

    fn on_journal(&self, command: &str) -> Kup {
        self.kup()
            .args(["plan", command, "--journal"])
            .arg(self.journal())
    }

    fn status(&self) -> serde_json::Value {
        self.kup()
            .args(["plan", "status", "--format", "json", "--journal"])
            .arg(self.journal())
            .run()
            .success()
            .stdout_json()
    }
}

/// Lets a SIGSTOPped QEMU go on (nothing if it is gone).
fn sigcont(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    );
}

/// The names of the files in a guest's state directory.
fn state_files(g: &Guest) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&g.state)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `kup plan apply --rehearse` of two real guests killed right after the copied guest's save is journalled, then
/// `kup plan abort`: both guests run again in their old QEMUs with their memory intact, nothing half-written is
/// left, the journal ends rolled back, and a second abort (or one after the kexec record) is refused.
#[test]
fn abort_after_a_crash_at_the_save_resumes_both_real_guests() {
    let f = Fixture::new("abort");
    let (shared, copied) = f.two_guests();
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let text = f.plan(&[(&shared, "shared"), (&copied, "copy")]);

    f.rehearse(&text)
        .crash_after_record("step-done:vm:fc:save")
        .run()
        .killed("after the copied guest's save");
    for g in [&shared, &copied] {
        let status = g.status();
        assert!(
            ["paused", "postmigrate"].contains(&status.as_str()),
            "{} after the crash: {status}",
            g.spec.name
        );
    }

    let run = f.on_journal("abort").run().success();
    run.stderr_has("kup: rolled back: aborted by the operator");
    for (g, seed, pid) in [(&shared, 41, old[0]), (&copied, 51, old[1])] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        assert_eq!(g.pid(), Some(pid), "{} runs in its old QEMU", g.spec.name);
        g.check_patterns(seed);
        // Nothing half-written is left, nor a digest of RAM that has moved on; a complete state file is kept (the
        // next apply's preflight moves it aside).
        let files = state_files(g);
        assert!(
            !files
                .iter()
                .any(|n| n.ends_with(".partial") || n.ends_with(".ram-digest")),
            "{}: {files:?}",
            g.spec.name
        );
    }
    assert!(state_files(&copied).contains(&"vmstate".to_owned()));
    let status = f.status();
    assert_eq!(status["state"], "rolled-back", "{status}");
    for step in ["vm:fs:pause", "vm:fc:pause"] {
        let s = status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == step)
            .unwrap();
        assert_eq!(s["state"], "rolled-back", "{step}: {s}");
    }
    f.on_journal("abort")
        .run()
        .status(3)
        .stderr_has("nothing to abort");

    // Past the kexec record (a rehearsal's no-op kexec), abort is refused and resume finishes the plan.
    f.rehearse(&text)
        .crash_after_record("kexec")
        .run()
        .killed("after the kexec record");
    f.on_journal("abort")
        .run()
        .status(3)
        .stderr_has("past the point of no return");
    f.on_journal("resume").run().success();
    for (g, seed) in [(&shared, 41), (&copied, 51)] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        g.check_patterns(seed);
    }
}

/// The journal records of the apply directories under `journal`, oldest apply first.
fn records(journal: &Path) -> Vec<Vec<serde_json::Value>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(journal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("journal.jsonl").is_file())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| {
            std::fs::read_to_string(d.join("journal.jsonl"))
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .collect()
}

fn has(records: &[serde_json::Value], event: &str, step: &str) -> bool {
    records
        .iter()
        .any(|r| r["event"] == event && r["step"] == step)
}

/// kup SIGKILLed right after each journal record in turn of a rehearsal with two real guests (shared and copied
/// RAM), then `kup plan resume` (with `--rerun` of each restore the kill interrupted, as the refusal tells the
/// operator: a restore run again first ends the QEMU its first attempt left): after each, both guests run with their
/// memory byte-identical, each was restored exactly once, and while the plan was unfinished no state file of a
/// saved guest was missing.
#[test]
fn killed_after_every_record_with_real_guests_resume_finishes_and_nothing_is_lost() {
    let f = Fixture::new("every-record");
    let (shared, copied) = f.two_guests();
    let text = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    // A whole rehearsal first: how many records one has.
    f.rehearse(&text).run().success();
    let total = records(&f.journal()).last().unwrap().len();
    assert!(total > 20, "{total} records");
    let started = std::time::Instant::now();
    for n in 1..=total {
        f.rehearse(&text)
            .crash_after_record(n.to_string())
            .run()
            .killed(&format!("record {n}"));
        let crashed = records(&f.journal()).pop().unwrap();
        assert_eq!(crashed.len(), n, "killed right after record {n}");
        let last = &crashed[n - 1];
        // Nothing deleted early: a guest saved (and not yet verified running) has its state file.
        for g in [&shared, &copied] {
            let name = &g.spec.name;
            if has(&crashed, "step-done", &format!("vm:{name}:save"))
                && !has(&crashed, "step-done", "verify")
            {
                assert!(
                    g.state.join("vmstate").is_file(),
                    "record {n} ({last}): {name}'s state file is gone before verify"
                );
            }
        }
        // A non-idempotent step (a restore) found interrupted stops resume; the operator checks what it did and
        // runs it again (a restore first ends whatever QEMU it left on the socket), as the message says — once per
        // step the kill interrupted (two restores run in parallel).
        let mut rerun: Vec<String> = Vec::new();
        loop {
            let mut resume = f.on_journal("resume");
            for step in &rerun {
                resume = resume.args(["--rerun", step]);
            }
            let resume = resume.run();
            match resume.code() {
                Some(0) => break,
                Some(6) if rerun.len() < 2 => {
                    let stderr = resume.stderr();
                    let step = stderr
                        .split("step ")
                        .nth(1)
                        .and_then(|t| t.split(" was interrupted").next())
                        .unwrap_or_else(|| panic!("record {n} ({last}): {stderr}"));
                    assert!(step.ends_with(":restore"), "record {n}: {stderr}");
                    rerun.push(step.to_owned());
                }
                _ => panic!("record {n} ({last}):\n{}", resume.stderr()),
            }
        }
        let done = records(&f.journal()).pop().unwrap();
        assert_eq!(
            done.last().unwrap()["state"],
            "completed",
            "record {n} ({last})"
        );
        for (g, seed) in [(&shared, 41), (&copied, 51)] {
            let name = &g.spec.name;
            assert_eq!(g.status(), "running", "record {n} ({last}): {name}");
            g.check_patterns(seed);
            let restored = done
                .iter()
                .filter(|r| r["event"] == "step-done" && r["step"] == format!("vm:{name}:restore"))
                .count();
            assert_eq!(
                restored, 1,
                "record {n} ({last}): {name} restored {restored} times"
            );
            assert!(
                !g.state.join("vmstate").exists(),
                "record {n}: verify left {name}'s state"
            );
        }
    }
    eprintln!("{total} crash points in {:?}", started.elapsed());
}

/// Each guest runs, in the QEMU of the PID given, with the memory of its seed.
fn in_old_qemus(when: &str, guests: &[(&Guest, u64, u32)]) {
    for &(g, seed, pid) in guests {
        assert_eq!(g.status(), "running", "{when}: {}", g.spec.name);
        assert_eq!(
            g.pid(),
            Some(pid),
            "{when}: {} in its old QEMU",
            g.spec.name
        );
        g.check_patterns(seed);
    }
}

/// A small ext4 file system on a loop device, mounted for a guest's state: a full disk, then a read-only one.
struct Loop {
    mount: PathBuf,
}

impl Loop {
    fn new(image: &Path, mount: &Path, mib: u64) -> Loop {
        let file = std::fs::File::create(image).unwrap();
        file.set_len(mib << 20).unwrap();
        support::run_ok(&["mkfs.ext4", "-q", &image.to_string_lossy()]);
        std::fs::create_dir_all(mount).unwrap();
        support::run_ok(&[
            "mount",
            "-o",
            "loop",
            &image.to_string_lossy(),
            &mount.to_string_lossy(),
        ]);
        Loop {
            mount: mount.to_owned(),
        }
    }

    fn read_only(&self) {
        support::run_ok(&["mount", "-o", "remount,ro", &self.mount.to_string_lossy()]);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
    }
}

/// The plan of `plan_with` with guest `name`'s state directory moved to `state`.
fn with_state(text: &str, g: &Guest, state: &Path) -> String {
    let from = format!(
        "state = {}",
        toml::Value::String(g.state.display().to_string())
    );
    let to = format!(
        "state = {}",
        toml::Value::String(state.display().to_string())
    );
    assert!(text.contains(&from), "{text}");
    text.replace(&from, &to)
}

/// Faults at a VM's steps before the kexec, with two real guests, each ending with every guest running (or, when
/// its QEMU is gone, the operator told which): the copied guest's state on a full disk (ENOSPC while saving), then
/// on a read-only one; then the other guest's QEMU killed between its pause and its save (its socket removed is
/// `a_qmp_socket_removed_before_the_pause_fails_clearly_and_every_guest_runs`).
#[test]
fn faults_at_vm_steps_leave_every_guest_running_or_reported() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: no loop device to mount, nothing tested");
        return;
    }
    let f = Fixture::new("steps");
    let (shared, copied) = f.two_guests();
    let disk = Loop::new(
        &f.tmp.path().join("small.img"),
        &f.tmp.path().join("small"),
        4,
    );
    let state = disk.mount.join("fc");
    let text = with_state(
        &f.plan(&[(&shared, "shared"), (&copied, "copy")]),
        &copied,
        &state,
    );
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let intact = |when: &str| in_old_qemus(when, &[(&shared, 41, old[0]), (&copied, 51, old[1])]);

    // ENOSPC: the copied guest's state does not fit in 4 MiB.
    let run = f
        .rehearse(&text)
        .run()
        .status(5)
        .stderr_has("step vm:fc:save failed");
    assert!(
        run.stderr().contains("No space") || run.stderr().contains("could not be written"),
        "{}",
        run.stderr()
    );
    intact("disk full");
    // No half-written state is left to be taken for a good one (the pause's migration record may stay).
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "vmstate.migration")
        .collect();
    assert!(left.is_empty(), "left on the full disk: {left:?}");
    assert_eq!(f.status()["state"], "rolled-back");

    // The state directory on a read-only file system.
    disk.read_only();
    // Found by the preflight, before any guest pauses.
    f.rehearse(&text)
        .run()
        .status(5)
        .stderr_has("step preflight failed")
        .stderr_has(format!(
            "the state directory {} is not writable: Read-only file system",
            state.display()
        ));
    intact("read-only");

    // The shared guest's QEMU killed after its pause, before its save.
    let kill = format!(
        "\n[[step]]\nname = \"kill-qemu\"\nrun = [\"/bin/kill\", \"-9\", \"{}\"]\nafter = [\"vm:fs:pause\"]\nbefore = [\"vm:fs:save\"]\n",
        old[0]
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &kill;
    f.rehearse(&plan)
        .run()
        .status(6)
        .stderr_has("step vm:fs:save failed")
        .stderr_has("rollback incomplete, check by hand: vm:fs:pause");
    assert_eq!(copied.status(), "running", "the other guest");
    copied.check_patterns(51);
    assert!(!guests::alive(old[0]));
    let status = f.status();
    assert_eq!(status["state"], "failed", "{status}");
}

/// After the (rehearsed) kexec, the copied guest's restore fails — its state file is not where the restore reads
/// it: the other guest is restored and runs, the failed one is reported with what to do, `verify` (which deletes
/// state files) does not run, and once the file is back `kup plan resume` restores it with its memory intact.
#[test]
fn a_failed_restore_after_the_kexec_is_reported_and_resume_recovers_it() {
    let f = Fixture::new("restore");
    let (shared, copied) = f.two_guests();
    let vmstate = copied.state.join("vmstate");
    let hidden = copied.state.join("hidden");
    let hide = format!(
        "\n[[step]]\nname = \"hide-state\"\nrun = [\"/bin/mv\", {}, {}]\nafter = [\"kexec\"]\nbefore = [\"vm:fc:restore\"]\n",
        toml::Value::String(vmstate.display().to_string()),
        toml::Value::String(hidden.display().to_string())
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &hide;
    f.rehearse(&plan)
        .run()
        .status(6)
        .stderr_has("after the kexec: vm:fc:restore")
        .stderr_has(format!("state file {}", vmstate.display()))
        .stderr_has("run `kup plan resume` to retry");
    reported(&f, &shared, "vm:fc:restore", &hidden, "state hidden");
    // The operator puts it back and resumes: the restore runs again (the QEMU the failed one started is ended).
    std::fs::rename(&hidden, &vmstate).unwrap();
    f.on_journal("resume").run().success();
    recovered(&f, (&shared, &copied), &vmstate, "state put back");
}

/// A wedged QEMU (SIGSTOPped: its QMP socket accepts but never answers) at the pause: the QMP timeout fires
/// (shortened by the test hook `KUP_FAULT_QMP_TIMEOUT_MS`) instead of hanging the update, the other guest is rolled
/// back and runs, and once the wedged one runs again (SIGCONT) it was never stopped.
#[test]
fn a_hung_qemu_at_the_pause_times_out_and_the_rest_rolls_back() {
    let f = Fixture::new("hung");
    let (shared, copied) = f.two_guests();
    let pid = shared.pid().unwrap();
    // The copied guest pauses first; then the shared one's QEMU is stopped, right before its pause.
    let stop = format!(
        "\n[[step]]\nname = \"wedge\"\nrun = [\"/bin/kill\", \"-STOP\", \"{pid}\"]\nafter = [\"vm:fc:pause\"]\nbefore = [\"vm:fs:pause\"]\n"
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &stop;
    let (run, took) = f.rehearse_wedged(&plan);
    sigcont(pid);
    // The wedged guest's pause never sent `stop`: its undo fails too (said on the progress lines), which a
    // half-done step's undo may, and the rollback is complete.
    run.status(5)
        .stderr_has("rolled back: step vm:fs:pause failed")
        .stderr_has("QEMU sent no greeting within 1 s")
        .stderr_has("UNDO FAILED vm:fs:pause")
        .stderr_has("undone vm:fc:pause");
    assert!(took < Duration::from_secs(30), "{took:?}");
    for (g, seed) in [(&shared, 41), (&copied, 51)] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        g.check_patterns(seed);
    }
}

/// A custom step `name` running `argv` between steps `after` and `before`.
fn custom(name: &str, argv: &[&str], after: &str, before: &str) -> String {
    let argv: Vec<String> = argv
        .iter()
        .map(|a| toml::Value::String((*a).to_owned()).to_string())
        .collect();
    format!(
        "\n[[step]]\nname = \"{name}\"\nrun = [{}]\nafter = [\"{after}\"]\nbefore = [\"{before}\"]\n",
        argv.join(", ")
    )
}

/// A custom step `name` between `restore` and `resume` of guest fc that runs `argv` once: a resume that runs the
/// restore again runs it again too (what follows a step run again acted on what its first run made), and then finds
/// no trigger file left (`find` with no match runs nothing and succeeds).
fn once_before_the_resume(f: &Fixture, name: &str, argv: &[&str]) -> String {
    let dir = f.tmp.path().display().to_string();
    std::fs::write(f.tmp.path().join(name), "").unwrap();
    let mut find = vec![
        "/usr/bin/find",
        &dir,
        "-maxdepth",
        "1",
        "-name",
        name,
        "-exec",
    ];
    find.extend_from_slice(argv);
    find.extend([";", "-delete"]);
    custom(name, &find, "vm:fc:restore", "vm:fc:resume")
}

/// After the kexec, step `failed` of the copied guest failed: the other guest, `shared`, runs with the memory of
/// seed 41, the apply is failed there, `verify` (which deletes state files) did not run, and the state `kept` is on
/// disk.
fn reported(f: &Fixture, shared: &Guest, failed: &str, kept: &Path, when: &str) {
    assert_eq!(shared.status(), "running", "{when}");
    shared.check_patterns(41);
    let status = f.status();
    assert_eq!(status["state"], "failed", "{when}: {status}");
    assert_eq!(step_state(&status, failed), "failed", "{when}");
    assert_eq!(step_state(&status, "verify"), "pending", "{when}");
    assert!(kept.is_file(), "{when}: the state was deleted");
}

/// The end of a recovered apply: both guests run with the memory of their seeds (41 and 51), `verify` removed the copied
/// guest's state file `vmstate`, and the journal says completed.
fn recovered(f: &Fixture, (shared, copied): (&Guest, &Guest), vmstate: &Path, when: &str) {
    for (g, seed) in [(shared, 41), (copied, 51)] {
        assert_eq!(g.status(), "running", "{when}: {}", g.spec.name);
        g.check_patterns(seed);
    }
    assert!(
        !vmstate.exists(),
        "{when}: verify removes it once the guest runs"
    );
    assert_eq!(f.status()["state"], "completed", "{when}");
}

/// The state of step `id` in `kup plan status --format json`.
fn step_state(status: &serde_json::Value, id: &str) -> serde_json::Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["state"].clone())
        .unwrap_or_else(|| panic!("no step {id}: {status}"))
}

/// After the (rehearsed) kexec, the copied guest's new QEMU is killed (SIGKILL, by its pidfile) between its restore
/// and its resume (the state loaded, `cont` not sent): the other guest is restored and runs, the failed one is
/// reported with what to do, its state file is kept (`verify` does not run), and `kup plan resume --rerun
/// vm:fc:restore` loads it again with its memory byte-identical. Then the same with the QEMU wedged (SIGSTOP) there:
/// the resume's QMP wait times out instead of hanging, and once the QEMU is let go (SIGCONT), `kup plan resume`
/// sends the `cont` it missed.
#[test]
fn a_qemu_killed_or_wedged_before_its_resume_is_reported_and_resume_recovers_it() {
    let f = Fixture::new("resume");
    let (shared, copied) = f.two_guests();
    let vmstate = copied.state.join("vmstate");
    let pidfile = copied.pidfile.display().to_string();
    let intact = |when: &str| recovered(&f, (&shared, &copied), &vmstate, when);

    // Killed, once.
    let kill = once_before_the_resume(
        &f,
        "kill-qemu",
        &["/usr/bin/pkill", "-KILL", "-F", &pidfile],
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &kill;
    f.rehearse(&plan)
        .run()
        .status(6)
        .stderr_has("after the kexec: vm:fc:resume")
        .stderr_has("run `kup plan resume --rerun vm:fc:restore` to load its state again");
    reported(
        &f,
        &shared,
        "vm:fc:resume",
        &vmstate,
        "killed before its resume",
    );
    // A plain resume only retries the `cont`, which has no QEMU to go to: still failed, the state still kept.
    f.on_journal("resume")
        .run()
        .status(6)
        .stderr_has("after the kexec: vm:fc:resume");
    assert!(vmstate.is_file(), "the state was deleted");
    f.on_journal("resume")
        .args(["--rerun", "vm:fc:restore"])
        .run()
        .success()
        .stderr_has("start step:kill-qemu");
    assert!(!f.tmp.path().join("kill-qemu").exists());
    intact("killed before its resume");

    // Wedged: SIGSTOPped between its restore and its resume.
    let stop = custom(
        "wedge",
        &["/usr/bin/pkill", "-STOP", "-F", &pidfile],
        "vm:fc:restore",
        "vm:fc:resume",
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &stop;
    let (run, took) = f.rehearse_wedged(&plan);
    let stopped = copied.pid().unwrap();
    // The SIGCONT before any assertion can fail: a stopped QEMU would hang the other checks and the fixture's end.
    sigcont(stopped);
    run.status(6)
        .stderr_has("after the kexec: vm:fc:resume")
        .stderr_has("within 1 s");
    assert!(took < Duration::from_secs(30), "{took:?}");
    reported(
        &f,
        &shared,
        "vm:fc:resume",
        &vmstate,
        "wedged before its resume",
    );
    // Let go, the QEMU still holds the loaded guest, paused: a plain resume sends the `cont` it missed.
    assert_eq!(copied.status(), "paused");
    f.on_journal("resume").run().success();
    assert_eq!(copied.pid(), Some(stopped), "not restored again");
    intact("wedged before its resume");
}

/// Whether process `pid` has `file` open.
fn has_open(pid: u32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == file))
    })
}

/// Sends `signal` to guest `g`'s next QEMU (its pidfile no longer `old`) while it loads its state — the state
/// file open in it (`file:` on QEMU >= 8.2) or in the `cat` it started (`exec:cat` on 7.2) — and returns its PID; `None` if
/// `over` is set first (the run ended without a load to hit).
fn signal_while_loading(
    g: &Guest,
    old: u32,
    signal: nix::sys::signal::Signal,
    over: &std::sync::atomic::AtomicBool,
) -> Option<u32> {
    let state = g.state.join("vmstate");
    // 7.2's `exec:cat PATH`: a `cat` (child of QEMU's `sh -c`, or that shell exec'd) holding the state file; only
    // the loader has it open during the restore.
    let cat_loading = || {
        std::fs::read_dir("/proc").is_ok_and(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .any(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "cat")
                        && has_open(p, &state)
                })
        })
    };
    while !over.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(pid) = g.pid().filter(|&p| p != old && guests::alive(p)) {
            if has_open(pid, &state) || cat_loading() {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// After the (rehearsed) kexec, the copied guest's new QEMU is killed (SIGKILL) while it loads its state, then
/// wedged (SIGSTOP) there: each time the other guest is restored and runs, the restore fails and is reported (the
/// wedged one within the QMP timeout, shortened by `KUP_FAULT_QMP_TIMEOUT_MS`, instead of hanging), its state file
/// is kept (`verify` does not run), and `kup plan resume` runs the failed restore again — ending the QEMU the first
/// attempt left — with the memory byte-identical.
#[test]
fn a_qemu_killed_or_wedged_during_its_restore_is_reported_and_resume_recovers_it() {
    use nix::sys::signal::Signal;
    let f = Fixture::new("restore-qemu");
    let (shared, copied) = f.two_guests();
    let vmstate = copied.state.join("vmstate");
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    for (signal, said) in [
        (Signal::SIGKILL, "exited or was killed"),
        (Signal::SIGSTOP, "timed out after 1 s (QEMU wedged?)"),
    ] {
        let old = copied.pid().unwrap();
        let over = std::sync::atomic::AtomicBool::new(false);
        let (run, hit) = std::thread::scope(|s| {
            let hit = s.spawn(|| signal_while_loading(&copied, old, signal, &over));
            let (run, _) = f.rehearse_wedged(&plan);
            over.store(true, std::sync::atomic::Ordering::SeqCst);
            (run, hit.join().unwrap())
        });
        let hit = hit.unwrap_or_else(|| panic!("{signal}: no load seen:\n{}", run.stderr()));
        // Let a wedged QEMU go before any assertion can fail (the fixture's end would wait for it).
        sigcont(hit);
        run.status(6)
            .stderr_has("after the kexec: vm:fc:restore")
            .stderr_has(said)
            .stderr_has("run `kup plan resume` to retry");
        reported(&f, &shared, "vm:fc:restore", &vmstate, signal.as_str());
        f.on_journal("resume").run().success();
        assert!(
            !guests::alive(hit),
            "{signal}: the first attempt's QEMU was left"
        );
        recovered(&f, (&shared, &copied), &vmstate, signal.as_str());
    }
}

/// The shared guest's QMP socket removed while its QEMU runs (moved away: to kup the same as unlinked, and the test
/// can put it back to look at the guest): after the preflight, before the pause, the pause fails and the rollback
/// resumes the other guest; at the preflight, nothing pauses. Each time the error names the socket, and both
/// guests run on in their QEMUs with their memory intact.
#[test]
fn a_qmp_socket_removed_before_the_pause_fails_clearly_and_every_guest_runs() {
    let f = Fixture::new("socket");
    let (shared, copied) = f.two_guests();
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let socket = shared.qmp.display().to_string();
    let gone = format!("{socket}.gone");
    let back = || std::fs::rename(&gone, &socket).unwrap();
    let intact = |when: &str| in_old_qemus(when, &[(&shared, 41, old[0]), (&copied, 51, old[1])]);

    // Between the preflight and the pause; the copied guest pauses first.
    let remove = custom(
        "remove-socket",
        &["/bin/mv", &socket, &gone],
        "vm:fc:pause",
        "vm:fs:pause",
    );
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    // Its pause never sent `stop`, so its undo (a `cont`) fails too, which a half-done step's undo may: said on the
    // progress lines, the rollback complete.
    f.rehearse(&(plan.clone() + &remove))
        .run()
        .status(5)
        .stderr_has(format!(
            "rolled back: step vm:fs:pause failed: QMP {socket}: no such socket: is QEMU running"
        ))
        .stderr_has("UNDO FAILED vm:fs:pause")
        .stderr_has("undone vm:fc:pause");
    assert_eq!(f.status()["state"], "rolled-back");
    back();
    intact("removed before the pause");

    // Already gone at the preflight.
    std::fs::rename(&socket, &gone).unwrap();
    let run = f.rehearse(&plan).run();
    back();
    // As root, the first to look is the owner check; otherwise the QMP handshake.
    let run = run.status(5).stderr_has("step preflight failed");
    assert!(
        run.stderr()
            .contains(&format!("cannot check {socket}: No such file or directory"))
            || run
                .stderr()
                .contains(&format!("QMP {socket}: no such socket")),
        "{}",
        run.stderr()
    );
    intact("removed before the preflight");
}

/// After the (rehearsed) kexec, the copied guest's QMP socket removed between its restore and its resume: the
/// resume fails naming the socket, the other guest runs, the state file is kept; the guest sits loaded and paused in
/// a QEMU kup cannot reach, so the operator ends that QEMU, as the failure says, and `kup plan resume --rerun
/// vm:fc:restore` loads the state again, memory byte-identical.
#[test]
fn a_qmp_socket_removed_before_the_resume_is_reported_and_the_restore_runs_again() {
    let f = Fixture::new("socket-resume");
    let (shared, copied) = f.two_guests();
    let socket = copied.qmp.display().to_string();
    let vmstate = copied.state.join("vmstate");
    let gone = format!("{socket}.gone");
    let remove = once_before_the_resume(&f, "remove-socket", &["/bin/mv", &socket, &gone]);
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]) + &remove;
    f.rehearse(&plan)
        .run()
        .status(6)
        .stderr_has(format!(
            "after the kexec: vm:fc:resume: QMP {socket}: no such socket"
        ))
        .stderr_has("end it if it still runs, then run `kup plan resume --rerun vm:fc:restore`");
    reported(&f, &shared, "vm:fc:resume", &vmstate, "socket removed");
    // The unreachable QEMU holds the guest's pidfile: a restore run again before it ends fails, and keeps the state.
    let stranded = copied.pid().unwrap();
    assert!(guests::alive(stranded));
    f.on_journal("resume")
        .args(["--rerun", "vm:fc:restore"])
        .run()
        .status(6)
        .stderr_has("after the kexec: vm:fc:restore");
    assert!(vmstate.is_file(), "the state was deleted");
    guests::kill_and_wait(stranded);
    std::fs::remove_file(&gone).unwrap();
    f.on_journal("resume").run().success();
    recovered(&f, (&shared, &copied), &vmstate, "socket removed");
}
