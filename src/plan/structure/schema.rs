//! The plan's JSON Schema compiled, once per process, into what the structural walk asks of each value: a table's
//! keys and their nodes, an array's items, a string's allowed values, an integer's bounds.
//!
//! Walking the `serde_json` tree instead meant, for every value of every plan, map look-ups by string, `$ref`s
//! followed into `$defs`, `anyOf` arms filtered and allowed values collected again (a tenth of `kup plan validate`'s
//! time on 10 000 plans, docs/benchmarks.md). The compiled form answers the same questions the same way: each rule
//! below is the rule the walk applied to the JSON.

use serde_json::Value as Json;
use std::collections::HashMap;

/// A node of the compiled schema: an index into [`Compiled::nodes`].
pub(super) type NodeId = usize;

/// The whole schema; node 0 is the document's root.
pub(super) struct Compiled {
    nodes: Vec<Node>,
}

/// What a schema node expects of a value.
#[derive(Clone)]
pub(super) enum Node {
    Table(Table),
    /// The items' node, when the schema says what an item is.
    Array(Option<NodeId>),
    /// With the allowed values of a unit enum.
    String(Option<Vec<String>>),
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    /// Anything: a schema the walk does not understand is left to serde.
    Any,
}

/// A table's schema.
#[derive(Clone)]
pub(super) struct Table {
    /// The known keys and their nodes, in the schema's order (which the "known keys" help lists).
    pub(super) properties: Vec<(String, NodeId)>,
    /// What a key not in `properties` may be.
    pub(super) additional: Additional,
    /// The required keys, each with the first sentence of its description (the help of a "missing key" finding).
    pub(super) required: Vec<(String, Option<String>)>,
}

/// `additionalProperties`.
#[derive(Clone, Copy)]
pub(super) enum Additional {
    /// `false`: every other key is an unknown key.
    Forbidden,
    /// A schema every other key's value must meet (a map such as `cmdline.set`).
    Schema(NodeId),
    /// Absent or `true`: other keys are left alone.
    Allowed,
}

impl Table {
    /// The node of the known key `name`.
    pub(super) fn property(&self, name: &str) -> Option<NodeId> {
        self.properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|&(_, node)| node)
    }
}

impl Compiled {
    /// The plan's schema ([`crate::plan::schema`]), compiled on first use.
    pub(super) fn plan() -> &'static Compiled {
        static COMPILED: std::sync::OnceLock<Compiled> = std::sync::OnceLock::new();
        COMPILED.get_or_init(|| Compiled::new(&crate::plan::schema()))
    }

    /// Compiles `root` (a schemars schema: `$ref`s point into `$defs`).
    pub(super) fn new(root: &Json) -> Self {
        let mut compiler = Compiler {
            root,
            nodes: Vec::new(),
            done: HashMap::new(),
        };
        compiler.node(root);
        Compiled {
            nodes: compiler.nodes,
        }
    }

    pub(super) fn root(&self) -> NodeId {
        0
    }

    pub(super) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }
}

struct Compiler<'j> {
    root: &'j Json,
    nodes: Vec<Node>,
    /// Nodes already compiled, by the address of their (resolved) JSON: every `$defs` entry is compiled once, and a
    /// schema that refers to itself ends instead of recursing for ever.
    done: HashMap<*const Json, NodeId>,
}

impl<'j> Compiler<'j> {
    fn resolve(&self, mut schema: &'j Json) -> &'j Json {
        // A bounded loop guards against a `$ref` chain that never ends.
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

    fn node(&mut self, schema: &'j Json) -> NodeId {
        let schema = self.resolve(schema);
        let key = std::ptr::from_ref(schema);
        if let Some(&id) = self.done.get(&key) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(Node::Any);
        self.done.insert(key, id);
        self.nodes[id] = self.expect(schema);
        id
    }

    /// What the resolved `schema` expects.
    fn expect(&mut self, schema: &'j Json) -> Node {
        // `Option<T>` appears as `anyOf: [T, null]`; a plan cannot write null, so only the non-null arm matters.
        if let Some(arms) = schema.get("anyOf").and_then(Json::as_array) {
            let non_null: Vec<_> = arms
                .iter()
                .filter(|arm| arm.get("type").and_then(Json::as_str) != Some("null"))
                .collect();
            if let [only] = non_null.as_slice() {
                let only = self.node(only);
                return self.nodes[only].clone();
            }
            return Node::Any;
        }
        // Unit enums: `oneOf` of `const` strings (documented variants) or a plain `enum`.
        if let Some(arms) = schema.get("oneOf").and_then(Json::as_array) {
            let consts: Option<Vec<String>> = arms
                .iter()
                .map(|arm| self.resolve(arm).get("const").and_then(Json::as_str))
                .map(|c| c.map(str::to_owned))
                .collect();
            return consts.map_or(Node::Any, |c| Node::String(Some(c)));
        }
        if let Some(values) = schema.get("enum").and_then(Json::as_array) {
            let values: Option<Vec<String>> = values
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            return values.map_or(Node::Any, |v| Node::String(Some(v)));
        }
        let ty = match schema.get("type") {
            Some(Json::String(t)) => Some(t.as_str()),
            Some(Json::Array(types)) => {
                types.iter().filter_map(Json::as_str).find(|t| *t != "null")
            }
            _ => None,
        };
        match ty {
            Some("object") => Node::Table(self.table(schema)),
            Some("array") => Node::Array(schema.get("items").map(|items| self.node(items))),
            Some("string") => Node::String(None),
            Some("integer") => Node::Integer {
                min: schema.get("minimum").and_then(Json::as_i64),
                max: schema.get("maximum").and_then(Json::as_i64),
            },
            Some("boolean") => Node::Boolean,
            _ => Node::Any,
        }
    }

    fn table(&mut self, schema: &'j Json) -> Table {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = match schema.get("additionalProperties") {
            Some(Json::Bool(false)) => Additional::Forbidden,
            Some(extra) if extra.is_object() => Additional::Schema(self.node(extra)),
            _ => Additional::Allowed,
        };
        let required = schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .map(|name| {
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
                (name.to_owned(), what)
            })
            .collect();
        let properties = properties
            .into_iter()
            .flatten()
            .map(|(name, prop)| (name.clone(), self.node(prop)))
            .collect();
        Table {
            properties,
            additional,
            required,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(schema: serde_json::Value) -> Compiled {
        Compiled::new(&schema)
    }

    #[test]
    fn optional_references_and_enums_compile_to_what_they_expect() {
        let c = compiled(serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["mode"],
            "properties": {
                "mode": {"$ref": "#/$defs/Mode", "description": "How. Then more."},
                "count": {"type": ["integer", "null"], "minimum": 1},
                "inner": {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}]},
            },
            "$defs": {
                "Mode": {"oneOf": [{"const": "a"}, {"const": "b"}]},
                "Inner": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }));
        let Node::Table(root) = c.node(c.root()) else {
            panic!("the root is a table")
        };
        assert!(matches!(root.additional, Additional::Forbidden));
        assert_eq!(
            root.required,
            [("mode".to_owned(), Some("How".to_owned()))],
            "the property's own description, when the definition has none"
        );
        let node = |name| c.node(root.property(name).unwrap());
        assert!(matches!(node("mode"), Node::String(Some(v)) if v == &["a", "b"]));
        assert!(matches!(
            node("count"),
            Node::Integer {
                min: Some(1),
                max: None
            }
        ));
        let Node::Table(inner) = node("inner") else {
            panic!("an optional table is a table")
        };
        assert!(
            matches!(inner.additional, Additional::Schema(s) if matches!(c.node(s), Node::String(None)))
        );
        assert!(root.property("other").is_none());
    }

    #[test]
    fn a_schema_that_refers_to_itself_compiles() {
        let c = compiled(serde_json::json!({
            "$ref": "#/$defs/Tree",
            "$defs": {"Tree": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Tree"}}}},
        }));
        let Node::Table(tree) = c.node(c.root()) else {
            panic!("a table")
        };
        assert_eq!(tree.property("child"), Some(c.root()));
    }
}
