//! `--metrics-textfile` and `policy.metrics` on real rehearsals of plans made of custom steps (never a kexec): the
//! file is written when apply and resume end, atomically, and a real exposition-format parser — the Python
//! `prometheus_client` package, installed into a venv under target/ by the first test that needs it — reads it.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::plans::Scratch;
use support::{Kup, Run};

/// The venv's python with `prometheus_client`, created once per target directory.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prometheus-client-venv");
        let python = venv.join("bin/python");
        let ready = venv.join(".installed");
        if !ready.exists() {
            let run = |program: &Path, args: &[&str]| {
                let out = Command::new(program).args(args).output().unwrap();
                assert!(
                    out.status.success(),
                    "{} {args:?}: {}",
                    program.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(
                Path::new("python3"),
                &["-m", "venv", venv.to_str().unwrap()],
            );
            run(
                &python,
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "prometheus-client==0.26.0",
                ],
            );
            std::fs::write(&ready, "").unwrap();
        }
        python
    })
}

/// The file parsed by `prometheus_client`: `{family: {"type", "help", "samples": [[name, labels, value]]}}`.
fn parse(path: &Path) -> Value {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let out = Command::new(python())
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse {}: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `family`'s sample whose labels include `labels`.
fn value(metrics: &Value, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s[1][k] == *v))
        .and_then(|s| s[2].as_f64())
}

/// A minimal well-formed bzImage header of `release` (what the preflight reads to check `kernel.version` and the
/// metrics read for `target_release`): 4 setup sectors, boot protocol 2.15, 16 bytes of "kernel".
fn bzimage(release: &str) -> Vec<u8> {
    let version = format!("{release} (test@example) #1 SMP");
    // (offset, bytes) of the setup header fields the parser reads: setup sectors, syssize, the boot flag, the
    // "HdrS" magic, the protocol version, the version string's offset, the cmdline size; then the string.
    let fields: [(usize, &[u8]); 8] = [
        (0x1F1, &[4]),
        (0x1F4, &1u32.to_le_bytes()),
        (0x1FE, &0xAA55u16.to_le_bytes()),
        (0x202, b"HdrS"),
        (0x206, &0x020Fu16.to_le_bytes()),
        (0x20E, &(0x400u16 - 0x200).to_le_bytes()),
        (0x238, &2047u32.to_le_bytes()),
        (0x400, version.as_bytes()),
    ];
    let mut bytes = vec![0u8; 5 * 512 + 16];
    for (at, field) in fields {
        bytes[at..at + field.len()].copy_from_slice(field);
    }
    bytes
}

/// The test's directory, with a kernel image whose release kup can read.
fn lab() -> Scratch {
    Scratch::with_kernel(&bzimage("6.12.9-lts"))
}

/// A plan of a step before the kexec and one after it, which succeeds only once the file `ready` exists.
fn write_plan(lab: &Scratch, policy: &str) -> PathBuf {
    let text = format!(
        "kup = 1\nname = \"metrics\"\n\n[kernel]\nimage = \"{vmlinuz}\"\n\n\
         [[step]]\nname = \"early\"\nrun = [\"/bin/true\"]\nbefore = [\"kexec\"]\n\n\
         [[step]]\nname = \"late\"\nrun = [\"/bin/sh\", \"-c\", \"test -e {ready}\"]\nidempotent = true\n\
         after = [\"kexec\"]\n\n[policy]\njournal = \"{journal}\"\n{policy}\n",
        vmlinuz = lab.path("vmlinuz").display(),
        ready = lab.path("ready").display(),
        journal = lab.path("journal").display(),
    );
    lab.write_plan(&text)
}

/// `kup plan resume` of the lab's journal, as kup-resume.service runs it: with no flag.
fn resume(lab: &Scratch) -> Run {
    Kup::new()
        .args(["plan", "resume", "--journal"])
        .arg(lab.path("journal"))
        .run()
}

fn rehearse(plan: &Path) -> Kup {
    Kup::new()
        .args(["plan", "apply", "--rehearse", "--no-kernel-load", "--yes"])
        .arg(plan)
}

#[test]
fn a_rehearsal_writes_metrics_that_a_real_parser_reads() {
    let lab = lab();
    std::fs::write(lab.path("ready"), "").unwrap();
    let prom = lab.path("textfile/kup.prom");
    std::fs::create_dir(lab.path("textfile")).unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    rehearse(&write_plan(&lab, ""))
        .arg("--metrics-textfile")
        .arg(&prom)
        .run()
        .status(0);
    let metrics = parse(&prom);
    for (family, _) in metrics.as_object().unwrap() {
        assert_eq!(metrics[family]["type"], "gauge", "{family}");
        assert!(
            !metrics[family]["help"].as_str().unwrap().is_empty(),
            "{family}"
        );
    }
    let info = [
        ("plan", "metrics"),
        ("mode", "rehearse"),
        ("target_release", "6.12.9-lts"),
    ];
    assert_eq!(value(&metrics, "kup_apply_info", &info), Some(1.0));
    let state = |s| value(&metrics, "kup_apply_state", &[("state", s)]);
    assert_eq!(state("completed"), Some(1.0));
    assert_eq!(state("failed"), Some(0.0));
    assert_eq!(state("rolled-back"), Some(0.0));
    let started = value(&metrics, "kup_apply_start_timestamp_seconds", &[]).unwrap();
    let ended = value(&metrics, "kup_apply_end_timestamp_seconds", &[]).unwrap();
    assert!(
        before - 1.0 <= started && started <= ended,
        "{started} {ended}"
    );
    for step in ["step:early", "step:late", "preflight"] {
        let seconds = value(
            &metrics,
            "kup_step_duration_seconds",
            &[("step", step), ("state", "done")],
        );
        assert!(
            seconds.is_some_and(|s| (0.0..60.0).contains(&s)),
            "{step}: {seconds:?}"
        );
    }
    // A rehearsal has no kexec gap and no new kernel.
    assert!(metrics.get("kup_kexec_gap_seconds").is_none(), "{metrics}");
    // Written atomically: no temporary file is left beside it, and node_exporter (another user) may read it.
    let names: Vec<_> = std::fs::read_dir(lab.path("textfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kup.prom"]);
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode();
    assert_eq!(mode & 0o044, 0o044, "{mode:o}");
}

#[test]
fn policy_metrics_is_written_on_failure_and_the_resume_rewrites_it() {
    let lab = lab();
    let prom = lab.path("kup.prom");
    let plan = write_plan(&lab, &format!("metrics = \"{}\"", prom.display()));
    // `late` fails after the (rehearsed) kexec: the update needs an operator.
    rehearse(&plan).run().status(6);
    let metrics = parse(&prom);
    let state = |m: &Value, s| value(m, "kup_apply_state", &[("state", s)]);
    assert_eq!(state(&metrics, "completed"), Some(0.0));
    assert_eq!(state(&metrics, "failed"), Some(1.0), "{metrics}");
    assert_eq!(state(&metrics, "pending-resume"), Some(0.0));
    assert_eq!(
        value(
            &metrics,
            "kup_step_duration_seconds",
            &[("step", "step:late"), ("state", "failed")]
        )
        .map(|s| s >= 0.0),
        Some(true),
        "{metrics}"
    );

    std::fs::write(lab.path("ready"), "").unwrap();
    resume(&lab).status(0);
    let metrics = parse(&prom);
    assert_eq!(state(&metrics, "completed"), Some(1.0), "{metrics}");
    assert_eq!(state(&metrics, "failed"), Some(0.0));
}

#[test]
fn the_applys_flag_is_where_its_resume_writes() {
    let lab = lab();
    let prom = lab.path("flag.prom");
    let plan = write_plan(&lab, "");
    rehearse(&plan)
        .arg("--metrics-textfile")
        .arg(&prom)
        .run()
        .status(6);
    std::fs::remove_file(&prom).unwrap();
    std::fs::write(lab.path("ready"), "").unwrap();
    // No flag: the resume after a kexec is started by kup-resume.service with none.
    resume(&lab).status(0);
    let metrics = parse(&prom);
    assert_eq!(
        value(&metrics, "kup_apply_state", &[("state", "completed")]),
        Some(1.0)
    );
}

#[test]
fn a_relative_metrics_path_is_refused_before_anything_runs() {
    let lab = lab();
    std::fs::write(lab.path("ready"), "").unwrap();
    rehearse(&write_plan(&lab, ""))
        .args(["--metrics-textfile", "kup.prom"])
        .run()
        .status(2)
        .stderr_has("absolute path");
    assert!(!lab.path("journal").exists());
}

#[test]
fn an_unwritable_metrics_file_is_a_warning_not_the_outcome() {
    let lab = lab();
    std::fs::write(lab.path("ready"), "").unwrap();
    rehearse(&write_plan(&lab, ""))
        .arg("--metrics-textfile")
        .arg(lab.path("no/such/dir/kup.prom"))
        .run()
        .status(0)
        .stderr_has("kup: warning: no metrics written to");
}

#[test]
fn policy_metrics_must_be_an_absolute_path() {
    Kup::new()
        .args(["plan", "validate"])
        .plan("kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\nsha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n[policy]\nmetrics = \"kup.prom\"\n")
        .run()
        .status(1)
        .stderr_has("kup::plan::relative-path")
        .stderr_has("`policy.metrics` must be an absolute path");
}
