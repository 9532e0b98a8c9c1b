//! Human output for `kup boot-time`: a compact table with a text bar per phase, so that where the boot time
//! went is visible at a glance. Colour is the caller's decision (TTY, NO_COLOR), passed in as a flag.

use std::fmt::Write as _;

use super::report::{BootReport, Clock};

const BAR_WIDTH: usize = 40;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }
    fn bar(&self, text: &str) -> String {
        self.wrap("36", text)
    }
    fn code(&self, text: &str) -> String {
        self.wrap("33", text)
    }
}

/// How many digits the times deserve: wall-clock logs stamped to the second (dmesg -T, journalctl's default)
/// would show a misleading `0.000 s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    WholeSeconds,
    Fine,
}

impl Precision {
    fn of(report: &BootReport) -> Precision {
        let mut times = report
            .phases
            .iter()
            .flat_map(|p| [p.start_s, p.end_s])
            .chain([report.time_to_init_s])
            .flatten();
        if report.clock == Clock::Wall && times.all(|t| t.fract() == 0.0) {
            Precision::WholeSeconds
        } else {
            Precision::Fine
        }
    }
}

/// Times on the boot's timeline.
fn seconds(s: Option<f64>, precision: Precision) -> String {
    match (s, precision) {
        (Some(s), Precision::WholeSeconds) => format!("{s:.0} s"),
        (Some(s), _) => format!("{s:.3} s"),
        (None, _) => "-".to_string(),
    }
}

/// Durations in ms below one second, as operators compare them.
fn duration(s: Option<f64>, precision: Precision) -> String {
    match (s, precision) {
        (Some(s), Precision::WholeSeconds) => format!("{s:.0} s"),
        (Some(s), _) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        (Some(s), _) => format!("{s:.3} s"),
        (None, _) => "-".to_string(),
    }
}

fn bar(start: Option<f64>, end: Option<f64>, scale: f64) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return " ".repeat(BAR_WIDTH);
    };
    if scale <= 0.0 || end < start {
        return " ".repeat(BAR_WIDTH);
    }
    let cell = |t: f64| {
        ((t / scale) * BAR_WIDTH as f64)
            .round()
            .clamp(0.0, BAR_WIDTH as f64) as usize
    };
    let from = cell(start).min(BAR_WIDTH - 1);
    let to = cell(end).max(from + 1).min(BAR_WIDTH);
    format!(
        "{}{}{}",
        " ".repeat(from),
        "#".repeat(to - from),
        " ".repeat(BAR_WIDTH - to)
    )
}

/// A section of a human report: a blank line, its title, and each item's lines; nothing at all without items.
pub(super) fn section<T>(
    out: &mut String,
    title: &str,
    items: &[T],
    mut item: impl FnMut(&mut String, &T),
) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}");
    for i in items {
        item(out, i);
    }
}

/// The `notes` section of a human report.
pub(super) fn notes(out: &mut String, notes: &[String]) {
    section(out, "notes", notes, |out, n| {
        let _ = writeln!(out, "  - {n}");
    });
}

// Long by design: the report's sections, top to bottom, as the operator reads them.
/// `kup boot-time`'s human output: headline figures, one bar per phase on a common time axis, then the advice.
pub fn human(report: &BootReport, colour: bool) -> String {
    let p = Paint { on: colour };
    let precision = Precision::of(report);
    let mut out = String::new();
    let unknown = || "unknown".to_string();
    let arch = report
        .arch
        .map_or(String::new(), |a| format!(" ({})", a.as_str()));
    let _ = writeln!(
        out,
        "{} {}{}",
        p.bold("kernel"),
        report.kernel.clone().unwrap_or_else(unknown),
        arch
    );
    if let Some(c) = &report.cmdline {
        let _ = writeln!(out, "cmdline {c}");
    }
    let num = |n: Option<u32>| n.map_or_else(unknown, |n| n.to_string());
    let memory = report
        .memory_kib
        .map_or_else(unknown, |k| format!("{:.1} GiB", k as f64 / 1_048_576.0));
    let _ = writeln!(
        out,
        "cpus {}   nodes {}   memory {}",
        num(report.cpus),
        num(report.nodes),
        memory
    );
    let clock = match report.clock {
        Clock::Monotonic => "kernel clock",
        Clock::Wall => "wall clock",
        Clock::None => "no timestamps in the log",
    };
    let _ = writeln!(
        out,
        "time to init {}   SMP bring-up {}   ({}, {} format)",
        p.bold(&duration(report.time_to_init_s, precision)),
        p.bold(&duration(report.smp_bringup_s, precision)),
        clock,
        report.format.as_str()
    );
    out.push('\n');

    let scale = report
        .time_to_init_s
        .into_iter()
        .chain(report.phases.iter().filter_map(|ph| ph.end_s))
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>10} {:>10}  |{:<w$}|",
        "phase",
        "start",
        "end",
        "duration",
        format!("0 .. {}", seconds(Some(scale), precision)),
        w = BAR_WIDTH
    );
    for ph in &report.phases {
        if !ph.present {
            let _ = writeln!(out, "{:<15} {:>10}", ph.name.as_str(), "absent");
            continue;
        }
        let _ = writeln!(
            out,
            "{:<15} {:>10} {:>10} {:>10}  |{}|",
            ph.name.as_str(),
            seconds(ph.start_s, precision),
            seconds(ph.end_s, precision),
            duration(ph.duration_s, precision),
            p.bar(&bar(ph.start_s, ph.end_s, scale))
        );
    }

    section(
        &mut out,
        "slowest initcalls",
        &report.slowest_initcalls,
        |out, call| {
            let _ = writeln!(
                out,
                "  {:>10}  {}",
                duration(Some(call.usecs as f64 / 1e6), Precision::Fine),
                call.name
            );
        },
    );
    section(
        &mut out,
        "recommendations",
        &report.recommendations,
        |out, r| {
            let _ = writeln!(
                out,
                "  {} {}",
                p.code(&format!("[{}]", r.code.as_str())),
                r.message
            );
            let _ = writeln!(out, "      evidence: {}", r.evidence);
        },
    );
    notes(&mut out, &report.notes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_placed_on_the_scale() {
        assert_eq!(bar(Some(0.0), Some(1.0), 1.0), "#".repeat(BAR_WIDTH));
        let half = bar(Some(0.5), Some(1.0), 1.0);
        assert_eq!(half.trim_start().len(), BAR_WIDTH / 2);
        // A phase too short to fill a cell still shows.
        assert_eq!(bar(Some(0.1), Some(0.1001), 4.0).matches('#').count(), 1);
        assert_eq!(bar(None, Some(1.0), 1.0).trim(), "");
        assert_eq!(bar(Some(1.0), Some(0.5), 1.0).trim(), "");
    }

    #[test]
    fn durations_switch_units_at_one_second() {
        assert_eq!(duration(Some(0.5564), Precision::Fine), "556.4 ms");
        assert_eq!(duration(Some(4.122063), Precision::Fine), "4.122 s");
        assert_eq!(duration(None, Precision::Fine), "-");
        assert_eq!(duration(Some(2.0), Precision::WholeSeconds), "2 s");
    }
}
