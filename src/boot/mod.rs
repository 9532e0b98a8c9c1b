//! `kup boot-time`: how long the kernel took to boot and where the time went, read from its log.
//!
//! After a live update the operator needs to know what the new kernel's boot cost the VMs: this module turns a
//! kernel log in any common format into a `BootReport` (phases, headline figures, recommendations). The
//! analysis (`analyse`) is pure — bytes in, report out — so the executor can call it on a captured log and store
//! the result in its journal. Reading the live log is `crate::host::kmsg`'s job; the command is
//! `crate::commands::boot_time`.

mod advice;
pub mod compare;
pub(crate) mod config;
mod markers;
pub(crate) mod parse;
mod phases;
mod render;
pub mod report;
pub(crate) mod target;
mod wallclock;

pub(crate) use advice::HostFacts;
pub use render::human;
pub use report::BootReport;

use parse::{LogFormat, LogLine};
use report::{Clock, PhaseName, REPORT_VERSION};

/// How many initcalls the report lists.
const SLOWEST_INITCALLS: usize = 10;

/// Analyses a kernel log that may come from any machine. Never fails and never panics: bytes that are not
/// UTF-8 are replaced, unrecognised lines are kept as plain text, and what the log does not show is null.
pub fn analyse(text: &[u8]) -> BootReport {
    analyse_with(text, &HostFacts::default())
}

/// Like `analyse`, with facts about the host the log came from (for the live host only).
pub(crate) fn analyse_with(text: &[u8], facts: &HostFacts) -> BootReport {
    let text = String::from_utf8_lossy(text);
    let lines = parse::lines(&text);
    let format = dominant_format(&lines);
    let (boots, boots_in_log) = phases::split_boots(&lines);
    let (chosen, mut notes) = phases::choose(&boots);
    let boot_lines: &[LogLine<'_>] = chosen.map_or(&[], |b| b.lines);
    let events = phases::gather(boot_lines);
    let timeline = phases::Timeline::for_boot(boot_lines, events.kernel_start.as_ref());
    let timing = phases::timing(&events, &timeline);
    let recommendations = advice::recommend(&events, &timing, timeline.clock, facts);

    if lines.is_empty() {
        notes.push("the log is empty".into());
    } else if events.kernel_start.is_none() {
        notes.push(
            "no 'Linux version' line: the log does not reach back to the kernel start (ring buffer overwritten, or \
             the capture started late)"
                .into(),
        );
    }
    match timeline.clock {
        Clock::Wall => notes.push(
            "times come from wall-clock dates, which have one-second resolution in dmesg -T and journalctl's \
             default output and jump if the clock is set during boot; dmesg or journalctl -k -o short-monotonic \
             give precise figures"
                .into(),
        ),
        Clock::None if !lines.is_empty() => notes.push(
            "the log has no timestamps (kernel without CONFIG_PRINTK_TIME, or printk.time=0): the phases are known, \
             their times are not"
                .into(),
        ),
        _ => {}
    }
    let out_of_order = timeline.out_of_order(boot_lines);
    if out_of_order > 0 {
        notes.push(format!(
            "{out_of_order} line(s) carry a stamp earlier than a line before them (printk continuations keep the \
             stamp of their first fragment); each milestone uses its own line's stamp"
        ));
    }
    notes.extend(timing.notes.iter().cloned());

    BootReport {
        kernel: events.release.map(str::to_string),
        cpus: events
            .smp_done
            .as_ref()
            .map(|(d, _)| d.cpus)
            .or(events.processors_activated),
        nodes: events.smp_done.as_ref().and_then(|(d, _)| d.nodes),
        cmdline: events.cmdline.as_ref().map(|(c, _)| (*c).to_string()),
        smp_bringup_s: timing.smp_bringup.map(parse::Micros::seconds),
        time_to_init_s: timing.time_to_init.map(parse::Micros::seconds),
        phases: timing.phases,
        recommendations,
        format,
        clock: timeline.clock,
        arch: events.arch,
        memory_kib: events.memory.as_ref().map(|(total, _)| *total),
        boots_in_log,
        boot_analysed: chosen.filter(|_| boots_in_log > 0).map(|b| b.number),
        slowest_initcalls: phases::slowest_initcalls(&events, SLOWEST_INITCALLS),
        notes,
        report_version: REPORT_VERSION,
    }
}

/// The format most lines are in; `plain` when no line has a recognisable prefix. Ties go to the format seen
/// first, so the answer does not depend on hash order.
fn dominant_format(lines: &[LogLine<'_>]) -> LogFormat {
    let mut counts: Vec<(LogFormat, usize)> = Vec::new();
    for l in lines.iter().filter(|l| l.format != LogFormat::Plain) {
        match counts.iter_mut().find(|(f, _)| *f == l.format) {
            Some((_, n)) => *n += 1,
            None => counts.push((l.format, 1)),
        }
    }
    let mut best: Option<(LogFormat, usize)> = None;
    for (f, n) in counts {
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((f, n));
        }
    }
    best.map_or(LogFormat::Plain, |(f, _)| f)
}

/// The phase of a report by name (for callers that want one figure).
pub fn phase(report: &BootReport, name: PhaseName) -> Option<&report::Phase> {
    report.phases.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_input_give_an_empty_report() {
        for input in [&b""[..], b"\xff\xfe\x00garbage\n\n", b"[[[[\r\r\n<<>>"] {
            let r = analyse(input);
            assert_eq!(r.kernel, None);
            assert_eq!(r.time_to_init_s, None);
            assert_eq!(r.phases.len(), 5);
            assert!(r.phases.iter().all(|p| !p.present));
        }
    }

    #[test]
    fn non_utf8_bytes_inside_a_real_log_are_tolerated() {
        let log = b"[    0.000000] Linux version 6.1.0 (\xff\xfe)\n[    1.000000] Run /init as init process\n";
        let r = analyse(log);
        assert_eq!(r.kernel.as_deref(), Some("6.1.0"));
        assert_eq!(r.time_to_init_s, Some(1.0));
    }

    #[test]
    fn serde_names_match_the_display_names() {
        for name in PhaseName::ALL {
            assert_eq!(
                serde_json::to_value(name).ok(),
                Some(serde_json::Value::from(name.as_str()))
            );
        }
        for f in [
            LogFormat::Kmsg,
            LogFormat::DmesgT,
            LogFormat::JournalMonotonic,
            LogFormat::Plain,
        ] {
            assert_eq!(
                serde_json::to_value(f).ok(),
                Some(serde_json::Value::from(f.as_str()))
            );
        }
    }

    #[test]
    fn the_dominant_format_ignores_plain_lines() {
        let lines = parse::lines("U-Boot\nEFI stub\nx\n[ 0.0] Linux version 5.8.0 (x)\n");
        assert_eq!(dominant_format(&lines), LogFormat::Dmesg);
    }
}
