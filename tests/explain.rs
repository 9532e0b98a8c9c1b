//! `kup plan explain` and the code table behind it: every code kup emits has an entry, every entry's example plan
//! reports its code, docs/plan-format.md's code tables are generated from the same table, and the command's output
//! is pinned by snapshots.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use support::cli::{Kup, Run};

const DOC: &str = "docs/plan-format.md";
const BEGIN: &str = "<!-- diagnostic-codes:begin";
const END: &str = "<!-- diagnostic-codes:end -->";

fn table() -> BTreeSet<&'static str> {
    kup::plan::codes::all().map(|d| d.code).collect()
}

/// Every `"kup::plan::…"` string literal in the Rust files under `dir` but outside the table itself: the codes
/// that code somewhere can emit. A literal ending in `-` is a prefix (`starts_with`), not a code.
fn literals_in(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.ends_with("src/plan/codes") {
            continue;
        }
        if path.is_dir() {
            literals_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("\"kup::plan::") {
                let rest = &text[at + 1..];
                let literal = &rest[..rest.find('"').unwrap()];
                if !literal.ends_with('-') {
                    out.insert(literal.to_owned());
                }
            }
        }
    }
}

/// `kup plan explain ARG`, run.
fn explain(arg: &str) -> Run {
    Kup::new().args(["plan", "explain", arg]).run()
}

#[test]
fn every_code_emitted_in_src_has_an_entry_and_every_entry_is_emitted() {
    let mut emitted = BTreeSet::new();
    literals_in(Path::new("src"), &mut emitted);
    assert!(emitted.len() >= 45, "found only {emitted:?}");
    let table: BTreeSet<String> = table().into_iter().map(str::to_owned).collect();
    let missing: Vec<_> = emitted.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "codes emitted in src/ with no entry in src/plan/codes/ (add one, with an example in \
         tests/data/diagnostics/): {missing:?}"
    );
    let stale: Vec<_> = table.difference(&emitted).collect();
    assert!(
        stale.is_empty(),
        "entries in src/plan/codes/ that nothing in src/ emits: {stale:?}"
    );
}

#[test]
fn every_code_reported_on_the_test_corpus_has_an_entry() {
    let table = table();
    let mut files: Vec<_> = std::fs::read_dir("tests/data/diagnostics")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push("tests/data/many-errors.toml".into());
    for path in files {
        let loaded = kup::check::check(&path.display().to_string(), &std::fs::read(&path).unwrap());
        for d in &loaded.report.diagnostics {
            assert!(
                table.contains(d.code),
                "{}: {} has no entry",
                path.display(),
                d.code
            );
        }
    }
}

#[test]
fn every_entry_is_explained_and_its_example_reports_it() {
    for doc in kup::plan::codes::all() {
        for (what, text) in [
            ("title", doc.title),
            ("means", doc.means),
            ("why", doc.why),
            ("fix", doc.fix),
            ("examples", doc.examples),
        ] {
            assert!(!text.trim().is_empty(), "{}: no {what}", doc.code);
        }
        let example = std::fs::read(doc.example_path()).unwrap();
        assert_eq!(
            doc.example,
            example.as_slice(),
            "{}: compiled-in example is stale",
            doc.code
        );
        let loaded = kup::check::check(&doc.example_path(), doc.example);
        let codes: Vec<_> = loaded.report.diagnostics.iter().map(|d| d.code).collect();
        assert!(
            codes.contains(&doc.code),
            "{}: its example reports {codes:?}",
            doc.code
        );
        let finding = loaded
            .report
            .diagnostics
            .iter()
            .find(|d| d.code == doc.code);
        assert_eq!(
            finding.map(|d| d.help.is_some()),
            Some(true),
            "{}: the example's finding has no help line",
            doc.code
        );
        // The table's severity is the one kup reports (the GitHub annotation is `::error` or `::warning`).
        let reported = finding.map(|d| {
            let annotation = kup::commands::validate::github_annotation(&loaded.report, d);
            annotation[2..annotation.find(' ').unwrap()].to_owned()
        });
        let expected = match doc.severity {
            kup::plan::Severity::Error => "error",
            kup::plan::Severity::Warning => "warning",
        };
        assert_eq!(reported.as_deref(), Some(expected), "{}", doc.code);
    }
}

#[test]
fn the_docs_code_tables_are_generated_from_the_table() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let begin = doc.find(BEGIN).expect("the begin marker");
    let inner = begin + doc[begin..].find('\n').unwrap() + 1;
    let end = doc.find(END).expect("the end marker");
    let generated = kup::plan::codes::markdown();
    if doc[inner..end] == generated {
        return;
    }
    if std::env::var_os("KUP_UPDATE_DOCS").is_some() {
        std::fs::write(DOC, format!("{}{generated}{}", &doc[..inner], &doc[end..])).unwrap();
        return;
    }
    panic!(
        "{DOC}'s code tables differ from src/plan/codes/ (edit the table in the code, not the docs); \
         refresh them with `KUP_UPDATE_DOCS=1 cargo test --test explain`"
    );
}

#[test]
fn explanations() {
    for code in [
        "kup::plan::volatile-path",
        "downtime-budget",
        "encoding",
        "cmdline-param-too-new",
    ] {
        let run = explain(code).status(0);
        let name = code.trim_start_matches("kup::plan::");
        insta::assert_snapshot!(format!("explain-{name}"), run.stdout());
        assert_eq!(run.stderr(), "", "{code}");
    }
}

#[test]
fn the_short_and_full_codes_explain_alike() {
    let short = explain("sha256").status(0);
    let full = explain("kup::plan::sha256").status(0);
    assert_eq!(short.stdout(), full.stdout());
    assert!(short.stdout().starts_with("kup::plan::sha256: "));
}

#[test]
fn an_unknown_code_is_a_usage_error_naming_the_nearest() {
    let run = explain("kup::plan::volatil-path").status(2);
    assert_eq!(run.stdout(), "");
    insta::assert_snapshot!("explain-unknown", run.stderr());
    let far = explain("xyzzy").status(2);
    assert!(!far.stderr().contains("did you mean"), "{}", far.stderr());
    assert!(far.stderr().contains("--list"), "{}", far.stderr());
}

#[test]
fn the_list_has_every_code_once() {
    let run = explain("--list").status(0);
    let listed: Vec<_> = run
        .stdout()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let table: Vec<_> = kup::plan::codes::all().map(|d| d.code.to_owned()).collect();
    assert_eq!(listed, table);
    assert!(run.stdout().lines().all(|l| l.chars().count() <= 100));
    insta::assert_snapshot!("explain-list", run.stdout());
}
