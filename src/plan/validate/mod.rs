//! Semantic checks that types alone cannot express — paths that must survive a kexec, names that must be unique,
//! devices owned twice — collected all at once so a reviewer sees every problem in one run.

mod apps;
mod fields;
mod kernel;
mod livepatch;
mod memmap;
mod pci;
mod policy;
mod vms;

use super::diagnostic::Diagnostic;
use super::model::*;
use super::raw::RawPlan;
use std::collections::BTreeMap;
use std::ops::Range;

/// Stable diagnostic codes of the semantic checks (the structural ones live in [`super::structure`]).
pub(crate) mod code {
    pub(crate) const VERSION: &str = "kup::plan::version";
    pub(crate) const RELATIVE_PATH: &str = "kup::plan::relative-path";
    pub(crate) const VOLATILE_PATH: &str = "kup::plan::volatile-path";
    pub(crate) const TMP_PATH: &str = "kup::plan::tmp-path";
    pub(crate) const DUPLICATE_NAME: &str = "kup::plan::duplicate-name";
    pub(crate) const INVALID_NAME: &str = "kup::plan::invalid-name";
    pub(crate) const VM_DRIVER: &str = "kup::plan::vm-driver";
    pub(crate) const DRIVER_KEY: &str = "kup::plan::driver-key";
    pub(crate) const PCI_ADDRESS: &str = "kup::plan::pci-address";
    pub(crate) const DEVICE_CONFLICT: &str = "kup::plan::device-conflict";
    pub(crate) const UNDECLARED_DEVICE: &str = "kup::plan::undeclared-device";
    pub(crate) const DUPLICATE_DEVICE: &str = "kup::plan::duplicate-device";
    pub(crate) const SHA256: &str = "kup::plan::sha256";
    pub(crate) const DURATION: &str = "kup::plan::duration";
    pub(crate) const SIZE: &str = "kup::plan::size";
    pub(crate) const PARALLELISM: &str = "kup::plan::parallelism";
    pub(crate) const EMPTY_ARGV: &str = "kup::plan::empty-argv";
    pub(crate) const ARGV_SHELL_STRING: &str = "kup::plan::argv-shell-string";
    pub(crate) const CMDLINE_CONFLICT: &str = "kup::plan::cmdline-conflict";
    pub(crate) const CMDLINE_PARAM: &str = "kup::plan::cmdline-param";
    pub(crate) const EMPTY_CMDLINE: &str = "kup::plan::empty-cmdline";
    pub(crate) const HOST_GLOB: &str = "kup::plan::host-glob";
    pub(crate) const APP_KIND: &str = "kup::plan::app-kind";
    pub(crate) const KERNEL_VERSION: &str = "kup::plan::kernel-version";
    pub(crate) const UNPINNED_KERNEL: &str = "kup::plan::unpinned-kernel";
    pub(crate) const ISOLATE_TARGET: &str = "kup::plan::isolate-target";
    pub(crate) const SYSTEMD_UNIT: &str = "kup::plan::systemd-unit";
    pub(crate) const ON_FAILURE_STOP: &str = "kup::plan::on-failure-stop";
    pub(crate) const DIRECT_KEXEC: &str = "kup::plan::direct-kexec";
    pub(crate) const EMPTY_VALUE: &str = "kup::plan::empty-value";
    pub(crate) const LIVEPATCH_WITH_KERNEL: &str = "kup::plan::livepatch-with-kernel";
    pub(crate) const LIVEPATCH_MODULE: &str = "kup::plan::livepatch-module";
    pub(crate) const LIVEPATCH_NAME: &str = "kup::plan::livepatch-name";
    pub(crate) const LIVEPATCH_UNTOUCHED: &str = "kup::plan::livepatch-untouched";
    pub(crate) const SHARED_RAM_MEMMAP: &str = "kup::plan::shared-ram-memmap";
    pub(crate) const UNKNOWN_APP: &str = "kup::plan::unknown-app";
    pub(crate) const DUPLICATE_NEED: &str = "kup::plan::duplicate-need";
    pub(crate) const ISOLATE_UNPROTECTED: &str = "kup::plan::isolate-unprotected";
    pub(crate) const ISOLATE_UNPROTECTED_APP: &str = "kup::plan::isolate-unprotected-app";

    /// Codes that report something absent: after the structural pass removed a badly typed key, these would only
    /// repeat its finding.
    pub(crate) const ABSENCE: &[&str] = &[VM_DRIVER, DRIVER_KEY, APP_KIND, EMPTY_ARGV];
}

/// File systems whose contents are gone after a kexec (tmpfs, or not files at all).
const VOLATILE_ROOTS: &[&str] = &["/run", "/var/run", "/dev/shm", "/dev", "/proc", "/sys"];

/// Checks a structurally sound raw plan. Returns the plan only when there is no error.
pub(crate) fn validate(raw: &RawPlan, out: &mut Vec<Diagnostic>) -> Option<Plan> {
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
    pub(super) fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    pub(super) fn plan(&mut self, raw: &RawPlan) -> Plan {
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
        self.update_kind(raw);
        let kernel = raw.kernel.as_ref().map(|k| self.kernel(k.get_ref()));
        let livepatch = raw.livepatch.as_ref().map(|l| self.livepatch(l.get_ref()));
        self.livepatch_untouched(raw);
        let pci = self.pci(&raw.pci);
        let mut vms = self.vms(&raw.vms, &raw.pci, &policy);
        self.shared_ram_memmap(raw);
        let apps = self.apps(&raw.apps);
        let isolates = policy.isolate.is_some() && raw.livepatch.is_none();
        self.vm_links(&raw.vms, &apps, &mut vms, isolates);
        let steps = self.steps(&raw.steps);
        Plan {
            name: raw.name.as_ref().map(|n| n.get_ref().clone()),
            hosts,
            kernel,
            livepatch,
            vms,
            pci,
            apps,
            steps,
            policy,
        }
    }
}
