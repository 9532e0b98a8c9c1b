//! One file per subcommand: each turns parsed arguments into output and an exit code, keeping `cli` declarative.

pub(crate) mod abort;
pub(crate) mod apply;
mod boot_compare;
pub(crate) mod boot_time;
pub(crate) mod completions;
pub(crate) mod dry_run;
mod error;
pub(crate) mod explain;
mod fan_out;
pub(crate) mod graph;
mod guard;
pub(crate) mod init;
pub(crate) mod man;
mod metrics;
pub(crate) mod resume;
pub mod schema;
pub(crate) mod status;
pub mod validate;

pub(crate) use error::{CommandError, CommandResult};

use std::io::IsTerminal;

/// Writes a command's output to stdout. A reader that stops early (`| head`) is its choice, not an error worth a
/// message: the exit code still says how the command went. Any other write error is an I/O error.
pub(crate) fn write_stdout(text: &str) -> CommandResult {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CommandError::Usage(format!("cannot write to stdout: {e}"))),
    }
}

/// Colour on stdout only on a terminal, and never when `NO_COLOR` is set.
pub(crate) fn stdout_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// A report as pretty JSON with a trailing newline.
pub(crate) fn pretty_json(value: &impl serde::Serialize) -> Result<String, CommandError> {
    serde_json::to_string_pretty(value)
        .map(|json| json + "\n")
        .map_err(|e| CommandError::Usage(format!("cannot serialise the report: {e}")))
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (<https://no-color.org>).
pub(crate) fn stderr_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Width for wrapped human output: the terminal's if known, else a fixed 100 so logs and snapshots are stable.
pub(crate) fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(100)
}
