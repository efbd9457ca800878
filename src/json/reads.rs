//! What of a JSON document is read, and parsing only that: `Reads` is a tree of field
//! names (or "all of it"); `Reads::parse` builds of each object only the fields in the tree
//! and checks the rest as JSON without building it. The policy set's reads and verdict's
//! own (see `admission::own_reads`) decide what is parsed of a review.

use super::{FieldName, Node, NodeVisitor, Object};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The parts of `input` a policy set reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// The whole value.
    All,
    /// Only these fields of it (nothing when empty).
    Fields(BTreeMap<String, Reads>),
}

/// Nothing is read.
impl Default for Reads {
    fn default() -> Self {
        Self::Fields(BTreeMap::new())
    }
}

impl Reads {
    /// What is read of field `key`, if anything.
    pub fn field(&self, key: &str) -> Option<&Self> {
        match self {
            Self::All => Some(self),
            Self::Fields(fields) => fields.get(key),
        }
    }

    /// `text` parsed as JSON, keeping of each object only the fields that are read (as
    /// the policy input keeps them): what is not read is checked as JSON (syntax and
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

    /// Adds everything `other` reads to what is read, under `prefix`.
    pub fn graft(&mut self, prefix: &[&str], other: &Reads) {
        match other {
            Self::All => self.add(prefix),
            Self::Fields(fields) => {
                for (key, inner) in fields {
                    let mut path = prefix.to_vec();
                    path.push(key);
                    self.graft(&path, inner);
                }
            }
        }
    }

    /// Adds `path` (field names from the root) to what is read.
    pub fn add(&mut self, path: &[&str]) {
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
                    let budget = super::MAX_DEPTH.saturating_sub(self.1 + 1);
                    if super::nests_deeper_than(skipped.get().as_bytes(), budget) {
                        return Err(serde::de::Error::custom(super::too_deep()));
                    }
                }
            }
        }
        Ok(Node::Object(Object::from_fields(kept)))
    }
}
