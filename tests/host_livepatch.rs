//! kup's live patch host functions against a fake tree of /sys and /proc laid out as the kernel does it
//! (/sys/kernel/livepatch/NAME/{enabled,transition}, /proc/PID/task/TID/patch_state, lockdown, sig_enforce) and a
//! synthetic module (an ELF relocatable object with a `.modinfo`). The two syscalls, finit_module and
//! delete_module, are exercised only in a lab guest (tests/lab_livepatch.rs).

use kup::action::Action;
use kup::host::livepatch::{self, LivepatchError};
use kup::host::{Host, HostError, RealHostAt, SysfsRoot};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

const RUNNING: &str = "6.1.0-57-cloud-amd64";
const NAME: &str = "kup_lab_livepatch";

/// A minimal ELF64 LE relocatable object holding `.modinfo` = `modinfo` (and `.shstrtab`).
fn module(modinfo: &[u8]) -> Vec<u8> {
    let names = b"\0.modinfo\0.shstrtab\0";
    let mut out = vec![0u8; 64];
    let modinfo_at = out.len() as u64;
    out.extend_from_slice(modinfo);
    let names_at = out.len() as u64;
    out.extend_from_slice(names);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    let header = |name: u32, kind: u32, offset: u64, size: u64| {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h
    };
    out.extend_from_slice(&[0u8; 64]);
    out.extend_from_slice(&header(1, 1, modinfo_at, modinfo.len() as u64));
    out.extend_from_slice(&header(10, 3, names_at, names.len() as u64));
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little-endian
    out[6] = 1;
    out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    out[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
    out[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
    out
}

fn modinfo(livepatch: bool, name: &str, release: &str) -> Vec<u8> {
    let mut text = String::new();
    if livepatch {
        text.push_str("livepatch=Y\0");
    }
    text.push_str(&format!(
        "license=GPL\0name={name}\0vermagic={release} SMP preempt mod_unload modversions \0"
    ));
    module(text.as_bytes())
}

/// A fake / with /sys/kernel/livepatch and the running release.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys/kernel/livepatch")).unwrap();
        fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        fs::write(
            dir.path().join("proc/sys/kernel/osrelease"),
            format!("{RUNNING}\n"),
        )
        .unwrap();
        Self { dir }
    }

    fn root(&self) -> SysfsRoot {
        SysfsRoot::new(self.dir.path())
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    fn write(&self, p: &str, text: &str) -> &Self {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    fn module(&self, bytes: &[u8]) -> PathBuf {
        let path = self.path("lib/kup/patch.ko");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// The patch as sysfs shows it.
    fn patch(&self, enabled: u8, transition: u8) -> &Self {
        self.write(
            &format!("/sys/kernel/livepatch/{NAME}/enabled"),
            &format!("{enabled}\n"),
        )
        .write(
            &format!("/sys/kernel/livepatch/{NAME}/transition"),
            &format!("{transition}\n"),
        )
    }

    fn task(&self, pid: u32, tid: u32, comm: &str, state: i32) -> &Self {
        self.write(
            &format!("/proc/{pid}/task/{tid}/comm"),
            &format!("{comm}\n"),
        )
        .write(
            &format!("/proc/{pid}/task/{tid}/patch_state"),
            &format!("{state}\n"),
        )
    }
}

fn livepatch_error(e: HostError) -> LivepatchError {
    match e {
        HostError::Livepatch(e) => *e,
        other => panic!("not a live patch error: {other}"),
    }
}

#[test]
fn a_module_built_for_another_release_is_refused_naming_both() {
    let fake = Fake::new();
    let ko = fake.module(&modinfo(true, NAME, "6.1.0-58-cloud-amd64"));
    let e = livepatch::check_module(&fake.root(), &ko, NAME).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("built for kernel 6.1.0-58-cloud-amd64")
            && message.contains("the running kernel is 6.1.0-57-cloud-amd64"),
        "{message}"
    );
    assert!(matches!(
        livepatch_error(e),
        LivepatchError::WrongRelease { .. }
    ));
}

#[test]
fn a_fit_unsigned_module_passes_without_lockdown() {
    let fake = Fake::new();
    fake.write(
        "/sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    )
    .write("/sys/module/module/parameters/sig_enforce", "N\n");
    let ko = fake.module(&modinfo(true, NAME, RUNNING));
    let found = livepatch::check_module(&fake.root(), &ko, NAME).unwrap();
    assert_eq!(found.name, NAME);
    assert_eq!(found.release, RUNNING);
    assert!(!found.signed);
}

#[test]
fn what_is_not_a_fit_live_patch_is_refused_with_the_reason() {
    let fake = Fake::new();
    let plain = fake.module(&modinfo(false, NAME, RUNNING));
    assert!(matches!(
        livepatch_error(livepatch::check_module(&fake.root(), &plain, NAME).unwrap_err()),
        LivepatchError::NotLivepatch { .. }
    ));
    let other = fake.module(&modinfo(true, "other_patch", RUNNING));
    let e = livepatch::check_module(&fake.root(), &other, NAME).unwrap_err();
    assert!(e.to_string().contains("\"other_patch\""), "{e}");
    let compressed = fake.module(b"\xfd7zXZ\0rest");
    assert!(matches!(
        livepatch_error(livepatch::check_module(&fake.root(), &compressed, NAME).unwrap_err()),
        LivepatchError::Modinfo { .. }
    ));
    let ko = fake.module(&modinfo(true, NAME, RUNNING));
    fake.patch(1, 0);
    assert!(matches!(
        livepatch_error(livepatch::check_module(&fake.root(), &ko, NAME).unwrap_err()),
        LivepatchError::AlreadyLoaded { .. }
    ));
}

#[test]
fn lockdown_or_sig_enforce_refuse_an_unsigned_module_and_say_which() {
    let fake = Fake::new();
    let ko = fake.module(&modinfo(true, NAME, RUNNING));
    fake.write(
        "/sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    let e = livepatch::check_module(&fake.root(), &ko, NAME).unwrap_err();
    assert!(e.to_string().contains("is [integrity]"), "{e}");
    assert!(e.to_string().contains("not signed"), "{e}");

    let fake = Fake::new();
    let ko = fake.module(&modinfo(true, NAME, RUNNING));
    fake.write("/sys/module/module/parameters/sig_enforce", "Y\n");
    let e = livepatch::check_module(&fake.root(), &ko, NAME).unwrap_err();
    assert!(
        e.to_string().contains("module signatures are enforced"),
        "{e}"
    );

    // Signed: the kernel checks the signature itself.
    let mut signed = modinfo(true, NAME, RUNNING);
    signed.extend_from_slice(b"SIGNATURE BYTES~Module signature appended~\n");
    let ko = fake.module(&signed);
    assert!(
        livepatch::check_module(&fake.root(), &ko, NAME)
            .unwrap()
            .signed
    );
}

#[test]
fn a_kernel_without_livepatch_support_is_refused() {
    let fake = Fake::new();
    fs::remove_dir(fake.path("/sys/kernel/livepatch")).unwrap();
    let e = livepatch::check_support(&fake.root()).unwrap_err();
    assert!(e.to_string().contains("CONFIG_LIVEPATCH"), "{e}");
}

#[test]
fn a_settled_transition_is_reported_and_a_stuck_one_names_its_tasks() {
    let fake = Fake::new();
    fake.patch(1, 0);
    let state = livepatch::wait_transition(&fake.root(), NAME, Duration::from_secs(1)).unwrap();
    assert!(state.loaded && state.enabled && !state.transition);

    fake.patch(1, 1)
        .task(1, 1, "init", 1)
        .task(42, 42, "qemu-system-x86", 0)
        .task(42, 43, "CPU 0/KVM", 0)
        .task(7, 7, "kthreadd", -1);
    let e = livepatch::wait_transition(&fake.root(), NAME, Duration::from_millis(100)).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("42/42 (qemu-system-x86), 42/43 (CPU 0/KVM)"),
        "{message}"
    );
    assert!(
        !message.contains("init") && !message.contains("kthreadd"),
        "{message}"
    );
    assert!(message.contains("did not finish in 100 ms"), "{message}");
}

#[test]
fn a_transition_that_ends_while_waiting_is_waited_for() {
    let fake = Fake::new();
    fake.patch(1, 1);
    let transition = fake.path(&format!("/sys/kernel/livepatch/{NAME}/transition"));
    let flip = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(80));
        fs::write(transition, "0\n").unwrap();
    });
    let state = livepatch::wait_transition(&fake.root(), NAME, Duration::from_secs(5)).unwrap();
    flip.join().unwrap();
    assert!(state.waited_ms.unwrap() >= 50, "{state:?}");
}

#[test]
fn a_patch_loaded_but_disabled_is_not_enabled() {
    let fake = Fake::new();
    fake.patch(0, 0);
    assert!(matches!(
        livepatch_error(
            livepatch::wait_transition(&fake.root(), NAME, Duration::from_secs(1)).unwrap_err()
        ),
        LivepatchError::NotEnabled { .. }
    ));
}

#[test]
fn disabling_writes_zero_and_waits_until_the_kernel_frees_the_patch() {
    let fake = Fake::new();
    fake.patch(1, 0);
    let dir = fake.path(&format!("/sys/kernel/livepatch/{NAME}"));
    let enabled = dir.join("enabled");
    let kernel = std::thread::spawn(move || {
        for _ in 0..200 {
            if fs::read_to_string(&enabled).unwrap().trim() == "0" {
                fs::remove_dir_all(&dir).unwrap();
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    let state = livepatch::disable(&fake.root(), NAME, Duration::from_secs(5)).unwrap();
    assert!(kernel.join().unwrap(), "kup never wrote 0 to enabled");
    assert!(!state.loaded);
    // Nothing loaded: nothing to do.
    assert!(
        !livepatch::disable(&fake.root(), NAME, Duration::from_secs(1))
            .unwrap()
            .loaded
    );
}

#[test]
fn verify_sees_the_patch_enabled_or_gone_with_its_module() {
    let fake = Fake::new();
    assert!(livepatch::check(&fake.root(), NAME, false).is_ok());
    assert!(livepatch::check(&fake.root(), NAME, true).is_err());
    fake.write(&format!("/sys/module/{NAME}/refcnt"), "0\n");
    let e = livepatch::check(&fake.root(), NAME, false).unwrap_err();
    assert!(e.to_string().contains("its module is loaded"), "{e}");
    fake.patch(1, 0);
    assert!(livepatch::check(&fake.root(), NAME, true).unwrap().enabled);
    assert!(livepatch::check(&fake.root(), NAME, false).is_err());
}

#[test]
fn the_preflight_actions_refuse_the_wrong_release_through_the_host() {
    let fake = Fake::new();
    let ko = fake.module(&modinfo(true, NAME, "6.1.0-58-cloud-amd64"));
    let host = RealHostAt::new(fake.root());
    let failure = host
        .perform(&[
            Action::CheckLivepatchSupport,
            Action::CheckFile {
                path: ko.clone(),
                sha256: None,
            },
            Action::CheckLivepatchModule {
                path: ko,
                name: NAME.into(),
            },
        ])
        .unwrap_err();
    assert_eq!(failure.index, 2);
    assert!(
        failure.message.contains("6.1.0-58-cloud-amd64"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains(RUNNING), "{}", failure.message);
}
