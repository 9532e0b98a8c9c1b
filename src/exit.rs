//! Stable exit codes, in one place so that scripts and docs/exit-codes.md can rely on them.

use std::process::ExitCode;

/// Everything asked for succeeded (every plan valid).
pub const SUCCESS: u8 = 0;
/// At least one plan is invalid (validation errors were reported).
pub const INVALID_PLAN: u8 = 1;
/// Bad command-line usage, or an I/O error such as an unreadable file.
pub const USAGE_OR_IO: u8 = 2;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
