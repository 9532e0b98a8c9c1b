//! Benchmark of a guest's downtime under `kup plan apply --rehearse` against a bare QMP script that makes the RAM
//! durable the same way, side by side in one run: one 2 GiB QEMU 7.2 lab guest with 1.5 GiB of its RAM written
//! afresh before every run (random bytes through /proc/PID/mem, so the pages are dirty in the page cache), with
//! `memory = "shared"` (RAM in a `share=on` file under target/) and with `memory = "copy"`.
//!
//! The **downtime** is QMP `stop` acknowledged → `cont` acknowledged: for kup the `blackout.total_ms` of `kup plan
//! status`, for the script the same two replies timed with `Instant`. The **bare script** (below, `bare`) does
//! what kup does and nothing else:
//! - shared RAM: while the guest runs, `fdatasync` of the RAM file in passes while a pass gets shorter (the rule of
//!   kup's preflush: ≤ 10 ms, not shrinking, 8 passes or 10 s) and `syncfs`; then `migrate-set-capabilities
//!   x-ignore-shared`, max-bandwidth; `stop`; `migrate exec:cat > STATE`, poll `query-migrate` (1 → 20 ms) to
//!   `completed`; `fdatasync` of the state file; `syncfs` of the file system (the remainder the guest dirtied since
//!   the preflush); `quit`, wait until the socket is gone (not for the process); start the same QEMU with
//!   `-incoming defer`; x-ignore-shared again; `migrate-incoming exec:cat STATE`; poll `query-status` to `paused`;
//!   `cont`.
//! - copied RAM: the same without the RAM file and x-ignore-shared (`syncfs` of the state's file system only).
//!
//! A third column, `--kup-before PATH`, runs another kup binary (main's, built the same way) on the same guest: the
//! before/after of a change in one run. Runs alternate which command goes first; between commands the bench waits
//! for the old QEMU to exit (1–2 s while the kernel frees its RAM), so no run pays for the previous one's teardown.
//!
//! ```sh
//! lab/setup
//! cargo build --bin kup --example downtime_vs_bare_bench
//! flock /tmp/kup-heavy.lock target/debug/examples/downtime_vs_bare_bench --runs 3 [--kup-before PATH] [--only shared|copy]
//! ```
//!
//! Needs root (guest RAM is written through /proc/PID/mem) and about 6 GiB of free RAM and disk.

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "../tests/support/guests.rs"]
mod guests;

use cli::Kup;
use guests::{BenchSize, Guest, Ram};
use kup::host::qmp::QmpClient;
use serde_json::{Value, json};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Config {
    size: BenchSize,
    kup: PathBuf,
    before: Option<PathBuf>,
    only: Option<String>,
}

fn config() -> Config {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().unwrap();
    let mut c = Config {
        size: BenchSize {
            runs: 3,
            ..BenchSize::default()
        },
        kup: exe.parent().unwrap().parent().unwrap().join("kup"),
        before: None,
        only: None,
    };
    let mut i = 0;
    while i < args.len() {
        if !c.size.take(&args, &mut i) {
            match args[i].as_str() {
                "--kup" => c.kup = PathBuf::from(&args[i + 1]),
                "--kup-before" => c.before = Some(PathBuf::from(&args[i + 1])),
                "--only" => c.only = Some(args[i + 1].clone()),
                other => {
                    eprintln!(
                        "usage: downtime_vs_bare_bench [--runs N] [--quick] [--kup PATH] [--kup-before PATH] \
                         [--only shared|copy] (unknown argument {other})"
                    );
                    std::process::exit(2);
                }
            }
            i += 1;
        }
        i += 1;
    }
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!("{:.0} ms ({:.0}–{:.0})", median(values), min, max)
}

/// Waits until the QEMU that had `pid` is gone: the next run must not pay for its teardown.
fn wait_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + Duration::from_secs(60);
    while guests::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One kup rehearsal: the guest's blackout and the parts of it, from `kup plan status`.
struct KupRun {
    downtime: f64,
    /// `name=ms` of each blackout part, and the sync step's and preflush's durations.
    parts: String,
}

/// `migrate` or `migrate-incoming` with `uri`, then the query until its `status` is the one awaited.
fn migrate(c: &mut QmpClient, command: &str, uri: &str, (query, until): (&str, &str)) {
    qmp(c, command, json!({ "uri": uri }));
    poll(c, query, until);
}

fn kup_run(kup: &Path, plan: &Path, journal: &Path, g: &Guest) -> KupRun {
    Kup::at(kup)
        .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
        .arg(plan)
        .run()
        .success();
    let status = Kup::at(kup).status_json(journal);
    let b = &status["blackout"][&g.spec.name];
    let mut parts: Vec<String> = b["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}={}", p["name"].as_str().unwrap(), p["ms"]))
        .collect();
    for step in status["steps"].as_array().unwrap() {
        let id = step["id"].as_str().unwrap();
        if id == "sync" || id == "preflush" {
            parts.push(format!("[{id} {} ms]", step["duration_ms"]));
        }
    }
    KupRun {
        downtime: b["total_ms"].as_f64().unwrap(),
        parts: parts.join(" "),
    }
}

fn qmp(c: &mut QmpClient, command: &str, args: Value) -> Value {
    c.execute(command, &args)
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

fn connect(socket: &Path) -> QmpClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = QmpClient::connect(socket) {
            qmp(&mut c, "qmp_capabilities", json!({}));
            return c;
        }
        assert!(Instant::now() < deadline, "no QMP on {}", socket.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `command` until its `status` is `until`, as kup's host does: 1 ms, doubling up to 20 ms (a fixed 1 ms
/// poll keeps QEMU's main loop, which also runs the incoming migration, busy answering).
fn poll(c: &mut QmpClient, command: &str, until: &str) {
    let mut wait = Duration::from_millis(1);
    loop {
        let reply = qmp(c, command, json!({}));
        let status = reply["status"].as_str().unwrap_or_default();
        if status == until {
            return;
        }
        assert!(status != "failed", "{command}: {reply}");
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

fn syncfs(path: &Path) {
    nix::unistd::syncfs(File::open(path).unwrap()).unwrap();
}

/// kup's preflush rule, on one file: `fdatasync` passes while each is shorter than the one before.
fn preflush(ram: &Path) -> Vec<u64> {
    let file = File::open(ram).unwrap();
    let started = Instant::now();
    let mut passes: Vec<Duration> = Vec::new();
    loop {
        let pass = Instant::now();
        file.sync_data().unwrap();
        let d = pass.elapsed();
        let shrinking = passes.last().is_none_or(|p| d < *p);
        passes.push(d);
        if d <= Duration::from_millis(10)
            || !shrinking
            || passes.len() >= 8
            || started.elapsed() >= Duration::from_secs(10)
        {
            break;
        }
    }
    passes.iter().map(|d| d.as_millis() as u64).collect()
}

/// The bare script: the same durable hand-over as kup's, nothing else; returns `stop` ack → `cont` ack and a note.
fn bare(g: &Guest, shared: bool) -> (f64, String) {
    let state = g.state.join("bare-vmstate");
    let mut c = connect(&g.qmp);
    let mut note = String::new();
    let set_caps = |c: &mut QmpClient| {
        if shared {
            qmp(
                c,
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
            );
        }
        qmp(
            c,
            "migrate-set-parameters",
            json!({"max-bandwidth": 100u64 << 30}),
        );
    };
    if shared {
        let passes = preflush(&g.ram_file);
        syncfs(&g.state);
        note = format!("preflush passes {passes:?} ms");
    }
    set_caps(&mut c);
    qmp(&mut c, "stop", json!({}));
    let stopped = Instant::now();
    let to_state = format!("exec:cat > {}", state.display());
    migrate(&mut c, "migrate", &to_state, ("query-migrate", "completed"));
    let saved = stopped.elapsed();
    File::open(&state).unwrap().sync_data().unwrap();
    let flush = Instant::now();
    syncfs(&g.state);
    let flushed = flush.elapsed();
    let _ = c.execute("quit", &json!({}));
    drop(c);
    while std::os::unix::net::UnixStream::connect(&g.qmp).is_ok() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let argv = g.restart_argv();
    let quit = stopped.elapsed();
    assert!(
        Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .unwrap()
            .success()
    );
    let mut c = connect(&g.qmp);
    set_caps(&mut c);
    let from_state = format!("exec:cat {}", state.display());
    migrate(
        &mut c,
        "migrate-incoming",
        &from_state,
        ("query-status", "paused"),
    );
    let loaded = stopped.elapsed();
    qmp(&mut c, "cont", json!({}));
    let total = stopped.elapsed();
    let _ = std::fs::remove_file(&state);
    note = format!(
        "save {:.0} ms, syncfs {:.0} ms, quit {:.0} ms, started+loaded {:.0} ms; {note}",
        ms(saved),
        ms(flushed),
        ms(quit),
        ms(loaded - quit)
    );
    (ms(total), note)
}

fn main() {
    let c = config();
    let (lab, work, tmp) = guests::bench_start("downtime_vs_bare-", "RAM, state and journal");
    println!(
        "guest: {} MiB, {} MiB written afresh before every run; {} runs; medians (min–max); downtime = stop ack → \
         cont ack\n",
        c.size.mem_mib, c.size.written_mib, c.size.runs
    );
    let mut commands: Vec<(String, Option<PathBuf>)> = vec![
        ("bare QMP script".into(), None),
        (format!("kup ({})", c.kup.display()), Some(c.kup.clone())),
    ];
    if let Some(before) = &c.before {
        commands.push((
            format!("kup before ({})", before.display()),
            Some(before.clone()),
        ));
    }
    for (memory, ram) in [("shared", Ram::SharedFile), ("copy", Ram::Anonymous)] {
        if c.only.as_deref().is_some_and(|o| o != memory) {
            continue;
        }
        let g = c.size.start(&lab, &work, tmp.path(), memory, ram);
        std::fs::create_dir_all(&g.state).unwrap();
        let journal = tmp.path().join(format!("journal-{memory}"));
        let plan = tmp.path().join(format!("{memory}.toml"));
        std::fs::write(&plan, guests::plan(&lab, &journal, &[&g], memory)).unwrap();
        // kup refuses a plan that others may write.
        std::fs::set_permissions(&plan, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); commands.len()];
        for run in 0..c.size.runs {
            for k in 0..commands.len() {
                let k = (k + run) % commands.len();
                g.fill_reserved(memory, c.size.written_mib);
                let old = g.pid();
                let (label, kup) = &commands[k];
                let (downtime, note) = match kup {
                    None => bare(&g, memory == "shared"),
                    Some(kup) => {
                        let r = kup_run(kup, &plan, &journal, &g);
                        (r.downtime, r.parts)
                    }
                };
                eprintln!("{memory} run {run} {label}: {downtime:.0} ms  {note}");
                times[k].push(downtime);
                wait_gone(old);
            }
        }
        println!("| RAM `{memory}` | downtime | × bare script |");
        println!("| --- | ---: | ---: |");
        let base = median(&times[0]);
        for ((label, _), t) in commands.iter().zip(&times) {
            println!("| {label} | {} | {:.2} × |", show(t), median(t) / base);
        }
        println!();
        g.kill();
    }
}
