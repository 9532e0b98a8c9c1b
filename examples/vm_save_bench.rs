//! Benchmark of kup's VM save with real QEMU 7.2 guests from the lab: save time and state-file size with
//! `memory = "shared"` vs `"copy"` for a 2 GiB guest with 1.5 GiB written, and four such guests saved in parallel
//! vs one after another. The save is exactly what `kup plan apply` performs (the compiled `vm:NAME:pause` and
//! `vm:NAME:save` steps on the real host), timed around the host calls; between runs each guest is resumed with
//! the steps' own rollback, so every run saves the same running guest again.
//!
//! ```sh
//! lab/setup
//! cargo run --example vm_save_bench -- [--runs N] [--quick]   # kup's own share of the time is QMP calls: no need for --release
//! ```
//!
//! Needs root (guest RAM is written through /proc/PID/mem) and about 12 GiB of free RAM and disk.

#[path = "../tests/support/guests.rs"]
mod guests;
#[path = "../tests/support/plans.rs"]
mod plans;

use guests::{BenchSize, Guest, Lab, Ram, stat};
use kup::action::Action;
use kup::graph::Program;
use kup::host::{Host, RealHost};
use plans::step;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = BenchSize::default();
    let mut i = 0;
    while i < args.len() {
        if !config.take(&args, &mut i) {
            eprintln!(
                "usage: vm_save_bench [--runs N] [--quick]  (unknown argument {})",
                args[i]
            );
            std::process::exit(2);
        }
        i += 1;
    }
    let lab = Lab::get();
    let (work, tmp) = guests::bench_dirs(&lab, "vm_save_bench-");
    machine(&lab, tmp.path());
    println!(
        "guest: {} MiB, {} MiB written (random bytes), {} runs, medians (min–max)\n",
        config.mem_mib, config.written_mib, config.runs
    );

    println!(
        "| RAM | pause | migrate (until `completed`) | commit (fsync + rename) | save total | state file |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (memory, ram) in [("shared", Ram::SharedFile), ("copy", Ram::Anonymous)] {
        let g = start(
            &lab,
            &work,
            tmp.path(),
            &config,
            &format!("one-{memory}"),
            ram,
        );
        let program = program(&lab, tmp.path(), &[&g], memory);
        let mut pause = Vec::new();
        let mut migrate = Vec::new();
        let mut commit = Vec::new();
        let mut total = Vec::new();
        let mut size = Vec::new();
        for _ in 0..config.runs {
            let t = save(&program, &g);
            pause.push(t.pause);
            migrate.push(t.migrate);
            commit.push(t.commit);
            total.push(t.pause + t.migrate + t.commit);
            size.push(std::fs::metadata(g.state.join("vmstate")).unwrap().len());
            reset(&program, &[&g]);
        }
        println!(
            "| `{memory}` | {} | {} | {} | {} | {} |",
            stat(&pause),
            stat(&migrate),
            stat(&commit),
            stat(&total),
            guests::bytes(guests::median(&size))
        );
    }

    println!("\n4 guests, wall time from the first pause to the last state file committed:\n");
    println!(
        "| RAM | one after another | in parallel (4 threads, as policy.parallelism = 4) | state files |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (memory, ram) in [("shared", Ram::SharedFile), ("copy", Ram::Anonymous)] {
        let all: Vec<Guest> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=4)
                .map(|n| {
                    let (lab, work, dir, config) = (&lab, &work, tmp.path(), &config);
                    s.spawn(move || {
                        start(lab, work, dir, config, &format!("four-{memory}-{n}"), ram)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let refs: Vec<&Guest> = all.iter().collect();
        let program = program(&lab, tmp.path(), &refs, memory);
        let mut serial = Vec::new();
        let mut parallel = Vec::new();
        let mut size = Vec::new();
        for run in 0..config.runs {
            // Alternate which comes first so neither always meets a cold or a full page cache.
            for order in if run % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                let started = Instant::now();
                if order {
                    std::thread::scope(|s| {
                        for g in &refs {
                            let program = &program;
                            s.spawn(move || save(program, g));
                        }
                    });
                    parallel.push(started.elapsed());
                } else {
                    for g in &refs {
                        save(&program, g);
                    }
                    serial.push(started.elapsed());
                }
                size.push(
                    refs.iter()
                        .map(|g| std::fs::metadata(g.state.join("vmstate")).unwrap().len())
                        .sum(),
                );
                reset(&program, &refs);
            }
        }
        println!(
            "| `{memory}` | {} | {} | {} total |",
            stat(&serial),
            stat(&parallel),
            guests::bytes(guests::median(&size))
        );
    }
}

/// A booted guest with `written_mib` of random bytes in its reserved RAM, and its state directory.
fn start(lab: &Lab, work: &Path, dir: &Path, config: &BenchSize, name: &str, ram: Ram) -> Guest {
    let g = config.start(lab, work, dir, name, ram);
    // What the plan's preflight does.
    std::fs::create_dir_all(&g.state).unwrap();
    g
}

fn program(lab: &Lab, dir: &Path, guests: &[&Guest], memory: &str) -> Program {
    plans::program(&guests::plan(lab, &dir.join("journal"), guests, memory))
}

struct Times {
    pause: Duration,
    migrate: Duration,
    commit: Duration,
}

fn timed(actions: &[Action]) -> Duration {
    let started = Instant::now();
    if let Err(f) = RealHost.perform(actions) {
        panic!("`{}` failed: {}", actions[f.index].describe(), f.message);
    }
    started.elapsed()
}

/// Pause and save one guest as apply does; the commit (the last action of the save step) is timed on its own.
fn save(program: &Program, g: &Guest) -> Times {
    let name = &g.spec.name;
    let pause = timed(&step(program, &format!("vm:{name}:pause")).actions);
    let actions = &step(program, &format!("vm:{name}:save")).actions;
    let (commit, migrate) = actions.split_last().unwrap();
    let migrate = timed(migrate);
    let commit = timed(std::slice::from_ref(commit));
    Times {
        pause,
        migrate,
        commit,
    }
}

/// Resumes the guests with the save's and pause's rollbacks and deletes their state files.
fn reset(program: &Program, guests: &[&Guest]) {
    for g in guests {
        let name = &g.spec.name;
        timed(&step(program, &format!("vm:{name}:save")).rollback);
        timed(&step(program, &format!("vm:{name}:pause")).rollback);
        let _ = std::fs::remove_file(g.state.join("vmstate"));
    }
}

fn machine(lab: &Lab, dir: &Path) {
    let m = guests::machine(lab, dir);
    println!(
        "machine: {}; state and RAM files on {}; {} (TCG, -smp 1)",
        m.summary(),
        m.fs,
        m.qemu,
    );
}
