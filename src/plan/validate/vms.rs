//! `[[vm]]`: each guest's driver, state directory, memory mode and devices.

use super::{Seen, Validator, code};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw;
use crate::plan::units::parse_size;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn vms(
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
            let driver = self.vm_driver(vm, &name);
            let state = match &vm.state {
                Some(path) => self.durable(path, "vm.state"),
                None => Some(policy.journal.join("state").join(&name)),
            };
            let memory_size = self.vm_memory_size(vm);
            let devices = self.vm_devices(vm, &name, &declared, &mut owners);
            let handover = self.vm_handover(vm, &name);
            let unit = vm.unit.as_ref().map(|u| self.systemd_unit(u));
            if let (true, Some(driver), Some(state), Some(handover), false) =
                (name_ok, driver, state, handover, matches!(unit, Some(None)))
            {
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
                    handover,
                    unit: unit.flatten(),
                    // Filled in by `vm_links` once the apps are known.
                    needs: Vec::new(),
                });
            }
        }
        vms
    }

    /// What ties guests to the rest of the plan, checked once the apps are known: each guest's `needs` names
    /// `[[app]]`s, once each; and with `policy.isolate` what keeps the isolate late is warned about
    /// ([`Validator::isolate_protection`]).
    pub(super) fn vm_links(
        &mut self,
        raw: &[Spanned<raw::RawVm>],
        apps: &[App],
        vms: &mut [Vm],
        isolates: bool,
    ) {
        let mut warned = std::collections::BTreeSet::new();
        for table in raw {
            let vm = table.get_ref();
            let name = vm.name.get_ref();
            let mut needs = Vec::new();
            let mut seen: BTreeMap<&str, Range<usize>> = BTreeMap::new();
            for need in &vm.needs {
                let wanted = need.get_ref();
                if let Some(first) = seen.get(wanted.as_str()) {
                    self.push(
                        Diagnostic::error(
                            code::DUPLICATE_NEED,
                            format!("vm \"{name}\" needs app \"{wanted}\" twice"),
                        )
                        .at(need.span(), "named again here")
                        .related(first.clone(), "first named here")
                        .help("name each app once in `needs`"),
                    );
                    continue;
                }
                seen.insert(wanted, need.span());
                match apps.iter().position(|a| &a.name == wanted) {
                    Some(app) => needs.push(app),
                    None => {
                        let names = apps.iter().map(|a| a.name.as_str());
                        let help = match crate::plan::structure::did_you_mean(wanted, names) {
                            Some(guess) => format!("did you mean \"{guess}\"?"),
                            None if apps.is_empty() => format!(
                                "add an [[app]] table with name = \"{wanted}\" saying how it is stopped and \
                                 started (`systemd`, `criu` or hooks)"
                            ),
                            None => format!(
                                "apps in this plan: {}",
                                apps.iter()
                                    .map(|a| a.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        };
                        self.push(
                            Diagnostic::error(
                                code::UNKNOWN_APP,
                                format!("vm \"{name}\" needs app \"{wanted}\", which no [[app]] table defines"),
                            )
                            .at(need.span(), "unknown app")
                            .help(help),
                        );
                    }
                }
            }
            needs.sort_unstable();
            if let Some(v) = vms.iter_mut().find(|v| &v.name == name) {
                v.needs = needs;
            }
            if isolates {
                self.isolate_protection(vm, apps, &mut warned);
            }
        }
    }

    /// With `policy.isolate`, what would keep the isolate from running before the first pause, warned about: a
    /// guest without `unit` (the isolate would stop its QEMU), and a CRIU or hook app a guest needs (kup knows no
    /// unit of its process to keep out of the isolate), each app once (`warned`). Either way the isolate waits until
    /// every guest is saved, inside their downtime.
    fn isolate_protection(
        &mut self,
        vm: &raw::RawVm,
        apps: &[App],
        warned: &mut std::collections::BTreeSet<usize>,
    ) {
        let name = vm.name.get_ref();
        if vm.unit.is_none() {
            let (example, what) = if vm.libvirt.is_some() {
                (
                    "libvirtd.service".to_owned(),
                    "the libvirt daemon that runs it",
                )
            } else {
                (
                    format!("qemu@{name}.service"),
                    "the systemd unit its QEMU runs in",
                )
            };
            self.push(
                Diagnostic::warning(
                    code::ISOLATE_UNPROTECTED,
                    format!(
                        "vm \"{name}\" has no `unit`: `policy.isolate` would stop its QEMU, so the isolate \
                         waits until every guest is saved"
                    ),
                )
                .at(vm.name.span(), "no `unit`")
                .help(format!(
                    "add `unit = \"{example}\"` ({what}): kup keeps it out of the isolate, which then runs \
                     before the first guest pauses, outside their downtime"
                )),
            );
        }
        for need in &vm.needs {
            let Some(i) = apps.iter().position(|a| &a.name == need.get_ref()) else {
                continue;
            };
            let kind = match apps[i].kind {
                AppKind::Systemd { .. } => continue,
                AppKind::Criu { .. } => "a CRIU app",
                AppKind::Hooks { .. } => "a hook app",
            };
            if !warned.insert(i) {
                continue;
            }
            let app = &apps[i].name;
            self.push(
                Diagnostic::warning(
                    code::ISOLATE_UNPROTECTED_APP,
                    format!(
                        "vm \"{name}\" needs app \"{app}\", {kind}: `policy.isolate` would stop its process, so \
                         the isolate waits until every guest is saved"
                    ),
                )
                .at(need.span(), "needed, and not kept out of the isolate")
                .help(format!(
                    "kup keeps only guests' and systemd apps' units out of the isolate: as a systemd app \
                     (`systemd = \"UNIT\"`, stopped and started instead) \"{app}\" would let the isolate run \
                     before the first guest pauses, outside their downtime; otherwise drop `policy.isolate` or \
                     accept the isolate inside the downtime"
                )),
            );
        }
    }

    /// The guest's driver: exactly one of `qmp` (with its `restart`) and `libvirt`.
    fn vm_driver(&mut self, vm: &raw::RawVm, name: &str) -> Option<VmDriver> {
        match (&vm.qmp, &vm.libvirt) {
            (Some(_), Some(libvirt)) => {
                self.push(
                    Diagnostic::error(
                        code::VM_DRIVER,
                        format!("vm \"{name}\" has both `qmp` and `libvirt`"),
                    )
                    .at(libvirt.span(), "second driver")
                    .help(
                        "a VM is driven either over QMP (plain QEMU) or through libvirt: keep one",
                    ),
                );
                None
            }
            (None, None) => {
                self.push(
                    Diagnostic::error(code::VM_DRIVER, format!("vm \"{name}\" has no driver"))
                        .at(vm.name.span(), "neither `qmp` nor `libvirt` is set")
                        .help(
                            "add `qmp = \"/run/qemu/NAME.qmp\"` (QEMU) or `libvirt = \"DOMAIN\"`",
                        ),
                );
                None
            }
            (Some(qmp), None) => {
                if let Some(uri) = &vm.libvirt_uri {
                    self.push(
                        Diagnostic::error(
                            code::DRIVER_KEY,
                            "`libvirt_uri` is for libvirt VMs; this one is driven over QMP",
                        )
                        .at(uri.span(), "not used with qmp")
                        .help("remove `libvirt_uri`, or drive this VM through `libvirt`"),
                    );
                }
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
                let owner_ok = vm
                    .qmp_owner
                    .as_ref()
                    .is_none_or(|o| self.not_blank(o, "vm.qmp_owner"));
                socket
                    .zip(restart)
                    .filter(|_| owner_ok)
                    .map(|(socket, restart)| VmDriver::Qmp {
                        socket,
                        restart,
                        owner: vm.qmp_owner.as_ref().map(|o| o.get_ref().trim().to_owned()),
                    })
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
                if let Some(owner) = &vm.qmp_owner {
                    self.push(
                        Diagnostic::error(
                            code::DRIVER_KEY,
                            "`qmp_owner` is for QMP VMs; libvirt owns its domains' sockets",
                        )
                        .at(owner.span(), "not used with libvirt")
                        .help("remove `qmp_owner`"),
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
                let uri_ok = vm
                    .libvirt_uri
                    .as_ref()
                    .is_none_or(|uri| self.not_blank(uri, "vm.libvirt_uri"));
                (self.not_blank(domain, "vm.libvirt") && uri_ok).then(|| VmDriver::Libvirt {
                    domain: domain.get_ref().clone(),
                    uri: vm.libvirt_uri.as_ref().map(|u| u.get_ref().clone()),
                })
            }
        }
    }

    /// `handover` and its `shutdown_timeout`: a restarted guest has no RAM to keep and needs QMP to be shut down.
    fn vm_handover(&mut self, vm: &raw::RawVm, name: &str) -> Option<Handover> {
        let restart = vm
            .handover
            .as_ref()
            .filter(|h| *h.get_ref() == raw::Handover::Restart);
        let Some(restart) = restart else {
            if let Some(timeout) = &vm.shutdown_timeout {
                self.push(
                    Diagnostic::error(
                        code::DRIVER_KEY,
                        format!("vm \"{name}\" has `shutdown_timeout` but is saved, not restarted"),
                    )
                    .at(timeout.span(), "only used with handover = \"restart\"")
                    .help("remove `shutdown_timeout`, or set `handover = \"restart\"`"),
                );
            }
            return Some(Handover::Save);
        };
        let mut ok = true;
        if vm.libvirt.is_some() {
            self.push(
                Diagnostic::error(
                    code::DRIVER_KEY,
                    "`handover = \"restart\"` needs the QMP driver",
                )
                .at(restart.span(), "not supported with libvirt")
                .help("drive this VM over `qmp`, or let libvirt save it (remove `handover`)"),
            );
            ok = false;
        }
        if let Some(memory) = &vm.memory {
            self.push(
                Diagnostic::error(
                    code::DRIVER_KEY,
                    format!("vm \"{name}\" is restarted, so its RAM is not kept: `memory` has no meaning"),
                )
                .at(memory.span(), "a restarted guest boots with fresh RAM")
                .help("remove `memory`, or remove `handover = \"restart\"` to save the guest"),
            );
            ok = false;
        }
        let shutdown_timeout = match &vm.shutdown_timeout {
            Some(t) => self.duration(t, "vm.shutdown_timeout")?,
            None => DEFAULT_SHUTDOWN_TIMEOUT,
        };
        ok.then_some(Handover::Restart { shutdown_timeout })
    }

    /// `memory_size`, which the downtime estimate uses.
    fn vm_memory_size(&mut self, vm: &raw::RawVm) -> Option<u64> {
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
            })
    }

    /// The guest's pass-through devices: each declared in `[[pci]]` and owned by one guest only.
    fn vm_devices(
        &mut self,
        vm: &raw::RawVm,
        name: &str,
        declared: &[PciAddress],
        owners: &mut BTreeMap<PciAddress, (String, Range<usize>)>,
    ) -> Vec<PciAddress> {
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
                        format!(
                            "PCI device {address} is claimed by vm \"{owner}\" and vm \"{name}\""
                        ),
                    )
                    .at(device.span(), "claimed again here")
                    .related(first.clone(), format!("claimed by \"{owner}\" here"))
                    .help("a pass-through device belongs to one VM at a time"),
                );
            } else {
                owners.insert(address.clone(), (name.to_owned(), device.span()));
            }
            devices.push(address);
        }
        devices
    }
}
