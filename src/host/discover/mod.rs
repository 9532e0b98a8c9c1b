//! Reading a live host for `kup plan init`, read-only: the kernel to update to (`kernel`), every running QEMU
//! (its command line, environment and systemd unit from /proc; what the command line means is `qemu`'s), libvirt's
//! domains, the PCI devices bound to vfio-pci and the SPDK/DPDK-like processes a plan should bring across. Every
//! path is read under a [`SysfsRoot`] so that tests run it against a fake tree; nothing is written.

mod kernel;
pub(crate) mod qemu;

pub(crate) use kernel::TargetImage;
pub(crate) use qemu::{QemuArgs, RamBacking};

use super::{HostError, SysfsRoot, process};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables a QEMU may need to start at all (the lab's unpacked builds do): kept in its restart argv
/// as `env NAME=VALUE …`.
const QEMU_ENV: [&str; 2] = ["LD_LIBRARY_PATH", "QEMU_MODULE_DIR"];
/// File systems whose contents are gone after a kexec: a `share=on` RAM file on one of them is no shared RAM.
const VOLATILE_FS: [(i64, &str); 3] = [
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x9584_58f6, "hugetlbfs"),
];
/// How long `virsh list` may take.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(20);

/// Which systemd unit a process runs in, from /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A service with a unit file: `systemctl start UNIT` starts it again.
    Service(String),
    /// A transient service (`systemd-run`): gone once it stops, so it cannot be started again by name.
    Transient(String),
    /// No service: a scope (a login session, `systemd-run --scope`), a user manager, or no systemd at all.
    None(Option<String>),
}

/// A running QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QemuProcess {
    pub(crate) pid: u32,
    pub(crate) argv: Vec<String>,
    /// [`QEMU_ENV`] variables it was started with, `NAME=VALUE`; `None` when its environment could not be read
    /// (another user's process, and kup not root).
    pub(crate) env: Option<Vec<String>>,
    pub(crate) args: QemuArgs,
    pub(crate) unit: Unit,
    /// A `share=on` RAM file on a file system a kexec empties: (file, file system).
    pub(crate) volatile_ram: Option<(PathBuf, &'static str)>,
}

impl QemuProcess {
    /// The argv that starts it again waiting for its state (`env …` first when it needs its environment), and
    /// whether `-daemonize` was added.
    pub(crate) fn restart_argv(&self) -> (Vec<String>, bool) {
        let (argv, added) = qemu::restart_argv(&self.argv, self.args.daemonize);
        let env = self.env.as_deref().unwrap_or_default();
        if env.is_empty() {
            return (argv, added);
        }
        let mut with_env = vec!["env".to_owned()];
        with_env.extend(env.iter().cloned());
        with_env.extend(argv);
        (with_env, added)
    }
}

/// A PCI device bound to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VfioDevice {
    pub(crate) address: String,
    /// `vendor:device`.
    pub(crate) id: String,
    pub(crate) iommu_group: Option<String>,
}

/// An SPDK- or DPDK-like process (`spdk_tgt`, `*dpdk*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppProcess {
    pub(crate) pid: u32,
    /// Its program's name.
    pub(crate) program: String,
    pub(crate) unit: Unit,
}

/// What libvirt says, when it is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Libvirt {
    /// No `virsh` on this host.
    Absent,
    /// `virsh list --name`: the running domains.
    Domains(Vec<String>),
    /// virsh is there, but no libvirt daemon's socket is: nothing to list.
    NotRunning,
    /// virsh is there but could not list domains (no rights, another URI): its message.
    Failed(String),
}

/// Everything `kup plan init` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub(crate) hostname: Option<String>,
    pub(crate) running_release: Option<String>,
    pub(crate) running_cmdline: Option<String>,
    pub(crate) kernel: TargetImage,
    pub(crate) qemus: Vec<QemuProcess>,
    pub(crate) libvirt: Libvirt,
    /// The connection `libvirt` was asked on, when not virsh's default.
    pub(crate) libvirt_uri: Option<String>,
    pub(crate) vfio: Vec<VfioDevice>,
    pub(crate) apps: Vec<AppProcess>,
}

/// What to read besides the files under the root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Discover {
    /// The kernel image `--kernel` names (else the newest in /boot).
    pub(crate) kernel: Option<PathBuf>,
    /// Ask `virsh list` (a real host); tests of a fake tree do not.
    pub(crate) libvirt: bool,
    /// The libvirt connection to ask (`virsh -c`); `None`: virsh's default.
    pub(crate) libvirt_uri: Option<String>,
}

/// Reads the host under `root`.
pub(crate) fn discover(root: &SysfsRoot, what: &Discover) -> Result<HostFacts, HostError> {
    let read = |p: &str| {
        std::fs::read_to_string(root.resolve(Path::new(p)))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let running_release = read("/proc/sys/kernel/osrelease");
    let named = match &what.kernel {
        Some(k) if k.is_relative() => Some(
            std::path::absolute(k)
                .map_err(|e| HostError::io(format!("cannot resolve {}", k.display()), e))?,
        ),
        other => other.clone(),
    };
    let kernel = kernel::find(root, named.as_deref(), running_release.as_deref())?;
    let processes = processes(root);
    let mut qemus = Vec::new();
    let mut apps = Vec::new();
    for p in processes {
        let program = p
            .argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
            .unwrap_or_default();
        if program.starts_with("qemu-system-") || program == "qemu-kvm" {
            let args = QemuArgs::parse(&p.argv);
            let volatile_ram = match &args.ram {
                RamBacking::SharedFiles(files) => files
                    .iter()
                    .find_map(|f| volatile_fs(&root.resolve(f)).map(|fs| (f.clone(), fs))),
                RamBacking::Private(_) => None,
            };
            let env = environment(root, p.pid);
            qemus.push(QemuProcess {
                pid: p.pid,
                argv: p.argv,
                env,
                args,
                unit: p.unit,
                volatile_ram,
            });
        } else if program == "spdk_tgt" || program.to_ascii_lowercase().contains("dpdk") {
            apps.push(AppProcess {
                pid: p.pid,
                program,
                unit: p.unit,
            });
        }
    }
    Ok(HostFacts {
        hostname: read("/proc/sys/kernel/hostname"),
        running_cmdline: read("/proc/cmdline"),
        running_release,
        kernel,
        qemus,
        libvirt: if what.libvirt {
            libvirt(what.libvirt_uri.as_deref())
        } else {
            Libvirt::Absent
        },
        libvirt_uri: what.libvirt_uri.clone(),
        vfio: vfio_devices(root),
        apps,
    })
}

/// One process of /proc: its id, argv and unit.
struct Process {
    pid: u32,
    argv: Vec<String>,
    unit: Unit,
}

/// Every user-space process under `root`'s /proc, by pid (kernel threads have an empty command line).
fn processes(root: &SysfsRoot) -> Vec<Process> {
    let proc = root.resolve(Path::new("/proc"));
    let Ok(entries) = std::fs::read_dir(&proc) else {
        return Vec::new();
    };
    let mut out: Vec<Process> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let dir = proc.join(pid.to_string());
            let bytes = std::fs::read(dir.join("cmdline")).ok()?;
            let argv: Vec<String> = bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if argv.is_empty() {
                return None;
            }
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
            let unit = unit_of(&cgroup, |unit| {
                root.resolve(&Path::new("/run/systemd/transient").join(unit))
                    .exists()
            });
            Some(Process { pid, argv, unit })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// The unit a process runs in, from its /proc/PID/cgroup (the unified hierarchy's line, else systemd's v1 one);
/// `transient` says whether a service's unit file is one of `systemd-run`'s.
pub(crate) fn unit_of(cgroup: &str, transient: impl Fn(&str) -> bool) -> Unit {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/")
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
        .unwrap_or("/");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some(at) = parts.iter().rposition(|p| p.ends_with(".service")) else {
        return Unit::None(parts.last().map(|s| (*s).to_owned()));
    };
    let service = parts[at];
    // Under a user manager (`user@UID.service`) it is a user's unit, which the system's `systemctl start` does not
    // know and which does not run after the kexec until that user logs in.
    if parts[..=at].iter().any(|p| p.starts_with("user@"))
        || parts[at + 1..].iter().any(|p| p.ends_with(".scope"))
    {
        return Unit::None(parts.last().map(|s| (*s).to_owned()));
    }
    if transient(service) {
        Unit::Transient(service.to_owned())
    } else {
        Unit::Service(service.to_owned())
    }
}

/// The [`QEMU_ENV`] variables of process `pid`, if its environment can be read.
fn environment(root: &SysfsRoot, pid: u32) -> Option<Vec<String>> {
    let path = root.resolve(Path::new(&format!("/proc/{pid}/environ")));
    let bytes = std::fs::read(path).ok()?;
    let vars = bytes
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .filter(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, _)| QEMU_ENV.contains(&k))
        })
        .map(|kv| kv.into_owned())
        .collect();
    Some(vars)
}

/// The volatile file system `path` is on, if it is on one.
fn volatile_fs(path: &Path) -> Option<&'static str> {
    let fs = nix::sys::statfs::statfs(path).ok()?;
    let kind = fs.filesystem_type().0 as i64;
    VOLATILE_FS
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| *name)
}

/// The devices vfio-pci is bound to (the address links in its driver directory), sorted.
fn vfio_devices(root: &SysfsRoot) -> Vec<VfioDevice> {
    let driver = root.resolve(Path::new("/sys/bus/pci/drivers/vfio-pci"));
    let Ok(entries) = std::fs::read_dir(driver) else {
        return Vec::new();
    };
    let mut out: Vec<VfioDevice> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name.matches(':').count() == 2 && name.contains('.'))
        .map(|address| {
            let dev = root.pci_device(&address);
            VfioDevice {
                id: super::sysfs::device_id(&dev),
                iommu_group: super::sysfs::iommu_group(&dev),
                address,
            }
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// libvirt's running domains, when virsh is installed, on connection `uri` (else virsh's default).
fn libvirt(uri: Option<&str>) -> Libvirt {
    let mut argv = vec!["virsh".to_owned()];
    if let Some(uri) = uri {
        argv.extend(["-c".to_owned(), uri.to_owned()]);
    }
    argv.extend(["list", "--name"].map(String::from));
    match process::capture(&argv, VIRSH_TIMEOUT) {
        Err(process::ProcessError::NotInstalled { .. }) => Libvirt::Absent,
        Err(e) => Libvirt::Failed(e.to_string()),
        Ok(out) if out.code == Some(0) => Libvirt::Domains(
            out.stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        // The system daemons' sockets (monolithic libvirtd, modular virtqemud); a connection named on the
        // command line that fails is a failure, whatever runs.
        Ok(_)
            if uri.is_none()
                && !["/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"]
                    .iter()
                    .any(|s| Path::new(s).exists()) =>
        {
            Libvirt::NotRunning
        }
        Ok(out) => Libvirt::Failed(
            out.tail
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_read_from_the_cgroup() {
        let never = |_: &str| false;
        assert_eq!(
            unit_of("0::/system.slice/qemu@db-1.service\n", never),
            Unit::Service("qemu@db-1.service".into())
        );
        assert_eq!(
            unit_of(
                "9:name=systemd:/system.slice/spdk_tgt.service\n0::/\n",
                never
            ),
            Unit::Service("spdk_tgt.service".into())
        );
        assert_eq!(
            unit_of("0::/system.slice/run-r1234.service\n", |u| u
                == "run-r1234.service"),
            Unit::Transient("run-r1234.service".into())
        );
        assert_eq!(
            unit_of("0::/user.slice/user-0.slice/session-3.scope\n", never),
            Unit::None(Some("session-3.scope".into()))
        );
        assert_eq!(
            unit_of(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/qemu.service\n",
                never
            ),
            Unit::None(Some("qemu.service".into()))
        );
        assert_eq!(
            unit_of(
                "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
                never
            ),
            Unit::None(Some("init.scope".into()))
        );
        assert_eq!(unit_of("9:name=systemd:/\n0::/\n", never), Unit::None(None));
    }
}
