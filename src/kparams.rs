//! Kernel parameters kup knows, and a lint over a command line: the kernel itself never complains about a
//! parameter it does not know (it ignores it, or hands it to init), so a misspelt `cpuhp.paralel=1`, a
//! `cpuhp.parallel=1` on a kernel that predates it, or `mitigations=on` (not a value: the kernel keeps its
//! defaults) all boot silently. This module says so before the kexec.
//!
//! Pure: a table and functions over `Param`s. `kup plan validate` runs it on what a plan writes
//! (`src/plan/cmdline_lint.rs` adds the spans); the dry-run and preflight can run [`lint_cmdline`] on the final
//! command line with the release read from the real image's header ([`crate::kernel_image::KernelImage::release`]).
//!
//! Every finding is a warning, never an error: the kernel boots with all of these, and kup cannot know every
//! parameter of every module. The table is deliberately small and honest — parameters a virtualisation host's
//! command line commonly carries, the ones kup's own features rely on, and real parameters whose names sit close
//! to those, so that they are not mistaken for typos. Releases are given only where they are certain (checked
//! against the kernel's own sources and `Documentation/admin-guide/kernel-parameters.txt`).

use crate::cmdline::{Cmdline, Param, keys_match};
use std::fmt;

/// A kernel release reduced to what feature checks compare: `6.1.0-27-cloud-amd64` → 6.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct KernelRelease {
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

impl KernelRelease {
    pub(crate) const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Reads `uname -r` style releases: `6.1.0-27-cloud-amd64`, `7.2.13+deb14-cloud-amd64`, `6.12.9-lts`,
    /// `5.14.0-570.23.1.el9_6.x86_64`, `6.6.10-arch1-1`, `6.5-rc1`. `None` when it does not start with
    /// `MAJOR.MINOR`.
    pub(crate) fn parse(release: &str) -> Option<Self> {
        let mut parts = release.split(['.', '-', '+', '_']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }
}

impl fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What values a parameter accepts, as far as kup checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueRule {
    /// Anything (or nothing): kup does not judge it.
    Any,
    /// A bare flag; a value is ignored by the kernel, so it is not judged either.
    Flag,
    /// `kstrtobool()`: `1`/`0`, `y`/`n`, `t`/`f` (and words starting with them: `yes`, `true`), `on`/`off`.
    /// A missing value is refused by the kernel (an `early_param` that calls `kstrtobool()`).
    Bool,
    /// A module's `bool` parameter (`module_param(…, bool, …)`): the same values, and a bare name means true.
    ModuleBool,
    /// A decimal integer, optionally negative (`panic=-1`).
    Integer,
    /// One of these words exactly.
    OneOf(&'static [&'static str]),
    /// Starts with one of these words: `mitigations=auto,nosmt` and newer kernels' attack-vector lists.
    StartsWith(&'static [&'static str]),
}

impl ValueRule {
    /// `None` when `value` is acceptable, else what is expected.
    fn check(self, value: Option<&str>) -> Option<String> {
        let ok = match (self, value) {
            (ValueRule::Any | ValueRule::Flag, _) => true,
            (ValueRule::Bool | ValueRule::ModuleBool, Some(v)) => is_kstrtobool(v),
            (ValueRule::ModuleBool, None) => true,
            (ValueRule::Integer, Some(v)) => {
                let digits = v.strip_prefix('-').unwrap_or(v);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }
            (ValueRule::OneOf(words), Some(v)) => words.contains(&v),
            (ValueRule::StartsWith(words), Some(v)) => words.iter().any(|w| {
                v.strip_prefix(w)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([',', ';']))
            }),
            (_, None) => false,
        };
        (!ok).then(|| self.expected())
    }

    fn expected(self) -> String {
        match self {
            ValueRule::Any | ValueRule::Flag => "anything".into(),
            ValueRule::Bool | ValueRule::ModuleBool => {
                "a boolean: 1 or 0, y or n, on or off".into()
            }
            ValueRule::Integer => "a whole number".into(),
            ValueRule::OneOf(words) => format!("one of {}", words.join(", ")),
            ValueRule::StartsWith(words) => {
                format!("{} (optionally followed by options)", words.join(" or "))
            }
        }
    }
}

/// `kstrtobool()` (lib/kstrtox.c) as current kernels have it: only the first one or two characters count. (Older
/// kernels also refuse `t`/`f`; kup accepts them, so it may miss a bad value there but never invents one.)
fn is_kstrtobool(value: &str) -> bool {
    let b = value.as_bytes();
    match b.first() {
        Some(b'y' | b'Y' | b't' | b'T' | b'1' | b'n' | b'N' | b'f' | b'F' | b'0') => true,
        Some(b'o' | b'O') => matches!(b.get(1), Some(b'n' | b'N' | b'f' | b'F')),
        _ => false,
    }
}

/// What the kernel does when a parameter is given more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeats {
    /// Each occurrence overwrites the last: only the last value counts.
    LastWins,
    /// Every occurrence counts (`console=tty0 console=ttyS0`, several `memmap=` regions), or kup does not know.
    Accumulates,
}

/// One parameter kup knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownParam {
    pub(crate) name: &'static str,
    /// The first mainline release that has it; `None` when every kernel kup meets has it (or when kup is not
    /// sure, which it then does not claim).
    pub(crate) since: Option<KernelRelease>,
    pub(crate) value: ValueRule,
    pub(crate) repeats: Repeats,
}

const fn p(name: &'static str, value: ValueRule, repeats: Repeats) -> KnownParam {
    KnownParam {
        name,
        since: None,
        value,
        repeats,
    }
}

const fn since(name: &'static str, major: u32, minor: u32, value: ValueRule) -> KnownParam {
    KnownParam {
        name,
        since: Some(KernelRelease::new(major, minor)),
        value,
        repeats: Repeats::LastWins,
    }
}

use Repeats::{Accumulates as Many, LastWins as Last};
use ValueRule::{Any, Bool, Flag, Integer, ModuleBool, OneOf, StartsWith};

/// The table. Releases: `cpuhp.parallel` (kernel/cpu.c, parallel CPU bring-up, 6.5), `kho` and `kho_scratch`
/// (Kexec HandOver, kernel/kexec_handover.c, 6.16), `liveupdate` (the Live Update Orchestrator, 6.19),
/// `init_on_alloc`/`init_on_free` (5.3), `page_alloc.shuffle` (5.2). The others predate any kernel a kup host
/// runs, or their history does not matter here.
pub(crate) const KNOWN: &[KnownParam] = &[
    // What kup's features rely on.
    since("cpuhp.parallel", 6, 5, Bool),
    since("kho", 6, 16, Bool),
    since("kho_scratch", 6, 16, Any),
    since("liveupdate", 6, 19, Bool),
    p("memmap", Any, Many),
    // IOMMU and VFIO: comma-separated options that add up over several occurrences.
    p("intel_iommu", Any, Many),
    p("amd_iommu", Any, Many),
    p("iommu", Any, Many),
    p("iommu.passthrough", Bool, Last),
    p("iommu.strict", Bool, Last),
    p("vfio-pci.ids", Any, Last),
    p("vfio_iommu_type1.allow_unsafe_interrupts", ModuleBool, Last),
    p("kvm.ignore_msrs", ModuleBool, Last),
    p("kvm-intel.nested", ModuleBool, Last),
    p("kvm-amd.nested", ModuleBool, Last),
    // CPUs, SMT and speculation mitigations.
    p("nosmt", Any, Last),
    p("nosmp", Flag, Last),
    p("maxcpus", Integer, Last),
    p("nr_cpus", Integer, Last),
    p("possible_cpus", Integer, Last),
    p("isolcpus", Any, Last),
    p("nohz_full", Any, Last),
    p("rcu_nocbs", Any, Last),
    p("irqaffinity", Any, Last),
    // `off`, `auto`, `auto,nosmt`; newer kernels add attack-vector options after `auto`. Anything else makes the
    // kernel print "Unsupported mitigations=…, system may still be vulnerable" and keep its defaults.
    p("mitigations", StartsWith(&["off", "auto"]), Last),
    p("tsx", OneOf(&["on", "off", "auto"]), Last),
    p("nosmap", Flag, Last),
    p("nosmep", Flag, Last),
    p("nopti", Flag, Last),
    p("pti", Any, Last),
    p("nospectre_v1", Flag, Last),
    p("nospectre_v2", Flag, Last),
    p("spectre_v2", Any, Last),
    p("l1tf", Any, Last),
    p("mds", Any, Last),
    p("nokaslr", Flag, Last),
    // Console and logging.
    p("quiet", Flag, Last),
    p("debug", Flag, Last),
    p("loglevel", Integer, Last),
    p("ignore_loglevel", Flag, Last),
    p("log_buf_len", Any, Last),
    p("console", Any, Many),
    p("consoleblank", Integer, Last),
    p("earlycon", Any, Last),
    p("earlyprintk", Any, Last),
    p("printk.time", ModuleBool, Last),
    p("initcall_debug", Flag, Last),
    // Panics.
    p("panic", Integer, Last),
    p("panic_on_warn", Integer, Last),
    p("oops", OneOf(&["panic"]), Last),
    // Root file system and init.
    p("init", Any, Last),
    p("rdinit", Any, Last),
    // The EFI stub loads every `initrd=` (microcode first, then the initramfs), so they add up.
    p("initrd", Any, Many),
    p("noinitrd", Flag, Last),
    p("root", Any, Last),
    p("rootfstype", Any, Last),
    p("rootflags", Any, Last),
    p("rootwait", Any, Last),
    p("rootdelay", Integer, Last),
    p("rw", Flag, Last),
    p("ro", Flag, Last),
    p("resume", Any, Last),
    p("noresume", Flag, Last),
    // Memory.
    p("mem", Any, Last),
    p("crashkernel", Any, Many),
    p("hugepagesz", Any, Many),
    p("hugepages", Any, Many),
    p("default_hugepagesz", Any, Last),
    p(
        "transparent_hugepage",
        OneOf(&["always", "madvise", "never"]),
        Last,
    ),
    since("init_on_alloc", 5, 3, Bool),
    since("init_on_free", 5, 3, Bool),
    since("page_alloc.shuffle", 5, 2, ModuleBool),
    p("numa_balancing", OneOf(&["enable", "disable"]), Last),
    // Devices and platform.
    p("pcie_aspm", OneOf(&["off", "force"]), Last),
    p("nomodeset", Flag, Last),
    p("modprobe.blacklist", Any, Many),
    p("module_blacklist", Any, Last),
    p("processor.max_cstate", Integer, Last),
    p("intel_idle.max_cstate", Integer, Last),
    p("intel_pstate", Any, Many),
    p("clocksource", Any, Last),
    p("tsc", Any, Many),
    p("nmi_watchdog", Any, Last),
    p("nowatchdog", Flag, Last),
    p("threadirqs", Flag, Last),
    p("audit", Any, Last),
    p("selinux", Any, Last),
    p("apparmor", Any, Last),
    p("lsm", Any, Last),
    p("security", Any, Last),
    p("ipv6.disable", Integer, Last),
];

/// Parameters read by user space (the initramfs, systemd, udev, the boot loader), not by the kernel: never
/// judged, since kup does not know their vocabularies.
const USER_SPACE_PREFIXES: &[&str] = &[
    "rd.",
    "rd_",
    "systemd.",
    "udev.",
    "plymouth.",
    "vconsole.",
    "locale.",
    "fsck.",
    "net.",
];

/// The table entry for `name`, comparing as the kernel does (`-` equals `_`).
pub(crate) fn known(name: &str) -> Option<&'static KnownParam> {
    KNOWN.iter().find(|k| keys_match(k.name, name))
}

/// The known parameter `name` is probably a misspelling of: none when `name` is known, is read by user space
/// (`rd.*`, `systemd.*`, names starting with a capital such as `BOOT_IMAGE`), is too short to judge, or is not
/// close enough to a known name. Close enough: two swapped neighbours for names of five or six characters
/// (`quite`; a single changed letter is too often another real word there: ChromeOS's `noswap` is not `nosmap`),
/// one edit for seven or eight, two edits from nine.
pub(crate) fn misspelt(name: &str) -> Option<&'static str> {
    let short = name.chars().count() < 5;
    let user_space = USER_SPACE_PREFIXES.iter().any(|p| name.starts_with(p))
        || name.starts_with(|c: char| c.is_ascii_uppercase());
    if short || user_space || known(name).is_some() {
        return None;
    }
    let normal = |s: &str| s.replace('-', "_");
    let name_n = normal(name);
    let length = name.chars().count();
    let close = |known: &str| match length {
        ..=6 => is_transposition(&name_n, known),
        7..=8 => strsim::osa_distance(&name_n, known) <= 1,
        _ => strsim::osa_distance(&name_n, known) <= 2,
    };
    // An edit distance is at least the difference in length: names further off than `close` allows are skipped
    // before they are normalised and compared.
    let reach = match length {
        ..=6 => 0,
        7..=8 => 1,
        _ => 2,
    };
    KNOWN
        .iter()
        .filter(|k| k.name.chars().count().abs_diff(length) <= reach)
        .map(|k| (normal(k.name), k.name))
        .filter(|(known, _)| close(known))
        .min_by_key(|(known, _)| strsim::osa_distance(&name_n, known))
        .map(|(_, n)| n)
}

/// `a` is `b` with two neighbouring characters swapped.
fn is_transposition(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() != b.len() {
        return false;
    }
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    matches!(differ[..], [i, j] if j == i + 1 && a[i] == b[j] && a[j] == b[i])
}

/// What is wrong with one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FindingKind {
    /// The target kernel predates the parameter, so it is ignored.
    TooNew {
        needs: KernelRelease,
        target: String,
    },
    /// Not a parameter kup knows, but one edit away from one that is.
    Misspelt { suggestion: &'static str },
    /// Given again with another value; the kernel keeps only the last, which is this one.
    Duplicate { first: usize },
    /// Not a value the parameter accepts.
    BadValue { expected: String },
}

/// One finding about the parameter at `index` of the list given to `lint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamFinding {
    pub(crate) index: usize,
    pub(crate) kind: FindingKind,
    /// One line, naming the parameter.
    pub message: String,
    pub(crate) help: String,
}

/// Lints parameters in command-line order (what the kernel will see, or the part of it a plan writes).
/// `release` is the target kernel's release (`uname -r` form); without one, or when it cannot be read, nothing
/// is said about releases.
pub(crate) fn lint(params: &[Param], release: Option<&str>) -> Vec<ParamFinding> {
    let target = release.and_then(|r| KernelRelease::parse(r).map(|parsed| (r, parsed)));
    let mut out = Vec::new();
    for (index, param) in params.iter().enumerate() {
        let key = param.key();
        let Some(entry) = known(key) else {
            if let Some(suggestion) = misspelt(key) {
                out.push(misspelt_finding(index, param, suggestion));
            }
            continue;
        };
        if let (Some(needs), Some((text, parsed))) = (entry.since, target)
            && parsed < needs
        {
            out.push(ParamFinding {
                index,
                kind: FindingKind::TooNew {
                    needs,
                    target: text.to_owned(),
                },
                message: format!(
                    "`{}` needs Linux {needs}; the new kernel is {text}, which ignores it",
                    entry.name
                ),
                help: format!(
                    "drop it, or update to a kernel ≥ {needs}; if the vendor backported the feature into {text}, \
                     this warning does not apply"
                ),
            });
        }
        if let Some(expected) = entry.value.check(param.value()) {
            let shown = match param.value() {
                Some(v) => format!("`{v}` is not a value of `{}`", entry.name),
                None => format!("`{}` needs a value", entry.name),
            };
            out.push(ParamFinding {
                index,
                kind: FindingKind::BadValue {
                    expected: expected.clone(),
                },
                message: format!("{shown}: it takes {expected}"),
                help: format!(
                    "the kernel ignores a value it cannot read and keeps the default; write `{}=…` with {expected}",
                    entry.name
                ),
            });
        }
        if entry.repeats == Repeats::LastWins
            && let Some(first) = params[..index]
                .iter()
                .position(|earlier| earlier.has_key(key) && earlier.value() != param.value())
        {
            out.push(ParamFinding {
                index,
                kind: FindingKind::Duplicate { first },
                message: format!(
                    "`{}` is given twice with different values; the kernel uses the last, `{}`",
                    entry.name,
                    param.plain()
                ),
                help: format!(
                    "keep one `{}`: `{}` earlier on the line has no effect",
                    entry.name,
                    params[first].plain()
                ),
            });
        }
    }
    out
}

fn misspelt_finding(index: usize, param: &Param, suggestion: &'static str) -> ParamFinding {
    ParamFinding {
        index,
        kind: FindingKind::Misspelt { suggestion },
        message: format!(
            "unknown kernel parameter `{}`; did you mean `{suggestion}`?",
            param.key()
        ),
        help: format!(
            "the kernel ignores parameters it does not know (or passes them to init); write `{suggestion}` if that \
             is what was meant"
        ),
    }
}

/// `lint` over a whole command line, for the dry-run and preflight: `cmdline` is the final text handed to the
/// new kernel and `release` the one read from its image's header. Findings index `Cmdline::params` of
/// `Cmdline::parse(cmdline)`; the arguments after `--` belong to init and are not judged.
pub fn lint_cmdline(cmdline: &str, release: Option<&str>) -> Vec<ParamFinding> {
    lint(Cmdline::parse(cmdline).params(), release)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Vec<Param> {
        Cmdline::parse(text).params().to_vec()
    }

    fn kinds(text: &str, release: Option<&str>) -> Vec<FindingKind> {
        lint(&params(text), release)
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn releases_parse_from_uname_strings() {
        let r = |s| KernelRelease::parse(s);
        assert_eq!(r("6.1.0-27-cloud-amd64"), Some(KernelRelease::new(6, 1)));
        assert_eq!(
            r("7.2.13+deb14-cloud-amd64"),
            Some(KernelRelease::new(7, 2))
        );
        assert_eq!(r("6.12.9-lts"), Some(KernelRelease::new(6, 12)));
        assert_eq!(
            r("5.14.0-570.23.1.el9_6.x86_64"),
            Some(KernelRelease::new(5, 14))
        );
        assert_eq!(r("6.5-rc1"), Some(KernelRelease::new(6, 5)));
        assert_eq!(r("6.5"), Some(KernelRelease::new(6, 5)));
        assert_eq!(r("6"), None);
        assert_eq!(r("linux-6.1"), None);
        assert_eq!(r(""), None);
        // Numeric, not textual, order: 6.12 is after 6.5.
        assert!(KernelRelease::new(6, 12) > KernelRelease::new(6, 5));
        assert!(KernelRelease::new(7, 0) > KernelRelease::new(6, 19));
        assert_eq!(KernelRelease::new(6, 16).to_string(), "6.16");
    }

    #[test]
    fn a_parameter_newer_than_the_target_kernel() {
        let found = lint(
            &params("root=/dev/sda cpuhp.parallel=1"),
            Some("6.1.0-28-amd64"),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 1);
        assert_eq!(
            found[0].kind,
            FindingKind::TooNew {
                needs: KernelRelease::new(6, 5),
                target: "6.1.0-28-amd64".into()
            }
        );
        assert!(
            found[0]
                .message
                .starts_with("`cpuhp.parallel` needs Linux 6.5; the new kernel is 6.1.0-28-amd64")
        );
        assert!(kinds("cpuhp.parallel=1", Some("6.5.0")).is_empty());
        assert!(kinds("cpuhp.parallel=1", Some("7.2.13+deb14-cloud-amd64")).is_empty());
        assert_eq!(kinds("kho=on liveupdate=1", Some("6.12.9-lts")).len(), 2);
        assert_eq!(kinds("kho=on liveupdate=1", Some("6.16.1")).len(), 1);
        // `-` and `_` are the same character in names.
        assert_eq!(kinds("cpuhp.parallel=1", Some("6.1")).len(), 1);
        assert_eq!(kinds("init-on-alloc=1", Some("4.19.0")).len(), 1);
    }

    #[test]
    fn without_a_readable_release_nothing_is_said_about_releases() {
        assert!(kinds("cpuhp.parallel=1 kho=1", None).is_empty());
        assert!(kinds("cpuhp.parallel=1 kho=1", Some("custom")).is_empty());
    }

    #[test]
    fn misspelt_known_parameters_get_a_suggestion() {
        let found = lint(
            &params("cpuhp.paralel=1 quite intel_iomu=on mitigation=off"),
            None,
        );
        let suggestions: Vec<_> = found
            .iter()
            .map(|f| match f.kind {
                FindingKind::Misspelt { suggestion } => suggestion,
                _ => "",
            })
            .collect();
        assert_eq!(
            suggestions,
            ["cpuhp.parallel", "quiet", "intel_iommu", "mitigations"]
        );
        assert_eq!(
            found[0].message,
            "unknown kernel parameter `cpuhp.paralel`; did you mean `cpuhp.parallel`?"
        );
        // `_` for the module's `.` is a different parameter to the kernel.
        assert_eq!(misspelt("cpuhp_parallel"), Some("cpuhp.parallel"));
        // Seven or eight characters: one edit.
        assert_eq!(misspelt("loglevl"), Some("loglevel"));
        assert_eq!(
            misspelt("loglvl"),
            None,
            "six characters: only a swap counts"
        );
    }

    #[test]
    fn real_parameters_near_known_ones_are_not_typos() {
        // Each is a real parameter one or two edits from a known one, or something user space reads.
        for name in [
            "nosmp",
            "nosmap",
            "rw",
            "ro",
            "initrd",
            "rootwait",
            "consoleblank",
            "rd.lvm.lv",
            "BOOT_IMAGE",
            "systemd.unit",
            "splash",
            "rhgb",
            "mem",
            "kvm_intel.nested",
            "intel-iommu",
            "noswap",
        ] {
            assert_eq!(misspelt(name), None, "{name}");
        }
        // Unknown and far from anything known: not kup's business.
        assert!(kinds("nvme_core.io_timeout=4294967295 zswap.enabled=1", None).is_empty());
    }

    #[test]
    fn last_wins_duplicates_with_different_values() {
        let found = lint(&params("loglevel=3 quiet loglevel=7"), None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 2);
        assert_eq!(found[0].kind, FindingKind::Duplicate { first: 0 });
        assert_eq!(
            found[0].message,
            "`loglevel` is given twice with different values; the kernel uses the last, `loglevel=7`"
        );
        // The same value twice changes nothing; repeatable parameters add up.
        assert!(kinds("loglevel=3 loglevel=3", None).is_empty());
        assert!(
            kinds(
                "console=tty0 console=ttyS0,115200 memmap=1G!4G memmap=1G!8G",
                None
            )
            .is_empty()
        );
        assert!(kinds("intel_iommu=on intel_iommu=sm_on", None).is_empty());
    }

    #[test]
    fn values_outside_a_known_set() {
        let found = lint(&params("cpuhp.parallel=maybe"), Some("6.12"));
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0].kind, FindingKind::BadValue { .. }));
        assert_eq!(
            found[0].message,
            "`maybe` is not a value of `cpuhp.parallel`: it takes a boolean: 1 or 0, y or n, on or off"
        );
        for good in ["1", "0", "y", "N", "on", "OFF", "yes", "true", "false"] {
            assert!(
                kinds(&format!("cpuhp.parallel={good}"), None).is_empty(),
                "{good}"
            );
        }
        assert_eq!(
            kinds("cpuhp.parallel", None).len(),
            1,
            "an early_param bool needs a value"
        );
        // A module's bool parameter is true when bare, and takes the same values.
        assert!(kinds("printk.time kvm-intel.nested", None).is_empty());
        assert_eq!(kinds("printk.time=maybe", None).len(), 1);
        assert_eq!(kinds("mitigations=on", None).len(), 1);
        for good in ["off", "auto", "auto,nosmt"] {
            assert!(
                kinds(&format!("mitigations={good}"), None).is_empty(),
                "{good}"
            );
        }
        assert_eq!(kinds("mitigations=offf", None).len(), 1);
        assert_eq!(kinds("loglevel=debug", None).len(), 1);
        assert!(kinds("panic=-1 loglevel=4", None).is_empty());
        assert_eq!(kinds("transparent_hugepage=sometimes", None).len(), 1);
        // A flag's value is ignored by the kernel; kup does not judge it.
        assert!(kinds("quiet=1 nosmt=force", None).is_empty());
    }

    #[test]
    fn lint_cmdline_reads_the_final_line_and_skips_init_arguments() {
        let found = lint_cmdline(
            "root=/dev/vda ro cpuhp.parallel=1 -- loglevel=x quite",
            Some("6.1.0-27-cloud-amd64"),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 2);
    }
}
