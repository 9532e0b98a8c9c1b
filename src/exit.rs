//! Stable exit codes, in one place so that scripts and docs/exit-codes.md can rely on them.

use std::process::ExitCode;

/// Everything asked for succeeded (every plan valid).
pub(crate) const SUCCESS: u8 = 0;
/// At least one plan is invalid (validation errors were reported).
pub(crate) const INVALID_PLAN: u8 = 1;
/// Bad command-line usage, or an I/O error such as an unreadable file.
pub(crate) const USAGE_OR_IO: u8 = 2;
/// `apply`/`resume` refused to start: wrong host, unsafe permissions, not root, no confirmation, a changed plan, or
/// an earlier apply still pending. Nothing was changed.
pub(crate) const REFUSED: u8 = 3;
/// Another `apply` or `resume` holds the journal lock.
pub(crate) const LOCKED: u8 = 4;
/// A step failed before the kexec and everything done was rolled back: the host is as it was.
pub(crate) const ROLLED_BACK: u8 = 5;
/// The update failed and needs an operator: a failure after the kexec, a rollback that did not complete,
/// `policy.on_failure = "stop"`, or an interrupted step that is not safe to re-run. `kup plan status` says what.
pub(crate) const NEEDS_OPERATOR: u8 = 6;

pub(crate) fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
