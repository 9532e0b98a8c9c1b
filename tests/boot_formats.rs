//! One boot written in every log format kup reads must give the same report: the format changes how a line
//! looks, never what the boot did. Also: several boots in one log, and a log without timestamps.

use kup::boot::report::{Clock, PhaseName};
use kup::boot::{BootReport, analyse, phase};
use serde_json::Value;

/// A small x86 boot: (seconds since kernel start, message).
const BOOT: &[(f64, &str)] = &[
    (
        0.0,
        "Linux version 6.8.0-31-generic (buildd@lcy02-amd64-080) (gcc 13.2.0) #31-Ubuntu SMP",
    ),
    (
        0.0,
        "Command line: BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro console=ttyS0,115200",
    ),
    (
        0.0,
        "x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'",
    ),
    (
        0.012345,
        "Memory: 65000000K/67108864K available (20480K kernel code)",
    ),
    (0.3, "smp: Bringing up secondary CPUs ..."),
    (0.301, "smpboot: x86: Booting SMP configuration:"),
    (0.7, "smp: Brought up 2 nodes, 64 CPUs"),
    (
        0.7,
        "smpboot: Total of 64 processors activated (294912.00 BogoMIPS)",
    ),
    (0.9, "node 1 deferred pages initialised in 150ms"),
    (0.95, "node 0 deferred pages initialised in 190ms"),
    (1.5, "initcall pci_init+0x0/0x40 returned 0 after 12 usecs"),
    (
        1.6,
        "initcall ahci_init+0x0/0x1000 returned 0 after 40500 usecs",
    ),
    (2.4, "Freeing unused kernel image (initmem) memory: 4048K"),
    (2.5, "Run /init as init process"),
    (3.0, "EXT4-fs (sda1): mounted filesystem"),
];

fn render(line: impl Fn(usize, f64, &str) -> String) -> String {
    BOOT.iter()
        .enumerate()
        .map(|(i, (t, m))| line(i, *t, m) + "\n")
        .collect()
}

/// The report minus what legitimately differs between formats: the format name and the quoted lines.
fn figures(r: &BootReport) -> Value {
    let mut v = serde_json::to_value(r).expect("report serialises");
    if let Some(o) = v.as_object_mut() {
        o.remove("format");
        for key in ["phases", "recommendations", "slowest_initcalls"] {
            for item in o
                .get_mut(key)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(item) = item.as_object_mut() {
                    item.retain(|k, _| !k.contains("evidence"));
                }
            }
        }
    }
    v
}

/// One of the report's notes contains `needle`.
#[track_caller]
fn assert_note(r: &BootReport, needle: &str) {
    assert!(r.notes.iter().any(|n| n.contains(needle)), "{:?}", r.notes);
}

#[test]
fn every_monotonic_format_gives_the_same_figures() {
    let formats: Vec<(&str, String)> = vec![
        ("dmesg", render(|_, t, m| format!("[{t:>12.6}] {m}"))),
        ("dmesg CRLF", render(|_, t, m| format!("[{t:>12.6}] {m}\r"))),
        (
            "printk caller id",
            render(|i, t, m| format!("[{t:>12.6}][    T{i}] {m}")),
        ),
        (
            "kmsg",
            render(|i, t, m| format!("6,{i},{},-;{m}", (t * 1e6).round() as u64)),
        ),
        ("dmesg -r", render(|_, t, m| format!("<6>[{t:>12.6}] {m}"))),
        (
            "dmesg -x",
            render(|_, t, m| format!("kern  :info  : [{t:>12.6}] {m}")),
        ),
        (
            "journalctl -o short-monotonic",
            render(|_, t, m| format!("[{t:>12.6}] hv-7 kernel: {m}")),
        ),
        (
            "ubuntu /var/log/dmesg",
            render(|_, t, m| format!("[{t:>12.6}] kernel: {m}")),
        ),
        (
            "kern.log",
            render(|_, t, m| format!("Nov  3 10:00:{:02} hv-7 kernel: [{t:>12.6}] {m}", t as u32)),
        ),
    ];
    let reference = analyse(formats[0].1.as_bytes());
    assert_eq!(reference.time_to_init_s, Some(2.5));
    assert_eq!(reference.smp_bringup_s, Some(0.4));
    assert_eq!((reference.cpus, reference.nodes), (Some(64), Some(2)));
    assert_eq!(reference.memory_kib, Some(67_108_864));
    let names: Vec<&str> = reference
        .slowest_initcalls
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["ahci_init", "pci_init"]);
    let codes: Vec<&str> = reference
        .recommendations
        .iter()
        .map(|r| r.code.as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "parallel-bringup-off",
            "serial-console-not-quiet",
            "enable-initcall-debug"
        ]
    );
    for (name, text) in &formats {
        let r = analyse(text.as_bytes());
        assert_eq!(figures(&r), figures(&reference), "format {name}");
    }
}

#[test]
fn wall_clock_formats_count_whole_seconds_from_the_kernel_start() {
    let formats: Vec<(&str, String)> = vec![
        (
            "dmesg -T",
            render(|_, t, m| format!("[Mon Nov  3 10:00:{:02} 2025] {m}", 10 + t as u32)),
        ),
        (
            "journalctl -k",
            render(|_, t, m| format!("Nov  3 10:00:{:02} hv-7 kernel: {m}", 10 + t as u32)),
        ),
        (
            "dmesg --time-format iso",
            render(|_, t, m| format!("2025-11-03T10:00:{:02},000000+00:00 {m}", 10 + t as u32)),
        ),
    ];
    for (name, text) in &formats {
        let r = analyse(text.as_bytes());
        assert_eq!(r.clock, Clock::Wall, "{name}");
        assert_eq!(r.kernel.as_deref(), Some("6.8.0-31-generic"), "{name}");
        // Init at 2.5 s is stamped 10:00:12, the kernel start 10:00:10.
        assert_eq!(r.time_to_init_s, Some(2.0), "{name}");
        assert_eq!(r.cpus, Some(64), "{name}");
        // One-second stamps cannot support duration-based advice.
        assert!(
            r.recommendations
                .iter()
                .all(|x| x.code.as_str() == "serial-console-not-quiet"),
            "{name}"
        );
    }
}

#[test]
fn a_log_without_timestamps_reports_what_is_known() {
    let r = analyse(render(|_, _, m| m.to_string()).as_bytes());
    assert_eq!(r.clock, Clock::None);
    assert_eq!(r.kernel.as_deref(), Some("6.8.0-31-generic"));
    assert_eq!((r.cpus, r.nodes), (Some(64), Some(2)));
    assert_eq!(r.time_to_init_s, None);
    assert!(
        r.phases
            .iter()
            .all(|p| p.present && p.start_s.is_none() && p.duration_s.is_none())
    );
}

/// A serial capture across a kexec: the old kernel's boot, its shutdown, then the new kernel's boot.
#[test]
fn the_new_kernel_is_analysed_after_a_kexec() {
    let old = render(|_, t, m| format!("[{t:>12.6}] {}", m.replace("6.8.0-31", "6.1.0-27")));
    let shutdown =
        "[ 9000.000000] kexec_core: Starting new kernel\nU-Boot noise that is not a kernel line\n";
    let new = render(|_, t, m| format!("[{:>12.6}] {m}", t * 2.0));
    let r = analyse(format!("{old}{shutdown}{new}").as_bytes());
    assert_eq!(r.kernel.as_deref(), Some("6.8.0-31-generic"));
    assert_eq!((r.boots_in_log, r.boot_analysed), (2, Some(2)));
    assert_eq!(r.time_to_init_s, Some(5.0));
    assert_note(&r, "2 boots");
}

/// A new kernel that hung before init: the last boot that reached init is analysed, and the notes say that
/// the last boot did not get there.
#[test]
fn a_boot_that_never_reached_init_is_reported_in_the_notes() {
    let complete = render(|_, t, m| format!("[{t:>12.6}] {m}"));
    let hung = "[    0.000000] Linux version 6.12.0-hung (x)\n[    0.300000] smp: Bringing up secondary CPUs ...\n";
    let r = analyse(format!("{complete}{hung}").as_bytes());
    assert_eq!(r.kernel.as_deref(), Some("6.8.0-31-generic"));
    assert_eq!((r.boots_in_log, r.boot_analysed), (2, Some(1)));
    assert_note(&r, "did not reach init");
    assert!(phase(&r, PhaseName::Init).is_some_and(|p| p.present));
}
