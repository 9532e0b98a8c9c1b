//! Benchmark of kup's own overhead inside a VM's downtime window, on real rehearsed hand-overs of QEMU 7.2 lab guests:
//! runs the real `kup plan apply --rehearse --no-kernel-load --yes` on (a) one 2 GiB guest with shared RAM, (b) one
//! with copied RAM, (c) four shared-RAM guests (1.5 GiB written into each, as in `vm_save_bench`), and splits each
//! VM's downtime as kup reports it (`vm_downtime_ms`: start of the pause to end of the resume) into time inside the
//! steps on that VM's path and the rest — kup's own overhead (journal fsyncs, scheduling, thread start-up).
//!
//! ```sh
//! lab/setup
//! cargo build --release --bin kup --example overhead_bench
//! target/release/examples/overhead_bench --runs 5 --trace       # the figures in docs/benchmarks.md, ~2 min
//! target/release/examples/overhead_bench --runs 5 --poll-probe  # QmpWait's 20 ms poll vs a 1 ms poll, ~30 s
//! ```
//!
//! Other options: `--quick` (512 MiB guests, 2 runs), `--kup PATH`, `--only shared,copy,four` (any of them), and
//! `--baseline PATH`: another kup binary (main's, built into another target dir) rehearsed on the same guests,
//! alternating with `--kup` run by run, with a table of four guests in parallel against one alone for both. With
//! `CARGO_TARGET_DIR` set, the binaries are under it. Needs root (guest RAM is written through /proc/PID/mem), about
//! 10 GiB of free RAM and disk, and `perf` for `--trace`.
//!
//! Method, from the journal of each apply: a step ran during `[done.unix_ms - duration_ms, done.unix_ms]` (the
//! `step-done` record's wall clock and the step's own monotonic duration). The VM's path is walked back from its
//! `vm:NAME:resume`: at each step, the dependency that finished last is the one it waited for (pause → save → sync
//! → kexec → restore → resume for one guest; with four, `sync` may wait for another guest's save). kup's overhead is
//! the window minus the union of those steps' intervals clipped to the window: the time no step on the path ran,
//! i.e. between one step's end and the next one's start — the engine writing the round's records, one
//! `fdatasync` for them, and the next step's thread starting. `--trace` profiles one more apply with `perf record`
//! (scheduler switches and wake-ups, kup's `fdatasync`s): what kup's threads were doing in those gaps.

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "../tests/support/guests.rs"]
mod guests;
#[path = "../tests/support/plans.rs"]
mod plans;

use cli::Kup;
use guests::{BenchSize, Guest, Lab, Ram};
use kup::exec::journal::{self, Event, Record};
use kup::graph::Program;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Config {
    /// `--runs`, `--quick`.
    size: BenchSize,
    kup: PathBuf,
    only: Option<String>,
    /// One more apply per scenario under `perf record` of the scheduler's events and kup's fdatasyncs, not
    /// counted: what kup's threads did in the gaps of each window ([`sched_profile`]).
    trace: bool,
    /// Instead of the scenarios: the save's and restore's waits with kup's 20 ms poll vs a 1 ms poll.
    poll_probe: bool,
    /// `--baseline PATH`: another kup binary (say, main's) rehearsed on the same guests in the same run, alternating
    /// with `kup` run by run, so that both see the same machine.
    baseline: Option<PathBuf>,
}

/// One VM's downtime in one run, split.
#[derive(Debug, Clone, Default)]
struct Split {
    /// Which kup ran: `kup`, or `baseline`.
    kup: &'static str,
    /// `vm_downtime_ms` as `kup plan status` reports it.
    downtime: f64,
    /// The guest's own blackout: QMP `stop` acknowledged to `cont` acknowledged (`blackout.total_ms`).
    blackout: f64,
    /// Time inside the path's steps, by step kind (`pause`, `save`, `sync`, `kexec`, `restore`, `resume`, and
    /// `other VMs` for another guest's steps that this one waited for).
    inside: BTreeMap<&'static str, f64>,
    /// Window minus the union of the path's intervals.
    overhead: f64,
    /// Journal records written inside the window (each one an `fdatasync` by the engine's thread).
    records: usize,
    /// The gaps between consecutive steps on the path, in path order (first: window start → first step start).
    gaps: Vec<(String, f64)>,
    /// The same gaps as wall-clock intervals (Unix ms), and the one after the last step to the window's end.
    gap_spans: Vec<(f64, f64)>,
    /// Inside this VM's restore: the old QEMU's `quit` (until it lets go of the socket) and the `restart` program
    /// (QEMU's start until `-daemonize` returns), as the step's outputs report them.
    restore_quit: f64,
    restore_exec: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().unwrap();
    let mut config = Config {
        size: BenchSize::default(),
        // target/release/examples/overhead_bench → target/release/kup
        kup: exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("kup"))
            .unwrap_or_default(),
        only: None,
        trace: false,
        poll_probe: false,
        baseline: None,
    };
    let mut i = 0;
    while i < args.len() {
        if config.size.take(&args, &mut i) {
            i += 1;
            continue;
        }
        match args[i].as_str() {
            "--kup" => {
                i += 1;
                config.kup = args.get(i).map(PathBuf::from).unwrap_or_default();
            }
            "--only" => {
                i += 1;
                config.only = args.get(i).cloned();
            }
            "--trace" => config.trace = true,
            "--baseline" => {
                i += 1;
                config.baseline = args.get(i).map(PathBuf::from);
            }
            "--poll-probe" => config.poll_probe = true,
            other => {
                eprintln!(
                    "usage: overhead_bench [--runs N] [--quick] [--kup PATH] [--only shared,copy,four] [--baseline PATH] [--trace] [--poll-probe]  (unknown argument {other})"
                );
                std::process::exit(2);
            }
        }
        i += 1;
    }
    assert!(
        config.kup.is_file(),
        "kup binary not found at {}: `cargo build --release --bin kup` (or pass --kup PATH)",
        config.kup.display()
    );
    let lab = Lab::get();
    let (work, tmp) = guests::bench_dirs(&lab, "overhead_bench-");
    machine(&lab, tmp.path(), &config.kup);
    println!(
        "guests: {} MiB, {} MiB written (random bytes), {} runs; medians (min–max) over runs (and over the guests, \
         for four)\n",
        config.size.mem_mib, config.size.written_mib, config.size.runs
    );
    println!(
        "append + fdatasync of a journal-sized line on this file system: {}\n",
        fsync_cost(tmp.path())
    );
    if config.poll_probe {
        poll_probe(&lab, &work, tmp.path(), &config);
        return;
    }

    let scenarios: [(&str, &str, Ram, usize); 3] = [
        ("shared", "shared", Ram::SharedFile, 1),
        ("copy", "copy", Ram::Anonymous, 1),
        ("four", "shared", Ram::SharedFile, 4),
    ];
    let mut results = Vec::new();
    for (label, memory, ram, count) in scenarios {
        if config
            .only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == label))
        {
            continue;
        }
        let (splits, walls) = scenario(&lab, &work, tmp.path(), &config, label, memory, ram, count);
        for tag in tags(&config) {
            let of: Vec<Split> = splits.iter().filter(|s| s.kup == tag).cloned().collect();
            let wall: Vec<f64> = walls.iter().filter(|w| w.0 == tag).map(|w| w.1).collect();
            results.push((label, memory, count, tag, of, wall));
        }
    }
    parallel_table(&results);

    println!(
        "\n| guests | VM downtime (kup) | blackout (`stop` → `cont` acked) | inside the path's steps | kup overhead | overhead share | journal records in the window |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, memory, count, tag, splits, _) in &results {
        let downtime: Vec<f64> = splits.iter().map(|s| s.downtime).collect();
        let blackout: Vec<f64> = splits.iter().map(|s| s.blackout).collect();
        let inside: Vec<f64> = splits.iter().map(|s| s.inside.values().sum()).collect();
        let overhead: Vec<f64> = splits.iter().map(|s| s.overhead).collect();
        let share: Vec<f64> = splits
            .iter()
            .map(|s| 100.0 * s.overhead / s.downtime.max(1.0))
            .collect();
        let records: Vec<f64> = splits.iter().map(|s| s.records as f64).collect();
        println!(
            "| {} | {} | {} | {} | **{}** | {} | {} |",
            describe(label, memory, *count, tag),
            stat(&downtime, "ms"),
            stat(&blackout, "ms"),
            stat(&inside, "ms"),
            stat(&overhead, "ms"),
            stat(&share, "%"),
            stat(&records, ""),
        );
    }
    println!("\nTime inside the path's steps, by step (ms):\n");
    let kinds = [
        "pause",
        "save",
        "other VMs",
        "sync",
        "kexec",
        "restore",
        "resume",
    ];
    println!("| guests | {} |", kinds.join(" | "));
    println!("|---{}|", " | ---:".repeat(kinds.len()));
    for (label, memory, count, tag, splits, _) in &results {
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| {
                let v: Vec<f64> = splits
                    .iter()
                    .map(|s| s.inside.get(k).copied().unwrap_or(0.0))
                    .collect();
                stat(&v, "")
            })
            .collect();
        println!(
            "| {} | {} |",
            describe(label, memory, *count, tag),
            cells.join(" | ")
        );
    }
    println!("\nThe restore's parts (ms), from the step's outputs:\n");
    println!(
        "| guests | old QEMU `quit` (until it lets go of the socket) | QEMU start (`restart`, until `-daemonize` returns) | the rest (socket, `migrate-incoming`, wait for `paused`) |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (label, memory, count, tag, splits, _) in &results {
        let col = |f: &dyn Fn(&Split) -> f64| stat(&splits.iter().map(f).collect::<Vec<_>>(), "");
        println!(
            "| {} | {} | {} | {} |",
            describe(label, memory, *count, tag),
            col(&|s| s.restore_quit),
            col(&|s| s.restore_exec),
            col(&|s| s.inside.get("restore").copied().unwrap_or(0.0)
                - s.restore_quit
                - s.restore_exec),
        );
    }
    println!("\nGaps on the path (no step running), by where they fall (ms):\n");
    for (label, memory, count, tag, splits, _) in &results {
        let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for s in splits {
            for (k, v) in &s.gaps {
                if !order.contains(k) {
                    order.push(k.clone());
                }
                by.entry(k.clone()).or_default().push(*v);
            }
        }
        let cells: Vec<String> = order
            .iter()
            .map(|k| format!("{k} {}", stat(&by[k], "")))
            .collect();
        println!(
            "- {}: {}",
            describe(label, memory, *count, tag),
            cells.join("; ")
        );
    }
    println!(
        "\nappend + fdatasync again, after the runs: {}",
        fsync_cost(tmp.path())
    );
}

fn describe(label: &str, memory: &str, count: usize, tag: &str) -> String {
    let what = match label {
        "four" => format!("4 × `{memory}`, in parallel"),
        _ => format!("{count} × `{memory}`"),
    };
    if tag == "kup" {
        what
    } else {
        format!("{what} ({tag})")
    }
}

/// The kups a run rehearses: `kup`, and the baseline when there is one.
fn tags(config: &Config) -> Vec<&'static str> {
    match config.baseline {
        Some(_) => vec!["baseline", "kup"],
        None => vec!["kup"],
    }
}

type Results = [(
    &'static str,
    &'static str,
    usize,
    &'static str,
    Vec<Split>,
    Vec<f64>,
)];

/// Four guests in parallel against one guest alone, per kup: the wall time of the four (the first pause's start to
/// the last resume's end) over the single guest's downtime, and kup's own time inside each of the four windows.
fn parallel_table(results: &Results) {
    let find = |label: &str, tag: &str| {
        results
            .iter()
            .find(|r| r.0 == label && r.3 == tag)
            .map(|r| (&r.4, &r.5))
    };
    println!(
        "\n| kup | one guest alone: downtime | four in parallel: wall | wall / one guest (target ≤ 1.3) | four: kup overhead per window (target ≤ 10 ms) | four: records per window |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for tag in ["baseline", "kup"] {
        let (Some((one, _)), Some((four, walls))) = (find("shared", tag), find("four", tag)) else {
            continue;
        };
        let single: Vec<f64> = one.iter().map(|s| s.downtime).collect();
        let ratio = median(walls) / median(&single).max(1.0);
        let overhead: Vec<f64> = four.iter().map(|s| s.overhead).collect();
        let records: Vec<f64> = four.iter().map(|s| s.records as f64).collect();
        println!(
            "| {tag} | {} | {} | **{ratio:.2}** | **{}** | {} |",
            stat(&single, "ms"),
            stat(walls, "ms"),
            stat(&overhead, "ms"),
            stat(&records, ""),
        );
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Starts `count` guests, then rehearses the hand-over `runs` times on them and splits each VM's downtime.
#[allow(clippy::too_many_arguments)]
fn scenario(
    lab: &Lab,
    work: &Path,
    dir: &Path,
    config: &Config,
    label: &str,
    memory: &str,
    ram: Ram,
    count: usize,
) -> (Vec<Split>, Vec<(&'static str, f64)>) {
    let dir = dir.join(label);
    std::fs::create_dir_all(&dir).unwrap();
    let all: Vec<Guest> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=count)
            .map(|n| {
                let dir = &dir;
                s.spawn(move || {
                    config
                        .size
                        .start(lab, work, dir, &format!("{label}-{n}"), ram)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refs: Vec<&Guest> = all.iter().collect();
    let root = dir.join("journal");
    let text = guests::plan(lab, &root, &refs, memory);
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, &text).unwrap();
    let program = plans::program(&text);
    // The written RAM (a shared guest's file pages) would otherwise be flushed by the first run's `sync` step only.
    nix::unistd::sync();
    let mut splits = Vec::new();
    let mut walls = Vec::new();
    for run in 1..=config.size.runs {
        // Alternating which goes first, so neither always follows the other's teardown.
        let mut order = tags(config);
        if run % 2 == 0 {
            order.reverse();
        }
        for tag in order {
            let bin = match tag {
                "baseline" => config.baseline.as_deref().unwrap(),
                _ => config.kup.as_path(),
            };
            let (mut of, wall) = one_run(
                config, bin, &program, &plan_path, &root, &refs, label, run, tag,
            );
            for s in &mut of {
                s.kup = tag;
            }
            splits.extend(of);
            walls.push((tag, wall));
        }
    }
    if config.trace {
        for tag in tags(config) {
            let bin = match tag {
                "baseline" => config.baseline.as_deref().unwrap(),
                _ => config.kup.as_path(),
            };
            sched_profile(config, bin, tag, &program, &plan_path, &root, &dir, &refs);
        }
    }
    (splits, walls)
}

/// One rehearsal by the kup at `bin`: each guest's split, and the wall time from the first pause's start to the
/// last resume's end.
#[allow(clippy::too_many_arguments)]
fn one_run(
    config: &Config,
    bin: &Path,
    program: &Program,
    plan_path: &Path,
    root: &Path,
    refs: &[&Guest],
    label: &str,
    run: usize,
    tag: &str,
) -> (Vec<Split>, f64) {
    let mut splits = Vec::new();
    {
        let old: Vec<u32> = refs.iter().map(|g| g.pid().unwrap()).collect();
        let started = Instant::now();
        Kup::at(bin)
            .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
            .arg(plan_path)
            .env("KUP_PLAIN_PROGRESS", "1")
            .run()
            .success();
        let took = started.elapsed();
        let (status, records) = plan_status(config, root);
        let at = |seq: u64| {
            records
                .iter()
                .find(|r| r.seq == seq)
                .map_or(0, |r| r.unix_ms)
        };
        let windows: Vec<(u64, u64)> = refs
            .iter()
            .map(|g| {
                let (first, last) = seq_window(&records, &g.spec.name);
                (at(first), at(last))
            })
            .collect();
        let wall = windows.iter().map(|w| w.1).max().unwrap_or(0)
            - windows.iter().map(|w| w.0).min().unwrap_or(0);
        let mut line = Vec::new();
        for g in refs {
            let name = &g.spec.name;
            let reported = status["vm_downtime_ms"][name.as_str()].as_f64().unwrap();
            let mut split = split(program, &records, name, reported);
            split.blackout = status["blackout"][name.as_str()]["total_ms"]
                .as_f64()
                .unwrap_or(f64::NAN);
            line.push(format!(
                "{name}: downtime {:.0} ms, overhead {:.0} ms",
                split.downtime, split.overhead
            ));
            splits.push(split);
            assert_eq!(g.status(), "running", "{name} after the rehearsal");
        }
        println!(
            "{label} run {run} ({tag}): apply {:.2} s; wall {wall} ms; {}",
            took.as_secs_f64(),
            line.join("; ")
        );
        std::io::stdout().flush().unwrap();
        // The old QEMUs were told to quit by the restore; let them go (freeing 2 GiB takes seconds) before the next
        // run, so one run's teardown does not share the cores with the next one's downtime.
        wait_for_exit(&old);
        std::thread::sleep(Duration::from_secs(1));
        (splits, wall as f64)
    }
}

/// `kup plan status --format json` of the last apply with its journal under `root`, and that journal's records.
fn plan_status(config: &Config, root: &Path) -> (Value, Vec<Record>) {
    let status = Kup::at(&config.kup).status_json(root);
    let jdir = PathBuf::from(status["journal"].as_str().unwrap());
    let records = journal::read(&jdir).unwrap().records;
    (status, records)
}

/// Waits (up to 30 s each) until the processes `pids` are gone.
fn wait_for_exit(pids: &[u32]) {
    for &pid in pids {
        let t = Instant::now();
        while guests::alive(pid) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The save's `query-migrate` wait and the restore's `query-status` wait, each performed either as kup does (the
/// compiled `QmpWait`, 20 ms between polls) or polled every 1 ms, alternating, on one shared-RAM guest: how much of
/// those steps is the poll interval.
fn poll_probe(lab: &Lab, work: &Path, dir: &Path, config: &Config) {
    let g = config
        .size
        .start(lab, work, dir, "probe-1", Ram::SharedFile);
    let root = dir.join("journal");
    let text = guests::plan(lab, &root, &[&g], "shared");
    let program = plans::program(&text);
    nix::unistd::sync();
    let step = |id: &str| plans::step(&program, id);
    let perform = |actions: &[kup::action::Action]| {
        use kup::host::Host;
        if let Err(f) = kup::host::RealHost.perform(actions) {
            panic!("`{}` failed: {}", actions[f.index].describe(), f.message);
        }
    };
    let tight = |command: &str, until: &str| {
        let mut c = kup::host::qmp::QmpClient::connect(&g.qmp).unwrap();
        c.execute("qmp_capabilities", &serde_json::json!({}))
            .unwrap();
        let mut polls = 0;
        loop {
            polls += 1;
            let reply = c.execute(command, &serde_json::json!({})).unwrap();
            if reply["status"] == until {
                return polls;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // What the preflight does for this guest (the rest of it checks kexec, which this host may not have).
    std::fs::create_dir_all(&g.state).unwrap();
    let name = &g.spec.name;
    let (pause, save) = (
        step(&format!("vm:{name}:pause")),
        step(&format!("vm:{name}:save")),
    );
    let (restore, resume) = (
        step(&format!("vm:{name}:restore")),
        step(&format!("vm:{name}:resume")),
    );
    let mut waits: BTreeMap<(&str, bool), Vec<f64>> = BTreeMap::new();
    for run in 0..config.size.runs * 2 {
        let fine = run % 2 == 1;
        let old = g.pid().unwrap();
        perform(&pause.actions);
        // save = handshake, migrate, QmpWait query-migrate, commit
        perform(&save.actions[..2]);
        let t = Instant::now();
        if fine {
            tight("query-migrate", "completed");
        } else {
            // A new session, as the 1 ms poll has: the handshake, then the wait.
            perform(&[save.actions[0].clone(), save.actions[2].clone()]);
        }
        waits
            .entry(("save", fine))
            .or_default()
            .push(ms(t.elapsed()));
        perform(&save.actions[3..]);
        nix::unistd::sync();
        // restore = quit, restart, socket, handshake, migration setup, migrate-incoming, QmpWait query-status
        let n = restore.actions.len();
        perform(&restore.actions[..n - 1]);
        let t = Instant::now();
        if fine {
            tight("query-status", "paused");
        } else {
            perform(&[restore.actions[3].clone(), restore.actions[n - 1].clone()]);
        }
        waits
            .entry(("restore", fine))
            .or_default()
            .push(ms(t.elapsed()));
        perform(&resume.actions);
        let _ = std::fs::remove_file(g.state.join("vmstate"));
        wait_for_exit(&[old]);
    }
    println!("| wait | kup's `QmpWait` (20 ms poll) | polled every 1 ms |");
    println!("| --- | ---: | ---: |");
    for (what, label) in [
        ("save", "save: `query-migrate` until `completed`"),
        ("restore", "restore: `query-status` until `paused`"),
    ] {
        println!(
            "| {label} | {} | {} |",
            stat(&waits[&(what, false)], "ms"),
            stat(&waits[&(what, true)], "ms")
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Splits `vm`'s downtime window in one apply's journal.
fn split(program: &Program, records: &[Record], vm: &str, reported: f64) -> Split {
    let mut started: BTreeMap<String, f64> = BTreeMap::new();
    let mut done: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let window = seq_window(records, vm);
    let restore_id = format!("vm:{vm}:restore");
    let mut restore_quit = 0.0;
    let mut restore_exec = 0.0;
    for r in records {
        if let Event::StepDone { step, outputs, .. } = &r.event
            && step.to_string() == restore_id
        {
            restore_quit = outputs[0]["ms"].as_f64().unwrap_or(0.0);
            restore_exec = outputs[1]["duration_ms"].as_f64().unwrap_or(0.0);
        }
        match &r.event {
            Event::StepStarted { step } => {
                started.insert(step.to_string(), r.unix_ms as f64);
            }
            Event::StepDone {
                step, duration_ms, ..
            } => {
                let end = r.unix_ms as f64;
                done.insert(step.to_string(), (end - *duration_ms as f64, end));
            }
            _ => {}
        }
    }
    let pause = format!("vm:{vm}:pause");
    let resume = format!("vm:{vm}:resume");
    let from = started[pause.as_str()];
    let to = done[resume.as_str()].1;
    assert_eq!(
        (to - from) as u64,
        reported as u64,
        "the window is kup's vm_downtime_ms"
    );
    // Walk back from the resume: each step waited for the dependency that ended last.
    let deps: BTreeMap<String, Vec<String>> = program
        .steps
        .iter()
        .map(|s| {
            (
                s.id.to_string(),
                s.after.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let mut path: Vec<&str> = Vec::new();
    let mut cur = resume.as_str();
    loop {
        path.push(cur);
        if cur == pause {
            break;
        }
        let Some(prev) = deps[cur]
            .iter()
            .filter_map(|d| done.get_key_value(d.as_str()))
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            .map(|(id, _)| id.as_str())
        else {
            break;
        };
        if done[prev].1 <= from {
            break;
        }
        cur = prev;
    }
    path.reverse();
    let mut out = Split {
        downtime: to - from,
        restore_quit,
        restore_exec,
        ..Split::default()
    };
    let own = format!("vm:{vm}:");
    let mut covered = 0.0;
    let mut last_end = from;
    let mut previous = "window start".to_owned();
    for id in &path {
        let (s, e) = done[*id];
        let (s, e) = (s.max(last_end).max(from), e.min(to));
        let gap = (s - last_end).max(0.0);
        let name = id.rsplit(':').next().unwrap_or(id);
        let kind: &'static str = if id.starts_with(&own) {
            match name {
                "pause" => "pause",
                "save" => "save",
                "restore" => "restore",
                "resume" => "resume",
                _ => "other VMs",
            }
        } else if *id == "sync" {
            "sync"
        } else if *id == "kexec" {
            "kexec"
        } else {
            "other VMs"
        };
        out.gaps.push((format!("{previous} → {name}"), gap));
        if gap > 0.0 {
            out.gap_spans.push((last_end, s));
        }
        previous = name.to_owned();
        if e > s {
            *out.inside.entry(kind).or_default() += e - s;
            covered += e - s;
            last_end = e;
        }
    }
    if to > last_end {
        out.gap_spans.push((last_end, to));
    }
    out.overhead = out.downtime - covered;
    out.records = records
        .iter()
        .filter(|r| r.seq >= window.0 && r.seq < window.1)
        .count();
    out
}

/// The sequence numbers of `vm`'s `step-started` of its pause and `step-done` of its resume: the records from the
/// first up to (not including) the second are written inside its downtime window.
fn seq_window(records: &[Record], vm: &str) -> (u64, u64) {
    let find =
        |f: &dyn Fn(&Event) -> bool| records.iter().find(|r| f(&r.event)).map_or(0, |r| r.seq);
    let pause = format!("vm:{vm}:pause");
    let resume = format!("vm:{vm}:resume");
    (
        find(&|e| matches!(e, Event::StepStarted { step } if step.to_string() == pause)),
        find(&|e| matches!(e, Event::StepDone { step, .. } if step.to_string() == resume)),
    )
}

/// What one journal append costs here: 200 appends of a 250-byte line, each followed by `fdatasync` (as
/// `Journal::append` does), in a fresh file in `dir`.
fn fsync_cost(dir: &Path) -> String {
    let path = dir.join("fsync-probe.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    let line = format!("{}\n", "x".repeat(249));
    let mut times: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            file.write_all(line.as_bytes()).unwrap();
            file.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    format!(
        "median {:.2} ms, 10th–90th percentile {:.2}–{:.2} ms, max {:.2} ms (200 appends)",
        times[100], times[20], times[180], times[199]
    )
}

fn stat(values: &[f64], unit: &str) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let (min, max) = (v[0], v[v.len() - 1]);
    // Even counts: the mean of the two middle values.
    let median = if v.len() % 2 == 0 {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    } else {
        v[v.len() / 2]
    };
    let u = if unit.is_empty() || unit == "%" {
        unit.to_owned()
    } else {
        format!(" {unit}")
    };
    if unit == "%" {
        format!("{median:.0}{u} ({min:.0}–{max:.0}{u})")
    } else {
        format!("{median:.0}{u} ({min:.0}–{max:.0})")
    }
}

fn machine(lab: &Lab, dir: &Path, kup: &Path) {
    let m = guests::machine(lab, dir);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {}; journal, state and RAM files on {}; {} (TCG, -smp 1); kup {}; load average {}",
        m.summary(),
        m.fs,
        m.qemu,
        kup.display(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// What one of kup's threads was doing, as the scheduler's events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Running,
    /// Woken or preempted, waiting for a core.
    Runnable,
    /// Asleep (a channel, a socket, a child) or in uninterruptible I/O.
    Blocked,
}

/// A kup thread's timeline on the monotonic clock (seconds): state changes, and its `fdatasync` calls.
#[derive(Debug, Default)]
struct Timeline {
    changes: Vec<(f64, Doing)>,
    fdatasync: Vec<(f64, f64)>,
}

impl Timeline {
    fn at(&self, t: f64) -> Doing {
        match self.changes.partition_point(|c| c.0 <= t) {
            0 => Doing::Blocked,
            i => self.changes[i - 1].1,
        }
    }

    fn syncing(&self, t: f64) -> bool {
        self.fdatasync.iter().any(|&(a, b)| a <= t && t < b)
    }
}

/// Records that thread `tid` started `doing` at `at`.
fn mark(threads: &mut BTreeMap<u32, Timeline>, tid: u32, at: f64, doing: Doing) {
    threads.entry(tid).or_default().changes.push((at, doing));
}

/// Parses `perf script -F pid,tid,time,event,trace` into a timeline per thread of process `pid` (a thread is
/// kup's when an event ran in it with `pid` as its process: a child kup forks is a process of its own).
fn timelines(text: &str, pid: u32) -> BTreeMap<u32, Timeline> {
    let mut threads: BTreeMap<u32, Timeline> = BTreeMap::new();
    let mut kup_tids = std::collections::BTreeSet::from([pid]);
    let mut entered: BTreeMap<u32, f64> = BTreeMap::new();
    let field = |trace: &str, key: &str| -> u32 {
        trace
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for line in text.lines() {
        // ` 2091/2091  12832.060041569:   sched:sched_switch: prev_comm=…`
        let mut words = line.split_whitespace();
        let (Some(ids), Some(time), Some(event)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let trace: Vec<&str> = words.collect();
        let trace = trace.join(" ");
        let Some((p, t)) = ids.split_once('/') else {
            continue;
        };
        let (Ok(p), Ok(tid), Ok(at)) = (
            p.parse::<u32>(),
            t.parse::<u32>(),
            time.trim_end_matches(':').parse::<f64>(),
        ) else {
            continue;
        };
        if p == pid {
            kup_tids.insert(tid);
        }
        match event {
            "sched:sched_switch:" => {
                if p == pid {
                    let state = trace
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("prev_state="))
                        .unwrap_or("S");
                    let doing = if state.starts_with('R') {
                        Doing::Runnable
                    } else {
                        Doing::Blocked
                    };
                    mark(&mut threads, tid, at, doing);
                }
                mark(&mut threads, field(&trace, "next_pid="), at, Doing::Running);
            }
            "sched:sched_wakeup:" | "sched:sched_wakeup_new:" => {
                mark(&mut threads, field(&trace, "pid="), at, Doing::Runnable);
            }
            "syscalls:sys_enter_fdatasync:" if p == pid => {
                entered.insert(tid, at);
            }
            "syscalls:sys_exit_fdatasync:" if p == pid => {
                if let Some(from) = entered.remove(&tid) {
                    threads.entry(tid).or_default().fdatasync.push((from, at));
                }
            }
            _ => {}
        }
    }
    threads.retain(|tid, _| kup_tids.contains(tid));
    threads
}

/// One more apply (not counted) under `perf record -a` of the scheduler's switches and wake-ups and of kup's
/// `fdatasync`s, on the monotonic clock: each guest's gaps (the time no step on its path ran — kup's overhead),
/// sampled every 0.1 ms and put under what kup's engine thread (the one that writes the journal and starts the
/// steps) was doing: in `fdatasync`; runnable, waiting for a core; running (records, spawning); or, while it
/// waited for a step, whether one of kup's step threads was waiting for a core; the rest is the journal's
/// millisecond rounding and a step's own start before its clock (its thread running).
#[allow(clippy::too_many_arguments)]
fn sched_profile(
    config: &Config,
    bin: &Path,
    tag: &str,
    program: &Program,
    plan: &Path,
    root: &Path,
    dir: &Path,
    guests: &[&Guest],
) {
    let old: Vec<u32> = guests.iter().map(|g| g.pid().unwrap()).collect();
    let data = dir.join("perf-sched.data");
    let output = Command::new("perf")
        .args(["record", "-a", "-k", "mono", "-q", "-o"])
        .arg(&data)
        .args([
            "-e",
            "sched:sched_switch",
            "-e",
            "sched:sched_wakeup",
            "-e",
            "sched:sched_wakeup_new",
            "-e",
            "syscalls:sys_enter_fdatasync",
            "-e",
            "syscalls:sys_exit_fdatasync",
            "--",
        ])
        .arg(bin)
        .args(["plan", "apply", "--rehearse", "--yes", "--no-kernel-load"])
        .arg(plan)
        .env("KUP_PLAIN_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "profiled apply failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The monotonic clock perf stamps with, against the journal's wall clock.
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let real = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).unwrap();
    let offset_ms = (real.tv_sec() - mono.tv_sec()) as f64 * 1000.0
        + (real.tv_nsec() - mono.tv_nsec()) as f64 / 1e6;
    let (status, records) = plan_status(config, root);
    let Some(pid) = records.iter().find_map(|r| match &r.event {
        Event::ApplyStarted { pid, .. } => Some(*pid),
        _ => None,
    }) else {
        println!("profiled run ({tag}): no apply-started record");
        return;
    };
    let script = Command::new("perf")
        .args(["script", "--ns", "-F", "pid,tid,time,event,trace", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let threads = timelines(&String::from_utf8_lossy(&script.stdout), pid);
    let engine = threads.get(&pid);
    let labels = [
        "fdatasync",
        "engine waiting for a core",
        "engine running",
        "a step thread waiting for a core",
        "the rest",
    ];
    let mut all: BTreeMap<&str, f64> = BTreeMap::new();
    for g in guests {
        let name = &g.spec.name;
        let reported = status["vm_downtime_ms"][name.as_str()].as_f64().unwrap();
        let split = split(program, &records, name, reported);
        let mut by: BTreeMap<&str, f64> = BTreeMap::new();
        for &(from, to) in &split.gap_spans {
            let mut t = from;
            while t < to {
                let s = (t - offset_ms) / 1000.0;
                let what = match engine.map(|e| (e.syncing(s), e.at(s))) {
                    Some((true, _)) => labels[0],
                    Some((_, Doing::Runnable)) => labels[1],
                    Some((_, Doing::Running)) => labels[2],
                    _ if threads
                        .iter()
                        .any(|(tid, tl)| *tid != pid && tl.at(s) == Doing::Runnable) =>
                    {
                        labels[3]
                    }
                    _ => labels[4],
                };
                *by.entry(what).or_default() += 0.1;
                t += 0.1;
            }
        }
        let cells: Vec<String> = labels
            .iter()
            .map(|l| format!("{l} {:.1}", by.get(l).copied().unwrap_or(0.0)))
            .collect();
        println!(
            "profiled run ({tag}), {name}: downtime {:.0} ms, kup overhead {:.1} ms in {} gaps: {} (ms)",
            split.downtime,
            split.overhead,
            split.gap_spans.len(),
            cells.join(", ")
        );
        for (k, v) in by {
            *all.entry(k).or_default() += v;
        }
    }
    let total: f64 = all.values().sum();
    println!(
        "profiled run ({tag}), all windows: {} of {total:.1} ms of gaps",
        labels
            .iter()
            .map(|l| format!(
                "{l} {:.0} %",
                100.0 * all.get(l).copied().unwrap_or(0.0) / total.max(0.1)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    wait_for_exit(&old);
}
