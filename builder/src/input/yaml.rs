//! YAML input with a position on every node.
//!
//! yaml-rust2's event parser gives a marker per event; we build our own tree from those events so
//! that (a) every node, and every mapping key, keeps its `line:col`, (b) scalars are typed by the
//! YAML 1.2 core schema (Kubernetes' rules: `yes`/`on` stay strings, unlike YAML 1.1), and (c)
//! alias expansion, nesting depth and node count are capped, so a "billion laughs" document fails
//! with an error instead of exhausting memory.

use std::collections::BTreeMap;

pub use crate::position::{FieldPath, Pos, Seg};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted. Istio resources nest about 10 levels; 64 leaves ample room.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one input file may hold, aliases expanded. A mesh of 1,000 services x 3 subsets
/// x 10 weighted rules in ONE file is 662,001 nodes (4.4 MB of YAML; measured by
/// `a_thousand_service_mesh_fits_the_node_cap_with_room`): the cap leaves it 2.2x room. Without
/// aliases the node count is bounded by the file's size anyway (a node takes at least 2 bytes).
pub const MAX_NODES: usize = 1_500_000;
/// Most nodes alias expansion may add to one input file. Aliases are the only way a small file
/// becomes a large tree ("billion laughs"); Kubernetes YAML rarely uses them, and when it does
/// it is to share a few small blocks. 100,000 copied nodes cost about 30 MB, so an alias bomb
/// is refused long before it costs memory.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// The position of a yaml-rust2 marker (which counts lines from 1 and columns from 0).
fn pos_of(m: Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// The value of a node, typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float (or an integer too large for i64).
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in source order, each key with its own position.
    Map(Vec<(String, Pos, Node)>),
}

impl Node {
    /// The position of the deepest node along `path` (for a key: the key itself), so an error
    /// about a field that does not exist points at its parent rather than at nothing.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for seg in &path.0 {
            let next = match (&node.value, seg) {
                (Value::Map(entries), Seg::Key(k)) => entries
                    .iter()
                    .find(|(key, _, _)| key == k)
                    .map(|(_, key_pos, child)| (*key_pos, child)),
                (Value::Seq(items), Seg::Index(i)) => items.get(*i).map(|c| (c.pos, c)),
                _ => None,
            };
            match next {
                Some((p, child)) => {
                    pos = p;
                    node = child;
                }
                None => break,
            }
        }
        pos
    }

    /// The node at `path`, if every step exists.
    pub fn at(&self, path: &FieldPath) -> Option<&Node> {
        path.0
            .iter()
            .try_fold(self, |node, seg| match (&node.value, seg) {
                (Value::Map(_), Seg::Key(k)) => node.get(k),
                (Value::Seq(items), Seg::Index(i)) => items.get(*i),
                _ => None,
            })
    }

    /// The child of a mapping node by key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    /// The string value of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON for typed deserialization. Non-finite floats have no JSON form and become
    /// their YAML spelling as a string, so a numeric field holding `.inf` fails with a type error.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map_or_else(|| serde_json::Value::String(x.to_string()), Into::into),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short name for the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }
}

/// A YAML error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it happened.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// One document of a multi-document stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// The root node (`Null` for an empty document).
    pub root: Node,
}

/// Parses a multi-document YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    let scanned = parser.load(&mut builder, true);
    if let Some(err) = builder.error.take() {
        return Err(err);
    }
    if let Err(e) = scanned {
        return Err(YamlError {
            pos: pos_of(*e.marker()),
            message: e.info().to_owned(),
        });
    }
    Ok(builder.documents)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(String, Pos, Node)>,
        pending_key: Option<(String, Pos)>,
    },
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: BTreeMap<usize, (Node, usize)>,
    documents: Vec<Document>,
    nodes: usize,
    alias_nodes: usize,
    doc_starts: usize,
    error: Option<YamlError>,
}

impl TreeBuilder {
    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message });
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                pos,
                format!(
                    "the file holds more than {MAX_NODES} YAML nodes (the cap on one input \
                     file): split it into several files"
                ),
            );
            return false;
        }
        true
    }

    /// Adds a finished node to its parent (or as a document root).
    fn push_node(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.documents.push(Document { root: node }),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some((key, key_pos)) => {
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        let message = format!("duplicate key {key:?} in this mapping");
                        self.fail(key_pos, message);
                    } else {
                        entries.push((key, key_pos, node));
                    }
                }
                None => match node.value {
                    Value::Str(key) => *pending_key = Some((key, node.pos)),
                    Value::Null => *pending_key = Some((String::new(), node.pos)),
                    Value::Bool(b) => *pending_key = Some((b.to_string(), node.pos)),
                    Value::Int(i) => *pending_key = Some((i.to_string(), node.pos)),
                    Value::Float(x) => *pending_key = Some((x.to_string(), node.pos)),
                    Value::Seq(_) | Value::Map(_) => {
                        self.fail(node.pos, "mapping keys must be scalars".into());
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = pos_of(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, pos) {
                    return;
                }
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == TScalarStyle::Plain && !forced_string {
                    type_plain_scalar(text)
                } else {
                    Value::Str(text)
                };
                self.push_node(Node { pos, value }, anchor, 1);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(pos, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                if !self.count(1, pos) {
                    return;
                }
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            // Block collections report their start event late (after the first
                            // key); the first child is where a reader sees the node begin.
                            pos: items.first().map_or(pos, |c| c.pos.min(pos)),
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos: entries.first().map_or(pos, |(_, p, _)| (*p).min(pos)),
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                let size = if anchor == 0 { 0 } else { subtree_size(&node) };
                self.push_node(node, anchor, size);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some((mut node, size)) => {
                    self.alias_nodes = self.alias_nodes.saturating_add(size);
                    if self.alias_nodes > MAX_ALIAS_NODES {
                        self.fail(
                            pos,
                            format!(
                                "aliases expand to more than {MAX_ALIAS_NODES} nodes (the cap on \
                                 alias expansion; an alias bomb?)"
                            ),
                        );
                        return;
                    }
                    if !self.count(size, pos) {
                        return;
                    }
                    node.pos = pos;
                    self.push_node(node, 0, size);
                }
                None => self.fail(pos, "alias to an unknown anchor".into()),
            },
            Event::DocumentEnd => {
                // A document holding only `---` produces no node: record it as null so document
                // numbering stays aligned with the source.
                if self.documents.len() < self.doc_starts {
                    self.documents.push(Document {
                        root: Node {
                            pos,
                            value: Value::Null,
                        },
                    });
                }
                self.anchors.clear();
            }
            Event::DocumentStart => {
                self.doc_starts += 1;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

fn subtree_size(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(subtree_size).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, _, n)| subtree_size(n))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Types a plain (unquoted) scalar by the YAML 1.2 core schema.
fn type_plain_scalar(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(int) = parse_core_int(&text) {
        return int;
    }
    if is_core_float(&text)
        && let Ok(x) = text.parse::<f64>()
    {
        return Value::Float(x);
    }
    Value::Str(text)
}

fn parse_core_int(text: &str) -> Option<Value> {
    let (radix, digits, negative) = if let Some(h) = text.strip_prefix("0x") {
        (16, h, false)
    } else if let Some(o) = text.strip_prefix("0o") {
        (8, o, false)
    } else if let Some(d) = text.strip_prefix('-') {
        (10, d, true)
    } else {
        (10, text.strip_prefix('+').unwrap_or(text), false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok();
    let signed = magnitude.map(|m| if negative { -m } else { m });
    Some(match signed.and_then(|v| i64::try_from(v).ok()) {
        Some(v) => Value::Int(v),
        // Too large for i64: keep the number as a float, as JSON would.
        None => Value::Float(text.parse().unwrap_or(f64::INFINITY)),
    })
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((w, f)) => {
            (!w.is_empty() || !f.is_empty())
                && w.chars().all(|c| c.is_ascii_digit())
                && f.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let d = e.strip_prefix(['-', '+']).unwrap_or(e);
        !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        docs[0].root.clone()
    }

    #[test]
    fn core_schema_typing() {
        let root = one(
            "a: yes\nb: true\nc: 10\nd: '10'\ne: 1.5\nf: ~\ng: 0x1F\nh: on\ni: 1e3\nj: 1.2.3\n",
        );
        let j = root.to_json();
        assert_eq!(j["a"], "yes", "YAML 1.2 keeps yes a string");
        assert_eq!(j["b"], true);
        assert_eq!(j["c"], 10);
        assert_eq!(j["d"], "10");
        assert_eq!(j["e"], 1.5);
        assert!(j["f"].is_null());
        assert_eq!(j["g"], 31);
        assert_eq!(j["h"], "on");
        assert_eq!(j["i"], 1000.0);
        assert_eq!(j["j"], "1.2.3");
    }

    #[test]
    fn positions_of_keys_and_items() {
        let root = one("spec:\n  http:\n  - route:\n    - weight: 5\n");
        let p = FieldPath::root()
            .key("spec")
            .key("http")
            .index(0)
            .key("route")
            .index(0)
            .key("weight");
        assert_eq!(root.locate(&p), Pos { line: 4, col: 7 });
        assert_eq!(p.to_string(), "spec.http[0].route[0].weight");
        // A missing field points at the deepest existing parent.
        let missing = FieldPath::root()
            .key("spec")
            .key("http")
            .index(0)
            .key("nope");
        assert_eq!(root.locate(&missing), Pos { line: 3, col: 5 });
    }

    #[test]
    fn multi_documents_and_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].root.value, Value::Null);
        assert_eq!(docs[2].root.pos.line, 4);
    }

    #[test]
    fn duplicate_keys_rejected_with_position() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn billion_laughs_is_capped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{}", err.message);
    }

    #[test]
    fn aliases_expand_within_limits() {
        let root = one("base: &b {x: 1}\nother: *b\n");
        assert_eq!(root.to_json()["other"]["x"], 1);
    }

    #[test]
    fn depth_is_capped() {
        let text = "[".repeat(100) + &"]".repeat(100);
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("nesting"), "{}", err.message);
    }
    /// A large real mesh in one file: 1,000 services, each with 3 subsets (ServiceEntry with 3
    /// endpoints, DestinationRule) and a VirtualService of 10 rules (a header match and a
    /// 3-way weighted split each).
    fn thousand_service_mesh() -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        for i in 0..1000 {
            let _ = write!(
                text,
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}, namespace: shop}}\n\
                 spec:\n  hosts: [svc-{i}]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n"
            );
            for v in 1..=3 {
                let _ = writeln!(
                    text,
                    "  - {{address: 10.0.{v}.{}, labels: {{version: v{v}}}}}",
                    i % 250
                );
            }
            let _ = write!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i}, namespace: shop}}\n\
                 spec:\n  host: svc-{i}\n  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}\n  subsets:\n"
            );
            for v in 1..=3 {
                let _ = writeln!(text, "  - {{name: v{v}, labels: {{version: v{v}}}}}");
            }
            let _ = write!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: shop}}\n\
                 spec:\n  hosts: [svc-{i}]\n  http:\n"
            );
            for r in 0..10 {
                let _ = write!(
                    text,
                    "  - name: rule-{r}\n    match: [{{headers: {{end-user: {{exact: user-{r}}}}}, uri: {{prefix: /api/{r}}}}}]\n    \
                     timeout: 5s\n    retries: {{attempts: 2, perTryTimeout: 1s, retryOn: 5xx}}\n    route:\n"
                );
                for v in 1..=3 {
                    let _ = writeln!(
                        text,
                        "    - {{destination: {{host: svc-{i}, subset: v{v}}}, weight: {}}}",
                        if v == 1 { 34 } else { 33 }
                    );
                }
            }
            text.push_str("---\n");
        }
        text
    }

    /// Measures the node count of a 1,000-service mesh and checks that [`MAX_NODES`] leaves it
    /// ample room (the figure in MAX_NODES' doc comment comes from this test's output).
    #[test]
    fn a_thousand_service_mesh_fits_the_node_cap_with_room() {
        let text = thousand_service_mesh();
        let mut builder = TreeBuilder::default();
        let mut parser = Parser::new_from_str(&text);
        parser.load(&mut builder, true).expect("valid YAML");
        assert!(builder.error.is_none(), "{:?}", builder.error);
        let nodes = builder.nodes;
        eprintln!(
            "1,000 services x 3 subsets x 10 rules: {} bytes, {nodes} nodes",
            text.len()
        );
        assert!(
            nodes > 100_000,
            "the generated mesh is smaller than intended: {nodes}"
        );
        assert!(
            nodes.saturating_mul(2) <= MAX_NODES,
            "{nodes} nodes: less than 2x headroom under MAX_NODES ({MAX_NODES})"
        );
    }
}
