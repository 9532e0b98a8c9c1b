//! The plan as written: serde types that mirror the TOML one to one, keep every value's span for diagnostics, and
//! are the single source of the JSON Schema (`kup schema`).
//!
//! The model is deliberately flat (separate `[[vm]]`, `[[app]]` arrays, externally tagged choices): spans are lost
//! inside `#[serde(flatten)]` and untagged enums. Nothing here is checked beyond types; [`super::validate`] turns a
//! [`RawPlan`] into a checked [`super::Plan`].

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A kup plan: one live kernel update of one kind of host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kup plan", extend("$id" = "https://kup.invalid/schemas/kup-plan.schema.json"))]
pub(crate) struct RawPlan {
    /// Plan format version. Must be `1`.
    #[schemars(with = "u32")]
    pub(crate) kup: Spanned<i64>,
    /// A human name for the update, shown in reports and the journal.
    #[schemars(with = "Option<String>")]
    pub(crate) name: Option<Spanned<String>>,
    /// Hostname globs (`*`, `?`, `[a-z]`) this plan may be applied on; apply refuses any other host. Omit to allow
    /// any host.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) hosts: Vec<Spanned<String>>,
    /// The kernel to kexec into. Required unless the plan has a `[livepatch]` table instead (a plan may not have
    /// both: patch now and kexec later are two plans).
    #[schemars(with = "Option<RawKernel>")]
    pub(crate) kernel: Option<Spanned<RawKernel>>,
    /// A live patch to load into the running kernel (or to remove from it) instead of a kexec: no guest is paused,
    /// nothing reboots. Excludes `[kernel]`.
    #[schemars(with = "Option<RawLivepatch>")]
    pub(crate) livepatch: Option<Spanned<RawLivepatch>>,
    /// Virtual machines to pause, save and restore across the kexec.
    #[serde(default, rename = "vm")]
    #[schemars(rename = "vm", with = "Vec<RawVm>")]
    pub(crate) vms: Vec<Spanned<RawVm>>,
    /// PCI devices (typically VFIO pass-through) whose driver binding is checked before the kexec, and bound again
    /// after it before the guest that owns the device is restored.
    #[serde(default)]
    #[schemars(with = "Vec<RawPci>")]
    pub(crate) pci: Vec<Spanned<RawPci>>,
    /// Host applications to stop or checkpoint before the kexec and bring back after it.
    #[serde(default, rename = "app")]
    #[schemars(rename = "app", with = "Vec<RawApp>")]
    pub(crate) apps: Vec<Spanned<RawApp>>,
    /// Custom steps (argv commands) placed in the step graph with `before` / `after`.
    #[serde(default, rename = "step")]
    #[schemars(rename = "step", with = "Vec<RawStep>")]
    pub(crate) steps: Vec<Spanned<RawStep>>,
    /// How the update is carried out: isolation, downtime budget, parallelism, failure handling, journal.
    #[schemars(with = "Option<RawPolicy>")]
    pub(crate) policy: Option<Spanned<RawPolicy>>,
}

/// The kernel to kexec into.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kernel")]
pub(crate) struct RawKernel {
    /// Absolute path of the kernel image (bzImage) to load.
    #[schemars(with = "String")]
    pub(crate) image: Spanned<String>,
    /// Absolute path of the initramfs to load with it. Omit to boot without one.
    #[schemars(with = "Option<String>")]
    pub(crate) initrd: Option<Spanned<String>>,
    /// Expected kernel release (what `uname -r` will show), checked against the image's header before loading and
    /// against `uname -r` after the kexec.
    #[schemars(with = "Option<String>")]
    pub(crate) version: Option<Spanned<String>>,
    /// Expected SHA-256 of the image (64 hex digits). Pins the exact artifact.
    #[schemars(with = "Option<String>")]
    pub(crate) sha256: Option<Spanned<String>>,
    /// How the kernel is loaded: `file` (kexec_file_load, the default; works under Secure Boot with a signed image)
    /// or `legacy` (kexec-tools `kexec -l`).
    #[schemars(with = "Option<Loader>")]
    pub(crate) loader: Option<Spanned<Loader>>,
    /// The new kernel's command line. Omit to inherit the running kernel's unchanged.
    #[schemars(with = "Option<RawCmdline>")]
    pub(crate) cmdline: Option<Spanned<RawCmdline>>,
}

/// A live patch module (kpatch or any `MODULE_INFO(livepatch, "Y")` module) loaded into the running kernel, its
/// transition supervised; or, with `action = "remove"`, a loaded one disabled and removed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Livepatch")]
pub struct RawLivepatch {
    /// Absolute path of the live patch module (`.ko`, uncompressed). Required with `action = "apply"`.
    #[schemars(with = "Option<String>")]
    pub module: Option<Spanned<String>>,
    /// The live patch's name: the module's name as `/sys/kernel/livepatch/NAME` shows it (letters, digits, `_`).
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Expected SHA-256 of the module file (64 hex digits). Pins the exact artifact.
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// How long the patch's transition (every task switched to the new code) may take (`"60s"`, the default).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// `apply` (default: load the module, wait for the transition) or `remove` (disable the loaded patch, wait for
    /// the transition back, remove the module).
    #[schemars(with = "Option<LivepatchAction>")]
    pub action: Option<Spanned<LivepatchAction>>,
}

/// What a `[livepatch]` plan does with its patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LivepatchAction {
    /// Load the module and wait until every task runs the patched code.
    Apply,
    /// Disable the loaded patch, wait until every task runs the original code, remove the module.
    Remove,
}

/// How the kernel image is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Loader {
    /// `kexec_file_load(2)`: no kexec-tools needed; the kernel verifies signatures under lockdown.
    File,
    /// `kexec -l` from kexec-tools (`kexec_load(2)`), for kernels without `CONFIG_KEXEC_FILE`.
    Legacy,
}

/// The new kernel's command line: either edits applied to the running kernel's `/proc/cmdline`, or a full `value`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cmdline")]
pub(crate) struct RawCmdline {
    /// Start from the running kernel's `/proc/cmdline` (default `true`). With `false`, start from an empty line.
    #[schemars(with = "Option<bool>")]
    pub(crate) inherit: Option<Spanned<bool>>,
    /// Parameters to drop, whatever their value (`quiet`, `console`, …).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) remove: Vec<Spanned<String>>,
    /// Parameters to add or replace, as `key = "value"`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(crate) set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Parameters to add verbatim at the end (bare flags such as `nosmt`, or `key=value`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) append: Vec<Spanned<String>>,
    /// The complete command line, used as is. Excludes `inherit`, `remove`, `set` and `append`.
    #[schemars(with = "Option<String>")]
    pub(crate) value: Option<Spanned<String>>,
}

/// A virtual machine kept alive across the kexec.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vm")]
pub(crate) struct RawVm {
    /// Unique name; used in step ids (`vm:NAME:pause`). Letters, digits, `.`, `_`, `-`.
    #[schemars(with = "String")]
    pub(crate) name: Spanned<String>,
    /// QEMU driver: absolute path of the running QEMU's QMP unix socket. Exactly one of `qmp` and `libvirt`.
    #[schemars(with = "Option<String>")]
    pub(crate) qmp: Option<Spanned<String>>,
    /// QEMU driver: the user the guest's QEMU runs as (`-runas`, a `User=` unit), when its QMP socket is not
    /// root's. kup, running as root, refuses a QMP socket another user owns unless it is the one named here:
    /// whoever owns the socket answers kup's commands.
    #[schemars(with = "Option<String>")]
    pub(crate) qmp_owner: Option<Spanned<String>>,
    /// libvirt driver: the domain name (`virsh save` / `virsh restore`). Exactly one of `qmp` and `libvirt`.
    #[schemars(with = "Option<String>")]
    pub(crate) libvirt: Option<Spanned<String>>,
    /// libvirt driver: the connection URI, passed as `virsh -c URI` (for example `qemu:///system`). Default:
    /// virsh's own choice (`LIBVIRT_DEFAULT_URI`, else `qemu:///system` for root).
    #[schemars(with = "Option<String>")]
    pub(crate) libvirt_uri: Option<Spanned<String>>,
    /// Directory for the saved state. Must survive the kexec: not tmpfs (`/run`, `/dev/shm`). Default
    /// `<policy.journal>/state/<name>`.
    #[schemars(with = "Option<String>")]
    pub(crate) state: Option<Spanned<String>>,
    /// `shared`: guest RAM lives in a `share=on` file backend that survives the kexec and is not copied
    /// (x-ignore-shared); `copy` (default): RAM is written into the state file.
    #[schemars(with = "Option<MemoryMode>")]
    pub(crate) memory: Option<Spanned<MemoryMode>>,
    /// Guest RAM size (`"2GiB"`, `"512MiB"`), used for the downtime estimate. Read over QMP at apply time when
    /// omitted.
    #[schemars(with = "Option<String>")]
    pub(crate) memory_size: Option<Spanned<String>>,
    /// QEMU driver: argv that starts QEMU again after the kexec, with `-incoming defer` (for example
    /// `["systemctl", "start", "qemu@db-1"]`). Required with `qmp`.
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) restart: Option<Spanned<Vec<Spanned<String>>>>,
    /// PCI addresses (`DDDD:BB:DD.F`) of devices this VM owns; each must be declared in a `[[pci]]` table.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) devices: Vec<Spanned<String>>,
    /// `save` (default): the guest is paused, saved and restored, its OS never noticing the kexec. `restart`: the
    /// guest cannot be saved (a passed-through device without migration support, such as most VFIO devices) and
    /// its owner accepts a reboot: kup shuts it down before the kexec (ACPI power button, then `quit` after
    /// `shutdown_timeout`) and starts it again afterwards with `restart` (which then must not add
    /// `-incoming defer`). QMP driver only.
    #[schemars(with = "Option<Handover>")]
    pub(crate) handover: Option<Spanned<Handover>>,
    /// With `handover = "restart"`: how long the guest OS gets to power off after the ACPI power button before
    /// kup quits QEMU (default `"60s"`).
    #[schemars(with = "Option<String>")]
    pub(crate) shutdown_timeout: Option<Spanned<String>>,
    /// The systemd unit that hosts this guest's QEMU (`"qemu@db-1.service"`; for libvirt, `"libvirtd.service"`).
    /// With `policy.isolate`, kup keeps it out of the isolate (a runtime drop-in with `IgnoreOnIsolate=yes`), so
    /// the isolate can run before the first guest pauses. A guest without `unit` would be stopped by the isolate:
    /// the isolate then waits until it is saved, inside the guests' downtime.
    #[schemars(with = "Option<String>")]
    pub(crate) unit: Option<Spanned<String>>,
    /// Names of the `[[app]]`s this guest needs while it runs (SPDK serving its disks over vhost-user, DPDK its
    /// NIC): each is stopped only after this guest is saved, and started on the new kernel before it is restored.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) needs: Vec<Spanned<String>>,
}

/// How a guest crosses the kexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Handover {
    /// Paused, saved, restored and resumed: the guest keeps running state.
    Save,
    /// Shut down before the kexec and booted again after it.
    Restart,
}

/// Where a VM's RAM goes across the kexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MemoryMode {
    /// RAM is in a shared file backend that survives the kexec; only device state is saved.
    Shared,
    /// RAM is copied into the state file.
    Copy,
}

/// A PCI device whose driver binding must hold before the kexec and is made to hold again after it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pci")]
pub(crate) struct RawPci {
    /// PCI address in `DDDD:BB:DD.F` form (domain, bus, device, function; hex).
    #[schemars(with = "String")]
    pub(crate) address: Spanned<String>,
    /// Expected driver binding (default `vfio-pci`); after the kexec the device is bound to it again.
    #[schemars(with = "Option<String>")]
    pub(crate) driver: Option<Spanned<String>>,
}

/// A host application brought across the kexec. Exactly one of `systemd`, `criu`, or `save`/`restore` hooks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "App")]
pub(crate) struct RawApp {
    /// Unique name; used in step ids (`app:NAME:save`). Letters, digits, `.`, `_`, `-`.
    #[schemars(with = "String")]
    pub(crate) name: Spanned<String>,
    /// A systemd unit stopped before the kexec and started after it.
    #[schemars(with = "Option<String>")]
    pub(crate) systemd: Option<Spanned<String>>,
    /// A process checkpointed with CRIU before the kexec and restored after it.
    #[schemars(with = "Option<RawCriu>")]
    pub(crate) criu: Option<Spanned<RawCriu>>,
    /// Hook argv run to save the app before the kexec.
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) save: Option<Spanned<Vec<Spanned<String>>>>,
    /// Hook argv run to restore the app after the kexec.
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) restore: Option<Spanned<Vec<Spanned<String>>>>,
}

/// CRIU checkpoint of one process tree.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Criu")]
pub(crate) struct RawCriu {
    /// Absolute path of a file holding the PID of the process tree's root.
    #[schemars(with = "String")]
    pub(crate) pidfile: Spanned<String>,
    /// Absolute path of the CRIU images directory; must survive the kexec.
    #[schemars(with = "String")]
    pub(crate) images: Spanned<String>,
}

/// A custom step: an argv command placed in the step graph.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub(crate) struct RawStep {
    /// Unique name; the step's id is `step:NAME`. Letters, digits, `.`, `_`, `-`.
    #[schemars(with = "String")]
    pub(crate) name: Spanned<String>,
    /// The argv to run (no shell: `["/usr/local/bin/lb", "drain", "hv-7"]`).
    #[schemars(with = "Vec<String>")]
    pub(crate) run: Spanned<Vec<Spanned<String>>>,
    /// Step ids this step must run before (for example `"vm:db-1:pause"`, `"kexec"`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) before: Vec<Spanned<String>>,
    /// Step ids this step must run after (for example `"vm:db-1:resume"`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) after: Vec<Spanned<String>>,
    /// Time limit (`"30s"`, `"1m 30s"`); the step fails when it runs longer. Default `"5m"`.
    #[schemars(with = "Option<String>")]
    pub(crate) timeout: Option<Spanned<String>>,
    /// The argv that undoes this step, run when a later step fails before the kexec (`policy.on_failure =
    /// "rollback"`). Omit when there is nothing to undo.
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) undo: Option<Spanned<Vec<Spanned<String>>>>,
    /// Whether running the step twice is harmless (default `false`). After a crash, `kup plan resume` re-runs an
    /// interrupted idempotent step; an interrupted non-idempotent one stops the resume for an operator to check.
    #[schemars(with = "Option<bool>")]
    pub(crate) idempotent: Option<Spanned<bool>>,
}

/// How the update is carried out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Policy")]
pub(crate) struct RawPolicy {
    /// systemd target to isolate just before the kexec (for example `rescue.target`). Omit to skip.
    #[schemars(with = "Option<String>")]
    pub(crate) isolate: Option<Spanned<String>>,
    /// Longest acceptable guest downtime (`"3s"`); validation fails when the estimate exceeds it.
    #[schemars(with = "Option<String>")]
    pub(crate) max_downtime: Option<Spanned<String>>,
    /// How long the preflush before the first pause may go on starting new write-back passes over the shared
    /// guests' RAM files (default `"10s"`); a pass under way finishes. What it leaves is flushed inside the downtime.
    #[schemars(with = "Option<String>")]
    pub(crate) preflush_timeout: Option<Spanned<String>>,
    /// How many steps may run at once (default 4). At least 1.
    #[schemars(with = "Option<u32>")]
    pub(crate) parallelism: Option<Spanned<i64>>,
    /// Parallel channels (`multifd-channels`) for saving copied guest RAM on QEMU ≥ 9.0 (`mapped-ram` +
    /// `multifd`), 1 to 255; default: the host's cores, at most 4. QEMU < 9.0 saves through one stream.
    #[schemars(with = "Option<u32>", range(min = 1, max = 255))]
    pub(crate) save_channels: Option<Spanned<i64>>,
    /// On a failure before the kexec: `rollback` (default: resume VMs, restart apps, unload the kernel) or `stop`
    /// (leave everything as it is for an operator).
    #[schemars(with = "Option<OnFailure>")]
    pub(crate) on_failure: Option<Spanned<OnFailure>>,
    /// Directory for checkpoint journals (default `/var/lib/kup`). Must survive the kexec.
    #[schemars(with = "Option<String>")]
    pub(crate) journal: Option<Spanned<String>>,
    /// A node_exporter textfile-collector file (`…/kup.prom`) that apply and resume rewrite, atomically, with the
    /// last apply's metrics (docs/executor.md). Resume after the kexec writes it too.
    #[schemars(with = "Option<String>")]
    pub(crate) metrics: Option<Spanned<String>>,
    /// How the kexec is executed: `auto` (default: `systemd` when systemd runs the host, else `direct`),
    /// `systemd` (`systemctl kexec`: services stop and file systems unmount cleanly) or `direct` (`sync()` then
    /// `reboot(LINUX_REBOOT_CMD_KEXEC)`: faster to start the new kernel, but file systems stay mounted).
    #[schemars(with = "Option<KexecMethod>")]
    pub(crate) kexec: Option<Spanned<KexecMethod>>,
}

/// How the kexec is executed once the kernel is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KexecMethod {
    /// `systemd` when systemd is PID 1, else `direct`.
    Auto,
    /// `systemctl kexec`: a clean shutdown into the loaded kernel.
    Systemd,
    /// `sync()` then `reboot(LINUX_REBOOT_CMD_KEXEC)`: file systems stay mounted (ext4 replays its journal).
    Direct,
}

/// What to do when a step fails before the point of no return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnFailure {
    /// Undo every completed step in reverse order: resume VMs, restart apps, unload the kernel.
    Rollback,
    /// Leave the host as it is for an operator.
    Stop,
}
