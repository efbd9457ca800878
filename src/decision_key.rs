//! The decision key: the SHA-256 under which the findings of a policy set are remembered
//! (`policy::memo`). Two inputs with the same key get the findings of the first, so a
//! collision would be a wrong decision; the encoding below is injective.
//!
//! # Encoding
//! The key is SHA-256 over a byte string built from the review and its image facts, for
//! exactly the parts the policy set reads (`Reads`), in this order:
//! - for each top-level field of the review as received (except `images`, which is
//!   verdict's) that is read, in the order received: `name(field)` then `value(field)`;
//! - if `images` is read: `name("images")`, then either, when all of it is read, `[`,
//!   `count(n)` and each image's 32-byte SHA-256 of its JSON text (fixed size, so
//!   self-delimiting), or, when only some of its fields are read, `value` of the image list.
//!
//! where
//! - `count(n)` is `n` as 8 little-endian bytes; `text(s)` is `count(len(s))` then the
//!   UTF-8 bytes of `s`; `name(s)` is `k` then `text(s)` (the tag `k` never reads as `}`);
//! - `value(v)` of a value of which only some fields are read (an object, under
//!   `Reads::Fields`) is `{`, then `name(f)` `value(f)` for each read field present (in the
//!   order of the reads, which is sorted), then `}`;
//! - `value(v)` of a value read whole is `node(v)`: `n` for null, `t`/`f` for booleans,
//!   `u` + 8 LE bytes for an unsigned integer, `i` + 8 LE bytes for a negative one, `d` +
//!   the 8 LE bytes of an f64's bits for a float, `s` + `text` for a string, `[` +
//!   `count` + each item's `node` for an array, `{` + `count` + `text(name)` `node(value)`
//!   for each field in the order received for an object.
//!
//! Every production starts with a tag that says what follows and every variable-length
//! part is length-prefixed, so no two different inputs give the same byte string. The
//! reads are fixed for a policy set, so at each position two inputs are encoded by the
//! same rule: where a value is read in part, an object gives `{`…`}` and anything else its
//! `node`, which never starts with `{` (only a whole object's would, and an object there is
//! read in part); inside `{`…`}` every field starts with `k`, never `}`. The same object
//! sent with its fields in another order is another key, never a wrong one.
//! `whole_values_are_keyed_apart` checks 40 values pairwise.

use crate::json::{Node, Numeric, Object, Reads};
use ring::digest::Context;
use serde::Serialize;

/// SHA-256 of what an input holds (see the encoding above).
pub type Key = [u8; 32];

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

/// The SHA-256 of what the policy input keeps of the same review and images: equal for two reviews
/// that differ only in what is not read, different for any difference in what is. When all
/// of `images` is read, it counts as the number of images and the digest of each one's JSON
/// text (fixed-size, so self-delimiting), which image facts keep between reviews.
pub fn key(reads: &Reads, review: &Object, images: &[impl Image]) -> Option<Key> {
    let mut text = KeyText::new();
    for (key, value) in fields(review) {
        if let Some(reads) = reads.field(key) {
            text.name(key);
            digest(reads, value, &mut text);
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
                digest(reads, &Node::from(&images), &mut text);
            }
        }
    }
    text.finish()
}

/// The review's own fields: `images` is verdict's (the policy input is built of the same).
pub fn fields<'a>(review: &'a Object) -> impl Iterator<Item = (&'a str, &'a Node<'a>)> {
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

/// Feeds what is read of `value` to `text`, in an encoding where
/// different values never give the same bytes: what is read whole as
/// [`KeyText::node`] writes it (objects' fields in the order received, so the same
/// object sent with its fields in another order is another key, never a wrong one); an
/// object of which only some fields are read is `{`, each field's tagged,
/// length-prefixed name and value, `}` (a whole value that is not an object never
/// starts with `{`).
fn digest(reads: &Reads, value: &Node, text: &mut KeyText) {
    match (reads, value) {
        (Reads::Fields(wanted), Node::Object(fields)) => {
            text.push(b"{");
            for (key, reads) in wanted {
                if let Some(value) = fields.get(key) {
                    text.name(key);
                    digest(reads, value, text);
                }
            }
            text.push(b"}");
        }
        _ => text.node(value),
    }
}

/// The text digest of a value, computed once: image facts serve many reviews.
#[derive(Debug, Default)]
pub struct Memo(std::sync::OnceLock<Option<Key>>);

impl Memo {
    /// The digest of `value`'s JSON text, computed on the first call.
    pub fn of(&self, value: &(impl Serialize + ?Sized)) -> Option<Key> {
        *self.0.get_or_init(|| text_digest(value))
    }
}

impl Clone for Memo {
    /// A clone may be changed: it computes its own digest.
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            digest(&Reads::All, &node, &mut key);
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
}
