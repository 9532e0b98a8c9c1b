//! A shared-RAM guest with a `[kernel.cmdline]` that would drop `memmap=`: on a host whose persistent memory is carved
//! out of RAM (`memmap=SIZE!OFFSET` → `/dev/pmem0`), the guest's RAM lives in that region, and a new kernel without
//! the parameter takes the region as ordinary RAM. Only a warning: offline kup cannot know whether the RAM file is
//! on such a region at all (a disk, or real NVDIMMs, need no `memmap=`); the preflight refuses when it is.

use super::{Validator, code};
use crate::cmdline::{self, Param};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::MemoryMode;
use crate::plan::raw::{RawCmdline, RawPlan};
use std::ops::Range;

const HELP: &str = "if this host's persistent memory is carved by `memmap=SIZE!OFFSET` (legacy pmem), keep it: \
                    inherit it (`inherit = true`, not in `remove`) or name it in `set`, `append` or `value`; the \
                    preflight refuses a guest whose RAM file is on pmem when the new command line lacks it";

impl Validator<'_> {
    /// The warning for each way `[kernel.cmdline]` drops `memmap=` while a guest has `memory = "shared"`.
    pub(super) fn shared_ram_memmap(&mut self, raw: &RawPlan) {
        let Some(shared) = raw.vms.iter().find_map(|vm| {
            vm.get_ref()
                .memory
                .as_ref()
                .filter(|m| *m.get_ref() == MemoryMode::Shared)
                .map(|m| (vm.get_ref().name.get_ref().clone(), m.span()))
        }) else {
            return;
        };
        let Some(c) = raw
            .kernel
            .as_ref()
            .and_then(|k| k.get_ref().cmdline.as_ref())
        else {
            return;
        };
        for (span, label) in drops(c.get_ref()) {
            let (vm, memory) = shared.clone();
            self.push(
                Diagnostic::warning(
                    code::SHARED_RAM_MEMMAP,
                    format!(
                        "vm \"{vm}\" keeps its RAM across the kexec, but the new kernel's command line drops \
                         `memmap=`"
                    ),
                )
                .at(span, label)
                .related(memory, "RAM expected to survive the kexec")
                .help(HELP),
            );
        }
    }
}

/// Where `c` drops a `memmap=` of the running command line, with a label for that span.
fn drops(c: &RawCmdline) -> Vec<(Range<usize>, &'static str)> {
    let names_memmap = |text: &str| {
        cmdline::Cmdline::parse(text)
            .params()
            .iter()
            .any(|p| p.has_key("memmap"))
    };
    if let Some(value) = &c.value {
        return if names_memmap(value.get_ref()) {
            Vec::new()
        } else {
            vec![(value.span(), "replaces the command line, with no `memmap=`")]
        };
    }
    let mut found: Vec<(Range<usize>, &'static str)> = c
        .remove
        .iter()
        .filter(|r| cmdline::keys_match(r.get_ref(), "memmap"))
        .map(|r| (r.span(), "removes every `memmap=`"))
        .collect();
    let added = c
        .set
        .keys()
        .any(|k| cmdline::keys_match(k.get_ref(), "memmap"))
        || c.append
            .iter()
            .any(|a| Param::parse_one(a.get_ref()).is_ok_and(|p| p.has_key("memmap")));
    if let Some(inherit) = c.inherit.as_ref().filter(|i| !*i.get_ref())
        && !added
    {
        found.push((inherit.span(), "nothing inherited, no `memmap=` added"));
    }
    found
}

#[cfg(test)]
mod tests {
    const HEAD: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\nsha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n";

    fn warned(cmdline: &str, memory: &str) -> usize {
        let text = format!(
            "{HEAD}[kernel.cmdline]\n{cmdline}\n[[vm]]\nname = \"db\"\nqmp = \"/run/qemu/db.qmp\"\nstate = \"/var/lib/kup/db\"\nmemory = \"{memory}\"\nrestart = [\"true\"]\n"
        );
        crate::plan::load("t.toml", text.as_bytes())
            .report
            .diagnostics
            .iter()
            .filter(|d| d.code == super::code::SHARED_RAM_MEMMAP)
            .count()
    }

    #[test]
    fn only_a_command_line_that_drops_memmap_with_a_shared_guest_is_warned() {
        for (cmdline, want) in [
            ("inherit = true", 0),
            ("remove = [\"quiet\"]", 0),
            ("remove = [\"memmap\"]", 1),
            ("inherit = false\nappend = [\"memmap=4G!12G\"]", 0),
            ("inherit = false\nset = { memmap = \"4G!12G\" }", 0),
            ("inherit = false\nappend = [\"root=/dev/sda1\"]", 1),
            (
                "inherit = false\nremove = [\"memmap\"]\nappend = [\"memmap=4G!12G\"]",
                1,
            ),
            ("value = \"root=/dev/sda1 memmap=4G!12G\"", 0),
            ("value = \"root=/dev/sda1\"", 1),
        ] {
            assert_eq!(warned(cmdline, "shared"), want, "{cmdline}");
            assert_eq!(warned(cmdline, "copy"), 0, "{cmdline} with copied RAM");
        }
    }
}
