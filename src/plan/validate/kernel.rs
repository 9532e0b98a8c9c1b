//! `[kernel]` and `[kernel.cmdline]`: the image, its pins, and the command-line edits.

use super::{Validator, code};
use crate::cmdline::{self, CmdlineError, Param};
use crate::plan::diagnostic::Diagnostic;
use crate::plan::model::*;
use crate::plan::raw;
use std::ops::Range;

impl Validator<'_> {
    pub(super) fn kernel(&mut self, raw: &raw::RawKernel) -> Kernel {
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
            Some(sum) => self.sha256(sum, "kernel.sha256", raw.image.get_ref()),
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
        crate::plan::cmdline_lint::check(raw, self.out);
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
    pub(super) fn cmdline_param(
        &mut self,
        result: Result<(), CmdlineError>,
        span: Range<usize>,
        key: &str,
    ) {
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

    // Long by design: the checks of `[kernel.cmdline]` in the order the keys are documented.
    pub(super) fn cmdline(&mut self, raw: &raw::RawCmdline, span: Range<usize>) -> CmdlineSpec {
        if let Some(value) = &raw.value {
            // `inherit = false` says what `value` already says; only `inherit = true` contradicts it.
            let edits = raw.inherit.as_ref().is_some_and(|i| *i.get_ref())
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
}
