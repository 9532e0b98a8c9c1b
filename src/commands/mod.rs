//! One file per subcommand: each turns parsed arguments into output and an exit code, keeping `cli` declarative.

pub(crate) mod apply;
mod boot_compare;
pub(crate) mod boot_time;
pub(crate) mod dry_run;
mod error;
pub(crate) mod graph;
mod guard;
pub(crate) mod resume;
pub mod schema;
pub(crate) mod status;
pub mod validate;

pub(crate) use error::{CommandError, CommandResult};

use std::io::IsTerminal;

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
