//! Where a shared-RAM guest's backend file lives: its block device, whether that device is persistent memory, whether
//! its file system is mounted DAX, and the `memmap=SIZE!OFFSET` a pmem region carved out of RAM needs on the next
//! kernel's command line — without it the new kernel takes the region as ordinary RAM and the guest's memory is gone.

use super::{HostError, SysfsRoot};
use crate::cmdline::Cmdline;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What [`backing`] found about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backing {
    /// `pmem0`, `sda1`, or `MAJ:MIN` when the device is no block device.
    pub(crate) device: String,
    /// `/sys/block/pmemN` exists for the device's disk.
    pub(crate) pmem: bool,
    /// The mount holding the file has `dax` or `dax=always`.
    pub(crate) dax: bool,
}

/// One line of `/proc/self/mountinfo`, the parts kup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// `MAJ:MIN` of the file system's device.
    pub(crate) dev: (u64, u64),
    /// Where it is mounted (octal escapes such as `\040` decoded).
    pub(crate) mount_point: PathBuf,
    /// The per-mount options and the file system's own (after ` - TYPE SOURCE`), in that order.
    pub(crate) options: Vec<String>,
}

/// The device, pmem-ness and DAX mount of the file at `path`; `/proc` and `/sys` are read under `sysfs`.
pub(crate) fn backing(sysfs: &SysfsRoot, path: &Path) -> Result<Backing, HostError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| HostError::io(format!("RAM file {}", path.display()), e))?;
    let dev = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mountinfo = std::fs::read_to_string(sysfs.resolve(Path::new("/proc/self/mountinfo")))
        .map_err(|e| HostError::io("cannot read /proc/self/mountinfo", e))?;
    let dax = find_mount(&mountinfo, dev, &canonical).is_some_and(|m| is_dax(&m.options));
    let sys_dev = sysfs
        .resolve(Path::new("/sys/dev/block"))
        .join(format!("{}:{}", dev.0, dev.1));
    let link = std::fs::read_link(&sys_dev).ok();
    let partition = sys_dev.join("partition").exists();
    let (device, pmem) = match link.as_deref().and_then(|l| block_device(l, partition)) {
        Some((disk, name)) => {
            let pmem = disk.starts_with("pmem")
                && sysfs.resolve(Path::new("/sys/block")).join(&disk).exists();
            (name, pmem)
        }
        None => (format!("{}:{}", dev.0, dev.1), false),
    };
    Ok(Backing { device, pmem, dax })
}

/// Parses one mountinfo line (`36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext4 /dev/pmem0 rw,dax`).
pub(crate) fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let dev = (major.parse().ok()?, minor.parse().ok()?);
    let mount_point = PathBuf::from(unescape(fields.get(4)?));
    let mut options: Vec<String> = fields.get(5)?.split(',').map(str::to_owned).collect();
    if let Some(super_options) = right.split(' ').nth(2) {
        options.extend(super_options.split(',').map(str::to_owned));
    }
    Some(Mount {
        dev,
        mount_point,
        options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as three octal digits.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` on device `dev`: the longest mount point that is a prefix of the path (bind mounts
/// and overmounts share a device); any device's when none of `dev` matches (a stale mountinfo, a container).
pub(crate) fn find_mount(mountinfo: &str, dev: (u64, u64), path: &Path) -> Option<Mount> {
    let mounts: Vec<Mount> = mountinfo
        .lines()
        .filter_map(parse_mount)
        .filter(|m| path.starts_with(&m.mount_point))
        .collect();
    let longest = |on_dev: bool| {
        mounts
            .iter()
            .filter(|m| !on_dev || m.dev == dev)
            .max_by_key(|m| m.mount_point.components().count())
            .cloned()
    };
    longest(true).or_else(|| longest(false))
}

/// `dax` (ext4's legacy option) or `dax=always`; `dax=inode` leaves it to each file's flag, which only statx
/// (`STATX_ATTR_DAX`) tells, so it counts as not DAX.
pub(crate) fn is_dax(options: &[String]) -> bool {
    options.iter().any(|o| o == "dax" || o == "dax=always")
}

/// The disk and the device's own name from its `/sys/dev/block/MAJ:MIN` link: the link's last component, and for
/// a `partition` the directory above it (`…/block/pmem0` → `pmem0, pmem0`; `…/block/pmem0/pmem0p1` → `pmem0,
/// pmem0p1`).
pub(crate) fn block_device(link: &Path, partition: bool) -> Option<(String, String)> {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let own = name(link)?;
    let disk = if partition {
        name(link.parent()?)?
    } else {
        own.clone()
    };
    Some((disk, own))
}

/// The `memmap=SIZE!OFFSET` ranges (one parameter may list several, comma-separated, as the kernel reads it) of the
/// `running` command line that the `new` one does not have, each as `memmap=SIZE!OFFSET`.
pub(crate) fn missing_memmaps(running: &str, new: &str) -> Vec<String> {
    let ranges = |text: &str| -> Vec<String> {
        Cmdline::parse(text)
            .get_all("memmap")
            .filter_map(|p| p.value().map(str::to_owned))
            .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .filter(|r| r.contains('!'))
            .collect()
    };
    let kept = ranges(new);
    ranges(running)
        .into_iter()
        .filter(|r| !kept.contains(r))
        .map(|r| format!("memmap={r}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
30 22 259:3 / /var/lib rw,relatime shared:9 - xfs /dev/nvme0n1p3 rw,attr2,inode64
41 30 259:0 / /var/lib/kup/pmem rw,relatime shared:20 - ext4 /dev/pmem0 rw,dax
42 22 259:1 / /mnt/pm\\0401 rw shared:21 - xfs /dev/pmem1 rw,dax=always
43 22 259:4 / /mnt/inode rw shared:22 - xfs /dev/pmem2 rw,dax=inode
44 41 259:0 /sub /var/lib/kup/pmem/bind rw - ext4 /dev/pmem0 rw,dax
";

    #[test]
    fn the_mount_holding_a_ram_file_says_whether_it_is_dax() {
        let found = |dev, path: &str| find_mount(MOUNTINFO, dev, Path::new(path)).unwrap();
        let pmem = found((259, 0), "/var/lib/kup/pmem/ram/db-1");
        assert_eq!(pmem.mount_point, Path::new("/var/lib/kup/pmem"));
        assert!(is_dax(&pmem.options), "{pmem:?}");
        // The bind mount of the same device, deeper: its own line.
        let bind = found((259, 0), "/var/lib/kup/pmem/bind/ram");
        assert_eq!(bind.mount_point, Path::new("/var/lib/kup/pmem/bind"));
        // A mount point with a space (\040), dax=always.
        let spaced = found((259, 1), "/mnt/pm 1/ram");
        assert!(is_dax(&spaced.options), "{spaced:?}");
        // dax=inode: per file, not known from the mount.
        assert!(!is_dax(&found((259, 4), "/mnt/inode/ram").options));
        // Not DAX: a disk; a prefix that is no path component (/var/lib/kup/pmemx) does not match the pmem mount.
        let disk = found((259, 3), "/var/lib/kup/pmemx/ram");
        assert_eq!(disk.mount_point, Path::new("/var/lib"));
        assert!(!is_dax(&disk.options));
        // An unknown device: the longest prefix of any device.
        assert_eq!(
            found((0, 99), "/var/lib/kup/pmem/ram").mount_point,
            Path::new("/var/lib/kup/pmem")
        );
        assert_eq!(parse_mount("garbage"), None);
    }

    #[test]
    fn the_block_device_of_a_sysfs_link_names_the_disk_and_the_partition() {
        let link =
            Path::new("../../devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0");
        assert_eq!(
            block_device(link, false),
            Some(("pmem0".into(), "pmem0".into()))
        );
        let part = link.join("pmem0p1");
        assert_eq!(
            block_device(&part, true),
            Some(("pmem0".into(), "pmem0p1".into()))
        );
        // NVMe's links have no `block` component.
        let nvme = Path::new("../../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p2");
        assert_eq!(
            block_device(nvme, true),
            Some(("nvme0n1".into(), "nvme0n1p2".into()))
        );
        assert_eq!(block_device(Path::new("/"), false), None);
    }

    #[test]
    fn every_memmap_range_of_the_running_line_must_be_in_the_new_one() {
        let running = "root=/dev/sda1 memmap=4G!12G,64M$1G memmap=2G!20G quiet";
        // All kept, in another order and split differently.
        assert!(missing_memmaps(running, "memmap=2G!20G memmap=4G!12G root=/dev/sda1").is_empty());
        assert!(missing_memmaps(running, "memmap=2G!20G,4G!12G").is_empty());
        // `$` (reserved) ranges are not persistent memory: not required.
        assert_eq!(
            missing_memmaps(running, "memmap=4G!12G root=/dev/sda1"),
            ["memmap=2G!20G"]
        );
        assert_eq!(
            missing_memmaps(running, "memmap=4G!16G"),
            ["memmap=4G!12G", "memmap=2G!20G"]
        );
        assert!(missing_memmaps("root=/dev/sda1", "").is_empty());
    }

    #[test]
    fn the_backing_of_a_real_file_names_its_device() {
        // This machine has no pmem: a file in the target directory is on a disk (or an overlay), never pmem.
        let file = tempfile::NamedTempFile::new_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let b = backing(&SysfsRoot::default(), file.path()).unwrap();
        assert!(!b.pmem, "{b:?}");
        assert!(!b.device.is_empty());
        // A fake tree where the file's device is pmem0 and its mount is DAX.
        let meta = std::fs::metadata(file.path()).unwrap();
        let (major, minor) = (
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
        );
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::fs::create_dir_all(sys.join("block/pmem0")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0",
            sys.join(format!("dev/block/{major}:{minor}")),
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::write(
            root.path().join("proc/self/mountinfo"),
            format!("22 1 {major}:{minor} / / rw - ext4 /dev/pmem0 rw,dax\n"),
        )
        .unwrap();
        let b = backing(&SysfsRoot::new(root.path()), file.path()).unwrap();
        assert_eq!(
            b,
            Backing {
                device: "pmem0".into(),
                pmem: true,
                dax: true
            }
        );
    }
}
