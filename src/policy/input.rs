//! The Rego `input` of one review, holding only what the policies can read.
//!
//! Converting a review into regorus values is a large share of the cost of a review that
//! Rego allows (a Pod of a real cluster is 5-15 KB of JSON, `managedFields` and all). When
//! loading a policy set, every use of `input` in its syntax trees is found (`syntax.rs`);
//! where all of them are static paths (`input.request.namespace`, `input.images`, `input["request"].object`),
//! only those subtrees are converted. Any other use (`input` as a value, `walk(input, ...)`,
//! `with input as ...`, a variable or number as the first key) means the whole document.
//! What a policy cannot name, it cannot observe, so the decision is the same.
//!
//! The same walk gives the digest of exactly what was kept, under which a policy set whose
//! answers cannot change between calls remembers its findings (see `PolicySet::recall`).

use crate::json::{FieldName, Node, NodeVisitor, Numeric, Object};
use regorus::Value;
use ring::digest::Context;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// SHA-256 of what an input holds (see [`build`]).
pub type Key = [u8; 32];

/// The parts of `input` a policy set reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// The whole value.
    All,
    /// Only these fields of it (nothing when empty).
    Fields(BTreeMap<String, Reads>),
}

impl Reads {
    /// What is read of field `key`, if anything.
    pub fn field(&self, key: &str) -> Option<&Self> {
        match self {
            Self::All => Some(self),
            Self::Fields(fields) => fields.get(key),
        }
    }

    /// `value` reduced to what is read, as a regorus value.
    pub fn select(&self, value: &Node) -> Value {
        match (self, value) {
            (Self::Fields(wanted), Node::Object(fields)) => Value::from(
                wanted
                    .iter()
                    .filter_map(|(key, reads)| {
                        let value = fields.get(key)?;
                        Some((Value::from(key.as_str()), reads.select(value)))
                    })
                    .collect::<BTreeMap<_, _>>(),
            ),
            _ => rego_value(value),
        }
    }

    /// Feeds what [`Reads::select`] keeps of `value` to `text`, in an encoding where
    /// different values never give the same bytes: what is read whole as
    /// [`KeyText::node`] writes it (objects' fields in the order received, so the same
    /// object sent with its fields in another order is another key, never a wrong one); an
    /// object of which only some fields are read is `{`, each field's tagged,
    /// length-prefixed name and value, `}` (a whole value that is not an object never
    /// starts with `{`).
    fn digest(&self, value: &Node, text: &mut KeyText) {
        match (self, value) {
            (Self::Fields(wanted), Node::Object(fields)) => {
                text.push(b"{");
                for (key, reads) in wanted {
                    if let Some(value) = fields.get(key) {
                        text.name(key);
                        reads.digest(value, text);
                    }
                }
                text.push(b"}");
            }
            _ => text.node(value),
        }
    }

    /// `text` parsed as JSON, keeping of each object only the fields that are read, as
    /// [`Reads::select`] keeps them: what is not read is checked as JSON (syntax and
    /// nesting) but never built, which is most of the cost of parsing. The strings of the
    /// parts left out are not decoded and their numbers not converted, so a number out of
    /// range there is not an error. The whole text must be UTF-8 (RFC 8259, section 8.1),
    /// checked once up front rather than string by string.
    pub fn parse<'a>(&self, text: &'a [u8]) -> serde_json::Result<Node<'a>> {
        let text = std::str::from_utf8(text).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("the text is not UTF-8: {e}"))
        })?;
        let mut parser = serde_json::Deserializer::from_str(text);
        let value = Pruned(self, 0).deserialize(&mut parser)?;
        parser.end()?;
        Ok(value)
    }

    pub(super) fn add(&mut self, path: &[&str]) {
        let Self::Fields(fields) = self else {
            return;
        };
        match path.split_first() {
            None => *self = Self::All,
            Some((first, rest)) => fields
                .entry((*first).to_string())
                .or_insert_with(|| Self::Fields(BTreeMap::new()))
                .add(rest),
        }
    }
}

/// Parses a JSON value keeping what `.0` reads (see [`Reads::parse`]), `.1` levels below
/// the root.
struct Pruned<'a>(&'a Reads, usize);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        match self.0 {
            Reads::All => Node::deserialize(deserializer),
            Reads::Fields(fields) => deserializer.deserialize_any(PrunedVisitor(fields, self.1)),
        }
    }
}

/// An object keeps the fields in `.0`; any other value is kept whole, as [`Node`] reads it.
/// `.1` is its depth: what it skips may nest `MAX_DEPTH` levels below the root, as what
/// serde_json builds may.
struct PrunedVisitor<'a>(&'a BTreeMap<String, Reads>, usize);

impl<'de> Visitor<'de> for PrunedVisitor<'_> {
    type Value = Node<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        NodeVisitor.expecting(formatter)
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Node<'de>, E> {
        NodeVisitor.visit_bool(value)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Node<'de>, E> {
        NodeVisitor.visit_i64(value)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Node<'de>, E> {
        NodeVisitor.visit_u64(value)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Node<'de>, E> {
        NodeVisitor.visit_f64(value)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, value: &'de str) -> Result<Node<'de>, E> {
        NodeVisitor.visit_borrowed_str(value)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Node<'de>, E> {
        NodeVisitor.visit_str(value)
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Node<'de>, E> {
        NodeVisitor.visit_string(value)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Node<'de>, E> {
        NodeVisitor.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<Node<'de>, A::Error> {
        NodeVisitor.visit_seq(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Node<'de>, A::Error> {
        let mut kept = Vec::with_capacity(self.0.len().min(8));
        while let Some(FieldName(name)) = entries.next_key()? {
            // Equal length first: most names are told apart without reading their bytes.
            let wanted = self
                .0
                .iter()
                .find(|(field, _)| field.as_str() == name.as_ref());
            match wanted.map(|(_, reads)| reads) {
                Some(reads) => {
                    kept.push((name, entries.next_value_seed(Pruned(reads, self.1 + 1))?));
                }
                None => {
                    // Skipped without recursion (and without a depth limit) by serde_json.
                    let skipped: &serde_json::value::RawValue = entries.next_value()?;
                    let budget = crate::json::MAX_DEPTH.saturating_sub(self.1 + 1);
                    if crate::json::nests_deeper_than(skipped.get().as_bytes(), budget) {
                        return Err(serde::de::Error::custom(crate::json::too_deep()));
                    }
                }
            }
        }
        Ok(Node::Object(Object::from_fields(kept)))
    }
}

/// The input of one review: the fields of the review as received (except `images`) and
/// `images`, holding what `reads` reads.
pub fn build(reads: &Reads, review: &Object, images: &Node) -> Value {
    let mut input = BTreeMap::new();
    for (key, value) in fields(review) {
        if let Some(reads) = reads.field(key) {
            input.insert(Value::from(key), reads.select(value));
        }
    }
    if let Some(reads) = reads.field("images") {
        input.insert(Value::from("images"), reads.select(images));
    }
    Value::from(input)
}

/// An entry of `input.images` as a decision key sees it: the SHA-256 of its JSON text.
pub trait Image: Serialize {
    /// None if it cannot be serialized.
    fn text_digest(&self) -> Option<Key> {
        text_digest(self)
    }
}

impl Image for serde_json::Value {}

impl<T: Image> Image for std::sync::Arc<T> {
    fn text_digest(&self) -> Option<Key> {
        (**self).text_digest()
    }
}

/// The SHA-256 of the JSON text of `value`; None if it cannot be serialized.
pub fn text_digest(value: &(impl Serialize + ?Sized)) -> Option<Key> {
    let mut text = KeyText::new();
    serde_json::to_writer(&mut text, value).ok()?;
    text.finish()
}

/// The SHA-256 of what [`build`] keeps of the same review and images: equal for two reviews
/// that differ only in what is not read, different for any difference in what is. When all
/// of `images` is read, it counts as the number of images and the digest of each one's JSON
/// text (fixed-size, so self-delimiting), which image facts keep between reviews.
pub fn key(reads: &Reads, review: &Object, images: &[impl Image]) -> Option<Key> {
    let mut text = KeyText::new();
    for (key, value) in fields(review) {
        if let Some(reads) = reads.field(key) {
            text.name(key);
            reads.digest(value, &mut text);
        }
    }
    if let Some(reads) = reads.field("images") {
        text.name("images");
        match reads {
            Reads::All => {
                text.push(b"[");
                text.count(images.len());
                for image in images {
                    text.push(&image.text_digest()?);
                }
            }
            Reads::Fields(_) => {
                let images = serde_json::to_value(images).ok()?;
                reads.digest(&Node::from(&images), &mut text);
            }
        }
    }
    text.finish()
}

/// The review's own fields: `images` is verdict's.
fn fields<'a>(review: &'a Object) -> impl Iterator<Item = (&'a str, &'a Node<'a>)> {
    review.iter().filter(|(key, _)| *key != "images")
}

/// The text a decision key is the SHA-256 of, fed to the digest through a buffer on the
/// stack: it is written in many small pieces (serde_json's among them), and each call into
/// the digest costs more than copying a piece.
struct KeyText {
    digest: Context,
    buffer: [u8; 1024],
    len: usize,
}

impl KeyText {
    fn new() -> Self {
        Self {
            digest: Context::new(&ring::digest::SHA256),
            buffer: [0; 1024],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buffer.len() {
            self.flush();
        }
        match self.buffer.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.digest.update(bytes),
        }
    }

    /// A field name: tagged (so it never reads as the `}` that closes an object) and
    /// length-prefixed.
    fn name(&mut self, name: &str) {
        self.push(b"k");
        self.text(name);
    }

    fn text(&mut self, text: &str) {
        self.count(text.len());
        self.push(text.as_bytes());
    }

    fn count(&mut self, n: usize) {
        self.push(&(n as u64).to_le_bytes());
    }

    /// `value` whole: a tag for each kind of value, then its bits, its length-prefixed text,
    /// or its count of items or fields and those in order. Nothing is escaped or formatted,
    /// as it would be in JSON text, and no two values give the same bytes: a number read as
    /// an integer (`1`) and one read as a float (`1.0`) count as different.
    fn node(&mut self, value: &Node) {
        match value {
            Node::Null => self.push(b"n"),
            Node::Bool(true) => self.push(b"t"),
            Node::Bool(false) => self.push(b"f"),
            Node::Number(n) => match Numeric::from(n) {
                Numeric::Unsigned(u) => {
                    self.push(b"u");
                    self.push(&u.to_le_bytes());
                }
                Numeric::Signed(i) => {
                    self.push(b"i");
                    self.push(&i.to_le_bytes());
                }
                Numeric::Float(f) => {
                    self.push(b"d");
                    self.push(&f.to_bits().to_le_bytes());
                }
            },
            Node::String(s) => {
                self.push(b"s");
                self.text(s);
            }
            Node::Array(items) => {
                self.push(b"[");
                self.count(items.len());
                items.iter().for_each(|item| self.node(item));
            }
            Node::Object(fields) => {
                self.push(b"{");
                self.count(fields.len());
                for (name, value) in fields.iter() {
                    self.text(name);
                    self.node(value);
                }
            }
        }
    }

    fn flush(&mut self) {
        self.digest.update(&self.buffer[..self.len]);
        self.len = 0;
    }

    fn finish(mut self) -> Option<Key> {
        self.flush();
        Key::try_from(self.digest.finish().as_ref()).ok()
    }
}

impl std::io::Write for KeyText {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The regorus value of a JSON value, as `regorus::Value::from(serde_json::Value)` gives
/// it.
fn rego_value(value: &Node) -> Value {
    match value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Number(n) => match Numeric::from(n) {
            Numeric::Unsigned(u) => Value::from(u),
            Numeric::Signed(i) => Value::from(i),
            Numeric::Float(f) => Value::from(f),
        },
        Node::String(s) => Value::from(s.as_ref()),
        Node::Array(items) => Value::from(items.iter().map(rego_value).collect::<Vec<_>>()),
        Node::Object(fields) => Value::from(
            fields
                .iter()
                .map(|(key, value)| (Value::from(key), rego_value(value)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use crate::verify::trust::TrustRoot;
    use serde_json::{json, Value as Json};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    fn reads_of(rego: &str) -> Reads {
        let mut engine = crate::policy::new_engine();
        engine
            .add_policy("p.rego".to_string(), rego.to_string())
            .expect("compiles");
        crate::policy::syntax::analyze(&engine).map_or(Reads::All, |s| s.reads)
    }

    fn fields(entries: &[(&str, Reads)]) -> Reads {
        Reads::Fields(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        )
    }

    /// Whole values are keyed by an encoding of their own, not their JSON text: values that
    /// differ never share it, even where a naive concatenation would (`["ab"]` and
    /// `["a","b"]`), and the same value always gives it.
    #[test]
    fn whole_values_are_keyed_apart() {
        let values = [
            "null",
            "true",
            "false",
            "0",
            "1",
            "-1",
            "1.0",
            "1.5",
            "-0.0",
            "0.0",
            "18446744073709551615",
            "-9223372036854775808",
            r#""""#,
            r#""a""#,
            r#""ab""#,
            r#""n""#,
            r#""{""#,
            "[]",
            "[[]]",
            "[null]",
            "[null,null]",
            r#"["a","b"]"#,
            r#"["ab"]"#,
            r#"["a"]"#,
            "{}",
            r#"{"a":"b"}"#,
            r#"{"ab":""}"#,
            r#"{"a":{}}"#,
            r#"{"a":[]}"#,
            r#"{"a":null,"b":null}"#,
            r#"{"b":null,"a":null}"#,
            r#"{"":null}"#,
        ];
        let key = |text: &str| {
            let node = Reads::All.parse(text.as_bytes()).expect("JSON");
            let mut key = KeyText::new();
            Reads::All.digest(&node, &mut key);
            key.finish().expect("key")
        };
        // Long strings and arrays.
        let mut values: Vec<String> = values.map(String::from).to_vec();
        for n in [127, 128, 16_383, 16_384] {
            values.push(format!("\"{}\"", "a".repeat(n)));
            values.push(format!("[{}]", vec!["0"; n].join(",")));
        }
        let keys: Vec<Key> = values.iter().map(|v| key(v)).collect();
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(*a, key(&values[i]), "{}", values[i]);
            for (j, b) in keys.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {}", values[i], values[j]);
            }
        }
    }

    #[test]
    fn static_paths_are_read_and_the_rest_is_not() {
        let reads = reads_of(
            r#"package p
import input.request.userInfo as who
deny contains "x" if {
    some c in input.request.object.spec["containers"]
    c.image == input["request"].namespace
    count(input.images[0].signatures) == 0
    who.username == data.input.name
}
"#,
        );
        assert_eq!(
            reads,
            fields(&[
                ("images", Reads::All),
                (
                    "request",
                    fields(&[
                        ("namespace", Reads::All),
                        (
                            "object",
                            fields(&[("spec", fields(&[("containers", Reads::All)]))])
                        ),
                        ("userInfo", Reads::All),
                    ])
                ),
            ])
        );
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "request": {"namespace": "a", "uid": "1", "object": {"metadata": {}, "spec": {"containers": [{"image": "x"}], "volumes": []}}},
            "images": [{"signatures": []}],
        });
        assert_eq!(
            reads.select(&Node::from(&review)),
            rego_value(&Node::from(&json!({
                "request": {"namespace": "a", "object": {"spec": {"containers": [{"image": "x"}]}}},
                "images": [{"signatures": []}],
            })))
        );
    }

    #[test]
    fn any_other_use_of_input_reads_all_of_it() {
        for rules in [
            "x := input",
            "x := walk(input)",
            "x if input[y].a",
            "x := object.get(input, [\"a\"], 1)",
            "x if input.a with input as {}",
            "import input\nx if input.a",
        ] {
            assert_eq!(
                reads_of(&format!("package p\n{rules}\n")),
                Reads::All,
                "{rules}"
            );
        }
        assert_eq!(
            reads_of("package p\nx if input.request[0]\n"),
            fields(&[("request", Reads::All)])
        );
        assert_eq!(reads_of("package p\nx := 1\n"), fields(&[]));
    }

    #[test]
    fn rego_value_is_regorus_own_conversion() {
        let mut compared = 0;
        for path in admission_fixtures() {
            let json = read(&path);
            assert_eq!(
                rego_value(&Node::from(&json)),
                Value::from(json.clone()),
                "{path:?}"
            );
            compared += 1;
        }
        let numbers = json!([0, -1, u64::MAX, i64::MIN, 1.5, -2.25e300, {"": null}]);
        assert_eq!(
            rego_value(&Node::from(&numbers)),
            Value::from(numbers.clone())
        );
        assert!(compared > 10, "{compared} fixtures");
    }

    /// The shipped policies decide every fixture review the same on the reduced input as on
    /// the whole one, in every namespace of the inventory.
    #[test]
    fn shipped_policies_decide_the_same_on_what_they_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let set = PolicySet::load(&root.join("policies"), &Arc::new(TrustRoot::default()))
            .expect("shipped policies load");
        assert!(!matches!(set.reads, Reads::All), "{:?}", set.reads);
        assert!(
            set.decisions.is_some(),
            "the shipped policies' findings can be remembered"
        );
        let images = json!([
            {"container": "a", "kind": "container", "reference": "nginx", "registry": "index.docker.io",
             "repository": "library/nginx", "tag": "latest", "pinned": false, "normalized": "index.docker.io/library/nginx:latest",
             "signatures": [], "attestations": []},
            {"container": "b", "kind": "init", "reference": "registry.k8s.io/pause:3.9", "registry": "registry.k8s.io",
             "repository": "pause", "tag": "3.9", "pinned": false, "normalized": "registry.k8s.io/pause:3.9",
             "signatures": [{"authority": "a", "signer": "s"}],
             "attestations": [{"type": "https://slsa.dev/provenance/v1", "predicate": {"runDetails": {"builder": {"id": "b"}}}, "signer": "s"}]},
        ]);
        let (mut compared, mut findings) = (0, 0);
        for path in admission_fixtures() {
            for namespace in ["default", "prod", "dev", "staging", "kube-system"] {
                let mut review = read(&path);
                if !review["request"].is_object() {
                    continue;
                }
                review["request"]["namespace"] = json!(namespace);
                review["images"] = images.clone();
                let review = Node::from(&review);
                let whole = set.evaluate(rego_value(&review), Duration::from_secs(5));
                let reduced = set.evaluate(set.reads.select(&review), Duration::from_secs(5));
                let show = |r: Result<Vec<crate::decision::Finding>, _>| {
                    r.map(|f| {
                        f.iter()
                            .map(|f| format!("{} {}", f.code, f.message))
                            .collect::<Vec<_>>()
                    })
                };
                let (whole, reduced) = (show(whole), show(reduced));
                assert_eq!(whole, reduced, "{path:?} in {namespace}");
                findings += whole.map_or(0, |f| f.len());
                compared += 1;
            }
        }
        assert!(
            compared > 50 && findings > compared,
            "{compared} reviews, {findings} findings"
        );
    }

    /// What `reads` keeps of a whole value, as a JSON value.
    fn pruned(reads: &Reads, value: &Json) -> Json {
        match (reads, value) {
            (Reads::Fields(wanted), Json::Object(fields)) => Json::Object(
                fields
                    .iter()
                    .filter_map(|(key, value)| Some((key.clone(), pruned(wanted.get(key)?, value))))
                    .collect(),
            ),
            _ => value.clone(),
        }
    }

    /// Parsing only what is read gives exactly what parsing everything and then dropping
    /// the rest gives, and fails exactly where the whole parse fails, for real reviews and
    /// for the corners of JSON (escaped and repeated names, a value that is not an object
    /// where one is read into, numbers of every kind, errors in parts nobody reads).
    #[test]
    fn parsing_what_is_read_equals_parsing_all_and_dropping_the_rest() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = PolicySet::load(&root.join("policies"), &Arc::new(TrustRoot::default()))
            .expect("shipped policies load");
        let nested = fields(&[
            ("a", fields(&[("b", Reads::All), ("name", fields(&[]))])),
            ("n", Reads::All),
            ("l", fields(&[("x", Reads::All)])),
        ]);
        let all_reads = [
            shipped.review_reads.clone(),
            nested,
            Reads::All,
            fields(&[]),
        ];
        let mut bodies: Vec<Vec<u8>> = admission_fixtures()
            .iter()
            .map(|path| std::fs::read(path).expect("fixture"))
            .collect();
        for text in [
            r#"{"a": {"b": [1, {"c": 2}], "skip": {"deep": [[[{"x": "\u00e9\n"}]]]}, "name": {"q": 1}}, "n": -1.5e3}"#,
            r#"{"\u0061": {"\u0062": true}, "n": 18446744073709551615, "o": -9223372036854775808}"#,
            r#"{"a": 1, "a": {"b": 2, "b": 3}, "n": null, "n": 0.1}"#,
            r#"{"a": "not an object", "l": [1, 2, {"x": 3}], "n": 1e300}"#,
            r#"{"a": [{"b": 1}], "l": {"x": {"y": "z"}, "w": 1}}"#,
            r#"[{"a": 1}, 2]"#,
            r#""just a string""#,
            r#"  {"n": 1}  "#,
            "{}",
            // Errors in kept and in skipped parts alike.
            r#"{"skip": [1, 2,], "n": 1}"#,
            r#"{"skip": {"x" 1}, "n": 1}"#,
            r#"{"skip": "\q", "n": 1}"#,
            r#"{"n": 1} trailing"#,
            r#"{"n": 1"#,
            r#"{"skip": tru, "n": 1}"#,
            r#"{"skip": 01, "n": 1}"#,
            "",
        ] {
            bodies.push(text.as_bytes().to_vec());
        }
        let mut kept = 0;
        for reads in &all_reads {
            for body in &bodies {
                let whole: serde_json::Result<Json> = serde_json::from_slice(body);
                let parsed = reads
                    .parse(body)
                    .map(|n| serde_json::to_value(n).expect("json"));
                let show = String::from_utf8_lossy(body);
                match (&whole, &parsed) {
                    (Ok(whole), Ok(parsed)) => {
                        assert_eq!(parsed, &pruned(reads, whole), "{reads:?} {show}");
                        kept += 1;
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{reads:?} {show}: whole {whole:?}, parsed {parsed:?}"),
                }
            }
        }
        assert!(kept > 40, "{kept}");
        // serde_json reads a first name of `$serde_json::private::RawValue` as its own
        // marker (and fails here); it is an ordinary name, as the API server sees it.
        let marker = br#"{"$serde_json::private::RawValue": "[1]", "n": 2}"#;
        assert!(serde_json::from_slice::<Json>(marker).is_err());
        let parsed = all_reads[1].parse(marker).expect("parses");
        assert_eq!(serde_json::to_value(parsed).expect("json"), json!({"n": 2}));
        // What is left out is checked as JSON syntax only: a number out of range fails where
        // it is read, not where it is left out. Text that is not UTF-8 fails anywhere.
        let body = br#"{"n": 1e400}"#;
        assert!(serde_json::from_slice::<Json>(body).is_err());
        assert!(all_reads[1].parse(body).is_err());
        assert_eq!(
            all_reads[3].parse(body).expect("left out"),
            Node::Object(Object::default())
        );
        for reads in &all_reads {
            let error = reads
                .parse(b"{\"n\": 1, \"skip\": \"\xff\"}")
                .expect_err("not UTF-8");
            assert!(error.to_string().contains("not UTF-8"), "{error}");
        }
        // The shipped set reads no managedFields, annotations or status: none are built.
        let fixture = admission_fixtures()
            .into_iter()
            .find(|p| p.ends_with("gke_pod_create_admission_review.json"))
            .expect("GKE fixture");
        let body = std::fs::read(&fixture).expect("fixture");
        let parsed = shipped.parse_review(&body).expect("parses");
        let object = &parsed["request"]["object"];
        assert_eq!(object["metadata"]["name"].as_str(), Some("echo-pod"));
        assert!(object["metadata"].get("managedFields").is_none());
        assert!(object["metadata"].get("annotations").is_none());
        assert!(object["spec"]["containers"].as_array().is_some());
        assert!(object["spec"].get("volumes").is_none());
    }

    fn admission_fixtures() -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission");
        let mut files = Vec::new();
        for dir in std::fs::read_dir(root).expect("fixtures") {
            for file in std::fs::read_dir(dir.expect("dir").path()).expect("fixtures") {
                let path = file.expect("file").path();
                if path.extension().is_some_and(|e| e == "json") {
                    files.push(path);
                }
            }
        }
        files
    }

    fn read(path: &Path) -> Json {
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    }
}
