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
    /// The journal root the plans name.
    journal: PathBuf,
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
        let journal = tmp.path().join("journal");
        Fixture {
            lab,
            tmp,
            qemu,
            journal,
        }
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
        self.journal.clone()
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

/// The files in directory `dir` (none when it is gone), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
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
        let files = names_in(&g.state);
        assert!(
            !files
                .iter()
                .any(|n| n.ends_with(".partial") || n.ends_with(".ram-digest")),
            "{}: {files:?}",
            g.spec.name
        );
    }
    assert!(names_in(&copied.state).contains(&"vmstate".to_owned()));
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
        resume_to_the_end(&f, &format!("record {n} ({last})"));
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

/// `kup plan resume` until it succeeds: a non-idempotent step (a restore) found interrupted stops it; the operator
/// checks what it did and runs it again (a restore first ends whatever QEMU it left on the socket), as the message
/// says — once per step interrupted (two restores run in parallel).
fn resume_to_the_end(f: &Fixture, when: &str) {
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
                    .unwrap_or_else(|| panic!("{when}: {stderr}"));
                assert!(step.ends_with(":restore"), "{when}: {stderr}");
                rerun.push(step.to_owned());
            }
            _ => panic!("{when}:\n{}", resume.stderr()),
        }
    }
}

/// A full journal disk after the (rehearsed) kexec: kup killed right after the kexec record (as a real kexec
/// ends it), then the journal's file system filled (the journal on a small ext4 of its own). `kup plan resume`
/// fails, saying the journal cannot be written and to run resume again once there is room; nothing is lost — each
/// guest's state file is still there (`verify` did not run). Once the space is freed, resume (with `--rerun` of a
/// restore it may have interrupted, as it says) finishes: both guests run, memory byte-identical.
#[test]
fn a_full_journal_disk_after_the_kexec_stops_resume_clearly_and_loses_nothing() {
    let Some((mut f, (shared, copied), disk)) = on_a_small_disk("journal-full", 8) else {
        return;
    };
    f.journal = disk.mount.join("journal");
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    f.rehearse(&plan)
        .crash_after_record("kexec")
        .run()
        .killed("after the kexec record");
    let space = fill(&disk.mount);
    let run = f.on_journal("resume").run();
    let stderr = run.stderr();
    // Where it stops depends on how many records fit in the journal's last block: before it ran anything, or
    // part-way (a restore done but not recorded).
    assert!(matches!(run.code(), Some(2 | 6)), "{stderr}");
    for said in [
        "No space left on device",
        "once its file system has room again, run `kup plan resume`",
    ] {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
    for g in [&shared, &copied] {
        assert!(
            g.state.join("vmstate").is_file(),
            "{}: the state file is gone with the journal full",
            g.spec.name
        );
    }
    std::fs::remove_file(&space).unwrap();
    resume_to_the_end(&f, "the journal's disk freed");
    for (g, seed) in [(&shared, 41), (&copied, 51)] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        g.check_patterns(seed);
        assert!(!g.state.join("vmstate").exists(), "verify left it");
    }
    assert_eq!(f.status()["state"], "completed");
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

/// Two guests (`Fixture::two_guests`) and a small ext4 of `mib` MiB mounted for the test; `None`, said, when not
/// root (no loop device to mount).
fn on_a_small_disk(name: &str, mib: u64) -> Option<(Fixture, (Guest, Guest), Loop)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: no loop device to mount, nothing tested");
        return None;
    }
    let f = Fixture::new(name);
    let guests = f.two_guests();
    let disk = Loop::new(
        &f.tmp.path().join("small.img"),
        &f.tmp.path().join("small"),
        mib,
    );
    Some((f, guests, disk))
}

/// The copied guest's state directory on `disk`, and the plan of the two guests with it there.
fn fc_state_on(f: &Fixture, (shared, copied): (&Guest, &Guest), disk: &Loop) -> (PathBuf, String) {
    let state = disk.mount.join("fc");
    let text = with_state(
        &f.plan(&[(shared, "shared"), (copied, "copy")]),
        copied,
        &state,
    );
    (state, text)
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

/// The partial state a failed save of guest state directory `state` kept aside: it exists, is not under a name a
/// restore reads, holds what the save wrote, and `stderr` names it. Its path.
fn kept_partial(state: &Path, stderr: &str) -> PathBuf {
    let kept = state.join("vmstate.partial.kept-1");
    let names = names_in(state);
    assert!(
        kept.is_file(),
        "no partial state kept aside: {names:?}\n{stderr}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n == "vmstate" || n == "vmstate.partial"),
        "a state under a name a restore or a save uses: {names:?}"
    );
    assert!(
        std::fs::metadata(&kept).unwrap().len() > 0,
        "empty: {kept:?}"
    );
    assert!(
        stderr.contains(&format!("kept aside as {}", kept.display())),
        "the operator is not told where it is:\n{stderr}"
    );
    kept
}

/// ENOSPC: the copied guest's state, and the journal, on a 4 MiB ext4 its state does not fit in. The save fails
/// and the rollback resumes both guests in their old QEMUs, memory intact, although the disk stays full: the
/// partial state is kept aside (not removed), named to the operator with the space it takes. Then the disk full
/// before the save: the journal cannot be written, says so and what to do, and the rollback still resumes both
/// guests; once the operator frees the disk, `kup plan abort` records the rollback.
#[test]
fn enospc_during_a_copy_save_keeps_the_partial_state_aside_and_every_guest_runs() {
    let Some((mut f, (shared, copied), disk)) = on_a_small_disk("enospc", 4) else {
        return;
    };
    f.journal = disk.mount.join("journal");
    let (state, text) = fc_state_on(&f, (&shared, &copied), &disk);
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let intact = |when: &str| in_old_qemus(when, &[(&shared, 41, old[0]), (&copied, 51, old[1])]);

    let run = f.rehearse(&text).run();
    let stderr = run.stderr();
    assert!(
        stderr.contains("No space") || stderr.contains("could not be written"),
        "{stderr}"
    );
    intact("disk full");
    let kept = kept_partial(&state, &stderr);
    assert!(stderr.contains("a full disk stays full"), "{stderr}");
    let run = run.stderr_has("step vm:fc:save failed");
    // Whether the records after the failure still fit depends on what the file system gives back once the
    // failed writer's reservations are released: either the rollback is recorded, or the journal says it is not.
    if run.code() == Some(6) {
        unrecorded_rollback(&f, run, &kept, &intact);
    } else {
        run.status(5);
        assert_eq!(f.status()["state"], "rolled-back");
        std::fs::remove_file(&kept).unwrap();
    }

    // The same disk full before the save starts (the test fills it while a custom step holds the save back):
    // the journal cannot be written from there on, deterministically, and the rollback resumes both guests all
    // the same.
    let mut gate = Gate::new(&f, "fill-gate");
    let plan = text.clone() + &gate.step("vm:fc:pause", "vm:fc:save");
    let run = std::thread::scope(|s| {
        let run = s.spawn(|| f.rehearse(&plan).run());
        wait_status(&copied, "paused");
        let fill = fill(&disk.mount);
        gate.open();
        (run.join().unwrap(), fill)
    });
    let (run, fill) = run;
    intact("journal disk full before the save");
    let run = run
        .stderr_has("undone vm:fs:pause")
        .stderr_has("undone vm:fc:pause");
    // What the save wrote, if it started, is on the full disk too: nothing to look at, deleted with the fill.
    let _ = std::fs::remove_file(state.join("vmstate.partial.kept-1"));
    unrecorded_rollback(&f, run, &fill, &intact);
}

/// A rollback the journal could not record, its disk full: `run` says so and that `kup plan abort` records it;
/// once the operator deletes `space` (what fills the disk), abort records the rollback and the guests are still
/// as `intact` checks them.
fn unrecorded_rollback(f: &Fixture, run: support::Run, space: &Path, intact: &dyn Fn(&str)) {
    run.status(6)
        .stderr_has("the journal cannot be written")
        .stderr_has("No space left on device")
        .stderr_has("run `kup plan abort` to record the rollback");
    std::fs::remove_file(space).unwrap();
    f.on_journal("abort")
        .run()
        .success()
        .stderr_has("kup: rolled back");
    assert_eq!(f.status()["state"], "rolled-back");
    intact("aborted once there was room");
}

/// A custom step that waits for the test: `flock FILE true` while the test holds FILE's lock.
struct Gate {
    name: String,
    file: PathBuf,
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl Gate {
    fn new(f: &Fixture, name: &str) -> Gate {
        let file = f.tmp.path().join(name);
        let lock = nix::fcntl::Flock::lock(
            std::fs::File::create(&file).unwrap(),
            nix::fcntl::FlockArg::LockExclusive,
        )
        .unwrap();
        Gate {
            name: name.to_owned(),
            file,
            lock: Some(lock),
        }
    }

    /// The step, between steps `after` and `before`.
    fn step(&self, after: &str, before: &str) -> String {
        let file = self.file.display().to_string();
        custom(
            &self.name,
            &["/usr/bin/flock", &file, "/bin/true"],
            after,
            before,
        )
    }

    /// Lets the step end.
    fn open(&mut self) {
        self.lock.take();
    }
}

/// Waits until guest `g` reports `status` (a QMP connection of the test's own, between kup's).
fn wait_status(g: &Guest, status: &str) {
    let started = std::time::Instant::now();
    while g.status() != status {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} never {status}",
            g.spec.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fills the file system of `dir` until not one byte more fits, with the file `dir/fill` (written, synced and
/// written again: delayed allocation gives back what it reserved once the data is on disk). Its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("fill");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    for chunk in [64 << 10, 4 << 10, 1 << 10, 1, 1, 1] {
        let bytes = vec![0x5a_u8; chunk];
        while file.write_all(&bytes).is_ok() {}
        let _ = file.sync_all();
    }
    assert!(file.write_all(&[0]).and_then(|()| file.sync_all()).is_err());
    path
}

/// Faults at a VM's steps before the kexec, with two real guests, each ending with every guest running (or, when
/// its QEMU is gone, the operator told which): the copied guest's state on a read-only disk, then the other
/// guest's QEMU killed between its pause and its save (its socket removed is
/// `a_qmp_socket_removed_before_the_pause_fails_clearly_and_every_guest_runs`, ENOSPC
/// `enospc_during_a_copy_save_keeps_the_partial_state_aside_and_every_guest_runs`).
#[test]
fn faults_at_vm_steps_leave_every_guest_running_or_reported() {
    let Some((f, (shared, copied), disk)) = on_a_small_disk("steps", 4) else {
        return;
    };
    let (state, text) = fc_state_on(&f, (&shared, &copied), &disk);
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let intact = |when: &str| in_old_qemus(when, &[(&shared, 41, old[0]), (&copied, 51, old[1])]);

    // The state directory on a read-only file system.
    std::fs::create_dir_all(&state).unwrap();
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

/// Does `act` to guest `g`'s next QEMU (its pidfile no longer `old`) while it loads its state — the state file
/// open in it (`file:` on QEMU >= 8.2) or in the `cat` it started (`exec:cat` on 7.2) — and returns its PID;
/// `None` if `over` is set first (the run ended without a load to hit).
fn while_loading(
    g: &Guest,
    old: u32,
    over: &std::sync::atomic::AtomicBool,
    act: impl FnOnce(u32),
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
    let pid = || g.pid().filter(|&p| p != old && guests::alive(p));
    when(over, pid, |pid| has_open(pid, &state) || cat_loading(), act)
}

/// Does `act` to guest `g`'s QEMU while it saves its state (the partial state file has bytes in it) and returns
/// its PID; `None` if `over` is set first.
fn while_saving(
    g: &Guest,
    over: &std::sync::atomic::AtomicBool,
    act: impl FnOnce(u32),
) -> Option<u32> {
    let partial = g.state.join("vmstate.partial");
    let saving = |_| std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0);
    when(over, || g.pid(), saving, act)
}

/// Polls (every ms) for a process `pid` gives that is `busy`, does `act` to it and returns it; `None` once `over`.
fn when(
    over: &std::sync::atomic::AtomicBool,
    pid: impl Fn() -> Option<u32>,
    busy: impl Fn(u32) -> bool,
    act: impl FnOnce(u32),
) -> Option<u32> {
    while !over.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(pid) = pid().filter(|&p| busy(p)) {
            act(pid);
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Sends `signal` to process `pid`.
fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// A rehearsal of `plan` (its QMP timeout shortened to 1 s) while `watch` runs beside it, told by its flag when the
/// rehearsal is over: the run and what `watch` returned.
fn rehearse_watched<T: Send>(
    f: &Fixture,
    plan: &str,
    watch: impl FnOnce(&std::sync::atomic::AtomicBool) -> T + Send,
) -> (support::Run, T) {
    let over = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let seen = s.spawn(|| watch(&over));
        let (run, _) = f.rehearse_wedged(plan);
        over.store(true, std::sync::atomic::Ordering::SeqCst);
        (run, seen.join().unwrap())
    })
}

/// Guest `g`'s save held back (by a custom step waiting on the test) until its pause is done, then slowed down to
/// 8 MiB/s (QMP `migrate-set-parameters`, as a slow disk would): a save that lasts seconds, to be hit while it
/// runs. The plan's step, and what opens it.
fn slowed_save(f: &Fixture, g: &Guest) -> (String, impl FnOnce() + Send) {
    let mut gate = Gate::new(f, "slow-save");
    let step = gate.step(
        &format!("vm:{}:pause", g.spec.name),
        &format!("vm:{}:save", g.spec.name),
    );
    let socket = g.qmp.clone();
    let name = g.spec.name.clone();
    let open = move || {
        let started = std::time::Instant::now();
        while guests::query_status(&socket)
            .map(|s| s["status"] != "paused")
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} never paused"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut client = kup::host::qmp::QmpClient::connect(&socket).unwrap();
        client
            .execute("qmp_capabilities", &serde_json::json!({}))
            .unwrap();
        client
            .execute(
                "migrate-set-parameters",
                &serde_json::json!({ "max-bandwidth": 8 << 20 }),
            )
            .unwrap();
        drop(client);
        gate.open();
    };
    (step, open)
}

/// Faults while the copied guest's save runs (slowed to seconds, see `slowed_save`), before the kexec:
/// - its QEMU wedged (SIGSTOP): the save's QMP wait times out (1 s, the test hook) instead of hanging; what it wrote
///   is kept aside and named; the other guest is rolled back and runs; this one's undo cannot reach its QEMU, so
///   the rollback is incomplete and the operator is told to run `kup plan abort` once it answers — which, after
///   SIGCONT, resumes it in its old QEMU, memory intact;
/// - its QMP socket removed: the save holds its connection and completes, the apply goes on past the (rehearsed)
///   kexec, where the other guest is restored and this one's restore fails (its old QEMU, unreachable, still holds
///   the pidfile): reported with what to do; once the operator ends that QEMU, `kup plan resume` restores it,
///   memory byte-identical;
/// - its QEMU killed (SIGKILL): the save fails, what it wrote is kept aside and named, the other guest runs, and
///   the rollback says this one's QEMU cannot be resumed.
#[test]
fn faults_during_a_save_time_out_keep_the_partial_state_and_report_the_guest() {
    use nix::sys::signal::Signal;
    let f = Fixture::new("during-save");
    let (shared, copied) = f.two_guests();
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];

    // Wedged.
    let (step, open) = slowed_save(&f, &copied);
    let (run, hit) = rehearse_watched(&f, &(plan.clone() + &step), |over| {
        open();
        while_saving(&copied, over, |pid| signal(pid, Signal::SIGSTOP))
    });
    let hit = hit.unwrap_or_else(|| panic!("no save seen:\n{}", run.stderr()));
    sigcont(hit);
    let stderr = run.stderr();
    run.status(6)
        .stderr_has("step vm:fc:save failed")
        .stderr_has("within 1 s")
        .stderr_has("undone vm:fs:pause")
        .stderr_has("rollback incomplete, check by hand: vm:fc:pause")
        .stderr_has("`kup plan abort` runs those undos again");
    kept_partial(&copied.state, &stderr);
    in_old_qemus("wedged during the save", &[(&shared, 41, old[0])]);
    f.on_journal("abort").run().success();
    in_old_qemus(
        "wedged during the save, then aborted",
        &[(&shared, 41, old[0]), (&copied, 51, old[1])],
    );
    assert_eq!(f.status()["state"], "rolled-back");
    std::fs::remove_file(copied.state.join("vmstate.partial.kept-1")).unwrap();

    // Socket removed.
    let socket = copied.qmp.display().to_string();
    let gone = format!("{socket}.gone");
    let (step, open) = slowed_save(&f, &copied);
    let (run, hit) = rehearse_watched(&f, &(plan.clone() + &step), |over| {
        open();
        while_saving(&copied, over, |_| std::fs::rename(&socket, &gone).unwrap())
    });
    hit.unwrap_or_else(|| panic!("no save seen:\n{}", run.stderr()));
    run.status(6)
        .stderr_has("after the kexec: vm:fc:restore")
        .stderr_has("run `kup plan resume` to retry");
    let vmstate = copied.state.join("vmstate");
    reported(
        &f,
        &shared,
        "vm:fc:restore",
        &vmstate,
        "socket removed during the save",
    );
    assert!(guests::alive(old[1]), "the old QEMU, unreachable, runs on");
    guests::kill_and_wait(old[1]);
    std::fs::remove_file(&gone).unwrap();
    f.on_journal("resume").run().success();
    recovered(
        &f,
        (&shared, &copied),
        &vmstate,
        "socket removed during the save",
    );

    // Killed.
    let (step, open) = slowed_save(&f, &copied);
    let (run, hit) = rehearse_watched(&f, &(plan + &step), |over| {
        open();
        while_saving(&copied, over, |pid| signal(pid, Signal::SIGKILL))
    });
    let hit = hit.unwrap_or_else(|| panic!("no save seen:\n{}", run.stderr()));
    let stderr = run.stderr();
    run.status(6)
        .stderr_has("step vm:fc:save failed")
        .stderr_has("undone vm:fs:pause")
        .stderr_has("rollback incomplete, check by hand: vm:fc:pause");
    kept_partial(&copied.state, &stderr);
    assert!(!guests::alive(hit));
    assert_eq!(shared.status(), "running");
    shared.check_patterns(41);
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
        let (run, hit) = rehearse_watched(&f, &plan, |over| {
            while_loading(&copied, old, over, |pid| self::signal(pid, signal))
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

/// After the (rehearsed) kexec, the copied guest's QMP socket removed between its restore and its resume, then
/// while its restore loads the state (its new QEMU made a new socket): the restore holds its connection and
/// completes, the resume fails naming the socket, the other guest runs, the state file is kept; the guest sits
/// loaded and paused in a QEMU kup cannot reach, so the operator ends that QEMU, as the failure says, and `kup
/// plan resume --rerun vm:fc:restore` (or, the restore once failed, a plain resume) loads the state again,
/// memory byte-identical.
#[test]
fn a_qmp_socket_removed_before_the_resume_is_reported_and_the_restore_runs_again() {
    let f = Fixture::new("socket-resume");
    let (shared, copied) = f.two_guests();
    let socket = copied.qmp.display().to_string();
    let gone = format!("{socket}.gone");
    let remove = once_before_the_resume(&f, "remove-socket", &["/bin/mv", &socket, &gone]);
    let plan = f.plan(&[(&shared, "shared"), (&copied, "copy")]);
    let run = f.rehearse(&(plan.clone() + &remove)).run();
    stranded_by_its_socket(&f, (&shared, &copied), run, "removed before the resume");

    let old = copied.pid().unwrap();
    let (run, hit) = rehearse_watched(&f, &plan, |over| {
        while_loading(&copied, old, over, |_| {
            std::fs::rename(&socket, &gone).unwrap()
        })
    });
    hit.unwrap_or_else(|| panic!("no load seen:\n{}", run.stderr()));
    stranded_by_its_socket(&f, (&shared, &copied), run, "removed during the restore");
}

/// The copied guest's resume failed because its socket was moved to `SOCKET.gone` after its restore connected:
/// `run` says so and what to do, the other guest runs, the state is kept; a restore run again while the
/// unreachable QEMU holds the guest's pidfile fails and keeps the state; once that QEMU is ended, `kup plan
/// resume` restores the guest, memory byte-identical.
fn stranded_by_its_socket(
    f: &Fixture,
    (shared, copied): (&Guest, &Guest),
    run: support::Run,
    when: &str,
) {
    let socket = copied.qmp.display().to_string();
    let vmstate = copied.state.join("vmstate");
    run.status(6)
        .stderr_has(format!(
            "after the kexec: vm:fc:resume: QMP {socket}: no such socket"
        ))
        .stderr_has("end it if it still runs, then run `kup plan resume --rerun vm:fc:restore`");
    reported(f, shared, "vm:fc:resume", &vmstate, when);
    // The unreachable QEMU holds the guest's pidfile: a restore run again before it ends fails, and keeps the state.
    let stranded = copied.pid().unwrap();
    assert!(guests::alive(stranded), "{when}");
    f.on_journal("resume")
        .args(["--rerun", "vm:fc:restore"])
        .run()
        .status(6)
        .stderr_has("after the kexec: vm:fc:restore");
    assert!(vmstate.is_file(), "{when}: the state was deleted");
    guests::kill_and_wait(stranded);
    std::fs::remove_file(format!("{socket}.gone")).unwrap();
    f.on_journal("resume").run().success();
    recovered(f, (shared, copied), &vmstate, when);
}
