//! Signed JSON documents read one way only. serde_json (and most parsers) let the last of
//! a repeated key win, Go's `encoding/json` (cosign, Rekor, containerd) matches struct
//! fields without regard to case; a document with `"critical"` twice, or `"critical"` and
//! `"Critical"`, can so mean one thing to its signer and another to verdict. Such a
//! document is refused, at any depth. Owns that reading; not what the fields mean.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Parses `bytes` as JSON, refusing a key that repeats another of its object exactly or
/// up to letter case (Unicode case folding, as Go reads `ſ` as `s` and `K` as `k`).
pub fn parse(bytes: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice::<Strict>(bytes)
        .map(|s| s.0)
        .map_err(Malformed)
}

/// Parses `bytes` strictly into `T`.
pub fn from_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Malformed> {
    serde_json::from_value(parse(bytes)?).map_err(Malformed)
}

/// A document that is not JSON, repeats a key, or does not have the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(serde_json::Error);

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(fold(&key)) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice (or twice up to letter case) in one object"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Strict(Value::Object(object)))
    }
}

/// A key as a case-insensitive reader sees it: `Critical`, `CRITICAL` and `critical` are
/// one key; so are `ſ` and `s`, `K` (Kelvin) and `k`.
pub(crate) fn fold(key: &str) -> String {
    key.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_documents_without_repeated_keys_as_serde_json_does() {
        let text =
            br#"{"critical": {"image": {"docker-manifest-digest": "sha256:ab"}, "type": "t"},
            "optional": null, "n": [1, -2, 3.5, true, "s", {}], "e": "\u00e9"}"#;
        assert_eq!(
            parse(text).ok(),
            Some(serde_json::from_slice::<Value>(text).expect("json"))
        );
    }

    #[test]
    fn refuses_a_key_repeated_at_any_depth_or_in_another_case() {
        for text in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"critical": {"type": "x", "type": "y"}}"#,
            r#"{"subject": [{"digest": {"sha256": "a", "sha256": "b"}}]}"#,
            r#"{"critical": {}, "Critical": {}}"#,
            r#"{"predicateType": "a", "PREDICATETYPE": "b"}"#,
            r#"{"sub": 1, "ſub": 2}"#,
            r#"{"kind": 1, "Kind": 2}"#,
            r#"{"kind": 1, "\u212aind": 2}"#,
            r#"{"a": 1, "\u0061": 2}"#,
        ] {
            let err = parse(text.as_bytes()).expect_err(text);
            assert!(err.to_string().contains("appears twice"), "{text}: {err}");
        }
    }

    #[test]
    fn refuses_what_is_not_one_json_document() {
        for text in [
            "",
            "{",
            "{} {}",
            "\u{feff}{}",
            "[1,]",
            "{\"a\":\"\\ud800\"}",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(parse(b"{\"a\": \"\xff\"}").is_err());
    }
}
