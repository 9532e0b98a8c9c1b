//! Problems found in a plan, as data: a stable code, a byte span into the plan text and a help line, so that the
//! same finding can be rendered by miette for people, as JSON for tools, or as GitHub annotations in code review.

use miette::{LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;
use std::fmt;
use std::ops::Range;

/// How bad a finding is: errors make the plan invalid, warnings flag legal but risky choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The plan is invalid.
    Error,
    /// Legal, but risky: the plan stays valid.
    Warning,
}

/// One finding about a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub(crate) severity: Severity,
    /// Stable identifier (`kup::plan::unknown-key`); listed in docs/plan-format.md.
    pub code: &'static str,
    pub message: String,
    /// Byte range of the offending text; `None` when the finding is about the file as a whole.
    pub span: Option<Range<usize>>,
    /// Short text drawn under the span.
    pub(crate) label: Option<String>,
    pub help: Option<String>,
    /// Other places that explain the finding (the first definition of a duplicate, …).
    pub related: Vec<(Range<usize>, String)>,
}

impl Diagnostic {
    pub(crate) fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub(crate) fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            span: None,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub(crate) fn at(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = Some(label.into());
        self
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn related(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub(crate) fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A plan file's text with the findings about it; renders through miette.
#[derive(Debug, Clone)]
pub struct PlanDiagnostics {
    /// The file name as the user gave it; shown in every rendering.
    pub(crate) file: String,
    pub(crate) source: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a UTF-8 sequence are
/// clamped so that a bad span can never panic a renderer.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    // Counted byte by byte (a '\n' byte is never inside a UTF-8 sequence), in blocks whose count fits a byte: the
    // compiler vectorises that, where `matches('\n')` searched for each line's end in turn, and validate asks this
    // twice per finding.
    let line = before
        .as_bytes()
        .chunks(255)
        .map(|block| usize::from(block.iter().map(|&b| u8::from(b == b'\n')).sum::<u8>()))
        .sum::<usize>()
        + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl PlanDiagnostics {
    /// Puts the diagnostics in source order, file-wide ones first (stable: equal positions keep their order).
    pub(crate) fn sort(&mut self) {
        self.diagnostics
            .sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn position(&self, diagnostic: &Diagnostic) -> Option<(usize, usize)> {
        diagnostic
            .span
            .as_ref()
            .map(|span| line_column(&self.source, span.start))
    }

    /// Renders every finding with miette's graphical handler. `width` fixes the wrapping so snapshots are stable.
    pub fn render(&self, color: bool, width: usize) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(width);
        let mut out = String::new();
        for diagnostic in &self.diagnostics {
            let report = Rendered {
                source: NamedSource::new(&self.file, self.source.clone()),
                diagnostic,
            };
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &report);
            out.push('\n');
        }
        out
    }
}

/// Adapter between a [`Diagnostic`] and miette's trait, borrowing the source for the duration of a render.
#[derive(Debug)]
struct Rendered<'a> {
    source: NamedSource<String>,
    diagnostic: &'a Diagnostic,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Rendered<'_> {}

fn source_span(source: &str, span: &Range<usize>) -> SourceSpan {
    let start = span.start.min(source.len());
    let end = span.end.clamp(start, source.len());
    SourceSpan::from(start..end)
}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let text = self.source.inner();
        let primary = self.diagnostic.span.as_ref().map(|span| {
            LabeledSpan::new_primary_with_span(
                self.diagnostic.label.clone(),
                source_span(text, span),
            )
        });
        let related = self.diagnostic.related.iter().map(|(span, label)| {
            LabeledSpan::new_with_span(Some(label.clone()), source_span(text, span))
        });
        let labels: Vec<_> = primary.into_iter().chain(related).collect();
        if labels.is_empty() {
            None
        } else {
            Some(Box::new(labels.into_iter()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_and_clamps() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes: the '=' after it is the 4th character of line 2.
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 9), (2, 3));
        // Inside 'é' and past the end: clamped, no panic.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
