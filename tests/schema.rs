//! The checked-in JSON Schema is what `kup schema` prints, every shipped plan satisfies both the schema and the real
//! parser, and the schema rejects what the parser's structural pass rejects.

use std::path::PathBuf;

const SCHEMA_PATH: &str = "schemas/kup-plan.schema.json";

fn schema() -> serde_json::Value {
    kup::plan::schema()
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn as_json(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(value).unwrap()
}

#[test]
fn checked_in_schema_is_current() {
    let checked_in =
        std::fs::read_to_string(SCHEMA_PATH).expect("schemas/kup-plan.schema.json exists");
    let generated = kup::commands::schema::render();
    assert!(
        checked_in == generated,
        "{SCHEMA_PATH} is stale: regenerate it with `cargo run -- schema > {SCHEMA_PATH}`"
    );
}

#[test]
fn shipped_plans_satisfy_schema_and_parser() {
    let validator = jsonschema::validator_for(&schema()).expect("the schema itself is valid");
    let files: Vec<_> = toml_files("plans")
        .into_iter()
        .chain(toml_files("examples"))
        .collect();
    assert!(files.len() >= 4, "plans/ should hold at least four plans");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#:schema ../schemas/kup-plan.schema.json"),
            "{} should start with the #:schema directive for editors",
            path.display()
        );
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&path))
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{}: schema errors {errors:?}",
            path.display()
        );
        let loaded = kup::check::check(&path.display().to_string(), text.as_bytes());
        assert!(
            loaded.plan.is_some(),
            "{}:\n{}",
            path.display(),
            loaded.report.render(false, 100)
        );
        assert!(
            loaded.report.diagnostics.is_empty(),
            "shipped plans should not even warn: {}:\n{}",
            path.display(),
            loaded.report.render(false, 100)
        );
    }
}

#[test]
fn schema_rejects_what_the_structural_pass_rejects() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let structural = [
        "unknown-key",
        "unknown-key--several",
        "wrong-type",
        "missing-key",
        "missing-key--version",
        "unknown-variant",
        "out-of-range",
    ];
    for name in structural {
        let path = PathBuf::from(format!("tests/data/diagnostics/{name}.toml"));
        assert!(
            !validator.is_valid(&as_json(&path)),
            "the schema accepts {name}.toml"
        );
    }
    // And accepts a plan whose problems are semantic only.
    let semantic = PathBuf::from("tests/data/diagnostics/relative-path.toml");
    assert!(validator.is_valid(&as_json(&semantic)));
}

#[test]
fn the_complete_plan_in_the_docs_is_valid() {
    let doc = std::fs::read_to_string("docs/plan-format.md").unwrap();
    let section = &doc[doc.find("## A complete plan").expect("section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let loaded = kup::check::check("docs/plan-format.md", block.as_bytes());
    assert!(
        loaded.report.diagnostics.is_empty(),
        "{}",
        loaded.report.render(false, 100)
    );
}
