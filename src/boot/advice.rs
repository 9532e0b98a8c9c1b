//! Recommendations: which boot-time knobs this log shows unused, each with a stable code and the exact log
//! line it rests on, so an operator can check the claim before acting on it.
//!
//! Facts about the host that are not in the log (the kernel's build configuration) come in as `HostFacts`,
//! read by the CLI layer; the analysis itself stays pure and runs the same on a laptop as on the host.

use super::parse::Micros;
use super::phases::{Events, Timing};
use super::report::{Arch, Clock, Recommendation, RecommendationCode};

/// What the host can tell beyond its log. Only filled in when the live host's log is analysed: a log file
/// may come from another machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub(crate) kernel_config: Option<KernelConfig>,
}

/// The running kernel's build configuration, as far as the advice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelConfig {
    /// Where it was read from, for the message (e.g. `/boot/config-6.1.0-27-amd64`).
    pub(crate) path: String,
    pub(crate) deferred_struct_page_init: bool,
}

/// Memory above which deferred struct-page init saves visible time. 48 GiB rather than 64 so that a machine
/// with 64 GiB installed, which reports a little less after firmware reservations, is included.
pub(crate) const LARGE_MEMORY_KIB: u64 = 48 * 1024 * 1024;
/// Serial bring-up costs from 0.35 to several ms per CPU (INIT/SIPI wait, microcode load); parallel bring-up
/// brings that to well under a millisecond. Above this per-CPU figure a parallel-capable kernel looks serial.
pub(crate) const SERIAL_BRINGUP_PER_CPU: Micros = Micros(1_000);
/// Below this total the question is not worth an operator's time.
pub(crate) const SLOW_BRINGUP_TOTAL: Micros = Micros(100_000);
/// A kernel taking longer than this to reach init is worth an `initcall_debug` boot.
pub(crate) const SLOW_TIME_TO_INIT: Micros = Micros(2_000_000);

/// One kernel command-line parameter: `key=value` or a bare flag.
fn params(cmdline: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    cmdline.split_whitespace().map(|p| match p.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (p, None),
    })
}

/// kstrtobool's false spellings.
pub(super) fn is_false(v: &str) -> bool {
    matches!(v, "0" | "n" | "N" | "off" | "Off" | "OFF" | "false")
}

/// The console log level the command line leaves: `quiet` is 4, `debug` 10, `loglevel=N` is N; the last wins.
pub(super) fn console_loglevel(cmdline: &str) -> Option<u32> {
    params(cmdline).fold(None, |level, (k, v)| match (k, v) {
        ("quiet", None) => Some(4),
        ("debug", None) => Some(10),
        ("loglevel", Some(n)) => n.parse().ok().or(level),
        _ => level,
    })
}

pub(super) fn serial_console(cmdline: &str) -> Option<&str> {
    params(cmdline).find_map(|(k, v)| match (k, v) {
        ("console", Some(dev))
            if ["ttyS", "ttyAMA", "uart"]
                .iter()
                .any(|p| dev.starts_with(p)) =>
        {
            Some(dev)
        }
        _ => None,
    })
}

/// "6.6.10-arch1-1" → (6, 6).
pub(crate) fn major_minor(release: &str) -> Option<(u32, u32)> {
    crate::kparams::KernelRelease::parse(release).map(|r| (r.major, r.minor))
}

fn ms(m: Micros) -> String {
    format!("{:.1} ms", m.0 as f64 / 1000.0)
}

// Long by design: one block per recommendation, in the order the report lists them.
pub(crate) fn recommend(
    ev: &Events<'_>,
    timing: &Timing,
    clock: Clock,
    facts: &HostFacts,
) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let cmdline = ev.cmdline.as_ref();
    let version = ev.release.and_then(major_minor);
    let has_parallel = version.is_some_and(|v| v >= (6, 5)) || ev.parallel_capable_smp;

    // Parallel CPU bring-up.
    let explicit_off = cmdline.and_then(|(c, line)| {
        params(c)
            .find(|(k, v)| *k == "cpuhp.parallel" && v.is_some_and(is_false))
            .map(|_| line)
    });
    // Asked for explicitly: a slow bring-up then has another cause (under TCG, each secondary CPU calibrating its
    // delay loop), and "check that cpuhp.parallel is not 0" would send the operator the wrong way.
    let explicit_on = cmdline.is_some_and(|(c, _)| {
        params(c).any(|(k, v)| k == "cpuhp.parallel" && v.is_some_and(|v| !is_false(v)))
    });
    if let Some(line) = explicit_off.filter(|_| version.is_none() || has_parallel) {
        out.push(Recommendation {
            code: RecommendationCode::ParallelBringupOff,
            message: "cpuhp.parallel=0 on the command line turns off parallel CPU bring-up (x86, Linux 6.5+); \
                      remove it unless it works around a known firmware problem"
                .into(),
            evidence: line.raw.to_string(),
        });
    } else if let (Some(Arch::X86), true, Clock::Monotonic, Some(dur), Some((done, line))) = (
        ev.arch,
        has_parallel && !explicit_on,
        clock,
        timing.smp_bringup,
        ev.smp_done.as_ref(),
    ) {
        let secondaries = i64::from(done.cpus.saturating_sub(1)).max(1);
        let per_cpu = Micros(dur.0 / secondaries);
        if done.cpus >= 2 && dur >= SLOW_BRINGUP_TOTAL && per_cpu >= SERIAL_BRINGUP_PER_CPU {
            out.push(Recommendation {
                code: RecommendationCode::ParallelBringupOff,
                message: format!(
                    "SMP bring-up took {} for {} CPUs ({:.2} ms per secondary CPU), which looks serial although \
                     this kernel has parallel bring-up (x86, Linux 6.5+ or a backport): check that \
                     CONFIG_HOTPLUG_PARALLEL=y and cpuhp.parallel is not 0; the kernel also falls back to serial \
                     bring-up on some platforms (e.g. encrypted guests)",
                    ms(dur),
                    done.cpus,
                    per_cpu.0 as f64 / 1000.0
                ),
                evidence: line.raw.to_string(),
            });
        }
    }

    // Deferred struct-page initialisation. Only meaningful when the log reaches past SMP bring-up, where the
    // per-node lines would be.
    let config_on = facts
        .kernel_config
        .as_ref()
        .map(|c| c.deferred_struct_page_init);
    let log_covers_it = ev.smp_done.is_some() || ev.init_line().is_some();
    if let Some((total, line)) = ev.memory.as_ref() {
        if *total >= LARGE_MEMORY_KIB
            && ev.deferred.is_empty()
            && log_covers_it
            && config_on != Some(true)
        {
            let gib = *total as f64 / (1024.0 * 1024.0);
            let why = match facts.kernel_config.as_ref() {
                Some(c) => format!("{} has CONFIG_DEFERRED_STRUCT_PAGE_INIT unset", c.path),
                None => "the log has no 'deferred pages initialised' line".to_string(),
            };
            out.push(Recommendation {
                code: RecommendationCode::DeferredPagesOff,
                message: format!(
                    "{why}: with {gib:.1} GiB the kernel initialises every struct page before bringing up the other \
                     CPUs; a kernel built with CONFIG_DEFERRED_STRUCT_PAGE_INIT=y does most of it later, one thread \
                     per NUMA node"
                ),
                evidence: line.raw.to_string(),
            });
        }
    }

    // Serial console without quiet.
    if let Some((c, line)) = cmdline {
        if let Some(dev) = serial_console(c) {
            if console_loglevel(c).is_none_or(|level| level > 4) {
                out.push(Recommendation {
                    code: RecommendationCode::SerialConsoleNotQuiet,
                    message: format!(
                        "console={dev} without quiet: every kernel message is written to the serial port \
                         synchronously during boot; add quiet (or loglevel=4) so only warnings and errors go there \
                         (dmesg still has everything)"
                    ),
                    evidence: line.raw.to_string(),
                });
            }
        }
    }

    // initcall_debug for slow boots.
    let debug_on = cmdline.is_some_and(|(c, _)| params(c).any(|(k, _)| k == "initcall_debug"));
    if let (Clock::Monotonic, Some(t), Some(line), false) =
        (clock, timing.time_to_init, ev.init_line(), debug_on)
    {
        if t >= SLOW_TIME_TO_INIT {
            out.push(Recommendation {
                code: RecommendationCode::EnableInitcallDebug,
                message: format!(
                    "the kernel took {:.3} s to reach init; boot once with initcall_debug on the command line to see \
                     which initcalls take the time (kup boot-time then lists the slowest)",
                    t.seconds()
                ),
                evidence: line.raw.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::parse::lines;
    use super::super::phases::{Timeline, gather, timing};
    use super::*;

    /// The advice for a log from a host whose facts are unknown.
    fn advise_plain(text: &str) -> Vec<RecommendationCode> {
        advise(text, &HostFacts::default())
    }

    fn advise(text: &str, facts: &HostFacts) -> Vec<RecommendationCode> {
        let parsed = lines(text);
        let ev = gather(&parsed);
        let tl = Timeline::for_boot(&parsed, ev.kernel_start.as_ref());
        recommend(&ev, &timing(&ev, &tl), tl.clock, facts)
            .into_iter()
            .map(|r| r.code)
            .collect()
    }

    /// A boot log from `Linux version` to `Run /init` at 1 s, with `middle` (whole lines) between.
    fn boot_log(version: &str, cmdline: &str, middle: &[&str]) -> String {
        let mut log = format!(
            "[    0.000000] Linux version {version} (x)\n[    0.000000] Command line: {cmdline}\n"
        );
        middle.iter().for_each(|l| log += &format!("{l}\n"));
        log + "[    1.000000] Run /init as init process\n"
    }

    /// 128 CPUs brought up in 400 ms, one at a time.
    fn x86_slow_smp() -> String {
        boot_log(
            "6.8.0-generic",
            "root=/dev/sda quiet",
            &[
                "[    0.000000] x86/fpu: Supporting XSAVE feature 0x001",
                "[    0.300000] smp: Bringing up secondary CPUs ...",
                "[    0.700000] smp: Brought up 2 nodes, 128 CPUs",
            ],
        )
    }

    #[test]
    fn slow_bring_up_on_a_parallel_capable_kernel() {
        assert_eq!(
            advise_plain(&x86_slow_smp()),
            [RecommendationCode::ParallelBringupOff]
        );
        // The same figures on 6.4, before parallel bring-up existed: nothing to switch on.
        assert!(advise_plain(&x86_slow_smp().replace("6.8.0", "6.4.0")).is_empty());
        // Parallel bring-up asked for explicitly: the slowness has another cause (found in the lab, where TCG's
        // delay-loop calibration takes ~100 ms per CPU with cpuhp.parallel=1).
        assert!(
            advise_plain(&x86_slow_smp().replace("quiet", "quiet cpuhp.parallel=1")).is_empty()
        );
        // 128 CPUs in 40 ms is parallel already.
        assert!(advise_plain(&x86_slow_smp().replace("0.700000", "0.340000")).is_empty());
    }

    #[test]
    fn explicit_cpuhp_parallel_off() {
        let text = x86_slow_smp().replace("quiet", "quiet cpuhp.parallel=0");
        let recs = advise_plain(&text);
        assert_eq!(recs, [RecommendationCode::ParallelBringupOff]);
        assert!(
            advise_plain(
                &x86_slow_smp()
                    .replace("quiet", "quiet cpuhp.parallel=1")
                    .replace("0.700000", "0.31")
            )
            .is_empty()
        );
    }

    /// 128 GiB of memory and no line about deferred struct pages.
    fn big_memory() -> String {
        boot_log(
            "6.1.0",
            "quiet",
            &[
                "[    0.100000] Memory: 131000000K/134217728K available (x)",
                "[    0.300000] smp: Bringing up secondary CPUs ...",
                "[    0.310000] smp: Brought up 1 node, 8 CPUs",
            ],
        )
    }

    #[test]
    fn deferred_pages_missing_on_a_large_machine() {
        assert_eq!(
            advise_plain(&big_memory()),
            [RecommendationCode::DeferredPagesOff]
        );
        let with_deferred = big_memory().replace(
            "[    1.000000] Run",
            "[    0.400000] node 0 deferred pages initialised in 90ms\n[    1.000000] Run",
        );
        assert!(advise_plain(&with_deferred).is_empty());
        let small = big_memory().replace("131000000K/134217728K", "8000000K/8388608K");
        assert!(advise_plain(&small).is_empty());
    }

    #[test]
    fn kernel_config_fact_overrides_the_guess() {
        let config = |on| HostFacts {
            kernel_config: Some(KernelConfig {
                path: "/boot/config-6.1.0".into(),
                deferred_struct_page_init: on,
            }),
        };
        assert!(advise(&big_memory(), &config(true)).is_empty());
        let log = big_memory();
        let parsed = lines(&log);
        let ev = gather(&parsed);
        let tl = Timeline::for_boot(&parsed, ev.kernel_start.as_ref());
        let recs = recommend(&ev, &timing(&ev, &tl), tl.clock, &config(false));
        assert_eq!(recs.len(), 1);
        assert!(
            recs[0]
                .message
                .starts_with("/boot/config-6.1.0 has CONFIG_DEFERRED_STRUCT_PAGE_INIT unset")
        );
        assert_eq!(
            recs[0].evidence,
            "[    0.100000] Memory: 131000000K/134217728K available (x)"
        );
    }

    #[test]
    fn serial_console_wants_quiet() {
        let text = "[    0.000000] Linux version 5.4.0 (x)\n\
                    [    0.000000] Command line: root=/dev/sda console=tty1 console=ttyS0,115200\n";
        assert_eq!(
            advise_plain(text),
            [RecommendationCode::SerialConsoleNotQuiet]
        );
        assert!(advise_plain(&text.replace("root=", "quiet root=")).is_empty());
        assert!(advise_plain(&text.replace("root=", "loglevel=3 root=")).is_empty());
        // The last of quiet / loglevel wins, as in the kernel.
        let loud = text.replace("root=", "quiet loglevel=7 root=");
        assert_eq!(
            advise_plain(&loud),
            [RecommendationCode::SerialConsoleNotQuiet]
        );
    }

    #[test]
    fn slow_boot_suggests_initcall_debug_unless_set() {
        let text = "[    0.000000] Linux version 5.4.0 (x)\n\
                    [    0.000000] Command line: quiet\n\
                    [    2.500000] Run /init as init process\n";
        assert_eq!(
            advise_plain(text),
            [RecommendationCode::EnableInitcallDebug]
        );
        assert!(advise_plain(&text.replace("quiet", "quiet initcall_debug")).is_empty());
        assert!(advise_plain(&text.replace("2.500000", "1.500000")).is_empty());
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("6.6.10-arch1-1"), Some((6, 6)));
        assert_eq!(major_minor("4.16.3+"), Some((4, 16)));
        assert_eq!(major_minor("5.14.0-570.23.1.el9_6.x86_64"), Some((5, 14)));
        assert_eq!(major_minor("garbage"), None);
    }
}
