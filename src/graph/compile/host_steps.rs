//! The host-wide steps: `sync`, `isolate` (and its undo), and the plan's own `[[step]]`s.

use super::{COMMAND_TIMEOUT, Compiled, ISOLATE_ROLLBACK_TARGET, exec, hook, ms};
use crate::action::Action;
use crate::plan::CustomStep;

/// `sync`: state durable before the kexec.
pub(super) fn sync() -> Compiled {
    (vec![Action::Sync], Vec::new())
}

/// `isolate`: `systemctl isolate TARGET`, undone by isolating the default target.
pub(super) fn isolate(target: Option<&str>) -> Compiled {
    match target {
        Some(target) => (
            vec![exec(&["systemctl", "isolate", target], COMMAND_TIMEOUT)],
            vec![exec(
                &["systemctl", "isolate", ISOLATE_ROLLBACK_TARGET],
                COMMAND_TIMEOUT,
            )],
        ),
        None => (Vec::new(), Vec::new()),
    }
}

/// `step:NAME`: its `run` argv, undone by its `undo` argvs.
pub(super) fn custom(step: Option<&CustomStep>) -> Compiled {
    match step {
        Some(s) => (
            vec![Action::Exec {
                argv: s.run.clone(),
                timeout_ms: ms(s.timeout),
            }],
            s.undo.iter().map(|argv| hook(argv)).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    }
}
