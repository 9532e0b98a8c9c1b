//! `pci:ADDR:bind`: after the kexec, a `[[pci]]` device bound to the plan's driver again (the new kernel gave it
//! to its default driver at boot), before the guest that owns it is restored.

use super::{Compiled, PCI_BIND_TIMEOUT, ms};
use crate::action::{Action, BindPci};
use crate::plan::{PciDevice, Plan};

/// The driver that passes a device through, and the one whose IOMMU group must be usable.
const VFIO: &str = "vfio-pci";

/// The bind of `device`: its driver loaded with `modprobe` when missing, and for vfio-pci its IOMMU group checked,
/// with the other vfio-pci devices of the same guest named as peers (one group, one guest: VFIO opens a group in
/// one container, so devices that share one are the same guest's, and each is bound by its own step).
pub(super) fn bind(plan: &Plan, device: Option<&PciDevice>) -> Compiled {
    let Some(d) = device else {
        return Compiled::default();
    };
    let iommu = d.driver == VFIO;
    let peers = if iommu {
        plan.vms
            .iter()
            .filter(|vm| vm.devices.contains(&d.address))
            .flat_map(|vm| &vm.devices)
            .filter(|a| **a != d.address)
            .filter(|a| {
                plan.pci
                    .iter()
                    .any(|p| &p.address == *a && p.driver == VFIO)
            })
            .map(|a| a.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let bind = Action::BindPci(BindPci {
        address: d.address.to_string(),
        driver: d.driver.clone(),
        load: vec!["modprobe".to_owned(), d.driver.clone()],
        iommu,
        peers,
        timeout_ms: ms(PCI_BIND_TIMEOUT),
    });
    (vec![bind], Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let (plan, _) = crate::check::check("t.toml", text.as_bytes())
            .valid()
            .unwrap_or_else(|report| panic!("{}", report.render(false, 100)));
        plan
    }

    const TWO_FUNCTIONS: &str = r#"kup = 1
[kernel]
image = "/boot/vmlinuz"
[[vm]]
name = "db"
libvirt = "db"
state = "/var/lib/kup/state/db"
devices = ["0000:3b:00.0", "0000:3b:00.1"]
[[vm]]
name = "web"
libvirt = "web"
state = "/var/lib/kup/state/web"
devices = ["0000:5e:00.0"]
[[pci]]
address = "0000:3b:00.0"
[[pci]]
address = "0000:3B:00.1"
[[pci]]
address = "0000:5e:00.0"
[[pci]]
address = "0000:af:00.0"
driver = "nvme"
"#;

    #[test]
    fn a_vfio_device_names_its_guests_other_vfio_devices_as_peers() {
        let p = plan(TWO_FUNCTIONS);
        let (actions, rollback) = bind(&p, p.pci.first());
        assert!(rollback.is_empty());
        assert_eq!(
            actions,
            [Action::BindPci(BindPci {
                address: "0000:3b:00.0".into(),
                driver: "vfio-pci".into(),
                load: vec!["modprobe".into(), "vfio-pci".into()],
                iommu: true,
                peers: vec!["0000:3b:00.1".into()],
                timeout_ms: 60_000,
            })]
        );
        // Another guest's device is no peer: it cannot share the group.
        let (actions, _) = bind(&p, p.pci.get(2));
        assert!(
            matches!(&actions[0], Action::BindPci(b) if b.iommu && b.peers.is_empty()),
            "{actions:?}"
        );
    }

    #[test]
    fn a_device_for_another_driver_needs_no_iommu_group() {
        let p = plan(TWO_FUNCTIONS);
        let (actions, _) = bind(&p, p.pci.get(3));
        assert!(
            matches!(&actions[0], Action::BindPci(b)
                if b.driver == "nvme" && b.load == ["modprobe", "nvme"] && !b.iommu && b.peers.is_empty()),
            "{actions:?}"
        );
    }
}
