//! README.md's "first hour" walk-through, run as written: every command between its `first-hour` markers that
//! needs no root and changes nothing on the host (`kup plan validate`, `explain`, `graph`, `apply --dry-run`, the
//! `sed` edit) runs in order against a copy of examples/first-hour.toml with the README's `toml` edit appended,
//! and prints what the README shows (`…` stands for any lines). Commands behind `sudo` (init, rehearse, status) need a live host and are left out here;
//! `tests/plan_init.rs` runs `kup plan init` against real guests.

mod support;

use std::process::Command;

/// One `$ command` of the walk-through and the lines shown under it.
struct Step {
    argv: Vec<String>,
    shown: Vec<String>,
}

/// The walk-through's commands, and the text of its `toml` blocks (the edit appended to the plan).
fn steps() -> (Vec<Step>, String) {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let begin = readme
        .find("<!-- first-hour:begin -->")
        .expect("begin marker");
    let end = readme.find("<!-- first-hour:end -->").expect("end marker");
    let mut steps: Vec<Step> = Vec::new();
    let mut edit = String::new();
    let (mut in_console, mut in_toml) = (false, false);
    for line in readme[begin..end].lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            in_toml = line == "```toml";
            continue;
        }
        if in_toml {
            edit.push_str(line);
            edit.push('\n');
        }
        if !in_console {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(Step {
                argv: command.split_whitespace().map(str::to_owned).collect(),
                shown: Vec::new(),
            }),
            None => steps.last_mut().unwrap().shown.push(line.to_owned()),
        }
    }
    (steps, edit)
}

/// Whether `shown` matches `actual` line for line, a `…` line standing for any run of lines (also none).
fn matches(shown: &[String], actual: &[&str]) -> bool {
    match shown.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "…" => {
            (0..=actual.len()).any(|i| matches(rest, &actual[i..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, tail)| line == first && matches(rest, tail)),
    }
}

#[test]
fn the_first_hour_runs_as_written() {
    let (steps, edit) = steps();
    assert!(edit.contains("[policy]"), "the edit of step 2: {edit:?}");
    assert!(
        steps.len() >= 6,
        "the walk-through lost its commands: {}",
        steps.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = std::fs::read_to_string("examples/first-hour.toml").unwrap() + "\n" + &edit;
    std::fs::write(dir.path().join("first-hour.toml"), plan).unwrap();
    let kup = assert_cmd::cargo::cargo_bin("kup");
    for step in &steps {
        assert_ne!(
            step.argv[0], "sudo",
            "sudo commands stay outside the markers"
        );
        let program = if step.argv[0] == "kup" {
            kup.clone()
        } else {
            step.argv[0].clone().into()
        };
        let out = Command::new(program)
            .args(&step.argv[1..])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("COLUMNS")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let actual: Vec<&str> = text.lines().collect();
        assert!(
            out.status.success(),
            "$ {}\nexit {:?}\n{text}",
            step.argv.join(" "),
            out.status.code()
        );
        assert!(
            matches(&step.shown, &actual),
            "$ {}\nREADME shows:\n{}\nit printed:\n{text}",
            step.argv.join(" "),
            step.shown.join("\n")
        );
    }
}
