//! The plan loader: any bytes as a plan file, through what `kup plan validate` runs — the check (TOML, structure,
//! meaning, the step graph) and the human and GitHub renderings of every diagnostic, which map spans to lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = kup::check::check("fuzz.toml", data);
    let report = &checked.report;
    let _ = report.render(false, 80);
    for d in &report.diagnostics {
        let _ = kup::commands::validate::github_annotation(report, d);
    }
});
