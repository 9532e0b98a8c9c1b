//! `kup plan init [--kernel IMAGE] [--out FILE]`: a commented starter plan read off the live host (the kernel to
//! update to, the running QEMUs and libvirt domains, the vfio-pci devices and SPDK/DPDK-like services), so that an
//! operator edits a plan instead of writing one. Reading is `host::discover`'s, the text `render`'s; this file
//! checks the text as `kup plan validate` would and writes it.

mod render;

use super::{CommandError, CommandResult};
use crate::host::SysfsRoot;
use crate::host::discover::{self, Discover};
use std::io::Write as _;
use std::path::PathBuf;

/// What `kup plan init` was asked.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The kernel image to update to (default: the newest in /boot other than the running kernel).
    #[arg(long, value_name = "IMAGE")]
    pub(crate) kernel: Option<PathBuf>,
    /// Write the plan to this file (mode 0600) instead of stdout; an existing file is refused without --force.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// With --out: replace an existing file.
    #[arg(long, requires = "out")]
    pub(crate) force: bool,
    /// List libvirt domains on this connection (`virsh -c URI`) and write it into the plan as each domain's
    /// `libvirt_uri` (default: virsh's default connection, which the plan then leaves implicit).
    #[arg(long, value_name = "URI")]
    pub(crate) libvirt_uri: Option<String>,
}

/// `kup plan init`: the plan on stdout, or in `--out FILE` (0600, an existing file only with `--force`).
pub(crate) fn run(args: &InitArgs) -> CommandResult {
    let facts = discover::discover(
        &SysfsRoot::default(),
        &Discover {
            kernel: args.kernel.clone(),
            libvirt: true,
            libvirt_uri: args.libvirt_uri.clone(),
        },
    )
    .map_err(|e| CommandError::Usage(format!("kup plan init: {e}")))?;
    let text = render::render(&facts);
    self_check(&text)?;
    match args.out.as_deref() {
        None => super::write_stdout(&text),
        Some(path) => {
            crate::host::files::write_private(path, text.as_bytes(), args.force)
                .map_err(|e| CommandError::Usage(e.to_string()))?;
            let mut stderr = format!("wrote {}", path.display());
            let todos = text.lines().filter(|l| l.contains("# TODO")).count();
            if todos > 0 {
                stderr.push_str(&format!(" ({todos} TODO comment(s) to resolve)"));
            }
            // Not eprintln!: a closed stderr must not turn a written plan into a panic.
            let _ = writeln!(std::io::stderr(), "{stderr}");
            Ok(())
        }
    }
}

/// The plan must pass `kup plan validate`: a plan init cannot write is a bug in kup, said as such, with the
/// findings, instead of a file the operator would find broken.
fn self_check(text: &str) -> CommandResult {
    let checked = crate::check::check("kup plan init", text.as_bytes());
    if checked.report.has_errors() {
        return Err(CommandError::Usage(format!(
            "the plan kup plan init wrote does not validate (a bug in kup; please report it):\n{}\n{text}",
            checked.report.render(false, super::width())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::discover::{HostFacts, Libvirt, QemuArgs, QemuProcess, TargetImage, Unit};
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// A minimal well-formed bzImage of `release`: 4 setup sectors, boot protocol 2.15, the version string.
    fn bzimage(release: &str) -> Vec<u8> {
        let mut bytes = vec![0u8; 5 * 512 + 16];
        bytes[0x1F1] = 4;
        bytes[0x1F4..0x1F8].copy_from_slice(&1u32.to_le_bytes());
        bytes[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        bytes[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        bytes[0x20E..0x210].copy_from_slice(&(0x400u16 - 0x200).to_le_bytes());
        bytes[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes());
        let version = format!("{release} (test@example) #1 SMP");
        bytes[0x400..0x400 + version.len()].copy_from_slice(version.as_bytes());
        bytes
    }

    fn write(root: &Path, path: &str, bytes: impl AsRef<[u8]>) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// A process of the fake /proc: its argv, cgroup and environment.
    fn process(root: &Path, pid: u32, argv: &str, cgroup: &str, environ: &[&str]) {
        let nul = |parts: Vec<&str>| parts.join("\0") + "\0";
        write(
            root,
            &format!("/proc/{pid}/cmdline"),
            nul(argv.split(' ').collect()),
        );
        write(root, &format!("/proc/{pid}/cgroup"), cgroup);
        write(root, &format!("/proc/{pid}/environ"), nul(environ.to_vec()));
    }

    /// A virtualisation host: three kernels in /boot (the running 6.1, 6.9 and 6.12 with its initrd, config and
    /// modules), a shared-RAM guest in a unit with a VFIO device, a copy-RAM guest started by hand with the
    /// lab's environment, a guest in a transient unit, one without QMP, SPDK in its unit, a DPDK program by hand.
    fn fake_host() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
        write(root, "/proc/sys/kernel/hostname", "hv-7\n");
        write(
            root,
            "/proc/cmdline",
            "root=/dev/nvme0n1p2 ro quiet memmap=16G!64G\n",
        );
        for release in ["6.1.0-28-amd64", "6.9.1", "6.12.9-lts"] {
            write(root, &format!("/boot/vmlinuz-{release}"), bzimage(release));
        }
        write(root, "/boot/vmlinuz-broken", b"no bzImage");
        write(root, "/boot/initrd.img-6.12.9-lts", b"initrd");
        write(root, "/boot/initrd.img-6.9.1", b"initrd");
        write(
            root,
            "/boot/config-6.12.9-lts",
            "CONFIG_KEXEC_FILE=y\nCONFIG_HOTPLUG_PARALLEL=y\n",
        );
        std::fs::create_dir_all(root.join("lib/modules/6.12.9-lts")).unwrap();
        write(root, "/proc/2/cmdline", "");
        process(
            root,
            100,
            "/usr/bin/qemu-system-x86_64 -name guest=db-1 -m 16G -daemonize \
             -qmp unix:/run/qemu/db-1.qmp,server=on,wait=off \
             -object memory-backend-file,id=mem,size=16G,mem-path=/var/lib/kup/ram/db-1,share=on \
             -machine q35,memory-backend=mem -device vfio-pci,host=3b:00.0",
            "0::/system.slice/qemu@db-1.service\n",
            &["PATH=/usr/bin"],
        );
        process(
            root,
            200,
            "/opt/qemu/bin/qemu-system-x86_64 -m 2048 -display none \
             -chardev socket,id=qmp0,path=/run/scratch.qmp,server=on,wait=off -mon chardev=qmp0,mode=control",
            "0::/user.slice/user-0.slice/session-4.scope\n",
            &["LD_LIBRARY_PATH=/opt/qemu/lib", "HOME=/root"],
        );
        process(
            root,
            250,
            "qemu-system-x86_64 -name web -m 1G -nographic -qmp unix:/run/web.qmp,server=on,wait=off",
            "0::/system.slice/run-r42.service\n",
            &[],
        );
        write(root, "/run/systemd/transient/run-r42.service", "");
        // Another user's process, its environment unreadable.
        std::fs::remove_file(root.join("proc/250/environ")).unwrap();
        process(
            root,
            300,
            "qemu-system-x86_64 -m 512M -monitor stdio",
            "0::/\n",
            &[],
        );
        process(
            root,
            400,
            "/usr/local/bin/spdk_tgt -m 0x3",
            "0::/system.slice/spdk_tgt.service\n",
            &[],
        );
        process(root, 500, "/opt/dpdk-fwd --lcores 2", "0::/\n", &[]);
        let dev = root.join("sys/devices/pci0000:00/0000:3b:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vendor"), "0x8086\n").unwrap();
        std::fs::write(dev.join("device"), "0x0a54\n").unwrap();
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/12")).unwrap();
        symlink("../../../kernel/iommu_groups/12", dev.join("iommu_group")).unwrap();
        for link in [
            "sys/bus/pci/devices/0000:3b:00.0",
            "sys/bus/pci/drivers/vfio-pci/0000:3b:00.0",
        ] {
            let at = root.join(link);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            symlink(&dev, at).unwrap();
        }
        dir
    }

    #[test]
    fn a_fake_host_becomes_a_plan_that_validates() {
        let host = fake_host();
        let facts = discover::discover(&SysfsRoot::new(host.path()), &Discover::default()).unwrap();
        assert_eq!(facts.kernel.image, Path::new("/boot/vmlinuz-6.12.9-lts"));
        assert_eq!(facts.qemus.len(), 4, "{:?}", facts.qemus);
        assert_eq!(facts.apps.len(), 2);
        let text = render::render(&facts);
        self_check(&text).unwrap();
        insta::assert_snapshot!("init-fake-host", text);
    }

    #[test]
    fn no_other_kernel_in_boot_is_an_error_that_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
        write(
            dir.path(),
            "/boot/vmlinuz-6.1.0-28-amd64",
            bzimage("6.1.0-28-amd64"),
        );
        let e = discover::discover(&SysfsRoot::new(dir.path()), &Discover::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--kernel IMAGE") && e.contains("6.1.0-28-amd64"),
            "{e}"
        );
        let named = Discover {
            kernel: Some("/boot/vmlinuz-6.1.0-28-amd64".into()),
            libvirt: false,
            libvirt_uri: None,
        };
        let facts = discover::discover(&SysfsRoot::new(dir.path()), &named).unwrap();
        assert!(facts.kernel.chosen.contains("running kernel's release"));
    }

    #[test]
    fn libvirt_domains_and_what_virsh_could_not_say() {
        let argv: Vec<String> = "/usr/bin/qemu-system-x86_64 -name guest=web-1,debug-threads=on \
                                 -object secret,id=k,file=/var/lib/libvirt/qemu/domain-3-web-1/master-key.aes"
            .split(' ')
            .map(str::to_owned)
            .collect();
        let facts = |libvirt| HostFacts {
            hostname: None,
            running_release: None,
            running_cmdline: None,
            kernel: TargetImage {
                image: "/boot/vmlinuz-6.12.9".into(),
                release: "6.12.9".into(),
                sha256: "0".repeat(64),
                initrd: None,
                chosen: "Named with --kernel".into(),
                config: None,
                modules: true,
            },
            qemus: vec![QemuProcess {
                pid: 7,
                args: QemuArgs::parse(&argv),
                argv: argv.clone(),
                env: Some(Vec::new()),
                unit: Unit::None(None),
                volatile_ram: None,
            }],
            libvirt,
            libvirt_uri: None,
            vfio: Vec::new(),
            apps: Vec::new(),
        };
        let listed = render::render(&facts(Libvirt::Domains(vec!["db 2".into()])));
        self_check(&listed).unwrap();
        insta::assert_snapshot!("init-libvirt", listed);
        let failed = render::render(&facts(Libvirt::Failed("permission denied".into())));
        self_check(&failed).unwrap();
        assert!(failed.contains("# TODO libvirt: `virsh list --name` failed (permission denied)"));
        assert!(failed.contains("libvirt = \"web-1\"") && failed.contains("# TODO libvirt_uri"));
        // A connection named with --libvirt-uri goes into the plan for each domain: the resume unit on the new
        // kernel has no LIBVIRT_DEFAULT_URI to fall back on.
        let mut on_uri = facts(Libvirt::Domains(vec!["db 2".into()]));
        on_uri.libvirt_uri = Some("qemu+unix:///system?socket=/run/lv/sock".into());
        let named = render::render(&on_uri);
        self_check(&named).unwrap();
        assert_eq!(
            named
                .matches("libvirt_uri = \"qemu+unix:///system?socket=/run/lv/sock\"")
                .count(),
            2,
            "{named}"
        );
        assert!(!named.contains("# TODO libvirt_uri"), "{named}");
    }

    #[test]
    fn out_writes_0600_and_replaces_only_with_force() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        crate::host::files::write_private(&path, b"first", false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = crate::host::files::write_private(&path, b"second", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        crate::host::files::write_private(&path, b"second", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[cfg(test)]
mod first_hour {
    use super::*;
    use crate::host::discover::{HostFacts, Libvirt, QemuArgs, QemuProcess, TargetImage, Unit};

    /// examples/first-hour.toml, which README.md's first hour starts from, is what `kup plan init` writes for the
    /// host it describes (its first line, the `#:schema` directive, and the note under the header aside).
    #[test]
    fn the_readme_example_is_what_init_writes_for_its_host() {
        let start: Vec<String> = "/usr/bin/qemu-system-x86_64 -name db-1 -accel kvm -smp 8 -m 16G -display none \
                                  -daemonize -pidfile /run/qemu/db-1.pid \
                                  -qmp unix:/run/qemu/db-1.qmp,server=on,wait=off \
                                  -object memory-backend-file,id=mem,size=16G,mem-path=/var/lib/qemu/ram/db-1,share=on \
                                  -machine q35,memory-backend=mem -drive file=/var/lib/qemu/db-1.qcow2,if=virtio"
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let facts = HostFacts {
            hostname: Some("hv-7".into()),
            running_release: Some("6.1.0-28-amd64".into()),
            running_cmdline: Some("BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=/dev/nvme0n1p2 ro quiet".into()),
            kernel: TargetImage {
                image: "/boot/vmlinuz-6.12.9-lts".into(),
                release: "6.12.9-lts".into(),
                sha256: "9f2c1b1d6e0f4a7c8b3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3".into(),
                initrd: Some("/boot/initrd.img-6.12.9-lts".into()),
                chosen: "The newest of 2 image(s) in /boot other than the running kernel (6.1.0-28-amd64)".into(),
                config: Some(("/boot/config-6.12.9-lts".into(), true)),
                modules: true,
            },
            qemus: vec![QemuProcess {
                pid: 2817,
                args: QemuArgs::parse(&start),
                argv: start,
                env: Some(Vec::new()),
                unit: Unit::None(None),
                volatile_ram: None,
            }],
            libvirt: Libvirt::Absent,
            libvirt_uri: None,
            vfio: Vec::new(),
            apps: Vec::new(),
        };
        let shipped = std::fs::read_to_string("examples/first-hour.toml").unwrap();
        let shipped: Vec<&str> = shipped
            .lines()
            .filter(|l| {
                !l.starts_with("#:schema")
                    && !l.starts_with("# (README.md")
                    && *l != "# line added for editors.)"
            })
            .collect();
        let rendered = render::render(&facts);
        assert_eq!(shipped, rendered.lines().collect::<Vec<_>>());
    }
}
