//! Structural checking of the parsed TOML against the plan's JSON Schema, before serde sees it.
//!
//! serde stops at the first unknown key or wrong type; a reviewer wants every one of them at once. The schema is
//! generated from the same types serde deserializes ([`super::raw`]), so walking the spanned TOML tree with it
//! finds exactly the problems serde would, all of them, each with its span — and keeps one source of truth.

use super::diagnostic::Diagnostic;
use serde_json::Value as Json;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

pub(crate) const UNKNOWN_KEY: &str = "kup::plan::unknown-key";
pub(crate) const WRONG_TYPE: &str = "kup::plan::wrong-type";
pub(crate) const MISSING_KEY: &str = "kup::plan::missing-key";
pub(crate) const UNKNOWN_VARIANT: &str = "kup::plan::unknown-variant";
pub(crate) const OUT_OF_RANGE: &str = "kup::plan::out-of-range";

/// Checks `root` against `schema` (the plan's JSON Schema), appending one diagnostic per problem.
///
/// Offending entries (unknown keys, values of the wrong type or out of range) are removed from `root` as they are
/// reported, so that the pruned document can still go through serde and the semantic checks: a reviewer then sees
/// a typo'd key *and* a relative path in the same run.
///
/// Returns the spans of the tables that lost an entry, so that findings which are mere consequences of the pruning
/// ("no restart command" after a `restart` of the wrong type was removed) can be dropped.
pub(crate) fn check(
    root: &mut Spanned<DeTable<'_>>,
    schema: &Json,
    out: &mut Vec<Diagnostic>,
) -> Vec<Range<usize>> {
    let walker = Walker {
        root: schema,
        pruned: std::cell::RefCell::new(Vec::new()),
    };
    let span = header_span(root.span());
    walker.table(root.get_mut(), span, schema, "", out);
    walker.pruned.into_inner()
}

/// The span used for "missing key" findings on the document root: its first character, since the root has no
/// header to point at.
fn header_span(span: Range<usize>) -> Range<usize> {
    span.start..span.start
}

struct Walker<'s> {
    root: &'s Json,
    /// Spans of tables from which an offending entry was removed.
    pruned: std::cell::RefCell<Vec<Range<usize>>>,
}

/// What a (resolved) schema node expects.
enum Expect<'s> {
    Table(&'s Json),
    Array(&'s Json),
    String(Option<Vec<&'s str>>),
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    /// Anything: a schema this walker does not understand is left to serde.
    Any,
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

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
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

impl<'s> Walker<'s> {
    fn resolve(&self, mut schema: &'s Json) -> &'s Json {
        // `$ref`s in a schemars schema point into `$defs`; a bounded loop guards against a self-referential schema.
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
                return schema;
            };
            let Some(name) = reference.strip_prefix("#/$defs/") else {
                return schema;
            };
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(target) => schema = target,
                None => return schema,
            }
        }
        schema
    }

    fn expect(&self, schema: &'s Json) -> Expect<'s> {
        let schema = self.resolve(schema);
        // `Option<T>` appears as `anyOf: [T, null]`; a plan cannot write null, so only the non-null arm matters.
        if let Some(arms) = schema.get("anyOf").and_then(Json::as_array) {
            let non_null: Vec<_> = arms
                .iter()
                .filter(|arm| arm.get("type").and_then(Json::as_str) != Some("null"))
                .collect();
            if let [only] = non_null.as_slice() {
                return self.expect(only);
            }
            return Expect::Any;
        }
        // Unit enums: `oneOf` of `const` strings (documented variants) or a plain `enum`.
        if let Some(arms) = schema.get("oneOf").and_then(Json::as_array) {
            let consts: Option<Vec<&str>> = arms
                .iter()
                .map(|arm| self.resolve(arm).get("const").and_then(Json::as_str))
                .collect();
            return consts.map_or(Expect::Any, |c| Expect::String(Some(c)));
        }
        if let Some(values) = schema.get("enum").and_then(Json::as_array) {
            let values: Option<Vec<&str>> = values.iter().map(Json::as_str).collect();
            return values.map_or(Expect::Any, |v| Expect::String(Some(v)));
        }
        let ty = match schema.get("type") {
            Some(Json::String(t)) => Some(t.as_str()),
            Some(Json::Array(types)) => {
                types.iter().filter_map(Json::as_str).find(|t| *t != "null")
            }
            _ => None,
        };
        match ty {
            Some("object") => Expect::Table(schema),
            Some("array") => Expect::Array(schema),
            Some("string") => Expect::String(None),
            Some("integer") => Expect::Integer {
                min: schema.get("minimum").and_then(Json::as_i64),
                max: schema.get("maximum").and_then(Json::as_i64),
            },
            Some("boolean") => Expect::Boolean,
            _ => Expect::Any,
        }
    }

    // Long by design: one arm per JSON Schema keyword the plan's schema uses.
    /// Checks one value; returns whether it may stay in the document.
    fn value(
        &self,
        value: &mut Spanned<DeValue<'_>>,
        schema: &'s Json,
        path: &str,
        out: &mut Vec<Diagnostic>,
    ) -> bool {
        let span = value.span();
        let expected = self.expect(schema);
        let wanted = match (&expected, value.get_mut()) {
            (Expect::Any, _) => return true,
            (Expect::Table(schema), DeValue::Table(table)) => {
                self.table(table, span, schema, path, out);
                return true;
            }
            (Expect::Array(schema), DeValue::Array(items)) => {
                if let Some(item_schema) = schema.get("items") {
                    let before = items.len();
                    let old = std::mem::replace(items, DeArray::new());
                    *items = old
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, mut item)| {
                            self.value(&mut item, item_schema, &format!("{path}[{i}]"), out)
                                .then_some(item)
                        })
                        .collect();
                    if items.len() < before {
                        // An array that lost elements (an argv) must not also be reported as empty.
                        self.pruned.borrow_mut().push(span.clone());
                    }
                }
                return true;
            }
            (Expect::String(None), DeValue::String(_)) | (Expect::Boolean, DeValue::Boolean(_)) => {
                return true;
            }
            (Expect::String(Some(allowed)), DeValue::String(s)) => {
                if !allowed.contains(&s.as_ref()) {
                    let mut d =
                        Diagnostic::error(UNKNOWN_VARIANT, format!("`{path}` cannot be \"{s}\""))
                            .at(span, "not one of the allowed values");
                    let list = allowed
                        .iter()
                        .map(|a| format!("\"{a}\""))
                        .collect::<Vec<_>>()
                        .join(", ");
                    d = match did_you_mean(s, allowed.iter().copied()) {
                        Some(guess) => d.help(format!("did you mean \"{guess}\"? Allowed: {list}")),
                        None => d.help(format!("allowed values: {list}")),
                    };
                    out.push(d);
                    return false;
                }
                return true;
            }
            (Expect::Integer { min, max }, DeValue::Integer(int)) => {
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
            (Expect::Table(_), _) => "a table",
            (Expect::Array(_), _) => "an array",
            (Expect::String(_), _) => "a string",
            (Expect::Integer { .. }, _) => "an integer",
            (Expect::Boolean, _) => "a boolean",
        };
        let found = value.get_ref();
        let found_name = type_name(found);
        let mut d = Diagnostic::error(
            WRONG_TYPE,
            format!("`{path}` must be {wanted}, not {found_name}"),
        )
        .at(span, format!("expected {wanted}"));
        d = match (wanted, found) {
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
        };
        out.push(d);
        false
    }

    // Long by design: a table's keys walked once: unknown, missing, and each value against its schema.
    fn table(
        &self,
        table: &mut DeTable<'_>,
        span: Range<usize>,
        schema: &'s Json,
        path: &str,
        out: &mut Vec<Diagnostic>,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        // A table's own span is only its header; its entries end where the last value ends.
        let end = table
            .iter()
            .map(|(k, v)| k.span().end.max(v.span().end))
            .max()
            .unwrap_or(span.end);
        let extent = span.start..end.max(span.end);
        let old = std::mem::replace(table, DeTable::new());
        // Keys removed for a bad value are not "missing" as well: that finding is already made.
        let mut removed: Vec<String> = Vec::new();
        for (key, mut value) in old {
            let name = key.get_ref().as_ref();
            let key_path = join_path(path, name);
            let keep = match (properties.and_then(|p| p.get(name)), additional) {
                (Some(prop), _) => self.value(&mut value, prop, &key_path, out),
                (None, Some(Json::Bool(false))) => {
                    let known = properties
                        .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>())
                        .unwrap_or_default();
                    let place = if path.is_empty() {
                        "the plan".to_owned()
                    } else {
                        format!("`{path}`")
                    };
                    let mut d =
                        Diagnostic::error(UNKNOWN_KEY, format!("unknown key `{name}` in {place}"))
                            .at(key.span(), "unknown key");
                    d = match did_you_mean(name, known.iter().copied()) {
                        Some(guess) => d.help(format!("did you mean `{guess}`?")),
                        None => d.help(format!("known keys here: {}", known.join(", "))),
                    };
                    out.push(d);
                    false
                }
                (None, Some(extra)) if extra.is_object() => {
                    self.value(&mut value, extra, &key_path, out)
                }
                _ => true,
            };
            if keep {
                table.insert(key, value);
            } else {
                removed.push(key.get_ref().to_string());
                self.pruned.borrow_mut().push(extent.clone());
            }
        }
        let required = schema.get("required").and_then(Json::as_array);
        for name in required.into_iter().flatten().filter_map(Json::as_str) {
            if table.get(name).is_none() && !removed.iter().any(|r| r == name) {
                let place = if path.is_empty() {
                    "the plan".to_owned()
                } else {
                    format!("`{path}`")
                };
                let what = properties
                    .and_then(|p| p.get(name))
                    .and_then(|p| {
                        self.resolve(p)
                            .get("description")
                            .or_else(|| p.get("description"))
                    })
                    .and_then(Json::as_str)
                    .map(|d| {
                        d.split(". ")
                            .next()
                            .unwrap_or(d)
                            .trim_end_matches('.')
                            .to_owned()
                    });
                let mut d = Diagnostic::error(
                    MISSING_KEY,
                    format!("{place} is missing the required key `{name}`"),
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
