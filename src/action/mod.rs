//! The action vocabulary: everything kup may ask of a host, as data.
//!
//! `graph` compiles a plan's steps into these, the dry-run prints them ([`Action::describe`]), `exec` schedules them
//! and `host` performs them. Being data is what lets the dry-run show exactly what apply will do, and lets the
//! engine run against a recording host in tests. This module imports nothing else of kup's: it is the contract
//! between the pure layers and the one with side effects.

mod describe;
mod migration;
mod output;
mod quote;

pub(crate) use describe::qmp_message;
pub use migration::{QemuOffer, choose, setup_commands, undo_commands};
pub use output::{
    ActionFailure, ActionOutput, FileCommitted, LivepatchModule, LivepatchState, MemoryBackend,
    MigrationBefore, MigrationChoice, PciBinding, PciDevice, Preflushed, RamDigest, Synced,
    SysfsWrite, TargetKernel, WaitEnd,
};
pub use quote::shell_quote;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Placeholder in a CRIU argv for the PID read from the app's pidfile when the action runs.
pub(crate) const PID_PLACEHOLDER: &str = "{pid}";

/// One thing the executor does. Durations are in milliseconds in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Run a program (no shell), killing it after `timeout_ms`.
    Exec {
        /// The program and its arguments.
        argv: Vec<String>,
        /// Kill it after this long, in ms.
        timeout_ms: u64,
    },
    /// Send one QMP command on `socket`. Commands of one step share a connection, opened with
    /// `qmp_capabilities` (listed explicitly).
    Qmp {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// The QMP command (`stop`, `migrate`, …).
        command: String,
        /// Its `arguments` object.
        args: serde_json::Value,
        /// For `migrate` / `migrate-incoming` to or from a state file: on QEMU ≥ 8.2 (`query-version`) the
        /// `exec:cat` URI in `args` is replaced by `file:` this path, which needs no `cat` process and no shell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_uri: Option<PathBuf>,
    },
    /// Repeat a QMP query until a field of its reply has a value — asked again on each QEMU event, polled as a
    /// fallback.
    QmpWait(QmpWait),
    /// Wait until a unix socket accepts connections.
    WaitForSocket {
        /// The socket.
        path: PathBuf,
        /// Give up after this long, in ms.
        timeout_ms: u64,
    },
    /// `kexec_file_load(kernel_fd, initrd_fd, cmdline)`; no initrd means `KEXEC_FILE_NO_INITRAMFS`.
    KexecFileLoad {
        /// The new kernel's image (bzImage).
        kernel: PathBuf,
        /// Its initramfs, if any.
        initrd: Option<PathBuf>,
        /// Its whole command line.
        cmdline: String,
    },
    /// `kexec_file_load(-1, -1, "", KEXEC_FILE_UNLOAD)`.
    KexecUnload,
    /// `reboot(LINUX_REBOOT_CMD_KEXEC)` — or `systemctl kexec` when systemd is PID 1 (the clean path, chosen on
    /// the host).
    Reboot(RebootMode),
    /// `sync(2)`, host-wide: what a custom step wrote, wherever it wrote it, durable before the kexec record.
    Sync,
    /// While the guests still run: write back each shared-RAM guest's RAM files (found over QMP as
    /// [`Action::CheckSharedRam`] finds them; files on a DAX mount have no page cache and are skipped) with
    /// `fdatasync`, pass after pass while a pass takes less time than the one before, starting no pass once
    /// `budget_ms` has gone by; then `syncfs` of every file system holding those files or one of `dirs`. What is
    /// left for [`Action::SyncFs`] inside the downtime is what the guests dirty after the last pass.
    Preflush {
        /// The QMP sockets of the shared-RAM guests.
        sockets: Vec<PathBuf>,
        /// The state directories, CRIU image directories and the journal root.
        dirs: Vec<PathBuf>,
        /// No new pass starts after this long, in ms.
        budget_ms: u64,
    },
    /// `syncfs(2)` once per distinct file system holding a RAM file named in one of `ram_records` (the saves'
    /// digest records; files on a DAX mount skipped: no page cache) or one of `dirs`: everything kup wrote or a
    /// guest left in its RAM file durable before the kexec, without waiting for the rest of the host's dirty data.
    SyncFs {
        /// The shared-RAM guests' digest records (`vmstate.ram-digest`), which name their RAM files.
        ram_records: Vec<PathBuf>,
        /// The state directories, CRIU image directories and the journal root.
        dirs: Vec<PathBuf>,
    },
    /// kexec is allowed on this kernel (`kernel.kexec_load_disabled` is 0: once set to 1 it cannot be unset
    /// before the next boot, so every later load would fail).
    CheckKexecEnabled,
    /// Check that a file exists and, when pinned, has this SHA-256.
    CheckFile {
        /// The file.
        path: PathBuf,
        /// The pinned SHA-256, hex.
        sha256: Option<String>,
    },
    /// Check that a kernel image is a bzImage and, when the plan names one, that its header's release (what
    /// `uname -r` will show) is `release`.
    CheckKernelImage {
        /// The image.
        path: PathBuf,
        /// The release the plan expects, if it names one.
        release: Option<String>,
    },
    /// Check the kernel the kexec will boot: its release's modules under `/lib/modules`, an initrd built for that
    /// release, and (from its build configuration, when installed) the options the command line relies on; the
    /// command line is linted against the release (warnings only). `release` is the plan's pin, else the image's.
    CheckTargetKernel {
        /// The kernel image the kexec will boot.
        image: PathBuf,
        /// The plan's `kernel.version`, else read from the image.
        release: Option<String>,
        /// The initrd it will boot with.
        initrd: Option<PathBuf>,
        /// The new kernel's whole command line.
        cmdline: String,
    },
    /// Check that the host name matches one of the plan's globs.
    CheckHostname {
        /// The plan's `hosts` globs.
        globs: Vec<String>,
    },
    /// `criu dump` / `criu restore`: `argv` holds `{pid}` (`PID_PLACEHOLDER`) where the PID read from `pidfile` goes.
    Criu {
        /// The `criu` command line.
        argv: Vec<String>,
        /// Where the app's PID is read from.
        pidfile: PathBuf,
        /// Kill it after this long, in ms.
        timeout_ms: u64,
    },
    /// Make a finished state file durable under its final name: fsync `from`, rename it to `to`, fsync the
    /// directory. A `to` left by an earlier run is first renamed aside (`to.kept-N`), never overwritten.
    CommitFile {
        /// The finished file (`*.partial`).
        from: PathBuf,
        /// Its final name.
        to: PathBuf,
    },
    /// Rename a file an earlier run left at `path` to `path.kept-N` (first free N); nothing if there is none.
    KeepAside {
        /// The file to move aside.
        path: PathBuf,
    },
    /// For `memory = "shared"`: the guest's RAM must be a `memory-backend-file` with `share=on` on a file system
    /// that survives a kexec (not tmpfs, ramfs or hugetlbfs); otherwise the RAM is lost, so refuse.
    CheckSharedRam {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// The new kernel's command line, when the plan kexecs: a backend file on a pmem block device needs every
        /// `memmap=SIZE!OFFSET` of the running command line in it, or the region is not carved out again and the
        /// RAM in it is gone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmdline: Option<String>,
    },
    /// For `memory = "shared"`, once the save completed: a digest of sampled pages of each RAM backend file
    /// (found as [`Action::CheckSharedRam`] finds them), written durably to `record` beside the state file, so
    /// that the restore can tell RAM that survived from RAM that did not.
    RecordRamDigest {
        /// The guest's QMP socket (the backends' `mem-path` and size come from QOM).
        socket: PathBuf,
        /// Where the digest goes.
        record: PathBuf,
    },
    /// First of a shared-RAM guest's restore, before any QEMU is ended or started: each RAM file named in `record`
    /// has the recorded size and digest; otherwise refuse, keeping the state file `state`.
    CheckRamDigest {
        /// The save's digest record.
        record: PathBuf,
        /// The state file the restore would load (named in the refusal: it is kept).
        state: PathBuf,
    },
    /// Send `quit` to a QEMU that still answers on `socket` (a rehearsal, or a retried restore) and wait for it
    /// to close its socket, not for its process to end. After a real kexec nothing answers and nothing is done.
    /// A guest found running is refused: it has moved on since its state file was written.
    QmpQuit {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// How long to wait for the socket to close, in ms.
        timeout_ms: u64,
    },
    /// A guest shut down for a reboot across the kexec (`handover = "restart"`): QMP `system_powerdown` (the ACPI
    /// power button), QEMU's exit awaited up to `timeout_ms`, then `quit` if the guest OS did not power off. A QEMU
    /// already gone is a no-op.
    QmpPowerdown {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// How long the guest OS gets to power off, in ms.
        timeout_ms: u64,
    },
    /// A PCI device under `/sys/bus/pci/devices/ADDRESS`: bound to `driver` and, when `iommu`, in an IOMMU group
    /// (the IOMMU is on), as VFIO needs.
    CheckPci {
        /// PCI address, `DDDD:BB:DD.F`.
        address: String,
        /// The driver it must be bound to (`vfio-pci`).
        driver: String,
        /// Whether it must be in an IOMMU group.
        iommu: bool,
    },
    /// Bind a PCI device to `driver` the way the kernel documents it (Documentation/ABI/testing/sysfs-bus-pci,
    /// `driver_override`), for a device the new kernel gave to its default driver: nothing is written when it is
    /// bound to `driver` already; else `load` runs when `/sys/bus/pci/drivers/DRIVER` is missing, then
    /// `driver_override` ← `driver`, `driver/unbind` ← `address` when it is bound elsewhere,
    /// `/sys/bus/pci/drivers_probe` ← `address`, and a wait until its `driver` link names `driver`. With `iommu`
    /// (vfio-pci), then its IOMMU group: `/dev/vfio/GROUP` exists and no other device of the group is bound to a
    /// driver VFIO cannot share a group with.
    BindPci(BindPci),
    /// Run a program and compare its trimmed stdout with one of `expect`, whatever its exit status
    /// (`systemctl is-active` exits 3 when it prints `inactive`).
    CheckOutput {
        /// The program and its arguments.
        argv: Vec<String>,
        /// Accepted outputs, trimmed.
        expect: Vec<String>,
        /// Kill it after this long, in ms.
        timeout_ms: u64,
    },
    /// Check that no other user than root could replace the programs kup will run (each resolved through `PATH`
    /// as exec resolves it): each file and every directory above it owned by root (or the caller) and not
    /// writable by group or others. Checked again right before each program starts.
    CheckExecutables {
        /// Every distinct argv\[0\] of the plan's actions.
        programs: Vec<String>,
    },
    /// Check that a QMP socket is owned by root, or by `owner` when the plan names the user that QEMU runs as
    /// (`qmp_owner`): whoever owns the socket answers kup's commands.
    CheckSocketOwner {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// The plan's `qmp_owner`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Create a directory (and its parents, mode 0700) unless it exists; refused when another user could plant
    /// files in it (a symlink of theirs on the way, a directory of theirs or one they may write).
    EnsureDir {
        /// The directory.
        path: PathBuf,
    },
    /// Delete a file kup wrote (nothing if it is gone): a state file once the guest it belongs to runs again
    /// and was verified, or the isolate's drop-in once it is undone or the kexec is over.
    RemoveFile {
        /// The file.
        path: PathBuf,
    },
    /// Write a small file others may read (0644) atomically, creating its directory (0755): a runtime systemd
    /// drop-in under `/run/systemd/system`, which no other user may write.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its whole content.
        contents: String,
    },
    /// Choose and set how a guest's state travels, by what its QEMU is (`query-version`) and offers
    /// (`query-migrate-capabilities`, `query-migrate-parameters`); never by guessing. On the save side the choice
    /// depends on `memory` and the version (see [`Action::describe`]) and is written durably to `record` beside
    /// the state file; on the restore side `record` is read and exactly its capabilities and parameters are set
    /// on the new QEMU, or the restore is refused, naming both QEMUs, when the new one lacks one of them.
    MigrationSetup(MigrationSetup),
    /// Refuse a guest that QEMU cannot migrate (a device without migration support, a `migrate_add_blocker`):
    /// `query-migrate`'s `blocked-reasons` (QEMU ≥ 6.0), asked in the mode the save will use.
    CheckMigratable {
        /// The guest's QMP socket.
        socket: PathBuf,
        /// The guest's memory mode, which decides the migration mode asked about.
        memory: MigrationMemory,
    },
    /// The running kernel can be live-patched: `/sys/kernel/livepatch` exists (`CONFIG_LIVEPATCH`).
    CheckLivepatchSupport,
    /// A live patch module fit to load into the running kernel: its `.modinfo` says `livepatch=Y` and names
    /// `name`, its `vermagic` release is the running release (`uname -r`), no patch of that name is loaded, and
    /// lockdown or `module.sig_enforce` would not refuse it for want of a signature.
    CheckLivepatchModule {
        /// The module file.
        path: PathBuf,
        /// The live patch name the plan expects (`livepatch.name`).
        name: String,
    },
    /// `finit_module(fd, "", 0)` of a module file (no insmod).
    LoadModule {
        /// The module file.
        path: PathBuf,
    },
    /// Wait until `/sys/kernel/livepatch/NAME/transition` reads 0 (every task switched), then check that `enabled`
    /// reads 1; on a timeout, name the tasks still in the old state (`/proc/*/task/*/patch_state`).
    WaitLivepatchTransition {
        /// The live patch.
        name: String,
        /// How long the transition may take.
        timeout_ms: u64,
    },
    /// `/sys/kernel/livepatch/NAME`: with `loaded`, enabled and not in transition; without, gone, and no module
    /// of that name loaded.
    CheckLivepatch {
        /// The live patch.
        name: String,
        /// Whether it must be loaded (and enabled) or gone.
        loaded: bool,
    },
    /// Write 0 to `/sys/kernel/livepatch/NAME/enabled` and wait until the patch is gone (its transition back done);
    /// nothing when no such patch is loaded.
    DisableLivepatch {
        /// The live patch.
        name: String,
        /// How long the transition back may take.
        timeout_ms: u64,
    },
    /// `delete_module(name, O_NONBLOCK)`, retried while the module is busy (a disabled patch is freed a moment
    /// after its transition); nothing when no such module is loaded.
    UnloadModule {
        /// The module's name.
        name: String,
        /// How long to retry while it is busy.
        timeout_ms: u64,
    },
}

/// What [`Action::QmpWait`] waits for: `field` of `command`'s reply equal to `until`, within `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QmpWait {
    /// The guest's QMP socket.
    pub socket: PathBuf,
    /// The query (`query-migrate`, `query-status`).
    pub command: String,
    /// The reply field compared, such as `status`.
    pub field: String,
    /// The value that ends the wait, such as `completed`.
    pub until: String,
    /// Give up after this long, in ms.
    pub timeout_ms: u64,
}

impl QmpWait {
    /// Waits until the `status` of `command`'s reply (`query-migrate`, `query-status`) is `until`.
    pub fn status(socket: &Path, command: &str, until: &str, timeout_ms: u64) -> Action {
        Action::QmpWait(QmpWait {
            socket: socket.to_owned(),
            command: command.into(),
            field: "status".into(),
            until: until.into(),
            timeout_ms,
        })
    }
}

/// What [`Action::BindPci`] binds: one PCI device, to one driver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindPci {
    /// PCI address, `DDDD:BB:DD.F`.
    pub address: String,
    /// The driver it must end up bound to (`vfio-pci`).
    pub driver: String,
    /// What loads the driver when it is not registered: `modprobe DRIVER`.
    pub load: Vec<String>,
    /// Whether its IOMMU group must be usable by VFIO.
    pub iommu: bool,
    /// The other vfio-pci devices of the guest that owns this one: bound by their own steps (which check the
    /// group again), so not offenders in this device's group while still bound elsewhere.
    pub peers: Vec<String>,
    /// Limit for `load`, and for the driver to take the device after `drivers_probe`, in ms.
    pub timeout_ms: u64,
}

/// What [`Action::MigrationSetup`] prepares: one end of a guest's migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationSetup {
    /// The guest's QMP socket.
    pub socket: PathBuf,
    /// Which end of the migration this prepares.
    pub side: MigrationSide,
    /// Whether the guest's RAM is shared (survives the kexec) or copied into the state file.
    pub memory: MigrationMemory,
    /// multifd channels for copied RAM on QEMU ≥ 9.0 (`policy.save_channels`); `None`: the host's cores, at
    /// most [`DEFAULT_MAX_SAVE_CHANNELS`].
    pub channels: Option<u32>,
    /// `max-bandwidth` for the save (QEMU 7.2 caps migration at 128 MiB/s by default).
    pub max_bandwidth: u64,
    /// The state file the migration writes: its directory is probed for `O_DIRECT` (`direct-io`).
    pub state: PathBuf,
    /// The save's choice, as JSON ([`MigrationChoice`]), written with the state and read by the restore.
    pub record: PathBuf,
}

/// Pages of a RAM backend file sampled evenly for its digest, besides the first and the last (`host::ram_digest`).
pub const RAM_DIGEST_PAGES: u64 = 1024;

/// At most this many multifd channels unless the plan says otherwise (`policy.save_channels`).
pub const DEFAULT_MAX_SAVE_CHANNELS: u32 = 4;

/// Which end of a migration a [`Action::MigrationSetup`] prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationSide {
    /// The running QEMU, before `stop` and `migrate`.
    Save,
    /// A new QEMU started with `-incoming defer`, before `migrate-incoming`.
    Restore,
    /// The saving QEMU again, in a rollback: what the save side changed is set back, as the record says it was.
    Undo,
}

/// What happens to a guest's RAM: it stays in a shared file that survives the kexec, or it is copied into the
/// state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationMemory {
    /// RAM in a `share=on` file backend: only device state is saved (`x-ignore-shared`, cpr-reboot).
    Shared,
    /// RAM copied into the state file.
    Copy,
}

/// How the kexec reboot is done (`policy.kexec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootMode {
    /// `systemctl kexec` when systemd is PID 1, else `reboot(LINUX_REBOOT_CMD_KEXEC)` (`policy.kexec = "auto"`).
    Kexec,
    /// `systemctl kexec`; refused where systemd does not run the host.
    SystemdKexec,
    /// `sync()` then `reboot(LINUX_REBOOT_CMD_KEXEC)`.
    DirectKexec,
}
