//! The step graph as operators and tools see it: every shipped plan rendered in every format (snapshots), the
//! ordering guarantees the executor relies on (everything saved before `kexec`, every guest resumed after it), and
//! properties that must hold for any acyclic plan.

mod support;

use kup::graph::{Phase, StepGraph};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use support::Kup;

fn shipped_plans() -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir("plans")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    plans.sort();
    assert!(plans.len() >= 4);
    plans
}

fn load(path: &PathBuf) -> (kup::plan::Plan, StepGraph) {
    let bytes = std::fs::read(path).unwrap();
    let loaded = kup::check::check(&path.display().to_string(), &bytes);
    let plan = loaded
        .plan
        .unwrap_or_else(|| panic!("{}", loaded.report.render(false, 100)));
    let graph = StepGraph::build(&plan).expect("a loaded plan has a graph");
    (plan, graph)
}

#[test]
fn every_shipped_plan_in_every_format() {
    for path in shipped_plans() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for format in ["text", "dot", "mermaid", "json"] {
            let stdout = Kup::new()
                .args(["plan", "graph", "--format", format])
                .arg(&path)
                .run()
                .status(0)
                .stderr_is("")
                .stdout();
            insta::assert_snapshot!(format!("{stem}.{format}"), stdout);
        }
    }
}

#[test]
fn json_has_exactly_the_documented_shape() {
    let value = Kup::new()
        .args(["plan", "graph", "--format", "json"])
        .arg("plans/multi-vm-vfio-spdk.toml")
        .run()
        .stdout_json();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "critical_path",
            "estimated_downtime_ms",
            "steps",
            "vm_downtime_ms"
        ]
    );
    for step in value["steps"].as_array().unwrap() {
        let keys: Vec<&String> = step.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["after", "critical", "estimate_ms", "id", "phase"]);
        assert!(["before", "kexec", "after"].contains(&step["phase"].as_str().unwrap()));
    }
    assert_eq!(
        value["vm_downtime_ms"].as_object().unwrap().len(),
        3,
        "one entry per VM"
    );
}

#[test]
fn kexec_waits_for_every_save_and_sync_and_every_resume_waits_for_kexec() {
    for path in shipped_plans() {
        let (plan, graph) = load(&path);
        let name = path.display();
        if plan.is_livepatch() {
            // No kexec at all: tests/graph.rs's live patch tests check its order.
            assert!(graph.step("kexec").is_none(), "{name}");
            continue;
        }
        assert!(graph.depends_on("kexec", "sync"), "{name}");
        assert!(graph.depends_on("kexec", "kernel:load"), "{name}");
        for vm in &plan.vms {
            // A guest the plan reboots (`handover = "restart"`) is shut down and booted instead.
            let restarted = graph.step(&format!("vm:{}:shutdown", vm.name)).is_some();
            let (down, up) = if restarted {
                ("shutdown", "boot")
            } else {
                ("save", "resume")
            };
            let save = format!("vm:{}:{down}", vm.name);
            let resume = format!("vm:{}:{up}", vm.name);
            assert!(graph.depends_on("kexec", &save), "{name}: {save}");
            assert!(graph.depends_on(&resume, "kexec"), "{name}: {resume}");
        }
        for app in &plan.apps {
            let save = format!("app:{}:save", app.name);
            assert!(graph.depends_on("kexec", &save), "{name}: {save}");
        }
        if plan.policy.isolate.is_some() {
            assert!(graph.depends_on("kexec", "isolate"), "{name}");
            // Every shipped plan names its guests' units: the isolate keeps them and runs before any pause.
            assert!(
                plan.vms
                    .iter()
                    .all(|v| !graph.depends_on("isolate", &format!("vm:{}:pause", v.name)))
            );
        }
        for step in graph.steps() {
            match step.phase {
                Phase::Before => assert!(graph.depends_on("kexec", &step.id), "{name}"),
                Phase::After => assert!(graph.depends_on(&step.id, "kexec"), "{name}"),
                Phase::Kexec => assert_eq!(step.id, "kexec"),
            }
        }
    }
}

#[test]
fn custom_steps_of_the_shipped_plans_sit_where_they_say() {
    let (_, graph) = load(&PathBuf::from("plans/multi-vm-vfio-spdk.toml"));
    assert_eq!(graph.step("step:drain-lb").unwrap().phase, Phase::Before);
    assert_eq!(graph.step("step:undrain-lb").unwrap().phase, Phase::After);
    assert!(graph.depends_on("vm:db-1:pause", "step:drain-lb"));
    assert!(graph.depends_on("step:undrain-lb", "vm:monitor:resume"));
    // A guest with a VFIO device is paused only once its device's binding was checked.
    assert!(graph.depends_on("vm:db-1:pause", "pci:0000:3b:00.0:check"));
    // verify stays last.
    assert!(graph.depends_on("verify", "step:undrain-lb"));
}

#[test]
fn the_storage_host_pauses_no_guest_before_the_isolate_and_stops_spdk_only_after_its_guests() {
    let (_, graph) = load(&PathBuf::from("plans/multi-vm-vfio-spdk.toml"));
    for vm in ["db-1", "db-2", "monitor"] {
        let pause = format!("vm:{vm}:pause");
        // Nothing that can run while the guests run is left inside their downtime.
        for first in [
            "kernel:load",
            "isolate",
            "step:drain-lb",
            "pci:0000:3b:00.0:check",
        ] {
            assert!(graph.depends_on(&pause, first), "{pause} after {first}");
        }
    }
    // SPDK serves db-1's and db-2's disks: it stops once both are saved and is back before either is restored.
    for vm in ["db-1", "db-2"] {
        assert!(graph.depends_on("app:spdk:save", &format!("vm:{vm}:save")));
        assert!(graph.depends_on(&format!("vm:{vm}:restore"), "app:spdk:restore"));
    }
    // monitor does not need it: neither waits for the other.
    assert!(!graph.depends_on("app:spdk:save", "vm:monitor:save"));
    assert!(!graph.depends_on("vm:monitor:restore", "app:spdk:restore"));
}

#[test]
fn without_units_the_isolate_waits_for_the_saves_and_the_guests_are_down_that_much_longer() {
    let path = PathBuf::from("plans/multi-vm-vfio-spdk.toml");
    let (_, early) = load(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("unit = "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text);
    let loaded = kup::check::check("no-units.toml", without.as_bytes());
    let warned: Vec<_> = loaded
        .report
        .diagnostics
        .iter()
        .filter(|d| d.code == "kup::plan::isolate-unprotected")
        .collect();
    assert_eq!(warned.len(), 3, "one warning per guest");
    let late = StepGraph::build(&loaded.plan.unwrap()).unwrap();
    for vm in ["db-1", "db-2", "monitor"] {
        assert!(late.depends_on("isolate", &format!("vm:{vm}:save")));
        assert!(!late.depends_on(&format!("vm:{vm}:pause"), "isolate"));
    }
    // The isolate left the window: every guest's downtime shrinks by exactly its estimate.
    let isolate = early.step("isolate").unwrap().estimate;
    let (e, l) = (early.schedule(), late.schedule());
    for ((name, down_early), (_, down_late)) in e.vm_downtime.iter().zip(&l.vm_downtime) {
        assert_eq!(*down_late - *down_early, isolate, "{name}");
    }
}

#[test]
fn an_app_no_guest_needs_stops_before_the_first_pause_and_starts_after_the_last_resume() {
    let (_, graph) = load(&PathBuf::from("plans/libvirt-criu.toml"));
    for app in ["telemetry-fwd", "metrics-agent"] {
        for vm in ["web-1", "web-2"] {
            let (save, restore) = (format!("app:{app}:save"), format!("app:{app}:restore"));
            assert!(graph.depends_on(&format!("vm:{vm}:pause"), &save));
            assert!(graph.depends_on(&restore, &format!("vm:{vm}:resume")));
        }
        // A CRIU or hook app has no unit the isolate could keep: it is saved before the isolate runs.
        assert!(graph.depends_on("isolate", &format!("app:{app}:save")));
    }
}

#[test]
fn a_vfio_device_is_bound_after_the_kexec_before_its_guest_is_restored() {
    let (plan, graph) = load(&PathBuf::from("plans/multi-vm-vfio-spdk.toml"));
    let bind = "pci:0000:3b:00.0:bind";
    assert_eq!(graph.step(bind).unwrap().phase, Phase::After);
    assert_eq!(graph.after(bind), ["kexec"]);
    // db-1 owns the device: its QEMU opens it, so its restore waits for the bind (and for SPDK, which it
    // needs); the other guests do not.
    assert_eq!(graph.after("vm:db-1:restore"), [bind, "app:spdk:restore"]);
    assert!(!graph.depends_on("vm:db-2:restore", bind));
    assert!(!graph.depends_on("vm:monitor:restore", bind));
    assert!(graph.depends_on("verify", bind));
    // The bind runs while SPDK starts, which takes longer: db-1 is down no longer than db-2, alike but for the
    // device.
    assert!(graph.step(bind).unwrap().estimate < graph.step("app:spdk:restore").unwrap().estimate);
    let down: HashMap<_, _> = graph.schedule().vm_downtime.into_iter().collect();
    assert_eq!(down["db-1"], down["db-2"]);
    // The dry run shows the exact writes, in order.
    let program = kup::graph::compile(&plan, &graph, "root=/dev/sda1");
    let step = program.steps.iter().find(|s| s.id == bind).unwrap();
    let shown = step.actions[0].describe();
    let order = [
        "echo vfio-pci > /sys/bus/pci/devices/0000:3b:00.0/driver_override",
        "echo 0000:3b:00.0 > /sys/bus/pci/devices/0000:3b:00.0/driver/unbind",
        "echo 0000:3b:00.0 > /sys/bus/pci/drivers_probe",
        "wait until /sys/bus/pci/devices/0000:3b:00.0/driver names vfio-pci",
        "check its IOMMU group",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|line| {
            shown
                .find(line)
                .unwrap_or_else(|| panic!("{line}: {shown}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{shown}");
}

#[test]
fn shipped_plans_are_within_their_budgets() {
    for path in shipped_plans() {
        let (plan, graph) = load(&path);
        if let Some(limit) = plan.policy.max_downtime {
            let schedule = graph.schedule();
            assert!(schedule.downtime() <= limit, "{}", path.display());
        }
    }
}

#[test]
fn an_invalid_plan_prints_diagnostics_and_exits_1() {
    Kup::new()
        .args(["plan", "graph", "tests/data/diagnostics/step-cycle.toml"])
        .run()
        .status(1)
        .stdout_is("")
        .stderr_has("kup::plan::step-cycle")
        .stderr_has("step:a → step:b → step:c → step:a");
}

#[test]
fn a_missing_plan_exits_2() {
    Kup::new()
        .args(["plan", "graph", "tests/data/no-such-plan.toml"])
        .run()
        .status(2)
        .stderr_has("cannot read");
}

// --- properties over generated plans -------------------------------------------------------------------------

/// The start of every generated plan: the version and a kernel.
const KERNEL: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\nsha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n";

/// A generated plan: VMs, apps, PCI devices and custom steps whose before/after only point from lower to higher
/// rank, so the whole graph is acyclic by construction.
#[derive(Debug, Clone)]
struct Gen {
    /// Per VM: driver kind, memory size, whether it names its `unit`, and the apps it `needs` (a bit mask).
    vms: Vec<(u8, Option<u8>, bool, u8)>,
    apps: Vec<u8>,
    pci: usize,
    isolate: bool,
    /// Per custom step: rank (0..=23, halves between built-in ranks) and picks for after / before.
    customs: Vec<(u8, Vec<usize>, Vec<usize>)>,
}

fn gen_plan() -> impl Strategy<Value = Gen> {
    (
        prop::collection::vec(
            (0u8..3, prop::option::of(1u8..64), any::<bool>(), 0u8..8),
            0..4,
        ),
        prop::collection::vec(0u8..3, 0..3),
        0usize..3,
        any::<bool>(),
        prop::collection::vec(
            (
                0u8..24,
                prop::collection::vec(any::<usize>(), 0..3),
                prop::collection::vec(any::<usize>(), 0..3),
            ),
            0..6,
        ),
    )
        .prop_map(|(vms, apps, pci, isolate, customs)| Gen {
            vms,
            apps,
            pci,
            isolate,
            customs,
        })
}

impl Gen {
    /// Whether VM `v` needs app `a`.
    fn needs(&self, v: usize, a: usize) -> bool {
        a < self.apps.len() && self.vms[v].3 & (1 << a) != 0
    }

    fn needed(&self, a: usize) -> bool {
        (0..self.vms.len()).any(|v| self.needs(v, a))
    }

    /// Whether the isolate runs before the first pause: every guest names its unit, and every needed app is a
    /// systemd unit (kind 0).
    fn early_isolate(&self) -> bool {
        self.isolate
            && self.vms.iter().all(|v| v.2)
            && (0..self.apps.len()).all(|a| !self.needed(a) || self.apps[a] == 0)
    }

    /// Built-in ids with their rank; ranks follow the built-in edges (times two, so customs fit between).
    fn builtin(&self) -> Vec<(String, u8)> {
        let mut out = vec![("preflight".to_owned(), 1), ("kernel:load".to_owned(), 3)];
        for p in 0..self.pci {
            out.push((format!("pci:0000:0{p}:00.0:check"), 3));
        }
        for p in 0..self.pci {
            out.push((format!("pci:0000:0{p}:00.0:bind"), 15));
        }
        for v in 0..self.vms.len() {
            out.push((format!("vm:v{v}:pause"), 5));
            out.push((format!("vm:v{v}:save"), 7));
            out.push((format!("vm:v{v}:restore"), 17));
            out.push((format!("vm:v{v}:resume"), 19));
        }
        // An app a guest needs stops after the guests' saves and is back before their restores; one no guest
        // needs stops before the first pause and comes back after the last resume.
        for a in 0..self.apps.len() {
            let (save, restore) = if self.needed(a) { (8, 16) } else { (4, 20) };
            out.push((format!("app:a{a}:save"), save));
            out.push((format!("app:a{a}:restore"), restore));
        }
        out.push(("sync".to_owned(), 9));
        if self.isolate {
            out.push((
                "isolate".to_owned(),
                if self.early_isolate() { 4 } else { 11 },
            ));
        }
        out.push(("kexec".to_owned(), 13));
        out.push(("verify".to_owned(), 21));
        out
    }

    fn toml(&self) -> String {
        let mut t = String::from(KERNEL);
        for p in 0..self.pci {
            t += &format!("[[pci]]\naddress = \"0000:0{p}:00.0\"\n");
        }
        for (v, (kind, size, unit, _)) in self.vms.iter().enumerate() {
            t += &format!("[[vm]]\nname = \"v{v}\"\nstate = \"/var/lib/kup/state/v{v}\"\n");
            match kind {
                0 => t += &format!("libvirt = \"v{v}\"\n"),
                k => {
                    let memory = if *k == 1 { "shared" } else { "copy" };
                    t += &format!(
                        "qmp = \"/run/qemu/v{v}.qmp\"\nmemory = \"{memory}\"\nrestart = [\"systemctl\", \"start\", \"qemu@v{v}.service\"]\n"
                    );
                }
            }
            if let Some(gib) = size {
                t += &format!("memory_size = \"{gib}GiB\"\n");
            }
            if v < self.pci {
                t += &format!("devices = [\"0000:0{v}:00.0\"]\n");
            }
            if *unit {
                t += &format!("unit = \"qemu@v{v}.service\"\n");
            }
            let needs: Vec<String> = (0..self.apps.len())
                .filter(|&a| self.needs(v, a))
                .map(|a| format!("\"a{a}\""))
                .collect();
            t += &format!("needs = [{}]\n", needs.join(", "));
        }
        for (a, kind) in self.apps.iter().enumerate() {
            t += &format!("[[app]]\nname = \"a{a}\"\n");
            t += match kind {
                0 => "systemd = \"a.service\"\n",
                1 => "criu = { pidfile = \"/run/a.pid\", images = \"/var/lib/kup/criu/a\" }\n",
                _ => "save = [\"/usr/bin/a\", \"save\"]\n",
            };
        }
        let builtin = self.builtin();
        let mut nodes: Vec<(String, (u8, usize))> =
            builtin.into_iter().map(|(id, r)| (id, (r, 0))).collect();
        for (i, (rank, afters, befores)) in self.customs.iter().enumerate() {
            let me = (*rank, i + 1);
            let lower: Vec<&String> = nodes.iter().filter(|n| n.1 < me).map(|n| &n.0).collect();
            let pick = |picks: &[usize], from: &[&String]| -> Vec<String> {
                let mut ids: Vec<String> = if from.is_empty() {
                    Vec::new()
                } else {
                    picks
                        .iter()
                        .map(|p| format!("\"{}\"", from[p % from.len()]))
                        .collect()
                };
                ids.sort();
                ids.dedup();
                ids
            };
            let after = pick(afters, &lower);
            // `before` may only name built-in steps of a higher rank: later custom steps do not exist yet.
            let higher: Vec<&String> = nodes
                .iter()
                .filter(|n| n.1 > me && n.1.1 == 0)
                .map(|n| &n.0)
                .collect();
            let before = pick(befores, &higher);
            t += &format!(
                "[[step]]\nname = \"c{i}\"\nrun = [\"/usr/bin/c{i}\"]\nafter = [{}]\nbefore = [{}]\n",
                after.join(", "),
                before.join(", ")
            );
            nodes.push((format!("step:c{i}"), me));
        }
        if self.isolate {
            t += "[policy]\nisolate = \"rescue.target\"\n";
        }
        t
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn acyclic_plans_schedule_consistently(g in gen_plan()) {
        let text = g.toml();
        let loaded = kup::check::check("gen.toml", text.as_bytes());
        let plan = loaded.plan.unwrap_or_else(|| panic!("{text}\n{}", loaded.report.render(false, 100)));
        let graph = StepGraph::build(&plan).unwrap();
        let schedule = graph.schedule();
        prop_assert_eq!(schedule.slots.len(), graph.len());
        // The order respects every edge, and a step starts no earlier than what it waits for ends.
        for (i, slot) in schedule.slots.iter().enumerate() {
            for before in &slot.after {
                let j = schedule.slots.iter().position(|s| &s.id == before).unwrap();
                prop_assert!(j < i, "{} listed before {}", slot.id, before);
                prop_assert!(schedule.slots[j].end <= slot.start);
            }
        }
        // Every declared before/after holds.
        for step in &plan.steps {
            let me = format!("step:{}", step.name);
            for r in &step.before {
                prop_assert!(graph.depends_on(&r.id, &me), "{} before {}", me, r.id);
            }
            for r in &step.after {
                prop_assert!(graph.depends_on(&me, &r.id), "{} after {}", me, r.id);
            }
        }
        // The point of no return splits the graph in two.
        for step in graph.steps() {
            match step.phase {
                Phase::Before => prop_assert!(graph.depends_on("kexec", &step.id), "{}", step.id),
                Phase::After => prop_assert!(graph.depends_on(&step.id, "kexec"), "{}", step.id),
                Phase::Kexec => prop_assert_eq!(&step.id, "kexec"),
            }
        }
        // The critical path is a chain of edges, at least as long as any step and at most all of them.
        let longest = graph.steps().map(|s| s.estimate).max().unwrap();
        let sum: std::time::Duration = graph.steps().map(|s| s.estimate).sum();
        prop_assert!(schedule.total >= longest);
        prop_assert!(schedule.total <= sum);
        let on_path: std::time::Duration = schedule
            .critical_path
            .iter()
            .map(|id| graph.step(id).unwrap().estimate)
            .sum();
        prop_assert_eq!(on_path, schedule.total);
        for pair in schedule.critical_path.windows(2) {
            prop_assert!(graph.after(&pair[1]).contains(&&pair[0]));
        }
        // Each VM is down at least across the kexec.
        let kexec = graph.step("kexec").unwrap().estimate;
        for (_, down) in &schedule.vm_downtime {
            prop_assert!(*down >= kexec);
        }
        // The order for downtime: an early isolate precedes every pause, a late one follows every save; an app a
        // guest needs stops after that guest's save and is back before its restore; an app no guest needs stops
        // before every pause and is back after every resume.
        for v in 0..g.vms.len() {
            let (pause, save) = (format!("vm:v{v}:pause"), format!("vm:v{v}:save"));
            let (restore, resume) = (format!("vm:v{v}:restore"), format!("vm:v{v}:resume"));
            if g.isolate {
                if g.early_isolate() {
                    prop_assert!(graph.depends_on(&pause, "isolate"), "{} after isolate", pause);
                } else {
                    prop_assert!(graph.depends_on("isolate", &save), "isolate after {}", save);
                }
            }
            for a in 0..g.apps.len() {
                let (app_save, app_restore) = (format!("app:a{a}:save"), format!("app:a{a}:restore"));
                if g.needs(v, a) {
                    prop_assert!(graph.depends_on(&app_save, &save), "{} after {}", app_save, save);
                    prop_assert!(graph.depends_on(&restore, &app_restore), "{} after {}", restore, app_restore);
                } else if !g.needed(a) {
                    prop_assert!(graph.depends_on(&pause, &app_save), "{} after {}", pause, app_save);
                    prop_assert!(graph.depends_on(&app_restore, &resume), "{} after {}", app_restore, resume);
                }
            }
        }
    }
}

// --- live patches ---

#[test]
fn a_live_patch_plan_with_guests_graphs_zero_guest_downtime() {
    let plan = r#"kup = 1
name = "live patch under two guests"

[livepatch]
module = "/var/lib/kpatch/livepatch_fix.ko"
name = "livepatch_fix"
sha256 = "4e1a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192"

[[vm]]
name = "db-1"
libvirt = "db-1"
state = "/var/lib/kup/state/db-1"

[[vm]]
name = "web-1"
libvirt = "web-1"
state = "/var/lib/kup/state/web-1"

[[step]]
name = "notify"
run = ["/usr/local/bin/notify", "patching"]
"#;
    let run = Kup::new()
        .args(["plan", "graph"])
        .plan(plan)
        .run()
        .status(0);
    let stdout = run.stdout();
    assert!(
        stdout.contains("guest downtime: 0 ms (2 guest(s)"),
        "{stdout}"
    );
    assert!(!stdout.contains("vm:"), "{stdout}");
    insta::assert_snapshot!("livepatch-with-guests.text", stdout);
    let json = Kup::new()
        .args(["plan", "graph", "--format", "json"])
        .plan(plan)
        .run()
        .stdout_json();
    assert_eq!(json["estimated_downtime_ms"], 0);
    assert_eq!(json["vm_downtime_ms"], serde_json::json!({}));
}

// --- dry run --------------------------------------------------------------------------------------------------

#[test]
fn dry_run_of_every_shipped_plan() {
    for path in shipped_plans() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for format in ["human", "json"] {
            let stdout = Kup::new()
                .args(["plan", "apply", "--dry-run", "--format", format])
                .args(["--current-cmdline", "tests/data/graph/proc-cmdline"])
                .arg(&path)
                .run()
                .status(0)
                .stdout();
            if format == "json" {
                let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                let steps = value["steps"].as_array().unwrap();
                // The kernel is loaded with exactly the command line the dry run announces (a live patch plan
                // loads none: it has no kernel:load).
                if let Some(load) = steps.iter().find(|s| s["id"] == "kernel:load") {
                    assert_eq!(load["actions"][0]["cmdline"], value["kernel_cmdline"]);
                } else {
                    assert!(steps.iter().all(|s| s["phase"] == "before"), "{stem}");
                }
                // Nothing after the point of no return claims it can be undone.
                for step in steps {
                    if step["phase"] != "before" {
                        assert_eq!(step["rollback"], serde_json::json!([]), "{stem}");
                    }
                }
            }
            insta::assert_snapshot!(format!("dry-run.{stem}.{format}"), stdout);
        }
    }
}

#[test]
fn a_real_apply_of_a_plan_for_other_hosts_is_refused_before_anything_changes() {
    // The plan is for hv-lab-1; this test machine is not (and is never kexec'd: the refusal comes first).
    Kup::new()
        .args([
            "plan",
            "apply",
            "--yes",
            "plans/single-qemu-shared-ram.toml",
        ])
        .run()
        .status(3)
        .stderr_has("refused");
}

#[test]
fn dry_run_needs_the_running_cmdline_only_to_inherit_it() {
    Kup::new()
        .args(["plan", "apply", "--dry-run", "--current-cmdline"])
        .args([
            "tests/data/no-such-file",
            "plans/single-qemu-shared-ram.toml",
        ])
        .run()
        .status(2)
        .stderr_has("inherits the running command line");
}

#[test]
fn dry_run_of_an_invalid_plan_exits_1() {
    Kup::new()
        .args(["plan", "apply", "--dry-run"])
        .arg("tests/data/diagnostics/downtime-budget.toml")
        .run()
        .status(1)
        .stdout_is("")
        .stderr_has("kup::plan::downtime-budget");
}

#[test]
fn the_example_in_docs_graph_md_is_current() {
    let doc = std::fs::read_to_string("docs/graph.md").unwrap();
    for format in ["text", "mermaid"] {
        let rendered = Kup::new()
            .args(["plan", "graph", "--format", format])
            .arg("plans/multi-vm-vfio-spdk.toml")
            .run()
            .stdout();
        assert!(
            doc.contains(&format!("```{format}\n{rendered}```")),
            "docs/graph.md's {format} example is stale: paste the output of `kup plan graph --format {format} \
             plans/multi-vm-vfio-spdk.toml`"
        );
    }
}

/// Regression: dropping implied edges checked paths one DFS at a time, and a plan with 1500 guests took minutes.
#[test]
fn a_host_with_a_thousand_guests_is_graphed_quickly() {
    let mut text = String::from(KERNEL);
    for i in 0..1000 {
        text += &format!(
            "[[vm]]\nname = \"v{i}\"\nlibvirt = \"v{i}\"\nstate = \"/var/lib/kup/state/v{i}\"\n"
        );
    }
    text += "[[step]]\nname = \"drain\"\nrun = [\"/bin/true\"]\nbefore = [\"vm:v0:pause\"]\n";
    let started = std::time::Instant::now();
    let loaded = kup::check::check("big.toml", text.as_bytes());
    let graph = StepGraph::build(&loaded.plan.unwrap()).unwrap();
    assert_eq!(graph.schedule().slots.len(), 4 * 1000 + 7);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// Custom steps referring to each other and to built-in steps at random, cycles and typos included.
fn gen_tangle() -> impl Strategy<Value = String> {
    let ids = prop::sample::select(vec![
        "step:s0",
        "step:s1",
        "step:s2",
        "step:s3",
        "preflight",
        "kexec",
        "verify",
        "vm:db:save",
        "vm:db:resume",
        "sync",
        "vm:db:puase",
        "s1",
    ]);
    prop::collection::vec(
        (
            prop::collection::vec(ids.clone(), 0..3),
            prop::collection::vec(ids, 0..3),
        ),
        1..5,
    )
    .prop_map(|steps| {
        let mut t = format!(
            "{KERNEL}[[vm]]\nname = \"db\"\nlibvirt = \"db\"\nstate = \"/var/lib/kup/state/db\"\n"
        );
        for (i, (before, after)) in steps.iter().enumerate() {
            let list = |ids: &Vec<&str>| {
                ids.iter()
                    .map(|id| format!("\"{id}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            t += &format!(
                "[[step]]\nname = \"s{i}\"\nrun = [\"/bin/true\"]\nbefore = [{}]\nafter = [{}]\n",
                list(before),
                list(after)
            );
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tangled_steps_are_graphed_or_reported_precisely(text in gen_tangle()) {
        let loaded = kup::check::check("tangle.toml", text.as_bytes());
        match &loaded.plan {
            Some(plan) => {
                let graph = StepGraph::build(plan).unwrap();
                prop_assert_eq!(graph.schedule().slots.len(), graph.len());
            }
            None => {
                prop_assert!(loaded.report.has_errors());
                for d in &loaded.report.diagnostics {
                    prop_assert!(
                        [kup::graph::code::UNKNOWN_STEP, kup::graph::code::STEP_CYCLE].contains(&d.code),
                        "{}", d.code
                    );
                    // Every label sits on a quoted step id in the plan, and a cycle's labels on ids of the cycle.
                    let spans = d.span.iter().chain(d.related.iter().map(|r| &r.0));
                    for span in spans {
                        let quoted = &text[span.clone()];
                        prop_assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{quoted}");
                        if d.code == kup::graph::code::STEP_CYCLE {
                            let id = quoted.trim_matches('"');
                            let needle = format!(" {id} ");
                            let chain = format!(" {} ", d.message.split(": ").nth(1).unwrap_or_default());
                            prop_assert!(chain.contains(&needle), "{id} not in {}", d.message);
                        }
                    }
                }
            }
        }
    }
}

/// A guest the plan reboots is shut down before any saved guest pauses (its power-off would otherwise be spent in
/// their downtime), and booted only once its device is bound again on the new kernel.
#[test]
fn a_restarted_guest_is_shut_down_before_the_saved_ones_pause() {
    let (_, graph) = load(&PathBuf::from("plans/vfio-guest-restart.toml"));
    assert!(graph.depends_on("vm:db-1:pause", "vm:nfv-1:shutdown"));
    assert!(graph.depends_on("vm:nfv-1:boot", "pci:0000:5e:00.1:bind"));
    for absent in [
        "vm:nfv-1:pause",
        "vm:nfv-1:save",
        "vm:nfv-1:restore",
        "vm:nfv-1:resume",
    ] {
        assert!(graph.step(absent).is_none(), "{absent}");
    }
}
