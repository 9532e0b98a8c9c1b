//! Checks of single values shared by every section: non-blank strings, host globs, absolute and durable paths,
//! durations, argv arrays and unique names.

use super::{Seen, VOLATILE_ROOTS, Validator, code};
use crate::hostglob::HostGlob;
use crate::plan::diagnostic::Diagnostic;
use crate::plan::units::parse_duration;
use std::path::PathBuf;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn not_blank(&mut self, value: &Spanned<String>, key: &str) -> bool {
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

    pub(super) fn host_glob(&mut self, pattern: &Spanned<String>) -> Option<HostGlob> {
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
    pub(super) fn absolute(&mut self, path: &Spanned<String>, key: &str) -> Option<PathBuf> {
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
    pub(super) fn durable(&mut self, path: &Spanned<String>, key: &str) -> Option<PathBuf> {
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
        // Under `root` (`/var/run`): the normalised path's first components are the root's.
        let under = |root: &str| {
            let mut have = parts.iter();
            root.split('/')
                .skip(1)
                .all(|want| have.next() == Some(&want))
        };
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

    pub(super) fn duration(
        &mut self,
        value: &Spanned<String>,
        key: &str,
    ) -> Option<std::time::Duration> {
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

    pub(super) fn argv(
        &mut self,
        argv: &Spanned<Vec<Spanned<String>>>,
        key: &str,
    ) -> Option<Vec<String>> {
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

    /// A systemd unit name (`app.systemd`, `vm.unit`): a type suffix, and only the characters systemd.unit(5)
    /// allows — kup builds a drop-in's path from it (`/run/systemd/system/UNIT.d/`), so no `/` gets through.
    pub(super) fn systemd_unit(&mut self, unit: &Spanned<String>) -> Option<String> {
        let text = unit.get_ref();
        const SUFFIXES: &[&str] = &[
            ".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope",
        ];
        let suffixed = SUFFIXES.iter().any(|s| text.ends_with(s));
        let odd = text.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
        });
        let (label, help) = match odd {
            _ if !suffixed => (
                "unit name without a type suffix".to_owned(),
                format!("write the full unit name, for example \"{}.service\"", text.trim()),
            ),
            Some(c) if c.is_whitespace() => (
                "contains whitespace".to_owned(),
                "unit names have no spaces: use the name `systemctl list-units` shows".to_owned(),
            ),
            Some(c) => (
                format!("`{c}` is not allowed in a unit name"),
                "unit names use letters, digits and `:-_.\\@` (systemd.unit(5)); escape other characters \
                 with `systemd-escape`"
                    .to_owned(),
            ),
            None => return Some(text.clone()),
        };
        self.push(
            Diagnostic::error(
                code::SYSTEMD_UNIT,
                format!("\"{text}\" is not a systemd unit name"),
            )
            .at(unit.span(), label)
            .help(help),
        );
        None
    }

    pub(super) fn name(&mut self, name: &Spanned<String>, kind: &str, seen: &mut Seen) -> bool {
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

    /// A pinned SHA-256 (`key`, of `file`): 64 hex digits, lower-cased.
    pub(super) fn sha256(
        &mut self,
        sum: &Spanned<String>,
        key: &str,
        file: &str,
    ) -> Option<String> {
        let text = sum.get_ref();
        if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(text.to_ascii_lowercase());
        }
        self.push(
            Diagnostic::error(code::SHA256, format!("`{key}` is not a SHA-256 digest"))
                .at(
                    sum.span(),
                    format!(
                        "{} characters; a digest is 64 hex digits",
                        text.chars().count()
                    ),
                )
                .help(format!(
                    "compute it with `sha256sum {file}` and paste the first field"
                )),
        );
        None
    }
}
