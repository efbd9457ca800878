//! What a policy set's syntax trees say: which paths of `input` its rules read and which
//! functions they call. Read from regorus' syntax trees (its AST as JSON) while that JSON is
//! parsed, without building the tree: the tree of a large policy set would take tens of MB.
//!
//! A reference made only of names and string keys (`input.request["object"].spec`) reads its
//! path. Any other use of `input` (as a value, as an index, under a variable key, in `with`)
//! reads all of it, except one: a reference passed to a function the policies define
//! (`is_update(input.review)`, as Gatekeeper's libraries write it) reads what that function
//! reads of its parameter. That is over-approximated by every reference, anywhere, rooted at
//! a variable of the parameter's name, in every function of that name; a builtin, an
//! unknown function, or a parameter that is a pattern rather than a variable reads all of
//! it. References to `data` are collected by their first name.

use crate::json::Reads;
use regorus::Engine;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the analysis found.
#[derive(Debug)]
pub struct Syntax {
    pub reads: Reads,
    /// Dotted names of every function called, e.g. `time.now_ns`, `lib.describe`.
    pub calls: BTreeSet<String>,
    /// The first name after `data` of every reference to `data` (`inventory` for
    /// `data.inventory.namespace[ns]`), or `""` for `data` itself or under a variable key.
    pub data: BTreeSet<String>,
    /// What references rooted at each other variable read.
    vars: BTreeMap<String, Reads>,
    /// The parameters of each function the policies define, by the last name of the
    /// function, one list per definition (none for a parameter that is not a variable).
    functions: BTreeMap<String, Vec<Vec<Option<String>>>>,
    /// `(function called, argument index, path of input)` of each reference to `input`
    /// passed to a function.
    passed: Vec<(String, usize, Vec<String>)>,
}

/// The analysis of every module of `engine`; none when its syntax trees cannot be read.
pub fn analyze(engine: &Engine) -> Option<Syntax> {
    let json = engine.get_ast_as_json().ok()?;
    let mut found = Syntax {
        reads: Reads::Fields(BTreeMap::new()),
        calls: BTreeSet::new(),
        data: BTreeSet::new(),
        vars: BTreeMap::new(),
        functions: BTreeMap::new(),
        passed: Vec::new(),
    };
    let mut parser = serde_json::Deserializer::from_str(&json);
    let node = NodeSeed(&mut found).deserialize(&mut parser).ok()?;
    parser.end().ok()?;
    found.finish(node);
    found.resolve_passed();
    Some(found)
}

impl Syntax {
    /// What the functions read of the references to `input` passed to them.
    fn resolve_passed(&mut self) {
        for (function, index, path) in std::mem::take(&mut self.passed) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let last = function.rsplit('.').next().unwrap_or_default();
            let definitions = match self.functions.get(last) {
                Some(d) if !regorus::unstable::BUILTINS.contains_key(function.as_str()) => d,
                _ => {
                    self.reads.add(&path);
                    continue;
                }
            };
            for parameters in definitions {
                match parameters.get(index) {
                    Some(Some(name)) => {
                        if let Some(read) = self.vars.get(name) {
                            self.reads.graft(&path, read);
                        }
                    }
                    _ => self.reads.add(&path),
                }
            }
        }
    }
}

/// One node of the tree, as far as the analysis cares.
enum Node {
    /// `root.a["b"].c`: a variable and a path of names and string keys.
    Ref(String, Vec<String>),
    /// A string literal.
    Text(String),
    Other,
}

impl Syntax {
    /// `node` is used as a value (not extended into a longer reference): a reference rooted at
    /// `input` reads its path.
    fn finish(&mut self, node: Node) {
        if let Node::Ref(root, path) = node {
            if root == "input" {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                self.reads.add(&path);
            }
            if root == "data" {
                self.data.insert(path.first().cloned().unwrap_or_default());
            }
            if root != "input" && root != "data" {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                self.vars.entry(root).or_default().add(&path);
            }
        }
    }
}

/// Any node: an object whose only key is `Var`, `RefDot`, `RefBrack`, `Call`, `String` or
/// `RawString` is that expression; everything else is searched.
struct NodeSeed<'a>(&'a mut Syntax);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Node, D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a regorus syntax tree")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Node, A::Error> {
        while let Some(node) = items.next_element_seed(NodeSeed(self.0))? {
            self.0.finish(node);
        }
        Ok(Node::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Node, A::Error> {
        let Some(key) = fields.next_key::<String>()? else {
            return Ok(Node::Other);
        };
        let found = self.0;
        let kind = match key.as_str() {
            "Var" => Some(Kind::Var),
            "RefDot" => Some(Kind::Dot),
            "RefBrack" => Some(Kind::Brack),
            "Call" => Some(Kind::Call),
            "String" | "RawString" => Some(Kind::Text),
            "Func" => Some(Kind::Func),
            _ => None,
        };
        let node = match kind {
            Some(kind) => fields.next_value_seed(Parts { found, kind })?,
            None => {
                let node = fields.next_value_seed(NodeSeed(found))?;
                found.finish(node);
                Node::Other
            }
        };
        let mut only = true;
        while fields.next_key::<IgnoredAny>()?.is_some() {
            only = false;
            let other = fields.next_value_seed(NodeSeed(found))?;
            found.finish(other);
        }
        if only {
            return Ok(node);
        }
        found.finish(node);
        Ok(Node::Other)
    }
}

/// A list of nodes, each returned rather than finished.
struct Nodes<'a>(&'a mut Syntax);

impl<'de> DeserializeSeed<'de> for Nodes<'_> {
    type Value = Vec<Node>;
    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Vec<Node>, D::Error> {
        parser.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Nodes<'_> {
    type Value = Vec<Node>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of expressions")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Vec<Node>, A::Error> {
        let mut out = Vec::new();
        while let Some(node) = items.next_element_seed(NodeSeed(self.0))? {
            out.push(node);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Var,
    Dot,
    Brack,
    Call,
    Text,
    /// A function's head: `{"refr", "args", "assign"}`.
    Func,
}

/// The fields of one expression of `kind`: `{"span", "value"}` (Var, String),
/// `{"refr", "field": [span, name]}` (RefDot), `{"refr", "index"}` (RefBrack),
/// `{"fcn", "params"}` (Call).
struct Parts<'a> {
    found: &'a mut Syntax,
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for Parts<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Node, D::Error> {
        parser.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Parts<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the fields of an expression")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Node, A::Error> {
        let found = self.found;
        let (mut refr, mut inner, mut value, mut name) = (None, None, None, None);
        let mut list: Option<Vec<Node>> = None;
        while let Some(key) = fields.next_key::<String>()? {
            match key.as_str() {
                "value" => {
                    value = fields
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(String::from)
                }
                "field" => {
                    let field = fields.next_value::<serde_json::Value>()?;
                    name = field.get(1).and_then(|n| n.as_str()).map(String::from);
                }
                "refr" | "fcn" => refr = Some(fields.next_value_seed(NodeSeed(found))?),
                // A call's arguments and a function's parameters are kept, to be seen
                // once the function is known.
                "params" if matches!(self.kind, Kind::Call) => {
                    list = Some(fields.next_value_seed(Nodes(found))?)
                }
                "args" if matches!(self.kind, Kind::Func) => {
                    list = Some(fields.next_value_seed(Nodes(found))?)
                }
                "index" => inner = Some(fields.next_value_seed(NodeSeed(found))?),
                _ => {
                    let other = fields.next_value_seed(NodeSeed(found))?;
                    found.finish(other);
                }
            }
        }
        let node = match (self.kind, refr, inner) {
            (Kind::Var, _, _) => value.map_or(Node::Other, |v| Node::Ref(v, Vec::new())),
            (Kind::Text, _, _) => value.map_or(Node::Other, Node::Text),
            (Kind::Dot, Some(Node::Ref(root, mut path)), _) if name.is_some() => {
                path.extend(name);
                Node::Ref(root, path)
            }
            (Kind::Brack, Some(Node::Ref(root, mut path)), Some(Node::Text(key))) => {
                path.push(key);
                Node::Ref(root, path)
            }
            (Kind::Call, refr, inner) => {
                let called = match &refr {
                    Some(Node::Ref(root, path)) => {
                        let name = std::iter::once(root).chain(path).cloned();
                        let name = name.collect::<Vec<_>>().join(".");
                        found.calls.insert(name.clone());
                        Some(name)
                    }
                    _ => None,
                };
                let mut list = list.unwrap_or_default();
                // `object.get(input.x, "key", default)` reads `input.x.key`, as Gatekeeper's
                // libraries read parameters.
                if called.as_deref() == Some("object.get") && list.len() == 3 {
                    if let (Node::Ref(root, path), Node::Text(key)) = (&list[0], &list[1]) {
                        if root == "input" {
                            let mut path = path.clone();
                            path.push(key.clone());
                            found.finish(Node::Ref(root.clone(), path));
                            list.drain(..2);
                        }
                    }
                }
                for (index, argument) in list.into_iter().enumerate() {
                    match (argument, &called) {
                        (Node::Ref(root, path), Some(called)) if root == "input" => {
                            found.passed.push((called.clone(), index, path))
                        }
                        (argument, _) => found.finish(argument),
                    }
                }
                refr.into_iter().chain(inner).for_each(|n| found.finish(n));
                Node::Other
            }
            (Kind::Func, refr, inner) => {
                if let Some(Node::Ref(root, path)) = &refr {
                    let last = path.last().unwrap_or(root).clone();
                    let parameters = list
                        .into_iter()
                        .flatten()
                        .map(|p| match p {
                            Node::Ref(name, path) if path.is_empty() => Some(name),
                            _ => None,
                        })
                        .collect();
                    found.functions.entry(last).or_default().push(parameters);
                }
                refr.into_iter().chain(inner).for_each(|n| found.finish(n));
                Node::Other
            }
            (_, refr, inner) => {
                refr.into_iter().chain(inner).for_each(|n| found.finish(n));
                Node::Other
            }
        };
        Ok(node)
    }
}
