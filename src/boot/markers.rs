//! The kernel messages that mark boot milestones, in every wording that kernels from 2.6.32 to 6.x print.
//!
//! Each function looks at one message (prefixes already removed by `parse`) and says whether, and with which
//! numbers, it is that milestone. They are kept apart from the timing logic so that a new kernel wording is a
//! one-line change with its own unit test.

use super::report::Arch;

fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Leading decimal digits of `s` and the text after them.
fn leading_number<T: std::str::FromStr>(s: &str) -> Option<(T, &str)> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    Some((number(s.get(..end)?)?, s.get(end..)?))
}

/// `Linux version 6.6.10-arch1-1 (linux@archlinux) …` → `6.6.10-arch1-1`: the start of a boot.
pub(crate) fn kernel_release(message: &str) -> Option<&str> {
    message
        .strip_prefix("Linux version ")?
        .split_whitespace()
        .next()
}

/// `Kernel command line: …` (all architectures) or `Command line: …` (x86 and a few others, printed earlier).
/// Returns the command line and whether it is the `Kernel command line` form, which the kernel actually parses
/// (it includes bootconfig and built-in additions), so it is preferred when both are present.
pub(crate) fn cmdline(message: &str) -> Option<(&str, bool)> {
    if let Some(c) = message.strip_prefix("Kernel command line: ") {
        return Some((c.trim(), true));
    }
    message
        .strip_prefix("Command line: ")
        .map(|c| (c.trim(), false))
}

/// Secondary CPUs start coming up. Wordings: `smp: Bringing up secondary CPUs ...` (4.12+, all arches);
/// `x86: Booting SMP configuration:` (3.13+), `smpboot: x86: Booting SMP configuration:` (6.5 and backports);
/// `smpboot: Booting Node   0, Processors  #1 …` and bare `Booting Node …` (older x86).
pub(crate) fn is_smp_start(message: &str) -> bool {
    let m = message.strip_prefix("smpboot: ").unwrap_or(message);
    m.starts_with("smp: Bringing up secondary CPUs")
        || m.starts_with("Bringing up secondary CPUs")
        || m.starts_with("x86: Booting SMP configuration")
        || m.starts_with("Booting Node")
}

/// The 6.5-era x86 SMP boot code prints its start line with both prefixes; older code with `x86:` only.
/// Its presence means the kernel carries the parallel bring-up rework, whatever its version number says
/// (RHEL 9 backported it to 5.14).
pub(crate) fn is_parallel_capable_smp_start(message: &str) -> bool {
    message.starts_with("smpboot: x86: Booting SMP configuration")
}

/// The end of SMP bring-up, with what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SmpDone {
    pub(crate) nodes: Option<u32>,
    pub(crate) cpus: u32,
}

/// `smp: Brought up 2 nodes, 384 CPUs` (4.12+), `x86: Booted up 1 node, 4 CPUs` (3.13–4.11),
/// `Brought up 4 CPUs` / `Brought up 1 CPU` (older x86, arm64 before 4.12), optionally behind `smpboot: `.
pub(crate) fn smp_done(message: &str) -> Option<SmpDone> {
    let mut m = message;
    for prefix in ["smpboot: ", "smp: ", "x86: ", "SMP: "] {
        m = m.strip_prefix(prefix).unwrap_or(m);
    }
    let rest = m
        .strip_prefix("Brought up ")
        .or_else(|| m.strip_prefix("Booted up "))?;
    let (first, rest): (u32, &str) = leading_number(rest)?;
    let rest = rest.strip_prefix(' ')?;
    if rest.starts_with("CPU") {
        return Some(SmpDone {
            nodes: None,
            cpus: first,
        });
    }
    let rest = rest
        .strip_prefix("nodes, ")
        .or_else(|| rest.strip_prefix("node, "))?;
    let (cpus, rest): (u32, &str) = leading_number(rest)?;
    rest.starts_with(" CPU").then_some(SmpDone {
        nodes: Some(first),
        cpus,
    })
}

/// `smpboot: Total of 4 processors activated (…)`, `SMP: Total of 6 processors activated.`: a CPU count for
/// logs whose bring-up line has none of the wordings above.
pub(crate) fn processors_activated(message: &str) -> Option<u32> {
    let at = message.find("Total of ")?;
    let (cpus, rest) = leading_number(message.get(at + "Total of ".len()..)?)?;
    rest.starts_with(" processors activated").then_some(cpus)
}

/// One NUMA node's deferred struct-page initialisation: `node 0 deferred pages initialised in 178ms`
/// (5.x+), `node 0 initialised, 1234 pages in 12ms` (4.2–4.x). Returns the node and milliseconds.
pub(crate) fn deferred_pages(message: &str) -> Option<(u32, u64)> {
    let (node, rest): (u32, &str) = leading_number(message.strip_prefix("node ")?)?;
    let ms = if let Some(r) = rest.strip_prefix(" deferred pages initialised in ") {
        r
    } else {
        let r = rest.strip_prefix(" initialised, ")?;
        let (_, r): (u64, &str) = leading_number(r)?;
        r.strip_prefix(" pages in ")?
    };
    let (ms, unit): (u64, &str) = leading_number(ms)?;
    unit.starts_with("ms").then_some((node, ms))
}

/// `Run /init as init process`, `Run /sbin/init as init process`: the kernel starts user space.
pub(crate) fn is_run_init(message: &str) -> bool {
    message.starts_with("Run ") && message.trim_end().ends_with(" as init process")
}

/// `Freeing unused kernel memory: …`, `Freeing unused kernel image (initmem) memory: …`: free_initmem(), the
/// last thing the kernel does before starting init. Older kernels print no `Run … as init process` line, so
/// the last of these stands in for it.
pub(crate) fn is_freeing_init_memory(message: &str) -> bool {
    message.starts_with("Freeing unused kernel")
}

/// `Memory: 7889240K/8228928K available (…)` → (available KiB, total KiB).
pub(crate) fn memory(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("Memory: ")?;
    let (available, rest): (u64, &str) = leading_number(rest)?;
    let rest = rest
        .strip_prefix("K/")
        .or_else(|| rest.strip_prefix("k/"))?;
    let (total, rest): (u64, &str) = leading_number(rest)?;
    let rest = rest.strip_prefix('K').or_else(|| rest.strip_prefix('k'))?;
    rest.starts_with(" available").then_some((available, total))
}

/// With `initcall_debug`: `initcall pci_init+0x0/0x40 returned 0 after 12 usecs` (older kernels: `msecs`).
/// Returns the function name without its offset and the duration in microseconds.
pub(crate) fn initcall(message: &str) -> Option<(&str, u64)> {
    let rest = message.strip_prefix("initcall ")?;
    let symbol = rest.split_whitespace().next()?;
    let name = symbol.split('+').next()?;
    let after = rest.find(" returned ").and_then(|at| rest.get(at..))?;
    let after = after
        .find(" after ")
        .and_then(|at| after.get(at + " after ".len()..))?;
    let (amount, unit): (u64, &str) = leading_number(after)?;
    let usecs = match unit.trim_start() {
        u if u.starts_with("usecs") => amount,
        u if u.starts_with("msecs") => amount.saturating_mul(1000),
        _ => return None,
    };
    (!name.is_empty()).then_some((name, usecs))
}

/// Messages only one architecture prints.
pub(crate) fn arch_hint(message: &str) -> Option<Arch> {
    let x86 = [
        "x86/",
        "x86: ",
        "BIOS-e820:",
        "e820: ",
        "smpboot: x86: ",
        "KERNEL supported cpus:",
    ];
    if x86.iter().any(|p| message.starts_with(p)) {
        return Some(Arch::X86);
    }
    (message.starts_with("CPU features: ") || message.starts_with("arm64:")).then_some(Arch::Arm64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line, given to `marker`, reads as its expected value.
    #[track_caller]
    fn reads<T: PartialEq + std::fmt::Debug>(
        marker: impl Fn(&'static str) -> T,
        cases: &[(&'static str, T)],
    ) {
        for (line, expected) in cases {
            assert_eq!(&marker(line), expected, "{line:?}");
        }
    }

    #[test]
    fn releases() {
        reads(
            kernel_release,
            &[
                (
                    "Linux version 6.6.10-arch1-1 (linux@archlinux) (gcc)",
                    Some("6.6.10-arch1-1"),
                ),
                ("Linux version", None),
                ("Booting Linux on physical CPU 0x0", None),
            ],
        );
    }

    #[test]
    fn command_lines() {
        reads(
            cmdline,
            &[
                (
                    "Command line: root=/dev/sda2 quiet ",
                    Some(("root=/dev/sda2 quiet", false)),
                ),
                ("Kernel command line: quiet", Some(("quiet", true))),
            ],
        );
    }

    #[test]
    fn smp_start_wordings() {
        reads(
            is_smp_start,
            &[
                ("smp: Bringing up secondary CPUs ...", true),
                ("x86: Booting SMP configuration:", true),
                ("smpboot: x86: Booting SMP configuration:", true),
                ("smpboot: Booting Node   0, Processors  #1 #2 #3 OK", true),
                ("Booting Node   0, Processors  #1 Ok.", true),
                ("smpboot: CPU0: Intel(R) Core(TM) i5", false),
            ],
        );
        reads(
            is_parallel_capable_smp_start,
            &[
                ("smpboot: x86: Booting SMP configuration:", true),
                ("x86: Booting SMP configuration:", false),
            ],
        );
    }

    #[test]
    fn smp_done_wordings() {
        let done = |nodes, cpus| Some(SmpDone { nodes, cpus });
        reads(
            smp_done,
            &[
                ("smp: Brought up 2 nodes, 384 CPUs", done(Some(2), 384)),
                ("smp: Brought up 1 node, 1 CPU", done(Some(1), 1)),
                ("x86: Booted up 1 node, 4 CPUs", done(Some(1), 4)),
                ("Brought up 6 CPUs", done(None, 6)),
                ("smpboot: Brought up 1 node, 8 CPUs", done(Some(1), 8)),
                ("Brought up the house", None),
                ("smp: Brought up 2 nodes, lots of CPUs", None),
            ],
        );
    }

    #[test]
    fn cpu_totals() {
        reads(
            processors_activated,
            &[
                (
                    "smpboot: Total of 384 processors activated (1843241.47 BogoMIPS)",
                    Some(384),
                ),
                ("SMP: Total of 6 processors activated.", Some(6)),
                (
                    "Total of 2 processors activated (7183.53 BogoMIPS).",
                    Some(2),
                ),
            ],
        );
    }

    #[test]
    fn deferred_page_wordings() {
        reads(
            deferred_pages,
            &[
                ("node 1 deferred pages initialised in 172ms", Some((1, 172))),
                ("node 0 initialised, 3932160 pages in 16ms", Some((0, 16))),
                ("node 0 deferred pages initialised in 172s", None),
            ],
        );
    }

    #[test]
    fn init_markers() {
        reads(
            is_run_init,
            &[
                ("Run /init as init process", true),
                ("Run /sbin/init as init process", true),
                ("Run /init", false),
            ],
        );
        reads(
            is_freeing_init_memory,
            &[
                ("Freeing unused kernel image (initmem) memory: 4048K", true),
                ("Freeing unused kernel memory: 1032k freed", true),
                ("Freeing SMP alternatives memory: 40K", false),
                ("Freeing initrd memory: 1234K", false),
            ],
        );
    }

    #[test]
    fn memory_lines() {
        reads(
            memory,
            &[
                (
                    "Memory: 2007276K/1610305216K available (16384K kernel code, 5766K rwdata)",
                    Some((2_007_276, 1_610_305_216)),
                ),
                (
                    "Memory: 8118844k/8388152k available (5270k kernel code)",
                    Some((8_118_844, 8_388_152)),
                ),
                ("Memory: 7972328K/8204288K", None),
            ],
        );
    }

    #[test]
    fn initcall_lines() {
        reads(
            initcall,
            &[
                (
                    "initcall pci_init+0x0/0x40 returned 0 after 12 usecs",
                    Some(("pci_init", 12)),
                ),
                (
                    "initcall ahci_init+0x0/0x1000 [ahci] returned 0 after 301 usecs",
                    Some(("ahci_init", 301)),
                ),
                (
                    "initcall foo+0x0/0x10 returned 0 after 3 msecs",
                    Some(("foo", 3000)),
                ),
                (
                    "initcall foo+0x0/0x10 returned -19 after 0 usecs",
                    Some(("foo", 0)),
                ),
                ("calling  pci_init+0x0/0x40 @ 1", None),
            ],
        );
    }

    #[test]
    fn arch_hints() {
        reads(
            arch_hint,
            &[
                ("x86/fpu: Supporting XSAVE feature 0x001", Some(Arch::X86)),
                (
                    "CPU features: detected: 32-bit EL0 Support",
                    Some(Arch::Arm64),
                ),
                ("Machine model: SolidRun ClearFog GT 8K", None),
            ],
        );
    }
}
