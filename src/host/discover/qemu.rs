//! What a running QEMU's command line says about it, as `kup plan init` needs it: its QMP unix socket, where its
//! RAM lives (a `share=on` file backend kup can leave in place, or memory it must copy), its size, the VFIO devices
//! it was given, and the argv that starts it again waiting for its state (`-incoming defer`). Pure: the argv is
//! read from /proc by the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// QEMU options that take no argument: every other option is followed by its value. A wrong entry here would pair
/// the options after it wrongly, so the list is QEMU's own (qemu-options.hx, `HAS_ARG` missing).
const FLAGS: &[&str] = &[
    "S",
    "daemonize",
    "nographic",
    "snapshot",
    "no-reboot",
    "no-shutdown",
    "enable-kvm",
    "nodefaults",
    "no-user-config",
    "nodefconfig",
    "mem-prealloc",
    "no-hpet",
    "no-acpi",
    "full-screen",
    "s",
    "only-migratable",
    "preconfig",
    "no-fd-bootchk",
    "win2k-hack",
    "rtc-td-hack",
    "alt-grab",
    "ctrl-grab",
    "enable-fips",
    "semihosting",
    "usb",
    "singlestep",
    "one-insn-per-tb",
    "no-quit",
    "xen-attach",
    "no-frame",
    "version",
    "help",
    "h",
];

/// One option of a QEMU command line: `-name value` (the value `None` for a flag), or a bare argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opt<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

/// The options of `args` (the argv without the program), `--x` read as `-x`, as QEMU reads them.
fn options(args: &[String]) -> Vec<Opt<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let name = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|n| !n.is_empty());
        match name {
            Some(name) if !FLAGS.contains(&name) => {
                out.push(Opt {
                    name,
                    value: args.get(i + 1).map(String::as_str),
                });
                i += 2;
            }
            Some(name) => {
                out.push(Opt { name, value: None });
                i += 1;
            }
            // A bare argument is a disk image (`-hda`'s short form).
            None => {
                out.push(Opt {
                    name: "",
                    value: Some(arg),
                });
                i += 1;
            }
        }
    }
    out
}

/// A QEMU option value `first,key=value,flag` (`,,` is a literal comma), or a JSON object (libvirt writes
/// `-object {"qom-type":…}` and `-device {"driver":…}`): the leading item without `=`, and the keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Props {
    first: Option<String>,
    keys: BTreeMap<String, String>,
}

impl Props {
    fn parse(value: &str) -> Props {
        if value.trim_start().starts_with('{') {
            return Props::json(value);
        }
        let mut items = Vec::new();
        let mut current = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    current.push(',');
                } else {
                    items.push(std::mem::take(&mut current));
                }
            } else {
                current.push(c);
            }
        }
        items.push(current);
        let mut props = Props::default();
        for (i, item) in items.into_iter().enumerate() {
            match item.split_once('=') {
                Some((k, v)) => {
                    props.keys.insert(k.to_owned(), v.to_owned());
                }
                None if i == 0 => props.first = Some(item),
                // `server`, `nowait`: QEMU's short form of `server=on`, `wait=off`.
                None => {
                    let (key, on) = match item.strip_prefix("no") {
                        Some(rest) => (rest.to_owned(), "off"),
                        None => (item, "on"),
                    };
                    props.keys.insert(key, on.to_owned());
                }
            }
        }
        props
    }

    fn json(value: &str) -> Props {
        let mut props = Props::default();
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(value) {
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Bool(b) => if b { "on" } else { "off" }.to_owned(),
                    other => other.to_string(),
                };
                props.keys.insert(k, text);
            }
        }
        props
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// The value of `key`, or the leading item when it has none (`-mon NAME`, `-name NAME`).
    fn get_or_first(&self, key: &str) -> Option<&str> {
        self.get(key).or(self.first.as_deref())
    }
}

/// QEMU's boolean spellings (`qapi_bool_parse`).
fn is_on(value: Option<&str>) -> bool {
    matches!(value, Some("on" | "yes" | "true" | "y"))
}

/// Where the guest's RAM is, as far as its command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RamBacking {
    /// Every RAM backend is a `share=on` `memory-backend-file`: these files (kup's `memory = "shared"`, when they
    /// survive the kexec).
    SharedFiles(Vec<PathBuf>),
    /// Anything else, and why: RAM kup must copy into the state file.
    Private(String),
}

/// What one QEMU command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QemuArgs {
    /// `-name guest=NAME` or `-name NAME`.
    pub(crate) name: Option<String>,
    /// The QMP unix socket: `-qmp unix:PATH`, or a `-chardev socket,path=PATH` a `-mon …,mode=control` uses.
    pub(crate) qmp: Option<PathBuf>,
    /// A QMP monitor that is not a unix socket path (TCP, an inherited fd), for the TODO that says so.
    pub(crate) other_qmp: Option<String>,
    pub(crate) ram: RamBacking,
    /// Guest RAM in bytes, from `-m` (MiB without a suffix) or else the RAM backends' sizes.
    pub(crate) memory_bytes: Option<u64>,
    /// `-device vfio-pci,host=…` (or `sysfsdev=…/ADDR`) addresses, as sysfs spells them.
    pub(crate) vfio: Vec<String>,
    pub(crate) daemonize: bool,
    /// `-nographic` or a `stdio` chardev: QEMU refuses `-daemonize` with them.
    pub(crate) uses_stdio: bool,
    /// libvirt started it (its per-domain directory appears in the argv): the libvirt driver, not QMP.
    pub(crate) libvirt: bool,
}

/// A size as QEMU's `-m` and `size=` read it: a number with an optional fraction and a binary suffix (`B`, `K`,
/// `M`, `G`, `T`, any case); without one, `default_shift` (20 for `-m`: MiB; 0 for `size=`: bytes).
fn parse_size(text: &str, default_shift: u32) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" => default_shift,
        "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let unit = 1u64 << shift;
    let mut bytes = whole.parse::<u64>().ok()?.checked_mul(unit)?;
    if !fraction.is_empty() {
        let digits: u64 = fraction.parse().ok()?;
        let scale = 10u64.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        bytes = bytes.checked_add(digits.checked_mul(unit)? / scale)?;
    }
    Some(bytes)
}

/// A `host=` value as sysfs spells it: with its domain, in lower case.
fn pci_address(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.matches(':').count() == 1 {
        format!("0000:{host}")
    } else {
        host
    }
}

impl QemuArgs {
    /// Reads `argv` (the program first).
    pub(crate) fn parse(argv: &[String]) -> QemuArgs {
        let opts = options(argv.get(1..).unwrap_or_default());
        let all = |name: &str| -> Vec<Props> {
            opts.iter()
                .filter(|o| o.name == name || (name == "machine" && o.name == "M"))
                .filter_map(|o| o.value.map(Props::parse))
                .collect()
        };
        let name = all("name")
            .iter()
            .find_map(|p| p.get_or_first("guest").map(str::to_owned));
        let (qmp, other_qmp) = qmp_socket(&all);
        let (ram, backend_bytes) = ram_backing(&opts, &all);
        let memory_bytes = all("m")
            .iter()
            .find_map(|p| p.get_or_first("size").and_then(|s| parse_size(s, 20)))
            .or(backend_bytes);
        let vfio = all("device")
            .iter()
            .filter(|d| d.get_or_first("driver") == Some("vfio-pci"))
            .filter_map(|d| {
                d.get("host").map(pci_address).or_else(|| {
                    d.get("sysfsdev")
                        .and_then(|p| p.rsplit('/').next())
                        .map(pci_address)
                })
            })
            .collect();
        let uses_stdio = opts.iter().any(|o| {
            o.name == "nographic"
                || matches!(o.name, "serial" | "monitor" | "chardev" | "qmp")
                    && o.value
                        .is_some_and(|v| v.starts_with("stdio") || v == "mon:stdio")
        });
        QemuArgs {
            name,
            qmp,
            other_qmp,
            ram,
            memory_bytes,
            vfio,
            daemonize: opts.iter().any(|o| o.name == "daemonize"),
            uses_stdio,
            libvirt: argv.iter().any(|a| a.contains("/libvirt/qemu/domain-")),
        }
    }
}

/// The QMP unix socket, else a description of a QMP monitor kup cannot use.
fn qmp_socket(all: &dyn Fn(&str) -> Vec<Props>) -> (Option<PathBuf>, Option<String>) {
    let mut other = None;
    for q in all("qmp").into_iter().chain(all("qmp-pretty")) {
        let spec = q.first.unwrap_or_default();
        match spec.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => return (Some(PathBuf::from(path)), None),
            _ => other = other.or(Some(format!("-qmp {spec}"))),
        }
    }
    let chardevs = all("chardev");
    for mon in all("mon") {
        if mon.get("mode") != Some("control") {
            continue;
        }
        let Some(id) = mon.get_or_first("chardev") else {
            continue;
        };
        let Some(dev) = chardevs.iter().find(|c| c.get("id") == Some(id)) else {
            continue;
        };
        match (dev.first.as_deref(), dev.get("path")) {
            (Some("socket"), Some(path)) if path.starts_with('/') => {
                return (Some(PathBuf::from(path)), None);
            }
            _ => {
                other = other.or(Some(format!(
                    "-chardev {},id={id}",
                    dev.first.as_deref().unwrap_or("?")
                )))
            }
        }
    }
    (None, other)
}

/// Where the RAM is, and the RAM backends' total size. A backend is guest RAM when the machine, a NUMA node or a
/// memory device (`pc-dimm`, `virtio-mem`, `nvdimm`) names it; none named means anonymous RAM (plain `-m`).
fn ram_backing(opts: &[Opt<'_>], all: &dyn Fn(&str) -> Vec<Props>) -> (RamBacking, Option<u64>) {
    let backends: Vec<Props> = all("object")
        .into_iter()
        .filter(|o| {
            o.get_or_first("qom-type")
                .is_some_and(|t| t.starts_with("memory-backend-"))
        })
        .collect();
    let mut used: Vec<String> = all("machine")
        .iter()
        .filter_map(|m| m.get("memory-backend").map(str::to_owned))
        .collect();
    used.extend(
        all("numa")
            .iter()
            .chain(all("device").iter())
            .filter_map(|p| p.get("memdev").map(str::to_owned)),
    );
    if used.is_empty() {
        let why = if opts.iter().any(|o| o.name == "mem-path") {
            "its RAM is a -mem-path file, which QEMU maps privately"
        } else {
            "its RAM is anonymous memory (no memory backend)"
        };
        return (RamBacking::Private(why.to_owned()), None);
    }
    let mut files = Vec::new();
    let mut total = Some(0u64);
    for id in &used {
        let Some(backend) = backends.iter().find(|b| b.get("id") == Some(id)) else {
            return (
                RamBacking::Private(format!("its RAM backend {id} is not on its command line")),
                None,
            );
        };
        total = total.and_then(|t| {
            backend
                .get("size")
                .and_then(|s| parse_size(s, 0))
                .and_then(|s| t.checked_add(s))
        });
        let kind = backend.get_or_first("qom-type").unwrap_or_default();
        match (kind, backend.get("mem-path")) {
            ("memory-backend-file", Some(path)) if is_on(backend.get("share")) => {
                files.push(PathBuf::from(path));
            }
            ("memory-backend-file", _) => {
                return (
                    RamBacking::Private(format!(
                        "its RAM backend {id} is a file QEMU maps privately (share=off)"
                    )),
                    total,
                );
            }
            _ => {
                return (
                    RamBacking::Private(format!("its RAM backend {id} is a {kind}, not a file")),
                    total,
                );
            }
        }
    }
    (RamBacking::SharedFiles(files), total)
}

/// The argv that starts this QEMU again waiting for its state: the same command line without any `-incoming`,
/// then `-incoming defer`; `-daemonize` added when missing (kup waits for the restart command to end, and a QEMU
/// that does not daemonize would not). Returns the argv and whether `-daemonize` was added.
pub(crate) fn restart_argv(argv: &[String], daemonize: bool) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(argv.len() + 3);
    out.extend(argv.first().cloned());
    for opt in options(argv.get(1..).unwrap_or_default()) {
        if opt.name == "incoming" {
            continue;
        }
        if !opt.name.is_empty() {
            // Written back as given: `--m` stays `--m`.
            let dashes = if argv.iter().any(|a| a == &format!("--{}", opt.name)) {
                "--"
            } else {
                "-"
            };
            out.push(format!("{dashes}{}", opt.name));
        }
        out.extend(opt.value.map(str::to_owned));
    }
    let add = !daemonize;
    if add {
        out.push("-daemonize".to_owned());
    }
    out.push("-incoming".to_owned());
    out.push("defer".to_owned());
    (out, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_shared_file_backend_and_a_qmp_socket_are_found() {
        let a = QemuArgs::parse(&argv(
            "/usr/bin/qemu-system-x86_64 -name guest=db-1,debug-threads=on -m 2G -daemonize \
             -qmp unix:/run/qemu/db-1.qmp,server=on,wait=off \
             -object memory-backend-file,id=mem,size=2G,mem-path=/var/lib/ram/db-1,share=on \
             -machine q35,memory-backend=mem -device vfio-pci,host=3B:00.0",
        ));
        assert_eq!(a.name.as_deref(), Some("db-1"));
        assert_eq!(a.qmp, Some(PathBuf::from("/run/qemu/db-1.qmp")));
        assert_eq!(
            a.ram,
            RamBacking::SharedFiles(vec![PathBuf::from("/var/lib/ram/db-1")])
        );
        assert_eq!(a.memory_bytes, Some(2 << 30));
        assert_eq!(a.vfio, ["0000:3b:00.0"]);
        assert!(a.daemonize && !a.uses_stdio && !a.libvirt);
    }

    #[test]
    fn a_control_monitor_on_a_socket_chardev_is_qmp_and_a_readline_one_is_not() {
        let a = QemuArgs::parse(&argv(
            "qemu-system-x86_64 -chardev socket,id=hmp,path=/run/hmp.sock,server=on,wait=off -mon hmp \
             -chardev socket,id=c0,path=/run/q.sock,server,nowait -mon chardev=c0,mode=control -m 512",
        ));
        assert_eq!(a.qmp, Some(PathBuf::from("/run/q.sock")));
        assert_eq!(a.memory_bytes, Some(512 << 20));
        assert!(matches!(a.ram, RamBacking::Private(ref why) if why.contains("anonymous")));
        let tcp = QemuArgs::parse(&argv("qemu-system-x86_64 -qmp tcp:127.0.0.1:4444,server"));
        assert_eq!(tcp.qmp, None);
        assert_eq!(tcp.other_qmp.as_deref(), Some("-qmp tcp:127.0.0.1:4444"));
    }

    #[test]
    fn private_and_non_file_backends_are_copied_and_say_why() {
        for (object, why) in [
            (
                "memory-backend-file,id=m,size=1G,mem-path=/x,share=off",
                "share=off",
            ),
            ("memory-backend-file,id=m,size=1G,mem-path=/x", "share=off"),
            (
                "memory-backend-memfd,id=m,size=1G,share=on",
                "memory-backend-memfd",
            ),
        ] {
            let a = QemuArgs::parse(&argv(&format!("qemu -object {object} -numa node,memdev=m")));
            assert!(
                matches!(&a.ram, RamBacking::Private(w) if w.contains(why)),
                "{object}: {:?}",
                a.ram
            );
            assert_eq!(a.memory_bytes, Some(1 << 30), "{object}");
        }
        let missing = QemuArgs::parse(&argv("qemu -machine memory-backend=pc.ram"));
        assert!(matches!(&missing.ram, RamBacking::Private(w) if w.contains("pc.ram")));
    }

    #[test]
    fn libvirt_json_objects_and_its_domain_directory_are_read() {
        let a = QemuArgs::parse(&[
            "/usr/bin/qemu-system-x86_64".to_owned(),
            "-name".to_owned(),
            "guest=web-1,debug-threads=on".to_owned(),
            "-object".to_owned(),
            r#"{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/x","share":true,"size":4294967296}"#.to_owned(),
            "-machine".to_owned(),
            "pc-q35-7.2,memory-backend=pc.ram".to_owned(),
            "-object".to_owned(),
            "secret,id=masterKey0,format=raw,file=/var/lib/libvirt/qemu/domain-1-web-1/master-key.aes".to_owned(),
            "-device".to_owned(),
            r#"{"driver":"vfio-pci","host":"0000:3b:00.1","id":"hostdev0"}"#.to_owned(),
        ]);
        assert!(a.libvirt);
        assert_eq!(a.name.as_deref(), Some("web-1"));
        assert_eq!(
            a.ram,
            RamBacking::SharedFiles(vec![PathBuf::from("/dev/hugepages/x")])
        );
        assert_eq!(a.memory_bytes, Some(4 << 30));
        assert_eq!(a.vfio, ["0000:3b:00.1"]);
    }

    #[test]
    fn sizes_read_as_qemu_reads_them() {
        assert_eq!(parse_size("256", 20), Some(256 << 20));
        assert_eq!(parse_size("256M", 20), Some(256 << 20));
        assert_eq!(parse_size("1.5g", 20), Some(3 << 29));
        assert_eq!(parse_size("4096", 0), Some(4096));
        assert_eq!(parse_size("2X", 20), None);
        assert_eq!(parse_size("", 20), None);
        let m = QemuArgs::parse(&argv("qemu -m size=8G,slots=4,maxmem=32G"));
        assert_eq!(m.memory_bytes, Some(8 << 30));
    }

    #[test]
    fn the_restart_argv_waits_for_its_state_and_daemonizes() {
        let start = argv(
            "/usr/bin/qemu -m 1G -incoming tcp:0:4444 -S -qmp unix:/q,server=on,wait=off disk.img",
        );
        let (restart, added) = restart_argv(&start, false);
        assert!(added);
        assert_eq!(
            restart,
            argv(
                "/usr/bin/qemu -m 1G -S -qmp unix:/q,server=on,wait=off disk.img -daemonize -incoming defer"
            )
        );
        let (restart, added) = restart_argv(&argv("qemu --daemonize --m 1G"), true);
        assert!(!added);
        assert_eq!(restart, argv("qemu --daemonize --m 1G -incoming defer"));
        let stdio = QemuArgs::parse(&argv("qemu -serial mon:stdio"));
        assert!(stdio.uses_stdio);
    }
}
