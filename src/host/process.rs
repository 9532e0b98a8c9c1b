//! Running programs from plans: argv only (never a shell), in their own process group so a timeout kills the whole
//! tree, with the tail of their output kept for the error message.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a failing command's output goes into its error message.
const TAIL: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: i32,
    pub(crate) duration_ms: u64,
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// What a finished program left: its exit code (`None`: killed by a signal), stdout, and the tail of both streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) tail: String,
    pub(crate) duration_ms: u64,
}

/// Why a program did not run to a zero exit status; each message names the command as it would be typed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The argv was empty.
    #[error("empty command")]
    Empty,
    /// The program is not on `PATH` (or not at the path given).
    #[error("cannot run `{shown}`: `{program}` is not installed (not found on PATH{path})")]
    NotInstalled {
        /// The command line.
        shown: String,
        /// Its argv\[0\].
        program: String,
        /// ` ` + `PATH`, when set.
        path: String,
    },
    /// The program could not be started.
    #[error("cannot run `{shown}`: {reason}")]
    Spawn {
        /// The command line.
        shown: String,
        /// Why.
        reason: String,
    },
    /// Waiting for it failed.
    #[error("waiting for `{shown}`: {source}")]
    Wait {
        /// The command line.
        shown: String,
        /// The error.
        source: std::io::Error,
    },
    /// It ran out of time and was killed with its whole process group.
    #[error("`{shown}` did not finish within {ms} ms and was killed")]
    TimedOut {
        /// The command line.
        shown: String,
        /// The limit.
        ms: u128,
    },
    /// The program could be replaced by another user than root (checked right before it is started).
    #[error(transparent)]
    Untrusted(Box<super::trust::TrustError>),
    /// It exited with another status than 0.
    #[error("`{shown}` exited with status {code}: {tail}")]
    Exited {
        /// The command line.
        shown: String,
        /// Its status.
        code: i32,
        /// The end of its output.
        tail: String,
    },
    /// A signal ended it.
    #[error("`{shown}` was killed by a signal: {tail}")]
    Killed {
        /// The command line.
        shown: String,
        /// The end of its output.
        tail: String,
    },
}

/// Runs `argv` to completion or until `timeout`; a non-zero exit or a timeout is an error naming the command.
pub(crate) fn run(argv: &[String], timeout: Duration) -> Result<Outcome, ProcessError> {
    let shown = argv.join(" ");
    let captured = capture(argv, timeout)?;
    match captured.code {
        Some(0) => Ok(Outcome {
            status: 0,
            duration_ms: captured.duration_ms,
        }),
        Some(code) => Err(ProcessError::Exited {
            shown,
            code,
            tail: captured.tail,
        }),
        None => Err(ProcessError::Killed {
            shown,
            tail: captured.tail,
        }),
    }
}

// Long by design: spawn, drain both pipes, wait with a deadline, kill the group: one lifetime of a child process.
/// Runs `argv` to completion or until `timeout` and returns what it printed, whatever its exit status; only a
/// program that cannot start or does not finish is an error.
pub(crate) fn capture(argv: &[String], timeout: Duration) -> Result<Captured, ProcessError> {
    let (program, args) = argv.split_first().ok_or(ProcessError::Empty)?;
    let shown = argv.join(" ");
    // Checked right before the exec, as well as at preflight: the file started is the one found trusted (a bare
    // name resolved once, here), and it is still named argv[0] as the plan wrote it.
    let resolved = match super::trust::check_executable(program) {
        Ok(path) => path,
        Err(super::trust::TrustError::NotFound { .. }) => std::path::PathBuf::from(program),
        Err(e) => return Err(ProcessError::Untrusted(Box::new(e))),
    };
    let started = Instant::now();
    let mut child = Command::new(&resolved)
        .arg0(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProcessError::NotInstalled {
                shown: shown.clone(),
                program: program.clone(),
                path: std::env::var("PATH")
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
            },
            std::io::ErrorKind::PermissionDenied => ProcessError::Spawn {
                shown: shown.clone(),
                reason: format!("`{program}` is not executable: {e}"),
            },
            _ => ProcessError::Spawn {
                shown: shown.clone(),
                reason: e.to_string(),
            },
        })?;
    // Drain both pipes on threads so a chatty program cannot block on a full pipe.
    let (sender, output_rx) = std::sync::mpsc::channel();
    let pipes: Vec<(bool, Box<dyn Read + Send>)> = [
        child
            .stdout
            .take()
            .map(|s| (true, Box::new(s) as Box<dyn Read + Send>)),
        child
            .stderr
            .take()
            .map(|s| (false, Box::new(s) as Box<dyn Read + Send>)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let pipe_count = pipes.len();
    for (is_stdout, mut pipe) in pipes {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = sender.send((is_stdout, buf));
        });
    }
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => return Err(ProcessError::Wait { shown, source }),
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(ProcessError::TimedOut {
                shown,
                ms: timeout.as_millis(),
            });
        }
    };
    // A program that leaves a daemon behind (QEMU's -daemonize) may hand it the pipes: wait briefly, not forever.
    let mut output = Vec::new();
    let mut stdout = Vec::new();
    for _ in 0..pipe_count {
        match output_rx.recv_timeout(Duration::from_secs(1)) {
            Ok((is_stdout, bytes)) => {
                if is_stdout {
                    stdout.extend_from_slice(&bytes);
                }
                output.extend(bytes);
            }
            Err(_) => break,
        }
    }
    Ok(Captured {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        tail: tail(&output),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn success_failure_and_timeout() {
        assert_eq!(
            run(&argv(&["true"]), Duration::from_secs(5))
                .unwrap()
                .status,
            0
        );
        let err = run(
            &argv(&["sh", "-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("status 3") && err.to_string().contains("boom"),
            "{err}"
        );
        let started = Instant::now();
        let err = run(&argv(&["sleep", "10"]), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            run(&argv(&["/nonexistent/program"]), Duration::from_secs(1))
                .unwrap_err()
                .to_string()
                .contains("is not installed")
        );
    }

    #[test]
    fn capture_keeps_stdout_whatever_the_status() {
        let c = capture(
            &argv(&["sh", "-c", "echo inactive; echo noise >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(c.code, Some(3));
        assert_eq!(c.stdout.trim(), "inactive");
        assert!(c.tail.contains("noise"));
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-ran");
        // The grandchild would write the marker after the timeout if it survived its parent's kill.
        let script = format!("(sleep 1; touch {}) & sleep 10", marker.display());
        let err = run(&argv(&["sh", "-c", &script]), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("killed"), "{err}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the grandchild outlived the timeout");
    }
}
