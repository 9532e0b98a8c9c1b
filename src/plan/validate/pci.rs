//! `[[pci]]`: device addresses and the drivers they must be bound to.

use super::{Validator, code};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn pci_address(&mut self, text: &Spanned<String>) -> Option<PciAddress> {
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

    pub(super) fn pci(&mut self, raw: &[Spanned<raw::RawPci>]) -> Vec<PciDevice> {
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
}
