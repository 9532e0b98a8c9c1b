//! The host-wide steps: `preflush`, `sync`, `isolate` (and its undo), and the plan's own `[[step]]`s.

use super::{COMMAND_TIMEOUT, Compiled, ISOLATE_ROLLBACK_TARGET, exec, handshake, hook, ms, vm};
use crate::action::Action;
use crate::graph::cost::PREFLUSH_BUDGET;
use crate::plan::{AppKind, CustomStep, Plan};
use std::path::PathBuf;

/// The directories whose file systems hold what kup writes before the kexec: every guest's state directory, every
/// CRIU app's images and the journal root. Sorted, each once.
fn durable_dirs(plan: &Plan) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = plan.vms.iter().map(|v| v.state.clone()).collect();
    dirs.extend(plan.apps.iter().filter_map(|a| match &a.kind {
        AppKind::Criu { images, .. } => Some(images.clone()),
        _ => None,
    }));
    dirs.push(plan.policy.journal.clone());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// `preflush`: the shared-RAM guests' RAM files written back while they run, then the file systems `sync` will
/// flush, so that inside the downtime only what changed since is left.
pub(super) fn preflush(plan: &Plan) -> Compiled {
    let sockets: Vec<PathBuf> = plan
        .vms
        .iter()
        .filter(|v| vm::shared_qmp(v) && !v.restarts())
        .filter_map(vm::qmp_socket)
        .collect();
    // Each QMP session of the step opens with its handshake, listed like every other QMP command.
    let mut actions: Vec<Action> = sockets.iter().map(|s| handshake(s)).collect();
    actions.push(Action::Preflush {
        sockets,
        dirs: durable_dirs(plan),
        budget_ms: ms(PREFLUSH_BUDGET),
    });
    (actions, Vec::new())
}

/// `sync`: the RAM files of the shared-RAM guests (named by their saves' digest records, written once their RAM
/// stopped changing) and everything kup wrote durable before the kexec, one `syncfs` per file system that holds
/// them — not a host-wide `sync(2)`, which would also wait for every other process's dirty data while the guests
/// are down. State files, records and journal lines are fsynced when written; this is for the RAM files and the
/// directories around them.
pub(super) fn sync(plan: &Plan) -> Compiled {
    let ram_records = plan
        .vms
        .iter()
        .filter(|v| vm::shared_qmp(v) && !v.restarts())
        .map(vm::ram_digest_record)
        .collect();
    (
        vec![Action::SyncFs {
            ram_records,
            dirs: durable_dirs(plan),
        }],
        Vec::new(),
    )
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
