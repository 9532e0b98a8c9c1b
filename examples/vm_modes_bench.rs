//! Benchmark of a guest's save and restore by migration mode, side by side, for one guest of 2 GiB with 1.5 GiB of
//! random bytes written: QEMU 7.2 `exec:cat`; QEMU 10 `file:` with plain copied RAM; QEMU 10 `mapped-ram` + multifd
//! with 1, 2 and 4 channels (`policy.save_channels`); shared RAM (`share=on` file backend) on QEMU 10
//! (cpr-reboot) and on 7.2; and libvirt's `virsh save --bypass-cache` / `virsh restore --bypass-cache --paused`
//! through a libvirtd of the benchmark's own managing the lab's QEMU 7.2 (as tests/libvirt_vms.rs starts one).
//!
//! Every save, restore and resume is what `kup plan apply` performs: the compiled `vm:NAME:pause`, `vm:NAME:save`,
//! `vm:NAME:restore` and `vm:NAME:resume` steps of a one-guest plan, performed by `RealHost`. Between the save and
//! the restore the old QEMU is killed (SIGKILL, waited for), as the kexec ends it, so the restore's `quit` finds
//! nothing. After every restore the guest's written RAM is read back from the new QEMU and must be byte-identical.
//! The next run saves the restored guest again.
//!
//! The one departure from the compiled steps: for "10 `file:` plain" kup's host would choose mapped-ram on QEMU 10,
//! so the bench performs the pause with its `MigrationSetup` replaced by the QMP commands kup's host sends to a QEMU
//! without mapped-ram (8.2 to 8.x): `kup::action::choose` on the offer QEMU 10 reported, `mapped-ram` taken out,
//! then `setup_commands`, and the record written beside the state file as the host writes it — so the compiled
//! restore sets exactly that on the new QEMU (no mapped-ram, no multifd) and the compiled save uses `file:`.
//!
//! ```sh
//! lab/setup
//! cargo run --release --example vm_modes_bench -- [--runs N] [--quick] [--cold] [--only LABEL,…]
//! ```
//!
//! `--cold`: before each restore the state file (and a shared guest's RAM file) is written back and dropped from
//! the page cache (`fdatasync`, `POSIX_FADV_DONTNEED` on that file only), as after a kexec; without it the restore
//! reads what the save left in the cache.
//!
//! Labels: exec7, file10, mr1, mr2, mr4, cpr10, shared7, libvirt. Needs root and ~8 GiB of free RAM and disk.

#[path = "../tests/support/guests.rs"]
mod guests;
#[path = "../tests/support/libvirt.rs"]
mod libvirt;
#[path = "../tests/support/plans.rs"]
mod plans;

use libvirt::{Libvirtd, domain_xml};

use guests::{Guest, Lab, Qemu, RESERVED_START, Ram, Spec, bytes, median, stat};
use kup::action::{Action, MigrationBefore, MigrationChoice, MigrationMemory};
use kup::host::qmp::QmpClient;
use kup::host::{Host, RealHost};
use plans::step;
use serde_json::json;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The unit the guest's RAM is written and checked in; each chunk has bytes of its own.
const CHUNK: usize = 16 << 20;

struct Config {
    runs: usize,
    mem_mib: u64,
    written_mib: u64,
    only: Option<Vec<String>>,
    /// Evict the state file (and a shared guest's RAM file) from the page cache before each restore.
    cold: bool,
}

#[derive(Clone, Copy)]
enum Mode {
    /// A QMP guest on `qemu` with `ram`; `channels` is `policy.save_channels`; `plain` takes mapped-ram out.
    Qmp {
        qemu: Qemu,
        ram: Ram,
        channels: Option<u32>,
        plain: bool,
    },
    Libvirt,
}

struct Row {
    label: &'static str,
    what: &'static str,
    mode: Mode,
}

fn rows() -> Vec<Row> {
    let qmp = |qemu, ram, channels, plain| Mode::Qmp {
        qemu,
        ram,
        channels,
        plain,
    };
    vec![
        Row {
            label: "exec7",
            what: "7.2 `exec:cat`, copied RAM",
            mode: qmp(Qemu::V7, Ram::Anonymous, None, false),
        },
        Row {
            label: "libvirt",
            what: "7.2 libvirt `virsh save --bypass-cache` / `restore`",
            mode: Mode::Libvirt,
        },
        Row {
            label: "file10",
            what: "10 `file:` plain, copied RAM (mapped-ram off)",
            mode: qmp(Qemu::V10, Ram::Anonymous, None, true),
        },
        Row {
            label: "mr1",
            what: "10 `mapped-ram` + multifd, 1 channel",
            mode: qmp(Qemu::V10, Ram::Anonymous, Some(1), false),
        },
        Row {
            label: "mr2",
            what: "10 `mapped-ram` + multifd, 2 channels",
            mode: qmp(Qemu::V10, Ram::Anonymous, Some(2), false),
        },
        Row {
            label: "mr4",
            what: "10 `mapped-ram` + multifd, 4 channels",
            mode: qmp(Qemu::V10, Ram::Anonymous, Some(4), false),
        },
        Row {
            label: "cpr10",
            what: "10 cpr-reboot, shared RAM (`share=on` file)",
            mode: qmp(Qemu::V10, Ram::SharedFile, None, false),
        },
        Row {
            label: "shared7",
            what: "7.2 `x-ignore-shared`, shared RAM (`share=on` file)",
            mode: qmp(Qemu::V7, Ram::SharedFile, None, false),
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = Config {
        runs: 3,
        mem_mib: 2048,
        written_mib: 1536,
        only: None,
        cold: false,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                i += 1;
                config.runs = args.get(i).and_then(|n| n.parse().ok()).unwrap_or(3).max(1);
            }
            "--quick" => {
                config.mem_mib = 512;
                config.written_mib = 256;
            }
            "--cold" => config.cold = true,
            "--only" => {
                i += 1;
                config.only = args
                    .get(i)
                    .map(|l| l.split(',').map(str::to_owned).collect());
            }
            other => {
                eprintln!(
                    "usage: vm_modes_bench [--runs N] [--quick] [--cold] [--only LABEL,…]  (unknown argument {other})"
                );
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let (lab, work, tmp) = guests::bench_start("vm_modes_bench-", "state and RAM files");
    println!(
        "guest: {} MiB, {} MiB written (random bytes), TCG, -smp 1; {} runs, medians (min–max); the restored RAM \
         is compared byte for byte after every restore; restore from {}\n",
        config.mem_mib,
        config.written_mib,
        config.runs,
        if config.cold {
            "a cold page cache (state file and RAM file evicted: fdatasync + POSIX_FADV_DONTNEED)"
        } else {
            "a warm page cache (the state file as the save left it)"
        }
    );
    println!(
        "| mode | save (pause + migrate + commit) | of which migrate | restore (QEMU start + load) | of which load | resume | state file (apparent / allocated) | RAM checked |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut libvirtd: Option<Libvirtd> = None;
    for row in rows() {
        if config
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|l| l == row.label))
        {
            continue;
        }
        let dir = tmp.path().join(row.label);
        fs::create_dir_all(&dir).unwrap();
        let result = match row.mode {
            Mode::Qmp {
                qemu,
                ram,
                channels,
                plain,
            } => qmp_row(
                &lab, &work, &dir, &config, row.label, qemu, ram, channels, plain,
            ),
            Mode::Libvirt => {
                let d =
                    libvirtd.get_or_insert_with(|| Libvirtd::start(&tmp.path().join("libvirtd")));
                libvirt_row(&lab, &work, &dir, &config, d)
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.what,
            stat(&result.save),
            stat(&result.migrate),
            stat(&result.restore),
            if result.load.is_empty() {
                "—".to_owned()
            } else {
                stat(&result.load)
            },
            stat(&result.resume),
            result.size,
            result.checked
        );
        if !result.notes.is_empty() {
            eprintln!("{}: {}", row.label, result.notes.join("; "));
        }
        // The shared RAM file and the libvirt guest's files: a few GiB per row.
        let _ = fs::remove_dir_all(&dir);
    }
    println!("\nload average at the end {}", guests::loadavg());
}

#[derive(Default)]
struct Measured {
    save: Vec<Duration>,
    migrate: Vec<Duration>,
    restore: Vec<Duration>,
    load: Vec<Duration>,
    resume: Vec<Duration>,
    size: String,
    checked: String,
    notes: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn qmp_row(
    lab: &Lab,
    work: &Path,
    dir: &Path,
    config: &Config,
    label: &str,
    qemu: Qemu,
    ram: Ram,
    channels: Option<u32>,
    plain: bool,
) -> Measured {
    let spec = Spec {
        mem_mib: config.mem_mib,
        reserved_mib: config.written_mib,
        qemu,
        ..Spec::new(label, ram)
    };
    let g = Guest::start(lab, work, &dir.join(label), spec);
    fs::create_dir_all(&g.state).unwrap();
    let seed = seed_of(label);
    let chunks = (config.written_mib << 20) as usize / CHUNK;
    for c in 0..chunks {
        g.write(RESERVED_START + (c * CHUNK) as u64, &chunk(seed, c));
    }
    let memory = if matches!(ram, Ram::Anonymous) {
        "copy"
    } else {
        "shared"
    };
    let mut text = guests::plan(lab, &dir.join("journal"), &[&g], memory);
    if let Some(n) = channels {
        text.push_str(&format!("save_channels = {n}\n"));
    }
    let program = plans::program(&text);
    let name = &g.spec.name;
    let mut m = Measured::default();
    let mut sizes = Vec::new();
    let mut ok = 0;
    for _ in 0..config.runs {
        // Save: pause (migration setup + stop), then migrate and commit.
        let pause_actions = &step(&program, &format!("vm:{name}:pause")).actions;
        let started = Instant::now();
        if plain {
            plain_setup(pause_actions);
            let rest: Vec<Action> = pause_actions
                .iter()
                .filter(|a| !matches!(a, Action::MigrationSetup(_)))
                .cloned()
                .collect();
            perform(&rest);
        } else {
            perform(pause_actions);
        }
        let t = Instant::now();
        let save_actions = &step(&program, &format!("vm:{name}:save")).actions;
        let (commit, migrate) = save_actions.split_last().unwrap();
        perform(migrate);
        m.migrate.push(t.elapsed());
        perform(std::slice::from_ref(commit));
        m.save.push(started.elapsed());
        let state = g.state.join("vmstate");
        let meta = fs::metadata(&state).unwrap();
        sizes.push((meta.len(), meta.blocks() * 512));
        m.notes.push(setup_note(pause_actions));
        // The kexec ends the old QEMU.
        g.kill();
        if config.cold {
            evict(&state);
            if !matches!(ram, Ram::Anonymous) {
                evict(&g.ram_file);
            }
        }
        // Restore: the compiled step (quit finds nothing, the restart argv, the socket, the setup, the load).
        let restore_actions = &step(&program, &format!("vm:{name}:restore")).actions;
        let load_from = restore_actions
            .iter()
            .position(|a| matches!(a, Action::MigrationSetup(_)))
            .unwrap()
            // From the QMP handshake before it: a session lives for one `perform`.
            - 1;
        let started = Instant::now();
        perform(&restore_actions[..load_from]);
        let t = Instant::now();
        perform(&restore_actions[load_from..]);
        m.load.push(t.elapsed());
        m.restore.push(started.elapsed());
        m.resume
            .push(timed(&step(&program, &format!("vm:{name}:resume")).actions));
        // Byte for byte, from the new QEMU's memory.
        for c in 0..chunks {
            let got = g.read(RESERVED_START + (c * CHUNK) as u64, CHUNK);
            assert!(
                got == chunk(seed, c),
                "{label}: chunk {c} of the restored RAM differs"
            );
        }
        ok += 1;
        let _ = fs::remove_file(&state);
    }
    m.notes.dedup();
    m.size = size_text(&sizes);
    m.checked = format!("{ok}/{} identical", config.runs);
    m
}

/// What kup's host sends to a QEMU that offers no mapped-ram (8.2 to 8.x), for the guest of the compiled pause's
/// `MigrationSetup`, with its record written as the host writes it.
fn plain_setup(pause: &[Action]) {
    let Some(Action::MigrationSetup(kup::action::MigrationSetup {
        socket,
        memory,
        channels,
        max_bandwidth,
        state,
        record,
        ..
    })) = pause
        .iter()
        .find(|a| matches!(a, Action::MigrationSetup(_)))
    else {
        panic!("no MigrationSetup in the pause");
    };
    let mut client = QmpClient::connect(socket).unwrap();
    client.execute("qmp_capabilities", &json!({})).unwrap();
    let mut offer = kup::host::migration::offer(&mut client, state).unwrap();
    offer.capabilities.remove("mapped-ram");
    let params = client
        .execute("query-migrate-parameters", &json!({}))
        .unwrap();
    let mut choice =
        kup::action::choose(*memory, &offer, channels.unwrap_or(1), *max_bandwidth).unwrap();
    assert!(
        *memory == MigrationMemory::Copy
            && choice.capabilities == ["events"]
            && choice.uri == "file",
        "{choice:?}"
    );
    choice.before = Some(MigrationBefore {
        capabilities_off: Vec::new(),
        parameters: choice
            .parameters
            .keys()
            .filter_map(|k| params.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
    });
    for (command, args) in kup::action::setup_commands(&choice) {
        client.execute(command, &args).unwrap();
    }
    fs::write(record, serde_json::to_vec_pretty(&choice).unwrap()).unwrap();
}

/// What the save's record says was set, for the log.
fn setup_note(pause: &[Action]) -> String {
    let Some(Action::MigrationSetup(setup)) = pause
        .iter()
        .find(|a| matches!(a, Action::MigrationSetup(_)))
    else {
        return "no setup".into();
    };
    let Ok(bytes) = fs::read(&setup.record) else {
        return "no record".into();
    };
    let Ok(c) = serde_json::from_slice::<MigrationChoice>(&bytes) else {
        return "unreadable record".into();
    };
    let params = c.distinctive_parameters();
    format!(
        "QEMU {} mode {} capabilities [{}] parameters [{}] via {}:",
        c.qemu,
        c.mode.as_deref().unwrap_or("normal"),
        c.capabilities.join(","),
        params.join(","),
        c.uri
    )
}

fn libvirt_row(lab: &Lab, work: &Path, dir: &Path, config: &Config, d: &Libvirtd) -> Measured {
    let domain = "kup-bench";
    let xml = dir.join("guest.xml");
    fs::write(
        &xml,
        domain_xml(lab, work, dir, domain, config.mem_mib, config.written_mib),
    )
    .unwrap();
    d.ok(&["create", &xml.display().to_string()]);
    guests::wait_ready(&dir.join(format!("{domain}.serial")), domain);
    let seed = seed_of("libvirt");
    let chunks = (config.written_mib << 20) as usize / CHUNK;
    {
        let (mem, hva) = (d.mem(domain), d.hva(domain, RESERVED_START));
        for c in 0..chunks {
            mem.write_all_at(&chunk(seed, c), hva + (c * CHUNK) as u64)
                .unwrap();
        }
    }
    let state_dir = dir.join("state");
    fs::create_dir_all(&state_dir).unwrap();
    let s = |t: &str| toml::Value::String(t.to_owned()).to_string();
    let text = format!(
        "kup = 1\nname = \"vm_modes_bench\"\n\n[kernel]\nimage = {}\n\n[kernel.cmdline]\ninherit = false\n\
         append = [\"console=ttyS0\"]\n\n[[vm]]\nname = \"guest\"\nlibvirt = {}\nlibvirt_uri = {}\nstate = {}\n\
         memory_size = \"{}MiB\"\n\n[policy]\njournal = {}\n",
        s(&lab.kernel.display().to_string()),
        s(domain),
        s(&d.uri),
        s(&state_dir.display().to_string()),
        config.mem_mib,
        s(&dir.join("journal").display().to_string())
    );
    let program = plans::program(&text);
    let mut m = Measured::default();
    let mut sizes = Vec::new();
    let mut ok = 0;
    for _ in 0..config.runs {
        let started = Instant::now();
        perform(&step(&program, "vm:guest:pause").actions);
        let save_actions = &step(&program, "vm:guest:save").actions;
        let (commit, migrate) = save_actions.split_last().unwrap();
        let t = Instant::now();
        perform(migrate);
        m.migrate.push(t.elapsed());
        perform(std::slice::from_ref(commit));
        m.save.push(started.elapsed());
        let state = state_dir.join("libvirt.save");
        let meta = fs::metadata(&state).unwrap();
        sizes.push((meta.len(), meta.blocks() * 512));
        if config.cold {
            evict(&state);
        }
        // `virsh save` ended the QEMU; the restore starts one (`virsh restore --paused`), which is all of it.
        let t = Instant::now();
        perform(&step(&program, "vm:guest:restore").actions);
        m.restore.push(t.elapsed());
        m.resume
            .push(timed(&step(&program, "vm:guest:resume").actions));
        let (mem, hva) = (d.mem(domain), d.hva(domain, RESERVED_START));
        let mut buf = vec![0; CHUNK];
        for c in 0..chunks {
            mem.read_exact_at(&mut buf, hva + (c * CHUNK) as u64)
                .unwrap();
            assert!(
                buf == chunk(seed, c),
                "libvirt: chunk {c} of the restored RAM differs"
            );
        }
        ok += 1;
        let _ = fs::remove_file(&state);
    }
    d.ok(&["destroy", domain]);
    m.size = size_text(&sizes);
    m.checked = format!("{ok}/{} identical", config.runs);
    m
}

/// What a kexec does to a file's cached pages: written back, then dropped (the file's only, not the host's).
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    f.sync_data().unwrap();
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise {}", path.display());
}

fn perform(actions: &[Action]) {
    if let Err(f) = RealHost.perform(actions) {
        panic!("`{}` failed: {}", actions[f.index].describe(), f.message);
    }
}

fn timed(actions: &[Action]) -> Duration {
    let started = Instant::now();
    perform(actions);
    started.elapsed()
}

fn seed_of(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Chunk `c`'s bytes: random-looking and different for every chunk, so a page restored to the wrong place fails.
fn chunk(seed: u64, c: usize) -> Vec<u8> {
    guests::pattern(seed ^ (c as u64).wrapping_mul(0x9E37_79B9), CHUNK)
}

fn size_text(sizes: &[(u64, u64)]) -> String {
    let (len, blocks) = median(sizes);
    format!("{} / {}", bytes(len), bytes(blocks))
}
