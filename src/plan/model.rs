//! The checked plan: what the step graph, the dry-run and the executor consume. Every value here passed
//! validation, so later stages never re-check syntax; spans survive only where a later stage reports on them
//! (custom step ordering, which the graph checks for unknown ids and cycles).

pub use super::raw::{KexecMethod, Loader, MemoryMode, OnFailure};
use crate::hostglob::HostGlob;
use serde::Serialize;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// Journal root used when the plan does not set `policy.journal`.
pub const DEFAULT_JOURNAL: &str = "/var/lib/kup";
/// Steps run at once when the plan does not set `policy.parallelism`.
pub const DEFAULT_PARALLELISM: u32 = 4;
/// Time limit of a custom step without `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Driver a `[[pci]]` device is expected to be bound to without `driver`.
pub const DEFAULT_PCI_DRIVER: &str = "vfio-pci";

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: Option<String>,
    pub hosts: Vec<HostGlob>,
    pub kernel: Kernel,
    pub vms: Vec<Vm>,
    pub pci: Vec<PciDevice>,
    pub apps: Vec<App>,
    pub steps: Vec<CustomStep>,
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    pub initrd: Option<PathBuf>,
    pub version: Option<String>,
    /// Lower-case hex.
    pub sha256: Option<String>,
    pub loader: Loader,
    pub cmdline: CmdlineSpec,
}

/// How the new kernel's command line is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineSpec {
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

#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub driver: VmDriver,
    pub state: PathBuf,
    pub memory: MemoryMode,
    /// Guest RAM in bytes when the plan states it.
    pub memory_size: Option<u64>,
    pub devices: Vec<PciAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmDriver {
    Qmp {
        socket: PathBuf,
        restart: Vec<String>,
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
pub struct PciAddress(String);

impl PciAddress {
    /// Parses `DDDD:BB:DD.F` (hex; device ≤ 0x1f, function ≤ 7), the form sysfs uses under /sys/bus/pci/devices.
    pub fn parse(text: &str) -> Result<Self, String> {
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

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct PciDevice {
    pub address: PciAddress,
    pub driver: String,
}

#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub kind: AppKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKind {
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
    pub id: String,
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct CustomStep {
    pub name: String,
    pub run: Vec<String>,
    pub before: Vec<StepRef>,
    pub after: Vec<StepRef>,
    pub timeout: Duration,
    /// Argv that undoes the step before the point of no return.
    pub undo: Option<Vec<String>>,
    /// Safe to run again after a crash interrupted it.
    pub idempotent: bool,
    /// Span of the step's `name` value, for diagnostics about the step as a whole.
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub isolate: Option<String>,
    pub max_downtime: Option<Duration>,
    /// Span of `max_downtime`, so an estimate over budget can point at it.
    pub max_downtime_span: Option<Range<usize>>,
    pub parallelism: u32,
    pub on_failure: OnFailure,
    pub journal: PathBuf,
    pub kexec: KexecMethod,
}
