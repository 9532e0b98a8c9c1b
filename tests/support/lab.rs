//! The lab cache the lab tests boot their guests from (`tests/lab_*.rs` include this file with `#[path]`, and
//! `guests.rs` does for where the lab is).

#![allow(dead_code)] // each lab test binary uses a different part

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lab cache, as `lab/env.sh` finds it.
pub struct Lab {
    /// This repository (its `lab/` scripts).
    pub repo: PathBuf,
    /// `target/lab` or `$KUP_LAB_DIR`.
    pub dir: PathBuf,
}

/// This repository and its lab cache (`$KUP_LAB_DIR`, else `target/lab`), where `lab/env.sh` looks.
pub fn repo_and_dir() -> (PathBuf, PathBuf) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("KUP_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/lab"));
    (repo, dir)
}

impl Lab {
    /// The lab of this repository, or a panic that tells how to set it up.
    pub fn get() -> Lab {
        let (repo, dir) = repo_and_dir();
        Lab::locate(&repo, &dir).unwrap_or_else(|message| panic!("{message}"))
    }

    /// The lab in `dir`, or why there is none.
    pub fn locate(repo: &Path, dir: &Path) -> Result<Lab, String> {
        if !dir.join("ready").is_file() || !dir.join("kernel/version").is_file() {
            return Err(format!(
                "the lab is not set up in {}: run `lab/setup` (as root; it fetches QEMU, the Debian cloud kernel \
                 and busybox into target/lab/), then run the tests again",
                dir.display()
            ));
        }
        Ok(Lab {
            repo: repo.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }

    /// A lab script (`lab/NAME`) with the lab directory this test uses.
    pub fn script(&self, name: &str) -> Command {
        let mut command = Command::new(self.repo.join("lab").join(name));
        command.env("KUP_LAB_DIR", &self.dir);
        command
    }

    /// The release the guests boot first (bookworm's 6.1 cloud kernel).
    pub fn kernel_version(&self) -> String {
        fs::read_to_string(self.dir.join("kernel/version"))
            .expect("kernel/version")
            .trim()
            .to_owned()
    }

    /// The release the plans kexec into (`$LAB_NEW_KERNEL_VERSION`).
    pub fn new_kernel_version(&self) -> String {
        let version = fs::read_to_string(self.dir.join("new-kernel/version"))
            .expect("new-kernel/version: run lab/setup")
            .trim()
            .to_owned();
        assert_ne!(version, self.kernel_version(), "the lab must upgrade");
        version
    }
}

/// `what` (a lab script) exited 0, or a panic with its standard error.
#[track_caller]
pub fn assert_succeeded(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whatever fails while a run is in scope (an assertion, a missing file), the guest's console is printed with it.
impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.consoles());
        }
    }
}

/// A console log as text: the serial console may carry bytes that are not UTF-8 (firmware output, a character cut
/// in two by systemd's line truncation).
pub fn read_lossy(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// One scenario's outputs: its directory, the guest's disk image, the console logs.
pub struct Run {
    pub lab_dir: PathBuf,
    pub repo: PathBuf,
    pub out: PathBuf,
    pub disk: PathBuf,
}

impl Run {
    /// The outputs a lab script left in `out` (its disk image as `disk.img`).
    pub fn at(lab: &Lab, out: &Path) -> Run {
        Run {
            lab_dir: lab.dir.clone(),
            repo: lab.repo.clone(),
            out: out.to_path_buf(),
            disk: out.join("disk.img"),
        }
    }

    /// The console logs of every boot of this run, for failure messages.
    pub fn consoles(&self) -> String {
        ["console-cut.log", "console.log", "console-2.log"]
            .iter()
            .filter_map(|name| {
                let text = read_lossy(&self.out.join(name))?;
                Some(format!("--- guest console {name}:\n{text}"))
            })
            .collect()
    }

    /// A file from the guest's disk; `None` when it does not exist.
    pub fn file(&self, path: &str) -> Option<String> {
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
    pub fn must(&self, path: &str) -> String {
        self.file(path)
            .unwrap_or_else(|| panic!("the guest did not write {path} on its disk"))
    }

    /// The lines of [`Run::must`]'s file.
    pub fn must_lines(&self, path: &str) -> Vec<String> {
        self.must(path).lines().map(str::to_owned).collect()
    }

    /// A JSON file the guest must have written.
    pub fn json(&self, path: &str) -> Value {
        let text = self.must(path);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON ({e}):\n{text}"))
    }

    /// The boots the guest recorded: (boot_id, kernel release) per boot, in order.
    pub fn boots(&self) -> Vec<(String, String)> {
        self.boots_in("/lab/boots.log")
    }

    /// [`Run::boots`] from the `boots.log` at `path` (the systemd guests keep theirs in `/var/lib/kup-lab/`).
    pub fn boots_in(&self, path: &str) -> Vec<(String, String)> {
        self.must(path)
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(fields.len(), 3, "bad boots.log line {line:?}");
                (fields[1].to_owned(), fields[2].to_owned())
            })
            .collect()
    }
}

impl Lab {
    /// Runs the lab script `script` (`scenario/run-systemd`, …) with `env`, `args` and `runs/NAME` as its output
    /// directory, and returns what it left there; a script that fails fails the test with its standard error.
    pub fn run_into(&self, script: &str, env: &[(&str, &str)], args: &[&str], name: &str) -> Run {
        let out = self.dir.join("runs").join(name);
        let started = std::time::Instant::now();
        let output = self
            .script(script)
            .envs(env.iter().copied())
            .args(args)
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("cannot run lab/{script}: {e}"));
        eprintln!(
            "lab/{script} {args:?}: {:.1} s, {}",
            started.elapsed().as_secs_f64(),
            output.status
        );
        let run = Run::at(self, &out);
        assert_succeeded(&output, &format!("lab/{script}"));
        run
    }
}

/// An apply's journal (`<root>/<apply dir>/journal.jsonl`) as read back from the guest's disk.
pub struct Journal {
    pub records: Vec<Value>,
}

impl Journal {
    /// The only apply journal under `/kup/journal` on the run's disk.
    pub fn read(run: &Run) -> Journal {
        Journal::read_from(run, "/kup/journal")
    }

    /// The only apply journal under `root` (`policy.journal`) on the run's disk.
    pub fn read_from(run: &Run, root: &str) -> Journal {
        let copy = run.out.join("journal-copy");
        let _ = fs::remove_dir_all(&copy);
        let output = Command::new(run.repo.join("lab/readdisk"))
            .env("KUP_LAB_DIR", &run.lab_dir)
            .arg(&run.disk)
            .arg(root)
            .arg(&copy)
            .output()
            .expect("lab/readdisk");
        assert!(output.status.success(), "{output:?}");
        let applies: Vec<PathBuf> = fs::read_dir(copy.join(Path::new(root).file_name().unwrap()))
            .expect("the journal root was copied")
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("journal.jsonl").is_file())
            .collect();
        assert_eq!(
            applies.len(),
            1,
            "expected exactly one apply journal, found {applies:?}"
        );
        let text = fs::read_to_string(applies[0].join("journal.jsonl")).unwrap();
        let records = text
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad journal line ({e}): {line}"))
            })
            .collect();
        Journal { records }
    }

    pub fn events(&self, event: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// How many records of `event` name `step`.
    pub fn count(&self, event: &str, step: &str) -> usize {
        self.events(event)
            .iter()
            .filter(|r| r["step"] == step)
            .count()
    }

    /// Where the first record of `event` for `step` is in the journal (records are appended in the order they
    /// happened), if there is one.
    pub fn position(&self, event: &str, step: &str) -> Option<usize> {
        self.records
            .iter()
            .position(|r| r["event"] == event && r["step"] == step)
    }

    pub fn text(&self) -> String {
        self.records
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>()
    }
}

/// The host's time stamp (seconds since QEMU started) of the first line of the run's console that contains `text`.
pub fn console_time(run: &Run, text: &str) -> f64 {
    let console = read_lossy(&run.out.join("console.log")).expect("console.log");
    let line = console
        .lines()
        .find(|line| line.contains(text))
        .unwrap_or_else(|| panic!("the console never showed {text:?}:\n{console}"));
    line.strip_prefix("[+")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(stamp, _)| stamp.parse().ok())
        .unwrap_or_else(|| panic!("no time stamp on {line:?}"))
}

/// Fails the test, naming `what` and the whole text, unless `text` contains every one of `needles`.
#[allow(dead_code)] // each test binary uses a different part
pub fn assert_contains_all(text: &str, needles: &[&str], what: &str) {
    let missing: Vec<_> = needles.iter().filter(|n| !text.contains(**n)).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}: {text}");
}
