//! One fake sysfs tree for every test of kup's PCI checks: laid out as on a real machine — /sys/devices/pci0000:00/ADDR,
//! a symlink to it under /sys/bus/pci/devices, `driver` and `iommu_group` symlinks into /sys/bus/pci/drivers and
//! /sys/kernel/iommu_groups — so the code under test follows the same links it follows on a host.

#![allow(dead_code)] // each test binary uses a different part

use kup::host::SysfsRoot;
use std::os::unix::fs::symlink;
use std::path::Path;

/// A temporary sysfs tree; devices are added with [`FakeSysfs::device`]. Every device reports `8086:0a54`.
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    /// An empty tree with the `vfio-pci` and `nvme` drivers and no IOMMU group.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers/vfio-pci",
            "sys/bus/pci/drivers/nvme",
            "sys/kernel/iommu_groups",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
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
