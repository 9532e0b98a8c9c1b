//! Semantic checks that types alone cannot express — paths that must survive a kexec, names that must be unique,
//! devices owned twice — collected all at once so a reviewer sees every problem in one run.

use super::diagnostic::Diagnostic;
use super::model::*;
use super::raw::{self, RawPlan};
use super::units::{parse_duration, parse_size};
use crate::cmdline::{self, CmdlineError, Param};
use crate::hostglob::HostGlob;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;

/// Stable diagnostic codes of the semantic checks (the structural ones live in [`super::structure`]).
pub mod code {
    pub const VERSION: &str = "kup::plan::version";
    pub const RELATIVE_PATH: &str = "kup::plan::relative-path";
    pub const VOLATILE_PATH: &str = "kup::plan::volatile-path";
    pub const TMP_PATH: &str = "kup::plan::tmp-path";
    pub const DUPLICATE_NAME: &str = "kup::plan::duplicate-name";
    pub const INVALID_NAME: &str = "kup::plan::invalid-name";
    pub const VM_DRIVER: &str = "kup::plan::vm-driver";
    pub const DRIVER_KEY: &str = "kup::plan::driver-key";
    pub const PCI_ADDRESS: &str = "kup::plan::pci-address";
    pub const DEVICE_CONFLICT: &str = "kup::plan::device-conflict";
    pub const UNDECLARED_DEVICE: &str = "kup::plan::undeclared-device";
    pub const DUPLICATE_DEVICE: &str = "kup::plan::duplicate-device";
    pub const SHA256: &str = "kup::plan::sha256";
    pub const DURATION: &str = "kup::plan::duration";
    pub const SIZE: &str = "kup::plan::size";
    pub const PARALLELISM: &str = "kup::plan::parallelism";
    pub const EMPTY_ARGV: &str = "kup::plan::empty-argv";
    pub const ARGV_SHELL_STRING: &str = "kup::plan::argv-shell-string";
    pub const CMDLINE_CONFLICT: &str = "kup::plan::cmdline-conflict";
    pub const CMDLINE_PARAM: &str = "kup::plan::cmdline-param";
    pub const EMPTY_CMDLINE: &str = "kup::plan::empty-cmdline";
    pub const HOST_GLOB: &str = "kup::plan::host-glob";
    pub const APP_KIND: &str = "kup::plan::app-kind";
    pub const KERNEL_VERSION: &str = "kup::plan::kernel-version";
    pub const UNPINNED_KERNEL: &str = "kup::plan::unpinned-kernel";
    pub const ISOLATE_TARGET: &str = "kup::plan::isolate-target";
    pub const SYSTEMD_UNIT: &str = "kup::plan::systemd-unit";
    pub const ON_FAILURE_STOP: &str = "kup::plan::on-failure-stop";
    pub const DIRECT_KEXEC: &str = "kup::plan::direct-kexec";
    pub const EMPTY_VALUE: &str = "kup::plan::empty-value";

    /// Codes that report something absent: after the structural pass removed a badly typed key, these would only
    /// repeat its finding.
    pub const ABSENCE: &[&str] = &[VM_DRIVER, DRIVER_KEY, APP_KIND, EMPTY_ARGV];
}

/// File systems whose contents are gone after a kexec (tmpfs, or not files at all).
const VOLATILE_ROOTS: &[&str] = &["/run", "/var/run", "/dev/shm", "/dev", "/proc", "/sys"];

/// Checks a structurally sound raw plan. Returns the plan only when there is no error.
pub fn validate(raw: &RawPlan, out: &mut Vec<Diagnostic>) -> Option<Plan> {
    let errors_before = out.iter().filter(|d| d.is_error()).count();
    let mut v = Validator { out };
    let plan = v.plan(raw);
    let errors_after = v.out.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then_some(plan)
}

struct Validator<'a> {
    out: &'a mut Vec<Diagnostic>,
}

/// Owner of a unique name, for "first defined here" labels.
struct Seen {
    first: BTreeMap<String, Range<usize>>,
}

impl Seen {
    fn new() -> Self {
        Self {
            first: BTreeMap::new(),
        }
    }
}

impl Validator<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn plan(&mut self, raw: &RawPlan) -> Plan {
        if *raw.kup.get_ref() != 1 {
            self.push(
                Diagnostic::error(
                    code::VERSION,
                    format!("unsupported plan format version {}", raw.kup.get_ref()),
                )
                .at(raw.kup.span(), "this kup understands version 1 only")
                .help("write `kup = 1`; newer formats need a newer kup"),
            );
        }
        if let Some(name) = &raw.name {
            self.not_blank(name, "name");
        }
        let hosts = raw.hosts.iter().filter_map(|h| self.host_glob(h)).collect();
        let policy = self.policy(raw.policy.as_ref());
        let kernel = self.kernel(raw.kernel.get_ref());
        let pci = self.pci(&raw.pci);
        let vms = self.vms(&raw.vms, &raw.pci, &policy);
        let apps = self.apps(&raw.apps);
        let steps = self.steps(&raw.steps);
        Plan {
            name: raw.name.as_ref().map(|n| n.get_ref().clone()),
            hosts,
            kernel,
            vms,
            pci,
            apps,
            steps,
            policy,
        }
    }

    fn not_blank(&mut self, value: &Spanned<String>, key: &str) -> bool {
        if value.get_ref().trim().is_empty() {
            self.push(
                Diagnostic::error(code::EMPTY_VALUE, format!("`{key}` is empty"))
                    .at(value.span(), "empty")
                    .help(format!("give `{key}` a value or remove the key")),
            );
            return false;
        }
        true
    }

    fn host_glob(&mut self, pattern: &Spanned<String>) -> Option<HostGlob> {
        match HostGlob::parse(pattern.get_ref()) {
            Ok(glob) => Some(glob),
            Err((at, why)) => {
                // +1 skips the opening quote; the offset counts characters, which equal bytes in a valid hostname
                // glob, and the span is clamped by the renderer anyway.
                let start = pattern.span().start + 1 + at;
                self.push(
                    Diagnostic::error(code::HOST_GLOB, format!("invalid hosts glob: {why}"))
                        .at(start..start + 1, why)
                        .help("hosts globs use `*`, `?` and `[a-z]`, for example \"hv-prod-*\""),
                );
                None
            }
        }
    }

    /// An absolute path; `None` (after a diagnostic) when it is not.
    fn absolute(&mut self, path: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let text = path.get_ref();
        if !self.not_blank(path, key) {
            return None;
        }
        if !text.starts_with('/') {
            self.push(
                Diagnostic::error(code::RELATIVE_PATH, format!("`{key}` must be an absolute path"))
                    .at(path.span(), "relative path")
                    .help(
                        "kup runs from systemd after the kexec, where the working directory is `/`: write the full \
                         path, starting with `/`",
                    ),
            );
            return None;
        }
        Some(PathBuf::from(text))
    }

    /// An absolute path that must still hold its data after the kexec.
    fn durable(&mut self, path: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let result = self.absolute(path, key)?;
        // Judge the path as the kernel resolves it (`//run/x`, `/var/lib/../../run/x` are under /run), lexically:
        // validation reads no file system.
        let mut parts: Vec<&str> = Vec::new();
        for part in path.get_ref().split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let normal = format!("/{}", parts.join("/"));
        let text = normal.as_str();
        let under = |root: &str| text == root || text.starts_with(&format!("{root}/"));
        if let Some(root) = VOLATILE_ROOTS.iter().find(|r| under(r)) {
            self.push(
                Diagnostic::error(
                    code::VOLATILE_PATH,
                    format!("`{key}` is under {root}, which does not survive a kexec"),
                )
                .at(path.span(), "lost at kexec")
                .help("use a directory on a persistent disk, for example under /var/lib/kup"),
            );
            return None;
        }
        if under("/tmp") {
            self.push(
                Diagnostic::warning(
                    code::TMP_PATH,
                    format!("`{key}` is under /tmp, which is often a tmpfs that a kexec wipes"),
                )
                .at(path.span(), "may be lost at kexec")
                .help("prefer a directory on a persistent disk, for example under /var/lib/kup"),
            );
        }
        Some(result)
    }

    fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<std::time::Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.push(
                    Diagnostic::error(code::DURATION, format!("`{key}` is zero"))
                        .at(value.span(), "nothing can finish in no time")
                        .help("give a positive duration, like \"30s\""),
                );
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                self.push(
                    Diagnostic::error(
                        code::DURATION,
                        format!("`{key}` is not a valid duration: {why}"),
                    )
                    .at(value.span(), "unparsable duration")
                    .help("write durations like \"500ms\", \"30s\", \"1m 30s\" or \"2h\""),
                );
                None
            }
        }
    }

    fn argv(&mut self, argv: &Spanned<Vec<Spanned<String>>>, key: &str) -> Option<Vec<String>> {
        let items = argv.get_ref();
        if items.is_empty() {
            self.push(
                Diagnostic::error(code::EMPTY_ARGV, format!("`{key}` is an empty command"))
                    .at(argv.span(), "no program to run")
                    .help("give the program and its arguments, one string each: [\"systemctl\", \"start\", \"x\"]"),
            );
            return None;
        }
        if items[0].get_ref().trim().is_empty() {
            self.push(
                Diagnostic::error(code::EMPTY_ARGV, format!("`{key}` names no program"))
                    .at(items[0].span(), "empty program name")
                    .help("the first element is the program to run"),
            );
            return None;
        }
        if items.len() == 1 && items[0].get_ref().contains(' ') {
            self.push(
                Diagnostic::warning(
                    code::ARGV_SHELL_STRING,
                    format!("`{key}` is one string with spaces; kup runs no shell, so it names a single program"),
                )
                .at(items[0].span(), "the whole string is the program name")
                .help("split it into one string per argument: [\"systemctl\", \"start\", \"x\"]"),
            );
        }
        Some(items.iter().map(|s| s.get_ref().clone()).collect())
    }

    fn name(&mut self, name: &Spanned<String>, kind: &str, seen: &mut Seen) -> bool {
        let text = name.get_ref();
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            self.push(
                Diagnostic::error(code::INVALID_NAME, format!("invalid {kind} name \"{text}\""))
                    .at(name.span(), "not a valid name")
                    .help(format!(
                        "{kind} names appear in step ids ({kind}:NAME:…): use 1–64 letters, digits, `.`, `_` or `-`, \
                         starting with a letter or digit"
                    )),
            );
        }
        if let Some(first) = seen.first.get(text) {
            self.push(
                Diagnostic::error(
                    code::DUPLICATE_NAME,
                    format!("two {kind}s are named \"{text}\""),
                )
                .at(name.span(), "second definition")
                .related(first.clone(), "first defined here")
                .help(format!("{kind} names must be unique within a plan")),
            );
            return false;
        }
        seen.first.insert(text.clone(), name.span());
        valid
    }

    fn kernel(&mut self, raw: &raw::RawKernel) -> Kernel {
        let image = self.absolute(&raw.image, "kernel.image");
        let initrd = raw
            .initrd
            .as_ref()
            .and_then(|p| self.absolute(p, "kernel.initrd"));
        if let Some(version) = &raw.version {
            let text = version.get_ref();
            if text.is_empty() || text.chars().any(char::is_whitespace) {
                self.push(
                    Diagnostic::error(
                        code::KERNEL_VERSION,
                        "`kernel.version` must be a kernel release as `uname -r` prints it",
                    )
                    .at(version.span(), "not a release string")
                    .help("for example \"6.12.9-lts\" — one word, no spaces"),
                );
            }
        }
        let sha256 = match &raw.sha256 {
            Some(sum) => {
                let text = sum.get_ref();
                if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
                    Some(text.to_ascii_lowercase())
                } else {
                    self.push(
                        Diagnostic::error(code::SHA256, "`kernel.sha256` is not a SHA-256 digest")
                            .at(
                                sum.span(),
                                format!(
                                    "{} characters; a digest is 64 hex digits",
                                    text.chars().count()
                                ),
                            )
                            .help(format!(
                                "compute it with `sha256sum {}` and paste the first field",
                                raw.image.get_ref()
                            )),
                    );
                    None
                }
            }
            None => {
                self.push(
                    Diagnostic::warning(code::UNPINNED_KERNEL, "the kernel image is not pinned by `sha256`")
                        .at(raw.image.span(), "any file at this path will be booted")
                        .help("add `sha256 = \"…\"` (from `sha256sum`) so a replaced or corrupted image is refused"),
                );
                None
            }
        };
        // Kernel-parameter warnings (release, typos, duplicates, values): src/plan/cmdline_lint.rs.
        super::cmdline_lint::check(raw, self.out);
        let cmdline = match &raw.cmdline {
            Some(c) => self.cmdline(c.get_ref(), c.span()),
            None => CmdlineSpec::Edit {
                inherit: true,
                remove: Vec::new(),
                set: Vec::new(),
                append: Vec::new(),
            },
        };
        Kernel {
            image: image.unwrap_or_default(),
            initrd,
            version: raw.version.as_ref().map(|v| v.get_ref().clone()),
            sha256,
            loader: raw.loader.as_ref().map_or(Loader::File, |l| *l.get_ref()),
            cmdline,
        }
    }

    /// Reports a kernel parameter the command-line model refuses: the rules live in [`crate::cmdline`], the one
    /// place that knows how the kernel reads a command line.
    fn cmdline_param(&mut self, result: Result<(), CmdlineError>, span: Range<usize>, key: &str) {
        if let Err(e) = result {
            let help = match e {
                CmdlineError::NotOneParam { .. } => {
                    "one parameter per string: a bare flag (`nosmt`) or `key=value`"
                }
                CmdlineError::InvalidKey { .. } if key.ends_with("remove") => {
                    "name the parameter only (`quiet`, `console`): every occurrence goes, whatever its value"
                }
                _ => {
                    "write the parameter as the kernel reads it: `name` or `name=value`, no `\"` inside"
                }
            };
            self.push(
                Diagnostic::error(code::CMDLINE_PARAM, format!("`{key}`: {e}"))
                    .at(span, "not a valid kernel parameter")
                    .help(help),
            );
        }
    }

    fn cmdline(&mut self, raw: &raw::RawCmdline, span: Range<usize>) -> CmdlineSpec {
        if let Some(value) = &raw.value {
            let edits = raw.inherit.is_some()
                || !raw.remove.is_empty()
                || !raw.set.is_empty()
                || !raw.append.is_empty();
            if edits {
                self.push(
                    Diagnostic::error(
                        code::CMDLINE_CONFLICT,
                        "`kernel.cmdline.value` replaces the whole command line; it cannot be combined with \
                         `inherit`, `remove`, `set` or `append`",
                    )
                    .at(value.span(), "full command line given here")
                    .help("either keep `value` alone, or drop it and describe the change with remove/set/append"),
                );
            }
            if value.get_ref().trim().is_empty() {
                self.push(
                    Diagnostic::warning(code::EMPTY_CMDLINE, "the new kernel gets an empty command line")
                        .at(value.span(), "empty")
                        .help("without `root=` and `console=` the new kernel may not find its root or console"),
                );
            }
            return CmdlineSpec::Replace(value.get_ref().clone());
        }
        for r in &raw.remove {
            self.cmdline_param(
                cmdline::validate_key(r.get_ref()),
                r.span(),
                "kernel.cmdline.remove",
            );
        }
        for a in &raw.append {
            self.cmdline_param(
                Param::parse_one(a.get_ref()).map(drop),
                a.span(),
                "kernel.cmdline.append",
            );
        }
        for (key, value) in &raw.set {
            match cmdline::validate_key(key.get_ref()) {
                Err(e) => self.cmdline_param(Err(e), key.span(), "kernel.cmdline.set"),
                Ok(()) => self.cmdline_param(
                    Param::new(key.get_ref(), Some(value.get_ref())).map(drop),
                    value.span(),
                    "kernel.cmdline.set",
                ),
            }
            if let Some((twin, _)) = raw
                .set
                .iter()
                .take_while(|(k, _)| k.span() != key.span())
                .find(|(k, _)| cmdline::keys_match(k.get_ref(), key.get_ref()))
            {
                self.push(
                    Diagnostic::error(
                        code::CMDLINE_CONFLICT,
                        format!(
                            "`{}` and `{}` are the same kernel parameter",
                            twin.get_ref(),
                            key.get_ref()
                        ),
                    )
                    .at(key.span(), "set again here")
                    .related(twin.span(), "first set here")
                    .help("the kernel treats `-` and `_` in parameter names alike: keep one"),
                );
            }
            if let Some(removed) = raw
                .remove
                .iter()
                .find(|r| cmdline::keys_match(r.get_ref(), key.get_ref()))
            {
                self.push(
                    Diagnostic::error(
                        code::CMDLINE_CONFLICT,
                        format!(
                            "kernel parameter `{}` is both set and removed",
                            key.get_ref()
                        ),
                    )
                    .at(key.span(), "set here")
                    .related(removed.span(), "removed here")
                    .help(
                        "`set` already replaces every existing occurrence: drop it from `remove`",
                    ),
                );
            }
        }
        let inherit = raw.inherit.as_ref().is_none_or(|i| *i.get_ref());
        if !inherit && raw.set.is_empty() && raw.append.is_empty() {
            let at = raw.inherit.as_ref().map_or(span, |i| i.span());
            self.push(
                Diagnostic::warning(code::EMPTY_CMDLINE, "the new kernel gets an empty command line")
                    .at(at, "nothing inherited, nothing added")
                    .help("without `root=` and `console=` the new kernel may not find its root or console"),
            );
        }
        CmdlineSpec::Edit {
            inherit,
            remove: raw.remove.iter().map(|r| r.get_ref().clone()).collect(),
            set: raw
                .set
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect(),
            append: raw.append.iter().map(|a| a.get_ref().clone()).collect(),
        }
    }

    fn pci_address(&mut self, text: &Spanned<String>) -> Option<PciAddress> {
        match PciAddress::parse(text.get_ref()) {
            Ok(address) => Some(address),
            Err(why) => {
                self.push(
                    Diagnostic::error(code::PCI_ADDRESS, "malformed PCI address")
                        .at(text.span(), why)
                        .help("copy the address from `lspci -D`, for example \"0000:3b:00.0\""),
                );
                None
            }
        }
    }

    fn pci(&mut self, raw: &[Spanned<raw::RawPci>]) -> Vec<PciDevice> {
        let mut seen: BTreeMap<PciAddress, Range<usize>> = BTreeMap::new();
        let mut devices = Vec::new();
        for entry in raw {
            let entry = entry.get_ref();
            let Some(address) = self.pci_address(&entry.address) else {
                continue;
            };
            if let Some(first) = seen.get(&address) {
                self.push(
                    Diagnostic::error(
                        code::DUPLICATE_DEVICE,
                        format!("PCI device {address} is declared twice"),
                    )
                    .at(entry.address.span(), "second declaration")
                    .related(first.clone(), "first declared here")
                    .help("declare each device once: remove one of the two [[pci]] tables"),
                );
                continue;
            }
            seen.insert(address.clone(), entry.address.span());
            let driver = match &entry.driver {
                Some(d) if self.not_blank(d, "pci.driver") => d.get_ref().clone(),
                _ => DEFAULT_PCI_DRIVER.to_owned(),
            };
            devices.push(PciDevice { address, driver });
        }
        devices
    }

    fn vms(
        &mut self,
        raw: &[Spanned<raw::RawVm>],
        pci: &[Spanned<raw::RawPci>],
        policy: &Policy,
    ) -> Vec<Vm> {
        let mut names = Seen::new();
        let mut owners: BTreeMap<PciAddress, (String, Range<usize>)> = BTreeMap::new();
        let declared: Vec<PciAddress> = pci
            .iter()
            .filter_map(|p| PciAddress::parse(p.get_ref().address.get_ref()).ok())
            .collect();
        let mut vms = Vec::new();
        for table in raw {
            let vm = table.get_ref();
            let name_ok = self.name(&vm.name, "vm", &mut names);
            let name = vm.name.get_ref().clone();
            let driver = match (&vm.qmp, &vm.libvirt) {
                (Some(_), Some(libvirt)) => {
                    self.push(
                        Diagnostic::error(code::VM_DRIVER, format!("vm \"{name}\" has both `qmp` and `libvirt`"))
                            .at(libvirt.span(), "second driver")
                            .help("a VM is driven either over QMP (plain QEMU) or through libvirt: keep one"),
                    );
                    None
                }
                (None, None) => {
                    self.push(
                        Diagnostic::error(code::VM_DRIVER, format!("vm \"{name}\" has no driver"))
                            .at(vm.name.span(), "neither `qmp` nor `libvirt` is set")
                            .help("add `qmp = \"/run/qemu/NAME.qmp\"` (QEMU) or `libvirt = \"DOMAIN\"`"),
                    );
                    None
                }
                (Some(qmp), None) => {
                    let socket = self.absolute(qmp, "vm.qmp");
                    let restart = match &vm.restart {
                        Some(argv) => self.argv(argv, "vm.restart"),
                        None => {
                            self.push(
                                Diagnostic::error(
                                    code::DRIVER_KEY,
                                    format!("vm \"{name}\" uses `qmp` but has no `restart` command"),
                                )
                                .at(qmp.span(), "QEMU must be started again after the kexec")
                                .help(
                                    "add `restart = [\"systemctl\", \"start\", \"qemu@NAME\"]` — a command that \
                                     starts this QEMU with `-incoming defer`",
                                ),
                            );
                            None
                        }
                    };
                    socket
                        .zip(restart)
                        .map(|(socket, restart)| VmDriver::Qmp { socket, restart })
                }
                (None, Some(domain)) => {
                    if let Some(restart) = &vm.restart {
                        self.push(
                            Diagnostic::error(
                                code::DRIVER_KEY,
                                "`restart` is for QMP VMs; libvirt restores the domain",
                            )
                            .at(restart.span(), "not used with libvirt")
                            .help("remove `restart`: kup runs `virsh restore` for libvirt VMs"),
                        );
                    }
                    if let Some(memory) = vm
                        .memory
                        .as_ref()
                        .filter(|m| *m.get_ref() == MemoryMode::Shared)
                    {
                        self.push(
                            Diagnostic::error(
                                code::DRIVER_KEY,
                                "`memory = \"shared\"` needs the QMP driver; `virsh save` always copies RAM",
                            )
                            .at(memory.span(), "not supported with libvirt")
                            .help("remove `memory` or drive this VM over `qmp`"),
                        );
                    }
                    self.not_blank(domain, "vm.libvirt")
                        .then(|| VmDriver::Libvirt {
                            domain: domain.get_ref().clone(),
                        })
                }
            };
            let state = match &vm.state {
                Some(path) => self.durable(path, "vm.state"),
                None => Some(policy.journal.join("state").join(&name)),
            };
            let memory_size =
                vm.memory_size
                    .as_ref()
                    .and_then(|size| match parse_size(size.get_ref()) {
                        Ok(bytes) => Some(bytes),
                        Err(why) => {
                            self.push(
                                Diagnostic::error(
                                    code::SIZE,
                                    format!("`vm.memory_size` is not a valid size: {why}"),
                                )
                                .at(size.span(), "unparsable size")
                                .help("write sizes like \"512MiB\" or \"2GiB\""),
                            );
                            None
                        }
                    });
            let mut devices = Vec::new();
            for device in &vm.devices {
                let Some(address) = self.pci_address(device) else {
                    continue;
                };
                if !declared.contains(&address) {
                    self.push(
                        Diagnostic::error(
                            code::UNDECLARED_DEVICE,
                            format!("vm \"{name}\" uses PCI device {address}, which no [[pci]] table declares"),
                        )
                        .at(device.span(), "not declared")
                        .help(format!(
                            "add [[pci]] with address = \"{address}\" so its driver binding is checked before and \
                             after the kexec"
                        )),
                    );
                }
                if let Some((owner, first)) = owners.get(&address) {
                    self.push(
                        Diagnostic::error(
                            code::DEVICE_CONFLICT,
                            format!("PCI device {address} is claimed by vm \"{owner}\" and vm \"{name}\""),
                        )
                        .at(device.span(), "claimed again here")
                        .related(first.clone(), format!("claimed by \"{owner}\" here"))
                        .help("a pass-through device belongs to one VM at a time"),
                    );
                } else {
                    owners.insert(address.clone(), (name.clone(), device.span()));
                }
                devices.push(address);
            }
            if let (true, Some(driver), Some(state)) = (name_ok, driver, state) {
                vms.push(Vm {
                    name,
                    driver,
                    state,
                    memory: vm
                        .memory
                        .as_ref()
                        .map_or(MemoryMode::Copy, |m| *m.get_ref()),
                    memory_size,
                    devices,
                });
            }
        }
        vms
    }

    fn apps(&mut self, raw: &[Spanned<raw::RawApp>]) -> Vec<App> {
        let mut names = Seen::new();
        let mut apps = Vec::new();
        for table in raw {
            let app = table.get_ref();
            let name_ok = self.name(&app.name, "app", &mut names);
            let name = app.name.get_ref().clone();
            let hooks = app.save.is_some() || app.restore.is_some();
            let kinds = [app.systemd.is_some(), app.criu.is_some(), hooks];
            let kind = match kinds.iter().filter(|k| **k).count() {
                0 => {
                    self.push(
                        Diagnostic::error(code::APP_KIND, format!("app \"{name}\" says nothing about how to save it"))
                            .at(app.name.span(), "no `systemd`, `criu`, `save` or `restore`")
                            .help("add `systemd = \"unit.service\"`, `criu = { pidfile = …, images = … }` or save/restore hooks"),
                    );
                    None
                }
                1 => self.app_kind(app),
                _ => {
                    self.push(
                        Diagnostic::error(
                            code::APP_KIND,
                            format!("app \"{name}\" mixes `systemd`, `criu` and save/restore hooks"),
                        )
                        .at(app.name.span(), "more than one way to save this app")
                        .help("an app is saved one way: keep one of `systemd`, `criu`, or `save`/`restore`"),
                    );
                    None
                }
            };
            if let (true, Some(kind)) = (name_ok, kind) {
                apps.push(App { name, kind });
            }
        }
        apps
    }

    fn app_kind(&mut self, app: &raw::RawApp) -> Option<AppKind> {
        if let Some(unit) = &app.systemd {
            let text = unit.get_ref();
            const SUFFIXES: &[&str] = &[
                ".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope",
            ];
            let suffixed = SUFFIXES.iter().any(|s| text.ends_with(s));
            if !suffixed || text.contains(char::is_whitespace) {
                let (label, help) = if suffixed {
                    (
                        "contains whitespace",
                        "unit names have no spaces: use the name `systemctl list-units` shows"
                            .to_owned(),
                    )
                } else {
                    (
                        "unit name without a type suffix",
                        format!(
                            "write the full unit name, for example \"{}.service\"",
                            text.trim()
                        ),
                    )
                };
                self.push(
                    Diagnostic::error(
                        code::SYSTEMD_UNIT,
                        format!("\"{text}\" is not a systemd unit name"),
                    )
                    .at(unit.span(), label)
                    .help(help),
                );
                return None;
            }
            return Some(AppKind::Systemd { unit: text.clone() });
        }
        if let Some(criu) = &app.criu {
            let criu = criu.get_ref();
            let pidfile = self.absolute(&criu.pidfile, "app.criu.pidfile");
            let images = self.durable(&criu.images, "app.criu.images");
            return pidfile
                .zip(images)
                .map(|(pidfile, images)| AppKind::Criu { pidfile, images });
        }
        let save = app.save.as_ref().map(|a| self.argv(a, "app.save"));
        let restore = app.restore.as_ref().map(|a| self.argv(a, "app.restore"));
        if matches!(save, Some(None)) || matches!(restore, Some(None)) {
            return None;
        }
        Some(AppKind::Hooks {
            save: save.flatten(),
            restore: restore.flatten(),
        })
    }

    fn steps(&mut self, raw: &[Spanned<raw::RawStep>]) -> Vec<CustomStep> {
        let mut names = Seen::new();
        let mut steps = Vec::new();
        for table in raw {
            let step = table.get_ref();
            let name_ok = self.name(&step.name, "step", &mut names);
            let run = self.argv(&step.run, "step.run");
            let timeout = match &step.timeout {
                Some(t) => self.duration(t, "step.timeout"),
                None => Some(DEFAULT_STEP_TIMEOUT),
            };
            let refs = |list: &[Spanned<String>]| {
                list.iter()
                    .map(|r| StepRef {
                        id: r.get_ref().clone(),
                        span: r.span(),
                    })
                    .collect::<Vec<_>>()
            };
            let undo = step.undo.as_ref().map(|u| self.argv(u, "step.undo"));
            if let (true, Some(run), Some(timeout), false) =
                (name_ok, run, timeout, matches!(undo, Some(None)))
            {
                steps.push(CustomStep {
                    name: step.name.get_ref().clone(),
                    run,
                    before: refs(&step.before),
                    after: refs(&step.after),
                    timeout,
                    undo: undo.flatten(),
                    idempotent: step.idempotent.as_ref().is_some_and(|i| *i.get_ref()),
                    span: step.name.span(),
                });
            }
        }
        steps
    }

    fn policy(&mut self, raw: Option<&Spanned<raw::RawPolicy>>) -> Policy {
        let mut policy = Policy {
            isolate: None,
            max_downtime: None,
            max_downtime_span: None,
            parallelism: DEFAULT_PARALLELISM,
            on_failure: OnFailure::Rollback,
            journal: PathBuf::from(DEFAULT_JOURNAL),
            kexec: KexecMethod::Auto,
        };
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return policy;
        };
        if let Some(target) = &raw.isolate {
            if target.get_ref().ends_with(".target")
                && !target.get_ref().contains(char::is_whitespace)
            {
                policy.isolate = Some(target.get_ref().clone());
            } else {
                self.push(
                    Diagnostic::error(
                        code::ISOLATE_TARGET,
                        format!("\"{}\" is not a systemd target", target.get_ref()),
                    )
                    .at(target.span(), "`systemctl isolate` takes a .target unit")
                    .help("for example \"rescue.target\" or \"multi-user.target\""),
                );
            }
        }
        if let Some(max) = &raw.max_downtime {
            policy.max_downtime = self.duration(max, "policy.max_downtime");
            policy.max_downtime_span = Some(max.span());
        }
        if let Some(parallelism) = &raw.parallelism {
            match u32::try_from(*parallelism.get_ref()) {
                Ok(0) | Err(_) => self.push(
                    Diagnostic::error(code::PARALLELISM, "`policy.parallelism` must be at least 1")
                        .at(parallelism.span(), "no step could ever run")
                        .help("use 1 to run steps one after another, or more to run independent steps at once"),
                ),
                Ok(n) => policy.parallelism = n,
            }
        }
        if let Some(on_failure) = &raw.on_failure {
            policy.on_failure = *on_failure.get_ref();
            if policy.on_failure == OnFailure::Stop {
                self.push(
                    Diagnostic::warning(
                        code::ON_FAILURE_STOP,
                        "on a failure, paused VMs stay paused until an operator acts",
                    )
                    .at(on_failure.span(), "no automatic rollback")
                    .help("\"rollback\" resumes VMs and restarts apps automatically; keep \"stop\" only if someone is on call"),
                );
            }
        }
        if let Some(method) = &raw.kexec {
            policy.kexec = *method.get_ref();
            if policy.kexec == KexecMethod::Direct {
                self.push(
                    Diagnostic::warning(
                        code::DIRECT_KEXEC,
                        "a direct kexec leaves file systems mounted: they replay their journals on the new kernel",
                    )
                    .at(method.span(), "no clean shutdown")
                    .help("\"auto\" uses `systemctl kexec` where systemd runs the host; keep \"direct\" for hosts without it or when every millisecond counts"),
                );
            }
        }
        if let Some(journal) = &raw.journal
            && let Some(path) = self.durable(journal, "policy.journal")
        {
            policy.journal = path;
        }
        policy
    }
}
