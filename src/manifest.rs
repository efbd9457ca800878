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
}

/// Every document of `body` as an AdmissionReview, in order.
pub fn reviews(body: &[u8]) -> Result<Vec<Value>, ManifestError> {
    let text = std::str::from_utf8(body).map_err(|_| ManifestError::NotText)?;
    let mut objects = Vec::new();
    for (index, doc) in documents(text)?.into_iter().enumerate() {
        flatten(doc, index, &mut objects)?;
    }
    if objects.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            if object["kind"] == "AdmissionReview" {
                object
            } else {
                wrap(object, i)
            }
        })
        .collect())
}

fn documents(text: &str) -> Result<Vec<Value>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::Parse {
            index: 0,
            message: e.to_string(),
        })?;
        return Ok(match value {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    let mut docs = Vec::new();
    for (index, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Parse {
            index,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
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

/// An AdmissionReview for creating `object`, as the API server would send it.
fn wrap(object: Value, index: usize) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let resource = plural(&kind);
    let metadata = &object["metadata"];
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("dry-run-{index}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": metadata["name"].as_str().unwrap_or_default(),
            "namespace": metadata["namespace"].as_str().unwrap_or("default"),
            "operation": "CREATE",
            "userInfo": {"username": "verdict-dry-run"},
            "object": object,
            "oldObject": null,
            "dryRun": true,
        }
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
        assert_eq!(reviews[1]["request"]["namespace"], "default");
        assert_eq!(reviews[1]["request"]["resource"]["resource"], "deployments");
    }

    #[test]
    fn passes_admission_reviews_through() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}"#;
        let reviews = reviews(body).expect("parses");
        assert_eq!(reviews[0]["request"]["uid"], "x");
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
