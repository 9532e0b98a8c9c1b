//! kup's libvirt driver against a real libvirtd (Debian bookworm's libvirt 9.0, installed by `lab/setup`) managing a
//! QEMU 7.2 guest from the lab: `kup plan apply --rehearse --no-kernel-load` runs `virsh save --bypass-cache`,
//! `virsh restore --bypass-cache --paused` and `virsh resume` for real, and the guest's RAM must read back byte for
//! byte in a new QEMU process. `kup plan init --libvirt-uri` must list the running domain on that connection.
//!
//! The test starts its own libvirtd, as root, in a mount namespace of its own (`unshare --mount`): its
//! `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt`, `/var/log/libvirt` and `/var/cache/libvirt` are bind mounts of
//! directories in the test's temporary directory, and it listens on a socket there (`unix_sock_dir`), which the plan
//! names with `libvirt_uri = "qemu+unix:///system?socket=…"`. No system service is started or configured; when the
//! daemon ends, its mounts go with its namespace. The domain's `<emulator>` is a wrapper script that runs the lab's
//! QEMU with its libraries and `-L` directories (no system QEMU package: installing one would remove the host's
//! qemu-utils 10.0). docs/drivers.md says what this showed.
//!
//! Needs `lab/setup` (QEMU, the lab kernel, busybox, libvirt's packages and the `libvirt-qemu` user) and root.

mod support;

use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Kup;
use support::guests::{self, Lab, RESERVED_START};
use support::libvirt::{Libvirtd, domain_xml};

/// Random bytes written into the guest's reserved RAM.
const PATTERN: usize = 16 << 20;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plan with one libvirt VM per `(name, domain)`, each with its state under `dir`.
fn plan(lab: &Lab, dir: &Path, uri: &str, vms: &[(&str, &str)]) -> String {
    let s = |t: &str| toml::Value::String(t.to_owned()).to_string();
    let p = |t: &Path| s(&t.display().to_string());
    let mut text = format!(
        "kup = 1\nname = \"libvirt_vms test\"\n\n[kernel]\nimage = {}\n\n[kernel.cmdline]\ninherit = false\n\
         append = [\"console=ttyS0\"]\n\n",
        p(&lab.kernel)
    );
    for (name, domain) in vms {
        text.push_str(&format!(
            "[[vm]]\nname = {}\nlibvirt = {}\nlibvirt_uri = {}\nstate = {}\nmemory_size = \"256MiB\"\n\n",
            s(name),
            s(domain),
            s(uri),
            p(&dir.join("state").join(name))
        ));
    }
    text.push_str(&format!(
        "[policy]\njournal = {}\n",
        p(&dir.join("journal"))
    ));
    text
}

/// Guest `guest`'s blackout in the status of the latest apply under `dir`'s journal; it must be over, and lie
/// within `vm_downtime_ms` when the resume ran.
fn blackout(dir: &Path) -> serde_json::Value {
    let status = Kup::new().status_json(dir.join("journal"));
    let b = status["blackout"]["guest"].clone();
    let total = b["total_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("{status:#}"));
    if let Some(downtime) = status["vm_downtime_ms"]["guest"].as_i64() {
        assert!(
            total <= downtime,
            "blackout {total} ms, downtime {downtime} ms"
        );
    }
    eprintln!("blackout: {b}");
    b
}

fn rehearse(text: &str) -> support::cli::Run {
    support::cli::rehearse(text, Duration::from_secs(180))
}

/// One daemon for the whole story, since starting one and probing the emulator takes seconds: first two plans
/// that the preflight refuses (a domain that does not exist, one that is defined but shut off) while a patterned
/// guest runs on untouched, then a rehearsal rolled back after the save, then the hand-over of that guest.
#[test]
fn libvirt_guest_survives_rollback_and_rehearsal_and_bad_domains_are_refused_first() {
    let lab = Lab::get();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let tmp = tempfile::Builder::new()
        .prefix("libvirt_vms-")
        .tempdir_in(&work)
        .unwrap();
    let dir = tmp.path();
    let started = Instant::now();
    let libvirtd = Libvirtd::start(&dir.join("libvirt"));

    // A transient domain (`virsh create`), running; a persistent one (`virsh define`), shut off.
    // 256 MiB of RAM, the pattern's range reserved.
    let xml_of = |name: &str| {
        let xml = dir.join(format!("{name}.xml"));
        let reserved_mib = (PATTERN >> 20) as u64;
        fs::write(&xml, domain_xml(&lab, &work, dir, name, 256, reserved_mib)).unwrap();
        xml.display().to_string()
    };
    libvirtd.ok(&["create", &xml_of("kup-guest")]);
    libvirtd.ok(&["define", &xml_of("kup-off")]);
    guests::wait_ready(&dir.join("kup-guest.serial"), "kup-guest");
    eprintln!("guest ready after {:?}", started.elapsed());

    let seed = u64::from(std::process::id()) ^ started.elapsed().as_nanos() as u64;
    let pattern = guests::pattern(seed, PATTERN);
    let digest = sha256(&pattern);
    libvirtd.write("kup-guest", RESERVED_START, &pattern);
    assert_eq!(
        sha256(&libvirtd.read("kup-guest", RESERVED_START, PATTERN)),
        digest
    );
    let old_pid = libvirtd.pid("kup-guest");
    let uri = libvirtd.uri.clone();

    // `kup plan init --libvirt-uri` lists the running domain on that connection (not the shut-off one), names the
    // connection in the plan, and does not take the domain's QEMU for a QMP guest of its own.
    let init = Kup::new()
        .args(["plan", "init", "--libvirt-uri", &uri, "--kernel"])
        .arg(&lab.kernel)
        .run()
        .success()
        .stdout();
    // The domain's [[vm]] block, up to the next blank line: its libvirt key, then its connection.
    let block = init
        .split("\n\n")
        .find(|b| b.contains("libvirt = \"kup-guest\"\n"))
        .unwrap_or_else(|| panic!("no [[vm]] for the domain in:\n{init}"));
    let connection = format!("libvirt_uri = {}", toml::Value::String(uri.clone()));
    assert!(
        block.lines().any(|l| l == connection),
        "no {connection:?} in its block:\n{block}"
    );
    assert!(
        !init.contains("kup-off"),
        "a shut-off domain is listed:\n{init}"
    );
    assert_eq!(
        init.matches("kup-guest").count(),
        2,
        "the domain once (its name and libvirt keys), no QMP guest for its QEMU:\n{init}"
    );

    // Refused at preflight, before anything pauses: the guest keeps running in the same QEMU, and no state is saved.
    // A domain that does not exist, and one that is defined but shut off, beside the running guest.
    for (name, domain, says) in [
        (
            "ghost",
            "kup-no-such-domain",
            ["domstate kup-no-such-domain", "failed to get domain"],
        ),
        (
            "off",
            "kup-off",
            [
                "domstate kup-off",
                "printed \"shut off\", expected \"running\"",
            ],
        ),
    ] {
        let refused = plan(&lab, dir, &uri, &[("guest", "kup-guest"), (name, domain)]);
        let run = rehearse(&refused).status(5);
        let err = run.stderr();
        eprintln!("refused:\n{err}");
        assert!(says.iter().all(|part| err.contains(part)), "{err}");
    }
    assert_eq!(libvirtd.domstate("kup-guest"), "running");
    assert_eq!(libvirtd.pid("kup-guest"), old_pid);
    assert!(!dir.join("state/guest/libvirt.save").exists());
    assert!(!dir.join("state/guest/libvirt.save.partial").exists());
    eprintln!("refusals done after {:?}", started.elapsed());

    // A step after the save fails before the kexec: the rollback restores the saved image (`virsh restore`, not
    // paused), in a new QEMU; the image stays where it is.
    let handover = plan(&lab, dir, &uri, &[("guest", "kup-guest")]);
    let failing = format!(
        "{handover}\n[[step]]\nname = \"fails\"\nrun = [\"false\"]\nafter = [\"vm:guest:save\"]\nbefore = [\"kexec\"]\n"
    );
    let t = Instant::now();
    let run = rehearse(&failing).status(5);
    eprintln!("rolled back in {:?}:\n{}", t.elapsed(), run.stderr());
    assert!(
        run.stderr().contains("undone vm:guest:save"),
        "{}",
        run.stderr()
    );
    assert_eq!(libvirtd.domstate("kup-guest"), "running");
    // Its blackout: `virsh save` starting → the save's undo (`virsh restore`) running it again.
    let b = blackout(dir);
    assert_eq!(
        support::cli::field_of_each(&b["parts"], "name"),
        ["pause_save", "until_rollback"],
        "{b:#}"
    );
    support::cli::assert_rehearsed_blackout_adds_up(&b);
    let rolled_back_pid = libvirtd.pid("kup-guest");
    assert_ne!(rolled_back_pid, old_pid);
    assert_eq!(
        sha256(&libvirtd.read("kup-guest", RESERVED_START, PATTERN)),
        digest,
        "the guest's RAM after the rollback"
    );
    assert!(dir.join("state/guest/libvirt.save").exists());
    let old_pid = rolled_back_pid;

    // The hand-over: save, (no kexec), restore paused, resume, verify.
    let t = Instant::now();
    let run = rehearse(&handover).success();
    eprintln!(
        "rehearsal took {:?} (test at {:?}):\n{}",
        t.elapsed(),
        started.elapsed(),
        run.stderr()
    );
    assert_eq!(libvirtd.domstate("kup-guest"), "running");
    // Its blackout: `virsh save` starting → `virsh resume` returning, on this kernel's clock, inside the downtime.
    let b = blackout(dir);
    assert_eq!(
        support::cli::field_of_each(&b["parts"], "name"),
        ["pause_save", "until_restore", "restore", "resume"],
        "{b:#}"
    );
    support::cli::assert_rehearsed_blackout_adds_up(&b);
    assert!(
        b["notes"].is_null(),
        "virsh's start and end were journaled: {b:#}"
    );
    let new_pid = libvirtd.pid("kup-guest");
    assert_ne!(new_pid, old_pid, "the guest runs in a new QEMU");
    assert!(!guests::alive(old_pid), "virsh save ended the old QEMU");
    assert_eq!(
        sha256(&libvirtd.read("kup-guest", RESERVED_START, PATTERN)),
        digest,
        "the guest's RAM after the restore"
    );
    // verify removed the state file once the guest ran again; the preflight had kept the rollback's aside.
    assert!(!dir.join("state/guest/libvirt.save").exists());
    assert!(dir.join("state/guest/libvirt.save.kept-1").exists());
    assert!(!dir.join("state/guest/libvirt.save.partial").exists());
    // `virsh resume` of a running domain is an error, not a no-op: a resume step run again after an interruption
    // fails (docs/drivers.md).
    let again = libvirtd.virsh(&["resume", "kup-guest"]);
    eprintln!(
        "virsh resume of a running domain: {}, {}",
        again.status,
        String::from_utf8_lossy(&again.stderr).trim()
    );
    assert!(!again.status.success());
    assert_eq!(libvirtd.domstate("kup-guest"), "running");
    eprintln!("test took {:?}", started.elapsed());
}
