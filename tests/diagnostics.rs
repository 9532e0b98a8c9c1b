//! Every validation rule, pinned: each file in tests/data/diagnostics/ is named after the code it must produce
//! (`CODE.toml` or `CODE--variant.toml`), and its rendered diagnostics are snapshotted exactly as an operator sees
//! them (no colour, 100 columns).

use std::path::Path;

fn cases() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir("tests/data/diagnostics")
        .expect("tests/data/diagnostics exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "expected one case per rule, found {}",
        files.len()
    );
    files
}

fn case_name(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn each_case_reports_the_code_it_is_named_after() {
    for path in cases() {
        let name = case_name(&path);
        let code = format!("kup::plan::{}", name.split("--").next().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let loaded = kup::check::check(&path.display().to_string(), &bytes);
        let codes: Vec<_> = loaded.report.diagnostics.iter().map(|d| d.code).collect();
        assert!(
            codes.contains(&code.as_str()),
            "{name}: expected {code}, got {codes:?}"
        );
        // A plan comes back exactly when nothing is an error.
        assert_eq!(loaded.plan.is_some(), !loaded.report.has_errors(), "{name}");
        for d in &loaded.report.diagnostics {
            if d.code != kup::plan::EMPTY_FILE {
                assert!(d.span.is_some(), "{name}: {} has no span", d.code);
            }
            assert!(d.help.is_some(), "{name}: {} has no help line", d.code);
        }
    }
}

#[test]
fn rendered_diagnostics() {
    for path in cases() {
        let name = case_name(&path);
        let bytes = std::fs::read(&path).unwrap();
        let file = format!("tests/data/diagnostics/{name}.toml");
        let rendered = kup::check::check(&file, &bytes).report.render(false, 100);
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn all_semantic_problems_are_reported_together() {
    let bytes = std::fs::read("tests/data/many-errors.toml").unwrap();
    let loaded = kup::check::check("many-errors.toml", &bytes);
    let lines: Vec<(usize, &str)> = loaded
        .report
        .diagnostics
        .iter()
        .map(|d| (loaded.report.position(d).unwrap().0, d.code))
        .collect();
    for expected in [
        (1, "kup::plan::version"),
        (2, "kup::plan::host-glob"),
        (5, "kup::plan::relative-path"),
        (6, "kup::plan::sha256"),
        (7, "kup::plan::unknown-variant"),
        (11, "kup::plan::relative-path"),
        (12, "kup::plan::volatile-path"),
        (14, "kup::plan::undeclared-device"),
        (15, "kup::plan::unknown-key"),
        (18, "kup::plan::duplicate-name"),
        (22, "kup::plan::parallelism"),
        (23, "kup::plan::duration"),
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in {lines:?}"
        );
    }
    insta::assert_snapshot!("many-errors", loaded.report.render(false, 100));
    // Sorted by position, so the report reads top to bottom like the file.
    let positions: Vec<usize> = lines.iter().map(|l| l.0).collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
}
