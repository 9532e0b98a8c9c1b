//! The commands' one error type: what went wrong, and the exit code (docs/exit-codes.md) it ends the process with.
//! Commands return it; `cli::main` prints it once, on stderr, and exits with its code.

use crate::exit;
use std::fmt;

/// Why a command did not succeed. Every variant but [`CommandError::Reported`] carries the message to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// Bad usage or an I/O error (exit 2).
    Usage(String),
    /// `apply` / `resume` refused to start; nothing was changed (exit 3).
    Refused(String),
    /// Another apply or resume holds the journal lock (exit 4).
    Locked(String),
    /// A step before the kexec failed and everything was rolled back (exit 5).
    RolledBack(String),
    /// The update needs an operator (exit 6).
    NeedsOperator(String),
    /// The command already reported what is wrong (a plan's diagnostics, an exit code passed through); only the
    /// exit code is left to give.
    Reported(u8),
}

impl CommandError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => exit::USAGE_OR_IO,
            CommandError::Refused(_) => exit::REFUSED,
            CommandError::Locked(_) => exit::LOCKED,
            CommandError::RolledBack(_) => exit::ROLLED_BACK,
            CommandError::NeedsOperator(_) => exit::NEEDS_OPERATOR,
            CommandError::Reported(code) => *code,
        }
    }

    /// An invalid plan whose diagnostics were printed.
    pub(crate) fn invalid_plan() -> Self {
        CommandError::Reported(exit::INVALID_PLAN)
    }

    /// Prints the error on stderr, once. Writing cannot panic: with `policy.isolate`, the terminal kup was started
    /// from may be gone.
    pub(crate) fn report(&self) {
        use std::io::Write as _;
        if !matches!(self, CommandError::Reported(_)) {
            let _ = writeln!(std::io::stderr(), "{self}");
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Refused(m) => write!(f, "kup: refused: {m}"),
            CommandError::RolledBack(m) => write!(f, "kup: error: rolled back: {m}"),
            CommandError::Usage(m) | CommandError::Locked(m) | CommandError::NeedsOperator(m) => {
                write!(f, "kup: error: {m}")
            }
            CommandError::Reported(code) => write!(f, "exit status {code}"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What a command returns.
pub(crate) type CommandResult = Result<(), CommandError>;
