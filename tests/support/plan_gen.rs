//! The plan generator behind `examples/gen_plans.rs` (the validate benchmark) and the tests that check many
//! generated plans at once: varied plans, about one in ten with one deliberate error, deterministic for a seed.

#![allow(dead_code)] // each test binary uses a different part

use std::fmt::Write as _;
use std::path::Path;

/// xorshift64*: deterministic, no dependency, good enough to vary test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Each of `words`, kept with a chance of `percent` in 100 (one draw per word, in order).
    fn some_of(&mut self, words: &[&str], percent: u64) -> Vec<String> {
        words
            .iter()
            .filter(|_| self.chance(percent))
            .map(|s| s.to_string())
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap())
            .collect()
    }
}

/// Deliberate errors: (name, the diagnostic code the plan must then report).
pub const FAULTS: &[(&str, &str)] = &[
    ("relative-image", "kup::plan::relative-path"),
    ("volatile-state", "kup::plan::volatile-path"),
    ("duplicate-vm", "kup::plan::duplicate-name"),
    ("typo-key", "kup::plan::unknown-key"),
    ("quoted-parallelism", "kup::plan::wrong-type"),
    ("short-sha256", "kup::plan::sha256"),
    ("bad-timeout", "kup::plan::duration"),
    ("undeclared-device", "kup::plan::undeclared-device"),
    ("two-drivers", "kup::plan::vm-driver"),
    ("qmp-no-restart", "kup::plan::driver-key"),
    ("bad-pci", "kup::plan::pci-address"),
    ("memory-share", "kup::plan::unknown-variant"),
    ("unclosed-table", "kup::plan::syntax"),
    ("no-image", "kup::plan::missing-key"),
    ("colon-name", "kup::plan::invalid-name"),
    ("zero-parallelism", "kup::plan::parallelism"),
    ("unit-no-suffix", "kup::plan::systemd-unit"),
    ("app-no-kind", "kup::plan::app-kind"),
    ("decimal-size", "kup::plan::size"),
    ("value-and-append", "kup::plan::cmdline-conflict"),
    ("format-2", "kup::plan::version"),
    ("open-glob", "kup::plan::host-glob"),
    ("shared-device", "kup::plan::device-conflict"),
    ("isolate-rescue", "kup::plan::isolate-target"),
    ("empty-run", "kup::plan::empty-argv"),
];

fn quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(", "))
}

fn plan(rng: &mut Rng, index: usize, fault: Option<&str>) -> String {
    let is = |name: &str| fault == Some(name);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "#:schema ../schemas/kup-plan.schema.json");
    let _ = writeln!(w, "kup = {}", if is("format-2") { 2 } else { 1 });
    let _ = writeln!(w, "name = \"generated plan {index}\"");
    let mut hosts: Vec<String> = (0..rng.below(3))
        .map(|_| {
            rng.pick(&[
                "hv-prod-*",
                "hv-lab-?",
                "kvm-edge-[0-9]*",
                "hv-[!x]*",
                "Node-7",
            ])
            .to_string()
        })
        .collect();
    if is("open-glob") {
        hosts.push("hv-[0-9".into());
    }
    if !hosts.is_empty() {
        let _ = writeln!(w, "hosts = {}", quoted(&hosts));
    }

    // [kernel]
    let minor = 1 + rng.below(12);
    let patch = rng.below(140);
    let release = format!("6.{minor}.{patch}-lts");
    let _ = writeln!(
        w,
        "\n{}",
        if is("unclosed-table") {
            "[kernel"
        } else {
            "[kernel]"
        }
    );
    if is("relative-image") {
        let _ = writeln!(w, "image = \"boot/vmlinuz-{release}\"");
    } else if !is("no-image") {
        let _ = writeln!(w, "image = \"/boot/vmlinuz-{release}\"");
    }
    if rng.chance(70) {
        let _ = writeln!(w, "initrd = \"/boot/initramfs-{release}.img\"");
    }
    if rng.chance(60) {
        let _ = writeln!(w, "version = \"{release}\"");
    }
    let sha = if is("short-sha256") {
        rng.hex(60)
    } else if rng.chance(10) {
        rng.hex(64).to_ascii_uppercase()
    } else {
        rng.hex(64)
    };
    let _ = writeln!(w, "sha256 = \"{sha}\"");
    if rng.chance(30) {
        let _ = writeln!(w, "loader = \"{}\"", rng.pick(&["file", "legacy"]));
    }
    if rng.chance(50) || is("value-and-append") {
        let _ = writeln!(w, "\n[kernel.cmdline]");
        if rng.chance(10) || is("value-and-append") {
            let _ = writeln!(w, "value = \"root=/dev/nvme0n1p2 ro console=ttyS0,115200\"");
            if is("value-and-append") {
                let _ = writeln!(w, "append = [\"nosmt\"]");
            }
        } else {
            let inherit = rng.chance(85);
            if rng.chance(50) || !inherit {
                let _ = writeln!(w, "inherit = {inherit}");
            }
            let remove = rng.some_of(&["quiet", "splash", "rhgb"], 40);
            if !remove.is_empty() {
                let _ = writeln!(w, "remove = {}", quoted(&remove));
            }
            let mut set: Vec<String> = [
                ("cpuhp.parallel", "1"),
                ("intel_iommu", "on"),
                ("iommu", "pt"),
                ("mitigations", "auto"),
            ]
            .iter()
            .filter(|_| rng.chance(40))
            .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
            .collect();
            if set.is_empty() && !inherit {
                set.push("\"root\" = \"/dev/nvme0n1p2\"".into());
            }
            if !set.is_empty() {
                let _ = writeln!(w, "set = {{ {} }}", set.join(", "));
            }
            let append = rng.some_of(&["nosmt", "nowatchdog", "panic=10"], 30);
            if !append.is_empty() {
                let _ = writeln!(w, "append = {}", quoted(&append));
            }
        }
    }

    // [[pci]]: distinct addresses, some owned by VMs below.
    let mut pci: Vec<String> = (0..rng.below(5))
        .map(|k| {
            format!(
                "0000:{:02x}:{:02x}.{}",
                0x10 + k,
                rng.below(0x20),
                rng.below(8)
            )
        })
        .collect();
    let mut vm_count = rng.below(17) as usize;
    let needs_vm = [
        "volatile-state",
        "undeclared-device",
        "two-drivers",
        "qmp-no-restart",
        "memory-share",
        "colon-name",
        "decimal-size",
    ];
    if fault.is_some_and(|f| needs_vm.contains(&f)) {
        vm_count = vm_count.max(1);
    }
    if is("duplicate-vm") || is("shared-device") {
        vm_count = vm_count.max(2);
    }
    if is("shared-device") && pci.is_empty() {
        pci.push("0000:3b:00.0".into());
    }
    if is("bad-pci") {
        pci.push("3b:00.0".into());
    }
    for address in &pci {
        let _ = writeln!(w, "\n[[pci]]\naddress = \"{address}\"");
        if rng.chance(40) {
            let _ = writeln!(
                w,
                "driver = \"{}\"",
                rng.pick(&["vfio-pci", "nvme", "ixgbe"])
            );
        }
    }
    // Valid addresses only: a malformed one is reported once, where it is declared.
    let usable: Vec<&String> = pci.iter().filter(|a| a.starts_with("0000:")).collect();
    let mut owner: Vec<Option<usize>> = usable
        .iter()
        .map(|_| (vm_count > 0 && rng.chance(70)).then(|| rng.below(vm_count as u64) as usize))
        .collect();
    if is("shared-device") {
        owner[0] = Some(0);
    }

    // [[vm]]
    let mut vm_names: Vec<String> = Vec::new();
    for v in 0..vm_count {
        let name = if is("duplicate-vm") && v == 1 {
            vm_names[0].clone()
        } else if is("colon-name") && v == 0 {
            "db:0".to_string()
        } else {
            format!("{}-{v}", rng.pick(&["db", "web", "cache", "build", "mon"]))
        };
        let _ = writeln!(w, "\n[[vm]]\nname = \"{name}\"");
        let fault_here = v == 0;
        let qmp_fault = is("qmp-no-restart") || is("two-drivers") || is("memory-share");
        let qmp = (fault_here && qmp_fault) || rng.chance(70);
        if qmp {
            let _ = writeln!(w, "qmp = \"/run/qemu/{name}.qmp\"");
            if fault_here && is("two-drivers") {
                let _ = writeln!(w, "libvirt = \"{name}\"");
            }
            if !(fault_here && is("qmp-no-restart")) {
                let unit = format!("qemu@{name}.service");
                let _ = writeln!(
                    w,
                    "restart = {}",
                    quoted(&["systemctl".into(), "start".into(), unit])
                );
            }
            if fault_here && is("memory-share") {
                let _ = writeln!(w, "memory = \"share\"");
            } else if rng.chance(70) {
                let _ = writeln!(w, "memory = \"{}\"", rng.pick(&["shared", "copy"]));
            }
        } else {
            let _ = writeln!(w, "libvirt = \"{name}\"");
            if rng.chance(30) {
                let _ = writeln!(w, "memory = \"copy\"");
            }
        }
        if fault_here && is("volatile-state") {
            let _ = writeln!(w, "state = \"/run/kup/state/{name}\"");
        } else if rng.chance(60) {
            let root = rng.pick(&["/var/lib/kup/state", "/srv/kup", "/var/lib/vm-state"]);
            let _ = writeln!(w, "state = \"{root}/{name}\"");
        }
        if fault_here && is("decimal-size") {
            let _ = writeln!(w, "memory_size = \"4GB\"");
        } else if rng.chance(60) {
            let _ = writeln!(
                w,
                "memory_size = \"{}\"",
                rng.pick(&["512MiB", "1GiB", "2G", "4GiB", "16GiB", "64GiB"])
            );
        }
        let mut devices: Vec<String> = usable
            .iter()
            .zip(&owner)
            .filter(|(_, o)| **o == Some(v))
            .map(|(a, _)| a.to_string())
            .collect();
        if is("shared-device") && v == 1 {
            // The first device already belongs to the first VM.
            devices.push(usable[0].to_string());
        }
        if fault_here && is("undeclared-device") {
            devices.push("0000:ff:1f.7".into());
        }
        if !devices.is_empty() {
            let _ = writeln!(w, "devices = {}", quoted(&devices));
        }
        vm_names.push(name);
    }

    // [[app]]
    let mut app_count = rng.below(5);
    if is("unit-no-suffix") || is("app-no-kind") {
        app_count = app_count.max(1);
    }
    for a in 0..app_count {
        let name = format!(
            "{}-{a}",
            rng.pick(&["spdk", "dpdk-fwd", "telemetry", "metrics", "lb-agent"])
        );
        let _ = writeln!(w, "\n[[app]]\nname = \"{name}\"");
        if a == 0 && is("app-no-kind") {
            continue;
        }
        if a == 0 && is("unit-no-suffix") {
            let _ = writeln!(w, "systemd = \"{name}\"");
            continue;
        }
        match rng.below(3) {
            0 => {
                let suffix = rng.pick(&["service", "socket", "target"]);
                let _ = writeln!(w, "systemd = \"{name}.{suffix}\"");
            }
            1 => {
                let _ = writeln!(
                    w,
                    "criu = {{ pidfile = \"/run/{name}.pid\", images = \"/var/lib/kup/criu/{name}\" }}"
                );
            }
            _ => {
                let bin = format!("/usr/local/bin/{name}");
                let _ = writeln!(w, "save = {}", quoted(&[bin.clone(), "checkpoint".into()]));
                if rng.chance(80) {
                    let _ = writeln!(w, "restore = {}", quoted(&[bin, "restore".into()]));
                }
            }
        }
    }

    // [[step]]
    let mut step_count = rng.below(5);
    if is("bad-timeout") || is("empty-run") {
        step_count = step_count.max(1);
    }
    for s in 0..step_count {
        let _ = writeln!(w, "\n[[step]]\nname = \"hook-{s}\"");
        if s == 0 && is("empty-run") {
            let _ = writeln!(w, "run = []");
        } else {
            let args: Vec<String> = ["/usr/local/bin/lb", "drain", "--host", "hv-7", "--wait"]
                .iter()
                .take(1 + rng.below(5) as usize)
                .map(|s| s.to_string())
                .collect();
            let _ = writeln!(w, "run = {}", quoted(&args));
        }
        if let Some(vm) = (!vm_names.is_empty()).then(|| rng.pick(&vm_names).clone()) {
            if rng.chance(50) {
                let _ = writeln!(w, "before = [\"vm:{vm}:pause\"]");
            } else {
                let _ = writeln!(w, "after = [\"vm:{vm}:resume\"]");
            }
        } else if rng.chance(50) {
            let _ = writeln!(w, "before = [\"kexec\"]");
        }
        if s == 0 && is("bad-timeout") {
            let _ = writeln!(w, "timeout = \"30 seconds\"");
        } else if rng.chance(60) {
            let _ = writeln!(
                w,
                "timeout = \"{}\"",
                rng.pick(&["30s", "1m", "1m 30s", "500ms", "2h", "1.5s"])
            );
        }
    }

    // [policy]
    let policy_faults = [
        "typo-key",
        "quoted-parallelism",
        "zero-parallelism",
        "isolate-rescue",
    ];
    if rng.chance(70) || fault.is_some_and(|f| policy_faults.contains(&f)) {
        let _ = writeln!(w, "\n[policy]");
        if is("isolate-rescue") {
            let _ = writeln!(w, "isolate = \"rescue\"");
        } else if rng.chance(40) {
            let _ = writeln!(
                w,
                "isolate = \"{}\"",
                rng.pick(&["rescue.target", "multi-user.target"])
            );
        }
        if rng.chance(50) {
            let _ = writeln!(
                w,
                "max_downtime = \"{}\"",
                rng.pick(&["10m", "30m", "1h", "2h"])
            );
        }
        let key = if is("typo-key") {
            "paralelism"
        } else {
            "parallelism"
        };
        if is("quoted-parallelism") {
            let _ = writeln!(w, "parallelism = \"4\"");
        } else if is("zero-parallelism") {
            let _ = writeln!(w, "parallelism = 0");
        } else if rng.chance(60) || is("typo-key") {
            let _ = writeln!(w, "{key} = {}", 1 + rng.below(16));
        }
        if rng.chance(40) {
            // "stop" is legal but warns: some valid plans carry a warning.
            let on_failure = if rng.chance(15) { "stop" } else { "rollback" };
            let _ = writeln!(w, "on_failure = \"{on_failure}\"");
        }
        if rng.chance(50) {
            let _ = writeln!(
                w,
                "journal = \"{}\"",
                rng.pick(&["/var/lib/kup", "/srv/kup-journal"])
            );
        }
    }
    out
}

/// What [`write_plans`] wrote.
pub struct Written {
    pub count: usize,
    /// Plans with one deliberate error.
    pub invalid: usize,
}

/// Writes `count` plans `plan-00000.toml` … into `dir` (created if missing) and `manifest.tsv`
/// (`file<TAB>expected code or "valid"`). The output depends only on `count` and `seed`.
pub fn write_plans(dir: &Path, count: usize, seed: u64) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    // Seed 0 would make xorshift stick at 0.
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut manifest = String::new();
    let mut invalid = 0;
    for index in 0..count {
        let fault = rng.chance(10).then(|| *rng.pick(FAULTS));
        let text = plan(&mut rng, index, fault.map(|f| f.0));
        let file = format!("plan-{index:05}.toml");
        std::fs::write(dir.join(&file), text)?;
        let expected = fault.map_or("valid", |f| f.1);
        invalid += usize::from(fault.is_some());
        let _ = writeln!(manifest, "{file}\t{expected}");
    }
    std::fs::write(dir.join("manifest.tsv"), manifest)?;
    Ok(Written { count, invalid })
}
