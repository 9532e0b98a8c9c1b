//! `[livepatch]`: the module, its name as sysfs shows it, its pin and its transition's time limit; and the choice
//! between a live patch and a kexec, which a plan must make (one of `[kernel]` and `[livepatch]`, not both).

use super::{Validator, code};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw::{self, RawPlan};
use crate::plan::structure::MISSING_KEY;
use toml::Spanned;

/// Longest module name the kernel accepts (`MODULE_NAME_LEN` is 64 − sizeof(unsigned long), NUL included).
pub const MAX_MODULE_NAME: usize = 55;

/// "a", "a and b", "a, b and c".
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl Validator<'_> {
    /// Exactly one of `[kernel]` and `[livepatch]`.
    pub(super) fn update_kind(&mut self, raw: &RawPlan) {
        match (&raw.kernel, &raw.livepatch) {
            (Some(kernel), Some(livepatch)) => self.push(
                Diagnostic::error(
                    code::LIVEPATCH_WITH_KERNEL,
                    "the plan has both `[kernel]` and `[livepatch]`: kup cannot tell whether to live-patch the \
                     running kernel or to kexec into a new one",
                )
                .at(livepatch.span(), "a live patch of the running kernel")
                .related(kernel.span(), "a kexec into another kernel")
                .help(
                    "choose: write two plans — one with `[livepatch]` to patch the running kernel now (no \
                     guest downtime), one with `[kernel]` to kexec into the fixed kernel later",
                ),
            ),
            (None, None) => self.push(
                Diagnostic::error(MISSING_KEY, "the plan is missing the required key `kernel`")
                    .at(0..0, "`kernel` missing here")
                    .help(
                        "add `kernel`: the kernel to kexec into (or a `[livepatch]` table to live-patch the running \
                         kernel instead)",
                    ),
            ),
            _ => {}
        }
    }

    pub(super) fn livepatch(&mut self, raw: &raw::RawLivepatch) -> Livepatch {
        let action = raw
            .action
            .as_ref()
            .map_or(LivepatchAction::Apply, |a| *a.get_ref());
        let module = match (&raw.module, action) {
            (Some(path), _) => self.absolute(path, "livepatch.module"),
            (None, LivepatchAction::Remove) => None,
            (None, LivepatchAction::Apply) => {
                self.push(
                    Diagnostic::error(
                        code::LIVEPATCH_MODULE,
                        "`[livepatch]` names no `module` to load",
                    )
                    .at(raw.name.span(), "the patch to load")
                    .help(
                        "add `module = \"/path/to/patch.ko\"`; to remove a loaded patch, write `action = \"remove\"`",
                    ),
                );
                None
            }
        };
        self.livepatch_name(&raw.name);
        let sha256 = raw.sha256.as_ref().and_then(|sum| {
            let file = raw
                .module
                .as_ref()
                .map_or("MODULE.ko", |m| m.get_ref().as_str());
            self.sha256(sum, "livepatch.sha256", file)
        });
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(t, "livepatch.timeout"))
            .unwrap_or(DEFAULT_LIVEPATCH_TIMEOUT);
        Livepatch {
            module,
            name: raw.name.get_ref().clone(),
            sha256,
            timeout,
            action,
        }
    }

    fn livepatch_name(&mut self, name: &Spanned<String>) {
        let text = name.get_ref();
        let valid = !text.is_empty()
            && text.len() <= MAX_MODULE_NAME
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            return;
        }
        let help = if text.contains('-') {
            format!(
                "the kernel names a module with `_` for each `-` of its file name: write \"{}\"",
                text.replace('-', "_")
            )
        } else {
            format!(
                "the name is the module's, as `/sys/kernel/livepatch/NAME` shows it: 1–{MAX_MODULE_NAME} letters, \
                 digits or `_`"
            )
        };
        self.push(
            Diagnostic::error(
                code::LIVEPATCH_NAME,
                format!("\"{text}\" is not a live patch name"),
            )
            .at(name.span(), "not a module name")
            .help(help),
        );
    }

    /// What a live patch plan leaves alone, said once: guests, apps and devices are not touched (the running
    /// kernel is patched under them), and the kexec settings of `[policy]` have nothing to act on.
    pub(super) fn livepatch_untouched(&mut self, raw: &RawPlan) {
        let Some(livepatch) = &raw.livepatch else {
            return;
        };
        let mut untouched = Vec::new();
        if !raw.vms.is_empty() {
            untouched.push("`[[vm]]`s");
        }
        if !raw.apps.is_empty() {
            untouched.push("`[[app]]`s");
        }
        if !raw.pci.is_empty() {
            untouched.push("`[[pci]]` devices");
        }
        let policy = raw.policy.as_ref().map(Spanned::get_ref);
        if policy.is_some_and(|p| p.isolate.is_some()) {
            untouched.push("`policy.isolate`");
        }
        if policy.is_some_and(|p| p.kexec.is_some()) {
            untouched.push("`policy.kexec`");
        }
        if untouched.is_empty() {
            return;
        }
        self.push(
            Diagnostic::warning(
                code::LIVEPATCH_UNTOUCHED,
                format!("a live patch plan leaves its {} alone", and_list(&untouched)),
            )
            .at(livepatch.span(), "the running kernel is patched under them")
            .help(
                "no guest is paused, no app stopped and nothing is kexeced: the steps are preflight, the patch's \
                 load and transition (or its removal) and verify; remove those tables or keep them for a later \
                 `[kernel]` plan",
            ),
        );
    }
}
