//! The plan language: TOML text → raw model with spans → checked [`Plan`] plus diagnostics.
//!
//! Pure: it reads nothing but the text it is given, so `kup plan validate` gives the same answer on a laptop, in CI
//! and on the host. Three passes, each reporting everything it finds: TOML syntax, structure against the JSON
//! Schema (unknown keys, types, required keys), then meaning (`validate`).

pub(crate) mod cmdline_lint;
pub mod codes;
pub(crate) mod diagnostic;
pub(crate) mod model;
pub(crate) mod raw;
pub(crate) mod structure;
pub(crate) mod units;
pub(crate) mod validate;

pub use diagnostic::Severity;
pub(crate) use diagnostic::{Diagnostic, PlanDiagnostics};
pub use model::*;

use serde::Deserialize;

pub(crate) const SYNTAX: &str = "kup::plan::syntax";
pub(crate) const ENCODING: &str = "kup::plan::encoding";
/// Diagnostic code for a plan file that is empty or only whitespace and comments.
pub const EMPTY_FILE: &str = "kup::plan::empty-file";

/// The JSON Schema of the plan format, generated from `raw::RawPlan`.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::RawPlan);
    schema.to_value()
}

/// The result of loading one plan file.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// Present only when there is no error.
    pub(crate) plan: Option<Plan>,
    pub(crate) report: PlanDiagnostics,
}

// Long by design: the three passes (syntax, structure, meaning) in order, each stopping what cannot follow.
/// Loads a plan from raw bytes (`file` is how the user named it, used in every message).
pub(crate) fn load(file: &str, bytes: &[u8]) -> Loaded {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Show the text up to the bad byte so the span lands on it.
            let valid = e.valid_up_to();
            let source = String::from_utf8_lossy(bytes).into_owned();
            let at = String::from_utf8_lossy(&bytes[..valid]).len();
            let diagnostic = Diagnostic::error(ENCODING, "the plan is not valid UTF-8")
                .at(
                    at..at + 1,
                    format!("invalid byte 0x{:02x} at offset {valid}", bytes[valid]),
                )
                .help("TOML files are UTF-8: re-save the file as UTF-8 (`iconv -t UTF-8`)");
            return failed(file, source, vec![diagnostic]);
        }
    };
    let source = text.to_owned();
    let meaningful = text
        .lines()
        .map(str::trim)
        .any(|line| !line.is_empty() && !line.starts_with('#'));
    if !meaningful {
        let diagnostic = Diagnostic::error(EMPTY_FILE, "the plan is empty")
            .help("a plan needs at least `kup = 1` and a [kernel] table; see plans/ for examples");
        return failed(file, source, vec![diagnostic]);
    }

    let (table, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // Only the first: the parser's recovery after a syntax error mostly yields consequences of it (an unclosed
        // array swallows the next table header and every line after it), which bury the real mistake.
        let diagnostics = syntax_errors
            .iter()
            .take(1)
            .map(|e| {
                let d =
                    Diagnostic::error(SYNTAX, format!("TOML syntax error: {}", e.message().trim()));
                let d = match e.span() {
                    Some(span) => d.at(span, "here"),
                    None => d,
                };
                d.help("see https://toml.io/en/v1.0.0 for the syntax")
            })
            .collect();
        return failed(file, source, diagnostics);
    }

    let mut table = table;
    let mut diagnostics = Vec::new();
    let pruned = structure::check(&mut table, &mut diagnostics);
    let structure_ok = diagnostics.is_empty();
    let raw = match raw::RawPlan::deserialize(toml::de::Deserializer::from(table)) {
        Ok(raw) => raw,
        // A missing required key leaves nothing serde can build; the structural findings already say why.
        Err(_) if !structure_ok => return failed(file, source, diagnostics),
        Err(e) => {
            // The schema walk should have caught this; report serde's view rather than nothing.
            let d = Diagnostic::error(structure::WRONG_TYPE, e.message().trim().to_owned());
            let d = match e.span() {
                Some(span) => d.at(span, "here"),
                None => d,
            };
            return failed(file, source, vec![d.help("see docs/plan-format.md")]);
        }
    };
    let structural = diagnostics.len();
    // Step ids, cycles and the downtime budget are the graph's checks (`crate::check` runs them next).
    let plan = validate::validate(&raw, &mut diagnostics).filter(|_| structure_ok);
    // A semantic "X is missing" about a table that lost X to the structural pass only repeats that finding.
    let mut index = 0;
    diagnostics.retain(|d| {
        index += 1;
        let consequence = index > structural
            && validate::code::ABSENCE.contains(&d.code)
            && d.span
                .as_ref()
                .is_some_and(|s| pruned.iter().any(|t| t.start <= s.start && s.end <= t.end));
        !consequence
    });
    failed(file, source, diagnostics).with_plan(plan)
}

impl Loaded {
    fn with_plan(mut self, plan: Option<Plan>) -> Self {
        self.plan = plan;
        self
    }
}

/// A report without a plan; diagnostics are put in source order, file-wide ones first.
fn failed(file: &str, source: String, mut diagnostics: Vec<Diagnostic>) -> Loaded {
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    Loaded {
        plan: None,
        report: PlanDiagnostics {
            file: file.to_owned(),
            source,
            diagnostics,
        },
    }
}
