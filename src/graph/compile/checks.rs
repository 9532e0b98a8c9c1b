//! The checking steps: `preflight` (nothing changed yet, everything the plan needs is there), `pci:ADDR:check`,
//! and `verify` (everything back as planned; only then do the state files go).

use super::{Compiled, vm};
use crate::action::Action;
use crate::plan::{AppKind, MemoryMode, PciDevice, Plan, VmDriver};

pub(super) fn pci_check(d: &PciDevice) -> Action {
    Action::CheckPci {
        address: d.address.to_string(),
        driver: d.driver.clone(),
        iommu: d.driver == "vfio-pci",
    }
}

/// `pci:ADDR:check`.
pub(super) fn pci(device: Option<&PciDevice>) -> Compiled {
    (device.map(pci_check).into_iter().collect(), Vec::new())
}

/// The first check of every preflight: this is one of the plan's `hosts` (none when it names none).
pub(super) fn hostname(plan: &Plan) -> Vec<Action> {
    if plan.hosts.is_empty() {
        return Vec::new();
    }
    vec![Action::CheckHostname {
        globs: plan.hosts.iter().map(|g| g.to_string()).collect(),
    }]
}

/// Checks that nothing has been changed yet and that everything the plan needs is there.
pub(super) fn preflight(plan: &Plan, cmdline: &str) -> Vec<Action> {
    let mut actions = hostname(plan);
    actions.push(Action::CheckKexecEnabled);
    if let Some(kernel) = &plan.kernel {
        actions.push(Action::CheckFile {
            path: kernel.image.clone(),
            sha256: kernel.sha256.clone(),
        });
        actions.push(Action::CheckKernelImage {
            path: kernel.image.clone(),
            release: kernel.version.clone(),
        });
        actions.push(Action::CheckTargetKernel {
            image: kernel.image.clone(),
            release: kernel.version.clone(),
            initrd: kernel.initrd.clone(),
            cmdline: cmdline.to_owned(),
        });
        if let Some(initrd) = &kernel.initrd {
            actions.push(Action::CheckFile {
                path: initrd.clone(),
                sha256: None,
            });
        }
    }
    // Created here, not when saving: a missing or read-only directory then fails before any guest is paused.
    // A restarted guest keeps no state.
    let saved = || plan.vms.iter().filter(|vm| !vm.restarts());
    for vm in saved() {
        actions.push(Action::EnsureDir {
            path: vm.state.clone(),
        });
    }
    // A state file under the name a restore or a rollback reads must be this run's: an earlier run's is moved
    // aside now, before anything pauses, rather than restored by mistake after a failed save. So is a partial one
    // a failed save could not move aside itself: the save would overwrite it.
    for vm in saved() {
        let state = vm::state_file(vm);
        actions.push(Action::KeepAside {
            path: vm::partial(&state),
        });
        actions.push(Action::KeepAside { path: state });
    }
    for app in &plan.apps {
        if let AppKind::Criu { images, .. } = &app.kind {
            actions.push(Action::EnsureDir {
                path: images.clone(),
            });
        }
    }
    for d in &plan.pci {
        actions.push(pci_check(d));
    }
    for vm in &plan.vms {
        // Before anything is asked of it: whoever owns the socket answers kup's commands.
        if let VmDriver::Qmp { socket, owner, .. } = &vm.driver {
            actions.push(Action::CheckSocketOwner {
                socket: socket.clone(),
                owner: owner.clone(),
            });
        }
        actions.extend(vm::running(vm));
        // Rebooted, not saved: whatever blocks a migration (a VFIO device) does not matter.
        if vm.restarts() {
            continue;
        }
        // Checked before anything pauses: with RAM that does not survive the kexec, "shared" would lose the guest.
        if let (VmDriver::Qmp { socket, .. }, MemoryMode::Shared) = (&vm.driver, vm.memory) {
            actions.push(Action::CheckSharedRam {
                socket: socket.clone(),
                // Without a kexec (a live patch plan has its own preflight) there is no new command line.
                cmdline: plan.kernel.is_some().then(|| cmdline.to_owned()),
            });
        }
        // A guest QEMU cannot migrate would fail its save paused: refused now.
        if let VmDriver::Qmp { socket, .. } = &vm.driver {
            actions.push(Action::CheckMigratable {
                socket: socket.clone(),
                memory: vm::memory(vm),
            });
        }
    }
    actions
}

/// Every guest running, every device bound as planned; then, and only then, the state files go.
pub(super) fn verify(plan: &Plan) -> Vec<Action> {
    let mut actions: Vec<Action> = plan.vms.iter().flat_map(vm::running).collect();
    for d in &plan.pci {
        actions.push(pci_check(d));
    }
    for vm in plan.vms.iter().filter(|vm| !vm.restarts()) {
        actions.push(Action::RemoveFile {
            path: vm::state_file(vm),
        });
        if let VmDriver::Qmp { .. } = vm.driver {
            actions.push(Action::RemoveFile {
                path: vm::migration_record(vm),
            });
        }
        if vm::shared_qmp(vm) {
            actions.push(Action::RemoveFile {
                path: vm::ram_digest_record(vm),
            });
        }
    }
    actions
}
