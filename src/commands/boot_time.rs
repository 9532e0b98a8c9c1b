//! The `kup boot-time` command: where the log comes from, which output format, which exit code. The CLI's
//! dispatch calls `run` and nothing else, so cli.rs stays one line per command.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{CommandError, CommandResult};
use crate::boot::{HostFacts, analyse_with, config};
use crate::host::{kmsg, machine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct BootTimeArgs {
    /// Kernel log to analyse (dmesg, dmesg -T/-x/-r, /dev/kmsg, journalctl -k, kern.log, serial capture);
    /// `-` reads standard input. Without it, the running kernel's log is read from /dev/kmsg (or dmesg).
    #[arg(long, value_name = "FILE|-")]
    pub(crate) dmesg: Option<PathBuf>,
    /// Compare two kernel logs: phases side by side with deltas, and which recommendations appeared, disappeared
    /// or stayed. One of them may be `-` (standard input).
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"], conflicts_with_all = ["dmesg", "journal"])]
    pub(crate) compare: Option<Vec<PathBuf>>,
    /// Compare the boots before and after the apply journaled under DIR (a journal root such as /var/lib/kup, or
    /// one apply's directory).
    #[arg(long, value_name = "DIR", conflicts_with = "dmesg")]
    pub(crate) journal: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub(crate) format: OutputFormat,
}

/// Runs `kup boot-time`: 0 with a report on stdout; 2 when the log cannot be read.
pub(crate) fn run(args: &BootTimeArgs) -> CommandResult {
    if args.compare.is_some() || args.journal.is_some() {
        return super::boot_compare::run(args);
    }
    let (bytes, facts) = read_input(args).map_err(CommandError::Usage)?;
    let report = analyse_with(&bytes, &facts);
    print(args.format, &report, crate::boot::human)
}

/// Writes `value` to stdout in `format`: pretty JSON, or `human`'s text (coloured when stdout is a terminal).
pub(super) fn print<T: serde::Serialize>(
    format: OutputFormat,
    value: &T,
    human: impl FnOnce(&T, bool) -> String,
) -> CommandResult {
    let text = match format {
        OutputFormat::Json => super::pretty_json(value)?,
        OutputFormat::Human => human(value, super::stdout_color()),
    };
    super::write_stdout(&text)
}

/// All of standard input.
pub(super) fn read_stdin() -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(bytes)
}

/// The log bytes, and host facts when (and only when) the log is the live host's own.
fn read_input(args: &BootTimeArgs) -> Result<(Vec<u8>, HostFacts), String> {
    match &args.dmesg {
        Some(path) if path.as_os_str() == "-" => Ok((read_stdin()?, HostFacts::default())),
        Some(path) => std::fs::read(path)
            .map(|b| (b, HostFacts::default()))
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        None => {
            let (bytes, _source) = kmsg::kernel_log()
                .map_err(|e| format!("cannot read the kernel log (/dev/kmsg, dmesg): {e}"))?;
            Ok((
                bytes,
                HostFacts {
                    kernel_config: machine::running_kernel_config()
                        .map(|(path, text)| config::kernel_config(path, &text)),
                },
            ))
        }
    }
}
