//! Reading sysfs the way a live update needs it: PCI devices' driver binding and IOMMU groups, under a root that
//! tests can point at a fake tree laid out like the real one (symlinks for `driver` and `iommu_group`).

use super::HostError;
use crate::action::PciDevice;
use std::path::{Path, PathBuf};

/// Where `/sys`, `/proc` and `/dev/vfio` are looked up: `/` on a real host, a temporary directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot(PathBuf);

impl Default for SysfsRoot {
    fn default() -> Self {
        Self(PathBuf::from("/"))
    }
}

impl SysfsRoot {
    /// Looks `/sys` and `/proc` up under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// `path` (absolute, as a plan or an action names it) under this root.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/") {
            Ok(relative) => self.0.join(relative),
            Err(_) => self.0.join(path),
        }
    }

    /// `/sys/bus/pci/devices/ADDRESS` under this root.
    pub(crate) fn pci_device(&self, address: &str) -> PathBuf {
        self.resolve(Path::new("/sys/bus/pci/devices"))
            .join(address)
    }
}

/// A sysfs attribute, trimmed; for a symlink (a device's `driver`), the last component of its target.
pub(crate) fn read_attribute(path: &Path) -> Result<String, HostError> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()),
        Err(_) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| HostError::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Refuses an address that could walk out of `/sys/bus/pci/devices` (a plan comes from a person).
pub(crate) fn valid_address(address: &str) -> Result<(), HostError> {
    if address.is_empty() || address.contains('/') || address.starts_with('.') {
        return Err(HostError::check(format!(
            "{address:?} is not a PCI address"
        )));
    }
    Ok(())
}

/// `vendor:device` of the device at `dev`, `?` for what cannot be read.
pub(crate) fn device_id(dev: &Path) -> String {
    let ids = ["vendor", "device"]
        .map(|f| read_attribute(&dev.join(f)).unwrap_or_else(|_| "?".to_owned()));
    format!(
        "{}:{}",
        ids[0].trim_start_matches("0x"),
        ids[1].trim_start_matches("0x")
    )
}

/// The driver the device at `dev` is bound to (the last component of its `driver` link), `None` when unbound.
pub(crate) fn bound_driver(dev: &Path) -> Result<Option<String>, HostError> {
    match std::fs::read_link(dev.join("driver")) {
        Ok(target) => Ok(Some(
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::io(
            format!("cannot read {}/driver", dev.display()),
            e,
        )),
    }
}

/// The IOMMU group of the device at `dev` (the last component of its `iommu_group` link), if it has one.
pub(crate) fn iommu_group(dev: &Path) -> Option<String> {
    std::fs::read_link(dev.join("iommu_group"))
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Whether any IOMMU group exists: none means the IOMMU is off (or absent), not that one device lacks a group.
pub(crate) fn iommu_is_on(root: &SysfsRoot) -> bool {
    let groups = root.resolve(Path::new("/sys/kernel/iommu_groups"));
    std::fs::read_dir(&groups).is_ok_and(|mut d| d.next().is_some())
}

/// Checks that PCI device `address` exists, is bound to `driver`, and (when `iommu`) sits in an IOMMU group.
pub fn check_pci(
    root: &SysfsRoot,
    address: &str,
    driver: &str,
    iommu: bool,
) -> Result<PciDevice, HostError> {
    valid_address(address)?;
    let dev = root.pci_device(address);
    if !dev.exists() {
        return Err(HostError::check(format!(
            "PCI device {address} does not exist ({} is missing; see `lspci -D`)",
            dev.display()
        )));
    }
    let id = device_id(&dev);
    let Some(bound) = bound_driver(&dev)? else {
        return Err(HostError::check(format!(
            "PCI device {address} [{id}] is bound to no driver, expected {driver:?} (bind it: \
             `echo {driver} > {}/driver_override` then `echo {address} > /sys/bus/pci/drivers_probe`)",
            dev.display()
        )));
    };
    if bound != driver {
        return Err(HostError::check(format!(
            "PCI device {address} [{id}] is bound to {bound:?}, expected {driver:?}"
        )));
    }
    let group = iommu_group(&dev);
    if iommu && group.is_none() {
        let groups = root.resolve(Path::new("/sys/kernel/iommu_groups"));
        return Err(HostError::check(if iommu_is_on(root) {
            format!(
                "PCI device {address} [{id}] is in no IOMMU group although the IOMMU is on: VFIO cannot use it"
            )
        } else {
            format!(
                "the IOMMU is off ({} is empty or missing), so PCI device {address} [{id}] cannot be passed \
                 through with {driver}: boot with intel_iommu=on or amd_iommu=on",
                groups.display()
            )
        }));
    }
    Ok(PciDevice {
        address: address.to_owned(),
        id,
        driver: bound,
        iommu_group: group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keeps_paths_under_the_root() {
        let root = SysfsRoot::new("/tmp/fake");
        assert_eq!(
            root.resolve(Path::new("/sys/bus/pci/devices")),
            Path::new("/tmp/fake/sys/bus/pci/devices")
        );
        assert_eq!(
            SysfsRoot::default().resolve(Path::new("/proc/x")),
            Path::new("/proc/x")
        );
    }
}
