//! From parsed lines to a boot's milestones and phases: which boot of the log to analyse, which lines mark
//! its milestones, which clock to read their times from, and what to do when the stamps disagree.
//!
//! Rules, also documented in docs/boot-time.md:
//! - A boot starts at a `Linux version` line. With several boots in one log (a serial capture across a kexec,
//!   a journal without `-b`), the **last boot that reached init** is analysed — after a live update that is
//!   the new kernel; if no boot reached init, the last boot is analysed (a capture cut short is still news).
//! - Each milestone is the **first** matching kernel line of that boot, in file order (later CPU hotplug,
//!   e.g. after resume, prints bring-up lines again).
//! - Each milestone's time is **its own line's stamp**. Real logs hold lines stamped earlier than the line
//!   before them (a printk continuation keeps the stamp of its first fragment; journald merges sources), so
//!   lines are never re-sorted. A duration whose end is stamped before its start is not computed (null) and a
//!   note says so: never a negative duration.

use super::markers::{self, SmpDone};
use super::parse::{LogLine, Micros, Stamp};
use super::report::{Arch, Clock, Initcall, Phase, PhaseName};

/// The lines of one boot, and its 1-based position among the boots of the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Boot<'l, 'a> {
    pub(crate) lines: &'l [LogLine<'a>],
    pub(crate) number: usize,
}

/// Splits the log at `Linux version` lines. Lines before the first one (boot-loader text, early microcode
/// messages) belong to the first boot. A log without any is one boot whose start is missing.
pub(crate) fn split_boots<'l, 'a>(lines: &'l [LogLine<'a>]) -> (Vec<Boot<'l, 'a>>, usize) {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kernel && markers::kernel_release(l.message).is_some())
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return (vec![Boot { lines, number: 1 }], 0);
    }
    let mut boots = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let from = if k == 0 { 0 } else { start };
        let to = starts.get(k + 1).copied().unwrap_or(lines.len());
        if let Some(slice) = lines.get(from..to) {
            boots.push(Boot {
                lines: slice,
                number: k + 1,
            });
        }
    }
    (boots, starts.len())
}

fn reached_init(boot: &Boot<'_, '_>) -> bool {
    boot.lines.iter().any(|l| {
        l.kernel && (markers::is_run_init(l.message) || markers::is_freeing_init_memory(l.message))
    })
}

/// The boot to analyse (see the module documentation), plus notes explaining the choice.
pub(crate) fn choose<'l, 'a>(boots: &[Boot<'l, 'a>]) -> (Option<Boot<'l, 'a>>, Vec<String>) {
    let mut notes = Vec::new();
    let last = boots.last().copied();
    let chosen = boots
        .iter()
        .rev()
        .find(|b| reached_init(b))
        .copied()
        .or(last);
    if let (Some(c), Some(l)) = (chosen, last) {
        if boots.len() > 1 {
            notes.push(format!(
                "the log holds {} boots ('Linux version' lines); boot {} is analysed, the last that reached init",
                boots.len(),
                c.number
            ));
        }
        if c.number != l.number {
            notes.push(format!(
                "boot {} (the last) did not reach init: the log stops before it",
                l.number
            ));
        }
    }
    (chosen, notes)
}

/// The milestone lines of one boot, as found in the log (no times yet).
#[derive(Debug, Clone, Default)]
pub(crate) struct Events<'a> {
    pub(crate) kernel_start: Option<LogLine<'a>>,
    pub(crate) release: Option<&'a str>,
    pub(crate) cmdline: Option<(&'a str, LogLine<'a>)>,
    pub(crate) arch: Option<Arch>,
    pub(crate) smp_start: Option<LogLine<'a>>,
    /// The boot printed the 6.5-era `smpboot: x86: Booting SMP configuration` line.
    pub(crate) parallel_capable_smp: bool,
    pub(crate) smp_done: Option<(SmpDone, LogLine<'a>)>,
    pub(crate) processors_activated: Option<u32>,
    /// First line per NUMA node: (node, milliseconds, line).
    pub(crate) deferred: Vec<(u32, u64, LogLine<'a>)>,
    pub(crate) freeing_first: Option<LogLine<'a>>,
    pub(crate) freeing_last: Option<LogLine<'a>>,
    pub(crate) run_init: Option<LogLine<'a>>,
    pub(crate) memory: Option<(u64, LogLine<'a>)>,
    pub(crate) initcalls: Vec<(&'a str, u64, LogLine<'a>)>,
}

impl<'a> Events<'a> {
    /// The line at which the kernel handed over to user space: `Run … as init process`, or on kernels that do
    /// not print it, the last `Freeing unused kernel …` line before it.
    pub(crate) fn init_line(&self) -> Option<&LogLine<'a>> {
        self.run_init.as_ref().or(self.freeing_last.as_ref())
    }
}

/// Finds the milestones of one boot.
pub(crate) fn gather<'a>(boot: &[LogLine<'a>]) -> Events<'a> {
    let mut ev = Events::default();
    let mut kernel_cmdline_seen = false;
    for line in boot.iter().filter(|l| l.kernel) {
        let m = line.message;
        if ev.kernel_start.is_none() {
            if let Some(release) = markers::kernel_release(m) {
                ev.kernel_start = Some(line.clone());
                ev.release = Some(release);
                continue;
            }
        }
        if let Some((cmdline, is_kernel_form)) = markers::cmdline(m) {
            if ev.cmdline.is_none() || (is_kernel_form && !kernel_cmdline_seen) {
                ev.cmdline = Some((cmdline, line.clone()));
                kernel_cmdline_seen |= is_kernel_form;
            }
        }
        if ev.arch.is_none() {
            ev.arch = markers::arch_hint(m);
        }
        if ev.smp_start.is_none() && ev.smp_done.is_none() && markers::is_smp_start(m) {
            ev.smp_start = Some(line.clone());
        }
        ev.parallel_capable_smp |=
            ev.smp_done.is_none() && markers::is_parallel_capable_smp_start(m);
        if ev.smp_done.is_none() {
            if let Some(done) = markers::smp_done(m) {
                ev.smp_done = Some((done, line.clone()));
            }
        }
        if ev.processors_activated.is_none() {
            ev.processors_activated = markers::processors_activated(m);
        }
        if let Some((node, ms)) = markers::deferred_pages(m) {
            if !ev.deferred.iter().any(|(n, _, _)| *n == node) {
                ev.deferred.push((node, ms, line.clone()));
            }
        }
        if ev.memory.is_none() {
            if let Some((_, total)) = markers::memory(m) {
                ev.memory = Some((total, line.clone()));
            }
        }
        // Initcalls and free_initmem after init started are module loads and later events, not boot time.
        if ev.run_init.is_none() {
            if markers::is_freeing_init_memory(m) {
                if ev.freeing_first.is_none() {
                    ev.freeing_first = Some(line.clone());
                }
                ev.freeing_last = Some(line.clone());
            }
            if let Some((name, usecs)) = markers::initcall(m) {
                if ev.freeing_first.is_none() {
                    ev.initcalls.push((name, usecs, line.clone()));
                }
            }
            if markers::is_run_init(m) {
                ev.run_init = Some(line.clone());
            }
        }
    }
    if ev.arch.is_none() {
        ev.arch = ev.release.and_then(|r| {
            let r = r.to_ascii_lowercase();
            if r.contains("x86_64") || r.contains("amd64") {
                Some(Arch::X86)
            } else if r.contains("arm64") || r.contains("aarch64") {
                Some(Arch::Arm64)
            } else {
                None
            }
        });
    }
    ev
}

/// How to read times off one boot's lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub(crate) clock: Clock,
    /// Subtracted from wall-clock stamps so that times count from the kernel start.
    origin: Micros,
}

impl Timeline {
    /// Monotonic stamps when the boot has any (they are precise and count from the kernel start); otherwise
    /// wall-clock dates, counted from the `Linux version` line (or the first dated line); otherwise none.
    pub(crate) fn for_boot(boot: &[LogLine<'_>], kernel_start: Option<&LogLine<'_>>) -> Timeline {
        let kernel_lines = || boot.iter().filter(|l| l.kernel);
        if kernel_lines().any(|l| matches!(l.stamp, Some(Stamp::Monotonic(_)))) {
            return Timeline {
                clock: Clock::Monotonic,
                origin: Micros(0),
            };
        }
        let wall = |l: &LogLine<'_>| match l.stamp {
            Some(Stamp::Wall(w)) => Some(w),
            _ => None,
        };
        match kernel_start
            .and_then(wall)
            .or_else(|| kernel_lines().find_map(wall))
        {
            Some(origin) => Timeline {
                clock: Clock::Wall,
                origin,
            },
            None => Timeline {
                clock: Clock::None,
                origin: Micros(0),
            },
        }
    }

    pub(crate) fn at(&self, line: &LogLine<'_>) -> Option<Micros> {
        match (self.clock, line.stamp) {
            (Clock::Monotonic, Some(Stamp::Monotonic(m))) => Some(m),
            // A date before the kernel start (clock set back, New Year in a year-less syslog date) stays negative,
            // so it counts as out of order rather than vanishing.
            (Clock::Wall, Some(Stamp::Wall(w))) => w.0.checked_sub(self.origin.0).map(Micros),
            _ => None,
        }
    }

    /// Lines stamped earlier than a line before them, on this timeline.
    pub(crate) fn out_of_order(&self, boot: &[LogLine<'_>]) -> usize {
        let mut latest: Option<Micros> = None;
        let mut count = 0;
        for t in boot.iter().filter_map(|l| self.at(l)) {
            match latest {
                Some(prev) if t < prev => count += 1,
                _ => latest = Some(t),
            }
        }
        count
    }
}

/// A point on the timeline and the line it comes from.
#[derive(Debug, Clone)]
struct Point<'a> {
    at: Option<Micros>,
    line: LogLine<'a>,
}

fn point<'a>(tl: &Timeline, line: Option<&LogLine<'a>>) -> Option<Point<'a>> {
    line.map(|line| Point {
        at: tl.at(line),
        line: line.clone(),
    })
}

/// Phases and headline figures of one boot.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) phases: Vec<Phase>,
    pub(crate) time_to_init: Option<Micros>,
    pub(crate) smp_bringup: Option<Micros>,
    pub(crate) notes: Vec<String>,
}

/// A phase is present when the log holds at least one of its boundary lines.
fn span(
    name: PhaseName,
    start: Option<Point<'_>>,
    end: Option<Point<'_>>,
    notes: &mut Vec<String>,
) -> (Phase, Option<Micros>) {
    let start_at = start.as_ref().and_then(|p| p.at);
    let end_at = end.as_ref().and_then(|p| p.at);
    let duration = match (start_at, end_at) {
        (Some(s), Some(e)) if e.since(s).is_some() => e.since(s),
        (Some(s), Some(e)) => {
            notes.push(format!(
                "{}: its end (line {}, {:.6} s) is stamped before its start (line {}, {:.6} s); out-of-order \
                 stamps, duration left out",
                name.as_str(),
                end.as_ref().map_or(0, |p| p.line.number),
                e.seconds(),
                start.as_ref().map_or(0, |p| p.line.number),
                s.seconds()
            ));
            None
        }
        _ => None,
    };
    let phase = Phase {
        name,
        present: start.is_some() || end.is_some(),
        start_s: start_at.map(Micros::seconds),
        end_s: end_at.map(Micros::seconds),
        duration_s: duration.map(Micros::seconds),
        start_evidence: start.map(|p| p.line.raw.to_string()),
        end_evidence: end.map(|p| p.line.raw.to_string()),
    };
    (phase, duration)
}

// Long by design: each boot phase's start and end, in boot order.
/// Places the milestones on the timeline and derives the five phases.
pub(crate) fn timing(ev: &Events<'_>, tl: &Timeline) -> Timing {
    let mut notes = Vec::new();
    let kernel_start = point(tl, ev.kernel_start.as_ref());
    let smp_start = point(tl, ev.smp_start.as_ref());
    let smp_end = point(tl, ev.smp_done.as_ref().map(|(_, l)| l));
    let init = point(tl, ev.init_line());
    let freeing_first = point(tl, ev.freeing_first.as_ref());

    // Each node's thread reports how long it ran; its start is its line's stamp minus that.
    let deferred_start = ev
        .deferred
        .iter()
        .filter_map(|(_, ms, line)| {
            let at = tl.at(line)?.minus_ms(*ms)?;
            Some(Point {
                at: Some(at),
                line: line.clone(),
            })
        })
        .min_by_key(|p| p.at);
    let deferred_end = ev
        .deferred
        .iter()
        .map(|(_, _, line)| Point {
            at: tl.at(line),
            line: line.clone(),
        })
        .max_by_key(|p| p.at);

    let mut phases = Vec::with_capacity(PhaseName::ALL.len());
    let (early, _) = span(
        PhaseName::EarlySetup,
        kernel_start.clone(),
        smp_start.clone(),
        &mut notes,
    );
    phases.push(early);
    let (smp, smp_bringup) = span(
        PhaseName::SmpBringup,
        smp_start,
        smp_end.clone(),
        &mut notes,
    );
    phases.push(smp);
    let deferred_present = !ev.deferred.is_empty();
    let (deferred, _) = span(
        PhaseName::DeferredPages,
        deferred_start,
        deferred_end.clone(),
        &mut notes,
    );
    phases.push(deferred);
    // Initcalls run from the end of the last earlier phase the log shows to free_initmem().
    let initcalls_start = if deferred_present {
        deferred_end
    } else {
        smp_end
    };
    let initcalls_end = freeing_first.clone().or_else(|| init.clone());
    let (initcalls, _) = span(
        PhaseName::Initcalls,
        initcalls_start,
        initcalls_end,
        &mut notes,
    );
    phases.push(initcalls);
    let (init_phase, _) = span(PhaseName::Init, freeing_first, init.clone(), &mut notes);
    phases.push(init_phase);

    let time_to_init = match (kernel_start.and_then(|p| p.at), init.and_then(|p| p.at)) {
        (Some(s), Some(e)) if e.since(s).is_some() => e.since(s),
        (Some(_), Some(_)) => {
            notes.push("init is stamped before the kernel start: out-of-order stamps, time to init left out".into());
            None
        }
        _ => None,
    };
    Timing {
        phases,
        time_to_init,
        smp_bringup,
        notes,
    }
}

/// The slowest initcalls, slowest first; ties keep log order.
pub(crate) fn slowest_initcalls(ev: &Events<'_>, n: usize) -> Vec<Initcall> {
    let mut calls: Vec<&(&str, u64, LogLine<'_>)> = ev.initcalls.iter().collect();
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    calls
        .into_iter()
        .take(n)
        .map(|(name, usecs, line)| Initcall {
            name: (*name).to_string(),
            usecs: *usecs,
            evidence: line.raw.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::parse::lines;
    use super::*;

    #[test]
    fn the_last_boot_that_reached_init_is_chosen() {
        let text = "[    0.000000] Linux version 6.1.0-old (x)\n\
                    [    2.000000] Run /init as init process\n\
                    [    0.000000] Linux version 6.12.0-new (x)\n\
                    [    1.500000] Run /init as init process\n\
                    [    0.000000] Linux version 6.12.0-hung (x)\n\
                    [    0.300000] smp: Bringing up secondary CPUs ...\n";
        let parsed = lines(text);
        let (boots, count) = split_boots(&parsed);
        assert_eq!(count, 3);
        let (chosen, notes) = choose(&boots);
        let chosen = chosen.expect("a boot");
        assert_eq!(chosen.number, 2);
        assert_eq!(gather(chosen.lines).release, Some("6.12.0-new"));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn a_log_without_a_kernel_start_is_one_boot() {
        let parsed = lines("[ 5000.0] usb 1-1: disconnect\n");
        let (boots, count) = split_boots(&parsed);
        assert_eq!((boots.len(), count), (1, 0));
    }

    #[test]
    fn lines_before_the_first_kernel_start_belong_to_the_first_boot() {
        let parsed = lines("U-Boot\n[ 0.0] microcode: early\n[ 0.0] Linux version 5.8.0 (x)\n");
        let (boots, _) = split_boots(&parsed);
        assert_eq!(boots.first().map(|b| b.lines.len()), Some(3));
    }

    #[test]
    fn out_of_order_end_gives_no_negative_duration() {
        let parsed = lines(
            "[    0.000000] Linux version 3.11.0 (x)\n\
             [    0.075796] NMI watchdog: enabled\n\
             [    0.062414] smpboot: Booting Node   0, Processors  #1 #2 #3 OK\n\
             [    0.050000] Brought up 4 CPUs\n",
        );
        let ev = gather(&parsed);
        let tl = Timeline::for_boot(&parsed, ev.kernel_start.as_ref());
        assert_eq!(tl.out_of_order(&parsed), 2);
        let t = timing(&ev, &tl);
        let smp = &t.phases[1];
        assert_eq!(smp.start_s, Some(0.062414));
        assert_eq!(smp.end_s, Some(0.05));
        assert_eq!(smp.duration_s, None);
        assert_eq!(t.smp_bringup, None);
        assert!(
            t.notes.iter().any(|n| n.starts_with("smp_bringup")),
            "{:?}",
            t.notes
        );
    }

    #[test]
    fn deferred_pages_start_is_derived_from_the_slowest_node() {
        let parsed = lines(
            "[    0.000000] Linux version 5.14.0 (x)\n\
             [    0.882097] smp: Brought up 2 nodes, 384 CPUs\n\
             [    1.094157] node 1 deferred pages initialised in 172ms\n\
             [    1.100055] node 0 deferred pages initialised in 178ms\n\
             [    4.061957] Freeing unused kernel image (initmem) memory: 4048K\n\
             [    4.122063] Run /init as init process\n",
        );
        let ev = gather(&parsed);
        let t = timing(&ev, &Timeline::for_boot(&parsed, ev.kernel_start.as_ref()));
        let deferred = &t.phases[2];
        assert_eq!(deferred.start_s, Some(0.922055));
        assert_eq!(deferred.end_s, Some(1.100055));
        assert_eq!(t.phases[3].start_s, Some(1.100055));
        assert_eq!(t.phases[3].end_s, Some(4.061957));
        assert_eq!(t.time_to_init, Some(Micros(4_122_063)));
    }

    #[test]
    fn wall_clock_counts_from_the_kernel_start() {
        let parsed = lines(
            "Oct 31 20:09:02 host kernel: Linux version 5.3.8 (x)\n\
             Oct 31 20:09:03 host systemd[1]: Started\n\
             Oct 31 20:09:04 host kernel: Run /init as init process\n",
        );
        let ev = gather(&parsed);
        let tl = Timeline::for_boot(&parsed, ev.kernel_start.as_ref());
        assert_eq!(tl.clock, Clock::Wall);
        assert_eq!(timing(&ev, &tl).time_to_init, Some(Micros(2_000_000)));
    }

    #[test]
    fn initcalls_after_init_are_not_boot_time() {
        let parsed = lines(
            "[ 0.5] initcall a+0x0/0x10 returned 0 after 500 usecs\n\
             [ 0.6] initcall b+0x0/0x10 returned 0 after 900 usecs\n\
             [ 0.9] Run /init as init process\n\
             [ 3.0] initcall m+0x0/0x10 [m] returned 0 after 90000 usecs\n",
        );
        let names: Vec<String> = slowest_initcalls(&gather(&parsed), 10)
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["b", "a"]);
    }
}
