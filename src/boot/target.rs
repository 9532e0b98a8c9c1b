//! Advice about the kernel an update is about to boot, not the one whose log was read: the plan knows the new
//! release and the new command line before the kexec, so `cpuhp.parallel=0` on a 6.5+ kernel or a serial console
//! without `quiet` can be pointed out while they are still cheap to change. The current boot's log adds figures
//! (how long SMP bring-up takes today) where it has them.
//!
//! Pure, like the rest of the analysis. The dry-run and preflight can call [`advise_target`] with the release read
//! from the image's header and the computed command line; the recommendations reuse the codes of the log advice
//! ([`RecommendationCode`]), and their `evidence` is the parameter on the new command line, not a log line.

// Nothing calls `advise_target` yet (the dry-run and preflight are meant to); kept, with its unit tests, for them.
#![cfg_attr(not(test), allow(dead_code))]

use super::advice::{
    SERIAL_BRINGUP_PER_CPU, SLOW_BRINGUP_TOTAL, console_loglevel, is_false, serial_console,
};
use super::parse::Micros;
use super::report::{Arch, BootReport, Clock, Recommendation, RecommendationCode};
use crate::kparams::KernelRelease;

/// Parallel CPU bring-up (`cpuhp.parallel`, x86) is in mainline from this release.
pub(crate) const PARALLEL_BRINGUP_SINCE: KernelRelease = KernelRelease::new(6, 5);

/// The kernel an update will boot: its release (`uname -r` form), when known, and its whole command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TargetKernel<'a> {
    pub(crate) release: Option<&'a str>,
    pub(crate) cmdline: &'a str,
}

/// Recommendations about `target`; `current` is the report of the running kernel's boot, when there is one.
pub(crate) fn advise_target(
    target: &TargetKernel<'_>,
    current: Option<&BootReport>,
) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let release = target.release.and_then(KernelRelease::parse);
    let parallel_off = target.cmdline.split_whitespace().find(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k == "cpuhp.parallel" && is_false(v))
    });
    if let (Some(param), Some(release), Some(text)) = (parallel_off, release, target.release)
        && release >= PARALLEL_BRINGUP_SINCE
    {
        let today = current
            .and_then(slow_smp_bringup)
            .map_or(String::new(), |(ms, cpus)| {
                format!(" (this boot's SMP bring-up took {ms:.1} ms for {cpus} CPUs)")
            });
        out.push(Recommendation {
            code: RecommendationCode::ParallelBringupOff,
            message: format!(
                "the new kernel ({text}) brings CPUs up in parallel, but its command line turns that off with \
                 {param}{today}; remove it unless it works around a known firmware problem"
            ),
            evidence: format!("new command line: {param}"),
        });
    }
    if let Some(dev) = serial_console(target.cmdline)
        && console_loglevel(target.cmdline).is_none_or(|level| level > 4)
    {
        out.push(Recommendation {
            code: RecommendationCode::SerialConsoleNotQuiet,
            message: format!(
                "the new command line has console={dev} without quiet: the new kernel will write every message to \
                 the serial port synchronously while the VMs wait; add quiet (or loglevel=4)"
            ),
            evidence: format!("new command line: console={dev}"),
        });
    }
    out
}

/// SMP bring-up of `report` in ms and its CPU count, when it looks serial by the log advice's thresholds (x86,
/// kernel clock, ≥ 100 ms and ≥ 1 ms per secondary CPU).
fn slow_smp_bringup(report: &BootReport) -> Option<(f64, u32)> {
    let (seconds, cpus) = report.smp_bringup_s.zip(report.cpus)?;
    let total = Micros((seconds * 1e6).round() as i64);
    let per_cpu = Micros(total.0 / i64::from(cpus.saturating_sub(1)).max(1));
    let looks_serial = report.arch == Some(Arch::X86)
        && report.clock == Clock::Monotonic
        && cpus >= 2
        && total >= SLOW_BRINGUP_TOTAL
        && per_cpu >= SERIAL_BRINGUP_PER_CPU;
    looks_serial.then_some((seconds * 1000.0, cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(target: &TargetKernel<'_>, current: Option<&BootReport>) -> Vec<RecommendationCode> {
        advise_target(target, current)
            .into_iter()
            .map(|r| r.code)
            .collect()
    }

    #[test]
    fn cpuhp_parallel_off_on_a_kernel_that_has_it() {
        let target = TargetKernel {
            release: Some("6.12.9-lts"),
            cmdline: "root=/dev/sda1 quiet cpuhp.parallel=0",
        };
        let recs = advise_target(&target, None);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].code, RecommendationCode::ParallelBringupOff);
        assert_eq!(recs[0].evidence, "new command line: cpuhp.parallel=0");
        assert!(
            recs[0]
                .message
                .starts_with("the new kernel (6.12.9-lts) brings CPUs up in parallel")
        );
        // `off` and `n` are false too; `1` is not.
        for off in ["off", "n"] {
            let cmdline = format!("quiet cpuhp.parallel={off}");
            assert_eq!(
                codes(
                    &TargetKernel {
                        cmdline: &cmdline,
                        ..target
                    },
                    None
                )
                .len(),
                1,
                "{off}"
            );
        }
        let on = TargetKernel {
            cmdline: "quiet cpuhp.parallel=1",
            ..target
        };
        assert!(codes(&on, None).is_empty());
        // 6.1 has no parallel bring-up to turn off (the plan lint warns about the parameter instead), and without
        // a release nothing is claimed.
        assert!(
            codes(
                &TargetKernel {
                    release: Some("6.1.0-28-amd64"),
                    ..target
                },
                None
            )
            .is_empty()
        );
        assert!(
            codes(
                &TargetKernel {
                    release: None,
                    ..target
                },
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn the_current_boots_slow_bring_up_is_quoted() {
        let log = "[    0.000000] Linux version 6.1.0-27-cloud-amd64 (x)\n\
                   [    0.000000] x86/fpu: Supporting XSAVE feature 0x001\n\
                   [    0.300000] smp: Bringing up secondary CPUs ...\n\
                   [    0.700000] smp: Brought up 2 nodes, 128 CPUs\n\
                   [    1.000000] Run /init as init process\n";
        let current = super::super::analyse(log.as_bytes());
        let target = TargetKernel {
            release: Some("7.2.13+deb14-cloud-amd64"),
            cmdline: "quiet cpuhp.parallel=0",
        };
        let recs = advise_target(&target, Some(&current));
        assert!(
            recs[0]
                .message
                .contains("(this boot's SMP bring-up took 400.0 ms for 128 CPUs)"),
            "{}",
            recs[0].message
        );
        // A fast bring-up is not quoted.
        let fast = super::super::analyse(log.replace("0.700000", "0.310000").as_bytes());
        let recs = advise_target(&target, Some(&fast));
        assert!(
            !recs[0].message.contains("this boot's"),
            "{}",
            recs[0].message
        );
    }

    #[test]
    fn a_serial_console_without_quiet_on_the_new_command_line() {
        let target = TargetKernel {
            release: None,
            cmdline: "root=/dev/vda console=tty0 console=ttyS0,115200",
        };
        let recs = advise_target(&target, None);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].code, RecommendationCode::SerialConsoleNotQuiet);
        assert_eq!(recs[0].evidence, "new command line: console=ttyS0,115200");
        let quiet = TargetKernel {
            cmdline: "root=/dev/vda console=ttyS0 quiet",
            ..target
        };
        assert!(codes(&quiet, None).is_empty());
        // The last of quiet / loglevel wins, as in the kernel.
        let loud = TargetKernel {
            cmdline: "console=ttyS0 quiet loglevel=7",
            ..target
        };
        assert_eq!(codes(&loud, None).len(), 1);
        let vga = TargetKernel {
            cmdline: "console=tty0",
            ..target
        };
        assert!(codes(&vga, None).is_empty());
    }
}
