//! Two boots side by side: did the new kernel (or the new command line) boot faster, which phase moved, and which
//! recommendations appeared, went away or stayed. This is the question after a live update — what did the kexec's
//! boot cost compared with the kernel it replaced — and after a tuning change.
//!
//! Pure: it compares two [`BootSummary`]s, built from [`BootReport`]s (two kernel logs) or from the JSON reports an
//! apply's journal holds (`Event::BootReport`), so that a report stored by an older kup still compares. The JSON
//! shape of [`BootComparison`] is documented in docs/boot-time.md; add fields, never rename or remove them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::{BootReport, PhaseName};

/// Bumped only if a field changes meaning or disappears.
pub(crate) const COMPARE_VERSION: u32 = 1;

/// What the comparison needs of one boot report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootSummary {
    /// Where the report came from: a file name, `-`, or `journal: before` / `journal: after`.
    #[serde(default)]
    pub(crate) source: String,
    pub(crate) kernel: Option<String>,
    pub(crate) cpus: Option<u32>,
    #[serde(default)]
    pub(crate) cmdline: Option<String>,
    /// `monotonic`, `wall` or `none`, as in the report.
    pub(crate) clock: String,
    pub(crate) time_to_init_s: Option<f64>,
    pub(crate) smp_bringup_s: Option<f64>,
    #[serde(default)]
    pub(crate) phases: Vec<SummaryPhase>,
    #[serde(default)]
    pub(crate) recommendations: Vec<SummaryRecommendation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SummaryPhase {
    pub(crate) name: String,
    pub(crate) present: bool,
    pub(crate) duration_s: Option<f64>,
}

/// A recommendation as a stored report holds it: its code is text, so codes a newer kup adds still compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecommendation {
    /// The kebab-case code (`parallel-bringup-off`, …).
    pub code: String,
    pub(crate) message: String,
    pub(crate) evidence: String,
}

impl BootSummary {
    /// The summary of a report just analysed.
    pub fn of(report: &BootReport, source: impl Into<String>) -> Self {
        let clock = match report.clock {
            super::report::Clock::Monotonic => "monotonic",
            super::report::Clock::Wall => "wall",
            super::report::Clock::None => "none",
        };
        Self {
            source: source.into(),
            kernel: report.kernel.clone(),
            cpus: report.cpus,
            cmdline: report.cmdline.clone(),
            clock: clock.to_owned(),
            time_to_init_s: report.time_to_init_s,
            smp_bringup_s: report.smp_bringup_s,
            phases: report
                .phases
                .iter()
                .map(|p| SummaryPhase {
                    name: p.name.as_str().to_owned(),
                    present: p.present,
                    duration_s: p.duration_s,
                })
                .collect(),
            recommendations: report
                .recommendations
                .iter()
                .map(|r| SummaryRecommendation {
                    code: r.code.as_str().to_owned(),
                    message: r.message.clone(),
                    evidence: r.evidence.clone(),
                })
                .collect(),
        }
    }

    /// The summary of a report as JSON (`kup boot-time --format json`, or a journal's `boot-report` record).
    /// Fields it does not use are ignored, so reports with more fields still compare.
    pub(crate) fn from_json(
        value: &serde_json::Value,
        source: impl Into<String>,
    ) -> Result<Self, String> {
        let mut summary: BootSummary = serde_json::from_value(value.clone())
            .map_err(|e| format!("not a kup boot report: {e}"))?;
        summary.source = source.into();
        Ok(summary)
    }
}

/// One figure before and after.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delta {
    pub(crate) before_s: Option<f64>,
    pub(crate) after_s: Option<f64>,
    /// `after - before` in milliseconds (to the microsecond); null when either is unknown.
    pub delta_ms: Option<f64>,
    /// `delta` relative to `before`, in percent (one decimal); null when either is unknown or `before` is 0.
    pub(crate) delta_pct: Option<f64>,
}

impl Delta {
    fn new(before_s: Option<f64>, after_s: Option<f64>) -> Self {
        let delta = before_s.zip(after_s).map(|(b, a)| a - b);
        Self {
            before_s,
            after_s,
            delta_ms: delta.map(|d| (d * 1e6).round() / 1e3),
            delta_pct: delta
                .zip(before_s)
                .filter(|(_, b)| *b > 0.0)
                .map(|(d, b)| (d / b * 1000.0).round() / 10.0),
        }
    }
}

/// One boot phase's duration before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseDelta {
    /// The phase (`smp_bringup`, …).
    pub name: String,
    pub(crate) before_present: bool,
    pub(crate) after_present: bool,
    /// Its duration before, after and the difference.
    #[serde(flatten)]
    pub duration: Delta,
}

/// Recommendations by code: in the after report only, in the before report only, in both (with the after
/// report's wording and evidence).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendationChanges {
    pub(crate) appeared: Vec<SummaryRecommendation>,
    pub(crate) disappeared: Vec<SummaryRecommendation>,
    /// Advice both boots got.
    pub stayed: Vec<SummaryRecommendation>,
}

/// What identifies one of the two boots compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub(crate) source: String,
    pub(crate) kernel: Option<String>,
    /// CPUs online after SMP bring-up: a different count makes phase durations hard to compare.
    pub cpus: Option<u32>,
    pub(crate) clock: String,
    /// The kernel command line of that boot: what changed between the two is often the point of the comparison.
    pub(crate) cmdline: Option<String>,
}

/// Two boots side by side (`kup boot-time --compare`, or the boots before and after an apply).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BootComparison {
    /// The older boot (the kernel kexec'd from).
    pub before: Side,
    /// The newer boot.
    pub after: Side,
    pub(crate) time_to_init: Delta,
    pub(crate) smp_bringup: Delta,
    /// The five phases in boot order, durations before and after.
    pub phases: Vec<PhaseDelta>,
    /// How the advice changed.
    pub recommendations: RecommendationChanges,
    /// Why figures may not be like for like (different clocks, CPU counts, missing data).
    pub notes: Vec<String>,
    pub(crate) compare_version: u32,
}

fn phase<'a>(summary: &'a BootSummary, name: &str) -> Option<&'a SummaryPhase> {
    summary.phases.iter().find(|p| p.name == name)
}

/// Compares `before` with `after`.
pub fn compare(before: &BootSummary, after: &BootSummary) -> BootComparison {
    let phases = PhaseName::ALL
        .iter()
        .map(|name| {
            let (b, a) = (phase(before, name.as_str()), phase(after, name.as_str()));
            PhaseDelta {
                name: name.as_str().to_owned(),
                before_present: b.is_some_and(|p| p.present),
                after_present: a.is_some_and(|p| p.present),
                duration: Delta::new(b.and_then(|p| p.duration_s), a.and_then(|p| p.duration_s)),
            }
        })
        .collect();
    let has = |s: &BootSummary, code: &str| s.recommendations.iter().any(|r| r.code == code);
    let recommendations = RecommendationChanges {
        appeared: after
            .recommendations
            .iter()
            .filter(|r| !has(before, &r.code))
            .cloned()
            .collect(),
        disappeared: before
            .recommendations
            .iter()
            .filter(|r| !has(after, &r.code))
            .cloned()
            .collect(),
        stayed: after
            .recommendations
            .iter()
            .filter(|r| has(before, &r.code))
            .cloned()
            .collect(),
    };
    let mut notes = Vec::new();
    if before.clock != after.clock {
        notes.push(format!(
            "the logs use different clocks ({} before, {} after): the times are not comparable",
            before.clock, after.clock
        ));
    } else if before.clock == "wall" {
        notes.push(
            "both logs are stamped with wall-clock dates (one-second resolution): small differences mean nothing"
                .into(),
        );
    }
    if let (Some(b), Some(a)) = (before.cpus, after.cpus)
        && b != a
    {
        notes.push(format!(
            "the boots brought up different numbers of CPUs ({b} before, {a} after): SMP bring-up is not like for \
             like"
        ));
    }
    for (side, s) in [("before", before), ("after", after)] {
        if s.time_to_init_s.is_none() {
            notes.push(format!(
                "the {side} log does not show the time to init (see `kup boot-time --dmesg` on it for why)"
            ));
        }
    }
    let side = |s: &BootSummary| Side {
        source: s.source.clone(),
        kernel: s.kernel.clone(),
        cpus: s.cpus,
        clock: s.clock.clone(),
        cmdline: s.cmdline.clone(),
    };
    BootComparison {
        before: side(before),
        after: side(after),
        time_to_init: Delta::new(before.time_to_init_s, after.time_to_init_s),
        smp_bringup: Delta::new(before.smp_bringup_s, after.smp_bringup_s),
        phases,
        recommendations,
        notes,
        compare_version: COMPARE_VERSION,
    }
}

/// A duration as `kup boot-time` shows it: ms below one second.
fn duration(s: Option<f64>) -> String {
    match s {
        Some(s) if s.abs() < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.3} s"),
        None => "-".into(),
    }
}

fn signed_ms(delta: &Delta) -> String {
    match (delta.delta_ms, delta.delta_pct) {
        (Some(ms), Some(pct)) => format!("{ms:+.1} ms ({pct:+.1}%)"),
        (Some(ms), None) => format!("{ms:+.1} ms"),
        _ => "-".into(),
    }
}

/// Human output: who is compared, the headline figures and the phases with their deltas, then what changed in the
/// recommendations. `colour` marks slower figures red and faster ones green.
pub fn human(c: &BootComparison, colour: bool) -> String {
    let paint = |delta: &Delta, text: String| match delta.delta_ms {
        Some(ms) if colour && ms > 0.0 => format!("\x1b[31m{text}\x1b[0m"),
        Some(ms) if colour && ms < 0.0 => format!("\x1b[32m{text}\x1b[0m"),
        _ => text,
    };
    let mut out = String::new();
    for (label, side) in [("before", &c.before), ("after", &c.after)] {
        let cpus = side.cpus.map_or("unknown".to_owned(), |n| n.to_string());
        let kernel = side.kernel.as_deref().unwrap_or("unknown");
        let (source, clock) = (&side.source, &side.clock);
        let _ = writeln!(
            out,
            "{label:<7} {source}: kernel {kernel}, cpus {cpus}, {clock} clock"
        );
    }
    if c.before.cmdline != c.after.cmdline {
        for (label, side) in [("before", &c.before), ("after", &c.after)] {
            let _ = writeln!(
                out,
                "{label:<7} cmdline {}",
                side.cmdline.as_deref().unwrap_or("unknown")
            );
        }
    }
    out.push('\n');
    let _ = writeln!(out, "{:<15} {:>10} {:>10}  delta", "", "before", "after");
    let row = |out: &mut String, name: &str, d: &Delta, absent: (bool, bool)| {
        let cell = |present: bool, s: Option<f64>| {
            if present {
                duration(s)
            } else {
                "absent".to_owned()
            }
        };
        let _ = writeln!(
            out,
            "{name:<15} {:>10} {:>10}  {}",
            cell(absent.0, d.before_s),
            cell(absent.1, d.after_s),
            paint(d, signed_ms(d))
        );
    };
    row(&mut out, "time to init", &c.time_to_init, (true, true));
    row(&mut out, "SMP bring-up", &c.smp_bringup, (true, true));
    out.push('\n');
    for p in &c.phases {
        row(
            &mut out,
            &p.name,
            &p.duration,
            (p.before_present, p.after_present),
        );
    }
    let r = &c.recommendations;
    let recommendations: Vec<_> = [
        ("appeared", &r.appeared),
        ("disappeared", &r.disappeared),
        ("stayed", &r.stayed),
    ]
    .into_iter()
    .flat_map(|(label, list)| list.iter().map(move |rec| (label, rec)))
    .collect();
    super::render::section(
        &mut out,
        "recommendations",
        &recommendations,
        |out, (label, rec)| {
            let _ = writeln!(out, "  {label:<12} [{}] {}", rec.code, rec.message);
        },
    );
    super::render::notes(&mut out, &c.notes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "[    0.000000] Linux version 6.12.9-lts (x)\n\
        [    0.000000] Command line: console=ttyS0 cpuhp.parallel=0\n\
        [    0.300000] smp: Bringing up secondary CPUs ...\n\
        [    0.700000] smp: Brought up 1 node, 4 CPUs\n\
        [    1.800000] Freeing unused kernel image (initmem) memory: 2000K\n\
        [    1.900000] Run /init as init process\n";

    fn summary(text: &str, source: &str) -> BootSummary {
        BootSummary::of(&super::super::analyse(text.as_bytes()), source)
    }

    #[test]
    fn deltas_in_ms_and_percent() {
        let after = BEFORE
            .replace("0.700000", "0.350000")
            .replace("1.900000", "1.850000");
        let c = compare(&summary(BEFORE, "a"), &summary(&after, "b"));
        assert_eq!(c.time_to_init.delta_ms, Some(-50.0));
        assert_eq!(c.time_to_init.delta_pct, Some(-2.6));
        assert_eq!(c.smp_bringup.before_s, Some(0.4));
        assert_eq!(c.smp_bringup.delta_ms, Some(-350.0));
        assert_eq!(c.smp_bringup.delta_pct, Some(-87.5));
        let smp = &c.phases[1];
        assert_eq!(smp.name, "smp_bringup");
        assert_eq!(smp.duration.delta_ms, Some(-350.0));
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn recommendations_appear_disappear_and_stay() {
        // Before: cpuhp.parallel=0 and a serial console without quiet. After: parallel on, still not quiet,
        // and a slow boot.
        let after = BEFORE
            .replace(" cpuhp.parallel=0", "")
            .replace("1.900000] Run", "2.600000] Run")
            .replace("1.800000", "2.500000");
        let c = compare(&summary(BEFORE, "a"), &summary(&after, "b"));
        let text = human(&c, false);
        assert!(
            text.contains(
                "before  cmdline console=ttyS0 cpuhp.parallel=0\nafter   cmdline console=ttyS0\n"
            ),
            "{text}"
        );
        let codes =
            |l: &[SummaryRecommendation]| l.iter().map(|r| r.code.clone()).collect::<Vec<_>>();
        assert_eq!(
            codes(&c.recommendations.appeared),
            ["enable-initcall-debug"]
        );
        assert_eq!(
            codes(&c.recommendations.disappeared),
            ["parallel-bringup-off"]
        );
        assert_eq!(
            codes(&c.recommendations.stayed),
            ["serial-console-not-quiet"]
        );
    }

    #[test]
    fn unknown_figures_stay_unknown_and_are_noted() {
        let c = compare(&summary(BEFORE, "a"), &summary("garbage\n", "b"));
        assert_eq!(c.time_to_init.after_s, None);
        assert_eq!(c.time_to_init.delta_ms, None);
        assert_eq!(c.time_to_init.delta_pct, None);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("after log does not show"))
        );
        // A zero before figure has a delta but no percentage.
        assert_eq!(Delta::new(Some(0.0), Some(0.1)).delta_pct, None);
        assert_eq!(Delta::new(Some(0.0), Some(0.1)).delta_ms, Some(100.0));
    }

    #[test]
    fn different_cpu_counts_and_clocks_are_noted() {
        let after = BEFORE.replace("4 CPUs", "8 CPUs");
        let c = compare(&summary(BEFORE, "a"), &summary(&after, "b"));
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("different numbers of CPUs (4 before, 8 after)"))
        );
        let mut wall = summary(BEFORE, "b");
        wall.clock = "wall".into();
        let c = compare(&summary(BEFORE, "a"), &wall);
        assert!(c.notes[0].starts_with("the logs use different clocks"));
    }

    #[test]
    fn a_journal_report_reads_back_into_the_same_summary() {
        let report = super::super::analyse(BEFORE.as_bytes());
        let value = serde_json::to_value(&report).unwrap();
        let from_json = BootSummary::from_json(&value, "journal: after").unwrap();
        assert_eq!(from_json, BootSummary::of(&report, "journal: after"));
        assert!(BootSummary::from_json(&serde_json::json!({"x": 1}), "j").is_err());
    }
}
