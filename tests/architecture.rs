//! The architecture as rules the tree must keep (docs/architecture.md): which module may import which, side
//! effects only in `host`, typed errors in `host` and `exec`, `unsafe` only in the kexec syscall module, and files
//! small enough to read. Each rule reads the non-test part of every file under src/ (everything before its
//! `#[cfg(test)]` module), without comments.

use std::path::{Path, PathBuf};

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A source file's code lines before its test module, with `//` comments dropped: (line number, text).
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .map(|(i, l)| {
            let code = match l.find("//") {
                // Keep `//` inside a string literal ("https://…"): only a comment outside quotes is dropped.
                Some(at) if l[..at].matches('"').count() % 2 == 0 => &l[..at],
                _ => l,
            };
            (i + 1, code.to_owned())
        })
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

/// The top-level module a file belongs to: `host` for src/host/perform.rs, `cmdline` for src/cmdline.rs.
fn module(path: &Path) -> String {
    let relative = path.strip_prefix("src").unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Places in src/ where a line of a file of a module in `modules` matches `bad`.
fn offences(modules: &[&str], bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for path in rust_files(Path::new("src")) {
        if !modules.contains(&module(&path).as_str()) {
            continue;
        }
        for (n, line) in code(&path) {
            if bad(&line) {
                out.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    out
}

fn imports(line: &str, module: &str) -> bool {
    line.contains(&format!("crate::{module}::"))
        || line.contains(&format!("crate::{module}}}"))
        || line.contains(&format!("crate::{{{module}"))
        || line.contains(&format!(" {module}::")) && line.trim_start().starts_with("use crate::{")
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    // (module, what it must not import); see docs/architecture.md for the whole table.
    let rules: &[(&str, &[&str])] = &[
        (
            "action",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "boot",
            ],
        ),
        (
            "plan",
            &[
                "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
        ("graph", &["check", "exec", "host", "commands", "cli"]),
        ("check", &["exec", "host", "commands", "cli"]),
        (
            "host",
            &["plan", "graph", "check", "exec", "commands", "cli"],
        ),
        ("exec", &["check", "commands", "cli"]),
        (
            "boot",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
        (
            "cmdline",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
        (
            "kernel_image",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
        (
            "kparams",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
        (
            "hostglob",
            &[
                "plan", "graph", "check", "exec", "host", "commands", "cli", "action",
            ],
        ),
    ];
    let mut found = Vec::new();
    for (module, forbidden) in rules {
        for other in *forbidden {
            for place in offences(&[module], |l| imports(l, other)) {
                found.push(format!("{module} imports {other}: {place}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

#[test]
fn side_effects_happen_only_in_host() {
    // The CLI layer (commands, cli, main, exit) may read the files named on the command line, write stdout and
    // stderr, and name `std::process::ExitCode`; nothing else outside `host` touches the machine.
    let pure = [
        "action",
        "plan",
        "graph",
        "check",
        "exec",
        "boot",
        "cmdline",
        "kernel_image",
        "kparams",
        "hostglob",
        "kmod",
    ];
    assert_no_names(
        &pure,
        &[
            "std::process",
            "nix::",
            "libc::",
            "std::fs",
            "File::",
            "\"/proc/",
            "\"/sys/",
            "std::env::var",
        ],
        "side effects outside src/host",
    );
    assert_no_names(
        &["commands", "cli", "main", "exit"],
        &[
            "nix::",
            "libc::",
            "\"/proc/",
            "\"/sys/",
            "std::process::Command",
        ],
        "host access in the CLI layer",
    );
}

/// No line of a file of a module in `modules` names any of `names`; `what` heads the offences.
#[track_caller]
fn assert_no_names(modules: &[&str], names: &[&str], what: &str) {
    let found = offences(modules, |l| names.iter().any(|s| l.contains(s)));
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn host_and_exec_return_typed_errors() {
    let found = offences(&["host", "exec"], |l| {
        l.contains("Result<") && (l.contains(", String>") || l.contains(",String>"))
    });
    assert!(
        found.is_empty(),
        "Result<_, String> in host or exec:\n{}",
        found.join("\n")
    );
}

#[test]
fn unsafe_code_is_only_the_kexec_syscall_module() {
    let mut found = Vec::new();
    for path in rust_files(Path::new("src")) {
        if path == Path::new("src/host/kexec/mod.rs") {
            continue;
        }
        for (n, line) in code(&path) {
            if line.contains("unsafe {")
                || line.contains("unsafe fn")
                || line.contains("allow(unsafe_code)")
            {
                found.push(format!("{}:{n}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside src/host/kexec/mod.rs: {found:?}"
    );
}

/// What `finding` says of each file under src/ (path and text) that it finds fault with.
fn source_files_where(finding: impl Fn(&Path, &str) -> Option<String>) -> Vec<String> {
    rust_files(Path::new("src"))
        .iter()
        .filter_map(|path| finding(path, &std::fs::read_to_string(path).unwrap()))
        .collect()
}

#[test]
fn no_source_file_is_over_600_lines_before_its_tests() {
    let long = source_files_where(|path, text| {
        let lines = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        (lines > 600).then(|| format!("{} ({lines} lines)", path.display()))
    });
    assert!(long.is_empty(), "split these by responsibility: {long:?}");
}

#[test]
fn every_module_says_why_it_exists() {
    let silent = source_files_where(|path, text| {
        (!text.trim_start().starts_with("//!")).then(|| path.display().to_string())
    });
    assert!(silent.is_empty(), "no `//!` line: {silent:?}");
}

#[test]
fn the_fault_hook_is_compiled_only_with_its_feature() {
    // `cargo build --release` has no `fault-injection`: every mention of the hook's variable must sit behind
    // `#[cfg(feature = "fault-injection")]`, on the line before.
    let mut found = Vec::new();
    for path in rust_files(Path::new("src")) {
        let lines = code(&path);
        for (i, (n, line)) in lines.iter().enumerate() {
            let gated = |j: usize| {
                lines
                    .get(j)
                    .is_some_and(|(_, l)| l.contains("feature = \"fault-injection\""))
            };
            if line.contains("KUP_FAULT") && !(i > 0 && gated(i - 1)) {
                found.push(format!("{}:{n}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "fault hook outside cfg(feature): {found:?}"
    );
}
