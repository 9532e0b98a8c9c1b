//! Whatever bytes `kup boot-time` is handed — binary junk, truncated lines, real lines in shuffled order with
//! mixed prefixes — the analysis must not panic, must keep its shape, and must never report a negative time.

use kup::boot::report::BootReport;
use kup::boot::{analyse, human};
use proptest::prelude::*;

fn check_invariants(r: &BootReport) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.phases.len(), 5);
    for p in &r.phases {
        prop_assert!(
            p.duration_s.is_none_or(|d| d >= 0.0),
            "negative duration in {:?}",
            p
        );
        prop_assert!(
            p.present || (p.start_s.is_none() && p.end_s.is_none()),
            "absent phase with times: {:?}",
            p
        );
    }
    prop_assert!(r.time_to_init_s.is_none_or(|t| t >= 0.0));
    prop_assert!(r.smp_bringup_s.is_none_or(|t| t >= 0.0));
    prop_assert!(r.slowest_initcalls.len() <= 10);
    let json = serde_json::to_string(r).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok_and(|v| v.is_object()));
    human(r, true);
    human(r, false);
    Ok(())
}

/// Messages kup looks for, and some it must ignore.
const MESSAGES: &[&str] = &[
    "Linux version 6.8.0-31-generic (buildd@x) (gcc 13.2.0) #31-Ubuntu SMP",
    "Linux version ",
    "Command line: root=/dev/sda1 console=ttyS0 cpuhp.parallel=0",
    "Kernel command line: quiet initcall_debug",
    "x86/fpu: Supporting XSAVE feature 0x001",
    "Memory: 65000000K/67108864K available (x)",
    "Memory: 99999999999999999999K/1K available",
    "smp: Bringing up secondary CPUs ...",
    "smpboot: x86: Booting SMP configuration:",
    "smp: Brought up 2 nodes, 64 CPUs",
    "smp: Brought up 4294967296 nodes, 99999999999 CPUs",
    "x86: Booted up 1 node, 4 CPUs",
    "Brought up 4 CPUs",
    "node 0 deferred pages initialised in 18446744073709551615ms",
    "node 1 deferred pages initialised in 150ms",
    "node 2 deferred pages initialised in 99999999999999999ms",
    "initcall pci_init+0x0/0x40 returned 0 after 18446744073709551615 msecs",
    "initcall +0x0 returned 0 after 1 usecs",
    "Freeing unused kernel image (initmem) memory: 4048K",
    "Run /init as init process",
    "usb 1-1: new high-speed USB device",
    "",
];

fn stamped_line() -> impl Strategy<Value = String> {
    let message = prop_oneof![
        4 => prop::sample::select(MESSAGES).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    let secs = prop_oneof![0.0f64..10.0, Just(0.0), Just(1e12), Just(-1.0)];
    (0usize..12, secs, message).prop_map(|(kind, t, m)| match kind {
        0 => format!("[{t:>12.6}] {m}"),
        1 => format!("<6>[{t:>12.6}] {m}"),
        2 => format!("6,{},{},-;{m}", kind, (t * 1e6) as i64),
        3 => format!("kern  :info  : [{t:>12.6}] {m}"),
        4 => format!("[Mon Nov  3 10:00:{:02} 2025] {m}", (t.abs() as u64) % 60),
        5 => format!("Nov  3 10:00:{:02} host kernel: {m}", (t.abs() as u64) % 60),
        6 => format!(
            "Dec 31 23:59:{:02} host kernel: [{t:>12.6}] {m}",
            (t.abs() as u64) % 60
        ),
        7 => format!("[{t:>12.6}] host kernel: {m}"),
        8 => format!("[{t:>12.6}] host systemd[1]: {m}"),
        9 => format!(
            "2025-11-03T10:00:00,{:06}+01:00 {m}",
            (t.abs() as u64) % 1_000_000
        ),
        10 => format!("{m}\r"),
        _ => m,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_invariants(&analyse(&bytes))?;
    }

    #[test]
    fn random_line_mixtures_never_panic(lines in prop::collection::vec(stamped_line(), 0..80)) {
        check_invariants(&analyse(lines.join("\n").as_bytes()))?;
    }

    /// Real lines cut at any byte, including inside a multi-byte character.
    #[test]
    fn truncated_lines_never_panic(lines in prop::collection::vec(stamped_line(), 1..20), cut in 0usize..4096) {
        let text = lines.join("\n");
        let bytes = text.as_bytes();
        check_invariants(&analyse(&bytes[..cut.min(bytes.len())]))?;
    }
}
