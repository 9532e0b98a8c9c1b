//! `kup boot-time` against 32 real boot logs (tests/data/dmesg, sources in MANIFEST.tsv): every file parses,
//! its report is pinned by a snapshot, the manifest's independently recorded kernel release and CPU count
//! match, and a set of figures hand-checked against the raw lines (grep'd, line numbers in the comments) hold.

use std::path::{Path, PathBuf};

use kup::boot::report::{Clock, PhaseName, RecommendationCode};
use kup::boot::{BootReport, analyse, phase};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dmesg")
}

fn logs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

fn report(prefix: &str) -> BootReport {
    let path = logs()
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no corpus file starting with {prefix}"));
    analyse(&std::fs::read(path).expect("corpus file"))
}

fn assert_close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: expected {expected}, got null"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: expected {expected}, got {actual}"
    );
}

/// The two headline figures: the SMP bring-up and the time to init, in seconds.
fn assert_timing(r: &BootReport, smp_bringup: f64, time_to_init: f64) {
    assert_close(r.smp_bringup_s, smp_bringup, "SMP bring-up");
    assert_close(r.time_to_init_s, time_to_init, "time to init");
}

#[test]
fn every_corpus_file_matches_its_snapshot() {
    let files = logs();
    assert_eq!(files.len(), 32, "the corpus has 32 logs");
    for path in files {
        let name = path
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let report = analyse(&std::fs::read(&path).expect("corpus file"));
        assert_eq!(report.phases.len(), PhaseName::ALL.len(), "{name}");
        insta::assert_json_snapshot!(format!("corpus-{name}"), report);
    }
}

/// MANIFEST.tsv was written from each source repository, not from kup's output: its kernel_version and cpus
/// columns are an independent check of the release and CPU count on every file.
#[test]
fn release_and_cpu_count_agree_with_the_manifest() {
    let manifest =
        std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let mut rows = 0;
    for row in manifest.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, kernel, cpus) = (cols[0], cols[4], cols[6]);
        let r =
            analyse(&std::fs::read(corpus_dir().join(file)).expect("file named in the manifest"));
        assert_eq!(r.kernel.as_deref(), Some(kernel), "{file}: kernel release");
        assert_eq!(
            r.cpus.map(|c| c.to_string()).as_deref(),
            Some(cpus),
            "{file}: CPU count"
        );
        rows += 1;
    }
    assert_eq!(rows, logs().len(), "every log has a manifest row");
}

/// 01 (Rocky 9, 2 × EPYC 9654): line 1 `[0.000000] Linux version 5.14.0-570.23.1.el9_6.x86_64`, line 863
/// `[0.325707] smp: Bringing up secondary CPUs`, line 870 `[0.882097] smp: Brought up 2 nodes, 384 CPUs`,
/// lines 872–873 `[1.094157] node 1 … in 172ms`, `[1.100055] node 0 … in 178ms`, line 2504
/// `[4.061957] Freeing unused kernel image (initmem)`, line 2508 `[4.122063] Run /init as init process`,
/// line 783 `Memory: 2007276K/1610305216K available`. CRLF line endings.
#[test]
fn supermicro_384_cpus_hand_checked() {
    let r = report("01-");
    assert_eq!(r.kernel.as_deref(), Some("5.14.0-570.23.1.el9_6.x86_64"));
    assert_eq!((r.cpus, r.nodes), (Some(384), Some(2)));
    assert_eq!(r.memory_kib, Some(1_610_305_216));
    assert_timing(&r, 0.882097 - 0.325707, 4.122063);
    let deferred = phase(&r, PhaseName::DeferredPages).expect("phase");
    assert_close(
        deferred.start_s,
        1.100055 - 0.178,
        "deferred start (node 0 started last-finishing)",
    );
    assert_close(deferred.end_s, 1.100055, "deferred end");
    let initcalls = phase(&r, PhaseName::Initcalls).expect("phase");
    assert_close(initcalls.end_s, 4.061957, "initcalls end");
    let cmdline = r.cmdline.as_deref().unwrap_or_default();
    assert!(cmdline.ends_with("rhgb quiet"), "no CR left in {cmdline:?}");
    // 383 secondary CPUs in 556 ms on a kernel with the 6.5-era smpboot code (line 864).
    let codes: Vec<_> = r.recommendations.iter().map(|x| x.code).collect();
    assert!(
        codes.contains(&RecommendationCode::ParallelBringupOff),
        "{codes:?}"
    );
    assert!(
        !codes.contains(&RecommendationCode::DeferredPagesOff),
        "deferred init ran: {codes:?}"
    );
}

/// 10 (journalctl -o short-monotonic): line 172 `[1.656887] lit.home.arpa kernel: smp: Bringing up…`,
/// line 175 `[1.657301] … smp: Brought up 1 node, 2 CPUs`, line 461 `[2.067685] … Run /init as init process`;
/// systemd lines from 2.87 s must not count.
#[test]
fn journal_monotonic_hand_checked() {
    let r = report("10-");
    assert_eq!(r.kernel.as_deref(), Some("6.1.1-arch1-4-hpe8k"));
    assert_timing(&r, 1.657301 - 1.656887, 2.067685);
    assert_eq!(
        serde_json::to_value(r.format).ok(),
        Some("journal-monotonic".into())
    );
}

/// 20 (`<N>[…]` priority prefixes): line 192 `<6>[0.102347] smp: Bringing up`, line 195 `<6>[0.102723] smp:
/// Brought up 1 node, 4 CPUs`, line 716 `<6>[0.890588] Run /sbin/init as init process`.
#[test]
fn raw_priority_hand_checked() {
    let r = report("20-");
    assert_eq!((r.cpus, r.nodes), (Some(4), Some(1)));
    assert_timing(&r, 0.102723 - 0.102347, 0.890588);
}

/// 28 (3.11, out-of-order stamps): line 408 `[0.062414] smpboot: Booting Node 0, Processors #1 #2 #3 OK`
/// comes after a line stamped 0.075796; line 409 `[0.102609] Brought up 4 CPUs`; no `Run … as init` line
/// on 3.11, so init is the last `Freeing unused kernel memory` line 747 `[0.533814]`.
#[test]
fn old_wording_and_out_of_order_stamps_hand_checked() {
    let r = report("28-");
    assert_eq!((r.cpus, r.nodes), (Some(4), None));
    assert_timing(&r, 0.102609 - 0.062414, 0.533814);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("earlier than a line before them")),
        "{:?}",
        r.notes
    );
    assert!(
        r.phases
            .iter()
            .all(|p| p.duration_s.is_none_or(|d| d >= 0.0))
    );
}

/// 16 (serial capture): 13 lines of U-Boot / EFI stub text, then line 14 `[0.000000] Linux version
/// 5.8.0-0.bpo.2-arm64`; line 117 `[0.002476] smp: Bringing up`, line 124 `[0.003719] smp: Brought up 1 node,
/// 4 CPUs`, line 239 `[2.323024] Run /init as init process`.
#[test]
fn serial_capture_hand_checked() {
    let r = report("16-");
    assert_eq!(r.kernel.as_deref(), Some("5.8.0-0.bpo.2-arm64"));
    assert_eq!(serde_json::to_value(r.arch).ok(), Some("arm64".into()));
    assert_timing(&r, 0.003719 - 0.002476, 2.323024);
}

/// 06 (journalctl default, wall clock only): every kernel line from `Linux version` to `Run /init as init
/// process` (lines 2 and 569) is stamped `Oct 31 20:09:02`, so the time to init is 0 s at 1 s resolution.
#[test]
fn wall_clock_journal_hand_checked() {
    let r = report("06-");
    assert_eq!(r.clock, Clock::Wall);
    assert_eq!(r.kernel.as_deref(), Some("5.3.8-2-surface-ipts-test"));
    assert_eq!(r.time_to_init_s, Some(0.0));
    // Duration-based advice needs the precise clock.
    assert!(
        r.recommendations
            .iter()
            .all(|x| x.code != RecommendationCode::EnableInitcallDebug)
    );
}

/// 40 (RHEL 6 without CONFIG_PRINTK_TIME): line 3 `Linux version 2.6.32-279.el6.x86_64`, line 240
/// `Brought up 8 CPUs`, line 186 `Memory: 16306048k/17825792k available`; no stamp anywhere.
#[test]
fn no_timestamps_hand_checked() {
    let r = report("40-");
    assert_eq!(r.clock, Clock::None);
    assert_eq!(r.kernel.as_deref(), Some("2.6.32-279.el6.x86_64"));
    assert_eq!(r.cpus, Some(8));
    assert_eq!(r.memory_kib, Some(17_825_792));
    assert_eq!(r.time_to_init_s, None);
    let smp = phase(&r, PhaseName::SmpBringup).expect("phase");
    assert!(smp.present && smp.start_s.is_none() && smp.end_s.is_none());
}

/// 11 (GCE, `console=ttyS0` and no `quiet`) and 33 (64 GiB, no deferred-pages line): the recommendations
/// quote the exact lines they rest on.
#[test]
fn recommendations_quote_their_evidence() {
    let r = report("11-");
    let serial = r
        .recommendations
        .iter()
        .find(|x| x.code == RecommendationCode::SerialConsoleNotQuiet);
    assert_eq!(
        serial.map(|x| x.evidence.as_str()),
        Some(
            "[    0.167702] Kernel command line: BOOT_IMAGE=/boot/vmlinuz-5.4.0-1092-gcp root=LABEL=cloudimg-rootfs ro \
             console=ttyS0"
        )
    );
    let r = report("33-");
    let deferred = r
        .recommendations
        .iter()
        .find(|x| x.code == RecommendationCode::DeferredPagesOff);
    assert!(
        deferred.is_some_and(|x| x
            .evidence
            .starts_with("[    0.160715] kernel: Memory: 65536948K/67017052K available")),
        "{:?}",
        r.recommendations
    );
}
