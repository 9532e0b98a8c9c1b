//! The kernel-parameter lint ([`crate::kparams`]) as plan warnings: which TOML span each finding points at.
//!
//! Validation sees only what the plan writes — `set`, `append`, `value`, the names in `remove` — and the release in
//! `kernel.version`, not the running command line an `inherit = true` plan starts from; the dry-run and preflight
//! lint the final line with the image's real release ([`crate::kparams::lint_cmdline`]). Every finding is a
//! warning: the kernel boots with all of them, it only ignores what it cannot use.

use super::diagnostic::Diagnostic;
use super::raw::{RawCmdline, RawKernel};
use crate::cmdline::{Cmdline, Param};
use crate::kparams::{self, FindingKind, ParamFinding};
use std::ops::Range;
use toml::Spanned;

/// Stable codes of the kernel-parameter warnings (listed in docs/plan-format.md).
pub(crate) mod code {
    pub(crate) const PARAM_TOO_NEW: &str = "kup::plan::cmdline-param-too-new";
    pub(crate) const PARAM_UNKNOWN: &str = "kup::plan::cmdline-param-unknown";
    pub(crate) const PARAM_DUPLICATE: &str = "kup::plan::cmdline-param-duplicate";
    pub(crate) const PARAM_VALUE: &str = "kup::plan::cmdline-param-value";
}

/// Where a parameter the plan writes came from, for the spans of its findings.
struct Written {
    param: Param,
    /// The name's span (a `set` key), or the whole entry.
    name: Range<usize>,
    /// The value's span (a `set` value), or the whole entry.
    value: Range<usize>,
    /// Whether it is a `set` entry: twins among those are already `cmdline-conflict` errors.
    from_set: bool,
}

/// Warns about the parameters `kernel.cmdline` writes, judged against `kernel.version` when it is a release.
pub(crate) fn check(kernel: &RawKernel, out: &mut Vec<Diagnostic>) {
    let Some(cmdline) = kernel.cmdline.as_ref().map(Spanned::get_ref) else {
        return;
    };
    let version = kernel
        .version
        .as_ref()
        .filter(|v| !v.get_ref().is_empty() && !v.get_ref().contains(char::is_whitespace));
    let written = written(cmdline);
    let params: Vec<Param> = written.iter().map(|w| w.param.clone()).collect();
    let release = version.map(|v| v.get_ref().as_str());
    for finding in kparams::lint(&params, release) {
        if let Some(d) = diagnostic(&finding, &written, version) {
            out.push(d);
        }
    }
    for name in &cmdline.remove {
        if let Some(suggestion) = kparams::misspelt(name.get_ref()) {
            out.push(
                Diagnostic::warning(
                    code::PARAM_UNKNOWN,
                    format!(
                        "`remove` names unknown kernel parameter `{}`; did you mean `{suggestion}`?",
                        name.get_ref()
                    ),
                )
                .at(name.span(), format!("did you mean `{suggestion}`?"))
                .help("`remove` drops parameters by their exact name (`-` and `_` alike): a misspelt name removes nothing"),
            );
        }
    }
}

fn diagnostic(
    finding: &ParamFinding,
    written: &[Written],
    version: Option<&Spanned<String>>,
) -> Option<Diagnostic> {
    let this = written.get(finding.index)?;
    let d = match &finding.kind {
        FindingKind::TooNew { needs, .. } => {
            let d = Diagnostic::warning(code::PARAM_TOO_NEW, finding.message.clone())
                .at(this.name.clone(), format!("needs Linux {needs}"));
            match version {
                Some(v) => d.related(v.span(), "the new kernel's release"),
                None => d,
            }
        }
        FindingKind::Misspelt { suggestion } => {
            Diagnostic::warning(code::PARAM_UNKNOWN, finding.message.clone())
                .at(this.name.clone(), format!("did you mean `{suggestion}`?"))
        }
        FindingKind::Duplicate { first } => {
            let earlier = written.get(*first)?;
            if earlier.from_set && this.from_set {
                return None;
            }
            Diagnostic::warning(code::PARAM_DUPLICATE, finding.message.clone())
                .at(this.name.clone(), "the kernel uses this one")
                .related(earlier.name.clone(), "overridden")
        }
        FindingKind::BadValue { .. } => {
            Diagnostic::warning(code::PARAM_VALUE, finding.message.clone())
                .at(this.value.clone(), "not a value the kernel accepts here")
        }
    };
    Some(d.help(finding.help.clone()))
}

/// The parameters the plan writes, in the order they reach the new command line: `set` entries (replaced in place
/// or added at the end) before `append` entries; or the parameters of `value`. Entries that are not valid
/// parameters are left out: they are `cmdline-param` errors already.
fn written(cmdline: &RawCmdline) -> Vec<Written> {
    if let Some(value) = &cmdline.value {
        return value_params(value);
    }
    let sets = cmdline.set.iter().filter_map(|(key, value)| {
        Param::new(key.get_ref(), Some(value.get_ref()))
            .ok()
            .map(|param| Written {
                param,
                name: key.span(),
                value: value.span(),
                from_set: true,
            })
    });
    let appends = cmdline.append.iter().filter_map(|entry| {
        Param::parse_one(entry.get_ref()).ok().map(|param| Written {
            param,
            name: entry.span(),
            value: entry.span(),
            from_set: false,
        })
    });
    sets.chain(appends).collect()
}

/// The parameters of a full `value`, each with the span of its own word when the TOML string's text is the value
/// itself (one quote on each side, no escapes: the span is then exactly two bytes longer), else the whole string.
fn value_params(value: &Spanned<String>) -> Vec<Written> {
    let text = value.get_ref();
    let span = value.span();
    let verbatim = span.len() == text.len() + 2;
    let words = words(text);
    Cmdline::parse(text)
        .params()
        .iter()
        .enumerate()
        .map(|(i, param)| {
            let at = match words.get(i) {
                Some(word) if verbatim => span.start + 1 + word.start..span.start + 1 + word.end,
                _ => span.clone(),
            };
            Written {
                param: param.clone(),
                name: at.clone(),
                value: at,
                from_set: false,
            }
        })
        .collect()
}

/// Byte ranges of the words of a command line as the kernel's `next_arg()` cuts them: whitespace separates words
/// except inside double quotes, which only toggle. The kernel's parameters are the first words, in order (a bare
/// `--` ends them), so word `i` is parameter `i`.
fn words(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, b) in text.bytes().enumerate() {
        let space = matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        match start {
            None if space => {}
            None => {
                start = Some(i);
                quoted = b == b'"';
            }
            Some(s) if space && !quoted => {
                out.push(s..i);
                start = None;
            }
            Some(_) => {
                if b == b'"' {
                    quoted = !quoted;
                }
            }
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(toml_text: &str) -> Vec<(&'static str, String)> {
        let loaded = crate::plan::load("t.toml", toml_text.as_bytes());
        loaded
            .report
            .diagnostics
            .iter()
            .filter(|d| d.code.starts_with("kup::plan::cmdline-param-"))
            .map(|d| {
                let span = d.span.clone().unwrap_or_default();
                (d.code, toml_text[span].to_owned())
            })
            .collect()
    }

    const HEAD: &str = "kup = 1\n[kernel]\nimage = \"/boot/vmlinuz\"\nsha256 = \
                        \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn cpuhp_parallel_on_a_6_1_kernel_and_a_typo() {
        let plan = format!(
            "{HEAD}version = \"6.1.0-28-amd64\"\n[kernel.cmdline]\nset = {{ \"cpuhp.parallel\" = \"1\" }}\n\
             append = [\"quite\"]\nremove = [\"splash\", \"mitigation\"]\n"
        );
        assert_eq!(
            warnings(&plan),
            [
                (code::PARAM_TOO_NEW, "\"cpuhp.parallel\"".to_owned()),
                (code::PARAM_UNKNOWN, "\"quite\"".to_owned()),
                (code::PARAM_UNKNOWN, "\"mitigation\"".to_owned()),
            ]
        );
        // The same plan for a 6.12 kernel: only the typos.
        let newer = plan.replace("6.1.0-28-amd64", "6.12.9-lts");
        assert_eq!(warnings(&newer).len(), 2);
        // Without a version: no release checks.
        let unversioned = plan.replace("version = \"6.1.0-28-amd64\"\n", "");
        assert_eq!(warnings(&unversioned).len(), 2);
    }

    #[test]
    fn warnings_leave_the_plan_valid() {
        let plan = format!(
            "{HEAD}version = \"6.1.0-28-amd64\"\n[kernel.cmdline]\nset = {{ \"cpuhp.parallel\" = \"maybe\" }}\n"
        );
        let loaded = crate::plan::load("t.toml", plan.as_bytes());
        assert!(loaded.plan.is_some());
        assert!(!loaded.report.has_errors());
        let codes: Vec<_> = loaded.report.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [code::PARAM_TOO_NEW, code::PARAM_VALUE]);
    }

    #[test]
    fn a_value_points_at_the_word() {
        let plan = format!(
            "{HEAD}[kernel.cmdline]\nvalue = \"root=/dev/vda quite loglevel=3 loglevel=7\"\n"
        );
        assert_eq!(
            warnings(&plan),
            [
                (code::PARAM_UNKNOWN, "quite".to_owned()),
                (code::PARAM_DUPLICATE, "loglevel=7".to_owned()),
            ]
        );
        // With an escape in the string the words cannot be located: the whole string is pointed at.
        let escaped = format!("{HEAD}[kernel.cmdline]\nvalue = \"root=/dev/vda\\tquite\"\n");
        assert_eq!(
            warnings(&escaped),
            [(code::PARAM_UNKNOWN, "\"root=/dev/vda\\tquite\"".to_owned())]
        );
    }

    #[test]
    fn set_then_append_of_the_same_parameter() {
        let plan = format!(
            "{HEAD}[kernel.cmdline]\nset = {{ loglevel = \"3\" }}\nappend = [\"loglevel=7\", \"console=ttyS0\", \
             \"console=tty0\"]\n"
        );
        assert_eq!(
            warnings(&plan),
            [(code::PARAM_DUPLICATE, "\"loglevel=7\"".to_owned())]
        );
    }

    #[test]
    fn words_follow_the_kernels_quoting() {
        let text = "a  b=\"x y\" \"c d\"e\tf";
        let found: Vec<&str> = words(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(found, ["a", "b=\"x y\"", "\"c d\"e", "f"]);
        assert_eq!(
            Cmdline::parse(text).params().len(),
            found.len(),
            "one word per parameter"
        );
    }
}
