//! Each guest's blackout — from the last instant it ran to the first instant it ran again — split into parts that
//! add up, each labelled with the clock it was measured on, so that operators see where a guest's time went
//! (`kup plan status`). Pure, and folded from the journal alone: a journal copied off another machine (the lab's,
//! read back from a guest's disk) gives the same parts as on the host that wrote it.

use super::journal::{Event, Mode, Record};
use crate::action::Action;
use crate::graph::{Program, StepId};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The clock a part was measured on. The kexec changes kernels, and with them every clock: a part says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Clock {
    /// The wall clock of the kernel the apply started on: journal times, `stop` acknowledged. A rehearsal never
    /// leaves that kernel, so all its parts are on this clock.
    OldRealtime,
    /// From the old kernel's wall clock to the new kernel's, which starts from the RTC (1 s resolution): ±1 s.
    OldToNewRealtime,
    /// The new kernel's printk clock (its boot report), which starts with the kernel.
    NewMonotonic,
    /// The new kernel's CLOCK_BOOTTIME when resume started, less the boot report's `/init` instant.
    NewBoottime,
    /// The new kernel's wall clock: journal times after the kexec, `cont` acknowledged.
    NewRealtime,
}

/// One stretch of a blackout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Part {
    /// `pause_save`, `until_kexec`, … (docs/executor.md).
    pub(crate) name: &'static str,
    /// Its length; negative only when two clocks disagree (`kexec_to_kernel_start`, ±1 s).
    pub(crate) ms: i64,
    /// What it was measured on.
    pub(crate) clock: Clock,
    /// The parts this one stands for, when the clock that would tell them apart is missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) covers: Vec<&'static str>,
    /// Why it is approximate, merged or cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

/// A guest's blackout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Blackout {
    /// From the last instant the guest ran to the first instant it ran again; `None` while it has not run again.
    pub(crate) total_ms: Option<i64>,
    /// In order. Their `ms` add up to `total_ms` exactly — or, while the guest has not run again, to the last
    /// instant the journal knows of it.
    pub(crate) parts: Vec<Part>,
    /// `total_ms` less `kernel_to_init`: what is not the new kernel booting (all of a rehearsal's blackout).
    pub(crate) outside_kernel_boot_ms: Option<i64>,
    /// What the reader should know: an instant approximated, why the guest does not run yet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

/// Each guest's blackout, for the guests of `vm_names` that were stopped.
pub(crate) fn blackouts(
    records: &[Record],
    program: &Program,
    vm_names: &[String],
) -> BTreeMap<String, Blackout> {
    let facts = Facts::of(records);
    vm_names
        .iter()
        .filter_map(|vm| Some((vm.clone(), facts.blackout(vm, is_libvirt(program, vm))?)))
        .collect()
}

/// A libvirt guest's pause has no `stop`: `virsh save` pauses it itself.
fn is_libvirt(program: &Program, vm: &str) -> bool {
    !program.steps.iter().any(|s| {
        matches!(&s.id, StepId::VmPause { vm: v } if v == vm)
            && s.actions
                .iter()
                .any(|a| matches!(a, Action::Qmp { command, .. } if command == "stop"))
    })
}

/// A `step-done` record.
struct Done<'a> {
    unix_ms: u64,
    duration_ms: u64,
    outputs: &'a [Value],
}

/// What the journal says of one step.
#[derive(Default)]
struct StepRecords<'a> {
    started: Vec<u64>,
    done: Vec<Done<'a>>,
    failed: Vec<(u64, &'a str)>,
    rolled_back: Option<u64>,
}

/// The first resume on another boot: the new kernel (or whichever came back).
#[derive(Clone, Copy)]
struct Handover {
    unix_ms: u64,
    uptime_ms: Option<u64>,
    on_new_kernel: bool,
}

/// The journal, as far as blackouts need it.
struct Facts<'a> {
    mode: Mode,
    steps: BTreeMap<&'a StepId, StepRecords<'a>>,
    /// The last kexec record before the hand-over.
    kexec: Option<u64>,
    handover: Option<Handover>,
    /// The boot report recorded by the hand-over's resume: the kernel that came back.
    boot: Option<&'a Value>,
}

impl<'a> Facts<'a> {
    fn of(records: &'a [Record]) -> Self {
        let mut facts = Facts {
            mode: Mode::Apply,
            steps: BTreeMap::new(),
            kexec: None,
            handover: None,
            boot: None,
        };
        for r in records {
            match &r.event {
                Event::ApplyStarted { mode, .. } => facts.mode = *mode,
                Event::StepStarted { step } => facts.step(step).started.push(r.unix_ms),
                Event::StepDone {
                    step,
                    duration_ms,
                    outputs,
                } => facts.step(step).done.push(Done {
                    unix_ms: r.unix_ms,
                    duration_ms: *duration_ms,
                    outputs,
                }),
                Event::StepFailed { step, error, .. } => {
                    facts.step(step).failed.push((r.unix_ms, error));
                }
                Event::StepRolledBack { step } => facts.step(step).rolled_back = Some(r.unix_ms),
                Event::Kexec { .. } if facts.handover.is_none() => facts.kexec = Some(r.unix_ms),
                Event::ResumeStarted {
                    rebooted: true,
                    on_new_kernel,
                    uptime_ms,
                    ..
                } if facts.handover.is_none() => {
                    facts.handover = Some(Handover {
                        unix_ms: r.unix_ms,
                        uptime_ms: *uptime_ms,
                        on_new_kernel: *on_new_kernel,
                    });
                }
                Event::BootReport { report }
                    if facts.handover.is_some() && facts.boot.is_none() =>
                {
                    facts.boot = Some(report);
                }
                _ => {}
            }
        }
        facts
    }

    fn step(&mut self, id: &'a StepId) -> &mut StepRecords<'a> {
        self.steps.entry(id).or_default()
    }

    fn records(&self, id: &StepId) -> Option<&StepRecords<'a>> {
        self.steps.get(id)
    }

    /// `vm`'s blackout; `None` when it was never stopped.
    fn blackout(&self, vm: &str, libvirt: bool) -> Option<Blackout> {
        let none = StepRecords::default();
        let get = |id: StepId| self.records(&id).unwrap_or(&none);
        let vm_ = || vm.to_owned();
        let pause = get(StepId::VmPause { vm: vm_() });
        let save = get(StepId::VmSave { vm: vm_() });
        let restore = get(StepId::VmRestore { vm: vm_() });
        let resume = get(StepId::VmResume { vm: vm_() });
        let mut b = Builder::start(self.start(vm, pause, save, libvirt)?);
        // Before the kexec: stopped, saved — or stopped and run again by a rollback.
        let saved = save.done.first().map(|d| d.unix_ms);
        if let Some(saved) = saved {
            b.until("pause_save", saved, Clock::OldRealtime);
        }
        // The undo that runs the guest again: the pause's `cont`, or for libvirt the save's `virsh restore`.
        let undo = if libvirt { save } else { pause };
        if let Some(at) = undo.rolled_back {
            b.until("until_rollback", at, Clock::OldRealtime);
            b.note(format!(
                "rolled back: the undo of vm:{vm}:{} ran the guest again, just before its record",
                if libvirt { "save" } else { "pause" }
            ));
            return Some(b.closed(Some(0)));
        }
        if saved.is_none() {
            return Some(b.open(format!("vm:{vm}:save has not completed")));
        }
        let after = match self.mode {
            Mode::Rehearse => {
                let Some(&at) = restore.started.first() else {
                    return Some(b.open(format!("vm:{vm}:restore has not started")));
                };
                b.until("until_restore", at, Clock::OldRealtime);
                Clock::OldRealtime
            }
            Mode::Apply => {
                if let Err(why) = self.across_the_kexec(&mut b, vm, restore) {
                    return Some(b.open(why.to_string()));
                }
                Clock::NewRealtime
            }
        };
        if let Some(done) = restore.done.last() {
            b.until("restore", done.unix_ms, after);
            if restore.started.len() > 1 {
                b.note(format!(
                    "vm:{vm}:restore ran {} times: the part spans them all",
                    restore.started.len()
                ));
            }
        } else if let Some(&(at, error)) = restore.failed.last() {
            b.until_noted("restore", ms(at), after, format!("failed: {error}"));
            return Some(b.open(format!(
                "vm:{vm}:restore failed: the guest has not run again"
            )));
        } else {
            return Some(b.open(format!(
                "vm:{vm}:restore has not completed (running, or interrupted)"
            )));
        }
        let Some(done) = resume.done.first() else {
            if let Some(&(at, error)) = resume.failed.last() {
                b.until_noted("resume", ms(at), after, format!("failed: {error}"));
                return Some(b.open(format!(
                    "vm:{vm}:resume failed: the guest has not run again"
                )));
            }
            return Some(b.open(format!("vm:{vm}:resume has not completed")));
        };
        let end = if libvirt {
            // `virsh resume`, the first action: the domain runs when it exits.
            done.outputs.first().and_then(|o| {
                Some(o.get("started_unix_ms")?.as_u64()? + o.get("duration_ms")?.as_u64()?)
            })
        } else {
            field(done.outputs, "acked_unix_ms")
        };
        let end = end.unwrap_or_else(|| {
            b.note(if marked(done.outputs) {
                format!(
                    "vm:{vm}:resume was marked done by an operator (`--mark-done`): when the guest ran again is \
                     unknown; the mark's record is used"
                )
            } else {
                format!(
                    "the journal has no instant the guest ran again (a journal of an older kup): the end of \
                     vm:{vm}:resume is used, a few ms late"
                )
            });
            done.unix_ms
        });
        b.until("resume", end, after);
        let kernel_boot = b.part("kernel_to_init");
        Some(b.closed(match self.mode {
            Mode::Rehearse => Some(0),
            Mode::Apply => kernel_boot,
        }))
    }

    /// The last instant the guest ran: `stop` acknowledged, or for libvirt `virsh save` starting (it pauses the
    /// domain itself, some time inside).
    fn start(
        &self,
        vm: &str,
        pause: &StepRecords,
        save: &StepRecords,
        libvirt: bool,
    ) -> Option<Start> {
        if libvirt {
            // `virsh save`, the first action.
            let first = save.done.first().and_then(|d| d.outputs.first());
            if let Some(at) = first.and_then(|o| o.get("started_unix_ms")?.as_u64()) {
                return Some(Start::exact(at));
            }
            return Some(match save.done.first() {
                Some(d) => Start::approximate(
                    d.unix_ms.saturating_sub(d.duration_ms),
                    "the journal has no instant `virsh save` started (a journal of an older kup): the save step's \
                     start is used"
                        .to_owned(),
                ),
                None => Start::approximate(
                    *save.started.first()?,
                    format!("vm:{vm}:save has not completed: its start record is used as the instant it stopped"),
                ),
            });
        }
        let done = pause.done.first()?;
        Some(match field(done.outputs, "acked_unix_ms") {
            Some(at) => Start::exact(at),
            None => Start::approximate(
                done.unix_ms,
                "the journal has no instant `stop` was acknowledged (a journal of an older kup): the end of the \
                 pause step is used"
                    .to_owned(),
            ),
        })
    }

    /// From the save to the restore's start across a real kexec: the kexec record, the new kernel's start, its
    /// `/init`, resume — or across a reboot before the kexec (no kexec record, a resume on another boot). `Err`: why
    /// guest `vm` cannot have run again yet.
    fn across_the_kexec(
        &self,
        b: &mut Builder,
        vm: &str,
        restore: &StepRecords,
    ) -> Result<(), Missing> {
        // The first part on the kernel that came back starts at the kexec record, or at the save without one.
        let (to_kernel_start, to_resume) = match (self.kexec, self.handover) {
            (Some(kexec), _) => {
                b.until("until_kexec", kexec, Clock::OldRealtime);
                ("kexec_to_kernel_start", "kexec_to_resume")
            }
            (None, Some(_)) => {
                b.note(
                    "the host went down before the kexec record (a reboot or a power cut): the hand-over is timed \
                     from the save"
                        .to_owned(),
                );
                ("until_kernel_start", "until_resume")
            }
            (None, None) => return Err(Missing::Kexec),
        };
        let h = self.handover.ok_or(Missing::Handover)?;
        if !h.on_new_kernel {
            b.note(
                "the kernel that came back is not the plan's (the update failed): the parts after the kexec are its"
                    .to_owned(),
            );
        }
        match h.uptime_ms {
            Some(uptime) => {
                // The kernel started `uptime` before resume's record, on the new kernel's wall clock.
                let kernel_start = ms(h.unix_ms) - ms(uptime);
                b.until_noted(
                    to_kernel_start,
                    kernel_start,
                    Clock::OldToNewRealtime,
                    "two kernels' wall clocks, the new one read from the RTC: ±1 s".to_owned(),
                );
                match self.init_s() {
                    Ok(init_s) => {
                        b.until_at(
                            "kernel_to_init",
                            kernel_start + (init_s * 1000.0).round() as i64,
                            Clock::NewMonotonic,
                        );
                        b.until("init_to_resume", h.unix_ms, Clock::NewBoottime);
                    }
                    Err(why) => b.until_covering(
                        "kernel_start_to_resume",
                        h.unix_ms,
                        Clock::NewBoottime,
                        &["kernel_to_init", "init_to_resume"],
                        format!("where /init started is unknown: {why}"),
                    ),
                }
            }
            None => b.until_covering(
                to_resume,
                h.unix_ms,
                Clock::OldToNewRealtime,
                &[to_kernel_start, "kernel_to_init", "init_to_resume"],
                "resume recorded no CLOCK_BOOTTIME (a journal of an older kup): when the kernel started is unknown; two \
                 kernels' wall clocks, ±1 s"
                    .to_owned(),
            ),
        }
        let &at = restore
            .started
            .first()
            .ok_or_else(|| Missing::RestoreStart(vm.to_owned()))?;
        // Resume's own records, and whatever the restore waited for (parallelism, custom steps before it).
        if ms(at) != b.at {
            b.until("wait_before_restore", at, Clock::NewRealtime);
        }
        Ok(())
    }

    /// The new kernel's `Run /init` on its printk clock, in seconds since the kernel started.
    fn init_s(&self) -> Result<f64, Missing> {
        let report = self.boot.ok_or(Missing::BootReport)?;
        let clock = report.get("clock").and_then(Value::as_str).unwrap_or("?");
        if clock != "monotonic" {
            return Err(Missing::MonotonicStamps(clock.to_owned()));
        }
        report
            .get("phases")
            .and_then(Value::as_array)
            .and_then(|phases| phases.iter().find(|p| p["name"] == "init"))
            .and_then(|p| p.get("end_s"))
            .and_then(Value::as_f64)
            .ok_or(Missing::Init)
    }
}

/// What the journal lacks to place an instant: why a blackout is not over, or why parts are merged.
#[derive(Debug, thiserror::Error)]
enum Missing {
    #[error("no kexec record yet: the host has not reached the kexec")]
    Kexec,
    #[error("no resume on another boot yet: the new kernel has not resumed the plan")]
    Handover,
    #[error("vm:{0}:restore has not started")]
    RestoreStart(String),
    #[error("the journal has no boot report of the new kernel (its log could not be read)")]
    BootReport,
    #[error("the new kernel's boot report has no monotonic stamps (clock: {0})")]
    MonotonicStamps(String),
    #[error("the new kernel's log does not show /init starting")]
    Init,
}

/// Whether `outputs` is an operator's `--mark-done` instead of what the step's actions reported.
fn marked(outputs: &[Value]) -> bool {
    outputs.iter().any(|o| o["marked_done_by_operator"] == true)
}

/// The first output of `outputs` that has `key`, as a number.
fn field(outputs: &[Value], key: &str) -> Option<u64> {
    outputs.iter().find_map(|o| o.get(key)?.as_u64())
}

/// Unix ms as a signed instant: parts on two clocks can be negative.
fn ms(unix_ms: u64) -> i64 {
    i64::try_from(unix_ms).unwrap_or(i64::MAX)
}

/// Where a blackout starts, and whether that instant is an approximation.
struct Start {
    unix_ms: u64,
    note: Option<String>,
}

impl Start {
    fn exact(unix_ms: u64) -> Self {
        Self {
            unix_ms,
            note: None,
        }
    }

    fn approximate(unix_ms: u64, note: String) -> Self {
        Self {
            unix_ms,
            note: Some(note),
        }
    }
}

/// Parts as differences of consecutive instants: they add up to the last instant less the first by construction.
struct Builder {
    start: i64,
    at: i64,
    parts: Vec<Part>,
    notes: Vec<String>,
}

impl Builder {
    fn start(start: Start) -> Self {
        Self {
            start: ms(start.unix_ms),
            at: ms(start.unix_ms),
            parts: Vec::new(),
            notes: start.note.into_iter().collect(),
        }
    }

    fn push(
        &mut self,
        name: &'static str,
        at: i64,
        clock: Clock,
        covers: &[&'static str],
        note: Option<String>,
    ) {
        self.parts.push(Part {
            name,
            ms: at - self.at,
            clock,
            covers: covers.to_vec(),
            note,
        });
        self.at = at;
    }

    fn until(&mut self, name: &'static str, unix_ms: u64, clock: Clock) {
        self.push(name, ms(unix_ms), clock, &[], None);
    }

    fn until_at(&mut self, name: &'static str, at: i64, clock: Clock) {
        self.push(name, at, clock, &[], None);
    }

    fn until_noted(&mut self, name: &'static str, at: i64, clock: Clock, note: String) {
        self.push(name, at, clock, &[], Some(note));
    }

    fn until_covering(
        &mut self,
        name: &'static str,
        unix_ms: u64,
        clock: Clock,
        covers: &[&'static str],
        note: String,
    ) {
        self.push(name, ms(unix_ms), clock, covers, Some(note));
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn part(&self, name: &str) -> Option<i64> {
        self.parts.iter().find(|p| p.name == name).map(|p| p.ms)
    }

    /// The guest runs again; `kernel_boot`: the part that is the kernel booting (0 for none), `None` if unknown.
    fn closed(self, kernel_boot: Option<i64>) -> Blackout {
        let total = self.at - self.start;
        Blackout {
            total_ms: Some(total),
            outside_kernel_boot_ms: kernel_boot.map(|k| total - k),
            parts: self.parts,
            notes: self.notes,
        }
    }

    /// The guest has not run again, because `why`.
    fn open(mut self, why: String) -> Blackout {
        self.notes.push(why);
        Blackout {
            total_ms: None,
            outside_kernel_boot_ms: None,
            parts: self.parts,
            notes: self.notes,
        }
    }
}

/// Journals of one guest's hand-over, built record by record, for the tests of the blackout and of the status.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::exec::journal::{Event, Mode, Record, rfc3339};
    use serde_json::{Value, json};

    /// A journal being written, each record stamped with the time it is given.
    #[derive(Default)]
    pub(crate) struct Journal {
        pub(crate) records: Vec<Record>,
    }

    impl Journal {
        pub(crate) fn new(mode: Mode, t: u64) -> Self {
            let mut j = Self::default();
            j.at(
                t,
                Event::ApplyStarted {
                    plan: "p".into(),
                    plan_path: "/p.toml".into(),
                    plan_sha256: "x".into(),
                    mode,
                    kernel_load: true,
                    boot_id: "a".into(),
                    release: "6.1.0-old".into(),
                    hostname: "h".into(),
                    pid: 1,
                    kernel_cmdline: "root=/dev/sda1".into(),
                },
            );
            j
        }

        pub(crate) fn at(&mut self, unix_ms: u64, event: Event) -> &mut Self {
            self.records.push(Record {
                seq: self.records.len() as u64 + 1,
                unix_ms,
                time: rfc3339(unix_ms),
                event,
            });
            self
        }

        pub(crate) fn started(&mut self, t: u64, step: &str) -> &mut Self {
            self.at(
                t,
                Event::StepStarted {
                    step: step.parse().unwrap(),
                },
            )
        }

        pub(crate) fn done(&mut self, t: u64, step: &str, outputs: Vec<Value>) -> &mut Self {
            let started = self
                .records
                .iter()
                .rev()
                .find(|r| matches!(&r.event, Event::StepStarted { step: s } if *s == step))
                .map_or(t, |r| r.unix_ms);
            self.at(
                t,
                Event::StepDone {
                    step: step.parse().unwrap(),
                    duration_ms: t - started,
                    outputs,
                },
            )
        }

        pub(crate) fn failed(&mut self, t: u64, step: &str, error: &str) -> &mut Self {
            self.at(
                t,
                Event::StepFailed {
                    step: step.parse().unwrap(),
                    duration_ms: 1,
                    error: error.into(),
                },
            )
        }

        /// A QMP guest's pause (`stop` acknowledged at `stop`) and save, as the host reports them.
        pub(crate) fn pause_and_save(
            &mut self,
            vm: &str,
            t: u64,
            stop: u64,
            saved: u64,
        ) -> &mut Self {
            self.started(t, &format!("vm:{vm}:pause"))
                .done(
                    stop + 1,
                    &format!("vm:{vm}:pause"),
                    vec![
                        Value::Null,
                        json!({"qemu": "7.2.0"}),
                        json!({ "acked_unix_ms": stop }),
                    ],
                )
                .started(stop + 2, &format!("vm:{vm}:save"))
                .done(saved, &format!("vm:{vm}:save"), vec![Value::Null])
        }

        /// The kexec step, its record at `record` (a rehearsal's no-op included).
        pub(crate) fn kexec(&mut self, record: u64) -> &mut Self {
            self.started(record - 1, "kexec").at(
                record,
                Event::Kexec {
                    boot_id: "a".into(),
                    release: "6.1.0-old".into(),
                    kernel_cmdline: "root=/dev/sda1".into(),
                },
            )
        }

        /// The first resume on the new kernel, up `uptime_ms` (if it says), with the new kernel's boot report.
        pub(crate) fn resumed(
            &mut self,
            t: u64,
            uptime_ms: Option<u64>,
            boot: Option<Value>,
        ) -> &mut Self {
            self.at(
                t,
                Event::ResumeStarted {
                    boot_id: "b".into(),
                    release: "6.12.9-lts".into(),
                    pid: 9,
                    rebooted: true,
                    on_new_kernel: true,
                    uptime_ms,
                },
            );
            if let Some(report) = boot {
                self.at(t + 1, Event::BootReport { report });
            }
            self.done(t + 2, "kexec", vec![])
        }

        /// A QMP guest's restore and resume (`cont` acknowledged at `cont`).
        pub(crate) fn restore_and_resume(
            &mut self,
            vm: &str,
            t: u64,
            restored: u64,
            cont: u64,
        ) -> &mut Self {
            self.started(t, &format!("vm:{vm}:restore"))
                .done(restored, &format!("vm:{vm}:restore"), vec![Value::Null])
                .started(restored + 1, &format!("vm:{vm}:resume"))
                .done(
                    cont + 4,
                    &format!("vm:{vm}:resume"),
                    vec![
                        Value::Null,
                        json!({ "acked_unix_ms": cont }),
                        json!({"status": "running"}),
                    ],
                )
        }
    }

    /// The lab kernel's boot report (`Run /init` at 3.920945 s on its printk clock).
    pub(crate) fn lab_boot_report() -> Value {
        let log = std::fs::read("tests/data/dmesg/lab-qemu-tcg-smp2.txt").unwrap();
        serde_json::to_value(crate::boot::analyse(&log)).unwrap()
    }

    /// A kexec of one QMP guest `db-1`: stop at 2 003, saved at 2 100, kexec record at 3 001, resume at 7 501
    /// with the new kernel up 4 300 ms (it started at 3 201), restore 7 510–7 900, `cont` at 7 950.
    pub(crate) fn kexec_of_one_guest(uptime_ms: Option<u64>, boot: Option<Value>) -> Journal {
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.pause_and_save("db-1", 2_000, 2_003, 2_100)
            .kexec(3_001)
            .resumed(7_501, uptime_ms, boot)
            .restore_and_resume("db-1", 7_510, 7_900, 7_950);
        j
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{Journal, kexec_of_one_guest, lab_boot_report};
    use super::*;
    use serde_json::json;

    fn program(path: &str) -> Program {
        let bytes = std::fs::read(path).unwrap();
        let (plan, graph) = crate::check::check(path, &bytes).valid().unwrap();
        crate::graph::compile(&plan, &graph, "root=/dev/sda1")
    }

    fn qemu_program() -> Program {
        program("plans/single-qemu-shared-ram.toml")
    }

    fn blackout_of(j: &Journal, program: &Program, vm: &str) -> Option<Blackout> {
        blackouts(&j.records, program, &[vm.to_owned()]).remove(vm)
    }

    /// (name, ms, clock) of each part.
    fn parts(b: &Blackout) -> Vec<(&'static str, i64, Clock)> {
        b.parts.iter().map(|p| (p.name, p.ms, p.clock)).collect()
    }

    impl Blackout {
        fn part_names(&self) -> Vec<&'static str> {
            self.parts.iter().map(|p| p.name).collect()
        }
    }

    fn sum(b: &Blackout) -> i64 {
        b.parts.iter().map(|p| p.ms).sum()
    }

    /// Fails unless one of the blackout's notes contains `part`.
    fn assert_noted(b: &Blackout, part: &str) {
        assert!(
            b.notes.iter().any(|n| n.contains(part)),
            "no {part:?} in {:?}",
            b.notes
        );
    }

    #[test]
    fn a_rehearsal_splits_stop_to_cont_on_the_old_kernels_clock() {
        let mut j = Journal::new(Mode::Rehearse, 1_000);
        j.pause_and_save("db-1", 1_000, 1_008, 1_100)
            .kexec(1_201)
            .done(1_202, "kexec", vec![])
            .restore_and_resume("db-1", 1_300, 1_700, 1_715);
        let program = qemu_program();
        let b = blackout_of(&j, &program, "db-1").expect("a blackout");
        use Clock::OldRealtime as Old;
        assert_eq!(
            parts(&b),
            [
                ("pause_save", 92, Old),
                ("until_restore", 200, Old),
                ("restore", 400, Old),
                ("resume", 15, Old),
            ]
        );
        assert_eq!(b.total_ms, Some(1_715 - 1_008));
        assert_eq!(sum(&b), 707);
        assert_eq!(b.outside_kernel_boot_ms, Some(707), "no kernel boots");
        assert!(b.notes.is_empty(), "{:?}", b.notes);
        // kup's downtime brackets the blackout: from the pause's start to the resume's end.
        let status =
            crate::exec::status::fold("/j", &j.records, &program, &["db-1".into()], false, false);
        assert_eq!(status.vm_downtime_ms["db-1"], 1_719 - 1_000);
        assert_eq!(status.blackout["db-1"], b);
    }

    #[test]
    fn a_kexec_gives_every_part_with_the_clock_it_comes_from() {
        let j = kexec_of_one_guest(Some(4_300), Some(lab_boot_report()));
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        use Clock::*;
        assert_eq!(
            parts(&b),
            [
                ("pause_save", 97, OldRealtime),
                ("until_kexec", 901, OldRealtime),
                // The kernel started 4 300 ms before resume's record: 7 501 − 4 300 − 3 001.
                ("kexec_to_kernel_start", 200, OldToNewRealtime),
                // `Run /init` at 3.920945 s.
                ("kernel_to_init", 3_921, NewMonotonic),
                ("init_to_resume", 4_300 - 3_921, NewBoottime),
                ("wait_before_restore", 9, NewRealtime),
                ("restore", 390, NewRealtime),
                ("resume", 50, NewRealtime),
            ]
        );
        assert_eq!(b.total_ms, Some(7_950 - 2_003));
        assert_eq!(sum(&b), 7_950 - 2_003);
        assert_eq!(b.outside_kernel_boot_ms, Some(7_950 - 2_003 - 3_921));
        assert!(b.parts[2].note.as_deref().unwrap().contains("±1 s"));
    }

    #[test]
    fn without_the_new_kernels_boot_report_the_unknown_split_is_named_and_the_sum_kept() {
        let j = kexec_of_one_guest(Some(4_300), None);
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        let merged = b
            .parts
            .iter()
            .find(|p| p.name == "kernel_start_to_resume")
            .unwrap();
        assert_eq!(merged.ms, 4_300, "the new kernel's uptime at resume");
        assert_eq!(merged.covers, ["kernel_to_init", "init_to_resume"]);
        assert!(
            merged.note.as_deref().unwrap().contains("no boot report"),
            "{merged:?}"
        );
        assert!(!b.parts.iter().any(|p| p.name == "kernel_to_init"));
        assert_eq!(sum(&b), 7_950 - 2_003);
        assert_eq!(b.total_ms, Some(7_950 - 2_003));
        assert_eq!(
            b.outside_kernel_boot_ms, None,
            "the kernel's boot is unknown"
        );

        // A boot report on dates (dmesg -T) cannot place /init on the kernel's clock either.
        let mut wall = lab_boot_report();
        wall["clock"] = json!("wall");
        let b = blackout_of(
            &kexec_of_one_guest(Some(4_300), Some(wall)),
            &qemu_program(),
            "db-1",
        )
        .unwrap();
        assert!(b.parts.iter().any(|p| p.name == "kernel_start_to_resume"
            && p.note.as_deref().is_some_and(|n| n.contains("clock: wall"))));

        // A resume that recorded no uptime: the kernel's start is unknown too; the wall clocks still give the sum.
        let b = blackout_of(
            &kexec_of_one_guest(None, Some(lab_boot_report())),
            &qemu_program(),
            "db-1",
        )
        .unwrap();
        let merged = b
            .parts
            .iter()
            .find(|p| p.name == "kexec_to_resume")
            .unwrap();
        assert_eq!(merged.ms, 7_501 - 3_001);
        assert_eq!(
            merged.covers,
            ["kexec_to_kernel_start", "kernel_to_init", "init_to_resume"]
        );
        assert_eq!(merged.clock, Clock::OldToNewRealtime);
        assert_eq!(sum(&b), 7_950 - 2_003);
    }

    #[test]
    fn a_libvirt_guest_starts_at_virsh_save_and_ends_when_virsh_resume_returns() {
        let mut j = Journal::new(Mode::Rehearse, 1_000);
        j.started(1_990, "vm:web-1:save")
            .done(
                2_905,
                "vm:web-1:save",
                vec![
                    json!({"exit": 0, "duration_ms": 900, "started_unix_ms": 2_000}),
                    Value::Null,
                ],
            )
            .kexec(3_001)
            .started(3_100, "vm:web-1:restore")
            .done(3_600, "vm:web-1:restore", vec![])
            .started(3_601, "vm:web-1:resume")
            .done(
                3_660,
                "vm:web-1:resume",
                vec![
                    json!({"exit": 0, "duration_ms": 40, "started_unix_ms": 3_610}),
                    json!({"output": "running", "exit": 0}),
                ],
            );
        let program = program("plans/libvirt-criu.toml");
        let all = blackouts(&j.records, &program, &["web-1".into(), "web-2".into()]);
        assert!(!all.contains_key("web-2"), "web-2 was never stopped");
        let b = &all["web-1"];
        assert_eq!(
            parts(b).iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            [
                ("pause_save", 905),
                ("until_restore", 195),
                ("restore", 500),
                ("resume", 50)
            ]
        );
        assert_eq!(b.total_ms, Some(3_650 - 2_000));
        assert!(b.notes.is_empty(), "{:?}", b.notes);
    }

    #[test]
    fn a_failed_restore_leaves_the_blackout_open_with_the_parts_so_far() {
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.pause_and_save("db-1", 2_000, 2_003, 2_100)
            .kexec(3_001)
            .resumed(7_501, Some(4_300), Some(lab_boot_report()))
            .started(7_510, "vm:db-1:restore")
            .failed(7_800, "vm:db-1:restore", "QEMU exited");
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        assert_eq!(b.total_ms, None);
        assert_eq!(b.outside_kernel_boot_ms, None);
        let last = b.parts.last().unwrap();
        assert_eq!((last.name, last.ms), ("restore", 290));
        assert!(last.note.as_deref().unwrap().contains("QEMU exited"));
        assert_eq!(sum(&b), 7_800 - 2_003, "the parts reach the failure");
        assert_noted(&b, "vm:db-1:restore failed");
        // Retried and done: the restore part spans both attempts, and the blackout closes.
        j.restore_and_resume("db-1", 9_000, 9_400, 9_420);
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        assert_eq!(b.total_ms, Some(9_420 - 2_003));
        let restore = b.parts.iter().find(|p| p.name == "restore").unwrap();
        assert_eq!(restore.ms, 9_400 - 7_510);
        assert_noted(&b, "ran 2 times");
    }

    #[test]
    fn a_rolled_back_guest_ran_again_at_its_pauses_undo() {
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.started(2_000, "vm:db-1:pause")
            .done(
                2_004,
                "vm:db-1:pause",
                vec![json!({ "acked_unix_ms": 2_003 })],
            )
            .started(2_005, "vm:db-1:save")
            .failed(2_300, "vm:db-1:save", "disk full")
            .at(
                2_301,
                Event::RollbackStarted {
                    reason: "disk full".into(),
                },
            )
            .at(
                2_340,
                Event::StepRolledBack {
                    step: "vm:db-1:pause".parse().unwrap(),
                },
            );
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        assert_eq!(parts(&b), [("until_rollback", 337, Clock::OldRealtime)]);
        assert_eq!(b.total_ms, Some(337));
    }

    #[test]
    fn a_journal_without_the_instants_uses_the_steps_ends_and_says_so() {
        let mut j = Journal::new(Mode::Rehearse, 1_000);
        j.started(1_000, "vm:db-1:pause")
            .done(
                1_010,
                "vm:db-1:pause",
                vec![Value::Null, json!({}), json!({})],
            )
            .started(1_011, "vm:db-1:save")
            .done(1_100, "vm:db-1:save", vec![])
            .started(1_300, "vm:db-1:restore")
            .done(1_700, "vm:db-1:restore", vec![])
            .started(1_701, "vm:db-1:resume")
            .done(
                1_720,
                "vm:db-1:resume",
                vec![Value::Null, json!({}), json!({})],
            );
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        assert_eq!(b.total_ms, Some(1_720 - 1_010));
        assert_eq!(b.notes.len(), 2, "{:?}", b.notes);
        assert!(b.notes.iter().all(|n| n.contains("older kup")));
    }

    #[test]
    fn a_host_that_rebooted_before_the_kexec_record_times_the_hand_over_from_the_save() {
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.pause_and_save("db-1", 2_000, 2_003, 2_100)
            .resumed(7_501, Some(4_300), Some(lab_boot_report()))
            .restore_and_resume("db-1", 7_510, 7_900, 7_950);
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        let first_new = &b.parts[1];
        assert_eq!(
            (first_new.name, first_new.ms, first_new.clock),
            ("until_kernel_start", 3_201 - 2_100, Clock::OldToNewRealtime)
        );
        assert_eq!(
            b.part_names(),
            [
                "pause_save",
                "until_kernel_start",
                "kernel_to_init",
                "init_to_resume",
                "wait_before_restore",
                "restore",
                "resume"
            ]
        );
        assert_eq!(b.total_ms, Some(7_950 - 2_003));
        assert_noted(&b, "before the kexec record");
    }

    #[test]
    fn a_libvirt_save_still_running_starts_the_blackout_at_its_start_record() {
        let mut j = Journal::new(Mode::Apply, 1_000);
        j.started(1_990, "vm:web-1:save");
        let b = blackout_of(&j, &program("plans/libvirt-criu.toml"), "web-1").unwrap();
        assert_eq!(b.total_ms, None);
        assert!(b.parts.is_empty());
        assert!(
            b.notes[0].contains("its start record is used"),
            "{:?}",
            b.notes
        );
        assert!(
            b.notes[1].contains("vm:web-1:save has not completed"),
            "{:?}",
            b.notes
        );
    }

    #[test]
    fn a_resume_marked_done_by_an_operator_says_so() {
        let mut j = Journal::new(Mode::Rehearse, 1_000);
        j.pause_and_save("db-1", 1_000, 1_008, 1_100)
            .started(1_300, "vm:db-1:restore")
            .done(1_700, "vm:db-1:restore", vec![])
            .started(1_701, "vm:db-1:resume")
            .done(
                9_000,
                "vm:db-1:resume",
                vec![json!({ "marked_done_by_operator": true })],
            );
        let b = blackout_of(&j, &qemu_program(), "db-1").unwrap();
        assert_eq!(b.total_ms, Some(9_000 - 1_008));
        assert_noted(&b, "--mark-done");
    }

    #[test]
    fn a_guest_never_stopped_has_no_blackout() {
        let j = Journal::new(Mode::Apply, 1_000);
        assert!(blackouts(&j.records, &qemu_program(), &["db-1".into()]).is_empty());
    }
}
