//! The action vocabulary: everything kup may ask of a host, as data.
//!
//! `graph` compiles a plan's steps into these, the dry-run prints them ([`Action::describe`]), `exec` schedules them
//! and `host` performs them. Being data is what lets the dry-run show exactly what apply will do, and lets the
//! engine run against a recording host in tests. This module imports nothing else of kup's: it is the contract
//! between the pure layers and the one with side effects.

mod describe;
mod output;
mod quote;

pub use describe::qmp_message;
pub use output::{
    ActionFailure, ActionOutput, FileCommitted, LivepatchModule, LivepatchState, MemoryBackend,
    PciDevice, TargetKernel,
};
pub use quote::shell_quote;

use serde::Serialize;
use std::path::PathBuf;

/// Placeholder in a CRIU argv for the PID read from the app's pidfile when the action runs.
pub const PID_PLACEHOLDER: &str = "{pid}";

/// One thing the executor does. Durations are in milliseconds in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Run a program (no shell), killing it after `timeout_ms`.
    Exec { argv: Vec<String>, timeout_ms: u64 },
    /// Send one QMP command on `socket`. Commands of one step share a connection, opened with
    /// `qmp_capabilities` (listed explicitly).
    Qmp {
        socket: PathBuf,
        command: String,
        args: serde_json::Value,
        /// For `migrate` / `migrate-incoming` to or from a state file: on QEMU ≥ 8.2 (`query-version`) the
        /// `exec:cat` URI in `args` is replaced by `file:` this path, which needs no `cat` process and no shell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_uri: Option<PathBuf>,
    },
    /// Repeat a QMP query until `field` of its reply equals `until`; fail after `timeout_ms`.
    QmpWait {
        socket: PathBuf,
        command: String,
        field: String,
        until: String,
        timeout_ms: u64,
    },
    /// Wait until a unix socket accepts connections.
    WaitForSocket { path: PathBuf, timeout_ms: u64 },
    /// `kexec_file_load(kernel_fd, initrd_fd, cmdline)`; no initrd means `KEXEC_FILE_NO_INITRAMFS`.
    KexecFileLoad {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// `kexec_file_load(-1, -1, "", KEXEC_FILE_UNLOAD)`.
    KexecUnload,
    /// `reboot(LINUX_REBOOT_CMD_KEXEC)` — or `systemctl kexec` when systemd is PID 1 (the clean path, chosen on
    /// the host).
    Reboot(RebootMode),
    /// `sync(2)`: state files durable before the kexec.
    Sync,
    /// kexec is allowed on this kernel (`kernel.kexec_load_disabled` is 0: once set to 1 it cannot be unset
    /// before the next boot, so every later load would fail).
    CheckKexecEnabled,
    /// Check that a file exists and, when pinned, has this SHA-256.
    CheckFile {
        path: PathBuf,
        sha256: Option<String>,
    },
    /// Check that a kernel image is a bzImage and, when the plan names one, that its header's release (what
    /// `uname -r` will show) is `release`.
    CheckKernelImage {
        path: PathBuf,
        release: Option<String>,
    },
    /// Check the kernel the kexec will boot: its release's modules under `/lib/modules`, an initrd built for that
    /// release, and (from its build configuration, when installed) the options the command line relies on; the
    /// command line is linted against the release (warnings only). `release` is the plan's pin, else the image's.
    CheckTargetKernel {
        image: PathBuf,
        release: Option<String>,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// Check that the host name matches one of the plan's globs.
    CheckHostname { globs: Vec<String> },
    /// `criu dump` / `criu restore`: `argv` holds [`PID_PLACEHOLDER`] where the PID read from `pidfile` goes.
    Criu {
        argv: Vec<String>,
        pidfile: PathBuf,
        timeout_ms: u64,
    },
    /// Make a finished state file durable under its final name: fsync `from`, rename it to `to`, fsync the
    /// directory. A `to` left by an earlier run is first renamed aside (`to.kept-N`), never overwritten.
    CommitFile { from: PathBuf, to: PathBuf },
    /// Rename a file an earlier run left at `path` to `path.kept-N` (first free N); nothing if there is none.
    KeepAside { path: PathBuf },
    /// For `memory = "shared"`: the guest's RAM must be a `memory-backend-file` with `share=on` on a file system
    /// that survives a kexec (not tmpfs, ramfs or hugetlbfs); otherwise the RAM is lost, so refuse.
    CheckSharedRam { socket: PathBuf },
    /// Send `quit` to a QEMU that still answers on `socket` (a rehearsal, or a retried restore) and wait for it
    /// to close its socket, not for its process to end. After a real kexec nothing answers and nothing is done.
    /// A guest found running is refused: it has moved on since its state file was written.
    QmpQuit { socket: PathBuf, timeout_ms: u64 },
    /// A PCI device under `/sys/bus/pci/devices/ADDRESS`: bound to `driver` and, when `iommu`, in an IOMMU group
    /// (the IOMMU is on), as VFIO needs.
    CheckPci {
        address: String,
        driver: String,
        iommu: bool,
    },
    /// Run a program and compare its trimmed stdout with one of `expect`, whatever its exit status
    /// (`systemctl is-active` exits 3 when it prints `inactive`).
    CheckOutput {
        argv: Vec<String>,
        expect: Vec<String>,
        timeout_ms: u64,
    },
    /// Create a directory (and its parents, mode 0700) unless it exists.
    EnsureDir { path: PathBuf },
    /// Delete a state file once the guest it belongs to runs again and was verified.
    RemoveFile { path: PathBuf },
    /// The running kernel can be live-patched: `/sys/kernel/livepatch` exists (`CONFIG_LIVEPATCH`).
    CheckLivepatchSupport,
    /// A live patch module fit to load into the running kernel: its `.modinfo` says `livepatch=Y` and names
    /// `name`, its `vermagic` release is the running release (`uname -r`), no patch of that name is loaded, and
    /// lockdown or `module.sig_enforce` would not refuse it for want of a signature.
    CheckLivepatchModule { path: PathBuf, name: String },
    /// `finit_module(fd, "", 0)` of a module file (no insmod).
    LoadModule { path: PathBuf },
    /// Wait until `/sys/kernel/livepatch/NAME/transition` reads 0 (every task switched), then check that `enabled`
    /// reads 1; on a timeout, name the tasks still in the old state (`/proc/*/task/*/patch_state`).
    WaitLivepatchTransition { name: String, timeout_ms: u64 },
    /// `/sys/kernel/livepatch/NAME`: with `loaded`, enabled and not in transition; without, gone, and no module
    /// of that name loaded.
    CheckLivepatch { name: String, loaded: bool },
    /// Write 0 to `/sys/kernel/livepatch/NAME/enabled` and wait until the patch is gone (its transition back done);
    /// nothing when no such patch is loaded.
    DisableLivepatch { name: String, timeout_ms: u64 },
    /// `delete_module(name, O_NONBLOCK)`, retried while the module is busy (a disabled patch is freed a moment
    /// after its transition); nothing when no such module is loaded.
    UnloadModule { name: String, timeout_ms: u64 },
}

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
