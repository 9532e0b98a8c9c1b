//! `--metrics-textfile PATH` / `policy.metrics`: the last apply as Prometheus metrics in a file for node_exporter's
//! textfile collector, rewritten atomically when apply or resume ends, so that an update's outcome, downtime and
//! kexec gap reach the monitoring that already watches the host. Built from `kup plan status`'s data.

use crate::exec::journal::{self, Event, Mode, Record};
use crate::exec::status::{ApplyState, Status, StepState};
use crate::plan::Plan;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the status does not carry but the metrics need, read from the journal's records.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    /// The first record's time (Unix seconds).
    pub(crate) started_s: Option<f64>,
    /// The last `finished` record's time, when the apply has finished.
    pub(crate) finished_s: Option<f64>,
    /// The kernel the apply started on.
    pub(crate) from_release: String,
    /// The kernel the plan targets (`kernel.version`, else the image's header); empty for a live patch plan.
    pub(crate) target_release: String,
}

impl Facts {
    pub(crate) fn of(records: &[Record], status: &Status, target_release: String) -> Self {
        let seconds = |r: &Record| r.unix_ms as f64 / 1000.0;
        let from_release = records
            .iter()
            .find_map(|r| match &r.event {
                Event::ApplyStarted { release, .. } => Some(release.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let finished = records
            .iter()
            .rev()
            .find(|r| matches!(r.event, Event::Finished { .. }));
        Facts {
            started_s: records.first().map(seconds),
            finished_s: finished.filter(|_| status.finished.is_some()).map(seconds),
            from_release,
            target_release,
        }
    }
}

/// Every state an apply can be in, as `kup plan status` spells them: one `kup_apply_state` series each.
const STATES: [(ApplyState, &str); 5] = [
    (ApplyState::Running, "running"),
    (ApplyState::Completed, "completed"),
    (ApplyState::Failed, "failed"),
    (ApplyState::RolledBack, "rolled-back"),
    (ApplyState::PendingResume, "pending-resume"),
];

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its HELP and TYPE lines, then its samples (`{labels} value`, or ` value` without labels).
fn family(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn step_state(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Done => "done",
        StepState::Failed => "failed",
        StepState::RolledBack => "rolled-back",
    }
}

// Long by design: one family after another, in the order an operator reads them.
/// The textfile's content. Every family is a gauge: each value describes the last apply, not a running count.
pub(crate) fn render(status: &Status, facts: &Facts) -> String {
    let mut out = String::new();
    let mode = match status.mode {
        Mode::Apply => "apply",
        Mode::Rehearse => "rehearse",
    };
    let target = format!("target_release=\"{}\"", label(&facts.target_release));
    family(
        &mut out,
        "kup_apply_info",
        "The last apply of a kup plan: its name, mode, the kernel it started on and the one it targets (always 1).",
        &[(
            format!(
                "{{plan=\"{}\",mode=\"{mode}\",from_release=\"{}\",{target}}}",
                label(&status.plan),
                label(&facts.from_release)
            ),
            1.0,
        )],
    );
    let states: Vec<_> = STATES
        .iter()
        .map(|(state, name)| {
            (
                format!("{{state=\"{name}\",{target}}}"),
                f64::from(u8::from(status.state == *state)),
            )
        })
        .collect();
    family(
        &mut out,
        "kup_apply_state",
        "Whether the last apply is in this state (1) or not (0), as `kup plan status` reports it.",
        &states,
    );
    let at = |s: Option<f64>| {
        s.map(|s| (String::new(), s))
            .into_iter()
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "kup_apply_start_timestamp_seconds",
        "When the last apply started, in seconds since the Unix epoch.",
        &at(facts.started_s),
    );
    family(
        &mut out,
        "kup_apply_end_timestamp_seconds",
        "When the last apply finished, in seconds since the Unix epoch (absent while it has not).",
        &at(facts.finished_s),
    );
    let downtime: Vec<_> = status
        .vm_downtime_ms
        .iter()
        .map(|(vm, ms)| (format!("{{vm=\"{}\"}}", label(vm)), *ms as f64 / 1000.0))
        .collect();
    family(
        &mut out,
        "kup_vm_downtime_seconds",
        "How long each VM was paused in the last apply, from the start of its pause to the end of its resume.",
        &downtime,
    );
    let steps: Vec<_> = status
        .steps
        .iter()
        .filter_map(|s| {
            let ms = s.duration_ms?;
            Some((
                format!(
                    "{{step=\"{}\",phase=\"{}\",state=\"{}\"}}",
                    label(&s.id.to_string()),
                    s.phase,
                    step_state(s.state)
                ),
                ms as f64 / 1000.0,
            ))
        })
        .collect();
    family(
        &mut out,
        "kup_step_duration_seconds",
        "How long each step of the last apply ran (steps that have not run have no sample).",
        &steps,
    );
    let kexec = status.kexec.as_ref();
    family(
        &mut out,
        "kup_kexec_gap_seconds",
        "Wall-clock seconds from the durable kexec record to the first resume on the new kernel (±1 s).",
        &at(kexec.and_then(|k| k.gap_s)),
    );
    family(
        &mut out,
        "kup_new_kernel_uptime_at_resume_seconds",
        "How long the new kernel had been up when kup resumed on it (CLOCK_BOOTTIME).",
        &at(kexec.and_then(|k| k.new_kernel_uptime_s)),
    );
    let time_to_init = kexec
        .and_then(|k| k.boot.as_ref())
        .and_then(|b| b.get("time_to_init_s"))
        .and_then(serde_json::Value::as_f64);
    family(
        &mut out,
        "kup_new_kernel_time_to_init_seconds",
        "The new kernel's time from its first log line to starting init, from its boot log.",
        &at(time_to_init),
    );
    out
}

/// Where this run writes its metrics: the command line's path, else the one the apply was given (recorded in its
/// journal, for the resume after the kexec that `kup-resume.service` starts without flags), else `policy.metrics`.
pub(crate) fn target(flag: Option<&Path>, journal_dir: &Path, plan: &Plan) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            crate::host::journal_files::read_text(&journal_dir.join(journal::METRICS_FILE))
                .map(|text| PathBuf::from(text.trim_end_matches('\n')))
        })
        .or_else(|| plan.policy.metrics.clone())
}

/// The release the plan targets, for the `target_release` label.
fn target_release(plan: &Plan) -> String {
    let Some(kernel) = &plan.kernel else {
        return String::new();
    };
    kernel
        .version
        .clone()
        .or_else(|| {
            crate::host::kernel_file::read_image(&kernel.image)
                .ok()
                .map(|image| image.release().to_owned())
        })
        .unwrap_or_default()
}

/// Writes the metrics of the apply journaled under `root` to `path`. A failure is a warning, not the command's:
/// the update's outcome (and exit code) matters more than its report.
pub(crate) fn write(path: &Path, root: &Path, plan: &Plan) {
    let result = super::status::load(root).and_then(|status| {
        let records = journal::read(Path::new(&status.journal))
            .map_err(|e| super::CommandError::Usage(e.to_string()))?
            .records;
        let facts = Facts::of(&records, &status, target_release(plan));
        crate::host::files::write_readable(path, render(&status, &facts).as_bytes())
            .map_err(|e| super::CommandError::Usage(e.to_string()))
    });
    if let Err(e) = result {
        super::guard::say(format_args!(
            "kup: warning: no metrics written to {}: {}",
            path.display(),
            e.to_string().trim_start_matches("kup: error: ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::blackout::fixtures::Journal;
    use crate::exec::status::fold;

    /// An apply of a one-VM plan folded from its records: paused at 2 s, kexec at 3 s, resumed on the new kernel
    /// at 7.5 s with its boot report, the VM back at 8 s, finished at 8.1 s.
    fn folded() -> (Status, Vec<Record>) {
        let bytes = std::fs::read("plans/single-qemu-shared-ram.toml").unwrap();
        let (plan, graph) = crate::check::check("p.toml", &bytes).valid().unwrap();
        let program = crate::graph::compile(&plan, &graph, "root=/dev/sda1");
        let boot = serde_json::json!({ "time_to_init_s": 1.25 });
        let mut j = Journal::new(Mode::Apply, 1_000);
        // A plan name that needs escaping in a label.
        if let Event::ApplyStarted { plan, .. } = &mut j.records[0].event {
            *plan = "db \"primary\"".into();
        }
        j.started(2_000, "vm:db-1:pause")
            .done(2_005, "vm:db-1:pause", vec![])
            .kexec(3_001)
            .resumed(7_500, Some(3_250), Some(boot))
            .started(7_995, "vm:db-1:resume")
            .done(8_000, "vm:db-1:resume", vec![])
            .at(
                8_100,
                Event::Finished {
                    state: journal::FinalState::Completed,
                    message: String::new(),
                },
            );
        let records = j.records;
        let status = fold("/j", &records, &program, &["db-1".into()], false, false);
        (status, records)
    }

    #[test]
    fn the_textfile_has_the_applys_state_downtime_gap_and_boot() {
        let (status, records) = folded();
        let facts = Facts::of(&records, &status, "6.12.9-lts".into());
        assert_eq!(facts.started_s, Some(1.0));
        assert_eq!(facts.finished_s, Some(8.1));
        let text = render(&status, &facts);
        for line in [
            "kup_apply_info{plan=\"db \\\"primary\\\"\",mode=\"apply\",from_release=\"6.1.0-old\",\
             target_release=\"6.12.9-lts\"} 1",
            "kup_apply_state{state=\"completed\",target_release=\"6.12.9-lts\"} 1",
            "kup_apply_state{state=\"failed\",target_release=\"6.12.9-lts\"} 0",
            "kup_apply_start_timestamp_seconds 1",
            "kup_apply_end_timestamp_seconds 8.1",
            "kup_vm_downtime_seconds{vm=\"db-1\"} 6",
            "kup_step_duration_seconds{step=\"vm:db-1:pause\",phase=\"before\",state=\"done\"} 0.005",
            "kup_kexec_gap_seconds 4.499",
            "kup_new_kernel_uptime_at_resume_seconds 3.25",
            "kup_new_kernel_time_to_init_seconds 1.25",
            "# TYPE kup_vm_downtime_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Steps that never ran have no sample.
        assert!(!text.contains("step=\"vm:db-1:save\""), "{text}");
    }

    #[test]
    fn an_unfinished_apply_has_no_end_timestamp() {
        let (status, mut records) = folded();
        records.pop();
        let status = Status {
            finished: None,
            ..status
        };
        let facts = Facts::of(&records, &status, String::new());
        assert_eq!(facts.finished_s, None);
        assert!(!render(&status, &facts).contains("kup_apply_end_timestamp_seconds"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
