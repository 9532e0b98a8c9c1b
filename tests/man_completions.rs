//! The man pages checked in under docs/man/ are what `kup man` writes today, they render cleanly, and the shell
//! completion scripts load in a real bash and complete kup's subcommands, flags and values.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::cli::Kup;

const MAN_DIR: &str = "docs/man";

fn pages(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// `kup man --out` into a fresh temporary directory, which the caller keeps alive.
fn generate() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let run = Kup::new().arg("man").arg("--out").arg(&out).run().status(0);
    (dir, run.stdout())
}

#[test]
fn checked_in_man_pages_are_current() {
    let (dir, listing) = generate();
    let generated = pages(&dir.path().join("man"));
    // Every page it wrote is listed, one path a line.
    assert_eq!(listing.lines().count(), generated.len(), "{listing}");
    let checked_in = pages(Path::new(MAN_DIR));
    let stale: Vec<_> = generated
        .keys()
        .chain(checked_in.keys())
        .filter(|name| generated.get(*name) != checked_in.get(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "{MAN_DIR} is stale ({stale:?} differ, are missing or are extra): refresh it with \
         `rm -r {MAN_DIR} && cargo run -- man --out {MAN_DIR}`"
    );
}

#[test]
fn every_subcommand_has_a_page_naming_it() {
    let (dir, _) = generate();
    let generated = pages(&dir.path().join("man"));
    for name in [
        "kup",
        "kup-plan",
        "kup-plan-validate",
        "kup-plan-graph",
        "kup-plan-apply",
        "kup-plan-resume",
        "kup-plan-status",
        "kup-plan-explain",
        "kup-schema",
        "kup-boot-time",
        "kup-completions",
        "kup-man",
    ] {
        let page = generated
            .get(&format!("{name}.1"))
            .unwrap_or_else(|| panic!("no {name}.1 in {:?}", generated.keys()));
        let text = String::from_utf8(page.clone()).unwrap();
        assert!(text.contains(&format!(".TH {name} 1")), "{name}: {text}");
        assert!(
            text.contains(concat!("kup ", env!("CARGO_PKG_VERSION"))),
            "{name}"
        );
        assert!(text.is_ascii(), "{name}: non-ASCII left unescaped");
    }
    // clap's own `help` subcommand is not one of kup's.
    assert!(
        !generated.keys().any(|k| k.contains("help")),
        "{generated:?}"
    );
}

#[test]
fn man_pages_render_without_warnings() {
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("skipped: groff is not installed");
        return;
    }
    for name in pages(Path::new(MAN_DIR)).keys() {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(Path::new(MAN_DIR).join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{name}");
    }
}

/// `bash ARGS...`, which must succeed.
fn bash(args: &[&str]) -> std::process::Output {
    let out = Command::new("bash").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bash {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What bash's completion offers after `words` (the last one being completed), with kup's script loaded.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_kup kup '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = bash(&["--norc", "--noprofile", "-c", &program]);
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_flags_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kup.bash");
    let run = Kup::new().args(["completions", "bash"]).run().status(0);
    std::fs::write(&script, run.stdout()).unwrap();
    bash(&["-n", &script.display().to_string()]);

    assert_eq!(bash_completes(&script, &["kup", "plan", "ex"]), ["explain"]);
    assert_eq!(
        bash_completes(&script, &["kup", "plan", "apply", "--dr"]),
        ["--dry-run"]
    );
    let shells = bash_completes(&script, &["kup", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_owned()), "{shells:?}");
    }
    let formats = bash_completes(&script, &["kup", "plan", "validate", "--format", ""]);
    assert_eq!(formats, ["human", "json", "github"]);
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    // Neither shell is on the test machines, so this checks what the scripts say, not how a shell runs them.
    for (shell, marker) in [("zsh", "#compdef kup\n"), ("fish", "\ncomplete -c kup ")] {
        let script = Kup::new()
            .args(["completions", shell])
            .run()
            .status(0)
            .stdout();
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in [
            "validate",
            "graph",
            "apply",
            "resume",
            "status",
            "explain",
            "boot-time",
            "man",
        ] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    Kup::new()
        .args(["completions", "tcsh"])
        .run()
        .status(2)
        .stderr_has("invalid value 'tcsh'");
}
