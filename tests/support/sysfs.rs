//! One fake sysfs tree for every test of kup's PCI checks: laid out as on a real machine — /sys/devices/pci0000:00/ADDR,
//! a symlink to it under /sys/bus/pci/devices, `driver` and `iommu_group` symlinks into /sys/bus/pci/drivers and
//! /sys/kernel/iommu_groups, the group's `devices/` links back, the attributes a binding writes (`driver_override`,
//! a driver's `unbind`, `drivers_probe`) and /dev/vfio — so the code under test follows the same links it follows
//! on a host. A tree cannot probe: [`FakeKernel`] does what the kernel does when those attributes are written.

#![allow(dead_code)] // each test binary uses a different part

use kup::host::SysfsRoot;
use kup::host::pci_bind::PciKernel;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A temporary sysfs tree; devices are added with [`FakeSysfs::device`]. Every device reports `8086:0a54`.
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    /// An empty tree with the `vfio-pci` and `nvme` drivers and no IOMMU group.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["sys/bus/pci/devices", "sys/kernel/iommu_groups", "dev/vfio"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("sys/bus/pci/drivers_probe"), "").unwrap();
        let fake = Self { dir };
        fake.driver("vfio-pci").driver("nvme");
        fake
    }

    /// Registers PCI driver `name`: its directory with `bind` and `unbind`.
    pub fn driver(&self, name: &str) -> &Self {
        let dir = self.dir.path().join("sys/bus/pci/drivers").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["bind", "unbind"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        self
    }

    /// Unregisters PCI driver `name` (its module unloaded).
    pub fn remove_driver(&self, name: &str) -> &Self {
        std::fs::remove_dir_all(self.dir.path().join("sys/bus/pci/drivers").join(name)).unwrap();
        self
    }

    /// Creates /dev/vfio/GROUP, as vfio-pci does when the first device of a group binds.
    pub fn vfio_node(&self, group: u32) -> &Self {
        std::fs::write(self.dir.path().join(format!("dev/vfio/{group}")), "").unwrap();
        self
    }

    /// What the tree's attribute at `path` (absolute, as on a host) holds.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.host(path)).unwrap()
    }

    /// The driver device `address` is bound to, as its `driver` link says.
    pub fn bound(&self, address: &str) -> Option<String> {
        let link = self.device_dir(address).join("driver");
        std::fs::read_link(link)
            .ok()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
    }

    /// Binds device `address` to `driver` (or unbinds it, for `None`), as a probe or an unbind does.
    pub fn set_driver(&self, address: &str, driver: Option<&str>) {
        let link = self.device_dir(address).join("driver");
        let _ = std::fs::remove_file(&link);
        if let Some(driver) = driver {
            symlink(format!("../../../bus/pci/drivers/{driver}"), &link).unwrap();
        }
    }

    /// `path` (absolute, as on a host) in this tree.
    pub fn host(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    fn device_dir(&self, address: &str) -> PathBuf {
        self.dir.path().join("sys/devices/pci0000:00").join(address)
    }

    /// A tree holding `devices`: (address, bound driver, IOMMU group).
    pub fn with(devices: &[(&str, Option<&str>, Option<u32>)]) -> Self {
        let fake = Self::new();
        for (address, driver, group) in devices {
            fake.device(address, *driver, *group);
        }
        fake
    }

    /// Adds PCI device `address`, bound to `driver` and in IOMMU group `group` when given.
    pub fn device(&self, address: &str, driver: Option<&str>, group: Option<u32>) -> &Self {
        let sys = self.dir.path().join("sys");
        let real = sys.join("devices/pci0000:00").join(address);
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("vendor"), "0x8086\n").unwrap();
        std::fs::write(real.join("device"), "0x0a54\n").unwrap();
        // What the kernel shows while no override is set.
        std::fs::write(real.join("driver_override"), "(null)\n").unwrap();
        symlink(
            format!("../../../devices/pci0000:00/{address}"),
            sys.join("bus/pci/devices").join(address),
        )
        .unwrap();
        if let Some(driver) = driver {
            symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                real.join("driver"),
            )
            .unwrap();
            assert!(real.join("driver").exists(), "the fake driver link dangles");
        }
        if let Some(group) = group {
            std::fs::create_dir_all(sys.join(format!("kernel/iommu_groups/{group}/devices")))
                .unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{group}"),
                real.join("iommu_group"),
            )
            .unwrap();
            symlink(
                format!("../../../../devices/pci0000:00/{address}"),
                sys.join(format!("kernel/iommu_groups/{group}/devices/{address}")),
            )
            .unwrap();
            assert!(
                real.join("iommu_group").exists(),
                "the fake group link dangles"
            );
        }
        self
    }

    /// The tree as kup's host sees it.
    pub fn root(&self) -> SysfsRoot {
        SysfsRoot::new(self.dir.path())
    }

    /// The tree's directory (the machine's `/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// How a [`FakeKernel`]'s driver answers a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The overriding driver takes the device (and, for vfio-pci, its group's /dev/vfio node appears).
    Binds,
    /// The driver's probe fails: the `drivers_probe` write returns ENODEV, nothing is bound.
    Fails,
    /// The write succeeds but nothing binds (a driver that declines the device without an error).
    Ignores,
}

/// The kernel behind a [`FakeSysfs`]: records every write and module load in order, and does what Linux does for
/// them — `driver_override` is stored, `driver/unbind` removes the `driver` link, `drivers_probe` binds the
/// device to its override (as `probe` says), `modprobe DRIVER` registers the driver unless `registers` is false.
pub struct FakeKernel<'a> {
    fake: &'a FakeSysfs,
    /// `(attribute as on a host, value)`, or `("exec", argv)` for a load, in order.
    pub log: Mutex<Vec<(String, String)>>,
    pub probe: Probe,
    pub registers: bool,
}

impl<'a> FakeKernel<'a> {
    pub fn new(fake: &'a FakeSysfs) -> Self {
        Self {
            fake,
            log: Mutex::new(Vec::new()),
            probe: Probe::Binds,
            registers: true,
        }
    }

    /// What was written and run, in order.
    pub fn log(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }
}

impl PciKernel for FakeKernel<'_> {
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        let host = format!(
            "/{}",
            path.strip_prefix(self.fake.path()).unwrap().display()
        );
        self.log
            .lock()
            .unwrap()
            .push((host.clone(), value.to_owned()));
        if host.ends_with("/driver_override") {
            std::fs::write(path, value)
        } else if let Some(device) = host
            .strip_suffix("/driver/unbind")
            .and_then(|d| d.strip_prefix("/sys/bus/pci/devices/"))
        {
            assert_eq!(device, value, "unbind names the device itself");
            self.fake.set_driver(device, None);
            Ok(())
        } else if host == "/sys/bus/pci/drivers_probe" {
            let dev = self.fake.host(&format!("/sys/bus/pci/devices/{value}"));
            let wanted = std::fs::read_to_string(dev.join("driver_override")).unwrap();
            match self.probe {
                Probe::Fails => return Err(std::io::Error::from_raw_os_error(19)),
                Probe::Ignores => return Ok(()),
                Probe::Binds => {}
            }
            self.fake.set_driver(value, Some(wanted.trim()));
            if wanted.trim() == "vfio-pci"
                && let Ok(group) = std::fs::read_link(dev.join("iommu_group"))
            {
                let group = group.file_name().unwrap().to_string_lossy().into_owned();
                self.fake.vfio_node(group.parse().unwrap());
            }
            Ok(())
        } else {
            panic!("the fake kernel has no attribute {host}");
        }
    }

    fn load(&self, argv: &[String], _timeout: Duration) -> Result<(), kup::host::HostError> {
        self.log
            .lock()
            .unwrap()
            .push(("exec".to_owned(), argv.join(" ")));
        if self.registers {
            assert_eq!(argv[0], "modprobe");
            self.fake.driver(&argv[1]);
        }
        Ok(())
    }
}
