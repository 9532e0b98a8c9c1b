//! The whole promise in one test: real QEMU guests inside a lab host survive its kexec into a newer kernel. The lab
//! host (`lab/scenario/run-vmhost`: a q35 QEMU 10 machine with an emulated IOMMU, persistent memory carved by
//! `memmap=`, a spare PCI device, systemd and QEMU 10 in its root file system) runs two guests in
//! `qemu@NAME.service`: `dax` with its RAM in a `share=on` file on ext4 `-o dax` on `/dev/pmem0` (saved with
//! cpr-reboot: device state only), `copy` with plain RAM (copied into its state file). Each holds a 64 MiB random
//! pattern made on this machine; `kup plan apply` in the lab host kexecs it from 6.1 into the new kernel, and
//! `kup-resume.service` restores both guests, whose RAM is then read back and compared with the pattern's digest
//! kept here.
//!
//! Needs `lab/setup` (and root for the root file system's debootstrap, cached under `target/lab/rootfs/`). A lab
//! that is not set up fails these tests: a silently skipped lab proves nothing.

use serde_json::Value;
use std::collections::BTreeMap;

#[path = "support/lab.rs"]
mod lab;
use lab::{Journal, Lab, Run};

/// The guests of the lab host whose running state the plan keeps (the third, `vfio`, is rebooted).
const GUESTS: [&str; 2] = ["dax", "copy"];
/// The spare PCI device the plan hands to vfio-pci.
const SPARE: &str = "0000:00:06.0";

/// Runs `lab/scenario/run-vmhost` with `args` into `target/lab/runs/NAME`; returns the lab, the run and the lab
/// host's boots — (boot_id, release) in order.
fn run_vmhost(name: &str, args: &[&str]) -> (Lab, Run, Vec<(String, String)>) {
    let lab = Lab::get();
    let mut all = vec!["--quiet", "--timeout", "420", "--retry", "1"];
    all.extend_from_slice(args);
    let run = lab.run_into("scenario/run-vmhost", &[], &all, name);
    let boots = run.boots_in("/var/lib/kup-lab/boots.log");
    (lab, run, boots)
}

/// `run_vmhost` of a scenario whose apply kexecs: the lab host booted twice, first the lab's kernel, then (after
/// the kexec) the new one; and the status kup wrote on it.
fn kexeced_vmhost(name: &str, args: &[&str]) -> (Lab, Run, Value) {
    let (lab, run, boots) = run_vmhost(name, args);
    assert_eq!(boots.len(), 2, "two boots of the lab host: {boots:?}");
    assert_ne!(boots[0].0, boots[1].0, "the kexec started a new boot");
    assert_eq!(boots[0].1, lab.kernel_version());
    assert_eq!(boots[1].1, lab.new_kernel_version());
    let status = run.json("/var/lib/kup-lab/status.json");
    (lab, run, status)
}

/// A `KEY VALUE…` file the lab host's driver wrote (`/var/lib/kup-lab/NAME`), as a map.
fn fields(run: &Run, name: &str) -> BTreeMap<String, String> {
    run.must(&format!("/var/lib/kup-lab/{name}"))
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The patterns' digests, as this machine computed them when it made them.
fn patterns(run: &Run) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(run.out.join("patterns.sha256")).expect("patterns.sha256");
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, file)| {
            let guest = file.trim_start_matches("pattern-").trim_end_matches(".bin");
            (guest.to_owned(), sum.to_owned())
        })
        .collect()
}

/// The status JSON's state of step `id`.
fn step_state<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .map(|s| &s["state"])
        .unwrap_or_else(|| panic!("no step {id} in {status:#}"))
}

/// Each kept guest's pattern was written before the update and read back byte-identical from its RAM after it,
/// and the guest runs on the new kernel; returns what the driver recorded of each after the kexec.
fn ram_came_back(run: &Run) -> Vec<BTreeMap<String, String>> {
    let sums = patterns(run);
    GUESTS
        .iter()
        .map(|guest| {
            let before = fields(run, &format!("guest-{guest}.1"));
            let after = fields(run, &format!("guest-{guest}.2"));
            assert_eq!(
                before["sha256"], sums[*guest],
                "{guest}: the pattern was written"
            );
            assert_eq!(
                after["sha256"], sums[*guest],
                "{guest}: RAM byte-identical after the kexec"
            );
            assert_eq!(after["status"], "running", "{guest} runs on the new kernel");
            after
        })
        .collect()
}

/// The size the journal recorded for the state file `vm:NAME:save` committed.
fn committed_bytes(journal: &Journal, guest: &str) -> u64 {
    let done = journal.events("step-done");
    let save = done
        .iter()
        .find(|r| r["step"] == format!("vm:{guest}:save"))
        .unwrap_or_else(|| panic!("vm:{guest}:save never finished:\n{}", journal.text()));
    save["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| {
            let path = o.get("path")?.as_str()?;
            path.ends_with("/vmstate")
                .then(|| o.get("size")?.as_u64())?
        })
        .unwrap_or_else(|| panic!("vm:{guest}:save committed no state file: {save}"))
}

/// The flagship: two guests, one with its RAM in persistent memory, carried across a real kexec from 6.1 into the
/// new kernel; both come back in new QEMU processes with their RAM byte-identical, and the dax guest's RAM was
/// never copied. A third guest owns the spare PCI device through VFIO, which QEMU cannot migrate: the plan reboots
/// it, after kup has bound the device to vfio-pci again on the new kernel.
#[test]
fn guests_inside_the_lab_host_survive_its_kexec_into_the_new_kernel() {
    let (lab, run, status) = kexeced_vmhost("vmhost", &[]);
    lab::assert_contains_all(
        &run.must("/var/lib/kup-lab/cmdline.2"),
        &["memmap=256M!1536M", "intel_iommu=on", "cpuhp.parallel=1"],
        "the new command line",
    );
    // The pmem file system came back, mounted with DAX, on the new kernel.
    lab::assert_contains_all(
        &run.must("/var/lib/kup-lab/pmem.2"),
        &["/dev/pmem0 /mnt/pmem ext4", "dax"],
        "the new kernel's pmem mount",
    );

    for (guest, after) in GUESTS.iter().zip(ram_came_back(&run)) {
        assert!(after["unit"].ends_with("active"), "{guest}: {after:?}");
        for step in ["restore", "resume"] {
            assert_eq!(*step_state(&status, &format!("vm:{guest}:{step}")), "done");
        }
    }
    assert_eq!(status["state"], "completed", "{status:#}");
    assert_eq!(
        status["kexec"]["to_release"],
        lab.new_kernel_version().as_str()
    );

    // cpr-reboot: the dax guest's state is its devices only; the copy guest's holds its RAM.
    let journal = Journal::read_from(&run, "/var/lib/kup");
    let dax = committed_bytes(&journal, "dax");
    let copy = committed_bytes(&journal, "copy");
    assert!(
        dax < 4 << 20,
        "the dax guest's state file holds device state only: {dax} bytes"
    );
    assert!(
        copy > 64 << 20,
        "the copy guest's state file holds its RAM: {copy} bytes"
    );

    // The spare device: bound to vfio-pci before the update, to nvme again by the new kernel, rebound by kup
    // before it booted the guest that owns it again.
    let pci = fields(&run, "pci.1");
    assert_eq!(pci["before-bind"], "nvme");
    assert_eq!(pci["after-bind"], "vfio-pci");
    assert_eq!(
        fields(&run, "pci.2")["now"],
        "vfio-pci",
        "kup rebound {SPARE}"
    );
    let bind = format!("pci:{SPARE}:bind");
    let done = journal.events("step-done");
    let bound = done
        .iter()
        .find(|r| r["step"] == bind.as_str())
        .and_then(|r| {
            r["outputs"]
                .as_array()?
                .iter()
                .find(|o| o.get("driver_after").is_some())
                .cloned()
        })
        .unwrap_or_else(|| panic!("{bind} did not bind the device:\n{}", journal.text()));
    assert_eq!(
        bound["driver_before"], "nvme",
        "the new kernel's own driver"
    );
    assert_eq!(bound["driver_after"], "vfio-pci");
    assert!(bound["iommu_group"].is_string(), "{bound}");
    // Its guest could not be saved (QEMU: no VFIO migration): rebooted, with the device passed through again.
    for boot in [1, 2] {
        let vfio = fields(&run, &format!("guest-vfio.{boot}"));
        assert_eq!(vfio["status"], "running", "boot {boot}: {vfio:?}");
        assert_eq!(vfio["device"], "passed-through", "boot {boot}: {vfio:?}");
    }
    for step in ["vm:vfio:shutdown", "vm:vfio:boot", bind.as_str()] {
        assert_eq!(*step_state(&status, step), "done", "{step}");
    }
    let at = |step: &str| done.iter().position(|r| r["step"] == step);
    assert!(
        at(&bind) < at("vm:vfio:boot"),
        "the device is bound before its guest boots"
    );
}

/// `policy.isolate` with every guest's `unit` named: kup keeps `qemu@NAME.service` out of the isolate (runtime
/// drop-ins with `IgnoreOnIsolate=yes`) and isolates `rescue.target` before the first pause, while the guests run.
/// The isolate really stops what is not kept — `kup-lab.service`, the caller, never gets to record kup's exit
/// status — and the guests' QEMUs live through it: they are paused and saved after it over the same QMP sockets,
/// and come back on the new kernel with their RAM byte-identical.
#[test]
fn guests_named_by_unit_keep_running_through_an_isolate_before_their_pause() {
    let (_, run, status) = kexeced_vmhost("vmhost-isolate", &["--isolate"]);
    assert_eq!(status["state"], "completed", "{status:#}");
    assert_eq!(*step_state(&status, "isolate"), "done");
    let journal = Journal::read_from(&run, "/var/lib/kup");
    let isolated = journal
        .position("step-done", "isolate")
        .unwrap_or_else(|| panic!("no isolate:\n{}", journal.text()));
    for first in ["vm:dax:pause", "vm:copy:pause", "vm:vfio:shutdown"] {
        let started = journal
            .position("step-started", first)
            .unwrap_or_else(|| panic!("{first} never started:\n{}", journal.text()));
        assert!(
            isolated < started,
            "{first} started before the isolate was done"
        );
    }
    // The caller did not survive the isolate: it was killed before kup kexec'd, so it never wrote apply.rc.
    assert_eq!(run.file("/var/lib/kup-lab/apply.rc"), None);
    ram_came_back(&run);
    assert_eq!(fields(&run, "guest-vfio.2")["status"], "running");
}

/// A power cut right after the kexec record: the lab host boots cold, its pmem region blank. `kup plan resume`
/// restores the copy guest from its state file and refuses the dax guest, whose RAM is gone, keeping its state.
#[test]
fn after_a_power_cut_the_dax_guest_is_refused_and_the_copy_guest_restored() {
    let (lab, run, boots) = run_vmhost("vmhost-power-cut", &["--power-cut"]);
    assert_eq!(boots.len(), 2, "{boots:?}");
    assert_eq!(
        boots[1].1,
        lab.kernel_version(),
        "the cold boot is the old kernel"
    );
    assert_eq!(run.must("/var/lib/kup-lab/pmem.2").trim(), "unmounted");

    let status = run.json("/var/lib/kup-lab/status.json");
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(*step_state(&status, "kexec"), "failed");
    assert_eq!(*step_state(&status, "vm:copy:restore"), "done");
    assert_eq!(*step_state(&status, "vm:copy:resume"), "done");
    assert_eq!(*step_state(&status, "vm:dax:restore"), "failed");
    // The rebooted guest needs no state: it boots again (its device rebound) even on the old kernel.
    assert_eq!(*step_state(&status, "vm:vfio:boot"), "done");
    let copy = fields(&run, "guest-copy.2");
    assert_eq!(copy["sha256"], patterns(&run)["copy"], "copy guest intact");
    assert_eq!(copy["status"], "running");
    let dax = fields(&run, "guest-dax.2");
    assert_ne!(
        dax["status"], "running",
        "the dax guest must not run on garbage: {dax:?}"
    );
    assert!(
        run.file("/var/lib/kup/vms/dax/vmstate").is_some(),
        "the dax guest's state file is kept"
    );
}

/// Runs the scenario `option` into `name`: one boot, `kup plan apply` exits 5 with the preflight failed, its message
/// holding every one of `parts`, no guest paused or shut down, and every guest still running afterwards.
fn refused_at_preflight(name: &str, option: &str, parts: &[&str]) {
    let (_, run, boots) = run_vmhost(name, &[option]);
    assert_eq!(boots.len(), 1, "no kexec: {boots:?}");
    assert_eq!(run.must("/var/lib/kup-lab/apply.rc").trim(), "5");
    let status = run.json("/var/lib/kup-lab/status.json");
    assert_eq!(status["state"], "rolled-back", "{status:#}");
    assert_eq!(*step_state(&status, "preflight"), "failed");
    let message = status["message"].as_str().unwrap_or_default();
    for part in parts {
        assert!(message.contains(part), "{part}: {message}");
    }
    for step in ["vm:dax:pause", "vm:copy:pause", "vm:vfio:shutdown"] {
        assert_eq!(*step_state(&status, step), "pending", "{step}");
    }
    for guest in ["dax", "copy", "vfio"] {
        let now = fields(&run, &format!("guest-{guest}.1-after"));
        assert_eq!(now["status"], "running", "{guest}: {now:?}");
    }
}

/// A plan that drops `memmap=` from the new command line while the dax guest's RAM lives on the pmem that `memmap=`
/// carves: the new kernel would take that region as ordinary RAM. `kup plan validate` warns (offline it cannot know
/// where the RAM file is); the preflight, which can, refuses before any guest is paused, and every guest runs on.
#[test]
fn a_plan_dropping_the_memmap_that_holds_guest_ram_is_refused_at_preflight() {
    refused_at_preflight(
        "vmhost-drop-memmap",
        "--drop-memmap",
        &[
            "/mnt/pmem/dax.ram",
            "memmap=256M!1536M",
            "persistent memory",
        ],
    );
}

/// The lab host booted with `root=/dev/nvme0n1p1` (its 6.1 numbers the two NVMe controllers in bus order): the new
/// kernel numbers them in the order their probes finish, often the spare first (its nvme0 has no namespace, so the
/// new kernel would wait for its root forever). The spare is on vfio-pci when kup runs, and counts all the same:
/// the new kernel's nvme driver takes it at boot. The preflight refuses that name before any guest is paused, says
/// how to name the root instead, and every guest runs on.
#[test]
fn a_root_named_by_nvme_number_on_a_host_with_two_controllers_is_refused_at_preflight() {
    refused_at_preflight(
        "vmhost-root-by-name",
        "--root-by-name",
        &[
            "root=/dev/nvme0n1p1",
            "2 NVMe controllers (0000:00:02.0, 0000:00:06.0, whatever driver they have now)",
            "root = \"PARTUUID=…\"",
        ],
    );
}

/// After the kexec one guest's new QEMU refuses its state (a plan step spoiled the file between the save and the
/// kexec): its restore fails with QEMU's own reason and its state file stays; the other guests are restored.
#[test]
fn a_state_its_qemu_refuses_fails_that_guest_only_with_qemus_reason() {
    let (_, run, status) = kexeced_vmhost("vmhost-refuse-state", &["--refuse-state"]);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(*step_state(&status, "vm:copy:restore"), "failed");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("QEMU could not load the state"),
        "{message}"
    );
    assert!(
        run.file("/var/lib/kup/vms/copy/vmstate").is_some(),
        "the refused state file is kept"
    );
    let dax = fields(&run, "guest-dax.2");
    assert_eq!(dax["sha256"], patterns(&run)["dax"], "dax restored intact");
    assert_eq!(dax["status"], "running");
    assert_eq!(*step_state(&status, "vm:dax:resume"), "done");
    assert_eq!(*step_state(&status, "vm:vfio:boot"), "done");
}
