//! `kup plan status`: the last or pending apply, folded from its journal — each step's state and timing, per-VM
//! downtime and blackout, the kexec gap and the new kernel's boot phases — for people or as JSON.

use super::guard::program_of;
use super::{CommandError, CommandResult};
use crate::exec::blackout::{Blackout, Clock};
use crate::exec::journal;
use crate::exec::status::{self, ApplyState, Status};
use crate::graph::StepId;
use crate::host::machine;
use std::path::Path;

/// Whether the process named in the lock file is alive (and is not us).
fn lock_holder_alive(root: &Path) -> bool {
    crate::host::journal_files::read_text(&root.join(journal::LOCK_FILE))
        .and_then(|text| text.trim().parse::<u32>().ok())
        .is_some_and(machine::other_process_alive)
}

/// The status of the pending apply under `root`, else of the latest.
pub(crate) fn load(root: &Path) -> Result<Status, CommandError> {
    let dir = journal::pending(root)
        .or_else(|| journal::latest(root))
        .ok_or_else(|| {
            CommandError::Usage(format!("no apply has been journaled in {}", root.display()))
        })?;
    let loaded = journal::read(&dir).map_err(|e| CommandError::Usage(e.to_string()))?;
    let (bytes, _) = journal::frozen_plan(&dir).map_err(|e| CommandError::Usage(e.to_string()))?;
    let started = journal::started(&loaded.records)
        .ok_or_else(|| CommandError::Usage("the journal has no apply record".to_owned()))?;
    let (_, program) = program_of(&dir, &bytes, started.kernel_cmdline)
        .map_err(|_| CommandError::Usage("the frozen plan no longer validates".to_owned()))?;
    let vms: Vec<String> = program
        .steps
        .iter()
        .filter_map(|s| match &s.id {
            StepId::VmPause { vm } | StepId::VmShutdown { vm } => Some(vm.clone()),
            _ => None,
        })
        .collect();
    let mut status = status::fold(
        &dir.display().to_string(),
        &loaded.records,
        &program,
        &vms,
        lock_holder_alive(root),
        loaded.torn_tail.is_some(),
    );
    if status.state == ApplyState::Running && journal::pending(root).is_none() {
        status.state = ApplyState::PendingResume;
    }
    Ok(status)
}

/// `kup plan status`.
pub(crate) fn run(root: &Path, json: bool) -> CommandResult {
    let status = load(root)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", human_status(&status));
    }
    Ok(())
}

/// What kup aims at for the part of a blackout that is not the kernel booting (pause, save, the hand-over, the
/// restore and resume).
const OUTSIDE_KERNEL_BOOT_GOAL_MS: i64 = 300;

/// A guest's blackout as a small table: one line per part, with its clock, and what is outside the kernel's boot.
fn human_blackout(b: &Blackout) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = match b.total_ms {
        Some(total) => writeln!(
            out,
            "  blackout {total} ms, last ran → ran again, in parts that add up:"
        ),
        None => writeln!(out, "  blackout not over: the parts so far"),
    };
    for p in &b.parts {
        let mut why = Vec::new();
        if !p.covers.is_empty() {
            why.push(format!("= {}", p.covers.join(" + ")));
        }
        why.extend(p.note.clone());
        let line = format!(
            "    {:<24} {:>7} ms  {:<20} {}",
            p.name,
            p.ms,
            wire_name(p.clock),
            why.join("; ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let caveat = b
        .parts
        .iter()
        .find(|p| p.clock == Clock::OldToNewRealtime)
        .map(|p| format!(" (±1 s: {} is on two wall clocks)", p.name))
        .unwrap_or_else(|| {
            if b.parts.iter().any(|p| p.clock == Clock::NewMonotonic) {
                String::new()
            } else {
                " (no kernel boots in it)".to_owned()
            }
        });
    match (b.outside_kernel_boot_ms, b.total_ms) {
        (Some(outside), _) => {
            let off = outside - OUTSIDE_KERNEL_BOOT_GOAL_MS;
            let _ = writeln!(
                out,
                "  outside the kernel's boot: {outside} ms, {} ms {} the {OUTSIDE_KERNEL_BOOT_GOAL_MS} ms goal{caveat}",
                off.abs(),
                if off > 0 { "over" } else { "under" },
            );
        }
        (None, Some(_)) => {
            let _ = writeln!(
                out,
                "  outside the kernel's boot: unknown, as kernel_to_init is ({OUTSIDE_KERNEL_BOOT_GOAL_MS} ms goal)"
            );
        }
        (None, None) => {}
    }
    for note in &b.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}

/// A state as the JSON status spells it (`"rolled-back"`), for the human report.
fn wire_name(state: impl serde::Serialize) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

// Long by design: the status report's sections, top to bottom.
fn human_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let state = wire_name(s.state);
    let _ = writeln!(
        out,
        "plan    {}",
        if s.plan.is_empty() {
            "(unnamed)"
        } else {
            &s.plan
        }
    );
    let _ = writeln!(out, "journal {}", s.journal);
    let _ = writeln!(
        out,
        "state   {state}{}",
        s.message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    if s.torn_tail {
        let _ = writeln!(
            out,
            "note    the journal's last line was cut short by a crash"
        );
    }
    // Wide enough for the longest id (`livepatch:NAME:transition` can be long), at least 28 as before.
    let width = s
        .steps
        .iter()
        .map(|step| step.id.to_string().chars().count())
        .max()
        .unwrap_or(0)
        .max(28);
    let _ = writeln!(
        out,
        "\n{:<width$} {:<12} {:>10}  started",
        "step", "state", "duration"
    );
    for step in &s.steps {
        let st = wire_name(step.state);
        let _ = writeln!(
            out,
            "{:<width$} {:<12} {:>10}  {}",
            step.id,
            st,
            step.duration_ms
                .map(|d| format!("{d} ms"))
                .unwrap_or_default(),
            step.started.as_deref().unwrap_or("")
        );
        if let Some(e) = &step.error {
            let _ = writeln!(out, "{:<width$} error: {e}", "");
        }
    }
    if let Some(l) = &s.livepatch {
        let what = match (l.loaded, l.enabled, l.transition) {
            (false, _, _) => "not loaded",
            (true, true, false) => "enabled",
            (true, true, true) => "enabled, in transition",
            (true, false, true) => "disabling, in transition",
            (true, false, false) => "loaded, disabled",
        };
        let _ = writeln!(out, "\nlivepatch {}: {what}", l.name);
    }
    for (vm, ms) in &s.vm_downtime_ms {
        let _ = writeln!(out, "\nvm {vm} downtime: {ms} ms");
        if let Some(b) = s.blackout.get(vm) {
            out.push_str(&human_blackout(b));
        }
    }
    // A guest whose resume did not run (it failed, or a rollback ran the guest again) has no downtime, but its
    // blackout, over or so far, is worth seeing.
    for (vm, b) in s
        .blackout
        .iter()
        .filter(|(vm, _)| !s.vm_downtime_ms.contains_key(*vm))
    {
        let _ = writeln!(out, "\nvm {vm}");
        out.push_str(&human_blackout(b));
    }
    if let Some(k) = s.kexec.as_ref().filter(|k| k.on_new_kernel == Some(false)) {
        let _ = writeln!(
            out,
            "\nkexec   FAILED: {} came back instead of the new kernel",
            k.to_release.as_deref().unwrap_or("?")
        );
    } else if let Some(k) = &s.kexec {
        let _ = writeln!(
            out,
            "\nkexec   {} → {}  gap {}{}",
            k.from_release,
            k.to_release.as_deref().unwrap_or("(not resumed yet)"),
            k.gap_s
                .map(|g| format!("{g:.3} s"))
                .unwrap_or_else(|| "-".into()),
            k.new_kernel_uptime_s
                .map(|u| format!(
                    " (wall clocks, ±1 s; the new kernel had been up {u:.3} s at resume)"
                ))
                .unwrap_or_default()
        );
        if let Some(boot) = &k.boot {
            let get = |key: &str| boot.get(key).and_then(serde_json::Value::as_f64);
            let _ = writeln!(
                out,
                "boot    time to init {}  SMP bring-up {}",
                get("time_to_init_s")
                    .map(|v| format!("{v:.3} s"))
                    .unwrap_or_else(|| "-".into()),
                get("smp_bringup_s")
                    .map(|v| format!("{:.1} ms", v * 1000.0))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::blackout::fixtures::{kexec_of_one_guest, lab_boot_report};

    fn program() -> crate::graph::Program {
        let bytes = std::fs::read("plans/single-qemu-shared-ram.toml").unwrap();
        let (plan, graph) = crate::check::check("p.toml", &bytes).valid().unwrap();
        crate::graph::compile(&plan, &graph, "root=/dev/sda1")
    }

    fn human(records: &[journal::Record]) -> String {
        let status = status::fold("/j", records, &program(), &["db-1".into()], false, false);
        human_status(&status)
    }

    #[test]
    fn each_guests_blackout_is_a_table_of_parts_with_their_clocks() {
        let j = kexec_of_one_guest(Some(4_300), Some(lab_boot_report()));
        insta::assert_snapshot!("blackout-kexec", human(&j.records));
    }

    #[test]
    fn each_guests_blackout_in_json_has_its_parts_and_clocks() {
        let j = kexec_of_one_guest(Some(4_300), Some(lab_boot_report()));
        let status = status::fold("/j", &j.records, &program(), &["db-1".into()], false, false);
        insta::assert_json_snapshot!("blackout-kexec-json", status.blackout);
    }

    #[test]
    fn a_blackout_without_the_boot_report_names_what_is_unknown() {
        let j = kexec_of_one_guest(Some(4_300), None);
        insta::assert_snapshot!(
            "blackout-kexec-no-boot-report",
            guest_section(&human(&j.records))
        );
    }

    #[test]
    fn a_rehearsals_blackout_is_all_on_one_clock() {
        let mut j = crate::exec::blackout::fixtures::Journal::new(journal::Mode::Rehearse, 1_000);
        j.pause_and_save("db-1", 1_000, 1_008, 1_100)
            .kexec(1_201)
            .done(1_202, "kexec", vec![])
            .restore_and_resume("db-1", 1_300, 1_500, 1_515);
        insta::assert_snapshot!("blackout-rehearsal", guest_section(&human(&j.records)));
    }

    #[test]
    fn a_guest_whose_restore_failed_shows_its_blackout_so_far() {
        let mut j = crate::exec::blackout::fixtures::Journal::new(journal::Mode::Apply, 1_000);
        j.pause_and_save("db-1", 2_000, 2_003, 2_100)
            .kexec(3_001)
            .resumed(7_501, Some(4_300), Some(lab_boot_report()))
            .started(7_510, "vm:db-1:restore")
            .failed(7_800, "vm:db-1:restore", "QEMU exited");
        insta::assert_snapshot!("blackout-restore-failed", guest_section(&human(&j.records)));
    }

    /// The lines about guest db-1.
    fn guest_section(text: &str) -> String {
        text.lines()
            .skip_while(|l| !l.starts_with("vm db-1"))
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect()
    }
}
