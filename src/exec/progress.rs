//! What the operator watches during an apply: on a terminal a live line per running step with its elapsed time
//! (indicatif), elsewhere (a log, a systemd unit) plain timestamped lines. Always on stderr.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    started: Instant,
    live: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl Progress {
    /// Live lines when stderr is a terminal (and `NO_COLOR`/`TERM=dumb` do not ask for plain output).
    pub(crate) fn new() -> Self {
        let plain = !std::io::stderr().is_terminal()
            || crate::host::machine::env("TERM").is_some_and(|t| t == "dumb")
            || crate::host::machine::env("KUP_PLAIN_PROGRESS").is_some();
        let live = (!plain).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Self {
            started: Instant::now(),
            live,
        }
    }

    /// Plain lines whatever stderr is (tests, and engines run inside other commands).
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn plain() -> Self {
        Self {
            started: Instant::now(),
            live: None,
        }
    }

    fn line(&self, text: &str) {
        let line = format!(
            "kup [{:>8.3}s] {text}",
            self.started.elapsed().as_secs_f64()
        );
        match &self.live {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            // The caller's terminal may be gone (an isolate stopped the SSH session): losing progress lines is
            // fine, dying of them mid-update is not.
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    pub(crate) fn note(&self, text: &str) {
        self.line(text);
    }

    pub(crate) fn start(&self, step: &str) {
        match &self.live {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed_precise}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(step.to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                if let Ok(mut bars) = bars.lock() {
                    bars.insert(step.to_owned(), bar);
                }
            }
            None => self.line(&format!("start {step}")),
        }
    }

    fn finish(&self, step: &str, text: &str) {
        if let Some((multi, bars)) = &self.live
            && let Some(bar) = bars.lock().ok().and_then(|mut b| b.remove(step))
        {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
        self.line(text);
    }

    pub(crate) fn done(&self, step: &str, took: Duration) {
        self.finish(step, &format!("done  {step} ({} ms)", took.as_millis()));
    }

    pub(crate) fn failed(&self, step: &str, error: &str) {
        self.finish(step, &format!("FAIL  {step}: {error}"));
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
