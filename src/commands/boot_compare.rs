//! `kup boot-time --compare BEFORE AFTER` and `kup boot-time --journal DIR`: where the two reports come from (two
//! kernel logs, or the boot reports an apply's journal recorded), and how the comparison is printed. The
//! comparison itself is pure ([`crate::boot::compare`]).

use std::path::{Path, PathBuf};

use super::boot_time::BootTimeArgs;
use super::{CommandError, CommandResult};
use crate::boot::compare::{BootSummary, compare, human};
use crate::exec::journal::{self, Event};

/// Runs the comparison modes: 0 with the comparison on stdout; 2 when a log or the journal cannot be read, or the
/// journal lacks one of the two reports.
pub(crate) fn run(args: &BootTimeArgs) -> CommandResult {
    let sides = match (&args.compare, &args.journal) {
        (Some(paths), _) => from_logs(paths),
        (None, Some(dir)) => from_journal(dir),
        (None, None) => Err("nothing to compare".to_owned()),
    };
    let (before, after) = sides.map_err(CommandError::Usage)?;
    super::boot_time::print(args.format, &compare(&before, &after), human)
}

/// Two kernel logs; at most one of them may be `-` (standard input).
fn from_logs(paths: &[PathBuf]) -> Result<(BootSummary, BootSummary), String> {
    let [before, after] = paths else {
        return Err("--compare takes two logs: BEFORE AFTER".to_owned());
    };
    let stdin = |p: &Path| p.as_os_str() == "-";
    if stdin(before) && stdin(after) {
        return Err("--compare: only one of the two logs can be `-` (standard input)".to_owned());
    }
    let read = |path: &Path| -> Result<BootSummary, String> {
        let bytes = if stdin(path) {
            super::boot_time::read_stdin()?
        } else {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        };
        Ok(BootSummary::of(
            &crate::boot::analyse(&bytes),
            path.display().to_string(),
        ))
    };
    Ok((read(before)?, read(after)?))
}

/// The boot reports of one apply: `dir` is a journal root (the pending or latest apply under it, as `kup plan
/// status` picks it) or one apply's own directory. A report recorded before the journal's kexec record describes
/// the old kernel, one after it the new kernel.
fn from_journal(dir: &Path) -> Result<(BootSummary, BootSummary), String> {
    let apply = if dir.join(journal::JOURNAL_FILE).is_file() {
        dir.to_path_buf()
    } else {
        journal::pending(dir)
            .or_else(|| journal::latest(dir))
            .ok_or_else(|| format!("no apply has been journaled in {}", dir.display()))?
    };
    let loaded = journal::read(&apply).map_err(|e| e.to_string())?;
    let (before, after) = reports(&loaded.records);
    let shown = apply.display();
    let after = after.ok_or_else(|| {
        format!(
            "{shown} has no boot report of the new kernel: `kup plan resume` records it on the first resume after the \
             kexec (a rehearsal or an apply that stopped before the kexec has none)"
        )
    })?;
    let before = before.ok_or_else(|| {
        format!(
            "{shown} has the new kernel's boot report but none of the old kernel's boot: this kup does not record \
             it. Compare logs instead, on the new kernel: `journalctl -k -b -1 > old.log` and `kup boot-time \
             --compare old.log -` with the new kernel's log on standard input (`dmesg | …`)"
        )
    })?;
    let summary = |value: &serde_json::Value, side: &str| {
        BootSummary::from_json(value, format!("journal {side}"))
            .map_err(|e| format!("{shown}: the {side} boot report: {e}"))
    };
    Ok((summary(before, "before")?, summary(after, "after")?))
}

/// The last boot report before the kexec record and the first one after it.
fn reports(
    records: &[journal::Record],
) -> (Option<&serde_json::Value>, Option<&serde_json::Value>) {
    let mut before = None;
    let mut after = None;
    let mut kexec_seen = false;
    for record in records {
        match &record.event {
            Event::Kexec { .. } => kexec_seen = true,
            Event::BootReport { report } if !kexec_seen => before = Some(report),
            Event::BootReport { report } if after.is_none() => after = Some(report),
            _ => {}
        }
    }
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::test_support::rec;

    fn kexec() -> Event {
        Event::Kexec {
            boot_id: "a".into(),
            release: "6.1.0".into(),
            kernel_cmdline: "x".into(),
        }
    }

    #[test]
    fn reports_are_split_at_the_kexec_record() {
        let old = serde_json::json!({"kernel": "old"});
        let new = serde_json::json!({"kernel": "new"});
        let records = [
            rec(
                1,
                Event::BootReport {
                    report: old.clone(),
                },
            ),
            rec(2, kexec()),
            rec(
                3,
                Event::BootReport {
                    report: new.clone(),
                },
            ),
        ];
        assert_eq!(reports(&records), (Some(&old), Some(&new)));
        // Today's journals: only the new kernel's report.
        assert_eq!(reports(&records[1..]), (None, Some(&new)));
        assert_eq!(reports(&records[..2]), (Some(&old), None));
    }
}
