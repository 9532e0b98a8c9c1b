//! Running programs from plans: argv only (never a shell), in their own process group so a timeout kills the whole
//! tree, with the tail of their output kept for the error message.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a failing command's output goes into its error message.
const TAIL: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub duration_ms: u64,
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// Runs `argv` to completion or until `timeout`; a non-zero exit or a timeout is an error naming the command.
pub fn run(argv: &[String], timeout: Duration) -> Result<Outcome, String> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_owned())?;
    let shown = argv.join(" ");
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    // Drain both pipes on threads so a chatty program cannot block on a full pipe.
    let (sender, output_rx) = std::sync::mpsc::channel();
    let pipes: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let pipe_count = pipes.len();
    for mut pipe in pipes {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = sender.send(buf);
        });
    }
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for `{shown}`: {e}")),
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(format!(
                "`{shown}` did not finish within {} ms and was killed",
                timeout.as_millis()
            ));
        }
    };
    // A program that leaves a daemon behind (QEMU's -daemonize) may hand it the pipes: wait briefly, not forever.
    let mut output = Vec::new();
    for _ in 0..pipe_count {
        match output_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(bytes) => output.extend(bytes),
            Err(_) => break,
        }
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match status.code() {
        Some(0) => Ok(Outcome {
            status: 0,
            duration_ms,
        }),
        Some(code) => Err(format!(
            "`{shown}` exited with status {code}: {}",
            tail(&output)
        )),
        None => Err(format!(
            "`{shown}` was killed by a signal: {}",
            tail(&output)
        )),
    }
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
        assert!(err.contains("status 3") && err.contains("boom"), "{err}");
        let started = Instant::now();
        let err = run(&argv(&["sleep", "10"]), Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            run(&argv(&["/nonexistent/program"]), Duration::from_secs(1))
                .unwrap_err()
                .contains("cannot run")
        );
    }
}
