//! The downtime cost model: how long each step is expected to take, in one place so that the numbers behind
//! `policy.max_downtime` can be read, questioned and tuned (docs/graph.md lists them in a table).
//!
//! The defaults come from measurements written down in DESIGN.md (QEMU 7.2, kexec of a Debian kernel) rounded
//! up, so an estimate errs on the long side: a plan that passes its budget here should pass it on a host too.

use super::StepKind;
use crate::plan::{AppKind, Handover, MemoryMode, Plan, VmDriver};
use std::time::Duration;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Host checks before anything changes: plan against host, files present, sockets answering.
pub(crate) const PREFLIGHT: Duration = ms(100);
/// Reading and loading the new kernel and initrd (`kexec_file_load`); measured 1.3–2.3 s.
pub(crate) const KERNEL_LOAD: Duration = ms(2_000);
/// QMP `stop` (measured < 1 ms) plus the QMP round trip.
pub(crate) const QMP_STOP: Duration = ms(5);
/// QMP `cont` plus the QMP round trip.
pub(crate) const QMP_CONT: Duration = ms(5);
/// Saving a shared-RAM guest: only device state is written (measured 10–20 ms).
pub(crate) const SHARED_RAM_SAVE: Duration = ms(50);
/// Loading a shared-RAM guest's device state (measured 10 ms).
pub(crate) const SHARED_RAM_LOAD: Duration = ms(50);
/// Starting QEMU again with `-incoming defer` until its QMP socket answers (measured ~60 ms).
pub(crate) const QEMU_START: Duration = ms(100);
/// A guest OS's power-off after the ACPI power button (a typical Linux guest: a few seconds; capped by the
/// plan's `shutdown_timeout`, after which kup quits QEMU).
pub(crate) const GUEST_SHUTDOWN: Duration = ms(10_000);
/// Write bandwidth for guest RAM copied into a state file (migration uncapped: 1.5 GiB in ~1.4 s measured).
pub(crate) const SAVE_BANDWIDTH: u64 = 1 << 30;
/// Read bandwidth for loading copied guest RAM back (1.5 GiB in ~1.5 s measured).
pub(crate) const RESTORE_BANDWIDTH: u64 = 1 << 30;
/// Guest RAM assumed when a copied VM does not state `memory_size`: the estimate says so in its note.
pub(crate) const UNKNOWN_MEMORY_SIZE: u64 = 4 << 30;
/// `virsh save` / `virsh restore` on top of moving the RAM: libvirt's own bookkeeping.
pub(crate) const LIBVIRT_OVERHEAD: Duration = ms(500);
/// `virsh resume`-free libvirt restore needs no separate resume; the resume step is a state check.
pub(crate) const LIBVIRT_RESUME: Duration = ms(50);
/// Reading a PCI device's driver binding from sysfs.
pub(crate) const PCI_CHECK: Duration = ms(10);
/// Binding a device to its driver again on the new kernel: the old driver's unbind (an NVMe controller's
/// shutdown), `modprobe vfio-pci`, the probe. Not measured yet (the lab has no device to pass through), so rounded
/// up generously: an unbind that flushes a drive can take hundreds of ms.
pub(crate) const PCI_BIND: Duration = ms(500);
/// Writing back the shared guests' RAM files while they run: bounded by `policy.preflush_timeout`; a guest's freshly
/// written RAM goes at disk speed (1.5 GiB dirty: 0.27–0.35 s on the lab machine's disk, docs/benchmarks.md), an
/// idle one's in milliseconds; rounded up for slower disks.
pub(crate) const PREFLUSH: Duration = ms(1_000);
/// `syncfs` of the file systems holding guest RAM, state and journal, inside the downtime: after the preflush only
/// what the guests dirtied since it (measured 0–7 ms after a 1.5 GiB-dirty guest's preflush; a guest that keeps
/// writing until its pause leaves more).
pub(crate) const SYNC: Duration = ms(100);
/// `systemctl isolate` (measured ~2.3 s to rescue.target).
pub(crate) const ISOLATE: Duration = ms(2_500);
/// The kexec hand-over and the new kernel's boot until kup's resume unit runs (measured ~4 s under emulation;
/// real hardware skips the firmware either way).
pub(crate) const KEXEC: Duration = ms(5_000);
/// `systemctl stop` of an app unit.
pub(crate) const SYSTEMD_STOP: Duration = ms(2_000);
/// `systemctl start` of an app unit.
pub(crate) const SYSTEMD_START: Duration = ms(2_000);
/// `criu dump` of one process tree (depends on its memory, which the plan does not state).
pub(crate) const CRIU_DUMP: Duration = ms(1_000);
/// `criu restore` of one process tree.
pub(crate) const CRIU_RESTORE: Duration = ms(1_000);
/// An app's own save or restore hook.
pub(crate) const APP_HOOK: Duration = ms(1_000);
/// A custom `[[step]]`: its `timeout` is a limit, not an estimate, so a fixed default is used.
pub(crate) const CUSTOM_STEP: Duration = ms(1_000);
/// Final checks after every guest runs again: guests running, PCI bindings as planned.
pub(crate) const VERIFY: Duration = ms(100);

/// `finit_module` of a live patch (the lab's: 0.04–0.10 s, the first transition attempt included).
pub const LIVEPATCH_LOAD: Duration = ms(200);
/// A live patch's transition when no task sleeps in a patched function (the lab's: done inside the load; on a busy
/// host the kernel retries every second, so this is a typical figure, not a bound: `livepatch.timeout` is that).
pub const LIVEPATCH_TRANSITION: Duration = ms(100);
/// Disabling a live patch, its transition back and `delete_module` (the lab's: 0.1–0.3 s).
pub const LIVEPATCH_REMOVE: Duration = ms(500);

/// A step's estimate and, when it rests on an assumption the plan could remove, a note saying which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Estimate {
    pub(crate) duration: Duration,
    pub(crate) note: Option<String>,
}

impl Estimate {
    fn fixed(duration: Duration) -> Self {
        Self {
            duration,
            note: None,
        }
    }
}

/// Time to move `bytes` at `bandwidth` bytes per second, saturating rather than overflowing.
fn transfer(bytes: u64, bandwidth: u64) -> Duration {
    let millis = u128::from(bytes) * 1000 / u128::from(bandwidth.max(1));
    ms(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// RAM written for a guest, with a note when the plan did not say how much.
fn guest_ram(size: Option<u64>, name: &str) -> (u64, Option<String>) {
    match size {
        Some(bytes) => (bytes, None),
        None => (
            UNKNOWN_MEMORY_SIZE,
            Some(format!(
                "vm {name} has no memory_size: assumed {} GiB",
                UNKNOWN_MEMORY_SIZE >> 30
            )),
        ),
    }
}

/// The estimate of one step of `plan`.
pub(crate) fn estimate(plan: &Plan, kind: &StepKind) -> Estimate {
    match kind {
        StepKind::Preflight => Estimate::fixed(PREFLIGHT),
        StepKind::KernelLoad => Estimate::fixed(KERNEL_LOAD),
        StepKind::PciCheck { .. } => Estimate::fixed(PCI_CHECK),
        StepKind::PciBind { .. } => Estimate::fixed(PCI_BIND),
        StepKind::Preflush => Estimate::fixed(PREFLUSH),
        StepKind::Sync => Estimate::fixed(SYNC),
        StepKind::Isolate => Estimate::fixed(ISOLATE),
        StepKind::Kexec => Estimate::fixed(KEXEC),
        StepKind::Verify => Estimate::fixed(VERIFY),
        StepKind::Custom { .. } => Estimate::fixed(CUSTOM_STEP),
        StepKind::LivepatchLoad => Estimate::fixed(LIVEPATCH_LOAD),
        StepKind::LivepatchTransition => Estimate::fixed(LIVEPATCH_TRANSITION),
        StepKind::LivepatchRemove => Estimate::fixed(LIVEPATCH_REMOVE),
        StepKind::VmPause { vm } => match plan.vms.get(*vm).map(|v| &v.driver) {
            // `virsh save` pauses on its own; the pause step only records the moment.
            Some(VmDriver::Libvirt { .. }) => Estimate::fixed(Duration::ZERO),
            _ => Estimate::fixed(QMP_STOP),
        },
        StepKind::VmShutdown { vm } => match plan.vms.get(*vm).map(|v| (v.handover, &v.name)) {
            Some((Handover::Restart { shutdown_timeout }, name)) => Estimate {
                duration: GUEST_SHUTDOWN.min(shutdown_timeout),
                note: Some(format!(
                    "vm {name} is restarted: its OS's power-off is assumed to take at most {} s, and its boot \
                     after the kexec is not in the estimate",
                    GUEST_SHUTDOWN.min(shutdown_timeout).as_secs()
                )),
            },
            _ => Estimate::fixed(Duration::ZERO),
        },
        StepKind::VmBoot { .. } => Estimate::fixed(QEMU_START),
        StepKind::VmResume { vm } => match plan.vms.get(*vm).map(|v| &v.driver) {
            Some(VmDriver::Libvirt { .. }) => Estimate::fixed(LIBVIRT_RESUME),
            _ => Estimate::fixed(QMP_CONT),
        },
        StepKind::VmSave { vm } | StepKind::VmRestore { vm } => {
            let Some(v) = plan.vms.get(*vm) else {
                return Estimate::fixed(Duration::ZERO);
            };
            let saving = matches!(kind, StepKind::VmSave { .. });
            let bandwidth = if saving {
                SAVE_BANDWIDTH
            } else {
                RESTORE_BANDWIDTH
            };
            match (&v.driver, v.memory) {
                (VmDriver::Qmp { .. }, MemoryMode::Shared) => Estimate::fixed(if saving {
                    SHARED_RAM_SAVE
                } else {
                    QEMU_START.saturating_add(SHARED_RAM_LOAD)
                }),
                (VmDriver::Qmp { .. }, MemoryMode::Copy) => {
                    let (bytes, note) = guest_ram(v.memory_size, &v.name);
                    let start = if saving { Duration::ZERO } else { QEMU_START };
                    Estimate {
                        duration: start.saturating_add(transfer(bytes, bandwidth)),
                        note,
                    }
                }
                // libvirt writes the RAM into the save image whatever the memory backend.
                (VmDriver::Libvirt { .. }, _) => {
                    let (bytes, note) = guest_ram(v.memory_size, &v.name);
                    Estimate {
                        duration: LIBVIRT_OVERHEAD.saturating_add(transfer(bytes, bandwidth)),
                        note,
                    }
                }
            }
        }
        StepKind::AppSave { app } | StepKind::AppRestore { app } => {
            let saving = matches!(kind, StepKind::AppSave { .. });
            let duration = match plan.apps.get(*app).map(|a| &a.kind) {
                Some(AppKind::Systemd { .. }) if saving => SYSTEMD_STOP,
                Some(AppKind::Systemd { .. }) => SYSTEMD_START,
                Some(AppKind::Criu { .. }) if saving => CRIU_DUMP,
                Some(AppKind::Criu { .. }) => CRIU_RESTORE,
                Some(AppKind::Hooks { save, restore }) => {
                    let hook = if saving { save } else { restore };
                    if hook.is_some() {
                        APP_HOOK
                    } else {
                        Duration::ZERO
                    }
                }
                None => Duration::ZERO,
            };
            Estimate::fixed(duration)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_rounds_down_and_saturates() {
        assert_eq!(transfer(1 << 30, 1 << 30), ms(1000));
        assert_eq!(transfer(3 << 29, 1 << 30), ms(1500));
        assert_eq!(transfer(u64::MAX, 1), ms(u64::MAX));
        assert_eq!(transfer(10, 0), ms(10_000));
    }
}
