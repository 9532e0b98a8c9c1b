//! What the preflight checks about the kernel it is about to kexec into, beyond the image itself: that the new
//! release's modules are installed (else it boots without its drivers), that the initrd was built for it, and —
//! when its build configuration is on disk — that it has what the plan relies on (kexec_file_load for the next
//! update, parallel CPU bring-up for `cpuhp.parallel`, legacy pmem and DAX for a `memmap=…!…` region), and that
//! its `root=` does not name the disk by an NVMe controller's number on a host with several controllers. The new
//! command line is linted against the release too; those findings are warnings, recorded, never refusals.

use super::sysfs::read_attribute;
use super::{HostError, SysfsRoot, kernel_file};
use crate::action::{ActionOutput, TargetKernel};
use crate::cmdline::Cmdline;
use std::path::{Path, PathBuf};

/// A kernel build option, as the checks need it.
fn option<'a>(config: &'a str, name: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        line.trim()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

fn built(config: &str, name: &str) -> bool {
    matches!(option(config, name), Some("y" | "m"))
}

/// Checks the kernel that `image` (of `release`, when the plan pins it) will boot with `initrd` and `cmdline`.
pub(super) fn check(
    root: &SysfsRoot,
    image: &Path,
    release: Option<&str>,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<ActionOutput, HostError> {
    let release = match release {
        Some(r) => r.to_owned(),
        None => kernel_file::read_image(image)
            .map_err(|source| HostError::KernelImage {
                path: image.to_owned(),
                source,
            })?
            .release()
            .to_owned(),
    };
    let modules = PathBuf::from("/lib/modules").join(&release);
    if !root.resolve(&modules).is_dir() {
        return Err(HostError::check(format!(
            "the new kernel {release} has no modules in {}: it would boot without its drivers (disk, network, \
             virtio, vfio). Install them first (Debian: the linux-image-{release} package, or linux-modules-{release} \
             for 7.x), then apply again",
            modules.display()
        )));
    }
    if let Some(initrd) = initrd {
        check_initrd(root, initrd, &release)?;
    }
    check_root_name(root, cmdline)?;
    let config = [
        modules.join("config"),
        PathBuf::from(format!("/boot/config-{release}")),
    ]
    .into_iter()
    .find(|p| root.resolve(p).is_file());
    if let Some(path) = &config {
        let text = std::fs::read(root.resolve(path))
            .map_err(|e| HostError::io(format!("cannot read {}", path.display()), e))?;
        check_config(&String::from_utf8_lossy(&text), path, &release, cmdline)?;
    }
    let warnings = crate::kparams::lint_cmdline(cmdline, Some(&release))
        .into_iter()
        .map(|f| format!("{} ({})", f.message, f.help))
        .collect();
    Ok(ActionOutput::TargetKernel(TargetKernel {
        release,
        modules,
        config,
        warnings,
    }))
}

/// An initrd holding the modules of other releases only is refused; one without any module tree (a busybox
/// initramfs) or compressed in a way kup cannot read says nothing and passes.
fn check_initrd(root: &SysfsRoot, initrd: &Path, release: &str) -> Result<(), HostError> {
    let bytes = std::fs::read(root.resolve(initrd))
        .map_err(|e| HostError::io(format!("cannot read the initrd {}", initrd.display()), e))?;
    let found = crate::initrd::kernels(&bytes)
        .map_err(|e| HostError::check(format!("initrd {}: {e}", initrd.display())))?;
    if found.releases.is_empty() || found.releases.contains(release) {
        return Ok(());
    }
    let theirs: Vec<&str> = found.releases.iter().map(String::as_str).collect();
    Err(HostError::check(format!(
        "the initrd {} holds the modules of {}, not of the new kernel {release}: the new kernel could not load \
         its drivers from it. Build an initrd for {release} (Debian: `update-initramfs -c -k {release}`) and name \
         it in kernel.initrd",
        initrd.display(),
        theirs.join(", ")
    )))
}

/// The controller a `/dev/nvme<C>n<N>[p<P>]` name belongs to (`nvme<C>`), for any other name `None`.
fn nvme_controller(device: &str) -> Option<&str> {
    let name = device.strip_prefix("/dev/")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (controller, rest) = name.strip_prefix("nvme")?.split_once('n')?;
    let namespace = match rest.split_once('p') {
        Some((namespace, partition)) if digits(partition) => namespace,
        Some(_) => return None,
        None => rest,
    };
    (digits(controller) && digits(namespace)).then(|| &name[..4 + controller.len()])
}

/// The PCI class of an NVMe controller (mass storage, non-volatile memory, NVM Express), as sysfs writes it.
const NVME_CLASS: &str = "0x010802";

/// Refuses a `root=/dev/nvme…` on a host with more than one NVMe controller. Controllers are numbered in the order
/// their probes (asynchronous) get there, and that order changes between kernels: the lab host's 6.1 numbers its
/// two in bus order, 7.3 often the other way round. The new kernel may then give the name to another controller
/// and wait for its root device forever, with every guest already stopped, which only a console can undo.
fn check_root_name(root: &SysfsRoot, cmdline: &str) -> Result<(), HostError> {
    let line = Cmdline::parse(cmdline);
    let Some(device) = line
        .params()
        .iter()
        .rev()
        .find(|p| p.key() == "root")
        .and_then(|p| p.value())
    else {
        return Ok(());
    };
    let Some(controller) = nvme_controller(device) else {
        return Ok(());
    };
    // Every NVMe controller the new kernel's nvme driver will probe at boot: PCI class 01:08:02 whatever its driver
    // now (one handed to vfio-pci, as a passed-through drive is, is on nvme again until kup rebinds it).
    let mut controllers: Vec<String> =
        match std::fs::read_dir(root.resolve(Path::new("/sys/bus/pci/devices"))) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|address| {
                    read_attribute(&root.pci_device(address).join("class"))
                        .is_ok_and(|class| class == NVME_CLASS)
                })
                .collect(),
            Err(_) => return Ok(()),
        };
    if controllers.len() < 2 {
        return Ok(());
    }
    controllers.sort();
    Err(HostError::check(format!(
        "root={device} names the root file system by its NVMe controller's number, and this host has {} NVMe \
         controllers ({}, whatever driver they have now): the kernel numbers them in the order their probes \
         finish, which changes between kernels, so the new kernel may give {controller} to another controller and \
         wait for its root device forever, with the guests already stopped. Name the root by its partition \
         instead, in kernel.cmdline: `set = {{ root = \"PARTUUID=…\" }}` (`blkid -s PARTUUID -o value {device}`; \
         or root=UUID=… with an initrd), then apply again",
        controllers.len(),
        controllers.join(", ")
    )))
}

/// The build options the plan relies on, from the new kernel's configuration at `path`.
fn check_config(config: &str, path: &Path, release: &str, cmdline: &str) -> Result<(), HostError> {
    let line = Cmdline::parse(cmdline);
    let mut missing = Vec::new();
    if !built(config, "CONFIG_KEXEC_FILE") {
        missing.push((
            "CONFIG_KEXEC_FILE",
            "kup could not load the next kernel from this one with kexec_file_load",
        ));
    }
    let parallel = line
        .params()
        .iter()
        .rev()
        .find(|p| p.key() == "cpuhp.parallel")
        .is_some_and(|p| !matches!(p.value(), Some("0" | "off" | "n" | "N")));
    if parallel && !built(config, "CONFIG_HOTPLUG_PARALLEL") {
        missing.push((
            "CONFIG_HOTPLUG_PARALLEL",
            "cpuhp.parallel on the command line would bring up CPUs one by one all the same",
        ));
    }
    let pmem = line
        .params()
        .iter()
        .any(|p| p.key() == "memmap" && p.value().is_some_and(|v| v.contains('!')));
    if pmem && !built(config, "CONFIG_X86_PMEM_LEGACY") {
        missing.push((
            "CONFIG_X86_PMEM_LEGACY",
            "the memmap=…!… region would not become /dev/pmem0, and guest RAM kept there would be lost",
        ));
    }
    if pmem && !(built(config, "CONFIG_FS_DAX") || built(config, "CONFIG_DEV_DAX")) {
        missing.push((
            "CONFIG_FS_DAX",
            "guest RAM on the pmem region could not be mapped directly (no FS-DAX, no device DAX)",
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = missing
        .iter()
        .map(|(option, consequence)| format!("{option} is not set: {consequence}"))
        .collect();
    Err(HostError::check(format!(
        "the new kernel {release} lacks what the plan relies on ({}): {}. Use a kernel built with them, or drop \
         what needs them from the plan",
        path.display(),
        why.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_kconfig_writes_them() {
        let config =
            "CONFIG_KEXEC_FILE=y\n# CONFIG_HOTPLUG_PARALLEL is not set\nCONFIG_X86_PMEM_LEGACY=m\n";
        assert!(built(config, "CONFIG_KEXEC_FILE"));
        assert!(!built(config, "CONFIG_HOTPLUG_PARALLEL"));
        assert!(built(config, "CONFIG_X86_PMEM_LEGACY"));
        assert!(!built(config, "CONFIG_KEXEC"));
    }

    #[test]
    fn the_plan_relies_only_on_what_its_command_line_uses() {
        let path = Path::new("/boot/config-7.2");
        let bare = "CONFIG_KEXEC_FILE=y\n";
        check_config(bare, path, "7.2", "root=/dev/vda cpuhp.parallel=0").unwrap();
        let e = check_config(bare, path, "7.2", "cpuhp.parallel=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CONFIG_HOTPLUG_PARALLEL is not set"), "{e}");
        let e = check_config(bare, path, "7.2", "memmap=64M!768M")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CONFIG_X86_PMEM_LEGACY") && e.contains("CONFIG_FS_DAX"),
            "{e}"
        );
        let e = check_config("", path, "7.2", "").unwrap_err().to_string();
        assert!(e.contains("CONFIG_KEXEC_FILE is not set"), "{e}");
    }

    #[test]
    fn nvme_names_are_told_from_stable_ones() {
        assert_eq!(nvme_controller("/dev/nvme0n1"), Some("nvme0"));
        assert_eq!(nvme_controller("/dev/nvme12n3p4"), Some("nvme12"));
        for other in [
            "PARTUUID=6b75706c-01",
            "UUID=0b6a4c2e",
            "/dev/sda1",
            "/dev/nvme0",
            "/dev/nvme0n",
            "/dev/nvme0n1p",
            "/dev/nvmeXn1",
            "/dev/disk/by-id/nvme-lab_1",
            "nvme0n1",
        ] {
            assert_eq!(nvme_controller(other), None, "{other}");
        }
    }

    #[test]
    fn a_root_named_by_nvme_number_is_refused_only_with_several_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = SysfsRoot::new(tmp.path());
        let devices = tmp.path().join("sys/bus/pci/devices");
        let device = |address: &str, class: &str| {
            std::fs::create_dir_all(devices.join(address)).unwrap();
            std::fs::write(devices.join(address).join("class"), format!("{class}\n")).unwrap();
        };
        let line = "console=ttyS0 root=/dev/nvme0n1p2 rootwait rw";
        // No PCI devices (a fake root), one NVMe controller and a NIC: nothing to say.
        check_root_name(&root, line).unwrap();
        device("0000:00:02.0", "0x010802");
        device("0000:00:03.0", "0x020000");
        check_root_name(&root, line).unwrap();
        // A second controller, whichever driver it has now.
        device("0000:00:06.0", "0x010802");
        let e = check_root_name(&root, line).unwrap_err().to_string();
        assert!(
            e.contains("root=/dev/nvme0n1p2")
                && e.contains("2 NVMe controllers (0000:00:02.0, 0000:00:06.0")
                && e.contains("give nvme0 to another")
                && e.contains("PARTUUID="),
            "{e}"
        );
        // The last root= is the one the kernel uses; a stable name passes.
        check_root_name(&root, &format!("{line} root=PARTUUID=6b75706c-01")).unwrap();
        check_root_name(&root, "root=/dev/sda1").unwrap();
        check_root_name(&root, "quiet").unwrap();
    }
}
