//! One file per subcommand: each turns parsed arguments into output and an exit code, keeping `cli` declarative.

pub mod apply;
mod boot_compare;
pub mod boot_time;
pub mod dry_run;
mod error;
pub mod graph;
mod guard;
pub mod resume;
pub mod schema;
pub mod status;
pub mod validate;

pub use error::{CommandError, CommandResult};

use std::io::IsTerminal;

/// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
pub fn stderr_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Width for wrapped human output: the terminal's if known, else a fixed 100 so logs and snapshots are stable.
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(100)
}
