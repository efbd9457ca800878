//! Dry-run input: AdmissionReviews or plain manifests (JSON or YAML, one or many
//! documents, `kind: List`), each turned into an AdmissionReview to judge.

use serde::Deserialize;
use serde_json::{json, Value};

/// A dry-run body that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the body is not UTF-8 text")]
    NotText,
    #[error("document {index}: {message}")]
    Parse { index: usize, message: String },
    #[error("document {index} is not a Kubernetes object (it needs apiVersion and kind)")]
    NotAnObject { index: usize },
    #[error("no documents found")]
    Empty,
    #[error("document {index}, line {line}: {}", crate::json::too_deep())]
    TooDeep { index: usize, line: usize },
    #[error("the dry run holds more than {max} objects; POST /v1/check judges at most {max} at once (split it, or use verdict check)")]
    TooMany { max: usize },
}

/// The most objects one `/v1/check` dry run judges, and the most images in all of them:
/// what a person reads in one report; past either the body is refused (413) unjudged, so
/// a dry run's work and report stay bounded. `verdict check` has no such limit.
pub const MAX_DRY_RUN_OBJECTS: usize = 1000;
pub const MAX_DRY_RUN_IMAGES: usize = 2000;

/// Why a dry run (read with `reviews_at_most(MAX_DRY_RUN_OBJECTS)`) is too large to
/// judge, if it is.
pub fn too_large(reviews: &[Value]) -> Option<String> {
    let images: usize = reviews
        .iter()
        .map(|r| {
            let kind = r["request"]["kind"]["kind"].as_str().unwrap_or_default();
            let object = crate::json::Node::from(&r["request"]["object"]);
            crate::images::extract(kind, &object).map_or(0, |found| found.len())
        })
        .sum();
    (images > MAX_DRY_RUN_IMAGES).then(|| {
        format!(
            "the dry run holds {images} images; POST /v1/check judges at most {MAX_DRY_RUN_IMAGES} at once (split it, or use verdict check)"
        )
    })
}

/// Every document of `body` as an AdmissionReview, in order.
pub fn reviews(body: &[u8]) -> Result<Vec<Value>, ManifestError> {
    reviews_at_most(body, usize::MAX)
}

/// [`reviews`], refused with `TooMany` as soon as more than `max` objects have been read:
/// a dry run past its limit costs no more than reading that many.
pub fn reviews_at_most(body: &[u8], max: usize) -> Result<Vec<Value>, ManifestError> {
    let text = std::str::from_utf8(body).map_err(|_| ManifestError::NotText)?;
    let mut objects = Vec::new();
    for (index, doc) in documents(text, max)?.into_iter().enumerate() {
        flatten(doc, index, &mut objects)?;
        if objects.len() > max {
            return Err(ManifestError::TooMany { max });
        }
    }
    if objects.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            if object["kind"] == "AdmissionReview" {
                complete(object, i)
            } else {
                wrap(object, i)
            }
        })
        .collect())
}

/// An AdmissionReview of a dry run with what the API server always sends and a review
/// file may leave out (the Gatekeeper library's UPDATE samples have neither `uid` nor
/// `request.kind`): see [`complete_request`].
fn complete(mut review: Value, index: usize) -> Value {
    if let Some(request) = review.get_mut("request").filter(|r| r.is_object()) {
        complete_request(request, index);
    }
    review
}

/// The AdmissionRequest of creating `object`, as gator builds it for an object (its
/// `kind` from the object's apiVersion and kind, `name` and `namespace` only when the
/// object has them, no user), judged as a CREATE.
pub fn create_request(object: Value, index: usize) -> Value {
    let mut request = json!({"operation": "CREATE", "object": object});
    complete_request(&mut request, index);
    request
}

/// Fills in what the API server always sends and a hand-written request may lack, from
/// the object (`oldObject` on DELETE): `uid` (`dry-run-<index>`), `kind`, `resource`,
/// `requestKind`, `requestResource`, `name`, `namespace` (only when the object has one)
/// and `userInfo` (empty: no user is invented). What the request has is kept.
pub fn complete_request(request: &mut Value, index: usize) {
    let Some(fields) = request.as_object_mut() else {
        return;
    };
    let object = match fields.get("object") {
        Some(o) if o.is_object() => o.clone(),
        _ => fields.get("oldObject").cloned().unwrap_or(Value::Null),
    };
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = plural(kind);
    let metadata = &object["metadata"];
    let mut fill = |key: &str, value: Value| {
        if fields.get(key).is_none_or(Value::is_null) {
            fields.insert(key.to_string(), value);
        }
    };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    fill("uid", json!(format!("dry-run-{index}")));
    fill("kind", gvk.clone());
    fill("resource", gvr.clone());
    fill("requestKind", gvk);
    fill("requestResource", gvr);
    if let Some(name) = metadata["name"].as_str() {
        fill("name", json!(name));
    }
    if let Some(namespace) = metadata["namespace"].as_str() {
        fill("namespace", json!(namespace));
    }
    fill("userInfo", json!({}));
}

fn documents(text: &str, max: usize) -> Result<Vec<Value>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut parser = serde_json::Deserializer::from_str(text);
        let value = serde::de::DeserializeSeed::deserialize(AtMost(max), &mut parser)
            .and_then(|v| parser.end().map(|()| v))
            .map_err(|e| match e.to_string() {
                m if m.starts_with(TOO_MANY) => ManifestError::TooMany { max },
                _ => ManifestError::Parse {
                    index: 0,
                    message: crate::json::explain(&e),
                },
            })?;
        return Ok(match value {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    check_yaml_depth(text)?;
    let mut docs = Vec::new();
    for (index, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Parse {
            index,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
        if docs.len() > max {
            return Err(ManifestError::TooMany { max });
        }
    }
    Ok(docs)
}

const TOO_MANY: &str = "more documents than";

/// A JSON document, or a list of at most `.0` of them, read without building the rest.
struct AtMost(usize);

impl<'de> serde::de::DeserializeSeed<'de> for AtMost {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object or a list of them")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
            if items.len() > self.0 {
                return Err(serde::de::Error::custom(format!("{TOO_MANY} {}", self.0)));
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Refuses YAML nested past `MAX_DEPTH` before libyaml reads it: libyaml's scanner does
/// work in proportion to the flow nesting (`[[[...`) for every token, so a deep flow
/// collection cost quadratic time. yaml-rust2's parser is walked instead, event by event,
/// and stopped at the first level too deep: linear in the text. A text it cannot read is
/// refused too (it reads YAML 1.2, of which Kubernetes manifests use a small part).
fn check_yaml_depth(text: &str) -> Result<(), ManifestError> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let (mut index, mut depth) = (0, 0usize);
    loop {
        let (event, marker) = parser.next_token().map_err(|e| {
            // yaml-rust2 stops deep flow nesting itself, a little past ours.
            if e.info().starts_with("recursion limit") {
                ManifestError::TooDeep {
                    index,
                    line: e.marker().line(),
                }
            } else {
                ManifestError::Parse {
                    index,
                    message: e.to_string(),
                }
            }
        })?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > crate::json::MAX_DEPTH {
                    return Err(ManifestError::TooDeep {
                        index,
                        line: marker.line(),
                    });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::DocumentEnd => index += 1,
            Event::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

fn flatten(doc: Value, index: usize, out: &mut Vec<Value>) -> Result<(), ManifestError> {
    let is_object = doc.get("kind").and_then(Value::as_str).is_some()
        && doc.get("apiVersion").and_then(Value::as_str).is_some();
    if !is_object {
        return Err(ManifestError::NotAnObject { index });
    }
    if doc["kind"] == "List" {
        if let Some(items) = doc.get("items").and_then(Value::as_array) {
            for item in items {
                flatten(item.clone(), index, out)?;
            }
        }
        return Ok(());
    }
    out.push(doc);
    Ok(())
}

/// An AdmissionReview for creating `object` (see [`create_request`]).
fn wrap(object: Value, index: usize) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": create_request(object, index),
    })
}

fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: t}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: b}\n";
        let reviews = reviews(yaml.as_bytes()).expect("parses");
        assert_eq!(reviews.len(), 2);
        assert_eq!(reviews[0]["request"]["namespace"], "t");
        assert_eq!(reviews[0]["request"]["resource"]["resource"], "pods");
        assert_eq!(
            reviews[1]["request"]["kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        // No namespace is invented for an object without one, and no user.
        assert_eq!(reviews[1]["request"].get("namespace"), None);
        assert_eq!(reviews[1]["request"]["userInfo"], json!({}));
        assert_eq!(reviews[1]["request"]["operation"], "CREATE");
        assert_eq!(reviews[1]["request"]["resource"]["resource"], "deployments");
    }

    /// Deep nesting, flow or block, JSON or YAML, is refused naming the limit, in time
    /// linear in the text (a 100,000-deep flow sequence took libyaml 17 s).
    #[test]
    fn refuses_nesting_past_the_limit_quickly() {
        let limit = crate::json::MAX_DEPTH;
        let flow = |n: usize| format!("x: {}{}\n", "[".repeat(n), "]".repeat(n));
        let maps = |n: usize| format!("x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n));
        let block = |n: usize| {
            (0..n)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>()
                + &" ".repeat(n)
                + "1\n"
        };
        let json = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for (name, text) in [
            ("flow", flow(100_000)),
            ("maps", maps(100_000)),
            ("flow 1M", flow(1_000_000)),
            ("block", block(2_000)),
            ("json", json(100_000)),
        ] {
            let err = reviews(text.as_bytes()).expect_err(name);
            assert!(
                err.to_string()
                    .contains(&format!("more than {limit} levels")),
                "{name}: {err}"
            );
        }
        // At the limit (the document itself is one level), documents are read as before.
        assert!(matches!(
            reviews(flow(limit - 1).as_bytes()),
            Err(ManifestError::NotAnObject { .. })
        ));
        assert!(matches!(
            reviews(json(limit).as_bytes()),
            Err(ManifestError::NotAnObject { .. })
        ));
    }

    #[test]
    fn passes_admission_reviews_through() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}"#;
        let reviews = reviews(body).expect("parses");
        assert_eq!(reviews[0]["request"]["uid"], "x");
    }

    /// The Gatekeeper library's UPDATE samples: no uid, no kind, no user.
    #[test]
    fn fills_in_what_the_api_server_always_sends() {
        let body = b"kind: AdmissionReview\napiVersion: admission.k8s.io/v1beta1\nrequest:\n  operation: UPDATE\n  object:\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata: {name: d, namespace: n}\n";
        let reviews = reviews(body).expect("parses");
        let request = &reviews[0]["request"];
        assert_eq!(request["uid"], "dry-run-0");
        assert_eq!(request["operation"], "UPDATE");
        assert_eq!(
            request["kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(request["resource"]["resource"], "deployments");
        assert_eq!(
            (request["name"].as_str(), request["namespace"].as_str()),
            (Some("d"), Some("n"))
        );
        assert_eq!(request["userInfo"], json!({}));
        assert_eq!(reviews[0]["apiVersion"], "admission.k8s.io/v1beta1");
    }

    #[test]
    fn reports_unreadable_documents() {
        assert!(matches!(
            reviews(b"{bad json"),
            Err(ManifestError::Parse { .. })
        ));
        assert!(matches!(
            reviews(b"a: [unclosed"),
            Err(ManifestError::Parse { .. })
        ));
        assert!(matches!(
            reviews(b"just: a map\n"),
            Err(ManifestError::NotAnObject { index: 0 })
        ));
        assert!(matches!(reviews(b"---\n"), Err(ManifestError::Empty)));
        assert!(matches!(
            reviews(&[0xff, 0xfe]),
            Err(ManifestError::NotText)
        ));
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Ingress"), "ingresses");
    }
}
