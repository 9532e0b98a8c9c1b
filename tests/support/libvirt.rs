//! A libvirtd of a test's own, for the libvirt driver's test and the save benchmark: a private mount namespace whose
//! libvirt directories are bind mounts of directories under the test's root, its own socket, QEMU run as root, the
//! lab's QEMU as the domain's `<emulator>` — no system service is started or configured.

#![allow(dead_code)] // each test binary uses a different part

use super::guests::{Lab, Qemu, RESERVED_START};
use kup::action::shell_quote;
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directories the daemon sees in place of the system's (mount point, directory under the test's root).
const MOUNTS: [(&str, &str); 5] = [
    ("/etc/libvirt", "etc"),
    ("/run/libvirt", "run"),
    ("/var/lib/libvirt", "lib"),
    ("/var/log/libvirt", "log"),
    ("/var/cache/libvirt", "cache"),
];

/// A libvirtd of the test's own; on drop, its guests' QEMUs are killed and then the daemon.
pub struct Libvirtd {
    /// The directory its configuration, state and log live under.
    pub root: PathBuf,
    /// `virsh -c` URI of its socket.
    pub uri: String,
    daemon: Child,
}

impl Libvirtd {
    pub fn start(root: &Path) -> Libvirtd {
        for (mount_point, dir) in MOUNTS {
            // Empty mount points; an installed libvirt-daemon-system would have made them.
            fs::create_dir_all(mount_point).unwrap();
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let sock = root.join("sock");
        fs::create_dir_all(&sock).unwrap();
        fs::write(
            root.join("etc/libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                sock.display()
            ),
        )
        .unwrap();
        // QEMU runs as root (the domain's files are the test's); its stdout and stderr go to a file, not to
        // virtlogd, which is not running.
        fs::write(
            root.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nstdio_handler = \"file\"\n",
        )
        .unwrap();
        let mut script = String::from("set -e\n");
        for (mount_point, dir) in MOUNTS {
            let from = shell_quote(&root.join(dir));
            script.push_str(&format!("mount --bind {from} {mount_point}\n"));
        }
        script.push_str(&format!(
            "exec libvirtd --config {} --pid-file {}\n",
            shell_quote(&root.join("etc/libvirtd.conf")),
            shell_quote(&root.join("libvirtd.pid"))
        ));
        let log = fs::File::create(root.join("libvirtd.log")).unwrap();
        let daemon = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)");
        let d = Libvirtd {
            root: root.to_owned(),
            uri: format!(
                "qemu+unix:///system?socket={}",
                sock.join("libvirt-sock").display()
            ),
            daemon,
        };
        let started = Instant::now();
        while !d.virsh(&["list"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "libvirtd did not answer on {} within 30 s; its log:\n{}",
                d.uri,
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("libvirtd answered after {:?}", started.elapsed());
        d
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("libvirtd.log")).unwrap_or_default()
    }

    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .args(["-c", &self.uri])
            .args(args)
            .output()
            .expect("virsh (libvirt-clients; run lab/setup)")
    }

    /// `virsh ARGS…`, which must succeed; its standard output.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?}: {}\n{}\nlibvirtd's log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn domstate(&self, domain: &str) -> String {
        self.ok(&["domstate", domain])
    }

    /// The domain's QEMU, from the pidfile libvirt keeps in its run directory.
    pub fn pid(&self, domain: &str) -> u32 {
        let path = self.root.join(format!("run/qemu/{domain}.pid"));
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// The host address of guest-physical `gpa` in the domain's QEMU (HMP `gpa2hva` through libvirt).
    pub fn hva(&self, domain: &str, gpa: u64) -> u64 {
        let text = self.ok(&[
            "qemu-monitor-command",
            "--hmp",
            domain,
            &format!("gpa2hva {gpa:#x}"),
        ]);
        let hex = text
            .rsplit(" is ")
            .next()
            .and_then(|h| h.trim().strip_prefix("0x"))
            .unwrap_or_else(|| panic!("unexpected gpa2hva reply {text:?}"));
        u64::from_str_radix(hex, 16).unwrap()
    }

    pub fn mem(&self, domain: &str) -> fs::File {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", self.pid(domain)))
            .expect("open /proc/PID/mem (needs root)")
    }

    pub fn write(&self, domain: &str, gpa: u64, bytes: &[u8]) {
        let hva = self.hva(domain, gpa);
        self.mem(domain).write_all_at(bytes, hva).unwrap();
    }

    pub fn read(&self, domain: &str, gpa: u64, len: usize) -> Vec<u8> {
        let hva = self.hva(domain, gpa);
        let mut buf = vec![0; len];
        self.mem(domain).read_exact_at(&mut buf, hva).unwrap();
        buf
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // libvirtd leaves its guests running when it ends: kill their QEMUs first.
        if let Ok(dir) = fs::read_dir(self.root.join("run/qemu")) {
            for entry in dir.flatten() {
                if entry.path().extension().is_some_and(|e| e == "pid")
                    && let Some(pid) = fs::read_to_string(entry.path())
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                {
                    super::guests::kill_and_wait(pid);
                }
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A TCG domain with no disk that boots the lab kernel into a shell that sleeps, as the QMP guests do (one vCPU,
/// `mem_mib` of RAM, its console in `dir/NAME.serial`); `reserved_mib` above [`RESERVED_START`] are reserved
/// (`memmap=`) so the guest never touches what a test writes there.
pub fn domain_xml(
    lab: &Lab,
    work: &Path,
    dir: &Path,
    name: &str,
    mem_mib: u64,
    reserved_mib: u64,
) -> String {
    let x = |p: &Path| {
        p.display()
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 memmap={reserved}M${start}M</cmdline>
  </os>
  <devices>
    <emulator>{emulator}</emulator>
    <serial type='file'><source path='{serial}' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        mem = mem_mib,
        kernel = x(&lab.kernel),
        initrd = x(&lab.initramfs(work)),
        reserved = reserved_mib,
        start = RESERVED_START >> 20,
        emulator = x(&emulator(lab, dir)),
        serial = x(&dir.join(format!("{name}.serial"))),
    )
}

/// The wrapper named as the domain's `<emulator>`: the lab's QEMU with its environment and `-L` directories.
pub fn emulator(lab: &Lab, dir: &Path) -> PathBuf {
    let path = dir.join("qemu-system-x86_64");
    let argv: Vec<String> = lab
        .qemu_argv(Qemu::V7)
        .iter()
        .map(|a| shell_quote(Path::new(a)))
        .collect();
    fs::write(
        &path,
        format!("#!/bin/sh\nexec {} \"$@\"\n", argv.join(" ")),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}
