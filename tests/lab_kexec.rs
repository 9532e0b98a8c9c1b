//! kup updates a kernel for real, end to end, inside lab guests: a busybox initramfs with a static musl kup boots the
//! Debian cloud kernel under QEMU (TCG), applies a plan that kexecs into the same kernel with a new command line,
//! and resumes on the other side. Each test runs one `lab/scenario/run` scenario (see that script and
//! `lab/scenario/init`) and then reads the guest's NVMe disk back on the host with `lab/readdisk`.
//!
//! Needs `lab/setup`. Without it these tests fail and say so: a lab that is silently skipped proves nothing. The
//! runner builds the static kup itself (`cargo build --release --target x86_64-unknown-linux-musl`), so the guest
//! always runs the code under test. Outputs (console logs, the disk image) stay in `target/lab/runs/<scenario>/`
//! for a post-mortem; a failing assertion prints the guest console.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The lab cache, as `lab/env.sh` finds it.
struct Lab {
    repo: PathBuf,
    dir: PathBuf,
}

impl Lab {
    fn get() -> Lab {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var_os("KUP_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/lab"));
        assert!(
            dir.join("ready").is_file() && dir.join("kernel/version").is_file(),
            "the lab is not set up in {}: run `lab/setup` (as root; it fetches QEMU, the Debian cloud kernel and \
             busybox into target/lab/), then run the tests again",
            dir.display()
        );
        Lab { repo, dir }
    }

    fn script(&self, name: &str) -> Command {
        let mut command = Command::new(self.repo.join("lab").join(name));
        command.env("KUP_LAB_DIR", &self.dir);
        command
    }

    fn kernel_version(&self) -> String {
        fs::read_to_string(self.dir.join("kernel/version"))
            .expect("kernel/version")
            .trim()
            .to_owned()
    }

    /// Runs a scenario to completion (the guest powered off) and returns what it left behind.
    fn scenario(&self, name: &str) -> Run {
        let out = self.dir.join("runs").join(name);
        let started = Instant::now();
        let output = self
            .script("scenario/run")
            .args(["--quiet", "--timeout", "120", "--retry", "1", name])
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run lab/scenario/run: {e}"));
        let run = Run {
            lab_dir: self.dir.clone(),
            repo: self.repo.clone(),
            out: out.clone(),
            disk: out.join("disk.img"),
        };
        eprintln!(
            "lab/scenario/run {name}: {:.1} s, {}",
            started.elapsed().as_secs_f64(),
            output.status
        );
        assert!(
            output.status.success(),
            "lab/scenario/run {name} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            run.consoles()
        );
        run
    }
}

/// One scenario's outputs: its directory, the guest's disk image, the console logs.
struct Run {
    lab_dir: PathBuf,
    repo: PathBuf,
    out: PathBuf,
    disk: PathBuf,
}

impl Run {
    /// The console logs of every boot of this run, for failure messages.
    fn consoles(&self) -> String {
        ["console.log", "console-2.log"]
            .iter()
            .filter_map(|name| {
                let text = fs::read_to_string(self.out.join(name)).ok()?;
                Some(format!("--- guest console {name}:\n{text}"))
            })
            .collect()
    }

    /// A file from the guest's disk; `None` when it does not exist.
    fn file(&self, path: &str) -> Option<String> {
        let output = Command::new(self.repo.join("lab/readdisk"))
            .env("KUP_LAB_DIR", &self.lab_dir)
            .arg(&self.disk)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run lab/readdisk: {e}"));
        match output.status.code() {
            Some(0) => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
            Some(1) if String::from_utf8_lossy(&output.stderr).contains(path) => None,
            _ => panic!(
                "lab/readdisk {} {path} failed ({}): {}",
                self.disk.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// A file the guest must have written.
    fn must(&self, path: &str) -> String {
        self.file(path).unwrap_or_else(|| {
            panic!(
                "the guest did not write {path} on its disk\n{}",
                self.consoles()
            )
        })
    }

    /// A JSON file the guest must have written.
    fn json(&self, path: &str) -> Value {
        let text = self.must(path);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} is not JSON ({e}):\n{text}\n{}", self.consoles()))
    }

    /// The boots the guest recorded: (boot_id, kernel release) per boot, in order.
    fn boots(&self) -> Vec<(String, String)> {
        self.must("/lab/boots.log")
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(fields.len(), 3, "bad boots.log line {line:?}");
                (fields[1].to_owned(), fields[2].to_owned())
            })
            .collect()
    }
}

/// The step ids of a dry-run or status JSON, in order.
fn step_ids(json: &Value) -> Vec<String> {
    json["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {json:#}"))
        .iter()
        .map(|step| step["id"].as_str().expect("step id").to_owned())
        .collect()
}

/// The guest itself validates the lab plan, dry-runs it against its own /proc/cmdline and reads its kernel log:
/// the static kup works in the initramfs, and the plan the kexec scenarios apply is the one intended.
#[test]
fn guest_validates_and_dry_runs_the_lab_plan() {
    let lab = Lab::get();
    let run = lab.scenario("probe");
    let context = run.consoles();

    assert_eq!(run.boots().len(), 1, "{context}");
    assert_eq!(run.boots()[0].1, lab.kernel_version());
    assert_eq!(run.must("/lab/cmdline.1").trim(), "console=ttyS0 panic=-1");
    assert_eq!(
        run.must("/lab/validate.rc").trim(),
        "0",
        "{}",
        run.must("/lab/validate.txt")
    );

    assert_eq!(run.must("/lab/dry-run.rc").trim(), "0", "{context}");
    let dry_run = run.json("/lab/dry-run.json");
    assert_eq!(
        dry_run["kernel_cmdline"], "console=ttyS0 panic=-1 cpuhp.parallel=1 kup.stage=2",
        "the new command line is the running one with the plan's edits"
    );
    let ids = step_ids(&dry_run);
    for id in [
        "preflight",
        "kernel:load",
        "step:before-kexec",
        "kexec",
        "step:after-kexec",
    ] {
        assert!(ids.iter().any(|s| s == id), "no step {id} in {ids:?}");
    }
    let position = |id: &str| ids.iter().position(|s| s == id).unwrap();
    assert!(position("step:before-kexec") < position("kexec"));
    assert!(position("kexec") < position("step:after-kexec"));
    let load = &dry_run["steps"][position("kernel:load")]["actions"][0];
    assert_eq!(load["action"], "kexec_file_load", "{load:#}");
    assert_eq!(
        load["kernel"],
        format!("/mnt/disk/boot/vmlinuz-{}", lab.kernel_version())
    );

    assert_eq!(run.must("/lab/boot-time.rc").trim(), "0");
    let boot = run.json("/lab/boot-time.json");
    assert_eq!(boot["kernel"], lab.kernel_version().as_str());
    assert_eq!(boot["cpus"], 1);
    let to_init = boot["time_to_init_s"].as_f64().expect("time_to_init_s");
    assert!(to_init > 0.1 && to_init < 60.0, "{boot:#}");

    assert_eq!(
        run.must("/lab/kexec_loaded.1").trim(),
        "0",
        "a dry run loads nothing"
    );
    assert!(run.file("/lab/before-kexec.log").is_none());
    assert!(!Path::new(&run.out).join("console-2.log").exists());
}
