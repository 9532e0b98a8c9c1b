//! What performing an action reports: typed, so the host and the engine agree on it, and serialised as is into the
//! journal (`outputs` of a `step-done` record), where operators read it.

use super::MigrationMemory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What ended a `QmpWait`: the query that found the awaited value was sent …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitEnd {
    /// … first, before any wait: QEMU was there already.
    FirstQuery,
    /// … because QEMU sent an event.
    Event,
    /// … by the fallback poll, without an event (a QEMU not asked for `MIGRATION` events, or one that sent none).
    Poll,
}

/// What one action reports for the journal. Serialised untagged: each variant is the JSON object operators see
/// (`{"exit": 0, "duration_ms": 12}`), `null` for nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(untagged)]
pub enum ActionOutput {
    /// Nothing worth recording (a sync, a socket that accepted, a load).
    #[default]
    None,
    /// A program ran to a zero exit status.
    Exited {
        /// Always 0: another status fails the action.
        exit: i32,
        /// How long it ran.
        duration_ms: u64,
        /// When it was started (wall clock, Unix ms): `virsh save` starting is the last instant a libvirt guest is
        /// known to run, and `kup plan status` starts that guest's blackout there.
        started_unix_ms: u64,
    },
    /// A program's output matched what was expected.
    Printed {
        /// Its trimmed standard output.
        output: String,
        /// Its exit status (`None`: killed by a signal).
        exit: Option<i32>,
    },
    /// A QMP `migrate` / `migrate-incoming` to or from a state file.
    Migration {
        /// The URI QEMU was given (`exec:cat …` or `file:…`, by QEMU version).
        uri: String,
        /// QEMU's version, from `query-version`.
        qemu: String,
        /// The state file's size, for an incoming migration.
        size: Option<u64>,
    },
    /// A QMP reply as QEMU sent it: schema-less by nature.
    Reply(serde_json::Value),
    /// A QMP query repeated until one of its fields had the awaited value (`QmpWait`).
    Waited {
        /// The last reply, as QEMU sent it.
        reply: serde_json::Value,
        /// What made kup send the query that found the value.
        ended_on: WaitEnd,
        /// The QEMU event that woke it, when `ended_on` is `event` (`MIGRATION`, `RESUME`, …).
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        /// How many times the query was sent.
        queries: u32,
        /// How long the wait took, in ms.
        ms: u64,
    },
    /// QEMU acknowledged `stop` or `cont` (whose reply is always empty): the instant the guest stopped running or
    /// ran again, which `kup plan status` splits each guest's blackout from.
    Acknowledged {
        /// When the reply arrived (wall clock, Unix ms).
        acked_unix_ms: u64,
    },
    /// A kernel image's setup header.
    KernelImage {
        /// What `uname -r` will show.
        release: String,
        /// The header's whole version string.
        version: String,
    },
    /// The kernel the kexec will boot, as checked.
    TargetKernel(TargetKernel),
    /// A file that exists (and matched its pinned digest, when pinned).
    File {
        /// Its size in bytes.
        size: u64,
    },
    /// The host name the plan's globs matched.
    Hostname {
        /// `gethostname(2)`.
        hostname: String,
    },
    /// A state file made durable under its name.
    Committed(FileCommitted),
    /// A file moved aside (an earlier run's, or a failed save's partial state), or nothing there.
    KeptAside {
        /// Where it went.
        kept_aside: Option<PathBuf>,
        /// Its size: what it still takes on its file system.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
    },
    /// A guest's RAM backends, checked to survive the kexec.
    SharedRam {
        /// Each backend checked.
        backends: Vec<MemoryBackend>,
    },
    /// What [`crate::action::Action::QmpPowerdown`] did.
    PoweredDown {
        /// Whether a QEMU answered at all.
        answered: bool,
        /// Whether the guest OS powered off by itself; `false`: kup quit QEMU after the timeout.
        by_guest: bool,
        /// How long until QEMU let go of its socket.
        ms: u64,
    },
    /// The RAM digest of a shared-RAM guest: recorded by its save, or found equal to the record by its restore.
    RamDigest {
        /// One digest per RAM backend file.
        ram_digest: Vec<RamDigest>,
        /// `false` for the save (recorded), `true` for the restore (checked against the record and equal).
        checked: bool,
        /// How long sampling and hashing took (inside the guest's downtime).
        ms: u64,
    },
    /// An old QEMU asked to quit.
    Quit {
        /// Whether a QEMU answered (after a real kexec none does).
        quit: bool,
        /// How long until it let go of its socket.
        #[serde(skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },
    /// A PCI device as found.
    Pci(PciDevice),
    /// A PCI device bound to the plan's driver (or found bound to it).
    PciBound(PciBinding),
    /// A state file deleted once its guest ran again.
    Removed {
        /// Whether there was one.
        removed: bool,
    },
    /// How a guest's state travels: what was set on its QEMU.
    MigrationSetup(MigrationChoice),
    /// What a rollback set back on a QEMU whose save was set up (nothing without a record).
    MigrationReset {
        /// The capabilities turned off again and the parameters set back, by name.
        reset: Vec<String>,
    },
    /// A guest QEMU can migrate (no `blocked-reasons`).
    Migratable {
        /// QEMU's version.
        qemu: String,
        /// The migration mode the question was asked in (`None`: QEMU < 8.2 has none).
        mode: Option<String>,
    },
    /// A live patch module checked before its load.
    LivepatchModule(LivepatchModule),
    /// A live patch's state in sysfs.
    Livepatch(LivepatchState),
    /// What [`crate::action::Action::Preflush`] wrote back while the guests ran.
    Preflushed(Preflushed),
    /// What [`crate::action::Action::SyncFs`] flushed inside the downtime.
    Synced(Synced),
    /// A rehearsal skipped the action (the kexec, or the kernel load with `--no-kernel-load`).
    Skipped {
        /// Always `"skipped"`.
        rehearsal: &'static str,
    },
}

/// The migration capabilities and parameters set on one QEMU, by [`crate::action::Action::MigrationSetup`]: on the
/// save side also written (as JSON) beside the state file, so that the restore after the kexec sets the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationChoice {
    /// The QEMU it was set on (`query-version`).
    pub qemu: String,
    /// RAM shared or copied.
    pub memory: MigrationMemory,
    /// `mode` (`cpr-reboot`), when set; QEMU < 8.2 has no modes.
    pub mode: Option<String>,
    /// The capabilities turned on, in the order they were set.
    pub capabilities: Vec<String>,
    /// The parameters set (`max-bandwidth`, `multifd-channels`, `direct-io`, …), except `mode`.
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// How the state file is written and read: `file` (QEMU ≥ 8.2) or `exec` (`exec:cat`).
    pub uri: String,
    /// On the restore side: the QEMU that wrote the state (from the record), `None` for a save, or for a state
    /// without a record (then the restore sets what kup set before records existed: `x-ignore-shared` for shared
    /// RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_by: Option<String>,
    /// On the save side: what the setup changed, as it was before, which the pause's rollback sets back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MigrationBefore>,
}

impl MigrationChoice {
    /// The parameters that tell one setup from another, as `NAME=VALUE`: all but `max-bandwidth`, which every setup
    /// sets.
    pub fn distinctive_parameters(&self) -> Vec<String> {
        self.parameters
            .iter()
            .filter(|(k, _)| *k != "max-bandwidth")
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// What a save's migration setup found before changing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MigrationBefore {
    /// The capabilities it turned on, which were off.
    pub capabilities_off: Vec<String>,
    /// The earlier values of the parameters it set, `mode` included.
    pub parameters: BTreeMap<String, serde_json::Value>,
}

/// What [`crate::action::Action::CheckLivepatchModule`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivepatchModule {
    /// The module's name (`.modinfo` `name`).
    pub name: String,
    /// The release its `vermagic` names: the running one.
    pub release: String,
    /// Whether a module signature is appended.
    pub signed: bool,
    /// The file's size in bytes.
    pub size: u64,
}

/// A live patch as `/sys/kernel/livepatch/NAME` showed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivepatchState {
    /// The patch's name.
    pub name: String,
    /// Whether it is loaded (its sysfs directory exists).
    pub loaded: bool,
    /// `enabled` read 1.
    pub enabled: bool,
    /// `transition` read 1 (tasks still switching).
    pub transition: bool,
    /// How long the action waited for the transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

/// A state file committed by [`crate::action::Action::CommitFile`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileCommitted {
    /// Its final name.
    pub(crate) path: PathBuf,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Where an earlier file of that name went.
    pub(crate) kept_aside: Option<PathBuf>,
}

/// What [`crate::action::Action::CheckTargetKernel`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetKernel {
    /// The release it will boot (`uname -r` after the kexec).
    pub release: String,
    /// Its modules.
    pub modules: PathBuf,
    /// Its build configuration, when installed.
    pub config: Option<PathBuf>,
    /// The command-line lint's findings for that release.
    pub warnings: Vec<String>,
}

/// What a preflush did: each pass's time is the measure of the remainder (what a flush would still have to write
/// if the guests stopped then), because the kernel offers no per-file count of dirty pages without `unsafe`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preflushed {
    /// The RAM files written back.
    pub ram_files: Vec<String>,
    /// RAM files skipped because they are on a DAX mount.
    pub dax_skipped: Vec<String>,
    /// How long each `fdatasync` pass over all RAM files took, in ms, in order.
    pub passes_ms: Vec<u64>,
    /// Why the passes stopped: `settled`, `not-shrinking`, `budget` or `no-ram-files`.
    pub stopped: &'static str,
    /// The file systems then `syncfs`ed (their mount points, or the directory when none is found).
    pub file_systems: Vec<PathBuf>,
    /// How long those `syncfs` calls took, in ms.
    pub syncfs_ms: u64,
}

/// What an in-downtime `syncfs` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Synced {
    /// The file systems flushed (their mount points, or a directory on each).
    pub file_systems: Vec<PathBuf>,
    /// RAM files skipped because they are on a DAX mount.
    pub dax_skipped: Vec<String>,
    /// How long the flushes took, in ms.
    pub ms: u64,
}

/// One RAM backend of a shared-RAM guest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryBackend {
    /// The backend's QOM id.
    pub(crate) id: String,
    /// The file holding the RAM.
    pub(crate) mem_path: String,
    /// Its size in bytes, as QEMU reports it.
    pub(crate) size: Option<u64>,
    /// The block device holding the file (`pmem0`, `sda1`), or `MAJ:MIN` when it is no block device (a
    /// virtual file system, btrfs' anonymous devices).
    pub(crate) device: String,
    /// Whether that device is persistent memory (`/sys/block/pmemN`, e.g. carved by `memmap=SIZE!OFFSET`).
    pub(crate) pmem: bool,
    /// Whether the file system is mounted with DAX (`dax` or `dax=always` in `/proc/self/mountinfo`): its pages
    /// are the device's, with no page cache to flush. `dax=inode` (per-file DAX) counts as `false`.
    pub(crate) dax: bool,
}

/// A digest of one RAM backend file's sampled pages, as the save records it (JSON, beside the state file) and the
/// restore compares it: equal size and equal `sha256` mean the RAM is the one saved, as far as sampling can tell
/// (the sampling and its limits: `host::ram_digest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamDigest {
    /// The backend's QOM id.
    pub id: String,
    /// The file holding the RAM.
    pub mem_path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The size of a sampled page.
    pub page_size: u64,
    /// How many pages were sampled.
    pub pages: u64,
    /// How many of them held a non-zero byte: with 0, a wiped (zeroed) file reads the same and is not caught.
    pub nonzero_pages: u64,
    /// SHA-256 (hex) over a version tag, the size, the page size and each sampled offset with its bytes.
    pub sha256: String,
}

/// A PCI device checked by [`crate::action::Action::CheckPci`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PciDevice {
    /// Its address, `0000:3b:00.0`.
    pub(crate) address: String,
    /// `vendor:device`.
    pub id: String,
    /// The driver it is bound to.
    pub(crate) driver: String,
    /// Its IOMMU group, when it has one.
    pub iommu_group: Option<String>,
}

/// A PCI device as [`crate::action::Action::BindPci`] left it: after a kexec, `driver_before` is what the new
/// kernel bound it to and `driver_after` what the guest's restore finds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PciBinding {
    /// Its address, `0000:3b:00.0`.
    pub address: String,
    /// `vendor:device`.
    pub id: String,
    /// The driver it was bound to when the action began; `None`: no driver.
    pub driver_before: Option<String>,
    /// The driver it is bound to now: the plan's.
    pub driver_after: String,
    /// Its IOMMU group, when it has one (always, for vfio-pci).
    pub iommu_group: Option<String>,
    /// Whether the driver's module had to be loaded first.
    pub loaded_module: bool,
    /// The sysfs writes made, in order; none when it was bound as planned already.
    pub writes: Vec<SysfsWrite>,
    /// How long the driver took to take the device after `drivers_probe` was written.
    pub waited_ms: u64,
}

/// One write to a sysfs attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysfsWrite {
    /// The attribute, as on the host (`/sys/bus/pci/drivers_probe`).
    pub path: String,
    /// What was written (no newline).
    pub value: String,
}

/// Why a step's actions stopped: which action, and what went wrong, in words an operator can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionFailure {
    /// The failing action's index in the step's list.
    pub index: usize,
    /// What went wrong.
    pub message: String,
    /// What the actions before it reported, in order: an undo that fails half-way has still done its first part
    /// (a partial state file moved aside), which the operator must be told.
    pub done: Vec<ActionOutput>,
}
