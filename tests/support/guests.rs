//! Throw-away QEMU 7.2 or 10.x guests from the lab (`lab/setup`; QEMU 10 from `lab/fetch-qemu10`), for the VM tests and the save benchmark: each runs the lab
//! kernel with a busybox initramfs that only sleeps, has its own QMP socket, pidfile and serial log in a directory
//! of its own, and is daemonized by QEMU itself (`-daemonize -pidfile`) so the plan's `restart` argv needs no
//! shell. Guest RAM is read and written from the host: HMP `gpa2hva` gives the host address, `/proc/PID/mem` the
//! bytes, HMP `xp` a second opinion from QEMU itself.
//!
//! The guest kernel is booted with `memmap=SIZE$START`, so the range the tests write is reserved and never touched by
//! the guest: a pattern that changes there changed because of the save and restore, not because Linux used the page.

#![allow(dead_code)] // each test binary uses a different part

// The lab tests' own view of the lab cache, for where it is.
#[path = "lab.rs"]
mod lab;

use kup::host::qmp::QmpClient;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Guest-physical start of the reserved range the tests write.
pub const RESERVED_START: u64 = 128 << 20;
/// The length of each pattern [`Guest::write_patterns`] writes.
pub const PATTERN_RUN: usize = 1 << 20;
/// Marker the initramfs prints once /init runs.
const READY: &str = "KUP-GUEST-READY";
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Which of the lab's QEMUs runs a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qemu {
    /// QEMU 7.2 (`LAB_QEMU`, bookworm): `exec:cat`, no migration modes.
    V7,
    /// QEMU 10.x (`LAB_QEMU10`, bookworm-backports): `file:`, cpr-reboot, mapped-ram, multifd.
    V10,
}

impl Qemu {
    /// The QEMUs the VM tests run every scenario against: both, or the one `KUP_TEST_QEMU=7|10` names.
    pub fn under_test() -> Vec<Qemu> {
        match std::env::var("KUP_TEST_QEMU").as_deref() {
            Ok("7") | Ok("7.2") => vec![Qemu::V7],
            Ok("10") => vec![Qemu::V10],
            Ok("") | Err(_) => vec![Qemu::V7, Qemu::V10],
            Ok(other) => panic!("KUP_TEST_QEMU={other}: use 7 or 10 (unset: both)"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Qemu::V7 => "7.2",
            Qemu::V10 => "10",
        }
    }
}

/// One unpacked QEMU: the binary, the libraries it lacks on this host, its modules and firmware.
struct QemuBuild {
    bin: PathBuf,
    ld_library_path: String,
    module_dir: PathBuf,
    data_dirs: Vec<PathBuf>,
}

impl QemuBuild {
    /// The layout `lab/env.sh` gives `LAB_QEMU` (root `qemu`) and `LAB_QEMU10` (root `qemu10`).
    fn at(root: &Path) -> QemuBuild {
        QemuBuild {
            bin: root.join("usr/bin/qemu-system-x86_64"),
            ld_library_path: format!(
                "{}:{}",
                root.join("usr/lib/x86_64-linux-gnu").display(),
                root.join("lib/x86_64-linux-gnu").display()
            ),
            module_dir: root.join("usr/lib/x86_64-linux-gnu/qemu"),
            data_dirs: vec![
                root.join("usr/share/qemu"),
                root.join("usr/share/seabios"),
                root.join("usr/lib/ipxe/qemu"),
            ],
        }
    }
}

/// The lab cache, as `lab/env.sh` finds it.
pub struct Lab {
    pub repo: PathBuf,
    pub dir: PathBuf,
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    qemu7: QemuBuild,
    qemu10: QemuBuild,
    busybox: PathBuf,
}

impl Lab {
    /// The lab of this repository, or a panic that says how to set it up: a lab that is silently skipped proves
    /// nothing.
    pub fn get() -> Lab {
        let (repo, dir) = lab::repo_and_dir();
        Lab::locate(&repo, &dir).unwrap_or_else(|message| panic!("{message}"))
    }

    pub fn locate(repo: &Path, dir: &Path) -> Result<Lab, String> {
        let version = fs::read_to_string(dir.join("kernel/version")).unwrap_or_default();
        let qemu7 = QemuBuild::at(&dir.join("qemu"));
        let lab = Lab {
            repo: repo.to_path_buf(),
            dir: dir.to_path_buf(),
            qemu: qemu7.bin.clone(),
            kernel: dir.join(format!("kernel/boot/vmlinuz-{}", version.trim())),
            qemu7,
            qemu10: QemuBuild::at(&dir.join("qemu10")),
            busybox: dir.join("busybox/bin/busybox"),
        };
        if !dir.join("ready").is_file()
            || !lab.qemu.is_file()
            || !lab.kernel.is_file()
            || !lab.busybox.is_file()
        {
            return Err(format!(
                "the lab is not set up in {}: run `lab/setup` (as root; it fetches QEMU 7.2, the Debian cloud \
                 kernel and busybox into target/lab/), then run the tests again",
                dir.display()
            ));
        }
        Ok(lab)
    }

    fn build(&self, qemu: Qemu) -> &QemuBuild {
        match qemu {
            Qemu::V7 => &self.qemu7,
            Qemu::V10 => {
                assert!(
                    self.qemu10.bin.is_file(),
                    "QEMU 10 is not in {}: run `lab/fetch-qemu10` (it unpacks QEMU 10 from bookworm-backports \
                     into target/lab/qemu10), or KUP_TEST_QEMU=7 to test QEMU 7.2 alone",
                    self.qemu10.bin.display()
                );
                &self.qemu10
            }
        }
    }

    /// The argv prefix that runs the lab's QEMU: `env` sets its library path, so the argv works without a shell.
    pub fn qemu_argv(&self, qemu: Qemu) -> Vec<String> {
        let build = self.build(qemu);
        let mut argv = vec![
            "env".to_owned(),
            format!("LD_LIBRARY_PATH={}", build.ld_library_path),
            format!("QEMU_MODULE_DIR={}", build.module_dir.display()),
            build.bin.display().to_string(),
        ];
        for d in &build.data_dirs {
            argv.push("-L".into());
            argv.push(d.display().to_string());
        }
        argv
    }

    /// An initramfs whose /init mounts /proc, prints the ready marker and sleeps; built once under `work`.
    pub fn initramfs(&self, work: &Path) -> PathBuf {
        let out = work.join("sleep-initramfs.gz");
        if out.is_file() {
            return out;
        }
        fs::create_dir_all(work).unwrap();
        // Threads of one test process build it concurrently too: the pid alone does not make names unique.
        static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = format!(
            "{}.{}",
            std::process::id(),
            BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let init = work.join(format!("init.{unique}"));
        fs::write(
            &init,
            format!(
                "#!/bin/sh\nmount -t proc proc /proc\necho {READY}\nwhile :; do sleep 1000; done\n"
            ),
        )
        .unwrap();
        let tmp = work.join(format!("sleep-initramfs.{unique}.gz"));
        let status = Command::new(self.repo.join("lab/mkinitramfs"))
            .env("KUP_LAB_DIR", &self.dir)
            .arg("-o")
            .arg(&tmp)
            .arg("-i")
            .arg(&init)
            .status()
            .expect("lab/mkinitramfs");
        assert!(status.success(), "lab/mkinitramfs failed");
        // Concurrent tests may race to build it: the rename makes whichever wins whole.
        fs::rename(&tmp, &out).unwrap();
        let _ = fs::remove_file(&init);
        out
    }
}

/// Where a guest's RAM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ram {
    /// `memory-backend-file,share=on` on a file in the guest's directory (kup's `memory = "shared"`).
    SharedFile,
    /// `memory-backend-file,share=on` on a file under /dev/shm (tmpfs): shared, but lost at a kexec.
    SharedTmpfs,
    /// `memory-backend-file,share=off`: a file, but private to QEMU.
    PrivateFile,
    /// Plain `-m`: anonymous memory.
    Anonymous,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub mem_mib: u64,
    /// Reserved for the tests' patterns, from [`RESERVED_START`].
    pub reserved_mib: u64,
    pub ram: Ram,
    /// Boot the lab kernel; without it QEMU starts paused (`-S`) with nothing to run, enough for QMP checks.
    pub boot: bool,
    /// Which QEMU runs it (the restart too).
    pub qemu: Qemu,
    /// More QEMU arguments (a device, an object).
    pub extra: Vec<String>,
}

impl Spec {
    pub fn new(name: &str, ram: Ram) -> Self {
        Spec {
            name: name.to_owned(),
            mem_mib: 256,
            reserved_mib: 16,
            ram,
            boot: true,
            qemu: Qemu::V7,
            extra: Vec::new(),
        }
    }
}

/// A running (or restartable) guest; killed when dropped.
pub struct Guest {
    pub spec: Spec,
    pub dir: PathBuf,
    pub qmp: PathBuf,
    pub pidfile: PathBuf,
    pub state: PathBuf,
    pub serial: PathBuf,
    pub ram_file: PathBuf,
    base_argv: Vec<String>,
}

impl Guest {
    /// Starts a guest in `dir` (created) and waits until its /init runs.
    pub fn start(lab: &Lab, work: &Path, dir: &Path, spec: Spec) -> Guest {
        fs::create_dir_all(dir).unwrap();
        let ram_file = match spec.ram {
            Ram::SharedTmpfs => PathBuf::from(format!(
                "/dev/shm/kup-test-{}-{}",
                spec.name,
                std::process::id()
            )),
            _ => dir.join("ram"),
        };
        let mut guest = Guest {
            qmp: dir.join("qmp.sock"),
            pidfile: dir.join("qemu.pid"),
            state: dir.join("state"),
            serial: dir.join("serial.log"),
            dir: dir.to_path_buf(),
            ram_file,
            spec,
            base_argv: Vec::new(),
        };
        guest.base_argv = guest.make_argv(lab, work, guest.spec.qemu);
        let status = Command::new(&guest.base_argv[0])
            .args(&guest.base_argv[1..])
            .status()
            .expect("start QEMU");
        assert!(
            status.success(),
            "QEMU did not start: {:?}",
            guest.base_argv
        );
        if guest.spec.boot {
            guest.wait_ready();
        }
        guest
    }

    fn make_argv(&self, lab: &Lab, work: &Path, qemu: Qemu) -> Vec<String> {
        let s = &self.spec;
        let mut argv = lab.qemu_argv(qemu);
        let size = format!("{}M", s.mem_mib);
        argv.extend(
            [
                "-accel",
                "tcg",
                "-smp",
                "1",
                "-m",
                &size,
                "-display",
                "none",
                "-nic",
                "none",
                "-daemonize",
            ]
            .map(String::from),
        );
        argv.push("-pidfile".into());
        argv.push(self.pidfile.display().to_string());
        argv.push("-qmp".into());
        argv.push(format!("unix:{},server=on,wait=off", self.qmp.display()));
        // Appended, so the restarted QEMU's console follows the first one's.
        argv.push("-chardev".into());
        argv.push(format!(
            "file,id=serial0,path={},append=on",
            self.serial.display()
        ));
        argv.push("-serial".into());
        argv.push("chardev:serial0".into());
        let backend = |share: &str| {
            format!(
                "memory-backend-file,id=mem,size={size},mem-path={},share={share}",
                self.ram_file.display()
            )
        };
        match s.ram {
            Ram::SharedFile | Ram::SharedTmpfs => {
                argv.extend(["-object".into(), backend("on")]);
                argv.extend(["-machine".into(), "memory-backend=mem".into()]);
            }
            Ram::PrivateFile => {
                argv.extend(["-object".into(), backend("off")]);
                argv.extend(["-machine".into(), "memory-backend=mem".into()]);
            }
            Ram::Anonymous => {}
        }
        argv.extend(s.extra.iter().cloned());
        if s.boot {
            argv.push("-kernel".into());
            argv.push(lab.kernel.display().to_string());
            argv.push("-initrd".into());
            argv.push(lab.initramfs(work).display().to_string());
            argv.push("-append".into());
            argv.push(format!(
                "console=ttyS0 panic=-1 memmap={}M${}M",
                s.reserved_mib,
                RESERVED_START >> 20
            ));
        } else {
            argv.push("-S".into());
        }
        argv
    }

    /// The plan's `restart`: the same QEMU, waiting for its state (`-incoming defer`).
    /// [`Guest::restart_argv`] with another of the lab's QEMUs: the same guest, as after a QEMU upgrade (or
    /// downgrade) across the kexec.
    pub fn restart_argv_on(&self, lab: &Lab, work: &Path, qemu: Qemu) -> Vec<String> {
        let mut argv = self.make_argv(lab, work, qemu);
        argv.push("-incoming".into());
        argv.push("defer".into());
        argv
    }

    /// The argv that started this guest: a plan's `restart` for a guest it reboots (`handover = "restart"`).
    pub fn start_argv(&self) -> Vec<String> {
        self.base_argv.clone()
    }

    pub fn restart_argv(&self) -> Vec<String> {
        let mut argv = self.base_argv.clone();
        argv.push("-incoming".into());
        argv.push("defer".into());
        argv
    }

    fn wait_ready(&self) {
        wait_ready(&self.serial, &self.spec.name);
    }

    /// The PID in the pidfile (QEMU's own after -daemonize), if any.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn client(&self) -> QmpClient {
        let mut c = QmpClient::connect(&self.qmp).expect("QMP connect");
        c.execute("qmp_capabilities", &json!({})).unwrap();
        c
    }

    pub fn hmp(&self, line: &str) -> String {
        let reply = self
            .client()
            .execute("human-monitor-command", &json!({ "command-line": line }))
            .unwrap();
        reply.as_str().unwrap_or_default().to_owned()
    }

    pub fn status(&self) -> String {
        let reply = self.client().execute("query-status", &json!({})).unwrap();
        reply["status"].as_str().unwrap_or_default().to_owned()
    }

    /// The host address of guest-physical `gpa` in the QEMU process (HMP `gpa2hva`).
    pub fn hva(&self, gpa: u64) -> u64 {
        let text = self.hmp(&format!("gpa2hva {gpa:#x}"));
        let hex = text
            .rsplit(" is ")
            .next()
            .map(str::trim)
            .and_then(|h| h.strip_prefix("0x"))
            .unwrap_or_else(|| panic!("unexpected gpa2hva reply {text:?}"));
        u64::from_str_radix(hex, 16).unwrap()
    }

    fn mem(&self) -> fs::File {
        let pid = self.pid().expect("QEMU pid");
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .expect("open /proc/PID/mem (needs root or ptrace rights)")
    }

    /// Writes `bytes` into guest RAM at `gpa`, through QEMU's memory.
    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        let hva = self.hva(gpa);
        self.mem().write_all_at(bytes, hva).unwrap();
    }

    /// Dirties `mib` MiB of the reserved range (16 MiB writes of one pattern per guest name): the "written" RAM of
    /// the benchmarks' guests.
    pub fn fill_reserved(&self, name: &str, mib: u64) {
        let chunk = 16 << 20;
        let bytes = pattern(u64::from(name.len() as u32) ^ 0x5eed, chunk);
        for i in 0..(mib << 20) / chunk as u64 {
            self.write(RESERVED_START + i * chunk as u64, &bytes);
        }
    }

    /// Reads guest RAM at `gpa`, through QEMU's memory.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let hva = self.hva(gpa);
        let mut buf = vec![0; len];
        self.mem().read_exact_at(&mut buf, hva).unwrap();
        buf
    }

    /// Reads `len` (≤ 256) bytes of guest RAM with HMP `xp`, as QEMU itself sees them.
    pub fn xp(&self, gpa: u64, len: usize) -> Vec<u8> {
        let text = self.hmp(&format!("xp /{len}xb {gpa:#x}"));
        text.lines()
            .filter_map(|l| l.split_once(':').map(|(_, bytes)| bytes))
            .flat_map(|bytes| bytes.split_whitespace())
            .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
            .collect()
    }

    /// Writes two 1 MiB patterns from `seed` into the reserved range (at its start and its end) and reads the first
    /// back, so a failure after this is the save's and not the write's.
    pub fn write_patterns(&self, seed: u64) {
        let last = RESERVED_START + (self.spec.reserved_mib << 20) - PATTERN_RUN as u64;
        self.write(RESERVED_START, &pattern(seed, PATTERN_RUN));
        self.write(last, &pattern(seed + 1, PATTERN_RUN));
        assert_eq!(
            self.read(RESERVED_START, PATTERN_RUN),
            pattern(seed, PATTERN_RUN)
        );
    }

    /// Checks the patterns of [`Guest::write_patterns`]: QEMU's own view of guest memory (HMP `xp`), then every
    /// byte through this process's memory.
    pub fn check_patterns(&self, seed: u64) {
        let last = RESERVED_START + (self.spec.reserved_mib << 20) - PATTERN_RUN as u64;
        for (gpa, seed) in [(RESERVED_START, seed), (last, seed + 1)] {
            let expected = pattern(seed, PATTERN_RUN);
            assert_eq!(
                self.xp(gpa, 64),
                expected[..64],
                "{}: HMP xp at {gpa:#x} differs",
                self.spec.name
            );
            assert!(
                self.read(gpa, PATTERN_RUN) == expected,
                "{}: guest RAM at {gpa:#x} differs",
                self.spec.name
            );
        }
    }

    /// SIGKILL, as a kexec ends the old QEMU, and wait until its files are closed (a new QEMU needs its pidfile).
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            kill_and_wait(pid);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
        if self.spec.ram == Ram::SharedTmpfs {
            let _ = fs::remove_file(&self.ram_file);
        }
    }
}

/// Kills `pid` and waits until its files are closed: its leader turns zombie before the other threads are done, and
/// until the last one ends the pidfile stays locked and the QMP socket accepts connections.
/// Waits until guest `name`'s console, `serial`, says its /init runs; a panic with the console after
/// [`BOOT_TIMEOUT`].
pub fn wait_ready(serial: &Path, name: &str) {
    let started = Instant::now();
    while !fs::read_to_string(serial).is_ok_and(|t| t.contains(READY)) {
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "guest {name} did not reach /init within {BOOT_TIMEOUT:?}; console:\n{}",
            fs::read_to_string(serial).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn kill_and_wait(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let open = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        if open == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("QEMU {pid} still holds files 30 s after SIGKILL");
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// The benchmarks' guests and how often they are measured: what `--runs N` and `--quick` set.
pub struct BenchSize {
    pub runs: usize,
    pub mem_mib: u64,
    /// Random bytes written into each guest's reserved RAM before it is saved.
    pub written_mib: u64,
}

impl Default for BenchSize {
    /// Five runs on 2 GiB guests with 1.5 GiB written.
    fn default() -> Self {
        BenchSize {
            runs: 5,
            mem_mib: 2048,
            written_mib: 1536,
        }
    }
}

impl BenchSize {
    /// Takes `args[*i]` if it is `--runs N` (leaving `i` on N) or `--quick`; false for any other argument.
    pub fn take(&mut self, args: &[String], i: &mut usize) -> bool {
        match args[*i].as_str() {
            "--runs" => {
                *i += 1;
                self.runs = args
                    .get(*i)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(5)
                    .max(1);
            }
            "--quick" => {
                self.mem_mib = 512;
                self.written_mib = 256;
                self.runs = self.runs.min(2);
            }
            _ => return false,
        }
        true
    }

    /// A booted guest `name` in `dir/name`, with `written_mib` of random bytes in its reserved RAM.
    pub fn start(&self, lab: &Lab, work: &Path, dir: &Path, name: &str, ram: Ram) -> Guest {
        let spec = Spec {
            mem_mib: self.mem_mib,
            reserved_mib: self.written_mib,
            ..Spec::new(name, ram)
        };
        let g = Guest::start(lab, work, &dir.join(name), spec);
        g.fill_reserved(name, self.written_mib);
        g
    }
}

/// Where a benchmark works: `target/tmp` (under `CARGO_TARGET_DIR` when that is set), on disk as kup wants its
/// state files, and a fresh directory in it whose name starts with `prefix`.
pub fn bench_dirs(lab: &Lab, prefix: &str) -> (PathBuf, tempfile::TempDir) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| lab.repo.join("target"));
    let work = target.join("tmp");
    fs::create_dir_all(&work).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&work)
        .unwrap();
    (work, tmp)
}

/// The middle one of a benchmark's runs (of two, the larger).
pub fn median<T: Ord + Copy>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// A benchmark's times as its tables print them: `median (min–max)`, in ms below a second.
pub fn stat(values: &[Duration]) -> String {
    let show = |d: Duration| {
        if d < Duration::from_secs(1) {
            format!("{} ms", d.as_millis())
        } else {
            format!("{:.2} s", d.as_secs_f64())
        }
    };
    let min = values.iter().min().copied().unwrap_or_default();
    let max = values.iter().max().copied().unwrap_or_default();
    format!("{} ({}–{})", show(median(values)), show(min), show(max))
}

/// A size as the benchmarks' tables print it: GiB from 1 GiB on, MiB below.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// What the benchmarks report about the machine they ran on.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: u64,
    /// The running kernel's release.
    pub kernel: String,
    /// File system type and source holding `dir`.
    pub fs: String,
    /// The QEMU package line from the lab's versions.txt.
    pub qemu: String,
}

impl Machine {
    /// `CPU, N vCPUs, N GiB RAM, host kernel RELEASE`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} vCPUs, {} GiB RAM, host kernel {}",
            self.cpu, self.cores, self.mem_gib, self.kernel
        )
    }
}

/// A benchmark's lab, its scratch directories (`bench_dirs`), and its first line: the machine, the file system
/// holding `files`, the lab's QEMU and the load average.
pub fn bench_start(prefix: &str, files: &str) -> (Lab, PathBuf, tempfile::TempDir) {
    let lab = Lab::get();
    let (work, tmp) = bench_dirs(&lab, prefix);
    let m = machine(&lab, tmp.path());
    println!(
        "machine: {}; {files} on {}; {}; load average at start {}",
        m.summary(),
        m.fs,
        m.qemu,
        loadavg()
    );
    (lab, work, tmp)
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine(lab: &Lab, dir: &Path) -> Machine {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        >> 20;
    let file_system = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let qemu = fs::read_to_string(lab.dir.join("versions.txt"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("qemu-system-x86"))
        .unwrap_or("qemu-system-x86 (version unknown)")
        .trim()
        .to_owned();
    Machine {
        cpu,
        cores,
        mem_gib,
        kernel: kup::host::machine::kernel_release().unwrap_or_default(),
        fs: file_system,
        qemu,
    }
}

/// Deterministic bytes that differ per seed (xorshift64*), so a page from the wrong place cannot pass.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A plan naming `guests` with `memory` ("shared" or "copy"), in TOML.
pub fn plan(lab: &Lab, journal: &Path, guests: &[&Guest], memory: &str) -> String {
    let with: Vec<(&Guest, &str)> = guests.iter().map(|g| (*g, memory)).collect();
    plan_with(lab, journal, &with)
}

/// A plan naming each guest with its own `memory` mode, in TOML; `"restart"` instead of a mode makes the guest one
/// the plan reboots (`handover = "restart"`, 1 s to power off, started again by the argv that started it).
pub fn plan_with(lab: &Lab, journal: &Path, guests: &[(&Guest, &str)]) -> String {
    let s = |t: &str| toml::Value::String(t.to_owned()).to_string();
    let p = |t: &Path| s(&t.display().to_string());
    let mut text = format!(
        "kup = 1\nname = \"qemu_vms test\"\n\n[kernel]\nimage = {}\n\n[kernel.cmdline]\ninherit = false\nappend = [\"console=ttyS0\"]\n\n",
        p(&lab.kernel)
    );
    for (g, memory) in guests {
        let (argv, handover) = match *memory {
            "restart" => (
                g.start_argv(),
                "handover = \"restart\"\nshutdown_timeout = \"1s\"".to_owned(),
            ),
            mode => (g.restart_argv(), format!("memory = {}", s(mode))),
        };
        let restart: Vec<String> = argv.iter().map(|a| s(a)).collect();
        text.push_str(&format!(
            "[[vm]]\nname = {}\nqmp = {}\nstate = {}\n{handover}\nmemory_size = \"{}MiB\"\nrestart = [{}]\n\n",
            s(&g.spec.name),
            p(&g.qmp),
            p(&g.state),
            g.spec.mem_mib,
            restart.join(", ")
        ));
    }
    text.push_str(&format!(
        "[policy]\njournal = {}\nparallelism = 4\n",
        p(journal)
    ));
    text
}

/// `query-status` over a fresh connection, or the error.
pub fn query_status(socket: &Path) -> Result<Value, String> {
    let mut c = QmpClient::connect(socket).map_err(|e| e.to_string())?;
    c.execute("qmp_capabilities", &json!({}))
        .map_err(|e| e.to_string())?;
    c.execute("query-status", &json!({}))
        .map_err(|e| e.to_string())
}
