//! `kup plan explain CODE`: the long text of a diagnostic code, like `rustc --explain` — what it means, why kup
//! reports it, how to fix it, a plan that triggers it and what `kup plan validate` says about that plan — from the
//! table in `crate::plan::codes`, so an operator can read it where the finding was shown, without the docs.

use super::{CommandError, CommandResult};
use crate::plan::codes::{self, CodeDoc};
use crate::plan::{PlanDiagnostics, Severity};
use std::fmt::Write as _;

/// `kup plan explain CODE`, or `--list`.
pub(crate) fn run(code: Option<&str>, list: bool) -> CommandResult {
    let width = super::width();
    let text = if list {
        render_list(width)
    } else {
        render(
            lookup(code.unwrap_or_default())?,
            width,
            super::stdout_color(),
        )
    };
    super::write_stdout(&text)
}

/// The code's entry, or a usage error naming the nearest code.
fn lookup(query: &str) -> Result<&'static CodeDoc, CommandError> {
    codes::lookup(query).map_err(|unknown| {
        let suggestion = match unknown.nearest {
            Some(code) => format!("; did you mean `{code}`?"),
            None => String::new(),
        };
        CommandError::Usage(format!(
            "unknown diagnostic code `{}`{suggestion} (`kup plan explain --list` lists every code)",
            unknown.query.trim()
        ))
    })
}

/// One line per code: the code, its severity and its title (cut to `width`).
fn render_list(width: usize) -> String {
    let longest = codes::all().map(|d| d.code.len()).max().unwrap_or(0);
    // The code column, two blanks, "warning", two blanks.
    let room = width.saturating_sub(longest + 11).max(20);
    let mut out = String::new();
    for doc in codes::all() {
        let mut first = doc.title.to_owned();
        if first.chars().count() > room {
            first = first.chars().take(room - 1).collect::<String>() + "…";
        }
        let _ = writeln!(
            out,
            "{:<longest$}  {:<7}  {first}",
            doc.code,
            severity(doc.severity)
        );
    }
    out
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// The whole explanation of one code, wrapped at `width`.
pub(crate) fn render(doc: &CodeDoc, width: usize, color: bool) -> String {
    let mut out = format!(
        "{}: {}\n{}, reported by {}\n",
        doc.code,
        doc.title,
        capitalised(severity(doc.severity)),
        doc.pass.describe()
    );
    for (title, body) in [
        ("What it means", doc.means),
        ("Why it matters", doc.why),
        ("How to fix it", doc.fix),
    ] {
        let _ = write!(out, "\n{title}\n{}", wrap(&plain(body), width, "  "));
    }
    let path = doc.example_path();
    let _ = writeln!(out, "\nA plan that triggers it ({path})");
    for line in String::from_utf8_lossy(doc.example).lines() {
        let _ = writeln!(out, "{}", format!("  {line}").trim_end());
    }
    let _ = writeln!(out, "\nWhat `kup plan validate {path}` says");
    out.push_str(&what_validate_says(doc, &path, width, color));
    out
}

/// The example's findings with this code, rendered as `kup plan validate` renders them (the first one only: a few
/// examples trigger it twice to show its variants, which the "What it means" text already lists).
fn what_validate_says(doc: &CodeDoc, path: &str, width: usize, color: bool) -> String {
    let report = crate::check::check(path, doc.example).report;
    let first = report.diagnostics.iter().find(|d| d.code == doc.code);
    match first {
        Some(diagnostic) => PlanDiagnostics {
            diagnostics: vec![diagnostic.clone()],
            ..report
        }
        .render(color, width),
        // tests/explain.rs proves every example reports its code; this keeps a stale entry readable regardless.
        None => "  (the example no longer reports this code)\n".to_owned(),
    }
}

/// Markdown as a terminal shows it: links become their text (the anchors are docs/plan-format.md's).
fn plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let link = after
            .find("](")
            .and_then(|close| Some((close, after[close..].find(')')? + close)));
        match link {
            Some((close, end)) if !after[..close].contains('[') => {
                out.push_str(&rest[..open]);
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Greedy word wrap at `width` columns (characters), each line starting with `indent`; a word longer than a line
/// stays whole.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        let fits = line.chars().count() + 1 + word.chars().count() <= width;
        if line.len() > indent.len() && !fits {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_their_text() {
        assert_eq!(
            plain("a [duration](#durations), [x] y (z)"),
            "a duration, [x] y (z)"
        );
        assert_eq!(
            plain("table [above](#a) and [b](#c)."),
            "table above and b."
        );
    }

    #[test]
    fn wrap_keeps_lines_within_width() {
        let text = "one two three four five six seven eight nine ten";
        let wrapped = wrap(text, 20, "  ");
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 20),
            "{wrapped}"
        );
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>().join(" "),
            text
        );
        assert_eq!(
            wrap("averyveryverylongword x", 10, "  "),
            "  averyveryverylongword\n  x\n"
        );
    }
}
