//! The `kup` binary as a test runs it, in one chain that reads like the session it stands for:
//!
//! ```ignore
//! Kup::new()
//!     .args(["plan", "validate"])
//!     .plan("kup = 1\n…")
//!     .run()
//!     .status(1)
//!     .stderr_has("kup::plan::unknown-key");
//! ```
//!
//! [`Kup`] builds the command: without colour (`NO_COLOR=1`) and at the default width (no `COLUMNS`), from the
//! repository's root, with files (a plan) in a temporary directory of its own. [`Kup::run`] waits for it and
//! returns a [`Run`], whose assertions chain and, when one fails, print the command with everything it printed.

#![allow(dead_code)] // each test binary uses a different part

use kup::action::shell_quote;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A `kup` command being put together; nothing runs until [`Kup::run`] or [`Kup::spawn`].
pub struct Kup {
    command: Command,
    /// The command line as the failure messages show it.
    shown: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    /// Where [`Kup::file`] and [`Kup::plan`] write: created on first use, removed with the [`Run`].
    files: Option<tempfile::TempDir>,
    /// Passed after every other argument.
    plan: Option<PathBuf>,
}

impl Default for Kup {
    fn default() -> Self {
        Kup::new()
    }
}

impl Kup {
    /// The `kup` that cargo built for this test.
    pub fn new() -> Kup {
        Kup::at(assert_cmd::cargo::cargo_bin("kup"))
    }

    /// The `kup` binary at `program` (a benchmark's release build).
    pub fn at(program: impl AsRef<Path>) -> Kup {
        let mut command = Command::new(program.as_ref());
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env_remove("COLUMNS")
            // Only a test that means it (`crash_after_record`) has kup kill itself.
            .env_remove("KUP_FAULT_CRASH_AFTER_RECORD");
        Kup {
            command,
            shown: vec!["kup".to_owned()],
            stdin: None,
            timeout: None,
            files: None,
            plan: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Kup {
        self.shown.push(shell_quote(Path::new(arg.as_ref())));
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(self, args: I) -> Kup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Kup::arg)
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Kup {
        self.command.env(key, value);
        self
    }

    /// Has kup (built with the `fault-injection` feature) SIGKILL itself right after writing the journal record
    /// `record`: its number, or the first record of that event (`kexec`, `step-started:ID`, `step-done:ID`).
    pub fn crash_after_record(self, record: impl AsRef<OsStr>) -> Kup {
        self.env("KUP_FAULT_CRASH_AFTER_RECORD", record)
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Kup {
        self.command.env_remove(key);
        self
    }

    /// Runs it in `dir` instead of the repository's root.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Kup {
        self.command.current_dir(dir);
        self
    }

    /// What it reads on standard input; without it, standard input is empty.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Kup {
        self.stdin = Some(bytes.into());
        self
    }

    /// Killed if it has not exited after `limit`.
    pub fn timeout(mut self, limit: Duration) -> Kup {
        self.timeout = Some(limit);
        self
    }

    /// Writes `contents` to `name` (a relative path; its directories are created) in the command's own temporary
    /// directory, mode 0600: kup refuses plans that group or others may write.
    pub fn file(mut self, name: &str, contents: impl AsRef<[u8]>) -> Kup {
        let path = self.files_dir().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        self
    }

    /// The plan `text`, written as `plan.toml` into the command's temporary directory and passed as its last
    /// argument.
    pub fn plan(self, text: &str) -> Kup {
        let mut kup = self.file("plan.toml", text);
        kup.plan = Some(kup.files_dir().join("plan.toml"));
        kup
    }

    /// Runs `plan status --format json --journal JOURNAL`, which must succeed: the status it printed.
    pub fn status_json(self, journal: impl AsRef<OsStr>) -> serde_json::Value {
        self.args(["plan", "status", "--format", "json", "--journal"])
            .arg(journal)
            .run()
            .success()
            .stdout_json()
    }

    /// The command's temporary directory (what [`Kup::file`] wrote, or empty) as the next argument.
    pub fn dir_arg(mut self) -> Kup {
        let dir = self.files_dir();
        self.arg(dir)
    }

    fn files_dir(&mut self) -> PathBuf {
        self.files
            .get_or_insert_with(|| {
                tempfile::Builder::new()
                    .prefix("kup-cli-")
                    .tempdir()
                    .unwrap()
            })
            .path()
            .to_owned()
    }

    fn finish(mut self) -> (Command, Prepared) {
        if let Some(plan) = self.plan.take() {
            self = self.arg(plan);
        }
        let prepared = Prepared {
            shown: self.shown.join(" "),
            stdin: self.stdin,
            timeout: self.timeout,
            files: self.files,
        };
        (self.command, prepared)
    }

    /// Runs it to the end and collects its exit status, standard output and standard error.
    pub fn run(self) -> Run {
        let (command, prepared) = self.finish();
        let mut command = assert_cmd::Command::from_std(command);
        if let Some(stdin) = prepared.stdin {
            command.write_stdin(stdin);
        }
        if let Some(limit) = prepared.timeout {
            command.timeout(limit);
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("`{}` did not start: {e}", prepared.shown));
        Run {
            shown: prepared.shown,
            output,
            _files: prepared.files,
        }
    }

    /// Starts it and returns at once: its standard output is a pipe for the test to read or close, its standard
    /// error is discarded and its standard input is empty.
    pub fn spawn(self) -> Background {
        let (mut command, prepared) = self.finish();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("`{}` did not start: {e}", prepared.shown));
        Background {
            child,
            _files: prepared.files,
        }
    }
}

/// `kup plan apply --rehearse --yes --no-kernel-load` of the plan `text`, as an operator rehearses it on real
/// guests; killed if it has not ended after `limit`.
pub fn rehearse(text: &str, limit: Duration) -> Run {
    Kup::new()
        .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
        .plan(text)
        .timeout(limit)
        .run()
}

/// The string `field` of each element of the JSON array `list` (the steps of a status, the plans of a report).
pub fn field_of_each<'a>(list: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    let all = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    all.iter()
        .map(|e| {
            e[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field} in {e}"))
        })
        .collect()
}

/// A rehearsed guest's blackout in `plan status --format json` (`status["blackout"][NAME]`): every part on the old
/// kernel's clock (nothing was kexec'd), none negative, adding up to its total.
pub fn assert_rehearsed_blackout_adds_up(b: &serde_json::Value) {
    let parts = b["parts"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .all(|p| p["clock"] == "old-realtime" && p["ms"].as_i64() >= Some(0)),
        "{b:#}"
    );
    let sum: i64 = parts.iter().map(|p| p["ms"].as_i64().unwrap()).sum();
    assert_eq!(Some(sum), b["total_ms"].as_i64(), "{b:#}");
}

/// What [`Kup::run`] and [`Kup::spawn`] take over from the builder.
struct Prepared {
    shown: String,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    files: Option<tempfile::TempDir>,
}

/// A `kup` started by [`Kup::spawn`]: the [`Child`] (deref), with the command's files kept until it is dropped.
pub struct Background {
    child: Child,
    _files: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Background {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Background {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// `Run`'s assertions on one stream: each `name => Stream, Holds;` is a method `name(self, text) -> Run` that
/// [`Run::check`]s it.
macro_rules! stream_checks {
    ($($(#[$doc:meta])* $name:ident => $stream:ident, $holds:ident;)*) => {
        $(
            $(#[$doc])*
            #[track_caller]
            pub fn $name(self, text: impl AsRef<str>) -> Run {
                self.check(Stream::$stream, Holds::$holds, text.as_ref())
            }
        )*
    };
}

/// A finished `kup`: its exit status and output, and assertions on them that chain.
pub struct Run {
    shown: String,
    output: Output,
    _files: Option<tempfile::TempDir>,
}

impl Run {
    /// The exit code; `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    #[track_caller]
    pub fn status(self, code: i32) -> Run {
        if self.code() != Some(code) {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    /// Fails unless a signal ended kup (a `crash_after_record` that fired); `what` says which crash.
    #[track_caller]
    pub fn killed(self, what: &str) -> Run {
        if self.code().is_some() {
            self.fail(&format!("{what}: expected kup killed by a signal"));
        }
        self
    }

    #[track_caller]
    pub fn success(self) -> Run {
        if !self.output.status.success() {
            self.fail("expected success");
        }
        self
    }

    stream_checks! {
        /// Standard output contains the text.
        stdout_has => Stdout, Contains;
        /// Standard output does not contain the text.
        stdout_lacks => Stdout, Lacks;
        /// Standard output starts with the text.
        stdout_starts_with => Stdout, StartsWith;
        /// Standard output is exactly the text (`""`: nothing at all).
        stdout_is => Stdout, Is;
        /// Standard error contains the text.
        stderr_has => Stderr, Contains;
        /// Standard error does not contain the text.
        stderr_lacks => Stderr, Lacks;
        /// Standard error is exactly the text (`""`: nothing at all).
        stderr_is => Stderr, Is;
    }

    #[track_caller]
    fn check(self, stream: Stream, holds: Holds, text: &str) -> Run {
        let (name, output) = match stream {
            Stream::Stdout => ("stdout", self.stdout()),
            Stream::Stderr => ("stderr", self.stderr()),
        };
        let (ok, expected) = match holds {
            Holds::Contains => (output.contains(text), "to contain"),
            Holds::Lacks => (!output.contains(text), "not to contain"),
            Holds::StartsWith => (output.starts_with(text), "to start with"),
            Holds::Is => (output == text, "to be exactly"),
        };
        if !ok {
            self.fail(&format!("expected {name} {expected} {text:?}"));
        }
        self
    }

    /// Standard output, which must be UTF-8.
    #[track_caller]
    pub fn stdout(&self) -> String {
        String::from_utf8(self.output.stdout.clone())
            .unwrap_or_else(|_| self.fail("expected stdout to be UTF-8"))
    }

    /// Standard error (bytes that are not UTF-8 replaced).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Standard output parsed as one JSON document.
    #[track_caller]
    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            self.fail(&format!("expected stdout to be one JSON document ({e})"))
        })
    }

    #[track_caller]
    fn fail(&self, expected: &str) -> ! {
        panic!(
            "`{}`: {expected}, but it exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.shown,
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// What [`Run::check`] asserts of a stream's text.
#[derive(Clone, Copy)]
enum Holds {
    Contains,
    Lacks,
    StartsWith,
    Is,
}
