//! The checked plan: what the step graph, the dry-run and the executor consume. Every value here passed
//! validation, so later stages never re-check syntax; spans survive only where a later stage reports on them
//! (custom step ordering, which the graph checks for unknown ids and cycles).

pub(crate) use super::raw::{KexecMethod, LivepatchAction, Loader, MemoryMode, OnFailure};

/// Time the guest OS of a `handover = "restart"` VM gets to power off without `shutdown_timeout`.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
use crate::hostglob::HostGlob;
use serde::Serialize;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// Journal root used when the plan does not set `policy.journal`.
pub(crate) const DEFAULT_JOURNAL: &str = "/var/lib/kup";
/// Steps run at once when the plan does not set `policy.parallelism`.
pub(crate) const DEFAULT_PARALLELISM: u32 = 4;
/// Time limit of a custom step without `timeout`.
pub(crate) const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Time limit of a live patch's transition without `livepatch.timeout`.
pub(crate) const DEFAULT_LIVEPATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the preflush goes on starting new write-back passes while the remainder shrinks, unless
/// `policy.preflush_timeout` says otherwise (one pass already under way finishes: stopping it would only move its
/// writes into the downtime).
pub(crate) const DEFAULT_PREFLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Driver a `[[pci]]` device is expected to be bound to without `driver`.
pub(crate) const DEFAULT_PCI_DRIVER: &str = "vfio-pci";

/// A checked plan: what to update to, which guests and apps to carry over, and how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) name: Option<String>,
    pub(crate) hosts: Vec<HostGlob>,
    /// The kernel to kexec into; `None` in a live patch plan (validation allows exactly one of the two).
    pub(crate) kernel: Option<Kernel>,
    /// The live patch to load or remove instead of a kexec.
    pub(crate) livepatch: Option<Livepatch>,
    /// The guests paused and saved before the kexec and restored after it (`[[vm]]`).
    pub vms: Vec<Vm>,
    pub(crate) pci: Vec<PciDevice>,
    /// Host apps stopped or checkpointed before the kexec and brought back after it (`[[app]]`).
    pub apps: Vec<App>,
    /// The plan's own steps (`[[step]]`), placed among the built-in ones by `before` / `after`.
    pub steps: Vec<CustomStep>,
    /// How the update runs (`[policy]`).
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub(crate) image: PathBuf,
    pub(crate) initrd: Option<PathBuf>,
    pub(crate) version: Option<String>,
    /// Lower-case hex.
    pub(crate) sha256: Option<String>,
    pub(crate) loader: Loader,
    pub(crate) cmdline: CmdlineSpec,
}

/// A live patch: loaded into the running kernel (or removed from it), no kexec, no guest touched.
#[derive(Debug, Clone)]
pub struct Livepatch {
    /// The module file; `None` only with `action = Remove`.
    pub module: Option<PathBuf>,
    /// The name under `/sys/kernel/livepatch`.
    pub name: String,
    /// Lower-case hex.
    pub sha256: Option<String>,
    /// Longest wait for a transition.
    pub timeout: Duration,
    /// Load the patch, or remove it.
    pub action: LivepatchAction,
}

impl Plan {
    /// Whether this plan live-patches the running kernel rather than kexecs a new one.
    pub fn is_livepatch(&self) -> bool {
        self.livepatch.is_some()
    }
}

/// How the new kernel's command line is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CmdlineSpec {
    /// Start from the running kernel's (or an empty) command line, then remove, set, append — in that order.
    Edit {
        inherit: bool,
        remove: Vec<String>,
        set: Vec<(String, String)>,
        append: Vec<String>,
    },
    /// Use this command line verbatim.
    Replace(String),
}

/// A guest kept across the kexec (`[[vm]]`).
#[derive(Debug, Clone)]
pub struct Vm {
    /// Unique among the plan's VMs; step ids use it (`vm:NAME:pause`).
    pub name: String,
    pub(crate) driver: VmDriver,
    pub(crate) state: PathBuf,
    pub(crate) memory: MemoryMode,
    /// Guest RAM in bytes when the plan states it.
    pub(crate) memory_size: Option<u64>,
    pub(crate) devices: Vec<PciAddress>,
    pub(crate) handover: Handover,
    /// The systemd unit hosting its QEMU (`vm.unit`), kept out of `policy.isolate`.
    pub(crate) unit: Option<String>,
    /// Indices into the plan's `apps` of the apps it needs while it runs (`vm.needs`), in plan order.
    pub(crate) needs: Vec<usize>,
}

/// How a guest crosses the kexec (`vm.handover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handover {
    /// Paused, saved, restored, resumed: `vm:NAME:pause` … `vm:NAME:resume`.
    Save,
    /// Shut down before the kexec and booted again after it: `vm:NAME:shutdown`, `vm:NAME:boot`.
    Restart {
        /// How long the guest OS gets to power off before QEMU is quit.
        shutdown_timeout: Duration,
    },
}

impl Vm {
    /// Whether the guest is rebooted across the kexec rather than saved.
    pub(crate) fn restarts(&self) -> bool {
        matches!(self.handover, Handover::Restart { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VmDriver {
    Qmp {
        socket: PathBuf,
        restart: Vec<String>,
        /// `qmp_owner`: the user whose QMP socket kup accepts besides root's.
        owner: Option<String>,
    },
    Libvirt {
        domain: String,
        /// `virsh -c URI`; `None`: virsh's default connection.
        uri: Option<String>,
    },
}

/// A PCI address `DDDD:BB:DD.F`, normalised to lower case as sysfs spells it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub(crate) struct PciAddress(String);

impl PciAddress {
    /// Parses `DDDD:BB:DD.F` (hex; device ≤ 0x1f, function ≤ 7), the form sysfs uses under /sys/bus/pci/devices.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a PCI address of the form DDDD:BB:DD.F (for example 0000:3b:00.0)"
            )
        };
        let (domain, rest) = text.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (device, function) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
        if !(hex(domain, 4) && hex(bus, 2) && hex(device, 2) && hex(function, 1)) {
            return Err(bad());
        }
        let device_number = u8::from_str_radix(device, 16).map_err(|_| bad())?;
        if device_number > 0x1f {
            return Err(format!(
                "device number 0x{device} in `{text}` is above 0x1f"
            ));
        }
        let function_number = u8::from_str_radix(function, 16).map_err(|_| bad())?;
        if function_number > 7 {
            return Err(format!("function number {function} in `{text}` is above 7"));
        }
        Ok(Self(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PciDevice {
    pub(crate) address: PciAddress,
    pub(crate) driver: String,
}

/// A host app carried across the kexec (`[[app]]`): a systemd unit, a CRIU-checkpointed process or hooks.
#[derive(Debug, Clone)]
pub struct App {
    /// Unique among the plan's apps; step ids use it (`app:NAME:save`).
    pub name: String,
    pub(crate) kind: AppKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppKind {
    Systemd {
        unit: String,
    },
    Criu {
        pidfile: PathBuf,
        images: PathBuf,
    },
    Hooks {
        save: Option<Vec<String>>,
        restore: Option<Vec<String>>,
    },
}

/// An id in a custom step's `before` / `after`, with where it was written so the graph can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    /// The step id as written (`vm:db-1:pause`, `step:drain-lb`).
    pub id: String,
    pub(crate) span: Range<usize>,
}

/// A step the plan adds (`[[step]]`): a command run at a point it chooses in the update.
#[derive(Debug, Clone)]
pub struct CustomStep {
    /// Its name; its id is `step:NAME`.
    pub name: String,
    pub(crate) run: Vec<String>,
    /// Steps that must wait for this one.
    pub before: Vec<StepRef>,
    /// Steps this one waits for.
    pub after: Vec<StepRef>,
    pub(crate) timeout: Duration,
    /// Argv that undoes the step before the point of no return.
    pub(crate) undo: Option<Vec<String>>,
    /// Safe to run again after a crash interrupted it.
    pub(crate) idempotent: bool,
}

/// How the update runs (`[policy]`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// The systemd target to `systemctl isolate` just before the kexec (`rescue.target`).
    pub isolate: Option<String>,
    /// The longest acceptable guest downtime: `validate` fails when the estimate exceeds it.
    pub max_downtime: Option<Duration>,
    /// Span of `max_downtime`, so an estimate over budget can point at it.
    pub(crate) max_downtime_span: Option<Range<usize>>,
    /// How long the preflush may start new write-back passes (`policy.preflush_timeout`).
    pub(crate) preflush_timeout: Duration,
    pub(crate) parallelism: u32,
    /// `multifd-channels` for a copied-RAM save on QEMU ≥ 9.0; `None`: the host's cores, at most 4.
    pub(crate) save_channels: Option<u32>,
    pub(crate) on_failure: OnFailure,
    pub(crate) journal: PathBuf,
    pub(crate) kexec: KexecMethod,
    /// The node_exporter textfile apply and resume write their metrics to (`policy.metrics`).
    pub(crate) metrics: Option<PathBuf>,
}
