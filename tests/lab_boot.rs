//! The lab scaffolding works: `lab/` boots the Debian cloud kernel under QEMU (TCG) with a busybox initramfs and an
//! NVMe ext4 disk, the console is captured with host-side timestamps, and what the guest writes to the disk is read
//! back on the host. Later end-to-end tests (kexec, VM hand-over) build on exactly these scripts.
//!
//! Needs `lab/setup` to have fetched QEMU, the kernel and busybox into `target/lab/` (or `$KUP_LAB_DIR`). Without it
//! these tests fail and say so: a lab that is silently skipped proves nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

#[path = "support/lab.rs"]
mod lab;
use lab::Lab;

/// Runs a command, panicking with its output unless it succeeds.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The lab, and a scratch directory for a test's images and logs.
fn lab_and_scratch() -> (Lab, tempfile::TempDir) {
    (Lab::get(), tempfile::tempdir().unwrap())
}

/// `lab/mkinitramfs`: an initramfs at `out` with `init` as /init and the `extras` (`HOST:GUEST` files or trees).
fn mkinitramfs(lab: &Lab, out: &Path, init: &Path, extras: &[String]) {
    run(lab
        .script("mkinitramfs")
        .arg("-o")
        .arg(out)
        .arg("-i")
        .arg(init)
        .args(extras));
}

/// `lab/mkdisk`: an ext4 image of `size` at `disk`, holding a copy of `seed` when given.
fn mkdisk(lab: &Lab, disk: &Path, size: &str, seed: Option<&Path>) {
    let mut command = lab.script("mkdisk");
    command.arg(disk).arg(size);
    if let Some(seed) = seed {
        command.arg(seed);
    }
    run(&mut command);
}

/// What the shell command `what` prints with `lab/env.sh` sourced (`echo "$LAB_NEW_KERNEL"`), trimmed.
fn lab_shell(lab: &Lab, what: &str) -> String {
    let output = run(Command::new("bash").arg("-c").arg(format!(
        "KUP_LAB_DIR={} . {}/lab/env.sh && {what}",
        lab.dir.display(),
        lab.repo.display()
    )));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Boots a guest: `run_qemu` (`what`, a `lab/run-qemu` command with its first options) with `--initrd`, `--disk`
/// and `--log` as given, then `rest`. Returns the console log; panics with it, and run-qemu's stderr, on a failure.
fn boot(
    what: &str,
    run_qemu: &mut Command,
    (initrd, disk, log): (&Path, &Path, &Path),
    rest: &[&str],
) -> String {
    let output = run_qemu
        .arg("--initrd")
        .arg(initrd)
        .arg("--disk")
        .arg(disk)
        .arg("--log")
        .arg(log)
        .args(rest)
        .output()
        .unwrap();
    let console = fs::read_to_string(log).unwrap_or_default();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\nconsole:\n{console}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    console
}

/// QEMU 10 (`$LAB_QEMU10`, unpacked from bookworm-backports beside 7.2) runs, and boots the lab's new kernel on a q35
/// machine under TCG: `lab/run-qemu --qemu 10` picks it, with its own libraries and firmware.
#[test]
fn qemu_10_boots_the_new_kernel_on_q35() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    let version = |what: &str| lab_shell(&lab, what);
    let qemu = version("lab_qemu10 -version | head -n1");
    assert!(
        qemu.starts_with("QEMU emulator version 10."),
        "lab_qemu10 -version: {qemu}"
    );
    let new_kernel = version("echo \"$LAB_NEW_KERNEL_VERSION\"");
    let image = version("echo \"$LAB_NEW_KERNEL\"");

    let initrd = t.join("initrd.cpio.gz");
    mkinitramfs(&lab, &initrd, &lab.repo.join("lab/guest/smoke-init"), &[]);
    let disk = t.join("disk.img");
    mkdisk(&lab, &disk, "16M", None);
    let console = boot(
        "lab/run-qemu --qemu 10",
        lab.script("run-qemu")
            .args(["--quiet", "--qemu", "10", "--timeout", "90", "--retry", "1"])
            .arg("--kernel")
            .arg(&image),
        (&initrd, &disk, &t.join("console.log")),
        &[
            "--expect",
            "LAB-SMOKE: wrote /hello.txt",
            "--",
            "-machine",
            "q35",
        ],
    );
    assert!(
        console.contains(&format!("LAB-SMOKE: init on {new_kernel}, 1 cpu(s)")),
        "{console}"
    );
    // A q35 machine with bookworm-backports' SeaBIOS (QEMU 10's firmware, not 7.2's 1.16.2).
    assert!(
        console.contains("DMI: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.3"),
        "{console}"
    );
}

#[test]
fn smoke_guest_boots_and_writes_to_its_nvme_disk() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    let nonce = format!("lab-smoke-{}", std::process::id());

    // An initramfs with the smoke /init and an extra file, a disk seeded from a directory.
    fs::write(t.join("extra.conf"), &nonce).unwrap();
    fs::create_dir(t.join("disk")).unwrap();
    fs::write(t.join("disk/seed.txt"), &nonce).unwrap();
    let initrd = t.join("initrd.cpio.gz");
    let extra = format!("{}:/etc/lab-smoke.conf", t.join("extra.conf").display());
    mkinitramfs(
        &lab,
        &initrd,
        &lab.repo.join("lab/guest/smoke-init"),
        &[extra],
    );
    let disk = t.join("disk.img");
    mkdisk(&lab, &disk, "64M", Some(&t.join("disk")));

    // Boot: -smp 1, a hard timeout, one retry after a hang.
    let log = t.join("console.log");
    let console = boot(
        "lab/run-qemu",
        lab.script("run-qemu")
            .args(["--quiet", "--smp", "1", "--timeout", "60", "--retry", "1"]),
        (&initrd, &disk, &log),
        &[],
    );

    // The console: every line stamped with the host's elapsed time, the kernel ran our /init, which saw the extra
    // file, wrote to the disk and printed the kernel log.
    assert!(
        console.lines().all(|line| line.starts_with("[+")),
        "unstamped console line in:\n{console}"
    );
    for marker in [
        "Run /init as init process".to_string(),
        format!("LAB-SMOKE: init on {}, 1 cpu(s)", lab.kernel_version()),
        format!("LAB-SMOKE: extra: {nonce}"),
        "LAB-SMOKE: wrote /hello.txt".to_string(),
        "LAB-SMOKE: dmesg begin".to_string(),
        "EXT4-fs (nvme0n1): mounted filesystem".to_string(),
        "LAB-SMOKE: dmesg end".to_string(),
    ] {
        assert!(
            console.contains(&marker),
            "console lacks {marker:?}:\n{console}"
        );
    }
    assert!(!console.contains("LAB-SMOKE: FAIL"), "{console}");
    let raw = fs::read_to_string(log.with_extension("log.raw")).unwrap();
    assert!(raw.contains("Run /init as init process"));

    // The file the guest wrote, read back from the image on the host.
    let hello = run(lab.script("readdisk").arg(&disk).arg("/hello.txt")).stdout;
    let hello = String::from_utf8(hello).unwrap();
    assert_eq!(
        hello,
        format!(
            "hello from the lab guest\nkernel {}\ncpus 1\nseed {nonce}\n",
            lab.kernel_version()
        )
    );
    let dmesg = run(lab.script("readdisk").arg(&disk).arg("/dmesg.txt")).stdout;
    let dmesg = String::from_utf8(dmesg).unwrap();
    assert!(
        dmesg.starts_with("[    0.000000] Linux version "),
        "{dmesg}"
    );
    assert!(dmesg.contains("Run /init as init process"), "{dmesg}");
}

#[test]
fn mkdisk_and_readdisk_round_trip_files_and_report_missing_ones() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    fs::create_dir_all(t.join("root/sub")).unwrap();
    fs::write(t.join("root/sub/a.txt"), "alpha\n").unwrap();
    let img = t.join("d.img");
    mkdisk(&lab, &img, "16M", Some(&t.join("root")));

    let out = run(lab.script("readdisk").arg(&img).arg("/sub/a.txt"));
    assert_eq!(out.stdout, b"alpha\n");

    run(lab
        .script("readdisk")
        .arg(&img)
        .arg("/sub")
        .arg(t.join("copy")));
    assert_eq!(
        fs::read_to_string(t.join("copy/sub/a.txt")).unwrap(),
        "alpha\n"
    );

    let missing = lab
        .script("readdisk")
        .arg(&img)
        .arg("/nope.txt")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nope.txt"));
}

/// `lab/mkdisk -p`: the file system in an MBR partition, which the kernel mounts as root=PARTUUID=SIG-01 without an
/// initrd whichever NVMe controller it numbers first. The vmhost lab host's layout (the root disk at 00:02.0, a
/// spare controller without a namespace at 00:06.0), booted with the new kernel, which usually names the spare
/// nvme0: root=/dev/nvme0n1 would wait forever there. The guest powers off with its root mounted, so
/// `lab/readdisk` also replays the journal inside the partition.
#[test]
fn a_partitioned_disk_boots_by_partuuid_whichever_nvme_controller_comes_first() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    let seed = t.join("root");
    for dir in ["bin", "proc", "sys"] {
        fs::create_dir_all(seed.join(dir)).unwrap();
    }
    fs::copy(
        lab.dir.join("busybox/bin/busybox"),
        seed.join("bin/busybox"),
    )
    .unwrap();
    // /init on the root file system itself, run by the kernel once it mounted root=PARTUUID=.
    let init = r#"#!/bin/busybox sh
b=/bin/busybox
$b mount -t proc proc /proc && $b mount -t sysfs sysfs /sys
for c in /sys/class/nvme/nvme*; do
  echo "LAB-PARTUUID: $($b basename $c) is $($b basename $($b readlink -f $c/device))"
done
$b uname -r >/booted.txt && $b sync && echo "LAB-PARTUUID: root $($b cat /proc/cmdline)"
$b poweroff -f
"#;
    fs::write(seed.join("init"), init).unwrap();
    fs::set_permissions(seed.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let disk = t.join("disk.img");
    run(lab
        .script("mkdisk")
        .args(["-p", "6b75706c"])
        .arg(&disk)
        .arg("64M")
        .arg(&seed));

    let log = t.join("console.log");
    let output = lab
        .script("run-qemu")
        .args(["--quiet", "--qemu", "10", "--timeout", "90", "--retry", "1"])
        .arg("--kernel")
        .arg(lab_shell(&lab, "echo \"$LAB_NEW_KERNEL\""))
        .args([
            "--append",
            "root=PARTUUID=6b75706c-01 rootwait rw init=/init",
        ])
        .arg("--disk")
        .arg(&disk)
        .arg("--log")
        .arg(&log)
        .args(["--expect", "LAB-PARTUUID: root"])
        .args([
            "--",
            "-machine",
            "q35",
            "-device",
            "nvme,serial=spare,addr=0x06",
        ])
        .output()
        .unwrap();
    let console = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        output.status.success(),
        "the guest did not boot from its partition ({}):\n{}\nconsole:\n{console}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Both controllers were there: the spare, 00:06.0, competed for nvme0 (the order is printed, not asserted: it
    // is the race this layout is immune to).
    for address in ["0000:00:02.0", "0000:00:06.0"] {
        assert!(
            console.contains(&format!(" is {address}")),
            "no controller at {address}:\n{console}"
        );
    }
    let order: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("LAB-PARTUUID: nvme"))
        .collect();
    eprintln!("controller order: {order:?}");
    let booted = run(lab.script("readdisk").arg(&disk).arg("/booted.txt")).stdout;
    assert_eq!(
        String::from_utf8_lossy(&booted).trim(),
        lab.new_kernel_version()
    );
}

#[test]
fn mkinitramfs_holds_init_busybox_applets_and_extras() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    fs::write(t.join("init"), "#!/bin/sh\npoweroff -f\n").unwrap();
    fs::create_dir(t.join("plans")).unwrap();
    fs::write(t.join("plans/p.toml"), "kup = 1\n").unwrap();
    let initrd = t.join("i.cpio.gz");
    mkinitramfs(
        &lab,
        &initrd,
        &t.join("init"),
        &[format!("{}:/etc/kup/plans", t.join("plans").display())],
    );

    let busybox = lab.dir.join("busybox/bin/busybox");
    let listing = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | '{}' cpio -tv",
        initrd.display(),
        busybox.display()
    )))
    .stdout;
    let listing = String::from_utf8(listing).unwrap();
    let has = |suffix: &str| listing.lines().any(|line| line.ends_with(suffix));
    for entry in [
        " init",
        " bin/busybox",
        " bin/sh -> /bin/busybox",
        " sbin/poweroff -> /bin/busybox",
        " etc/kup/plans/p.toml",
        " dev/console",
    ] {
        assert!(has(entry), "initramfs lacks {entry:?}:\n{listing}");
    }
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with("-rwxr-xr-x 0/0") && line.ends_with(" init")),
        "/init is not an executable owned by root:\n{listing}"
    );
}

#[test]
fn a_missing_lab_is_an_error_that_says_to_run_lab_setup() {
    let empty = tempfile::tempdir().unwrap();
    let message = Lab::locate(Path::new(env!("CARGO_MANIFEST_DIR")), empty.path())
        .err()
        .expect("an empty directory is no lab");
    assert!(message.contains("run `lab/setup`"), "{message}");
}

/// A guest that is cut off with its file system still mounted (as a kexec without unmounting does) leaves the
/// journal unreplayed; `lab/readdisk` still reads what the guest wrote, and leaves the image as it was.
#[test]
fn readdisk_reads_a_disk_the_guest_left_mounted() {
    let (lab, tmp) = lab_and_scratch();
    let t = tmp.path();
    fs::write(
        t.join("init"),
        "#!/bin/sh\n\
         mount -t devtmpfs devtmpfs /dev\n\
         i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done\n\
         mount -t ext4 /dev/nvme0n1 /mnt && mkdir -p /mnt/a/b && echo left-mounted >/mnt/a/b/f.txt && sync \
         && echo LAB-UNCLEAN: written\n\
         poweroff -f\n",
    )
    .unwrap();
    let initrd = t.join("i.cpio.gz");
    mkinitramfs(&lab, &initrd, &t.join("init"), &[]);
    let disk = t.join("d.img");
    mkdisk(&lab, &disk, "32M", None);
    run(lab
        .script("run-qemu")
        .args(["--quiet", "--timeout", "60", "--retry", "1"])
        .args(["--expect", "LAB-UNCLEAN: written"])
        .arg("--initrd")
        .arg(&initrd)
        .arg("--disk")
        .arg(&disk)
        .arg("--log")
        .arg(t.join("console.log")));

    let features = run(Command::new("dumpe2fs").arg("-h").arg(&disk)).stdout;
    assert!(
        String::from_utf8_lossy(&features).contains("needs_recovery"),
        "the guest was to leave the file system mounted"
    );
    let before = fs::read(&disk).unwrap();
    let out = run(lab.script("readdisk").arg(&disk).arg("/a/b/f.txt"));
    assert_eq!(out.stdout, b"left-mounted\n");
    assert!(
        fs::read(&disk).unwrap() == before,
        "readdisk changed the image"
    );
}
