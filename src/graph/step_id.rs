//! Typed step ids: what a step is about (its kind and subject), parsed and rendered in this one place.
//!
//! The text form (`vm:db-1:save`) is what plans write in `before` / `after`, what the journal records and what
//! status shows; everything that decides something about a step (may it run again? which guest is it?) asks the
//! typed id, never the string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A step's identity. Names are plan names (`[[vm]] name`, …), which never contain `:`; PCI addresses do, which is
/// why ids are parsed by prefix and suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepId {
    /// `preflight`: checks that nothing has changed yet and everything the plan needs is there.
    Preflight,
    /// `kernel:load`: the new kernel loaded for kexec.
    KernelLoad,
    /// `pci:ADDRESS:check`: a device bound as the plan says.
    PciCheck {
        /// The device's PCI address.
        address: String,
    },
    /// `pci:ADDRESS:bind`: after the kexec, the device bound to the plan's driver again.
    PciBind {
        /// The device's PCI address.
        address: String,
    },
    /// `vm:NAME:pause`.
    VmPause {
        /// The guest's plan name.
        vm: String,
    },
    /// `vm:NAME:save`.
    VmSave {
        /// The guest's plan name.
        vm: String,
    },
    /// `vm:NAME:shutdown`: a `handover = "restart"` guest powered off before the kexec.
    VmShutdown {
        /// The guest's plan name.
        vm: String,
    },
    /// `app:NAME:save`.
    AppSave {
        /// The app's plan name.
        app: String,
    },
    /// `preflush`: the shared guests' RAM files and the file systems holding state and journal written back while
    /// the guests still run, so that `sync` inside their downtime flushes only what they dirtied since.
    Preflush,
    /// `sync`: state durable before the kexec.
    Sync,
    /// `isolate`: `systemctl isolate` of `policy.isolate`.
    Isolate,
    /// `kexec`: the point of no return.
    Kexec,
    /// `app:NAME:restore`.
    AppRestore {
        /// The app's plan name.
        app: String,
    },
    /// `vm:NAME:restore`.
    VmRestore {
        /// The guest's plan name.
        vm: String,
    },
    /// `vm:NAME:resume`.
    VmResume {
        /// The guest's plan name.
        vm: String,
    },
    /// `vm:NAME:boot`: a `handover = "restart"` guest started again after the kexec.
    VmBoot {
        /// The guest's plan name.
        vm: String,
    },
    /// `verify`: everything back as planned; state files removed.
    Verify,
    /// `step:NAME`: a `[[step]]` of the plan.
    Custom {
        /// The step's plan name.
        name: String,
    },
    /// `livepatch:NAME:load`: the live patch module loaded into the running kernel.
    LivepatchLoad {
        /// The patch's name (`/sys/kernel/livepatch/NAME`).
        name: String,
    },
    /// `livepatch:NAME:transition`: every task runs the patched code.
    LivepatchTransition {
        /// The patch's name.
        name: String,
    },
    /// `livepatch:NAME:remove`: the patch disabled and its module removed.
    LivepatchRemove {
        /// The patch's name.
        name: String,
    },
}

impl StepId {
    /// Whether a built-in step may run again after an interruption; `None` for a custom step, whose plan says.
    /// A save writes a temporary file and renames it, so repeating a guest's save overwrites nothing that matters;
    /// an app's save (a stopped unit, a CRIU dump) and every restore are not safe to repeat blindly.
    pub(crate) fn builtin_idempotent(&self) -> Option<bool> {
        use StepId::*;
        match self {
            Preflight | KernelLoad | PciCheck { .. } | Preflush | Sync | Isolate | Verify => {
                Some(true)
            }
            // A device bound as planned is left alone: nothing is written the second time.
            PciBind { .. } => Some(true),
            VmPause { .. } | VmResume { .. } | VmSave { .. } => Some(true),
            // A shutdown of a guest that is already gone is a no-op; a boot repeated would start a second QEMU.
            VmShutdown { .. } => Some(true),
            AppSave { .. } | AppRestore { .. } | VmRestore { .. } | VmBoot { .. } | Kexec => {
                Some(false)
            }
            // Waiting for a transition and checking `enabled` changes nothing; a load or a removal interrupted
            // half-way needs an operator's look at /sys/kernel/livepatch.
            LivepatchTransition { .. } => Some(true),
            LivepatchLoad { .. } | LivepatchRemove { .. } => Some(false),
            Custom { .. } => None,
        }
    }

    /// The guest a step is about.
    pub(crate) fn vm(&self) -> Option<&str> {
        match self {
            StepId::VmPause { vm }
            | StepId::VmSave { vm }
            | StepId::VmRestore { vm }
            | StepId::VmResume { vm }
            | StepId::VmShutdown { vm }
            | StepId::VmBoot { vm } => Some(vm),
            _ => None,
        }
    }
}

impl StepId {
    /// The text form, `vm:db-1:save`. Joined rather than formatted: every step's id is written out while its
    /// graph is built.
    fn text(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            StepId::Preflight => Borrowed("preflight"),
            StepId::KernelLoad => Borrowed("kernel:load"),
            StepId::PciCheck { address } => Owned(["pci:", address, ":check"].concat()),
            StepId::PciBind { address } => Owned(["pci:", address, ":bind"].concat()),
            StepId::VmPause { vm } => Owned(["vm:", vm, ":pause"].concat()),
            StepId::VmSave { vm } => Owned(["vm:", vm, ":save"].concat()),
            StepId::VmShutdown { vm } => Owned(["vm:", vm, ":shutdown"].concat()),
            StepId::VmBoot { vm } => Owned(["vm:", vm, ":boot"].concat()),
            StepId::AppSave { app } => Owned(["app:", app, ":save"].concat()),
            StepId::Preflush => Borrowed("preflush"),
            StepId::Sync => Borrowed("sync"),
            StepId::Isolate => Borrowed("isolate"),
            StepId::Kexec => Borrowed("kexec"),
            StepId::AppRestore { app } => Owned(["app:", app, ":restore"].concat()),
            StepId::VmRestore { vm } => Owned(["vm:", vm, ":restore"].concat()),
            StepId::VmResume { vm } => Owned(["vm:", vm, ":resume"].concat()),
            StepId::Verify => Borrowed("verify"),
            StepId::Custom { name } => Owned(["step:", name].concat()),
            StepId::LivepatchLoad { name } => Owned(["livepatch:", name, ":load"].concat()),
            StepId::LivepatchTransition { name } => {
                Owned(["livepatch:", name, ":transition"].concat())
            }
            StepId::LivepatchRemove { name } => Owned(["livepatch:", name, ":remove"].concat()),
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that listings can align ids with `{:width$}`.
        f.pad(&self.text())
    }
}

/// Text that is no step id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStepId(pub String);

impl fmt::Display for UnknownStepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a step id", self.0)
    }
}

impl std::error::Error for UnknownStepId {}

/// An id about one subject, written `PREFIX` subject `SUFFIX`: those two, and the id for a subject.
type SubjectForm = (&'static str, &'static str, fn(String) -> StepId);

/// Every id with a subject.
const SUBJECT_FORMS: &[SubjectForm] = &[
    ("pci:", ":check", |address| StepId::PciCheck { address }),
    ("pci:", ":bind", |address| StepId::PciBind { address }),
    ("vm:", ":pause", |vm| StepId::VmPause { vm }),
    ("vm:", ":save", |vm| StepId::VmSave { vm }),
    ("vm:", ":restore", |vm| StepId::VmRestore { vm }),
    ("vm:", ":resume", |vm| StepId::VmResume { vm }),
    ("vm:", ":shutdown", |vm| StepId::VmShutdown { vm }),
    ("vm:", ":boot", |vm| StepId::VmBoot { vm }),
    ("app:", ":save", |app| StepId::AppSave { app }),
    ("app:", ":restore", |app| StepId::AppRestore { app }),
    ("livepatch:", ":load", |name| StepId::LivepatchLoad { name }),
    ("livepatch:", ":transition", |name| {
        StepId::LivepatchTransition { name }
    }),
    ("livepatch:", ":remove", |name| StepId::LivepatchRemove {
        name,
    }),
];

impl FromStr for StepId {
    type Err = UnknownStepId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fixed = match text {
            "preflight" => Some(StepId::Preflight),
            "kernel:load" => Some(StepId::KernelLoad),
            "preflush" => Some(StepId::Preflush),
            "sync" => Some(StepId::Sync),
            "isolate" => Some(StepId::Isolate),
            "kexec" => Some(StepId::Kexec),
            "verify" => Some(StepId::Verify),
            _ => None,
        };
        if let Some(id) = fixed {
            return Ok(id);
        }
        let parsed = match text.strip_prefix("step:").filter(|name| !name.is_empty()) {
            Some(name) => Some(StepId::Custom {
                name: name.to_owned(),
            }),
            None => SUBJECT_FORMS.iter().find_map(|(prefix, suffix, id)| {
                let subject = text.strip_prefix(prefix)?.strip_suffix(suffix)?;
                // A PCI address has colons of its own; a guest's, an app's or a patch's name has none.
                let plain = *prefix == "pci:" || !subject.contains(':');
                (!subject.is_empty() && plain).then(|| id(subject.to_owned()))
            }),
        };
        parsed.ok_or_else(|| UnknownStepId(text.to_owned()))
    }
}

impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What names a step in a lookup: its typed id, or the text a plan or an operator wrote.
pub trait StepKey {
    /// The id's text.
    fn key(&self) -> std::borrow::Cow<'_, str>;
}

impl StepKey for StepId {
    fn key(&self) -> std::borrow::Cow<'_, str> {
        self.text()
    }
}

impl StepKey for str {
    fn key(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl StepKey for String {
    fn key(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl PartialEq<str> for StepId {
    fn eq(&self, other: &str) -> bool {
        other.parse::<StepId>().is_ok_and(|id| id == *self)
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_reads_back_as_itself() {
        for text in [
            "preflight",
            "kernel:load",
            "pci:0000:3b:00.0:check",
            "pci:0000:3b:00.0:bind",
            "vm:db-1:pause",
            "vm:db-1:save",
            "app:spdk:save",
            "preflush",
            "sync",
            "isolate",
            "kexec",
            "app:spdk:restore",
            "vm:db-1:restore",
            "vm:db-1:resume",
            "verify",
            "step:drain-lb",
            "vm:db-1:shutdown",
            "vm:db-1:boot",
            "livepatch:fix-1:load",
            "livepatch:fix-1:transition",
            "livepatch:fix-1:remove",
        ] {
            let id: StepId = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn text_that_names_no_step_is_refused() {
        for text in [
            "",
            "vm:",
            "vm:db",
            "vm::pause",
            "vm:db:stop",
            "step:",
            "pci:x",
            "pci:0000:3b:00.0:rebind",
            "pci::bind",
            "app:a:b:save",
            "livepatch:a:b:load",
            "livepatch::remove",
            "Kexec",
        ] {
            assert!(text.parse::<StepId>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn idempotence_comes_from_the_kind() {
        let vm = |f: fn(String) -> StepId| f("db".into()).builtin_idempotent();
        assert_eq!(vm(|vm| StepId::VmSave { vm }), Some(true));
        assert_eq!(vm(|vm| StepId::VmRestore { vm }), Some(false));
        assert_eq!(
            StepId::AppSave { app: "a".into() }.builtin_idempotent(),
            Some(false)
        );
        assert_eq!(StepId::Kexec.builtin_idempotent(), Some(false));
        let bind = StepId::PciBind {
            address: "0000:3b:00.0".into(),
        };
        assert_eq!(bind.builtin_idempotent(), Some(true));
        assert_eq!(
            StepId::Custom { name: "x".into() }.builtin_idempotent(),
            None
        );
    }

    #[test]
    fn ids_serialise_as_their_text() {
        let id = StepId::VmPause { vm: "db-1".into() };
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"vm:db-1:pause\"");
        let back: StepId = serde_json::from_str("\"vm:db-1:pause\"").unwrap();
        assert_eq!(back, id);
    }
}
