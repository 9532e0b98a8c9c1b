//! `kup boot-time` as an operator runs it: from a file, from standard input, live, and with a file that is
//! not there.

mod support;

use serde_json::Value;
use support::Kup;

const SUPERMICRO: &str = "tests/data/dmesg/01-supermicro-2node-384cpu-rocky9.txt";

/// The documented shape (docs/boot-time.md): these keys with these JSON types, null allowed where unknown.
fn assert_report_shape(v: &Value) {
    let nullable = |key: &str, check: fn(&Value) -> bool| {
        let field = &v[key];
        assert!(field.is_null() || check(field), "{key}: {field}");
    };
    nullable("kernel", Value::is_string);
    nullable("cpus", Value::is_u64);
    nullable("nodes", Value::is_u64);
    nullable("cmdline", Value::is_string);
    nullable("time_to_init_s", Value::is_f64);
    nullable("smp_bringup_s", Value::is_f64);
    nullable("memory_kib", Value::is_u64);
    assert!(v["format"].is_string() && v["clock"].is_string());
    let phases = v["phases"].as_array().expect("phases array");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "early_setup",
            "smp_bringup",
            "deferred_pages",
            "initcalls",
            "init"
        ]
    );
    for p in phases {
        assert!(p["present"].is_boolean());
        for key in ["start_s", "end_s", "duration_s"] {
            assert!(p[key].is_null() || p[key].is_f64(), "{key}: {}", p[key]);
        }
    }
    for r in v["recommendations"]
        .as_array()
        .expect("recommendations array")
    {
        for key in ["code", "message", "evidence"] {
            assert!(r[key].is_string(), "recommendation {key}: {r}");
        }
    }
    assert!(v["slowest_initcalls"].is_array() && v["notes"].is_array());
    assert_eq!(v["report_version"], 1);
}

#[test]
fn human_report_from_a_file() {
    Kup::new()
        .args(["boot-time", "--dmesg", SUPERMICRO])
        .run()
        .success()
        .stdout_has("kernel 5.14.0-570.23.1.el9_6.x86_64 (x86)")
        .stdout_has("time to init 4.122 s")
        .stdout_has("SMP bring-up 556.4 ms")
        .stdout_has("[parallel-bringup-off]")
        .stdout_lacks("\u{1b}[")
        .stderr_is("");
}

#[test]
fn json_from_standard_input() {
    let log =
        std::fs::read(format!("{}/{SUPERMICRO}", env!("CARGO_MANIFEST_DIR"))).expect("corpus file");
    let v = Kup::new()
        .args(["boot-time", "--dmesg", "-", "--format", "json"])
        .stdin(log)
        .run()
        .success()
        .stdout_json();
    assert_report_shape(&v);
    assert_eq!(v["kernel"], "5.14.0-570.23.1.el9_6.x86_64");
    assert_eq!(v["cpus"], 384);
    assert_eq!(v["nodes"], 2);
    assert_eq!(v["time_to_init_s"], 4.122063);
}

#[test]
fn empty_standard_input_is_an_empty_report_not_an_error() {
    let v = Kup::new()
        .args(["boot-time", "--dmesg", "-", "--format", "json"])
        .stdin("")
        .run()
        .success()
        .stdout_json();
    assert_report_shape(&v);
    assert!(v["kernel"].is_null() && v["time_to_init_s"].is_null());
}

#[test]
fn a_missing_file_is_exit_2_with_a_message_on_stderr() {
    Kup::new()
        .args(["boot-time", "--dmesg", "tests/data/dmesg/no-such-log.txt"])
        .run()
        .status(2)
        .stdout_is("")
        .stderr_has("cannot read tests/data/dmesg/no-such-log.txt");
}

#[test]
fn an_unknown_format_is_a_usage_error() {
    Kup::new()
        .args(["boot-time", "--dmesg", SUPERMICRO, "--format", "yaml"])
        .run()
        .status(2);
}

/// The live host's log: only what is certain anywhere is asserted. Reading it may be refused (no root, no
/// /dev/kmsg, no dmesg) — then exit 2; when it works, the JSON has the documented shape, and if the log still
/// holds the `Linux version` line, its release is the running kernel's.
#[test]
fn live_kernel_log() {
    let run = Kup::new().args(["boot-time", "--format", "json"]).run();
    match run.code() {
        Some(0) => {
            let v = run.stdout_json();
            assert_report_shape(&v);
            if let Some(kernel) = v["kernel"].as_str() {
                let running =
                    std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
                assert_eq!(kernel, running.trim());
            }
        }
        Some(2) => assert!(!run.stderr().is_empty(), "exit 2 must say why"),
        other => panic!("unexpected exit {other:?}: {}", run.stderr()),
    }
}
