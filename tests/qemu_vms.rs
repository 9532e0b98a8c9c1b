//! kup's QEMU driver against real QEMU 7.2 guests from the lab: the steps `kup plan apply` compiles for a VM are
//! performed by the real host (QMP sessions, the restart argv, state files) on running guests whose RAM holds known
//! patterns, which must read back byte for byte after the save, the end of the old QEMU and the restore.
//!
//! Needs `lab/setup` (QEMU 7.2, the lab kernel, busybox) and root (to write guest RAM through /proc/PID/mem). Without
//! the lab these tests fail and say so.

mod support;

use kup::action::Action;
use kup::graph::Program;
use kup::host::{Host, RealHost};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Kup;
use support::guests::{self, Guest, Lab, RESERVED_START, Ram, Spec};
use support::plans::{self, step};

/// Bytes written per guest: two 1 MiB runs, one at each end of the reserved range.
const RUN: usize = 1 << 20;

struct Fixture {
    lab: Lab,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let lab = Lab::get();
        // Under target/, not /tmp: the state and RAM files must be on a disk file system (kup refuses tmpfs).
        let tmp = tempfile::Builder::new()
            .prefix("qemu_vms-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        Fixture { lab, tmp }
    }

    fn work(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }

    fn guest(&self, spec: Spec) -> Guest {
        let dir = self.tmp.path().join(&spec.name);
        Guest::start(&self.lab, &self.work(), &dir, spec)
    }

    /// A guest that boots nothing: QEMU waits (`-S`) with its QMP socket up, enough for the checks.
    fn unbooted(&self, name: &str, ram: Ram) -> Guest {
        self.guest(Spec {
            boot: false,
            ..Spec::new(name, ram)
        })
    }

    fn program(&self, guests: &[&Guest], memory: &str) -> Program {
        plans::program(&guests::plan(
            &self.lab,
            &self.tmp.path().join("journal"),
            guests,
            memory,
        ))
    }

    /// A booted guest `name` with `ram`, its patterns from `seed` written, and the program of a plan for it alone.
    fn patterned(&self, name: &str, ram: Ram, seed: u64, memory: &str) -> (Guest, Program) {
        let g = self.guest(Spec::new(name, ram));
        write_patterns(&g, seed);
        let program = self.program(&[&g], memory);
        (g, program)
    }
}

/// Performs the named step with the real host, minus what concerns the kexec itself (this machine must never load
/// or run a kernel; and this host has no /proc/sys/kernel/kexec_load_disabled).
fn perform(program: &Program, id: &str) -> Duration {
    let actions: Vec<Action> = step(program, id)
        .actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::CheckKexecEnabled
                    | Action::KexecFileLoad { .. }
                    | Action::KexecUnload
                    | Action::Reboot(_)
            )
        })
        .cloned()
        .collect();
    let started = Instant::now();
    if let Err(f) = RealHost.perform(&actions) {
        panic!(
            "step {id} failed at `{}`: {}",
            actions[f.index].describe(),
            f.message
        );
    }
    started.elapsed()
}

fn rollback(program: &Program, id: &str) {
    let actions = &step(program, id).rollback;
    if let Err(f) = RealHost.perform(actions) {
        panic!(
            "rollback of {id} failed at `{}`: {}",
            actions[f.index].describe(),
            f.message
        );
    }
}

fn write_patterns(g: &Guest, seed: u64) {
    let last = RESERVED_START + (g.spec.reserved_mib << 20) - RUN as u64;
    g.write(RESERVED_START, &guests::pattern(seed, RUN));
    g.write(last, &guests::pattern(seed + 1, RUN));
    // Read back before the save, so a failure after it is the save's and not the write's.
    assert_eq!(g.read(RESERVED_START, RUN), guests::pattern(seed, RUN));
}

fn check_patterns(g: &Guest, seed: u64) {
    let last = RESERVED_START + (g.spec.reserved_mib << 20) - RUN as u64;
    for (gpa, seed) in [(RESERVED_START, seed), (last, seed + 1)] {
        let expected = guests::pattern(seed, RUN);
        // QEMU's own view of guest memory, then every byte through the new process's memory.
        assert_eq!(
            g.xp(gpa, 64),
            expected[..64],
            "{}: HMP xp at {gpa:#x} differs",
            g.spec.name
        );
        assert!(
            g.read(gpa, RUN) == expected,
            "{}: guest RAM at {gpa:#x} differs after the restore",
            g.spec.name
        );
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A kexec ends the old QEMU without asking: here SIGKILL stands in for it, between `sync` and the restore.
#[test]
fn shared_ram_guest_survives_save_kill_and_restore() {
    let f = Fixture::new();
    let (g, program) = f.patterned("shared", Ram::SharedFile, 1, "shared");
    // A state file from an earlier run: preflight moves it aside (vmstate.kept-1); it is never overwritten.
    std::fs::create_dir_all(&g.state).unwrap();
    std::fs::write(g.state.join("vmstate"), b"earlier run").unwrap();

    perform(&program, "preflight");
    let old_pid = g.pid().unwrap();
    perform(&program, "vm:shared:pause");
    assert_eq!(g.status(), "paused");
    let save = perform(&program, "vm:shared:save");
    perform(&program, "sync");
    let state = g.state.join("vmstate");
    assert!(!g.state.join("vmstate.partial").exists());
    assert_eq!(
        std::fs::read(g.state.join("vmstate.kept-1")).unwrap(),
        b"earlier run"
    );
    // Only device state: the RAM stays in the shared file.
    let size = file_size(&state);
    assert!(size < 4 << 20, "state file of {size} bytes with shared RAM");
    // The save does not wait for the old QEMU: it is still there, its migration done.
    assert!(guests::alive(old_pid));
    assert_eq!(g.status(), "postmigrate");

    guests::kill_and_wait(old_pid);
    let restore = perform(&program, "vm:shared:restore");
    let new_pid = g.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    assert_eq!(g.status(), "paused");
    perform(&program, "vm:shared:resume");
    assert_eq!(g.status(), "running");
    check_patterns(&g, 1);
    perform(&program, "verify");
    assert!(!state.exists(), "verify removes the state file");
    eprintln!("shared: save {save:?}, restore {restore:?}, state file {size} bytes");
}

/// A rehearsal: no kexec, so the old QEMU is still alive when the restore starts; the restore ends it (`quit`,
/// without waiting for its exit) and starts the new one.
#[test]
fn copied_ram_guest_survives_save_and_restore_with_the_old_qemu_alive() {
    let f = Fixture::new();
    let (g, program) = f.patterned("copy", Ram::Anonymous, 7, "copy");

    perform(&program, "preflight");
    let old_pid = g.pid().unwrap();

    // First a failure after the save, before the kexec: the rollbacks (save, then pause) resume the same guest.
    perform(&program, "vm:copy:pause");
    perform(&program, "vm:copy:save");
    rollback(&program, "vm:copy:save");
    rollback(&program, "vm:copy:pause");
    assert_eq!(g.status(), "running");
    assert_eq!(g.pid(), Some(old_pid));
    check_patterns(&g, 7);

    // Then the whole hand-over; the first attempt's state file is kept aside.
    perform(&program, "vm:copy:pause");
    let save = perform(&program, "vm:copy:save");
    assert!(g.state.join("vmstate.kept-1").exists());
    let state = g.state.join("vmstate");
    let size = file_size(&state);
    // The RAM is in the file: at least the 2 MiB of patterns (random, so incompressible).
    assert!(
        size > 2 * RUN as u64,
        "state file of {size} bytes with copied RAM"
    );
    assert!(guests::alive(old_pid));

    let restore = perform(&program, "vm:copy:restore");
    let new_pid = g.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    perform(&program, "vm:copy:resume");
    assert_eq!(g.status(), "running");
    check_patterns(&g, 7);
    perform(&program, "verify");
    eprintln!("copy: save {save:?}, restore {restore:?}, state file {size} bytes");
}

/// Four guests, two with shared and two with copied RAM, saved and restored concurrently as the engine would.
#[test]
fn four_guests_saved_and_restored_in_parallel() {
    let f = Fixture::new();
    let specs = [
        ("p1", Ram::SharedFile),
        ("p2", Ram::SharedFile),
        ("p3", Ram::Anonymous),
        ("p4", Ram::Anonymous),
    ];
    let all: Vec<Guest> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|(name, ram)| {
                let f = &f;
                s.spawn(move || f.guest(Spec::new(name, *ram)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, g) in all.iter().enumerate() {
        write_patterns(g, 100 + 10 * i as u64);
    }
    let shared: Vec<&Guest> = all[..2].iter().collect();
    let copied: Vec<&Guest> = all[2..].iter().collect();
    let shared_program = f.program(&shared, "shared");
    let copy_program = f.program(&copied, "copy");
    let programs: Vec<(&Program, &Guest)> = all
        .iter()
        .enumerate()
        .map(|(i, g)| {
            (
                if i < 2 {
                    &shared_program
                } else {
                    &copy_program
                },
                g,
            )
        })
        .collect();
    perform(&shared_program, "preflight");
    perform(&copy_program, "preflight");
    in_parallel(&programs, ["pause", "save"]);
    for g in &all {
        g.kill();
    }
    in_parallel(&programs, ["restore", "resume"]);
    for (i, g) in all.iter().enumerate() {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        check_patterns(g, 100 + 10 * i as u64);
    }
}

/// The QMP greeting every session starts with.
fn handshake(g: &Guest) -> Action {
    Action::Qmp {
        socket: g.qmp.clone(),
        command: "qmp_capabilities".into(),
        args: serde_json::json!({}),
        file_uri: None,
    }
}

/// Performs each guest's steps `vm:NAME:KIND` of `kinds`, in order, every guest in a thread of its own.
fn in_parallel(programs: &[(&Program, &Guest)], kinds: [&str; 2]) {
    std::thread::scope(|s| {
        for (program, g) in programs {
            s.spawn(move || {
                for kind in kinds {
                    perform(program, &format!("vm:{}:{kind}", g.spec.name));
                }
            });
        }
    });
}

fn shared_ram_check(g: &Guest) -> Result<(), String> {
    let actions = [
        handshake(g),
        Action::CheckSharedRam {
            socket: g.qmp.clone(),
        },
    ];
    RealHost
        .perform(&actions)
        .map(|_| ())
        .map_err(|f| f.message)
}

/// `memory = "shared"` is refused before anything pauses unless the RAM really survives a kexec.
#[test]
fn shared_memory_is_refused_unless_the_ram_survives_kexec() {
    let f = Fixture::new();
    let good = f.unbooted("good", Ram::SharedFile);
    shared_ram_check(&good).unwrap();

    let anonymous = f.unbooted("anon", Ram::Anonymous);
    let e = shared_ram_check(&anonymous).unwrap_err();
    assert!(e.contains("anonymous memory"), "{e}");

    let private = f.unbooted("private", Ram::PrivateFile);
    let e = shared_ram_check(&private).unwrap_err();
    assert!(e.contains("share=off"), "{e}");

    let tmpfs = f.unbooted("tmpfs", Ram::SharedTmpfs);
    let e = shared_ram_check(&tmpfs).unwrap_err();
    assert!(e.contains("on tmpfs"), "{e}");

    // The same refusal through the plan's preflight, which names the guest's socket.
    let program = f.program(&[&private], "shared");
    let preflight = &program.steps[0];
    assert_eq!(preflight.id, "preflight");
    let actions: Vec<Action> = preflight
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::CheckKexecEnabled))
        .cloned()
        .collect();
    // `-S` guests are not running: skip the running check, keep the memory check.
    let actions: Vec<Action> = actions
        .into_iter()
        .filter(|a| !matches!(a, Action::QmpWait { .. }))
        .collect();
    let failure = RealHost.perform(&actions).unwrap_err();
    assert!(
        matches!(actions[failure.index], Action::CheckSharedRam { .. }),
        "{failure:?}"
    );
    assert!(failure.message.contains(&private.qmp.display().to_string()));
}

/// A QEMU that dies while its state is being written is an error within a poll, not a hang until the timeout.
#[test]
fn qemu_killed_mid_save_fails_the_save() {
    let f = Fixture::new();
    let g = f.unbooted("dying", Ram::Anonymous);
    // Nobody reads this FIFO: `cat > FIFO` blocks on open, so the migration stays active until QEMU dies.
    let fifo = g.dir.join("stuck.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let pid = g.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        guests::kill_and_wait(pid);
    });
    let actions = [
        handshake(&g),
        Action::Qmp {
            socket: g.qmp.clone(),
            command: "migrate".into(),
            args: serde_json::json!({ "uri": format!("exec:cat > {}", fifo.display()) }),
            file_uri: Some(fifo.clone()),
        },
        Action::QmpWait {
            socket: g.qmp.clone(),
            command: "query-migrate".into(),
            field: "status".into(),
            until: "completed".into(),
            timeout_ms: 60_000,
        },
    ];
    let started = Instant::now();
    let failure = RealHost.perform(&actions).unwrap_err();
    killer.join().unwrap();
    assert_eq!(failure.index, 2, "{failure:?}");
    assert!(
        failure.message.contains("closed the connection") || failure.message.contains("reset"),
        "{failure:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // Unblock the orphaned `cat` so it does not outlive the test.
    drop(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo),
    );
}

/// The whole command as an operator runs it: `kup plan apply --rehearse --yes --no-kernel-load PLAN` on two guests,
/// one with shared and one with copied RAM. The engine runs every step; the kexec is a no-op, so the restores find
/// the old QEMUs alive and end them.
#[test]
fn kup_plan_apply_rehearse_hands_over_real_guests() {
    let f = Fixture::new();
    let (shared, copied) = std::thread::scope(|s| {
        let a = s.spawn(|| f.guest(Spec::new("rs", Ram::SharedFile)));
        let b = s.spawn(|| f.guest(Spec::new("rc", Ram::Anonymous)));
        (a.join().unwrap(), b.join().unwrap())
    });
    write_patterns(&shared, 21);
    write_patterns(&copied, 31);
    let old = [shared.pid().unwrap(), copied.pid().unwrap()];
    let journal = f.tmp.path().join("journal");
    let text = guests::plan_with(&f.lab, &journal, &[(&shared, "shared"), (&copied, "copy")]);

    let started = Instant::now();
    let run = Kup::new()
        .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
        .plan(&text)
        .timeout(Duration::from_secs(120))
        .run()
        .success();
    eprintln!("rehearsal took {:?}:\n{}", started.elapsed(), run.stderr());

    for (g, seed, old) in [(&shared, 21, old[0]), (&copied, 31, old[1])] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        assert_ne!(g.pid(), Some(old), "{} runs in a new QEMU", g.spec.name);
        check_patterns(g, seed);
        // verify removed the state file once the guest ran again.
        assert!(!g.state.join("vmstate").exists(), "{}", g.spec.name);
    }
    assert!(journal.is_dir());
}

/// QEMU 7.2 reports a state file it cannot create only as a broken pipe to `cat`; kup says what to check.
#[test]
fn a_missing_state_directory_fails_the_save_clearly() {
    let f = Fixture::new();
    let g = f.unbooted("nodir", Ram::Anonymous);
    let program = f.program(&[&g], "copy");
    // The save step without the preflight that would have created the directory.
    assert!(!g.state.exists());
    let save = step(&program, "vm:nodir:save");
    let failure = RealHost.perform(&save.actions).unwrap_err();
    assert!(
        matches!(save.actions[failure.index], Action::QmpWait { .. }),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("could not be written"),
        "{}",
        failure.message
    );
    // Nothing was committed, and the guest can still be resumed by the rollback.
    assert!(!g.state.join("vmstate").exists());
    assert_eq!(g.status(), "prelaunch");
}

/// Without `lab/setup` these tests fail with the fix in the message: a VM test that quietly skips proves nothing.
#[test]
fn a_lab_that_is_not_set_up_is_an_error_with_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let message = Lab::locate(Path::new(env!("CARGO_MANIFEST_DIR")), empty.path())
        .err()
        .expect("an empty directory is not a lab");
    assert!(message.contains("run `lab/setup`"), "{message}");
}

/// The restore's `quit` is for an old QEMU whose guest was saved; a running guest behind the socket is left alone.
#[test]
fn the_restore_never_quits_a_running_guest() {
    let f = Fixture::new();
    let g = f.unbooted("live", Ram::Anonymous);
    g.client().execute("cont", &serde_json::json!({})).unwrap();
    assert_eq!(g.status(), "running");
    let quit = Action::QmpQuit {
        socket: g.qmp.clone(),
        timeout_ms: 5_000,
    };
    let failure = RealHost.perform(std::slice::from_ref(&quit)).unwrap_err();
    assert!(
        failure.message.contains("a guest is running"),
        "{}",
        failure.message
    );
    assert_eq!(g.status(), "running");
    // Paused, as a new QEMU whose restore was interrupted would be, it is ended.
    g.client().execute("stop", &serde_json::json!({})).unwrap();
    let pid = g.pid().unwrap();
    let out = RealHost.perform(&[quit]).unwrap();
    assert!(
        matches!(out[0], kup::action::ActionOutput::Quit { quit: true, .. }),
        "{:?}",
        out[0]
    );
    assert!(
        !g.qmp.exists(),
        "QEMU removed its socket before kup went on"
    );
    guests::kill_and_wait(pid);
}
