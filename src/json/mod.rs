//! A JSON value borrowed from the text it was read from: a string without escapes points
//! into the request body instead of being copied, and an object is a short list instead of
//! a B-tree. It holds what `serde_json::Value` would hold, read the same way (the same
//! parser, numbers and escapes; of a name given twice the last value counts), so what
//! verdict and the policies see does not change. Building and dropping a review as a
//! `serde_json::Value` took a third of the CPU of a review whose findings are remembered.

mod deserializer;
mod reads;
pub use reads::Reads;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Error, Number, Value};
use std::borrow::Cow;
use std::fmt;

/// How many levels of objects and lists a JSON or YAML body may nest, counted from the
/// root (`[]` is one level): serde_json's own limit for what it builds, applied to the
/// parts it skips and to YAML too, so every body has the same one. Real Kubernetes
/// objects nest about 10 levels (a Pod) and rarely more than 40 (CRD schemas).
pub const MAX_DEPTH: usize = 127;

/// The error for a body past [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!("the body nests more than {MAX_DEPTH} levels of objects and lists, verdict's limit for JSON and YAML")
}

/// serde_json's error, with its recursion limit named as verdict's.
pub fn explain(e: &Error) -> String {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        format!("{} ({text})", too_deep())
    } else {
        text
    }
}

/// Whether `text`, valid JSON, nests more than `budget` levels deep. Linear in its length:
/// string contents are skipped with `memchr`, and a text too short to nest that deep is not
/// read at all.
pub fn nests_deeper_than(text: &[u8], budget: usize) -> bool {
    if text.len() < 2 * (budget + 1) {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &text[i..]) {
                        Some(j) if text[i + j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j;
                            break;
                        }
                        None => return false,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > budget {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// A JSON value whose strings may borrow from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Object<'a>),
}

/// A JSON number as serde_json holds it: an integer that fits `u64`, a negative one that
/// fits `i64`, or else a float (without serde_json's `arbitrary_precision`, which verdict
/// does not enable, every number is one of these).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Numeric {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl From<&Number> for Numeric {
    fn from(n: &Number) -> Self {
        match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Self::Unsigned(u),
            (None, Some(i)) => Self::Signed(i),
            (None, None) => Self::Float(n.as_f64().unwrap_or_default()),
        }
    }
}

/// An object's fields in the order received, each name once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

/// Past this many fields, repeated names are found through a hash map rather than by
/// comparing every pair: a body can hold hundreds of thousands of fields in one object.
const FEW_FIELDS: usize = 16;

static NULL: Node<'static> = Node::Null;

impl<'a> Object<'a> {
    pub fn get(&self, name: &str) -> Option<&Node<'a>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The object of these fields in this order; of a name given more than once only the
    /// last counts, as in `serde_json::Value`.
    pub fn from_fields(mut fields: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        if fields.len() <= FEW_FIELDS {
            let mut i = 0;
            while i < fields.len() {
                if fields[i + 1..].iter().any(|(n, _)| *n == fields[i].0) {
                    fields.remove(i);
                } else {
                    i += 1;
                }
            }
        } else {
            let mut last = std::collections::HashMap::with_capacity(fields.len());
            for (i, (name, _)) in fields.iter().enumerate() {
                last.insert(name.as_ref(), i);
            }
            let keep: Vec<bool> = (0..fields.len())
                .map(|i| last.get(fields[i].0.as_ref()) == Some(&i))
                .collect();
            let mut kept = keep.into_iter();
            fields.retain(|_| kept.next().unwrap_or(true));
        }
        Self(fields)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> Node<'a> {
    /// Field `name` of an object; None for a missing field or a value that is not an object.
    pub fn get(&self, name: &str) -> Option<&Node<'a>> {
        self.as_object()?.get(name)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Self::Object(fields) => Some(fields),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Self::Null => Unexpected::Unit,
            Self::Bool(b) => Unexpected::Bool(*b),
            Self::Number(n) => match Numeric::from(n) {
                Numeric::Unsigned(u) => Unexpected::Unsigned(u),
                Numeric::Signed(i) => Unexpected::Signed(i),
                Numeric::Float(f) => Unexpected::Float(f),
            },
            Self::String(s) => Unexpected::Str(s),
            Self::Array(_) => Unexpected::Seq,
            Self::Object(_) => Unexpected::Map,
        }
    }

    fn invalid_type<'de, V: Visitor<'de>>(&self, visitor: &V) -> Error {
        de::Error::invalid_type(self.unexpected(), visitor)
    }
}

/// `node["name"]`: the field, or null when there is none, as `serde_json::Value` indexes.
impl<'a> std::ops::Index<&str> for Node<'a> {
    type Output = Node<'a>;

    fn index(&self, name: &str) -> &Node<'a> {
        self.get(name).unwrap_or(&NULL)
    }
}

/// A `serde_json::Value` seen as a node, borrowing its strings.
impl<'a> From<&'a Value> for Node<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::String(Cow::Borrowed(s)),
            Value::Array(items) => Self::Array(items.iter().map(Self::from).collect()),
            Value::Object(fields) => Self::Object(Object(
                fields
                    .iter()
                    .map(|(n, v)| (Cow::Borrowed(n.as_str()), Self::from(v)))
                    .collect(),
            )),
        }
    }
}

/// The JSON text, objects' fields in their order.
impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, value) in fields.iter() {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
    }
}

/// Reads any JSON value, as `serde_json::Value` reads it, borrowing what it can.
impl<'de> de::Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Builds nodes from a deserializer's events; objects are read field by field (see
/// `policy::input`, which keeps only some fields).
pub struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(value).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Node<'de>, A::Error> {
        let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0).min(64));
        while let Some(item) = items.next_element()? {
            array.push(item);
        }
        Ok(Node::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::with_capacity(4);
        while let Some(FieldName(name)) = entries.next_key()? {
            fields.push((name, entries.next_value()?));
        }
        Ok(Node::Object(Object::from_fields(fields)))
    }
}

/// An object's field name, borrowed from the text unless it holds escapes.
pub struct FieldName<'de>(pub Cow<'de, str>);

impl<'de> de::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }

            fn visit_string<E>(self, name: String) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Node<'_> {
        serde_json::from_str(text).expect("parses")
    }

    #[test]
    fn holds_what_serde_json_holds() {
        let texts = [
            r#"{"a":1,"b":[true,null,-2,1.5,"x\"y"],"c":{"d":"\u00e9"},"a":{"z":1e3}}"#,
            r#"[18446744073709551615,-9223372036854775808,0.1,1e-7,""]"#,
            r#""plain""#,
            "null",
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).expect("parses");
            let node = parse(text);
            // The last of two `a` fields counts.
            assert_eq!(serde_json::to_value(&node).expect("serializes"), value);
            assert_eq!(node, Node::from(&value).clone_sorted_like(&node));
        }
    }

    impl<'a> Node<'a> {
        /// `self` with each object's fields in the order of the same object in `like`.
        fn clone_sorted_like(&self, like: &Node<'_>) -> Node<'a> {
            match (self, like) {
                (Node::Object(fields), Node::Object(order)) => Node::Object(Object::from_fields(
                    order
                        .iter()
                        .filter_map(|(name, theirs)| {
                            let mine = fields.get(name)?.clone_sorted_like(theirs);
                            Some((Cow::Owned(name.to_string()), mine))
                        })
                        .collect(),
                )),
                (Node::Array(items), Node::Array(theirs)) => Node::Array(
                    items
                        .iter()
                        .zip(theirs)
                        .map(|(a, b)| a.clone_sorted_like(b))
                        .collect(),
                ),
                _ => self.clone(),
            }
        }
    }

    #[test]
    fn of_repeated_names_the_last_counts_in_small_and_large_objects() {
        for count in [3, 40, 100_000] {
            let mut text = String::from("{");
            for i in 0..count {
                text.push_str(&format!("\"f{}\":{i},", i % (count / 3 + 1)));
            }
            text.push_str("\"f0\":\"last\"}");
            let value: Value = serde_json::from_str(&text).expect("parses");
            let node = parse(&text);
            assert_eq!(serde_json::to_value(&node).expect("serializes"), value);
            assert_eq!(node.as_object().map(Object::len), Some(count / 3 + 1));
            assert_eq!(node["f0"].as_str(), Some("last"));
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let node = parse(r#"{"plain":"abc","esc\u0061ped":"a\nb"}"#);
        let Node::Object(fields) = &node else {
            panic!("an object")
        };
        assert!(matches!(
            fields.0[0],
            (Cow::Borrowed("plain"), Node::String(Cow::Borrowed("abc")))
        ));
        assert!(
            matches!(&fields.0[1], (Cow::Owned(n), Node::String(Cow::Owned(v))) if n == "escaped" && v == "a\nb")
        );
    }

    #[test]
    fn typed_reading_gives_what_serde_json_value_gives() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        enum Op {
            Create,
            Delete,
        }
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Typed {
            name: String,
            count: Option<u8>,
            ops: Vec<Op>,
            #[serde(default)]
            nested: std::collections::BTreeMap<String, Vec<String>>,
        }
        let cases = [
            json!({"name": "n", "count": 3, "ops": ["create", "delete"], "nested": {"k": ["v"]}}),
            json!({"name": "n", "count": null, "ops": []}),
            json!({"name": 5, "ops": []}),
            json!({"name": "n", "count": 300, "ops": []}),
            json!({"name": "n", "count": -1, "ops": []}),
            json!({"name": "n", "count": 1.5, "ops": []}),
            json!({"name": "n", "ops": ["update"]}),
            json!({"name": "n", "ops": [{"create": 1}]}),
            json!({"name": "n", "ops": [{"create": null}]}),
            json!({"name": "n", "ops": [{}]}),
            json!({"name": "n", "ops": "create"}),
            json!({"ops": []}),
            json!(["n", 1, []]),
            json!("n"),
            json!({"name": "n", "ops": [], "nested": {"k": "v"}}),
        ];
        for case in cases {
            let text = case.to_string();
            let node = parse(&text);
            let from_node = Typed::deserialize(&node).map_err(|e| e.to_string());
            let from_value = Typed::deserialize(&case).map_err(|e| e.to_string());
            assert_eq!(from_node, from_value, "{text}");
        }
    }

    use serde::Deserialize as _;
}
