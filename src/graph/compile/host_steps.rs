//! The host-wide steps: `preflush`, `sync`, `isolate` (and its undo), and the plan's own `[[step]]`s.

use super::{COMMAND_TIMEOUT, Compiled, ISOLATE_ROLLBACK_TARGET, exec, handshake, hook, ms, vm};
use crate::action::Action;
use crate::plan::{AppKind, CustomStep, Plan};
use std::path::{Path, PathBuf};

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
        budget_ms: ms(plan.policy.preflush_timeout),
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

/// Where runtime unit drop-ins go: `/run` is gone after the kexec, so nothing kup writes there outlives the boot.
pub(crate) const DROP_IN_ROOT: &str = "/run/systemd/system";
/// The drop-in's file name in `UNIT.d/`.
pub(crate) const ISOLATE_DROP_IN: &str = "kup-keep-on-isolate.conf";
/// What it says. `IgnoreOnIsolate` is a [Unit] key: in [Service] systemd ignores it.
const ISOLATE_DROP_IN_TEXT: &str = "# Written by kup for the isolate of an apply; removed when the apply is over.\n\
                                    [Unit]\nIgnoreOnIsolate=yes\n";

/// The units the isolate must not stop, in plan order, once each: every guest's `unit` (its QEMU) and every
/// systemd app's unit (its own step stops it, after the guests that need it are saved). kup itself runs in a
/// transient unit that already has `IgnoreOnIsolate=yes` (src/host/systemd.rs).
pub(crate) fn kept_units(plan: &Plan) -> Vec<&str> {
    let mut units: Vec<&str> = Vec::new();
    let guests = plan.vms.iter().filter_map(|v| v.unit.as_deref());
    let apps = plan.apps.iter().filter_map(|a| match &a.kind {
        AppKind::Systemd { unit } => Some(unit.as_str()),
        _ => None,
    });
    for unit in guests.chain(apps) {
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    units
}

/// The drop-in that keeps `unit` out of the isolate.
pub(crate) fn isolate_drop_in(unit: &str) -> PathBuf {
    Path::new(DROP_IN_ROOT)
        .join(format!("{unit}.d"))
        .join(ISOLATE_DROP_IN)
}

/// The isolate's drop-ins removed and systemd told: after the undo, and once the kexec is over (`verify`; after a
/// real kexec `/run` is new and nothing is left, after a rehearsal they would stay until the next boot).
pub(super) fn remove_isolate_drop_ins(plan: &Plan) -> Vec<Action> {
    let units = kept_units(plan);
    if plan.policy.isolate.is_none() || units.is_empty() {
        return Vec::new();
    }
    let mut actions: Vec<Action> = units
        .iter()
        .map(|u| Action::RemoveFile {
            path: isolate_drop_in(u),
        })
        .collect();
    actions.push(exec(&["systemctl", "daemon-reload"], COMMAND_TIMEOUT));
    actions
}

/// `isolate`: the units that host guests and apps kept out of it (a runtime drop-in each, then `systemctl
/// daemon-reload`), then `systemctl isolate TARGET`; undone by isolating the default target and removing the
/// drop-ins.
pub(super) fn isolate(plan: &Plan) -> Compiled {
    let Some(target) = plan.policy.isolate.as_deref() else {
        return (Vec::new(), Vec::new());
    };
    let units = kept_units(plan);
    let mut actions: Vec<Action> = units
        .iter()
        .map(|u| Action::WriteFile {
            path: isolate_drop_in(u),
            contents: ISOLATE_DROP_IN_TEXT.to_owned(),
        })
        .collect();
    if !units.is_empty() {
        actions.push(exec(&["systemctl", "daemon-reload"], COMMAND_TIMEOUT));
    }
    actions.push(exec(&["systemctl", "isolate", target], COMMAND_TIMEOUT));
    let mut rollback = vec![exec(
        &["systemctl", "isolate", ISOLATE_ROLLBACK_TARGET],
        COMMAND_TIMEOUT,
    )];
    rollback.extend(remove_isolate_drop_ins(plan));
    (actions, rollback)
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
