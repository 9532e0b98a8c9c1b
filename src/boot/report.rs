//! The boot-time report: the one value the analysis produces, serialised as-is for `--format json` and, later,
//! stored by the executor in its journal. Its JSON shape is documented in docs/boot-time.md; add fields, never
//! rename or remove them.

use serde::Serialize;

use super::parse::LogFormat;

/// Bumped only if a field changes meaning or disappears.
pub(crate) const REPORT_VERSION: u32 = 1;

/// What one kernel boot's log says about its phases and timing, with advice (`kup boot-time`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootReport {
    /// Kernel release: the first word after `Linux version`.
    pub kernel: Option<String>,
    /// CPUs online after SMP bring-up, from its summary line (`smp: Brought up N nodes, M CPUs` and older forms).
    pub cpus: Option<u32>,
    /// NUMA nodes, from the same line when it names them.
    pub nodes: Option<u32>,
    /// The kernel's command line as logged (`Command line:` / `Kernel command line:`).
    pub cmdline: Option<String>,
    /// Always the five phases, in boot order; absent ones have `present: false`.
    pub phases: Vec<Phase>,
    /// From `Linux version` to the kernel handing over to init (`Run /init as init process`).
    pub time_to_init_s: Option<f64>,
    /// Duration of SMP bring-up in seconds, the phase that parallel bring-up shortens.
    pub smp_bringup_s: Option<f64>,
    /// Tuning advice, each with the log line it rests on.
    pub recommendations: Vec<Recommendation>,
    /// The dominant format of the log's lines.
    pub format: LogFormat,
    /// What the times are measured on.
    pub clock: Clock,
    /// The architecture, when the log gives it away.
    pub arch: Option<Arch>,
    /// Total memory from `Memory: NNNK/MMMK available` (the MMM).
    pub memory_kib: Option<u64>,
    /// `Linux version` lines in the input (0 when the log does not reach back to the kernel start).
    pub boots_in_log: usize,
    /// Which of them was analysed, 1-based; null when there is none.
    pub boot_analysed: Option<usize>,
    /// With `initcall_debug`: the slowest initcalls that ran before init, slowest first (at most 10).
    pub slowest_initcalls: Vec<Initcall>,
    /// What the reader should know about the input: out-of-order stamps, other boots, missing stamps.
    pub notes: Vec<String>,
    pub(crate) report_version: u32,
}

/// Which clock the times in a report come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// The printk clock: times are seconds since the kernel's clock started, as dmesg prints them.
    Monotonic,
    /// Dates (dmesg -T, journalctl without -o short-monotonic): seconds since the `Linux version` line,
    /// one second resolution.
    Wall,
    /// The log has no stamps: only what happened is known, not when.
    None,
}

/// CPU architecture of the logged kernel: some advice (parallel bring-up) is x86-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64 (or 32-bit x86).
    X86,
    /// AArch64.
    Arm64,
}

impl Arch {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::X86 => "x86",
            Self::Arm64 => "arm64",
        }
    }
}

/// The stretches of a kernel boot that kup can tell apart from the log alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    /// `Linux version` → secondary CPUs start coming up: memory map, ACPI, scheduler, timers.
    EarlySetup,
    /// `smp: Bringing up secondary CPUs` → `smp: Brought up N nodes, M CPUs`.
    SmpBringup,
    /// Deferred struct-page initialisation, one kernel thread per NUMA node, running in parallel.
    DeferredPages,
    /// End of the previous phase → `Freeing unused kernel …`: built-in drivers and subsystems (initcalls).
    Initcalls,
    /// `Freeing unused kernel …` → `Run /init as init process`: the kernel hands over to user space.
    Init,
}

impl PhaseName {
    /// Every phase, in boot order: the order of [`BootReport::phases`].
    pub const ALL: [PhaseName; 5] = [
        Self::EarlySetup,
        Self::SmpBringup,
        Self::DeferredPages,
        Self::Initcalls,
        Self::Init,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::EarlySetup => "early_setup",
            Self::SmpBringup => "smp_bringup",
            Self::DeferredPages => "deferred_pages",
            Self::Initcalls => "initcalls",
            Self::Init => "init",
        }
    }
}

/// One phase of a boot, with its bounds and the log lines they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub(crate) name: PhaseName,
    /// The log holds at least one of the lines its start or end is read from.
    pub present: bool,
    /// Start, in seconds on the report's [`Clock`].
    pub start_s: Option<f64>,
    /// End, in seconds on the report's [`Clock`].
    pub end_s: Option<f64>,
    /// `end_s - start_s`; null when either is unknown or when the end is stamped before the start.
    pub duration_s: Option<f64>,
    /// The log line the start was taken from (for deferred pages, the line it was computed from).
    pub(crate) start_evidence: Option<String>,
    pub(crate) end_evidence: Option<String>,
}

/// A stable identifier for each kind of advice, for scripts and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecommendationCode {
    /// Parallel CPU bring-up exists in this kernel but was not used.
    ParallelBringupOff,
    /// A large-memory machine initialised all struct pages before SMP bring-up.
    DeferredPagesOff,
    /// Every kernel message is written to a slow serial console.
    SerialConsoleNotQuiet,
    /// The boot is slow and the log cannot say which initcall is to blame.
    EnableInitcallDebug,
}

impl RecommendationCode {
    /// The kebab-case code, as in JSON and docs/boot-time.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParallelBringupOff => "parallel-bringup-off",
            Self::DeferredPagesOff => "deferred-pages-off",
            Self::SerialConsoleNotQuiet => "serial-console-not-quiet",
            Self::EnableInitcallDebug => "enable-initcall-debug",
        }
    }
}

/// One piece of boot-time tuning advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// What kind of advice.
    pub code: RecommendationCode,
    pub(crate) message: String,
    /// The exact log line the advice rests on.
    pub evidence: String,
}

/// One initcall and how long it took (`initcall_debug` lines).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Initcall {
    /// The function, without its `+0x0/0x…` offset.
    pub name: String,
    pub(crate) usecs: u64,
    pub(crate) evidence: String,
}
