//! Structural checking of the parsed TOML against the plan's JSON Schema, before serde sees it.
//!
//! serde stops at the first unknown key or wrong type; a reviewer wants every one of them at once. The schema is
//! generated from the same types serde deserializes ([`super::raw`]), so walking the spanned TOML tree with it
//! finds exactly the problems serde would, all of them, each with its span — and keeps one source of truth. The
//! schema is compiled once per process into a lookup tree ([`schema`]); the walk borrows the TOML tree and changes
//! it only to remove what it reports.

use super::diagnostic::Diagnostic;
use schema::{Additional, Compiled, Node, NodeId, Table};
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

mod schema;

pub(crate) const UNKNOWN_KEY: &str = "kup::plan::unknown-key";
pub(crate) const WRONG_TYPE: &str = "kup::plan::wrong-type";
pub(crate) const MISSING_KEY: &str = "kup::plan::missing-key";
pub(crate) const UNKNOWN_VARIANT: &str = "kup::plan::unknown-variant";
pub(crate) const OUT_OF_RANGE: &str = "kup::plan::out-of-range";

/// Checks `root` against the plan's JSON Schema, appending one diagnostic per problem.
///
/// Offending entries (unknown keys, values of the wrong type or out of range) are removed from `root` as they are
/// reported, so that the pruned document can still go through serde and the semantic checks: a reviewer then sees
/// a typo'd key *and* a relative path in the same run.
///
/// Returns the spans of the tables that lost an entry, so that findings which are mere consequences of the pruning
/// ("no restart command" after a `restart` of the wrong type was removed) can be dropped.
pub(crate) fn check(
    root: &mut Spanned<DeTable<'_>>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Range<usize>> {
    let schema = Compiled::plan();
    let mut walker = Walker {
        schema,
        pruned: Vec::new(),
    };
    let span = header_span(root.span());
    if let Node::Table(table) = schema.node(schema.root()) {
        walker.table(root.get_mut(), span, table, &Path::Root, out);
    }
    walker.pruned
}

/// The span used for "missing key" findings on the document root: its first character, since the root has no
/// header to point at.
fn header_span(span: Range<usize>) -> Range<usize> {
    span.start..span.start
}

struct Walker<'s> {
    schema: &'s Compiled,
    /// Spans of tables from which an offending entry was removed.
    pruned: Vec<Range<usize>>,
}

/// Where a value is in the document (`vm[2].restart`), as the messages name it: a chain of borrowed parts, written
/// out only for a finding.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Self {
        Path::Key(self, key)
    }

    /// Whether it is written as nothing: the root (or keys named "" under it).
    fn is_empty(&self) -> bool {
        match self {
            Path::Root => true,
            Path::Key(parent, key) => key.is_empty() && parent.is_empty(),
            Path::Index(..) => false,
        }
    }

    /// How a finding names the table at this path.
    fn place(&self) -> String {
        if self.is_empty() {
            "the plan".to_owned()
        } else {
            format!("`{self}`")
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) if parent.is_empty() => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The closest known name to `unknown`, if it is close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl Walker<'_> {
    // Long by design: one arm per kind of schema node.
    /// Checks one value; returns whether it may stay in the document.
    fn value(
        &mut self,
        value: &mut Spanned<DeValue<'_>>,
        node: NodeId,
        path: &Path<'_>,
        out: &mut Vec<Diagnostic>,
    ) -> bool {
        let span = value.span();
        let wanted = match (self.schema.node(node), value.get_mut()) {
            (Node::Any, _) => return true,
            (Node::Table(schema), DeValue::Table(table)) => {
                self.table(table, span, schema, path, out);
                return true;
            }
            (Node::Array(items_node), DeValue::Array(items)) => {
                if let Some(item_node) = *items_node {
                    self.items(items, span, item_node, path, out);
                }
                return true;
            }
            (Node::String(None), DeValue::String(_)) | (Node::Boolean, DeValue::Boolean(_)) => {
                return true;
            }
            (Node::String(Some(allowed)), DeValue::String(s)) => {
                if !allowed.iter().any(|a| a == s) {
                    out.push(unknown_variant(path, s, allowed, span));
                    return false;
                }
                return true;
            }
            (&Node::Integer { min, max }, DeValue::Integer(int)) => {
                let parsed = i64::from_str_radix(int.as_str(), int.radix()).ok();
                let in_range = parsed
                    .is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m));
                if !in_range {
                    let bounds = match (min, max) {
                        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                        (Some(lo), None) => format!("at least {lo}"),
                        (None, Some(hi)) => format!("at most {hi}"),
                        (None, None) => "a 64-bit integer".to_owned(),
                    };
                    out.push(
                        Diagnostic::error(OUT_OF_RANGE, format!("`{path}` is out of range"))
                            .at(span, format!("must be {bounds}"))
                            .help(format!("use a whole number {bounds}")),
                    );
                }
                return in_range;
            }
            (Node::Table(_), _) => "a table",
            (Node::Array(_), _) => "an array",
            (Node::String(_), _) => "a string",
            (Node::Integer { .. }, _) => "an integer",
            (Node::Boolean, _) => "a boolean",
        };
        out.push(wrong_type(path, wanted, value.get_ref(), span));
        false
    }

    /// Checks an array's items in place; the ones that may not stay are removed afterwards (rarely: the items are
    /// moved only then).
    fn items(
        &mut self,
        items: &mut DeArray<'_>,
        span: Range<usize>,
        item_node: NodeId,
        path: &Path<'_>,
        out: &mut Vec<Diagnostic>,
    ) {
        let mut dropped = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            if !self.value(item, item_node, &Path::Index(path, i), out) {
                dropped.push(i);
            }
        }
        if !dropped.is_empty() {
            let old = std::mem::replace(items, DeArray::new());
            *items = old
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !dropped.contains(i))
                .map(|(_, item)| item)
                .collect();
            // An array that lost elements (an argv) must not also be reported as empty.
            self.pruned.push(span);
        }
    }

    /// A table's keys walked once, in place: unknown, missing, and each value against its node. The entries that
    /// may not stay are removed afterwards.
    fn table(
        &mut self,
        table: &mut DeTable<'_>,
        span: Range<usize>,
        schema: &Table,
        path: &Path<'_>,
        out: &mut Vec<Diagnostic>,
    ) {
        // A table's own span is only its header; its entries end where the last value ends.
        let end = table
            .iter()
            .map(|(k, v)| k.span().end.max(v.span().end))
            .max()
            .unwrap_or(span.end);
        let extent = span.start..end.max(span.end);
        // Keys removed for a bad value are not "missing" as well: that finding is already made.
        let mut removed: Vec<String> = Vec::new();
        for (key, value) in table.iter_mut() {
            let name = key.get_ref().as_ref();
            let key_path = path.key(name);
            let keep = match (schema.property(name), schema.additional) {
                (Some(prop), _) => self.value(value, prop, &key_path, out),
                (None, Additional::Forbidden) => {
                    out.push(unknown_key(path, name, schema, key.span()));
                    false
                }
                (None, Additional::Schema(extra)) => self.value(value, extra, &key_path, out),
                (None, Additional::Allowed) => true,
            };
            if !keep {
                removed.push(name.to_owned());
                self.pruned.push(extent.clone());
            }
        }
        for name in &removed {
            table.remove(name.as_str());
        }
        for (name, what) in &schema.required {
            if table.get(name.as_str()).is_none() && !removed.contains(name) {
                let mut d = Diagnostic::error(
                    MISSING_KEY,
                    format!("{} is missing the required key `{name}`", path.place()),
                )
                .at(span.clone(), format!("`{name}` missing here"));
                if let Some(what) = what {
                    d = d.help(format!("add `{name}`: {what}"));
                }
                out.push(d);
            }
        }
    }
}

fn unknown_variant(path: &Path<'_>, s: &str, allowed: &[String], span: Range<usize>) -> Diagnostic {
    let d = Diagnostic::error(UNKNOWN_VARIANT, format!("`{path}` cannot be \"{s}\""))
        .at(span, "not one of the allowed values");
    let list = allowed
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match did_you_mean(s, allowed.iter().map(String::as_str)) {
        Some(guess) => d.help(format!("did you mean \"{guess}\"? Allowed: {list}")),
        None => d.help(format!("allowed values: {list}")),
    }
}

fn unknown_key(path: &Path<'_>, name: &str, schema: &Table, span: Range<usize>) -> Diagnostic {
    let known: Vec<&str> = schema.properties.iter().map(|(k, _)| k.as_str()).collect();
    let d = Diagnostic::error(
        UNKNOWN_KEY,
        format!("unknown key `{name}` in {}", path.place()),
    )
    .at(span, "unknown key");
    match did_you_mean(name, known.iter().copied()) {
        Some(guess) => d.help(format!("did you mean `{guess}`?")),
        None => d.help(format!("known keys here: {}", known.join(", "))),
    }
}

fn wrong_type(
    path: &Path<'_>,
    wanted: &str,
    found: &DeValue<'_>,
    span: Range<usize>,
) -> Diagnostic {
    let d = Diagnostic::error(
        WRONG_TYPE,
        format!("`{path}` must be {wanted}, not {}", type_name(found)),
    )
    .at(span, format!("expected {wanted}"));
    match (wanted, found) {
        ("a string", DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_)) => {
            d.help("put the value in double quotes")
        }
        ("an integer" | "a boolean", DeValue::String(_)) => {
            d.help("write the value without quotes")
        }
        ("an array", DeValue::String(_)) => d.help(
            "write a list of strings, one per argument: [\"systemctl\", \"start\", \"unit\"]",
        ),
        _ => d,
    }
}
