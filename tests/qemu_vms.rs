//! kup's QEMU driver against real QEMU 7.2 and 10.x guests from the lab: the steps `kup plan apply` compiles for a
//! VM are performed by the real host (QMP sessions, the restart argv, state files) on running guests whose RAM holds
//! known patterns, which must read back byte for byte after the save, the end of the old QEMU and the restore. Every
//! scenario runs on each QEMU (`KUP_TEST_QEMU=7` or `10` picks one) and checks from the actions' outputs which
//! migration mode that QEMU was given: `exec:cat` on 7.2; on 10.x `cpr-reboot` + `file:` for shared RAM and
//! `mapped-ram` + `multifd` for copied RAM.
//!
//! Needs `lab/setup` (QEMU 7.2, the lab kernel, busybox), `lab/fetch-qemu10` (QEMU 10) and root (to write guest RAM
//! through /proc/PID/mem). Without the lab these tests fail and say so.

mod support;

use kup::action::{Action, ActionOutput, MigrationChoice, MigrationMemory, MigrationSide, QmpWait};
use kup::graph::Program;
use kup::host::{Host, RealHost};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Kup;
use support::guests::{self, Guest, Lab, PATTERN_RUN, Qemu, RESERVED_START, Ram, Spec};
use support::plans::{self, step};

struct Fixture {
    lab: Lab,
    tmp: tempfile::TempDir,
    qemu: Qemu,
}

impl Fixture {
    fn new(qemu: Qemu) -> Fixture {
        let lab = Lab::get();
        // Under target/, not /tmp: the state and RAM files must be on a disk file system (kup refuses tmpfs).
        let tmp = tempfile::Builder::new()
            .prefix(&format!("qemu_vms-{}-", qemu.label()))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        Fixture { lab, tmp, qemu }
    }

    fn work(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }

    fn guest(&self, spec: Spec) -> Guest {
        let dir = self.tmp.path().join(&spec.name);
        let spec = Spec {
            qemu: self.qemu,
            ..spec
        };
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
        plans::program(&guests::plan(&self.lab, &self.journal(), guests, memory))
    }

    /// Where the plans of [`Fixture::program`] and [`Fixture::patterned_pair`] keep their journal.
    fn journal(&self) -> PathBuf {
        self.tmp.path().join("journal")
    }

    /// Two booted guests `(name, ram, seed, memory)`, started side by side, their patterns from `seed` written, for
    /// one plan that hands both over (each with its `memory`, or `handover = "restart"`): the guests, their QEMUs'
    /// PIDs, the plan's text.
    fn patterned_pair(
        &self,
        a: (&str, Ram, u64, &str),
        b: (&str, Ram, u64, &str),
    ) -> ((Guest, Guest), [u32; 2], String) {
        let (ga, gb) = std::thread::scope(|s| {
            let ga = s.spawn(|| self.guest(Spec::new(a.0, a.1)));
            let gb = s.spawn(|| self.guest(Spec::new(b.0, b.1)));
            (ga.join().unwrap(), gb.join().unwrap())
        });
        ga.write_patterns(a.2);
        gb.write_patterns(b.2);
        let old = [ga.pid().unwrap(), gb.pid().unwrap()];
        let text = guests::plan_with(&self.lab, &self.journal(), &[(&ga, a.3), (&gb, b.3)]);
        ((ga, gb), old, text)
    }

    /// A booted guest `name` with `ram`, its patterns from `seed` written, and the program of a plan for it alone.
    fn patterned(&self, name: &str, ram: Ram, seed: u64, memory: &str) -> (Guest, Program) {
        let g = self.guest(Spec::new(name, ram));
        g.write_patterns(seed);
        let program = self.program(&[&g], memory);
        (g, program)
    }
}

/// What performing a step gave: how long it took and each action's output.
struct Done {
    took: Duration,
    outputs: Vec<ActionOutput>,
}

/// A step's actions minus what concerns the kexec itself: this machine must never load or run a kernel, and this
/// host has no /proc/sys/kernel/kexec_load_disabled.
fn without_kexec(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::CheckKexecEnabled
                    | Action::CheckTargetKernel { .. }
                    | Action::KexecFileLoad { .. }
                    | Action::KexecUnload
                    | Action::Reboot(_)
            )
        })
        .cloned()
        .collect()
}

/// Performs the named step with the real host, minus what concerns the kexec itself.
fn perform(program: &Program, id: &str) -> Done {
    let actions = without_kexec(&step(program, id).actions);
    let started = Instant::now();
    match RealHost.perform(&actions) {
        Ok(outputs) => Done {
            took: started.elapsed(),
            outputs,
        },
        Err(f) => panic!(
            "step {id} failed at `{}`: {}",
            actions[f.index].describe(),
            f.message
        ),
    }
}

/// Runs `scenario` once on each QEMU under test, with a fixture of its own.
fn on_each_qemu(scenario: impl Fn(&Fixture)) {
    for qemu in Qemu::under_test() {
        eprintln!("--- QEMU {}", qemu.label());
        scenario(&Fixture::new(qemu));
    }
}

/// The migration choice among a step's outputs.
fn choice(outputs: &[ActionOutput]) -> &MigrationChoice {
    outputs
        .iter()
        .find_map(|o| match o {
            ActionOutput::MigrationSetup(c) => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no migration setup among {outputs:?}"))
}

/// The URI a step's `migrate` / `migrate-incoming` was given.
fn uri(outputs: &[ActionOutput]) -> &str {
    outputs
        .iter()
        .find_map(|o| match o {
            ActionOutput::Migration { uri, .. } => Some(uri.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no migration among {outputs:?}"))
}

/// What each QEMU must have been given for `memory`: exec:cat on 7.2; on 10.x cpr-reboot for shared RAM and
/// mapped-ram + multifd for copied RAM, through file:.
fn assert_mode(qemu: Qemu, memory: MigrationMemory, saved: &MigrationChoice, save_uri: &str) {
    let caps: Vec<&str> = saved.capabilities.iter().map(String::as_str).collect();
    match (qemu, memory) {
        (Qemu::V7, _) => {
            assert!(saved.qemu.starts_with("7.2"), "{saved:?}");
            assert!(save_uri.starts_with("exec:cat > "), "{save_uri}");
            assert_eq!(saved.mode, None, "{saved:?}");
            let want: &[&str] = match memory {
                MigrationMemory::Shared => &["x-ignore-shared", "events"],
                MigrationMemory::Copy => &["events"],
            };
            assert_eq!(caps, want, "{saved:?}");
        }
        (Qemu::V10, MigrationMemory::Shared) => {
            assert!(saved.qemu.starts_with("10."), "{saved:?}");
            assert!(save_uri.starts_with("file:"), "{save_uri}");
            assert_eq!(saved.mode.as_deref(), Some("cpr-reboot"), "{saved:?}");
            assert_eq!(caps, ["x-ignore-shared", "events"], "{saved:?}");
        }
        (Qemu::V10, MigrationMemory::Copy) => {
            assert!(saved.qemu.starts_with("10."), "{saved:?}");
            assert!(save_uri.starts_with("file:"), "{save_uri}");
            assert_eq!(saved.mode, None, "{saved:?}");
            assert_eq!(caps, ["mapped-ram", "multifd", "events"], "{saved:?}");
            let channels = saved.parameters["multifd-channels"].as_u64().unwrap();
            assert!((1..=4).contains(&channels), "{saved:?}");
        }
    }
}

/// The restore set exactly what the save set, and says which QEMU saved.
fn assert_same_on_restore(saved: &MigrationChoice, restored: &MigrationChoice) {
    assert_eq!(restored.saved_by.as_deref(), Some(saved.qemu.as_str()));
    assert_eq!(restored.mode, saved.mode);
    assert_eq!(restored.capabilities, saved.capabilities);
    assert_eq!(restored.parameters, saved.parameters);
}

/// The capabilities a QEMU has on, and its migration parameters.
fn migration_settings(g: &Guest) -> (Vec<String>, serde_json::Value) {
    let mut c = g.client();
    let caps = c
        .execute("query-migrate-capabilities", &serde_json::json!({}))
        .unwrap();
    let on = caps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == true)
        .map(|c| c["capability"].as_str().unwrap().to_owned())
        .collect();
    let params = c
        .execute("query-migrate-parameters", &serde_json::json!({}))
        .unwrap();
    (on, params)
}

fn memory_of(ram: Ram) -> MigrationMemory {
    match ram {
        Ram::Anonymous => MigrationMemory::Copy,
        _ => MigrationMemory::Shared,
    }
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

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// Pauses and saves guest `g` as `program` says, and checks what its QEMU was given for `memory`: the choice made
/// at the pause, the URI of the save. Returns the choice and what the save gave.
fn pause_and_save(
    f: &Fixture,
    program: &Program,
    g: &Guest,
    memory: MigrationMemory,
) -> (MigrationChoice, Done) {
    let name = &g.spec.name;
    let pause = perform(program, &format!("vm:{name}:pause"));
    assert_eq!(g.status(), "paused");
    let save = perform(program, &format!("vm:{name}:save"));
    let saved = choice(&pause.outputs).clone();
    assert_mode(f.qemu, memory, &saved, uri(&save.outputs));
    (saved, save)
}

/// Restores guest `g` as `program` says, in a QEMU other than the old one (`old_pid`), with the settings of the
/// save.
fn restore_in_a_new_qemu(
    program: &Program,
    g: &Guest,
    saved: &MigrationChoice,
    old_pid: u32,
) -> Done {
    let restore = perform(program, &format!("vm:{}:restore", g.spec.name));
    assert_same_on_restore(saved, choice(&restore.outputs));
    let new_pid = g.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    restore
}

/// What a hand-over of one guest took.
fn report(what: &str, saved: &MigrationChoice, save: &Done, restore: &Done, size: u64) {
    eprintln!(
        "{what} on QEMU {}: save {:?}, restore {:?}, state file {size} bytes, {saved:?}",
        saved.qemu, save.took, restore.took
    );
}

/// A kexec ends the old QEMU without asking: here SIGKILL stands in for it, between `sync` and the restore.
#[test]
fn shared_ram_guest_survives_save_kill_and_restore() {
    on_each_qemu(shared_ram_scenario);
}

fn shared_ram_scenario(f: &Fixture) {
    let (g, program) = f.patterned("shared", Ram::SharedFile, 1, "shared");
    // A state file from an earlier run: preflight moves it aside (vmstate.kept-1); it is never overwritten.
    std::fs::create_dir_all(&g.state).unwrap();
    std::fs::write(g.state.join("vmstate"), b"earlier run").unwrap();

    perform(&program, "preflight");
    let old_pid = g.pid().unwrap();
    let (saved, save) = pause_and_save(f, &program, &g, MigrationMemory::Shared);
    // The choice is recorded beside the state, for the restore after the kexec.
    let record: MigrationChoice =
        serde_json::from_slice(&std::fs::read(g.state.join("vmstate.migration")).unwrap()).unwrap();
    assert_eq!(record, saved);
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
    let restore = restore_in_a_new_qemu(&program, &g, &saved, old_pid);
    assert_eq!(g.status(), "paused");
    perform(&program, "vm:shared:resume");
    assert_eq!(g.status(), "running");
    g.check_patterns(1);
    perform(&program, "verify");
    assert!(!state.exists(), "verify removes the state file");
    assert!(
        !g.state.join("vmstate.migration").exists(),
        "and the record"
    );
    report("shared", &saved, &save, &restore, size);
}

/// A rehearsal: no kexec, so the old QEMU is still alive when the restore starts; the restore ends it (`quit`,
/// without waiting for its exit) and starts the new one.
#[test]
fn copied_ram_guest_survives_save_and_restore_with_the_old_qemu_alive() {
    on_each_qemu(copied_ram_scenario);
}

fn copied_ram_scenario(f: &Fixture) {
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
    g.check_patterns(7);
    // The rollback set back what the setup changed (on 10: mapped-ram, multifd, direct-io, the channels): the guest
    // can be live-migrated as before.
    let after = migration_settings(&g);
    assert!(after.0.is_empty(), "capabilities left on: {:?}", after.0);
    assert_eq!(after.1["max-bandwidth"], 128 << 20, "{:?}", after.1);
    if f.qemu == Qemu::V10 {
        assert_eq!(after.1["mode"], "normal");
        assert_eq!(after.1["direct-io"], false);
    }

    // Then the whole hand-over; the first attempt's state file is kept aside.
    let (saved, save) = pause_and_save(f, &program, &g, MigrationMemory::Copy);
    assert!(g.state.join("vmstate.kept-1").exists());
    let state = g.state.join("vmstate");
    let size = file_size(&state);
    // The RAM is in the file: at least the 2 MiB of patterns (random, so incompressible).
    assert!(
        size > 2 * PATTERN_RUN as u64,
        "state file of {size} bytes with copied RAM"
    );
    assert!(guests::alive(old_pid));

    let restore = restore_in_a_new_qemu(&program, &g, &saved, old_pid);
    perform(&program, "vm:copy:resume");
    assert_eq!(g.status(), "running");
    g.check_patterns(7);
    perform(&program, "verify");
    report("copy", &saved, &save, &restore, size);
}

/// Four guests, two with shared and two with copied RAM, saved and restored concurrently as the engine would.
#[test]
fn four_guests_saved_and_restored_in_parallel() {
    on_each_qemu(four_guests_scenario);
}

fn four_guests_scenario(f: &Fixture) {
    let specs = [
        ("p1", Ram::SharedFile),
        ("p2", Ram::SharedFile),
        ("p3", Ram::Anonymous),
        ("p4", Ram::Anonymous),
    ];
    let all: Vec<Guest> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .iter()
            .map(|(name, ram)| s.spawn(move || f.guest(Spec::new(name, *ram))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, g) in all.iter().enumerate() {
        g.write_patterns(100 + 10 * i as u64);
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
    let saves = in_parallel(&programs, ["pause", "save"]);
    for g in &all {
        g.kill();
    }
    let restores = in_parallel(&programs, ["restore", "resume"]);
    for (i, g) in all.iter().enumerate() {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        g.check_patterns(100 + 10 * i as u64);
        let saved = choice(&saves[i][0].outputs);
        assert_mode(
            f.qemu,
            memory_of(g.spec.ram),
            saved,
            uri(&saves[i][1].outputs),
        );
        assert_same_on_restore(saved, choice(&restores[i][0].outputs));
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

/// Performs each guest's steps `vm:NAME:KIND` of `kinds`, in order, every guest in a thread of its own; returns what
/// each step gave, by guest.
fn in_parallel(programs: &[(&Program, &Guest)], kinds: [&str; 2]) -> Vec<Vec<Done>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .map(|(program, g)| {
                s.spawn(move || {
                    kinds
                        .iter()
                        .map(|kind| perform(program, &format!("vm:{}:{kind}", g.spec.name)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn shared_ram_check(g: &Guest) -> Result<(), String> {
    let actions = [
        handshake(g),
        Action::CheckSharedRam {
            socket: g.qmp.clone(),
            cmdline: None,
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
    on_each_qemu(shared_memory_refusals);
}

fn shared_memory_refusals(f: &Fixture) {
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
    let actions = without_kexec(&preflight.actions);
    // `-S` guests are not running: skip the running check, keep the memory check.
    let actions: Vec<Action> = actions
        .into_iter()
        .filter(|a| !matches!(a, Action::QmpWait(_)))
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
    on_each_qemu(killed_mid_save);
}

/// The save as the compiled steps make it (setup, `migrate`, wait), throttled to 1 MiB/s so that 32 MiB of random
/// guest RAM keeps it active for half a minute; QEMU is killed 1.5 s in.
fn killed_mid_save(f: &Fixture) {
    let g = f.unbooted("dying", Ram::Anonymous);
    for i in 0..2u64 {
        g.write(
            RESERVED_START + (i << 24),
            &guests::pattern(50 + i, 16 << 20),
        );
    }
    let partial = g.dir.join("vmstate.partial");
    let pid = g.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        guests::kill_and_wait(pid);
    });
    let actions = [
        handshake(&g),
        Action::MigrationSetup(kup::action::MigrationSetup {
            socket: g.qmp.clone(),
            side: MigrationSide::Save,
            memory: MigrationMemory::Copy,
            channels: Some(2),
            max_bandwidth: 1 << 20,
            state: partial.clone(),
            record: g.dir.join("vmstate.migration"),
        }),
        Action::Qmp {
            socket: g.qmp.clone(),
            command: "migrate".into(),
            args: serde_json::json!({ "uri": format!("exec:cat > {}", partial.display()) }),
            file_uri: Some(partial.clone()),
        },
        QmpWait::status(&g.qmp, "query-migrate", "completed", 60_000),
    ];
    let started = Instant::now();
    let failure = RealHost.perform(&actions).unwrap_err();
    killer.join().unwrap();
    assert_eq!(failure.index, 3, "{failure:?}");
    assert!(
        failure.message.contains("closed the connection") || failure.message.contains("reset"),
        "{failure:?}"
    );
    // The message says what this QEMU was given.
    assert!(failure.message.contains("was given"), "{failure:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    eprintln!("killed mid-save: {}", failure.message);
}

/// The whole command as an operator runs it: `kup plan apply --rehearse --yes --no-kernel-load PLAN` on two guests,
/// one with shared and one with copied RAM. The engine runs every step; the kexec is a no-op, so the restores find
/// the old QEMUs alive and end them.
#[test]
fn kup_plan_apply_rehearse_hands_over_real_guests() {
    on_each_qemu(rehearsal);
}

/// The outputs the journal under `journal` recorded for step `id`'s `kind` of output.
fn journaled(journal: &Path, id: &str) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for apply in std::fs::read_dir(journal).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(apply.path().join("journal.jsonl")) else {
            continue;
        };
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            if record["event"] == "step-done" && record["step"] == id {
                found.extend(record["outputs"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    found
}

/// The migration choice and the migration URI the journal recorded for step `id`.
fn journaled_choice(journal: &Path, id: &str) -> (MigrationChoice, Option<String>) {
    let outputs = journaled(journal, id);
    let choice = outputs
        .iter()
        .find_map(|o| serde_json::from_value::<MigrationChoice>(o.clone()).ok())
        .unwrap_or_else(|| panic!("no migration choice journaled for {id}: {outputs:?}"));
    let uri = outputs
        .iter()
        .find_map(|o| o.get("uri").and_then(|u| u.as_str()).map(str::to_owned));
    (choice, uri)
}

fn rehearse(text: &str) -> support::Run {
    support::cli::rehearse(text, Duration::from_secs(120))
}

fn rehearsal(f: &Fixture) {
    let ((shared, copied), old, text) = f.patterned_pair(
        ("rs", Ram::SharedFile, 21, "shared"),
        ("rc", Ram::Anonymous, 31, "copy"),
    );
    let journal = f.journal();

    let started = Instant::now();
    let run = rehearse(&text).success();
    eprintln!("rehearsal took {:?}:\n{}", started.elapsed(), run.stderr());

    for (g, seed, old) in [(&shared, 21, old[0]), (&copied, 31, old[1])] {
        assert_eq!(g.status(), "running", "{}", g.spec.name);
        assert_ne!(g.pid(), Some(old), "{} runs in a new QEMU", g.spec.name);
        g.check_patterns(seed);
        // verify removed the state file once the guest ran again.
        assert!(!g.state.join("vmstate").exists(), "{}", g.spec.name);
        // The journal says what each QEMU was given, on both sides.
        let name = &g.spec.name;
        let (saved, _) = journaled_choice(&journal, &format!("vm:{name}:pause"));
        let save_uri = journaled(&journal, &format!("vm:{name}:save"))
            .iter()
            .find_map(|o| o.get("uri").and_then(|u| u.as_str()).map(str::to_owned))
            .expect("the save's migrate output");
        assert_mode(f.qemu, memory_of(g.spec.ram), &saved, &save_uri);
        let (restored, _) = journaled_choice(&journal, &format!("vm:{name}:restore"));
        assert_same_on_restore(&saved, &restored);
    }
    // The shared guest's RAM digest: recorded by the save, found equal by the restore, removed by verify.
    let recorded = journaled_digest(&journal, "vm:rs:save");
    assert_eq!(recorded["checked"], false, "{recorded}");
    let checked = journaled_digest(&journal, "vm:rs:restore");
    assert_eq!(checked["checked"], true, "{checked}");
    let (saved, found) = (&recorded["ram_digest"][0], &checked["ram_digest"][0]);
    assert_eq!(saved["mem_path"], shared.ram_file.display().to_string());
    assert_eq!(saved["size"], 256 << 20);
    assert_eq!(saved["pages"], 1025);
    // A booted guest's RAM is not all zeros where it is sampled: the digest can tell a wiped file.
    assert!(saved["nonzero_pages"].as_u64().unwrap() > 0, "{saved}");
    assert_eq!(saved["sha256"], found["sha256"]);
    assert!(!shared.state.join("vmstate.ram-digest").exists());
    assert!(journaled_digest_of(&journal, "vm:rc:save").is_none());
    // The preflight's check says where the RAM file is: on this machine a disk, neither pmem nor DAX.
    let backends = journaled(&journal, "preflight")
        .into_iter()
        .find_map(|o| o.get("backends").cloned())
        .expect("the shared-RAM check's output");
    let backend = &backends[0];
    assert_eq!(backend["mem_path"], shared.ram_file.display().to_string());
    assert_eq!(
        (&backend["pmem"], &backend["dax"]),
        (&serde_json::json!(false), &serde_json::json!(false)),
        "{backend}"
    );
    assert!(!backend["device"].as_str().unwrap().is_empty(), "{backend}");
    assert!(journal.is_dir());
    assert_flushed(&journal, &shared, &[&shared, &copied]);
    let status = Kup::new().status_json(&journal);
    for g in [&shared, &copied] {
        assert_blackout_adds_up(&status, &journal, &g.spec.name);
    }
    assert_waits_woken_by_events(&journal, &["rs", "rc"], "rc");
}

/// Each save's wait for `completed` and each restore's wait for `paused`, as journaled: none ended on the fallback
/// poll — QEMU's migration events woke every wait the first query did not end — and the restore of `loaded` (a
/// copied guest, whose load takes far longer than one query) ended on that event.
fn assert_waits_woken_by_events(journal: &Path, names: &[&str], loaded: &str) {
    for name in names {
        for kind in ["save", "restore"] {
            let id = format!("vm:{name}:{kind}");
            let waits: Vec<serde_json::Value> = journaled(journal, &id)
                .into_iter()
                .filter(|o| o.get("ended_on").is_some())
                .collect();
            assert_eq!(waits.len(), 1, "{id}: {waits:?}");
            let wait = &waits[0];
            eprintln!("{id}: wait {wait}");
            match wait["ended_on"].as_str() {
                // Both come only with the `events` capability the setup turned on.
                Some("event") => assert!(
                    ["MIGRATION", "MIGRATION_PASS"].contains(&wait["event"].as_str().unwrap_or("")),
                    "{id}: {wait}"
                ),
                Some("first-query") => assert_eq!(wait["queries"], 1, "{id}: {wait}"),
                _ => panic!("{id}: the wait did not end on QEMU's event: {wait}"),
            }
            if *name == loaded && kind == "restore" {
                assert_eq!(wait["ended_on"], "event", "{id}: {wait}");
            }
        }
    }
}

/// The preflush wrote back the shared guest's RAM file while it ran (the copied guest has none), and the `sync`
/// inside the downtime was one `syncfs` per file system of that file, the state directories and the journal: all
/// on one disk here, so one file system, and nothing skipped as DAX.
fn assert_flushed(journal: &Path, shared: &Guest, all: &[&Guest]) {
    let steps: Vec<String> = std::fs::read_dir(journal)
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("journal.jsonl")).ok())
        .flat_map(|text| {
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|r| r["event"] == "step-started")
                .map(|r| r["step"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let at = |id: &str| steps.iter().position(|s| s == id);
    let preflush = at("preflush").unwrap_or_else(|| panic!("no preflush in {steps:?}"));
    for g in all {
        let pause = at(&format!("vm:{}:pause", g.spec.name)).unwrap();
        assert!(preflush < pause, "{steps:?}");
    }
    // After the QMP handshake's reply: the preflush's own output.
    let pre = journaled(journal, "preflush")
        .into_iter()
        .find(|o| o.get("passes_ms").is_some())
        .expect("the preflush's output");
    let pre = &pre;
    assert_eq!(
        pre["ram_files"],
        serde_json::json!([shared.ram_file.display().to_string()]),
        "{pre}"
    );
    assert_eq!(pre["dax_skipped"], serde_json::json!([]), "{pre}");
    let passes = pre["passes_ms"].as_array().unwrap();
    assert!(!passes.is_empty(), "{pre}");
    assert!(
        ["settled", "not-shrinking", "budget"].contains(&pre["stopped"].as_str().unwrap()),
        "{pre}"
    );
    assert_eq!(pre["file_systems"].as_array().unwrap().len(), 1, "{pre}");
    let sync = journaled(journal, "sync");
    let sync = &sync[0];
    assert_eq!(sync["file_systems"], pre["file_systems"], "{sync}");
    assert_eq!(sync["dax_skipped"], serde_json::json!([]), "{sync}");
    eprintln!("preflush: {pre}\nsync: {sync}");
}

/// A rehearsed guest's blackout: `stop` acknowledged → `cont` acknowledged, in parts on the old kernel's clock that
/// add up to it, inside kup's `vm_downtime_ms` (the pause's start → the resume's end) by exactly the pause's work
/// before `stop` (the step-started record's fsync, the QMP handshake, the migration setup) and the resume's after
/// `cont` (`query-status` until `running`, the step-done record).
fn assert_blackout_adds_up(status: &serde_json::Value, journal: &Path, name: &str) {
    let b = &status["blackout"][name];
    let total = b["total_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("{status:#}"));
    let parts = b["parts"].as_array().unwrap();
    let names = support::cli::field_of_each(&b["parts"], "name");
    assert_eq!(
        names,
        ["pause_save", "until_restore", "restore", "resume"],
        "{b:#}"
    );
    support::cli::assert_rehearsed_blackout_adds_up(b);
    assert!(b["notes"].is_null(), "the instants were journaled: {b:#}");
    assert_eq!(
        b["outside_kernel_boot_ms"].as_i64(),
        Some(total),
        "a rehearsal boots no kernel"
    );
    // The blackout sits inside the downtime; the difference is the journal's own brackets around stop and cont.
    let downtime = status["vm_downtime_ms"][name].as_i64().unwrap();
    let record = |event: &str, step: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(
            PathBuf::from(status["journal"].as_str().unwrap()).join("journal.jsonl"),
        )
        .unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["event"] == event && r["step"] == step)
            .unwrap_or_else(|| panic!("no {event} of {step} in {}", journal.display()))
    };
    let acked = |r: &serde_json::Value| {
        r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["acked_unix_ms"].as_i64())
            .unwrap_or_else(|| panic!("no acked_unix_ms in {r}"))
    };
    let paused = record("step-started", &format!("vm:{name}:pause"));
    let stop = acked(&record("step-done", &format!("vm:{name}:pause")));
    let resumed = record("step-done", &format!("vm:{name}:resume"));
    let cont = acked(&resumed);
    let before = stop - paused["unix_ms"].as_i64().unwrap();
    let after = resumed["unix_ms"].as_i64().unwrap() - cont;
    eprintln!(
        "{name}: blackout {total} ms = {names:?} {:?}; downtime {downtime} ms = {before} ms before stop + blackout + \
         {after} ms after cont",
        parts
            .iter()
            .map(|p| p["ms"].as_i64().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(total, cont - stop, "{b:#}");
    assert_eq!(downtime, before + total + after, "{b:#}");
    // Those brackets are a few QMP round trips and one fsync each, not a second of the guest's time.
    assert!(
        (0..1_000).contains(&before) && (0..1_000).contains(&after),
        "{before} ms, {after} ms"
    );
}

/// A guest the plan reboots instead of saving (`handover = "restart"`, for a device QEMU cannot migrate), rehearsed
/// beside a saved one: kup presses its ACPI power button, quits QEMU when the guest ignores it (busybox has no ACPI
/// daemon; `shutdown_timeout = "1s"`), and boots it again with its `restart` after the (no-op) kexec: a new QEMU
/// with fresh RAM. The saved guest keeps its memory as always.
#[test]
fn a_restarted_guest_is_shut_down_and_booted_again_beside_a_saved_one() {
    on_each_qemu(restarted_guest);
}

fn restarted_guest(f: &Fixture) {
    let ((kept, rebooted), old, text) = f.patterned_pair(
        ("kept", Ram::Anonymous, 61, "copy"),
        ("reboot", Ram::Anonymous, 71, "restart"),
    );
    let journal = f.journal();
    let run = rehearse(&text).success();
    eprintln!("{}", run.stderr());

    assert_eq!(kept.status(), "running");
    assert_ne!(kept.pid(), Some(old[0]));
    kept.check_patterns(61);

    assert_eq!(
        rebooted.status(),
        "running",
        "the rebooted guest runs again"
    );
    assert_ne!(rebooted.pid(), Some(old[1]), "in a new QEMU");
    assert!(!guests::alive(old[1]), "the old QEMU was ended");
    assert_ne!(
        rebooted.read(RESERVED_START, PATTERN_RUN),
        guests::pattern(71, PATTERN_RUN),
        "a rebooted guest starts with fresh RAM"
    );
    let shutdown = journaled(&journal, "vm:reboot:shutdown");
    assert_eq!(
        shutdown[0],
        serde_json::json!({"answered": true, "by_guest": false, "ms": shutdown[0]["ms"]}),
        "busybox ignores the power button: kup quit QEMU after the timeout"
    );
    assert!(shutdown[0]["ms"].as_u64().unwrap() >= 1000, "{shutdown:?}");
    assert_eq!(
        journaled(&journal, "vm:reboot:boot").len(),
        4,
        "exec, socket, handshake, running"
    );
    assert!(
        journaled(&journal, "vm:reboot:save").is_empty(),
        "nothing is saved"
    );
    assert!(!rebooted.state.join("vmstate").exists());
}

/// The RAM digest output journaled for step `id`, if any.
fn journaled_digest_of(journal: &Path, id: &str) -> Option<serde_json::Value> {
    journaled(journal, id)
        .into_iter()
        .find(|o| o.get("ram_digest").is_some())
}

fn journaled_digest(journal: &Path, id: &str) -> serde_json::Value {
    journaled_digest_of(journal, id).unwrap_or_else(|| panic!("no RAM digest journaled for {id}"))
}

/// A shared guest's RAM file changed between the save and the kexec (as a power cut wiping persistent memory
/// would leave it): its restore refuses before touching any QEMU, keeps the state file and says what to do; the
/// copied guest is restored and resumed all the same, and `kup plan status` names the failed step.
#[test]
fn a_shared_guest_whose_ram_changed_is_not_restored_and_the_others_are() {
    on_each_qemu(changed_ram);
}

fn changed_ram(f: &Fixture) {
    let ((shared, copied), old, mut text) = f.patterned_pair(
        ("ws", Ram::SharedFile, 51, "shared"),
        ("wc", Ram::Anonymous, 41, "copy"),
    );
    let journal = f.journal();
    // Four pages at the start of the RAM file overwritten, after the save and before the kexec.
    let dd = [
        "dd".to_owned(),
        "if=/dev/urandom".to_owned(),
        format!("of={}", shared.ram_file.display()),
        "bs=4096".to_owned(),
        "count=4".to_owned(),
        "conv=notrunc".to_owned(),
    ];
    let argv: Vec<String> = dd
        .iter()
        .map(|a| toml::Value::String(a.clone()).to_string())
        .collect();
    text.push_str(&format!(
        "\n[[step]]\nname = \"wipe\"\nrun = [{}]\nafter = [\"vm:ws:save\"]\nbefore = [\"kexec\"]\n",
        argv.join(", ")
    ));

    let run = rehearse(&text).status(6);
    let stderr = run.stderr();
    eprintln!("{stderr}");
    let ram = shared.ram_file.display().to_string();
    let state = shared.state.join("vmstate");
    for part in [
        "vm:ws:restore",
        &format!("the guest's RAM in {ram} is not what was saved"),
        "power cut or a cold boot",
        &format!("the state file is kept at {}", state.display()),
        "Start the guest cold from its disks",
    ] {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
    // Nothing deleted, and no QEMU ended or started: the old one is still there, its migration done.
    assert!(state.exists());
    assert!(shared.state.join("vmstate.ram-digest").exists());
    assert_eq!(shared.pid(), Some(old[0]));
    assert_eq!(shared.status(), "postmigrate");
    // The other guest was restored in a new QEMU and runs, its RAM intact.
    assert_eq!(copied.status(), "running");
    assert_ne!(copied.pid(), Some(old[1]));
    copied.check_patterns(41);

    let status = Kup::new().status_json(&journal);
    let steps = status["steps"].as_array().unwrap();
    let state_of = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id} in {status}"))
    };
    let failed = state_of("vm:ws:restore");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("is not what was saved"),
        "{failed}"
    );
    assert_eq!(state_of("vm:wc:resume")["state"], "done");
    assert_ne!(state_of("vm:ws:resume")["state"], "done");
    assert_eq!(status["state"], "failed", "{status}");
}

/// QEMU 7.2 reports a state file it cannot create only as a broken pipe to `cat`, QEMU 10 as a file it cannot open;
/// kup says what to check.
#[test]
fn a_missing_state_directory_fails_the_save_clearly() {
    on_each_qemu(missing_state_directory);
}

fn missing_state_directory(f: &Fixture) {
    let g = f.unbooted("nodir", Ram::Anonymous);
    let program = f.program(&[&g], "copy");
    // The save step without the preflight that would have created the directory.
    assert!(!g.state.exists());
    let save = step(&program, "vm:nodir:save");
    let failure = RealHost.perform(&save.actions).unwrap_err();
    // QEMU 7.2's `cat` fails after `migrate` returned; QEMU 10 refuses the `file:` URI in `migrate` itself.
    let failed_at = match f.qemu {
        Qemu::V7 => matches!(save.actions[failure.index], Action::QmpWait(_)),
        Qemu::V10 => {
            matches!(&save.actions[failure.index], Action::Qmp { command, .. } if command == "migrate")
        }
    };
    assert!(failed_at, "{failure:?}");
    assert!(
        failure.message.contains("could not be written"),
        "{}",
        failure.message
    );
    // Nothing was committed, and the guest can still be resumed by the rollback.
    assert!(!g.state.join("vmstate").exists());
    assert_eq!(g.status(), "prelaunch");
}

/// A guest with a device QEMU cannot migrate (ivshmem in peer mode: `migrate_add_blocker`, on QEMU 7.2 and 10
/// alike) is refused by preflight, naming the reason, and nothing is paused.
#[test]
fn a_guest_qemu_cannot_migrate_is_refused_at_preflight() {
    on_each_qemu(blocked_guest);
}

fn blocked_guest(f: &Fixture) {
    let extra = [
        "-object",
        "memory-backend-ram,id=ivmem,size=1M",
        "-device",
        "ivshmem-plain,memdev=ivmem",
    ];
    let g = f.guest(Spec {
        extra: extra.map(String::from).to_vec(),
        ..Spec::new("blocked", Ram::SharedFile)
    });
    let program = f.program(&[&g], "shared");
    let preflight = step(&program, "preflight");
    let actions = without_kexec(&preflight.actions);
    let failure = RealHost.perform(&actions).unwrap_err();
    assert!(
        matches!(actions[failure.index], Action::CheckMigratable { .. }),
        "{failure:?}"
    );
    for part in ["cannot be saved", "ivshmem", &g.qmp.display().to_string()] {
        assert!(failure.message.contains(part), "{}", failure.message);
    }
    if f.qemu == Qemu::V10 {
        assert!(
            failure.message.contains("in mode cpr-reboot"),
            "{}",
            failure.message
        );
        // The mode is set back: preflight changes nothing.
        let params = g
            .client()
            .execute("query-migrate-parameters", &serde_json::json!({}))
            .unwrap();
        assert_eq!(params["mode"], "normal");
    }
    assert_eq!(g.status(), "running");
    eprintln!("refused: {}", failure.message);
}

/// A state saved by QEMU 10 in cpr-reboot mode cannot be loaded by QEMU 7.2 (no `mode`): the restore refuses before
/// `migrate-incoming`, naming both QEMUs, and the right QEMU then restores the guest intact.
#[test]
fn a_restore_on_a_qemu_lacking_the_saves_mode_is_refused_naming_both() {
    if Qemu::under_test().len() < 2 {
        eprintln!("needs both QEMUs (KUP_TEST_QEMU unset)");
        return;
    }
    let f = Fixture::new(Qemu::V10);
    let (g, program) = f.patterned("mixed", Ram::SharedFile, 5, "shared");
    perform(&program, "preflight");
    let old_pid = g.pid().unwrap();
    perform(&program, "vm:mixed:pause");
    perform(&program, "vm:mixed:save");
    guests::kill_and_wait(old_pid);

    // The same guest restarted by QEMU 7.2.
    let downgraded: Vec<Action> = step(&program, "vm:mixed:restore")
        .actions
        .iter()
        .map(|a| match a {
            Action::Exec { timeout_ms, .. } => Action::Exec {
                argv: g.restart_argv_on(&f.lab, &f.work(), Qemu::V7),
                timeout_ms: *timeout_ms,
            },
            other => other.clone(),
        })
        .collect();
    let failure = RealHost.perform(&downgraded).unwrap_err();
    assert!(
        matches!(downgraded[failure.index], Action::MigrationSetup(_)),
        "{failure:?}"
    );
    for part in [
        "saved by QEMU 10.",
        "mode cpr-reboot",
        "new QEMU 7.2.",
        "`mode`",
    ] {
        assert!(failure.message.contains(part), "{}", failure.message);
    }
    eprintln!("refused: {}", failure.message);

    // QEMU 7.2 waits (`inmigrate`); the planned restore ends it and QEMU 10 loads the state.
    perform(&program, "vm:mixed:restore");
    perform(&program, "vm:mixed:resume");
    assert_eq!(g.status(), "running");
    g.check_patterns(5);
}

/// A record that does not match the stream (here: mapped-ram and multifd dropped from it) makes QEMU 10 exit while
/// loading ("received capability is on"); the error says so, with what the save and this QEMU were given.
#[test]
fn a_state_qemu_refuses_to_load_is_an_error_naming_both_sides() {
    if !Qemu::under_test().contains(&Qemu::V10) {
        return;
    }
    let f = Fixture::new(Qemu::V10);
    let (g, program) = f.patterned("refused", Ram::Anonymous, 9, "copy");
    perform(&program, "preflight");
    perform(&program, "vm:refused:pause");
    perform(&program, "vm:refused:save");
    g.kill();
    let record = g.state.join("vmstate.migration");
    let mut saved: MigrationChoice =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(saved.capabilities, ["mapped-ram", "multifd", "events"]);
    saved.capabilities.retain(|c| c == "events");
    saved.parameters.retain(|k, _| k == "max-bandwidth");
    std::fs::write(&record, serde_json::to_vec(&saved).unwrap()).unwrap();

    let restore = step(&program, "vm:refused:restore");
    let failure = RealHost.perform(&restore.actions).unwrap_err();
    assert!(failure.index >= 5, "{failure:?}");
    // QEMU ≥ 9.1 is told not to exit on a failed load (`exit-on-error: false`): it stays up and gives its reason.
    for part in [
        "QEMU could not load the state: load of migration failed",
        "saved by QEMU 10.",
        "was given the same",
    ] {
        assert!(failure.message.contains(part), "{}", failure.message);
    }
    eprintln!("refused: {}", failure.message);
}

/// The restore's `quit` is for an old QEMU whose guest was saved; a running guest behind the socket is left alone.
#[test]
fn the_restore_never_quits_a_running_guest() {
    let f = Fixture::new(Qemu::under_test()[0]);
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

/// `kup plan graph --history` and `kup plan validate --history` after three rehearsals of one guest's plan: the
/// steps the rehearsals ran are estimated by the median of their three measured durations — read here from the
/// journals themselves — and say so; the kexec (a rehearsal's is a no-op) keeps the cost model's estimate.
#[test]
fn the_estimate_uses_the_durations_earlier_rehearsals_measured() {
    // One QEMU is enough: the figures are the journal's, whatever QEMU ran the steps.
    let f = Fixture::new(Qemu::under_test()[0]);
    let g = f.guest(Spec::new("hist", Ram::SharedFile));
    let journal = f.journal();
    let text = guests::plan_with(&f.lab, &journal, &[(&g, "shared")]);
    for _ in 0..3 {
        rehearse(&text).success();
    }
    // Each step's three durations, as the journals recorded them.
    let mut runs: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut host = String::new();
    for apply in std::fs::read_dir(&journal).unwrap().flatten() {
        let Ok(lines) = std::fs::read_to_string(apply.path().join("journal.jsonl")) else {
            continue;
        };
        for line in lines.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            if r["event"] == "apply-started" {
                host = r["hostname"].as_str().unwrap().to_owned();
            }
            if r["event"] == "step-done" {
                let step = r["step"].as_str().unwrap().to_owned();
                runs.entry(step)
                    .or_default()
                    .push(r["duration_ms"].as_u64().unwrap());
            }
        }
    }
    let graph = Kup::new()
        .args(["plan", "graph", "--format", "json", "--history"])
        .arg(&journal)
        .plan(&text)
        .run()
        .success()
        .stdout_json();
    let mut sources = Vec::new();
    for step in graph["steps"].as_array().unwrap() {
        let id = step["id"].as_str().unwrap();
        match step.get("measured_runs") {
            Some(n) => {
                let mut durations = runs[id].clone();
                assert_eq!((n.as_u64(), durations.len()), (Some(3), 3), "{id}");
                durations.sort();
                assert_eq!(
                    step["estimate_ms"], durations[1],
                    "{id}: the median of {durations:?}"
                );
                sources.push(format!("{id}: measured"));
            }
            None => sources.push(format!("{id}: estimated ({} ms)", step["estimate_ms"])),
        }
    }
    // What a person reads: each step's source, the header saying what the figures rest on.
    let listing = Kup::new()
        .args(["plan", "graph", "--history"])
        .arg(&journal)
        .plan(&text)
        .run()
        .success()
        .stdout();
    let mut lines: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with("history:"))
        .map(|l| l.replace(&host, "HOST"))
        .collect();
    for line in listing.lines().filter(|l| l.contains(" takes ")) {
        // "    * vm:hist:save  at   2.1 s  takes   12 ms (measured, median of 3)  after …": the id and the source.
        let id = line
            .trim_start()
            .trim_start_matches('*')
            .split_whitespace()
            .next()
            .unwrap();
        let source = &line[line.find(" (").unwrap() + 2..line.find(')').unwrap()];
        lines.push(format!("{id}: {source}"));
    }
    insta::assert_snapshot!(format!("{}\n\n{}", sources.join("\n"), lines.join("\n")));

    // The budget's diagnostic names its contributors' sources too (the kexec's 5 s is over any 1 s budget).
    let over = text.replace("[policy]\n", "[policy]\nmax_downtime = \"1s\"\n");
    let diagnostic = |history: bool| {
        let mut kup = Kup::new().args(["plan", "validate", "--format", "json"]);
        if history {
            kup = kup.arg("--history").arg(&journal);
        }
        let doc = kup.plan(&over).run().status(1).stdout_json();
        let budget = doc["plans"][0]["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["code"] == "kup::plan::downtime-budget")
            .unwrap_or_else(|| panic!("no budget diagnostic: {doc:#}"))
            .clone();
        budget["help"].as_str().unwrap().to_owned()
    };
    assert!(
        diagnostic(true).contains("(measured, median of 3)"),
        "{}",
        diagnostic(true)
    );
    assert!(
        !diagnostic(false).contains("measured"),
        "{}",
        diagnostic(false)
    );
}
