//! Binding a PCI device to the plan's driver on the new kernel, which gave it to its default driver at boot (an
//! NVMe drive to `nvme`): the kernel's documented sequence (`driver_override`, `driver/unbind`, `drivers_probe`),
//! a bounded wait for the probe, and the IOMMU group check VFIO needs before a guest can open the device.
//!
//! The writes and the module load go through [`PciKernel`]: a fake sysfs tree cannot probe, so tests give the
//! binding a kernel of their own that makes the `driver` link appear, or refuses to.

use super::perform::Backoff;
use super::sysfs::{bound_driver, device_id, iommu_group, iommu_is_on, valid_address};
use super::{HostError, SysfsRoot, process};
use crate::action::{PciBinding, SysfsWrite};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Drivers VFIO lets share an IOMMU group with a vfio-pci device: besides no driver at all, those that do no DMA
/// of their own (the kernel's `driver_managed_dma`): `pci-stub`, and `pcieport` on the bridges above a device.
pub const GROUP_SAFE_DRIVERS: [&str; 3] = ["vfio-pci", "pci-stub", "pcieport"];

/// What a binding asks of the kernel.
pub trait PciKernel {
    /// Writes `value` (no newline) to the sysfs attribute `path` (resolved under the sysfs root).
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()>;

    /// Loads a driver's module: runs `argv` (`modprobe DRIVER`) within `timeout`.
    fn load(&self, argv: &[String], timeout: Duration) -> Result<(), HostError>;
}

/// The running kernel: sysfs attributes written in place, `modprobe` run as a process (no shell).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealKernel;

impl PciKernel for RealKernel {
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        // Never created: a sysfs attribute exists or the kernel has no such thing; and one write(2), which is
        // what the attribute's store function sees (its error is the write's).
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn load(&self, argv: &[String], timeout: Duration) -> Result<(), HostError> {
        process::run(argv, timeout).map(|_| ()).map_err(Into::into)
    }
}

/// What to bind, as [`crate::action::Action::BindPci`] says.
#[derive(Debug, Clone, Copy)]
pub struct BindRequest<'a> {
    /// PCI address, `DDDD:BB:DD.F`.
    pub address: &'a str,
    /// The driver it must end up bound to.
    pub driver: &'a str,
    /// What loads the driver when it is not registered.
    pub load: &'a [String],
    /// Whether its IOMMU group must be usable by VFIO.
    pub iommu: bool,
    /// Devices of the same guest bound by their own steps: not offenders in the group.
    pub peers: &'a [String],
    /// Limit for the load, and for the probe.
    pub timeout: Duration,
}

impl<'a> From<&'a crate::action::BindPci> for BindRequest<'a> {
    fn from(bind: &'a crate::action::BindPci) -> Self {
        BindRequest {
            address: &bind.address,
            driver: &bind.driver,
            load: &bind.load,
            iommu: bind.iommu,
            peers: &bind.peers,
            timeout: Duration::from_millis(bind.timeout_ms),
        }
    }
}

/// Why a device could not be bound, each worded with what to look at.
#[derive(Debug, thiserror::Error)]
pub enum PciBindError {
    /// The new kernel has no such device.
    #[error(
        "PCI device {address} does not exist on this kernel ({} is missing): see `lspci -D`, and whether the new \
         kernel enumerated the bus",
        path.display()
    )]
    NoSuchDevice {
        /// The device.
        address: String,
        /// Its sysfs directory.
        path: PathBuf,
    },
    /// The plan's driver is not a driver name.
    #[error("{driver:?} is not a driver name (letters, digits, '-' and '_')")]
    NotADriver {
        /// The plan's `pci.driver`.
        driver: String,
    },
    /// The module loaded (or the load claimed success) but no such PCI driver registered.
    #[error(
        "driver {driver} is not registered: `{argv}` ran, yet {} does not exist (is {driver} the name of a PCI \
         driver, and is its module installed for this kernel?)",
        path.display()
    )]
    DriverMissing {
        /// The driver.
        driver: String,
        /// The load's argv.
        argv: String,
        /// `/sys/bus/pci/drivers/DRIVER`.
        path: PathBuf,
    },
    /// The driver did not take the device.
    #[error(
        "{driver} refused PCI device {address} [{id}]: {why}; see `dmesg` for the driver's reason"
    )]
    Refused {
        /// The driver.
        driver: String,
        /// The device.
        address: String,
        /// `vendor:device`.
        id: String,
        /// What was seen.
        why: String,
    },
    /// No IOMMU group exists at all.
    #[error(
        "the IOMMU is off on this kernel ({} is empty or missing), so PCI device {address} [{id}] cannot be \
         passed through with vfio-pci: boot the new kernel with intel_iommu=on / amd_iommu=on (the plan's \
         [kernel.cmdline])",
        groups.display()
    )]
    IommuOff {
        /// The device.
        address: String,
        /// `vendor:device`.
        id: String,
        /// `/sys/kernel/iommu_groups`.
        groups: PathBuf,
    },
    /// The IOMMU is on but this device is in no group.
    #[error(
        "PCI device {address} [{id}] is in no IOMMU group although the IOMMU is on: VFIO cannot use it"
    )]
    NoGroup {
        /// The device.
        address: String,
        /// `vendor:device`.
        id: String,
    },
    /// vfio-pci has the device but its group has no device node.
    #[error(
        "PCI device {address} is bound to vfio-pci, but {} did not appear within {timeout_ms} ms: is the vfio \
         group interface built (CONFIG_VFIO_GROUP) and /dev a devtmpfs?",
        node.display()
    )]
    NoVfioNode {
        /// The device.
        address: String,
        /// `/dev/vfio/GROUP`.
        node: PathBuf,
        /// How long it was waited for.
        timeout_ms: u64,
    },
    /// Another device of the group is bound to a driver that keeps VFIO from using the group.
    #[error(
        "IOMMU group {group} of PCI device {address} also holds {}: VFIO can open the group only when every \
         device in it is bound to vfio-pci, pci-stub or pcieport, or to no driver (add each to the plan as a \
         [[pci]] device of the same guest, or unbind it)",
        offenders.iter().map(|(a, d)| format!("{a} (bound to {d})")).collect::<Vec<_>>().join(", ")
    )]
    GroupShared {
        /// The device.
        address: String,
        /// Its IOMMU group.
        group: String,
        /// The other devices and their drivers.
        offenders: Vec<(String, String)>,
    },
}

impl From<PciBindError> for HostError {
    fn from(e: PciBindError) -> Self {
        HostError::Pci(Box::new(e))
    }
}

/// Binds `request.address` to `request.driver` through `kernel` (nothing is written when it is bound so already:
/// a resumed plan runs this again), then checks its IOMMU group when `request.iommu`.
pub fn bind_pci(
    root: &SysfsRoot,
    kernel: &dyn PciKernel,
    request: &BindRequest<'_>,
) -> Result<PciBinding, HostError> {
    let BindRequest {
        address, driver, ..
    } = *request;
    valid_address(address)?;
    // A driver name ends up in a path and in modprobe's argv: one that walks out of the directory or reads as
    // an option is refused.
    if driver.is_empty()
        || driver.starts_with('-')
        || !driver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PciBindError::NotADriver {
            driver: driver.to_owned(),
        }
        .into());
    }
    let dev = root.pci_device(address);
    if !dev.exists() {
        return Err(PciBindError::NoSuchDevice {
            address: address.to_owned(),
            path: dev,
        }
        .into());
    }
    let id = device_id(&dev);
    let before = bound_driver(&dev)?;
    let mut binding = PciBinding {
        address: address.to_owned(),
        id,
        driver_before: before.clone(),
        driver_after: driver.to_owned(),
        iommu_group: None,
        loaded_module: false,
        writes: Vec::new(),
        waited_ms: 0,
    };
    if before.as_deref() != Some(driver) {
        rebind(root, kernel, request, &dev, before.is_some(), &mut binding)?;
    }
    binding.iommu_group = if request.iommu {
        Some(check_group(root, request, &dev, &binding.id)?)
    } else {
        iommu_group(&dev)
    };
    Ok(binding)
}

/// The kernel's sequence for a device bound elsewhere (or to nothing): load, override, unbind, probe, wait.
fn rebind(
    root: &SysfsRoot,
    kernel: &dyn PciKernel,
    request: &BindRequest<'_>,
    dev: &Path,
    bound: bool,
    binding: &mut PciBinding,
) -> Result<(), HostError> {
    let BindRequest {
        address,
        driver,
        load,
        timeout,
        ..
    } = *request;
    let registered = root.resolve(Path::new("/sys/bus/pci/drivers")).join(driver);
    if !registered.exists() {
        kernel.load(load, timeout)?;
        binding.loaded_module = true;
        if !registered.exists() {
            return Err(PciBindError::DriverMissing {
                driver: driver.to_owned(),
                argv: load.join(" "),
                path: registered,
            }
            .into());
        }
    }
    let device = format!("/sys/bus/pci/devices/{address}");
    let mut write = |path: String, value: &str| -> Result<(), std::io::Error> {
        kernel.write(&root.resolve(Path::new(&path)), value)?;
        binding.writes.push(SysfsWrite {
            path,
            value: value.to_owned(),
        });
        Ok(())
    };
    // First the override: from then on only `driver` may bind the device, so that nothing else (the old driver,
    // a udev rule's probe) takes it in the moment between the unbind and the probe.
    let path = format!("{device}/driver_override");
    write(path.clone(), driver)
        .map_err(|e| HostError::io(format!("cannot write {driver} to {path}"), e))?;
    if bound {
        let path = format!("{device}/driver/unbind");
        write(path.clone(), address)
            .map_err(|e| HostError::io(format!("cannot write {address} to {path}"), e))?;
    }
    let refused = |why: String| PciBindError::Refused {
        driver: driver.to_owned(),
        address: address.to_owned(),
        id: device_id(dev),
        why,
    };
    // The kernel probes in this write and returns the driver's error from it.
    write("/sys/bus/pci/drivers_probe".to_owned(), address).map_err(|e| {
        refused(format!(
            "writing {address} to /sys/bus/pci/drivers_probe failed: {e}"
        ))
    })?;
    let started = Instant::now();
    let mut backoff = Backoff::new();
    loop {
        let now = bound_driver(dev)?;
        if now.as_deref() == Some(driver) {
            binding.waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let found = now.map_or("no driver".to_owned(), |d| format!("{d:?}"));
            return Err(refused(format!(
                "{} ms after drivers_probe it is bound to {found}",
                timeout.as_millis()
            ))
            .into());
        }
        backoff.wait();
    }
}

/// The group VFIO will open: it exists, has its `/dev/vfio` node, and no other device of it is bound to a driver
/// that does DMA of its own (unless the same guest's own step binds that one too). Returns the group.
fn check_group(
    root: &SysfsRoot,
    request: &BindRequest<'_>,
    dev: &Path,
    id: &str,
) -> Result<String, HostError> {
    let address = request.address;
    let Some(group) = iommu_group(dev) else {
        return Err(if iommu_is_on(root) {
            PciBindError::NoGroup {
                address: address.to_owned(),
                id: id.to_owned(),
            }
        } else {
            PciBindError::IommuOff {
                address: address.to_owned(),
                id: id.to_owned(),
                groups: root.resolve(Path::new("/sys/kernel/iommu_groups")),
            }
        }
        .into());
    };
    // vfio-pci creates the group's character device when the first device of the group binds; devtmpfs makes the
    // node at once, udev may only set its mode a moment later.
    let node = root.resolve(Path::new("/dev/vfio")).join(&group);
    let started = Instant::now();
    let mut backoff = Backoff::new();
    while !node.exists() {
        if started.elapsed() >= request.timeout {
            return Err(PciBindError::NoVfioNode {
                address: address.to_owned(),
                node,
                timeout_ms: u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX),
            }
            .into());
        }
        backoff.wait();
    }
    let members = dev.join("iommu_group/devices");
    let entries = std::fs::read_dir(&members)
        .map_err(|e| HostError::io(format!("cannot list {}", members.display()), e))?;
    let mut offenders = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| HostError::io(format!("cannot list {}", members.display()), e))?;
        let other = entry.file_name().to_string_lossy().into_owned();
        if other == address || request.peers.iter().any(|p| p == &other) {
            continue;
        }
        if let Some(driver) = bound_driver(&entry.path())?
            && !GROUP_SAFE_DRIVERS.contains(&driver.as_str())
        {
            offenders.push((other, driver));
        }
    }
    if !offenders.is_empty() {
        offenders.sort();
        return Err(PciBindError::GroupShared {
            address: address.to_owned(),
            group,
            offenders,
        }
        .into());
    }
    Ok(group)
}
