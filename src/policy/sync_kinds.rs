//! Which kinds to sync into the inventory, declared with Gatekeeper's own documents so
//! that existing files work unchanged: a `Config` (`config.gatekeeper.sh`,
//! `spec.sync.syncOnly`) or a `SyncSet` (`syncset.gatekeeper.sh`, `spec.gvks`).

use crate::cluster::Gvk;
use serde_json::Value;

/// Why a sync declaration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDeclaration(String);

fn api_group(doc: &Value) -> Option<&str> {
    doc.get("apiVersion")?
        .as_str()?
        .split_once('/')
        .map(|(g, _)| g)
}

fn kind(doc: &Value) -> Option<&str> {
    doc.get("kind")?.as_str()
}

/// A Gatekeeper `Config` or `SyncSet`, of any version.
pub fn is_declaration(doc: &Value) -> bool {
    matches!(
        (api_group(doc), kind(doc)),
        (Some("config.gatekeeper.sh"), Some("Config"))
            | (Some("syncset.gatekeeper.sh"), Some("SyncSet"))
    )
}

/// The kinds a declaration names. A file that holds one holds only declarations.
pub fn kinds(doc: &Value) -> Result<Vec<Gvk>, InvalidDeclaration> {
    let list = match (api_group(doc), kind(doc)) {
        (Some("config.gatekeeper.sh"), Some("Config")) => {
            doc.pointer("/spec/sync/syncOnly").unwrap_or(&Value::Null)
        }
        (Some("syncset.gatekeeper.sh"), Some("SyncSet")) => {
            doc.pointer("/spec/gvks").unwrap_or(&Value::Null)
        }
        _ => {
            return Err(InvalidDeclaration(
                "a file with a Gatekeeper Config or SyncSet holds only those".to_string(),
            ))
        }
    };
    let entries = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        _ => {
            return Err(InvalidDeclaration(
                "spec.sync.syncOnly / spec.gvks must be a list".to_string(),
            ))
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |name: &str, required: bool| match entry.get(name) {
                Some(Value::String(s)) if !(required && s.is_empty()) => Ok(s.clone()),
                None if !required => Ok(String::new()),
                _ => Err(InvalidDeclaration(format!(
                    "entry {i}: `{name}` must be a {}string",
                    if required { "non-empty " } else { "" }
                ))),
            };
            Ok(Gvk {
                group: field("group", false)?,
                version: field("version", true)?,
                kind: field("kind", true)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_gatekeeper_config_and_syncset() {
        let config = json!({"apiVersion": "config.gatekeeper.sh/v1alpha1", "kind": "Config",
            "metadata": {"name": "config", "namespace": "gatekeeper-system"},
            "spec": {"sync": {"syncOnly": [
                {"group": "", "version": "v1", "kind": "Namespace"},
                {"group": "apps", "version": "v1", "kind": "Deployment"}]}}});
        let syncset = json!({"apiVersion": "syncset.gatekeeper.sh/v1alpha1", "kind": "SyncSet",
            "metadata": {"name": "s"},
            "spec": {"gvks": [{"version": "v1", "kind": "Service"}]}});
        assert!(is_declaration(&config) && is_declaration(&syncset));
        let gvk = |g: &str, v: &str, k: &str| Gvk {
            group: g.into(),
            version: v.into(),
            kind: k.into(),
        };
        assert_eq!(
            kinds(&config).expect("valid"),
            [gvk("", "v1", "Namespace"), gvk("apps", "v1", "Deployment")]
        );
        assert_eq!(kinds(&syncset).expect("valid"), [gvk("", "v1", "Service")]);
        let bad = json!({"apiVersion": "syncset.gatekeeper.sh/v1alpha1", "kind": "SyncSet",
            "spec": {"gvks": [{"version": "v1"}]}});
        assert!(kinds(&bad).is_err());
        assert!(!is_declaration(
            &json!({"apiVersion": "v1", "kind": "Config"})
        ));
    }
}
