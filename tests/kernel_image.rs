//! The bzImage reader on the real Debian cloud kernel that the lab boots (fetched by `lab/fetch-kernel`), and on
//! copies of it damaged the ways a download or a copy gets damaged.

use kup::host::kernel_file::{read_image, sha256_file, verify_sha256};
use kup::kernel_image::KernelImageError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `err` is the error `pattern` (with an optional `if` guard); else a failure that shows it.
macro_rules! assert_error {
    ($err:expr, $pattern:pat $(if $guard:expr)?) => {
        assert!(matches!($err, $pattern $(if $guard)?), "{:?}", $err)
    };
}

/// The lab kernel: `KUP_LAB_KERNEL`, else the newest `target/lab/kernel/boot/vmlinuz-*`. Missing is a failure, not
/// a skip: a green run must mean the real image was read.
fn lab_kernel() -> PathBuf {
    if let Some(path) = std::env::var_os("KUP_LAB_KERNEL") {
        return PathBuf::from(path);
    }
    let boot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab/kernel/boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| file_name(path).starts_with("vmlinuz-"))
                .collect()
        })
        .unwrap_or_default();
    kernels.sort();
    match kernels.pop() {
        Some(kernel) => kernel,
        None => panic!(
            "no lab kernel under {}: run lab/fetch-kernel (or set KUP_LAB_KERNEL to a bzImage)",
            boot.display()
        ),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `^6\.1\.\d+-\d+-cloud-amd64$` without a regex dependency.
fn is_debian_6_1_cloud_release(release: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = release.strip_prefix("6.1.") else {
        return false;
    };
    let Some(numbers) = rest.strip_suffix("-cloud-amd64") else {
        return false;
    };
    matches!(numbers.split_once('-'), Some((patch, abi)) if digits(patch) && digits(abi))
}

#[test]
fn release_pattern_helper_is_strict() {
    assert!(is_debian_6_1_cloud_release("6.1.0-27-cloud-amd64"));
    for wrong in [
        "6.1.0-27-amd64",
        "6.12.0-27-cloud-amd64",
        "6.1.0-cloud-amd64",
        "6.1.x-27-cloud-amd64",
        "",
    ] {
        assert!(!is_debian_6_1_cloud_release(wrong), "{wrong}");
    }
}

#[test]
fn real_debian_kernel_release_matches_its_file_name() {
    let path = lab_kernel();
    let image = read_image(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let from_name = file_name(&path).trim_start_matches("vmlinuz-").to_owned();
    assert_eq!(image.release(), from_name);
    assert!(
        is_debian_6_1_cloud_release(image.release()),
        "{}",
        image.release()
    );
    assert!(
        image.version().starts_with(&format!(
            "{from_name} (debian-kernel@lists.debian.org) #1 SMP"
        )),
        "{}",
        image.version()
    );
    assert!(
        image.protocol().major == 2 && image.protocol().minor >= 15,
        "{}",
        image.protocol()
    );
    // x86 COMMAND_LINE_SIZE is 2048; the header gives the limit without the NUL.
    assert_eq!(image.cmdline_size(), Some(2047));
}

#[test]
fn real_kernel_digest_agrees_with_sha256sum() {
    let path = lab_kernel();
    let ours = sha256_file(&path).unwrap().to_string();
    let output = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum runs");
    assert!(output.status.success());
    let theirs = String::from_utf8_lossy(&output.stdout);
    assert_eq!(theirs.split_whitespace().next(), Some(ours.as_str()));
    assert!(verify_sha256(&path, &ours.to_uppercase()).is_ok());

    // The same digest with its last hex digit changed.
    let last = if ours.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &ours[..63]);
    let err = verify_sha256(&path, &wrong).unwrap_err();
    assert_error!(err, KernelImageError::DigestMismatch { .. });
    let message = err.to_string();
    assert!(
        message.contains(&format!("expected {wrong}"))
            && message.contains(&format!("actual {ours}")),
        "{message}"
    );
}

/// A copy of the lab kernel in a temporary directory, altered by `damage`.
fn damaged_copy(dir: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(lab_kernel()).expect("lab kernel is readable");
    damage(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp dir is writable");
    path
}

#[test]
fn damaged_copies_give_the_matching_error() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str, damage: fn(&mut Vec<u8>)| {
        read_image(&damaged_copy(dir.path(), name, damage)).expect_err(name)
    };

    let err = read("truncated-0x100", |b| b.truncate(0x100));
    assert_error!(err, KernelImageError::TooShort { len: 0x100 });

    let err = read("truncated-0x210", |b| b.truncate(0x210));
    assert_error!(err, KernelImageError::Truncated { len: 0x210, .. });

    let err = read("truncated-half", |b| b.truncate(b.len() / 2));
    assert_error!(err, KernelImageError::Truncated { .. });

    let err = read("boot-flag-zeroed", |b| b[0x1FE..0x200].fill(0));
    assert_error!(
        err,
        KernelImageError::MissingBootFlag {
            found: 0,
            elf: false
        }
    );
    assert!(err.to_string().contains("found 0x0000"), "{err}");

    let err = read("hdrs-altered", |b| b[0x202..0x206].copy_from_slice(b"HdrZ"));
    assert_error!(err, KernelImageError::MissingHeaderMagic { found } if &found == b"HdrZ");

    let err = read("version-pointer-beyond-eof", |b| b[0x20E..0x210].fill(0xFF));
    assert_error!(
        err,
        KernelImageError::VersionOutOfRange {
            offset: 0x101FF,
            ..
        }
    );

    let err = read("version-pointer-zero", |b| b[0x20E..0x210].fill(0));
    assert_error!(err, KernelImageError::NoVersionString);
}

#[test]
fn version_pointer_beyond_end_of_file_in_a_cut_down_image() {
    // The header of the real kernel, cut to its setup code and with its kernel size zeroed (so that it is not
    // truncated as far as the header says), pointing past the end of what is left.
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_copy(dir.path(), "setup-only", |b| {
        let setup_len = (usize::from(b[0x1F1]) + 1) * 512;
        b.truncate(setup_len);
        b[0x1F4..0x1F8].fill(0);
        let beyond = u16::try_from(setup_len + 0x100 - 0x200).expect("setup code is under 64 KiB");
        b[0x20E..0x210].copy_from_slice(&beyond.to_le_bytes());
    });
    let len = std::fs::metadata(&path).unwrap().len();
    let err = read_image(&path).unwrap_err();
    assert_error!(err, KernelImageError::VersionOutOfRange { offset, limit } if offset == len + 0x100 && limit == len);
}

#[test]
fn missing_file_says_so() {
    let err = read_image(Path::new("/nonexistent/vmlinuz-0")).unwrap_err();
    assert_error!(err, KernelImageError::NotFound { .. });
    assert_eq!(
        err.to_string(),
        "kernel image /nonexistent/vmlinuz-0 does not exist"
    );
}

#[test]
fn preflight_checks_the_real_images_release_against_the_plan() {
    use kup::action::Action;
    use kup::host::{Host, RealHost};
    let kernel = lab_kernel();
    let release = read_image(&kernel).unwrap().release().to_owned();
    let check = |release: Option<&str>| {
        RealHost.perform(&[Action::CheckKernelImage {
            path: kernel.clone(),
            release: release.map(str::to_owned),
        }])
    };
    let outputs = check(Some(&release)).expect("the image's own release matches");
    assert!(
        matches!(&outputs[0], kup::action::ActionOutput::KernelImage { release: r, .. } if *r == release),
        "{:?}",
        outputs[0]
    );
    assert!(check(None).is_ok());
    let err = check(Some("6.12.9-lts")).unwrap_err();
    assert!(
        err.message.contains(&release) && err.message.contains("6.12.9-lts"),
        "{}",
        err.message
    );
    // Not a kernel at all: refused before anything is paused.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("vmlinuz");
    std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
    let err = RealHost
        .perform(&[Action::CheckKernelImage {
            path: bogus,
            release: None,
        }])
        .unwrap_err();
    assert!(
        err.message.contains("bzImage") || err.message.contains("boot"),
        "{}",
        err.message
    );
}

/// A newc cpio archive holding the (empty) directories `names`, gzip-compressed, as an initrd.
fn gzip_initrd(names: &[&str]) -> Vec<u8> {
    use std::io::Write as _;
    let mut cpio = Vec::new();
    for (ino, name) in names.iter().chain([&"TRAILER!!!"]).enumerate() {
        let fields = [ino, 0o40755, 0, 0, 1, 0, 0, 0, 0, 0, 0, name.len() + 1, 0];
        cpio.extend_from_slice(b"070701");
        for f in fields {
            cpio.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        cpio.extend_from_slice(name.as_bytes());
        cpio.push(0);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&cpio).unwrap();
    gz.finish().unwrap()
}

/// The preflight's check of the kernel it will boot, against the real lab image and a machine root laid out by the
/// test: its release's modules under `/lib/modules`, an initrd, a build configuration.
struct Target {
    root: tempfile::TempDir,
    kernel: PathBuf,
    release: String,
}

impl Target {
    fn new() -> Self {
        let kernel = lab_kernel();
        let release = read_image(&kernel).unwrap().release().to_owned();
        Self {
            root: tempfile::tempdir().unwrap(),
            kernel,
            release,
        }
    }

    fn modules(&self) -> &Self {
        std::fs::create_dir_all(self.root.path().join("lib/modules").join(&self.release)).unwrap();
        self
    }

    fn config(&self, text: &str) -> &Self {
        let dir = self.root.path().join("boot");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("config-{}", self.release)), text).unwrap();
        self
    }

    fn initrd(&self, bytes: &[u8]) -> PathBuf {
        let path = self.root.path().join("boot/initrd.img");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        // The action names it as the host does; the fake root resolves it.
        PathBuf::from("/boot/initrd.img")
    }

    fn check(
        &self,
        initrd: Option<PathBuf>,
        cmdline: &str,
    ) -> Result<kup::action::ActionOutput, String> {
        use kup::host::{Host, RealHostAt, SysfsRoot};
        let host = RealHostAt::new(SysfsRoot::new(self.root.path()));
        host.perform(&[kup::action::Action::CheckTargetKernel {
            image: self.kernel.clone(),
            release: None,
            initrd,
            cmdline: cmdline.to_owned(),
        }])
        .map(|mut out| out.remove(0))
        .map_err(|f| f.message)
    }
}

#[test]
fn preflight_refuses_a_new_kernel_without_its_modules_and_names_the_fix() {
    let target = Target::new();
    let err = target.check(None, "console=ttyS0").unwrap_err();
    assert!(
        err.contains(&format!(
            "has no modules in /lib/modules/{}",
            target.release
        )) && err.contains("Install them"),
        "{err}"
    );
    target.modules();
    let out = target.check(None, "console=ttyS0").unwrap();
    let kup::action::ActionOutput::TargetKernel(found) = out else {
        panic!("{out:?}");
    };
    assert_eq!(
        found.release, target.release,
        "the release read from the image header"
    );
    assert_eq!(found.config, None);
}

#[test]
fn preflight_refuses_an_initrd_built_for_another_release() {
    let target = Target::new();
    target.modules();
    let other = target.initrd(&gzip_initrd(&[
        "lib",
        "lib/modules",
        "lib/modules/5.10.0-99-amd64",
    ]));
    let err = target.check(Some(other), "console=ttyS0").unwrap_err();
    assert!(
        err.contains("holds the modules of 5.10.0-99-amd64") && err.contains(&target.release),
        "{err}"
    );
    let own = format!("lib/modules/{}", target.release);
    let matching = target.initrd(&gzip_initrd(&["lib", "lib/modules", &own]));
    target.check(Some(matching), "console=ttyS0").unwrap();
    // An initramfs without modules (the lab's busybox one) says nothing about the release and passes.
    let busybox = target.initrd(&gzip_initrd(&["bin", "init"]));
    target.check(Some(busybox), "console=ttyS0").unwrap();
}

#[test]
fn preflight_reads_the_new_kernels_config_for_what_the_command_line_relies_on() {
    let target = Target::new();
    target
        .modules()
        .config("CONFIG_KEXEC_FILE=y\n# CONFIG_HOTPLUG_PARALLEL is not set\n");
    target.check(None, "console=ttyS0").unwrap();
    let err = target
        .check(None, "console=ttyS0 cpuhp.parallel=1")
        .unwrap_err();
    assert!(err.contains("CONFIG_HOTPLUG_PARALLEL is not set"), "{err}");
    target.config("CONFIG_KEXEC_FILE=y\nCONFIG_HOTPLUG_PARALLEL=y\n");
    let out = target
        .check(None, "console=ttyS0 cpuhp.parallel=1")
        .unwrap();
    let kup::action::ActionOutput::TargetKernel(found) = out else {
        panic!("{out:?}");
    };
    assert!(found.config.is_some());
    // The lint knows the lab's 6.1 predates parallel bring-up (6.5): a warning, recorded, not a refusal.
    let warned = found.warnings.iter().any(|w| w.contains("cpuhp.parallel"));
    assert!(
        warned || !target.release.starts_with("6.1."),
        "no cpuhp.parallel warning for {}: {:?}",
        target.release,
        found.warnings
    );
}

/// Regression: `--rehearse --no-kernel-load` skipped the kernel identity checks, so a wrong `version` pin went
/// unnoticed although checking it only reads the image. The rehearsal now refuses it at preflight.
#[test]
fn a_rehearsal_without_a_kernel_load_still_catches_a_wrong_release_pin() {
    use std::os::unix::fs::PermissionsExt;
    let kernel = lab_kernel();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let plan = dir.path().join("plan.toml");
    let write = |version: &str| {
        std::fs::write(
            &plan,
            format!(
                "kup = 1\n[kernel]\nimage = \"{}\"\nversion = \"{version}\"\n[policy]\njournal = \"{}\"\n",
                kernel.display(),
                dir.path().join("journal").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plan, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let rehearse = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kup"))
            .args(["plan", "apply", "--rehearse", "--no-kernel-load", "--yes"])
            .arg(&plan)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    write("6.12.9-not-this-image");
    let out = rehearse();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("6.12.9-not-this-image") && stderr.contains("kernel.version"),
        "{stderr}"
    );
    let release = read_image(&kernel).unwrap().release().to_owned();
    write(&release);
    let out = rehearse();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
