//! A rehearsal: every action for real except the kexec, which becomes a no-op, so a rehearsal cannot reboot the
//! host whatever the plan says.

use crate::action::{Action, ActionFailure, ActionOutput};
use crate::host::{BootIdentity, Host, HostError};

/// Performs a rehearsal's substitutions: the kexec becomes a no-op (or an unload of the kernel loaded for the
/// rehearsal), so a rehearsal cannot reboot the host whatever the plan says.
pub(super) struct Rehearsal<'a, H: Host> {
    pub(super) inner: &'a H,
    pub(super) kernel_load: bool,
}

impl<H: Host> Host for Rehearsal<'_, H> {
    fn identity(&self) -> Result<BootIdentity, HostError> {
        self.inner.identity()
    }

    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        let substituted: Vec<Option<Action>> = actions
            .iter()
            .map(|a| match a {
                // Whatever the kexec method, a rehearsal never reboots.
                Action::Reboot(_) => self.kernel_load.then_some(Action::KexecUnload),
                // Without a kernel load nothing about kexec is exercised, including the preflight's check that
                // kexec is allowed (a host without CONFIG_KEXEC can rehearse everything else). A pinned release is
                // still checked: it only reads the image, and a rehearsal must catch a wrong pin (the sha256 is
                // checked by `check_file`, which always runs).
                Action::KexecFileLoad { .. }
                | Action::KexecUnload
                | Action::CheckKernelImage { release: None, .. }
                | Action::CheckTargetKernel { .. }
                    if !self.kernel_load =>
                {
                    None
                }
                Action::CheckKexecEnabled if !self.kernel_load => None,
                // A live patch is never loaded or removed by a rehearsal (its module and the kernel are checked),
                // so neither is the state after it checked.
                Action::LoadModule { .. }
                | Action::WaitLivepatchTransition { .. }
                | Action::CheckLivepatch { .. }
                | Action::DisableLivepatch { .. }
                | Action::UnloadModule { .. } => None,
                other => Some(other.clone()),
            })
            .collect();
        let real: Vec<Action> = substituted.iter().flatten().cloned().collect();
        match self.inner.perform(&real) {
            Ok(outputs) => Ok(with_skipped(&substituted, outputs)),
            Err(f) => {
                // Point at the plan's action, not at its place in the substituted list.
                let index = substituted
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.is_some())
                    .nth(f.index)
                    .map_or(f.index, |(i, _)| i);
                Err(ActionFailure {
                    done: with_skipped(&substituted[..index.min(substituted.len())], f.done),
                    index,
                    message: f.message,
                })
            }
        }
    }
}

/// The outputs of the plan's actions: the host's, in order, for those it performed; `skipped` for the others.
fn with_skipped(substituted: &[Option<Action>], outputs: Vec<ActionOutput>) -> Vec<ActionOutput> {
    let mut outputs = outputs.into_iter();
    substituted
        .iter()
        .map(|a| match a {
            Some(_) => outputs.next().unwrap_or_default(),
            None => ActionOutput::Skipped {
                rehearsal: "skipped",
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::{RecordingHost, program};
    use std::sync::Mutex;

    #[test]
    fn a_rehearsal_never_hands_a_reboot_to_the_host() {
        let program = program("plans/single-qemu-shared-ram.toml");
        for kernel_load in [true, false] {
            let host = RecordingHost {
                calls: Mutex::new(Vec::new()),
                fail: None,
            };
            let rehearsal = Rehearsal {
                inner: &host,
                kernel_load,
            };
            for step in &program.steps {
                rehearsal.perform(&step.actions).unwrap();
            }
            let calls = host.calls.into_inner().unwrap();
            let flat: Vec<&Action> = calls.iter().flatten().collect();
            assert!(!flat.iter().any(|a| matches!(a, Action::Reboot(_))));
            assert_eq!(
                flat.iter()
                    .any(|a| matches!(a, Action::KexecFileLoad { .. })),
                kernel_load
            );
            assert_eq!(
                flat.iter().any(|a| matches!(a, Action::KexecUnload)),
                kernel_load
            );
        }
    }
}
