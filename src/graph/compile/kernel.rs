//! The kernel's steps: `kernel:load` (kexec_file_load, or kexec-tools with `loader = "legacy"`) and `kexec`, and
//! the new kernel's command line they hand over.

use super::{COMMAND_TIMEOUT, Compiled, exec, ms, path_str};
use crate::action::{Action, RebootMode};
use crate::cmdline::{Cmdline, CmdlineEdit, CmdlineError};
use crate::plan::{CmdlineSpec, Kernel, KexecMethod, Loader};

/// The new kernel's command line from the plan and the running kernel's (`/proc/cmdline`), via [`crate::cmdline`];
/// an inherited `BOOT_IMAGE=` is dropped.
pub(crate) fn kernel_cmdline(spec: &CmdlineSpec, running: &str) -> Result<String, CmdlineError> {
    match spec {
        CmdlineSpec::Replace(text) => Ok(text.trim().to_owned()),
        CmdlineSpec::Edit {
            inherit,
            remove,
            set,
            append,
        } => {
            let edit = CmdlineEdit {
                inherit: *inherit,
                remove: remove.clone(),
                set: set.clone(),
                append: append.clone(),
            };
            // BOOT_IMAGE is the boot loader's note of which image it booted: inherited, it would name the old
            // kernel (kdump and friends read it). kexec-tools' --reuse-cmdline drops it too.
            let mut running = Cmdline::parse(running);
            running.remove("BOOT_IMAGE");
            edit.apply(&running)?.render()
        }
    }
}

/// `kernel:load` and its undo.
pub(super) fn load(k: &Kernel, cmdline: &str) -> Compiled {
    match k.loader {
        Loader::File => (
            vec![Action::KexecFileLoad {
                kernel: k.image.clone(),
                initrd: k.initrd.clone(),
                cmdline: cmdline.to_owned(),
            }],
            vec![Action::KexecUnload],
        ),
        Loader::Legacy => {
            let mut argv = vec!["kexec".to_owned(), "--load".to_owned(), path_str(&k.image)];
            if let Some(initrd) = &k.initrd {
                argv.push(format!("--initrd={}", initrd.display()));
            }
            argv.push(format!("--command-line={cmdline}"));
            (
                vec![Action::Exec {
                    argv,
                    timeout_ms: ms(COMMAND_TIMEOUT),
                }],
                vec![exec(&["kexec", "--unload"], COMMAND_TIMEOUT)],
            )
        }
    }
}

/// `kexec`, the point of no return: nothing to undo.
pub(super) fn kexec(method: KexecMethod, customs_before: bool) -> Compiled {
    let mode = match method {
        KexecMethod::Auto => RebootMode::Kexec,
        KexecMethod::Systemd => RebootMode::SystemdKexec,
        KexecMethod::Direct => RebootMode::DirectKexec,
    };
    // What the journal calls done must be on disk before the kexec record (the engine writes it between the two).
    // kup's own files are by then (fsynced when written, RAM files by `sync`'s syncfs); a custom step's writes may
    // be anywhere, so a plan with one before the kexec gets a host-wide `sync(2)` here. Without one nothing is
    // left to flush, and the kexec itself flushes the rest of the host: `systemctl kexec` unmounts, the direct
    // path calls sync(2) right before reboot(RB_KEXEC).
    let mut actions = Vec::new();
    if customs_before {
        actions.push(Action::Sync);
    }
    actions.push(Action::Reboot(mode));
    (actions, Vec::new())
}
