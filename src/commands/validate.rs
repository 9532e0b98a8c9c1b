//! `kup plan validate`: checks plan files offline and reports every finding for people (miette), tools (JSON) or
//! GitHub code review (workflow annotations).

use super::{CommandError, CommandResult};
use crate::plan::{Diagnostic, PlanDiagnostics, Severity};
use clap::ValueEnum;
use serde::Serialize;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Graphical diagnostics with source snippets (stderr).
    Human,
    /// One JSON document on stdout.
    Json,
    /// GitHub Actions workflow commands (`::error file=…`) on stdout.
    Github,
}

/// The plan files named by `paths`: files as given, directories searched recursively for `*.toml`, sorted so the
/// output is stable.
pub(crate) fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found).map_err(|e| format!("{}: {e}", path.display()))?;
            found.sort();
            if found.is_empty() {
                return Err(format!(
                    "{}: no *.toml files in this directory",
                    path.display()
                ));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The JSON document, borrowing the reports' text.
#[derive(Serialize)]
struct JsonOutput<'a> {
    plans: Vec<JsonPlan<'a>>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    file: &'a str,
    valid: bool,
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: Severity,
    code: &'static str,
    message: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    end_line: Option<usize>,
    end_column: Option<usize>,
    label: Option<&'a str>,
    help: Option<&'a str>,
}

fn json_diagnostic<'a>(report: &PlanDiagnostics, d: &'a Diagnostic) -> JsonDiagnostic<'a> {
    let start = report.position(d);
    let end = d
        .span
        .as_ref()
        .map(|s| crate::plan::diagnostic::line_column(&report.source, s.end));
    JsonDiagnostic {
        severity: d.severity,
        code: d.code,
        message: &d.message,
        line: start.map(|p| p.0),
        column: start.map(|p| p.1),
        end_line: end.map(|p| p.0),
        end_column: end.map(|p| p.1),
        label: d.label.as_deref(),
        help: d.help.as_deref(),
    }
}

/// Escapes a GitHub workflow command's message (`%`, CR, LF) or, with `property`, a property value (also `:`, `,`).
fn github_escape(text: &str, property: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' if property => out.push_str("%3A"),
            ',' if property => out.push_str("%2C"),
            c => out.push(c),
        }
    }
    out
}

/// One diagnostic as a GitHub Actions workflow command (`::error file=…,line=…::message`), escaped as GitHub
/// requires.
pub fn github_annotation(report: &PlanDiagnostics, d: &Diagnostic) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut props = vec![format!("file={}", github_escape(&report.file, true))];
    if let Some((line, col)) = report.position(d) {
        props.push(format!("line={line}"));
        props.push(format!("col={col}"));
        if let Some(span) = &d.span {
            let (end_line, end_col) =
                crate::plan::diagnostic::line_column(&report.source, span.end);
            props.push(format!("endLine={end_line}"));
            if end_line == line {
                props.push(format!("endColumn={end_col}"));
            }
        }
    }
    props.push(format!("title={}", github_escape(d.code, true)));
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    format!(
        "::{level} {}::{}",
        props.join(","),
        github_escape(&message, false)
    )
}

fn summary(report: &PlanDiagnostics) -> String {
    let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = report.diagnostics.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => format!("{}: valid", report.file),
        (0, w) => format!("{}: valid, {}", report.file, plural(w, "warning")),
        (e, 0) => format!("{}: invalid, {}", report.file, plural(e, "error")),
        (e, w) => format!(
            "{}: invalid, {}, {}",
            report.file,
            plural(e, "error"),
            plural(w, "warning")
        ),
    }
}

/// One file checked: its diagnostics and, for the human format, their rendering (per-file work like the check, so
/// it is done on the worker thread too).
struct FileResult {
    report: PlanDiagnostics,
    rendered: Option<String>,
}

/// `kup plan validate`: every plan's diagnostics; the invalid-plan error when any plan has an error. The files are
/// checked on `jobs` threads (every core by default); the output is in the files' order, the same as with one.
/// With journal roots in `history`, the downtime budget is checked against measured step durations where there are
/// some.
pub(crate) fn run(
    paths: &[PathBuf],
    format: Format,
    jobs: Option<NonZeroUsize>,
    history: &[PathBuf],
) -> CommandResult {
    let files = collect_files(paths).map_err(CommandError::Usage)?;
    let history = super::graph::read_history(history)?;
    let jobs = jobs.unwrap_or_else(super::fan_out::default_jobs);
    let (color, width) = (super::stderr_color(), super::width());
    let results = super::fan_out::map_ordered(&files, jobs, |file| {
        let bytes = std::fs::read(file)
            .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", file.display())))?;
        let report =
            crate::check::check_with_history(&file.display().to_string(), &bytes, history.as_ref())
                .report;
        let rendered = (format == Format::Human).then(|| report.render(color, width));
        Ok(FileResult { report, rendered })
    });
    // The first unreadable file in the files' order is the one reported, as when they were read one by one.
    let results = results
        .into_iter()
        .collect::<Result<Vec<_>, CommandError>>()?;
    let mut reports = Vec::with_capacity(results.len());
    let mut rendered = Vec::with_capacity(results.len());
    for result in results {
        reports.push(result.report);
        rendered.extend(result.rendered);
    }
    match format {
        Format::Human => {
            for text in &rendered {
                eprint!("{text}");
            }
            for report in &reports {
                eprintln!("{}", summary(report));
            }
        }
        Format::Json => {
            let output = JsonOutput {
                plans: reports
                    .iter()
                    .map(|r| JsonPlan {
                        file: &r.file,
                        valid: !r.has_errors(),
                        diagnostics: r
                            .diagnostics
                            .iter()
                            .map(|d| json_diagnostic(r, d))
                            .collect(),
                    })
                    .collect(),
            };
            let mut text = serde_json::to_string_pretty(&output).unwrap_or_default();
            text.push('\n');
            super::write_stdout(&text)?;
        }
        Format::Github => {
            let mut text = String::new();
            for report in &reports {
                for d in &report.diagnostics {
                    text.push_str(&github_annotation(report, d));
                    text.push('\n');
                }
            }
            super::write_stdout(&text)?;
            for report in &reports {
                eprintln!("{}", summary(report));
            }
        }
    }
    if reports.iter().any(PlanDiagnostics::has_errors) {
        Err(CommandError::invalid_plan())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escaping_follows_the_workflow_command_rules() {
        assert_eq!(github_escape("50%\nnext", false), "50%25%0Anext");
        assert_eq!(github_escape("a:b,c", true), "a%3Ab%2Cc");
        assert_eq!(github_escape("a:b,c", false), "a:b,c");
    }
}
