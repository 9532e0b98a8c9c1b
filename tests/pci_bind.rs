//! `pci:ADDR:bind` against the fake sysfs tree: the kernel's documented sequence in order, nothing written for a
//! device bound as planned (a resumed plan runs the step again), the module loaded when the driver is missing, a
//! driver that refuses, and the IOMMU group check (an offender named, no group, no /dev/vfio node). A tree cannot
//! probe, so [`FakeKernel`] plays the kernel; the last tests run the real host's writes, with a thread binding the
//! device when `drivers_probe` is written. A real vfio-pci rebind after a real kexec is the lab's to prove.

mod support;

use kup::action::{Action, ActionOutput, PciBinding};
use kup::host::pci_bind::{BindRequest, PciBindError, bind_pci};
use kup::host::{Host, HostError, RealHostAt, sysfs};
use std::time::{Duration, Instant};
use support::plans::{program, step};
use support::sysfs::{FakeKernel, FakeSysfs, Probe};

const A: &str = "0000:3b:00.0";
const B: &str = "0000:3b:00.1";

/// No load: for requests whose driver is registered, or that fail before any load.
const LOAD: &[String] = &[];

fn load() -> Vec<String> {
    vec!["modprobe".into(), "vfio-pci".into()]
}

/// A vfio-pci bind of `address` with `peers`, timing out after `ms`.
fn request<'a>(
    address: &'a str,
    load: &'a [String],
    peers: &'a [String],
    ms: u64,
) -> BindRequest<'a> {
    BindRequest {
        address,
        driver: "vfio-pci",
        load,
        iommu: true,
        peers,
        timeout: Duration::from_millis(ms),
    }
}

fn bind(fake: &FakeSysfs, kernel: &FakeKernel<'_>, address: &str) -> Result<PciBinding, HostError> {
    bind_pci(&fake.root(), kernel, &request(address, &load(), &[], 500))
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The error's message, which must contain `part`.
#[track_caller]
fn says(e: &HostError, part: &str) -> String {
    let message = e.to_string();
    assert!(message.contains(part), "{message}");
    message
}

/// The `PciBindError` inside `e`, which must be one.
#[track_caller]
fn pci_error(e: &HostError) -> &PciBindError {
    match e {
        HostError::Pci(inner) => inner,
        other => panic!("not a PCI binding error: {other:?}"),
    }
}

#[test]
fn a_device_the_new_kernel_gave_to_nvme_is_rebound_in_the_documented_order() {
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    let kernel = FakeKernel::new(&fake);
    let out = bind(&fake, &kernel, A).unwrap();
    let expected = pairs(&[
        (
            "/sys/bus/pci/devices/0000:3b:00.0/driver_override",
            "vfio-pci",
        ),
        ("/sys/bus/pci/devices/0000:3b:00.0/driver/unbind", A),
        ("/sys/bus/pci/drivers_probe", A),
    ]);
    assert_eq!(kernel.log(), expected);
    let journaled: Vec<(String, String)> = out
        .writes
        .iter()
        .map(|w| (w.path.clone(), w.value.clone()))
        .collect();
    assert_eq!(journaled, expected, "the output lists the writes made");
    assert_eq!(out.driver_before.as_deref(), Some("nvme"));
    assert_eq!(out.driver_after, "vfio-pci");
    assert_eq!(out.iommu_group.as_deref(), Some("42"));
    assert_eq!(out.id, "8086:0a54");
    assert!(!out.loaded_module);
    assert_eq!(fake.bound(A).as_deref(), Some("vfio-pci"));
    // What verify checks now holds.
    sysfs::check_pci(&fake.root(), A, "vfio-pci", true).unwrap();
}

#[test]
fn an_unbound_device_is_probed_without_an_unbind() {
    let fake = FakeSysfs::with(&[(A, None, Some(42))]);
    let kernel = FakeKernel::new(&fake);
    let out = bind(&fake, &kernel, A).unwrap();
    assert_eq!(
        kernel.log(),
        pairs(&[
            (
                "/sys/bus/pci/devices/0000:3b:00.0/driver_override",
                "vfio-pci"
            ),
            ("/sys/bus/pci/drivers_probe", A),
        ])
    );
    assert_eq!(out.driver_before, None);
    assert_eq!(fake.bound(A).as_deref(), Some("vfio-pci"));
}

#[test]
fn a_device_bound_as_planned_is_left_alone_and_a_second_run_writes_nothing() {
    let fake = FakeSysfs::with(&[(A, Some("vfio-pci"), Some(7))]);
    fake.vfio_node(7);
    let kernel = FakeKernel::new(&fake);
    let out = bind(&fake, &kernel, A).unwrap();
    assert_eq!(kernel.log(), []);
    assert!(out.writes.is_empty());
    assert_eq!(out.driver_before.as_deref(), Some("vfio-pci"));
    assert_eq!(out.iommu_group.as_deref(), Some("7"));
    assert_eq!(
        fake.read("/sys/bus/pci/devices/0000:3b:00.0/driver_override"),
        "(null)\n"
    );

    // Rebound once, then run again (a resume): the second run writes nothing.
    let rebound = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    let kernel = FakeKernel::new(&rebound);
    bind(&rebound, &kernel, A).unwrap();
    let first = kernel.log().len();
    let again = bind(&rebound, &kernel, A).unwrap();
    assert_eq!(kernel.log().len(), first);
    assert!(again.writes.is_empty());
    assert_eq!(again.driver_before.as_deref(), Some("vfio-pci"));
}

#[test]
fn a_driver_that_is_not_registered_is_loaded_first() {
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    fake.remove_driver("vfio-pci");
    let kernel = FakeKernel::new(&fake);
    let out = bind(&fake, &kernel, A).unwrap();
    let log = kernel.log();
    assert_eq!(log[0], ("exec".to_owned(), "modprobe vfio-pci".to_owned()));
    assert_eq!(
        log[1].0,
        "/sys/bus/pci/devices/0000:3b:00.0/driver_override"
    );
    assert!(out.loaded_module);

    // A load that registers nothing is an error before anything is written.
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    fake.remove_driver("vfio-pci");
    let mut kernel = FakeKernel::new(&fake);
    kernel.registers = false;
    let e = bind(&fake, &kernel, A).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::DriverMissing { .. }));
    says(
        &e,
        "driver vfio-pci is not registered: `modprobe vfio-pci` ran",
    );
    assert_eq!(kernel.log().len(), 1, "only the load");
    assert_eq!(fake.bound(A).as_deref(), Some("nvme"));
}

#[test]
fn a_driver_that_refuses_the_device_is_named_with_what_was_seen() {
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    let mut kernel = FakeKernel::new(&fake);
    kernel.probe = Probe::Fails;
    let e = bind(&fake, &kernel, A).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::Refused { .. }));
    let message = says(
        &e,
        "vfio-pci refused PCI device 0000:3b:00.0 [8086:0a54]: writing 0000:3b:00.0 to /sys/bus/pci/drivers_probe failed",
    );
    assert!(message.contains("see `dmesg`"), "{message}");

    // A probe that succeeds without binding is waited for, boundedly.
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    let mut kernel = FakeKernel::new(&fake);
    kernel.probe = Probe::Ignores;
    let started = Instant::now();
    let e = bind_pci(&fake.root(), &kernel, &request(A, &load(), &[], 150)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(started.elapsed() < Duration::from_secs(5));
    says(&e, "150 ms after drivers_probe it is bound to no driver");
}

#[test]
fn the_group_check_names_the_device_that_keeps_vfio_out() {
    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42)), (B, Some("nvme"), Some(42))]);
    let kernel = FakeKernel::new(&fake);
    let e = bind(&fake, &kernel, A).unwrap_err();
    match pci_error(&e) {
        PciBindError::GroupShared {
            group, offenders, ..
        } => {
            assert_eq!(group, "42");
            assert_eq!(offenders, &[(B.to_owned(), "nvme".to_owned())]);
        }
        other => panic!("{other:?}"),
    }
    says(
        &e,
        "IOMMU group 42 of PCI device 0000:3b:00.0 also holds 0000:3b:00.1 (bound to nvme)",
    );
    // The device itself was bound: the check runs after the bind, and a rerun after the fix goes straight to it.
    assert_eq!(fake.bound(A).as_deref(), Some("vfio-pci"));

    // The same guest's other device is bound by its own step: no offender while it waits for it.
    let peers = vec![B.to_owned()];
    bind_pci(&fake.root(), &kernel, &request(A, &load(), &peers, 500)).unwrap();

    // Unbound, or on a driver that does no DMA of its own: no offender either.
    for safe in [None, Some("pcieport"), Some("pci-stub"), Some("vfio-pci")] {
        fake.set_driver(B, safe);
        bind(&fake, &kernel, A).unwrap_or_else(|e| panic!("{safe:?}: {e}"));
    }
}

#[test]
fn no_iommu_group_says_to_boot_the_new_kernel_with_the_iommu_on() {
    let fake = FakeSysfs::with(&[(A, Some("nvme"), None)]);
    let kernel = FakeKernel::new(&fake);
    let e = bind(&fake, &kernel, A).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::IommuOff { .. }));
    let message = says(&e, "the IOMMU is off on this kernel");
    assert!(
        message.contains("boot the new kernel with intel_iommu=on / amd_iommu=on"),
        "{message}"
    );
    // With groups elsewhere the IOMMU is on: this device alone has none.
    fake.device(B, None, Some(3));
    let e = bind(&fake, &kernel, A).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::NoGroup { .. }), "{e}");
    // Without VFIO no group is needed.
    let nvme = BindRequest {
        driver: "nvme",
        iommu: false,
        ..request(A, LOAD, &[], 500)
    };
    let out = bind_pci(&fake.root(), &kernel, &nvme).unwrap();
    assert_eq!(out.driver_after, "nvme");
    assert_eq!(out.iommu_group, None);
}

#[test]
fn a_group_without_its_dev_vfio_node_is_an_error_after_the_wait() {
    let fake = FakeSysfs::with(&[(A, Some("vfio-pci"), Some(9))]);
    let kernel = FakeKernel::new(&fake);
    let e = bind_pci(&fake.root(), &kernel, &request(A, &load(), &[], 100)).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::NoVfioNode { .. }));
    assert!(
        e.to_string()
            .contains("dev/vfio/9 did not appear within 100 ms"),
        "{e}"
    );
}

#[test]
fn no_such_device_and_bad_names_are_refused_before_any_write() {
    let fake = FakeSysfs::new();
    let kernel = FakeKernel::new(&fake);
    let e = bind(&fake, &kernel, A).unwrap_err();
    assert!(matches!(pci_error(&e), PciBindError::NoSuchDevice { .. }));
    assert!(
        e.to_string().contains("does not exist on this kernel"),
        "{e}"
    );
    assert!(
        bind(&fake, &kernel, "../../../etc")
            .unwrap_err()
            .to_string()
            .contains("not a PCI address")
    );
    fake.device(A, Some("nvme"), Some(1));
    for driver in ["-r", "../nvme", ""] {
        let bad = BindRequest {
            driver,
            ..request(A, LOAD, &[], 100)
        };
        let e = bind_pci(&fake.root(), &kernel, &bad).unwrap_err();
        assert!(
            matches!(pci_error(&e), PciBindError::NotADriver { .. }),
            "{driver:?}: {e}"
        );
    }
    assert_eq!(kernel.log(), []);
}

// --- the real host's writes ------------------------------------------------------------------------------------

/// Plays the kernel for the real host's writes: once `drivers_probe` names the device, binds it to what
/// `driver_override` says (and makes the group's /dev/vfio node), as a probe would.
fn kernel_thread(
    fake: &FakeSysfs,
    address: &'static str,
    group: u32,
) -> std::thread::JoinHandle<()> {
    let probe = fake.host("/sys/bus/pci/drivers_probe");
    let dev = fake.host(&format!("/sys/devices/pci0000:00/{address}"));
    let node = fake.host(&format!("/dev/vfio/{group}"));
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&probe).unwrap() != address {
            assert!(Instant::now() < deadline, "drivers_probe was never written");
            std::thread::sleep(Duration::from_millis(2));
        }
        let wanted = std::fs::read_to_string(dev.join("driver_override")).unwrap();
        let _ = std::fs::remove_file(dev.join("driver"));
        std::os::unix::fs::symlink(
            format!("../../../bus/pci/drivers/{}", wanted.trim()),
            dev.join("driver"),
        )
        .unwrap();
        std::fs::write(node, "").unwrap();
    })
}

#[test]
fn the_compiled_bind_performed_by_the_real_host_writes_sysfs_and_journals_the_drivers() {
    let p = program(
        "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\n[[vm]]\nname = \"db\"\nlibvirt = \"db\"\n\
         state = \"/var/lib/kup/state/db\"\ndevices = [\"0000:3b:00.0\"]\n[[pci]]\naddress = \"0000:3b:00.0\"\n",
    );
    let actions = &step(&p, "pci:0000:3b:00.0:bind").actions;
    assert!(matches!(&actions[..], [Action::BindPci(_)]), "{actions:?}");

    let fake = FakeSysfs::with(&[(A, Some("nvme"), Some(42))]);
    let kernel = kernel_thread(&fake, A, 42);
    let out = RealHostAt::new(fake.root()).perform(actions).unwrap();
    kernel.join().unwrap();
    // The writes, as the kernel's attributes received them (one write each, no newline).
    assert_eq!(
        fake.read("/sys/bus/pci/devices/0000:3b:00.0/driver_override"),
        "vfio-pci"
    );
    assert_eq!(fake.read("/sys/bus/pci/drivers/nvme/unbind"), A);
    assert_eq!(fake.read("/sys/bus/pci/drivers_probe"), A);
    let ActionOutput::PciBound(binding) = &out[0] else {
        panic!("{:?}", out[0]);
    };
    // What the journal records: the lab reads driver_after_kexec and driver_at_restore from these.
    let json = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(json["driver_before"], "nvme");
    assert_eq!(json["driver_after"], "vfio-pci");
    assert_eq!(json["iommu_group"], "42");
    assert_eq!(json["writes"].as_array().unwrap().len(), 3);
    assert_eq!(binding.driver_after, "vfio-pci");

    // Performed again (a resume), it writes nothing: the attributes keep what they hold.
    std::fs::write(fake.host("/sys/bus/pci/drivers_probe"), "").unwrap();
    let again = RealHostAt::new(fake.root()).perform(actions).unwrap();
    assert_eq!(fake.read("/sys/bus/pci/drivers_probe"), "");
    let ActionOutput::PciBound(again) = &again[0] else {
        panic!("{:?}", again[0]);
    };
    assert_eq!(again.driver_before.as_deref(), Some("vfio-pci"));
    assert!(again.writes.is_empty());
}

#[test]
fn the_real_host_runs_the_load_argv_without_a_shell_when_the_driver_is_missing() {
    let fake = FakeSysfs::with(&[(A, None, Some(5))]);
    fake.remove_driver("vfio-pci");
    // Stands in for `modprobe vfio-pci`: a real process that registers the driver.
    let registered = fake.host("/sys/bus/pci/drivers/vfio-pci");
    let bind = |load: &[&str]| {
        Action::BindPci(kup::action::BindPci {
            address: A.into(),
            driver: "vfio-pci".into(),
            load: load.iter().map(|s| (*s).to_owned()).collect(),
            iommu: true,
            peers: vec![],
            timeout_ms: 5_000,
        })
    };
    let mkdir = bind(&["mkdir", "-p", registered.to_str().unwrap()]);
    let kernel = kernel_thread(&fake, A, 5);
    let out = RealHostAt::new(fake.root()).perform(&[mkdir]).unwrap();
    kernel.join().unwrap();
    let ActionOutput::PciBound(binding) = &out[0] else {
        panic!("{:?}", out[0]);
    };
    assert!(binding.loaded_module);
    assert_eq!(binding.driver_before, None);
    assert!(registered.is_dir());

    // A load that fails is the load's error, naming the command.
    let fake = FakeSysfs::with(&[(A, None, Some(5))]);
    fake.remove_driver("vfio-pci");
    let failing = bind(&["false"]);
    let e = RealHostAt::new(fake.root())
        .perform(&[failing])
        .unwrap_err();
    assert!(e.message.contains("false"), "{}", e.message);
    assert_eq!(
        fake.read("/sys/bus/pci/devices/0000:3b:00.0/driver_override"),
        "(null)\n"
    );
}
