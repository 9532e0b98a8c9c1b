//! The starter plan's text, from what `host::discover` read: a commented TOML plan that validates, in which every
//! value was read off the host and everything kup could not work out is a `# TODO` comment, never a guess. Pure,
//! so that its wording is snapshot-tested against fake hosts.

use crate::cmdline::{Cmdline, keys_match};
use crate::host::discover::{
    AppProcess, HostFacts, Libvirt, QemuProcess, RamBacking, Unit, VfioDevice,
};
use crate::kparams::{KernelRelease, known};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A TOML string.
fn s(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `text` as a plan name (`db-1`): other characters become `-`, at most 64, starting with a letter or digit.
fn plan_name(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let cleaned: String = cleaned.chars().take(64).collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Names unique among the VMs (and among the apps): a second `db` becomes `db-2`.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn take(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_owned();
        let mut n = 2;
        while !self.0.insert(name.clone()) {
            let suffix = format!("-{n}");
            let keep: String = wanted.chars().take(64 - suffix.len()).collect();
            name = format!("{keep}{suffix}");
            n += 1;
        }
        name
    }
}

/// Bytes in the largest binary unit that divides them (`16GiB`, `768MiB`).
fn size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes > 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// An argv as a TOML array, one option and its value per line.
fn argv_array(argv: &[String]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let takes_value =
            argv[i].starts_with('-') && argv.get(i + 1).is_some_and(|next| !next.starts_with('-'));
        if takes_value && i > 0 {
            lines.push(format!("{}, {}", s(&argv[i]), s(&argv[i + 1])));
            i += 2;
        } else {
            lines.push(s(&argv[i]));
            i += 1;
        }
    }
    format!("[\n    {},\n]", lines.join(",\n    "))
}

/// The whole plan.
pub(crate) fn render(facts: &HostFacts) -> String {
    let mut out = String::new();
    header(&mut out, facts);
    kernel(&mut out, facts);
    let mut names = Names::default();
    let declared: BTreeSet<&str> = facts.vfio.iter().map(|d| d.address.as_str()).collect();
    let mut owners: Vec<(String, String)> = Vec::new();
    for q in facts.qemus.iter().filter(|q| !q.args.libvirt) {
        qemu_vm(&mut out, q, &mut names, &declared, &mut owners);
    }
    libvirt_vms(&mut out, facts, &mut names);
    for d in &facts.vfio {
        pci(&mut out, d, &owners);
    }
    apps(&mut out, &facts.apps);
    out.push_str(
        "# [policy]: the defaults hold (journal in /var/lib/kup, rollback on failure, no downtime budget);\n\
         # e.g. max_downtime = \"30s\", isolate = \"rescue.target\" (docs/plan-format.md#policy).\n",
    );
    out
}

fn header(out: &mut String, facts: &HostFacts) {
    let host = facts.hostname.as_deref();
    let _ = writeln!(
        out,
        "# A starter plan written by `kup plan init` from what {} runs now (it changed nothing).",
        host.unwrap_or("this host")
    );
    out.push_str(
        "# Review it, resolve every TODO, then: kup plan validate FILE; kup plan graph FILE;\n\
         # kup plan apply --dry-run FILE; kup plan apply --rehearse FILE. Keys: docs/plan-format.md.\n\
         kup = 1\n",
    );
    let from = facts.running_release.as_deref().unwrap_or("?");
    let _ = writeln!(
        out,
        "name = {}",
        s(&format!(
            "{}: {from} → {}",
            host.unwrap_or("host"),
            facts.kernel.release
        ))
    );
    if let Some(host) = host.filter(|h| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    }) {
        let _ = writeln!(out, "hosts = [{}]", s(host));
    }
    out.push('\n');
}

fn kernel(out: &mut String, facts: &HostFacts) {
    let k = &facts.kernel;
    let _ = writeln!(out, "[kernel]\n# {}.", k.chosen);
    let _ = writeln!(out, "image = {}", s(&k.image.display().to_string()));
    match &k.initrd {
        Some(initrd) => {
            let _ = writeln!(out, "initrd = {}", s(&initrd.display().to_string()));
        }
        None => {
            let _ = writeln!(
                out,
                "# TODO initrd: none beside the image for {} (initrd.img-{0}, initramfs-{0}.img); without one the \
                 kernel boots with none.",
                k.release
            );
        }
    }
    let _ = writeln!(
        out,
        "version = {}  # from the image's setup header",
        s(&k.release)
    );
    let _ = writeln!(out, "sha256 = {}", s(&k.sha256));
    if !k.modules {
        let _ = writeln!(
            out,
            "# TODO: /lib/modules/{} is missing: install the kernel's modules, or the preflight refuses it.",
            k.release
        );
    }
    out.push_str("\n[kernel.cmdline]\n");
    if let Some(line) = &facts.running_cmdline {
        let _ = writeln!(out, "# The running command line: {line}");
    }
    out.push_str("inherit = true\n");
    suggestions(out, facts);
    out.push('\n');
}

/// Command-line suggestions, as comments: what the new kernel can do that the running line does not ask for.
fn suggestions(out: &mut String, facts: &HostFacts) {
    let k = &facts.kernel;
    let running = Cmdline::parse(facts.running_cmdline.as_deref().unwrap_or(""));
    let has = |name: &str| running.params().iter().any(|p| keys_match(p.key(), name));
    let parallel = known("cpuhp.parallel").and_then(|p| p.since);
    let target = KernelRelease::parse(&k.release);
    let supported = match (parallel, target) {
        (Some(since), Some(target)) if target >= since && !has("cpuhp.parallel") => Some(since),
        _ => None,
    };
    if let Some(since) = supported {
        match &k.config {
            Some((path, true)) => {
                let _ = writeln!(
                    out,
                    "# set = {{ \"cpuhp.parallel\" = \"1\" }}  # {} brings CPUs up in parallel \
                     (CONFIG_HOTPLUG_PARALLEL=y in {}): a shorter boot",
                    k.release,
                    path.display()
                );
            }
            Some((path, false)) => {
                let _ = writeln!(
                    out,
                    "# (cpuhp.parallel: {} lacks CONFIG_HOTPLUG_PARALLEL, so it would not help)",
                    path.display()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# set = {{ \"cpuhp.parallel\" = \"1\" }}  # brings CPUs up in parallel on {since} and later, \
                     if {} has CONFIG_HOTPLUG_PARALLEL (no config beside it to tell)",
                    k.release
                );
            }
        }
    }
    let shared = facts.qemus.iter().any(shares);
    for p in running.params() {
        if shared && keys_match(p.key(), "memmap") && p.value().is_some_and(|v| v.contains('!')) {
            let _ = writeln!(
                out,
                "# memmap={} is inherited: keep it if the shared guests' RAM files are on the pmem it carves.",
                p.value().unwrap_or_default()
            );
        }
    }
}

/// Whether kup can leave this guest's RAM in place: share=on files on a file system that survives the kexec.
fn shares(q: &QemuProcess) -> bool {
    matches!(q.args.ram, RamBacking::SharedFiles(_)) && q.volatile_ram.is_none()
}

fn qemu_vm(
    out: &mut String,
    q: &QemuProcess,
    names: &mut Names,
    declared: &BTreeSet<&str>,
    owners: &mut Vec<(String, String)>,
) {
    let program = q.argv.first().map(String::as_str).unwrap_or("?");
    let given = q.args.name.as_deref().and_then(plan_name);
    let Some(qmp) = &q.args.qmp else {
        let why = match &q.args.other_qmp {
            Some(other) => format!("its QMP monitor ({other}) is no unix socket path"),
            None => "it has no QMP socket".to_owned(),
        };
        let _ = writeln!(
            out,
            "# TODO: QEMU pid {} ({program}{}) is left out: {why}. kup drives a guest over a QMP unix socket: start \
             it with -qmp unix:/run/qemu/NAME.qmp,server=on,wait=off and run kup plan init again.\n",
            q.pid,
            given
                .as_deref()
                .map(|n| format!(", -name {n}"))
                .unwrap_or_default()
        );
        return;
    };
    let name = names.take(given.as_deref().unwrap_or(&format!("qemu-{}", q.pid)));
    let where_ = match &q.unit {
        Unit::Service(u) => format!("in {u}"),
        Unit::Transient(u) => format!("in the transient unit {u}"),
        Unit::None(Some(scope)) if scope.ends_with(".scope") => format!("in {scope}, no service"),
        Unit::None(_) => "in no systemd unit".to_owned(),
    };
    let _ = writeln!(out, "[[vm]]\n# QEMU pid {} ({program}), {where_}.", q.pid);
    if given.is_none() {
        out.push_str(
            "# TODO name: it has no -name; this one is made up from its pid, rename it.\n",
        );
    }
    let _ = writeln!(out, "name = {}", s(&name));
    let _ = writeln!(out, "qmp = {}", s(&qmp.display().to_string()));
    match (&q.args.ram, &q.volatile_ram) {
        (RamBacking::SharedFiles(files), None) => {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let _ = writeln!(
                out,
                "memory = \"shared\"  # its RAM is a share=on memory-backend-file: {}",
                files.join(", ")
            );
        }
        (_, Some((file, fs))) => {
            let _ = writeln!(
                out,
                "memory = \"copy\"  # its share=on RAM file {} is on {fs}, which the kexec empties: move it to a \
                 disk file system for \"shared\"",
                file.display()
            );
        }
        (RamBacking::Private(why), None) => {
            let _ = writeln!(out, "memory = \"copy\"  # {why}");
        }
    }
    match q.args.memory_bytes {
        Some(bytes) => {
            let _ = writeln!(out, "memory_size = \"{}\"", size(bytes));
        }
        None => out.push_str(
            "# TODO memory_size: no -m on its command line (QEMU's default); kup reads it over QMP at apply.\n",
        ),
    }
    restart(out, q);
    unit(out, q);
    let devices: Vec<&String> = q
        .args
        .vfio
        .iter()
        .filter(|a| declared.contains(a.as_str()))
        .collect();
    for missing in q
        .args
        .vfio
        .iter()
        .filter(|a| !declared.contains(a.as_str()))
    {
        let _ = writeln!(
            out,
            "# TODO: it was given PCI device {missing}, which is not bound to vfio-pci now."
        );
    }
    if !devices.is_empty() {
        let list: Vec<String> = devices.iter().map(|d| s(d)).collect();
        let _ = writeln!(out, "devices = [{}]", list.join(", "));
        out.push_str(
            "# With VFIO devices a save needs their driver's migration support; if the preflight reports \"VFIO \
             migration is not supported\", reboot it instead: handover = \"restart\" (no memory key, a restart \
             without -incoming defer).\n",
        );
        owners.extend(devices.iter().map(|d| ((*d).clone(), name.clone())));
    }
    out.push('\n');
}

/// The unit the QEMU runs in, which `policy.isolate` must not stop (docs/plan-format.md, `vm.unit`).
fn unit(out: &mut String, q: &QemuProcess) {
    match &q.unit {
        Unit::Service(u) | Unit::Transient(u) => {
            let _ = writeln!(out, "unit = {}  # kept out of policy.isolate", s(u));
        }
        Unit::None(Some(scope)) if scope.ends_with(".scope") => {
            let _ = writeln!(
                out,
                "unit = {}  # a scope: systemd never isolates it, named so the isolate can run early",
                s(scope)
            );
        }
        Unit::None(_) => out.push_str(
            "# TODO unit: it runs in no systemd unit; with policy.isolate, name the unit it will run in, or the \
             isolate waits until every guest is saved.\n",
        ),
    }
}

fn restart(out: &mut String, q: &QemuProcess) {
    let (argv, daemonize_added) = q.restart_argv();
    if let Unit::Service(unit) = &q.unit {
        let _ = writeln!(
            out,
            "restart = [\"systemctl\", \"start\", {}]\n# TODO: {unit} must start QEMU with -incoming defer after \
             the kexec (a drop-in), or use its command line: restart = {}",
            s(unit),
            toml::Value::Array(
                argv.iter()
                    .map(|a| toml::Value::String(a.clone()))
                    .collect()
            )
        );
        return;
    }
    if let Unit::Transient(unit) = &q.unit {
        let _ = writeln!(
            out,
            "# {unit} is transient (systemd-run): it cannot be started again by name, so the restart is its \
             command line."
        );
    }
    out.push_str("# Its own command line with -incoming defer (it waits for its saved state)");
    if daemonize_added {
        out.push_str(" and -daemonize (kup waits for the restart command to end)");
    }
    out.push_str(".\n");
    if q.env.is_none() {
        out.push_str(
            "# TODO: its environment could not be read (run kup plan init as root): add `env NAME=VALUE` first if \
             it needs any (LD_LIBRARY_PATH, QEMU_MODULE_DIR).\n",
        );
    }
    if daemonize_added && q.args.uses_stdio {
        out.push_str(
            "# TODO: QEMU refuses -daemonize with -nographic or a stdio chardev, both in this command line: \
             replace them (-display none, a file or socket chardev).\n",
        );
    }
    let _ = writeln!(out, "restart = {}", argv_array(&argv));
}

fn libvirt_vms(out: &mut String, facts: &HostFacts, names: &mut Names) {
    let mut domains: Vec<String> = match &facts.libvirt {
        Libvirt::Domains(d) => d.clone(),
        _ => Vec::new(),
    };
    for q in facts.qemus.iter().filter(|q| q.args.libvirt) {
        if let Some(n) = q.args.name.as_ref().filter(|n| !domains.contains(n)) {
            domains.push(n.clone());
        }
    }
    if facts.libvirt == Libvirt::NotRunning {
        out.push_str("# libvirt: virsh is installed, but no libvirt daemon runs: no domains.\n\n");
    }
    if let Libvirt::Failed(why) = &facts.libvirt {
        let _ = writeln!(
            out,
            "# TODO libvirt: `virsh list --name` failed ({why}); domains it would list are missing.\n"
        );
    }
    for domain in domains {
        let name = names.take(&plan_name(&domain).unwrap_or_else(|| "vm".to_owned()));
        let _ = writeln!(
            out,
            "[[vm]]\n# A libvirt domain (virsh save/restore: its RAM is always copied).\nname = {}\nlibvirt = {}",
            s(&name),
            s(&domain)
        );
        out.push_str(
            "# With policy.isolate: unit = \"libvirtd.service\" (or virtqemud.service with libvirt's modular \
             daemons), the daemon virsh talks to, so the isolate keeps it.
",
        );
        match (&facts.libvirt_uri, &facts.libvirt) {
            (Some(uri), _) => {
                let _ = writeln!(out, "libvirt_uri = {}", s(uri));
            }
            (None, Libvirt::Failed(_)) => out.push_str(
                "# TODO libvirt_uri: virsh's default connection failed; name the one this domain lives on.\n",
            ),
            (None, _) => {}
        }
        out.push('\n');
    }
}

fn pci(out: &mut String, d: &VfioDevice, owners: &[(String, String)]) {
    let owner = owners
        .iter()
        .find(|(a, _)| *a == d.address)
        .map(|(_, vm)| format!("owned by VM {vm}"))
        .unwrap_or_else(|| "given to no running QEMU".to_owned());
    let group = d
        .iommu_group
        .as_deref()
        .map(|g| format!(", IOMMU group {g}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "[[pci]]\n# {} bound to vfio-pci{group}, {owner}.\naddress = {}\ndriver = \"vfio-pci\"\n",
        d.id,
        s(&d.address)
    );
}

fn apps(out: &mut String, apps: &[AppProcess]) {
    let mut names = Names::default();
    let mut units = BTreeSet::new();
    for app in apps {
        match &app.unit {
            Unit::Service(unit) => {
                if !units.insert(unit.clone()) {
                    continue;
                }
                let stem = unit
                    .rsplit_once('.')
                    .map_or(unit.as_str(), |(stem, _)| stem);
                let name = names.take(&plan_name(stem).unwrap_or_else(|| "app".to_owned()));
                let _ = writeln!(
                    out,
                    "[[app]]\n# {} (pid {}) runs in {unit}: stopped before the kexec, started after it.\nname = {}\n\
                     systemd = {}\n",
                    app.program,
                    app.pid,
                    s(&name),
                    s(unit)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "# TODO app: {} (pid {}) runs in no systemd service; say how it crosses the kexec in an \
                     [[app]] (systemd, criu or save/restore hooks; docs/plan-format.md#app).\n",
                    app.program, app.pid
                );
            }
        }
    }
}
