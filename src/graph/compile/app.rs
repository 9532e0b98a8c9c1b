//! An app's steps: a systemd unit stopped and started, a process dumped and restored by CRIU, or the plan's own
//! save and restore hooks.

use super::{COMMAND_TIMEOUT, Compiled, exec, hook, ms, path_str};
use crate::action::{Action, PID_PLACEHOLDER};
use crate::plan::{App, AppKind};
use std::path::Path;

/// `systemctl is-active UNIT` printing one of `states`.
pub(super) fn unit_state(unit: &str, states: &[&str]) -> Action {
    Action::CheckOutput {
        argv: vec!["systemctl".into(), "is-active".into(), unit.to_owned()],
        expect: states.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

pub(super) fn criu_dump(pidfile: &Path, images: &Path) -> Action {
    Action::Criu {
        argv: vec![
            "criu".into(),
            "dump".into(),
            "--tree".into(),
            PID_PLACEHOLDER.into(),
            "--images-dir".into(),
            path_str(images),
            // A process started from a shell keeps its session and terminal; CRIU refuses those without this.
            "--shell-job".into(),
            // Relative to the images directory: the log stays next to the images it explains.
            "--log-file".into(),
            "dump.log".into(),
        ],
        pidfile: pidfile.to_owned(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

pub(super) fn criu_restore(pidfile: &Path, images: &Path) -> Action {
    Action::Criu {
        argv: vec![
            "criu".into(),
            "restore".into(),
            "--images-dir".into(),
            path_str(images),
            "--shell-job".into(),
            "--restore-detached".into(),
            "--pidfile".into(),
            path_str(pidfile),
            "--log-file".into(),
            "restore.log".into(),
        ],
        pidfile: pidfile.to_owned(),
        timeout_ms: ms(COMMAND_TIMEOUT),
    }
}

/// `app:NAME:save`: the app stopped or dumped before the kexec; undone by starting or restoring it.
pub(super) fn save(app: Option<&App>) -> Compiled {
    match app.map(|a| &a.kind) {
        Some(AppKind::Systemd { unit }) => (
            vec![
                exec(&["systemctl", "stop", unit], COMMAND_TIMEOUT),
                // A unit that failed while stopping is stopped too; anything else is not.
                unit_state(unit, &["inactive", "failed"]),
            ],
            vec![
                exec(&["systemctl", "start", unit], COMMAND_TIMEOUT),
                unit_state(unit, &["active"]),
            ],
        ),
        Some(AppKind::Criu { pidfile, images }) => (
            vec![criu_dump(pidfile, images)],
            vec![criu_restore(pidfile, images)],
        ),
        Some(AppKind::Hooks { save, restore }) => (
            save.iter().map(|argv| hook(argv)).collect(),
            restore.iter().map(|argv| hook(argv)).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

/// `app:NAME:restore`: the app back on the new kernel.
pub(super) fn restore(app: Option<&App>) -> Compiled {
    let actions = match app.map(|a| &a.kind) {
        Some(AppKind::Systemd { unit }) => vec![
            exec(&["systemctl", "start", unit], COMMAND_TIMEOUT),
            unit_state(unit, &["active"]),
        ],
        Some(AppKind::Criu { pidfile, images }) => vec![criu_restore(pidfile, images)],
        Some(AppKind::Hooks { restore, .. }) => restore.iter().map(|argv| hook(argv)).collect(),
        None => Vec::new(),
    };
    (actions, Vec::new())
}
