//! Every diagnostic code kup can report, with what it means, why it matters, how to fix it and a plan that
//! triggers it: the one table `kup plan explain CODE` prints from and docs/plan-format.md's code tables are
//! generated from (`tests/explain.rs` fails when the two disagree, or when a code emitted anywhere in `src/` has no
//! entry here).

mod graph;
mod parsing;
mod semantics;

use super::Severity;
use std::fmt::Write as _;

/// Which pass reports a code: the order of docs/plan-format.md's tables and of "How a plan is checked".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pass {
    /// Encoding, emptiness and TOML syntax (`src/plan/mod.rs`).
    Parse,
    /// The JSON Schema of the raw plan (`src/plan/structure.rs`).
    Structure,
    /// Meaning (`src/plan/validate/`, `src/plan/cmdline_lint.rs`).
    Semantics,
    /// The step graph (`src/graph/`), only when the plan has no other error.
    Graph,
}

impl Pass {
    /// The heading of this pass's table in docs/plan-format.md.
    fn heading(self) -> &'static str {
        match self {
            Pass::Parse => "Before and during parsing (`src/plan/mod.rs`)",
            Pass::Structure => "Structure (`src/plan/structure.rs`)",
            Pass::Semantics => {
                "Semantics (`src/plan/validate/`; kernel parameters: `src/plan/cmdline_lint.rs`)"
            }
            Pass::Graph => "Step graph (`src/graph/`, only when the plan has no other error)",
        }
    }

    /// How `kup plan explain` names the pass.
    pub fn describe(self) -> &'static str {
        match self {
            Pass::Parse => "reading the file (before the TOML is understood)",
            Pass::Structure => "the structural check against the plan format's schema",
            Pass::Semantics => "the semantic check of the plan's values",
            Pass::Graph => "the step graph's check (only when the plan has no other error)",
        }
    }
}

/// One diagnostic code, documented.
#[derive(Debug)]
pub struct CodeDoc {
    /// The stable code, `kup::plan::…`.
    pub code: &'static str,
    /// What is wrong, in a few words (the first line of `kup plan explain`, and its `--list`).
    pub title: &'static str,
    /// Whether it makes the plan invalid.
    pub severity: Severity,
    /// The pass that reports it.
    pub pass: Pass,
    /// What triggers it (docs/plan-format.md's "Triggered by"; Markdown).
    pub means: &'static str,
    /// Why kup reports it: what would go wrong on the host (only in `kup plan explain`; Markdown).
    pub why: &'static str,
    /// How to fix it (Markdown).
    pub fix: &'static str,
    /// The test cases that pin it, as docs/plan-format.md's "Example" column lists them (Markdown).
    pub examples: &'static str,
    /// A plan that triggers it: `tests/data/diagnostics/NAME.toml`, compiled in (`tests/diagnostics.rs` proves
    /// that each file reports its code). Bytes, since the `encoding` example is not UTF-8.
    pub example: &'static [u8],
}

impl CodeDoc {
    /// The code without its `kup::plan::` prefix, which is also its example's file name.
    pub fn short(&self) -> &'static str {
        self.code.strip_prefix(PREFIX).unwrap_or(self.code)
    }

    /// Where the example plan lives in the repository.
    pub fn example_path(&self) -> String {
        format!("tests/data/diagnostics/{}.toml", self.short())
    }
}

/// The namespace of every plan code.
pub const PREFIX: &str = "kup::plan::";

/// The example plan of a code, by its short name, compiled in from the test data that pins it.
macro_rules! example {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/diagnostics/",
            $name,
            ".toml"
        ))
    };
}
use example;

/// The tables, in pass order (each file holds one or two passes, to stay readable).
const TABLES: &[&[CodeDoc]] = &[parsing::CODES, semantics::CODES, graph::CODES];

/// Every code, in the order docs/plan-format.md lists them.
pub fn all() -> impl Iterator<Item = &'static CodeDoc> {
    TABLES.iter().flat_map(|t| t.iter())
}

/// A code that is not in the table, with the nearest one that is (when any is close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCode {
    /// What was asked for.
    pub query: String,
    /// The closest known code, when it is close enough to be a typo.
    pub nearest: Option<&'static str>,
}

/// Finds a code, written in full (`kup::plan::sha256`) or short (`sha256`); case and surrounding blanks ignored.
pub fn lookup(query: &str) -> Result<&'static CodeDoc, UnknownCode> {
    let wanted = query.trim().to_ascii_lowercase();
    let short = wanted.strip_prefix(PREFIX).unwrap_or(&wanted);
    if let Some(doc) = all().find(|d| d.short() == short) {
        return Ok(doc);
    }
    // Jaro–Winkler like the unknown-key suggestion, on the short names so the shared prefix does not make every
    // code look close.
    let nearest = all()
        .map(|d| (strsim::jaro_winkler(short, d.short()), d.code))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, code)| code);
    Err(UnknownCode {
        query: query.to_owned(),
        nearest,
    })
}

/// The code tables of docs/plan-format.md's "Diagnostic codes" section, as they must appear there.
pub fn markdown() -> String {
    let mut out = String::new();
    let mut pass = None;
    for doc in all() {
        if pass != Some(doc.pass) {
            if pass.is_some() {
                out.push('\n');
            }
            pass = Some(doc.pass);
            let _ = writeln!(out, "### {}\n", doc.pass.heading());
            out.push_str("| Code | Sev | Triggered by | Fix | Example |\n");
            out.push_str("|------|-----|--------------|-----|---------|\n");
        }
        let severity = match doc.severity {
            Severity::Error => 'E',
            Severity::Warning => 'W',
        };
        let _ = writeln!(
            out,
            "| `{}` | {severity} | {} | {} | {} |",
            doc.code, doc.means, doc.fix, doc.examples
        );
    }
    // A blank line, so the last table ends before whatever follows it.
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_takes_full_and_short_codes() {
        assert_eq!(
            lookup("kup::plan::sha256").unwrap().code,
            "kup::plan::sha256"
        );
        assert_eq!(lookup(" SHA256 ").unwrap().code, "kup::plan::sha256");
    }

    #[test]
    fn an_unknown_code_suggests_the_nearest() {
        let unknown = lookup("kup::plan::volatil-path").unwrap_err();
        assert_eq!(unknown.nearest, Some("kup::plan::volatile-path"));
        assert_eq!(lookup("xyzzy").unwrap_err().nearest, None);
    }

    #[test]
    fn codes_are_unique_and_grouped_by_pass() {
        let codes: Vec<_> = all().map(|d| d.code).collect();
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "a code is listed twice");
        let passes: Vec<_> = all().map(|d| d.pass).collect();
        assert!(passes.windows(2).all(|w| w[0] <= w[1]), "{passes:?}");
    }
}
