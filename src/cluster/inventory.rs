//! The inventory document policies read at `data.inventory`, in Gatekeeper's layout:
//! `cluster[<apiVersion>][<kind>][<name>]` for cluster-scoped objects and
//! `namespace[<ns>][<apiVersion>][<kind>][<name>]` for namespaced ones. Owns the layout,
//! what is kept of an object (not `managedFields`), and which documents are Kubernetes
//! objects; not where they come from (a watch or a file).

use regorus::Value;
use std::collections::BTreeMap;

/// A group, version and kind, as Gatekeeper's `syncOnly` and `gvks` name them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    /// Namespaces, which are always synced: the shipped policies read their labels.
    pub fn namespace() -> Self {
        Self {
            group: String::new(),
            version: "v1".to_string(),
            kind: "Namespace".to_string(),
        }
    }

    /// `v1` for the core group, `apps/v1` otherwise: the key in the inventory.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl std::fmt::Display for Gvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

/// Where one object sits: its namespace (none when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Place {
    /// The place of a Kubernetes object: `apiVersion`, `kind` and `metadata.name` are
    /// non-empty strings; `metadata.namespace`, when a non-empty string, makes it namespaced.
    pub fn of(object: &serde_json::Value) -> Option<Self> {
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let metadata = object.get("metadata")?;
        Some(Self {
            api_version: text(object.get("apiVersion"))?,
            kind: text(object.get("kind"))?,
            namespace: text(metadata.get("namespace")),
            name: text(metadata.get("name"))?,
        })
    }

    fn path(&self) -> Vec<Value> {
        let mut path = Vec::with_capacity(5);
        match &self.namespace {
            Some(ns) => path.extend([Value::from("namespace"), Value::from(ns.as_str())]),
            None => path.push(Value::from("cluster")),
        }
        path.extend([
            Value::from(self.api_version.as_str()),
            Value::from(self.kind.as_str()),
            Value::from(self.name.as_str()),
        ]);
        path
    }
}

/// What is kept of an object: everything but `metadata.managedFields`, which is large
/// and read by no policy (Gatekeeper drops it too).
pub fn kept(mut object: serde_json::Value) -> serde_json::Value {
    if let Some(metadata) = object
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.remove("managedFields");
    }
    object
}

/// The objects of a document that holds Kubernetes objects: the object itself, or the
/// items of a `List`. None when it is something else (a plain data document).
pub fn objects(doc: &serde_json::Value) -> Option<Vec<(Place, serde_json::Value)>> {
    let is_list = doc.get("kind").and_then(serde_json::Value::as_str) == Some("List")
        && doc.get("apiVersion").is_some();
    if is_list {
        let items = doc.get("items")?.as_array()?;
        return items
            .iter()
            .map(|item| Some((Place::of(item)?, kept(item.clone()))))
            .collect();
    }
    Some(vec![(Place::of(doc)?, kept(doc.clone()))])
}

/// The `data.inventory` document, kept up to date object by object. Cloning it is cheap
/// (shared), and changing a clone copies only the maps on the changed object's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    root: Value,
}

impl Default for Document {
    fn default() -> Self {
        Self {
            root: Value::new_object(),
        }
    }
}

impl Document {
    /// The document, for `data.inventory`.
    pub fn value(&self) -> &Value {
        &self.root
    }

    /// Puts `object` (already `kept`) at its place, replacing what was there; true when
    /// nothing was.
    pub fn insert(&mut self, place: &Place, object: Value) -> bool {
        let path = place.path();
        let mut node = &mut self.root;
        for key in &path[..path.len() - 1] {
            let Ok(map) = node.as_object_mut() else {
                return false;
            };
            if !map.contains_key(key) {
                map.insert(key.clone(), Value::new_object());
            }
            let Some(child) = map.get_mut(key) else {
                return false;
            };
            node = child;
        }
        match (node.as_object_mut(), path.last()) {
            (Ok(map), Some(last)) => map.insert(last.clone(), object).is_none(),
            _ => false,
        }
    }

    /// Removes the object at `place`, and the maps it leaves empty; true when it was there.
    pub fn remove(&mut self, place: &Place) -> bool {
        remove_at(&mut self.root, &place.path())
    }

    /// Every object of one apiVersion and kind, in every namespace, removed.
    pub fn remove_kind(&mut self, api_version: &str, kind: &str) {
        let (api_version, kind) = (Value::from(api_version), Value::from(kind));
        if let Ok(root) = self.root.as_object_mut() {
            if let Some(cluster) = root.get_mut(&Value::from("cluster")) {
                remove_at(cluster, &[api_version.clone(), kind.clone()]);
            }
            if let Some(Value::Object(namespaces)) = root.get(&Value::from("namespace")) {
                let names: Vec<Value> = namespaces.keys().cloned().collect();
                for ns in names {
                    let path = [
                        Value::from("namespace"),
                        ns,
                        api_version.clone(),
                        kind.clone(),
                    ];
                    remove_at(&mut self.root, &path);
                }
            }
        }
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        fn count(node: &Value, depth: usize) -> usize {
            match node {
                Value::Object(map) if depth > 0 => map.values().map(|v| count(v, depth - 1)).sum(),
                Value::Object(map) => map.len(),
                _ => 0,
            }
        }
        let at = |key: &str, depth| {
            self.root
                .as_object()
                .ok()
                .and_then(|m| m.get(&Value::from(key)))
                .map_or(0, |v| count(v, depth))
        };
        at("cluster", 2) + at("namespace", 3)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This document with `top`'s objects put over it: an object in both is `top`'s.
    pub fn overlaid(&self, top: &Document) -> Document {
        let mut merged = self.clone();
        overlay(&mut merged.root, &top.root, usize::MAX);
        merged
    }

    /// The labels of namespace `name`, when the document holds that Namespace.
    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let mut node = &self.root;
        for key in ["cluster", "v1", "Namespace", name] {
            node = node.as_object().ok()?.get(&Value::from(key))?;
        }
        let mut labels = BTreeMap::new();
        let found = node
            .as_object()
            .ok()
            .and_then(|o| o.get(&Value::from("metadata")))
            .and_then(|m| m.as_object().ok())
            .and_then(|m| m.get(&Value::from("labels")));
        if let Some(Value::Object(map)) = found {
            for (k, v) in map.iter() {
                if let (Value::String(k), Value::String(v)) = (k, v) {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
        }
        Some(labels)
    }
}

/// Merges `top` into `base` map by map for `levels` levels, then entry by entry: under
/// `cluster` the apiVersion and kind maps merge and objects are replaced whole; under
/// `namespace` the namespace maps merge too.
fn overlay(base: &mut Value, top: &Value, levels: usize) {
    let (Value::Object(top_map), Ok(base_map)) = (top, base.as_object_mut()) else {
        *base = top.clone();
        return;
    };
    for (key, value) in top_map.iter() {
        let below = match (levels, key) {
            (0, _) => None,
            (usize::MAX, Value::String(s)) if &**s == "cluster" => Some(2),
            (usize::MAX, Value::String(s)) if &**s == "namespace" => Some(3),
            (usize::MAX, _) => None,
            (n, _) => Some(n - 1),
        };
        match (below, base_map.get_mut(key)) {
            (Some(levels), Some(existing)) => overlay(existing, value, levels),
            _ => {
                base_map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Removes what `path` leads to under `node`, and the maps that leaves empty; true when it
/// was there. Nothing is written (a write copies a map shared with a judge's copy) unless
/// something goes.
fn remove_at(node: &mut Value, path: &[Value]) -> bool {
    let mut there: &Value = node;
    for key in path {
        match there.as_object().ok().and_then(|m| m.get(key)) {
            Some(child) => there = child,
            None => return false,
        }
    }
    remove_present(node, path);
    true
}

/// `remove_at` once `path` is known to lead somewhere.
fn remove_present(node: &mut Value, path: &[Value]) {
    let (Some((first, rest)), Ok(map)) = (path.split_first(), node.as_object_mut()) else {
        return;
    };
    match map.get_mut(first) {
        Some(child) if !rest.is_empty() => {
            remove_present(child, rest);
            if child.as_object().is_ok_and(|m| m.is_empty()) {
                map.remove(first);
            }
        }
        _ => {
            map.remove(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place_of(v: &serde_json::Value) -> Place {
        Place::of(v).expect("an object")
    }

    #[test]
    fn objects_go_to_gatekeepers_paths_without_managed_fields() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "prod", "labels": {"tier": "prod"}, "managedFields": [{}]}});
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "prod"}});
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "prod"}});
        let mut doc = Document::default();
        for o in [&ns, &svc, &deploy] {
            doc.insert(&place_of(o), Value::from(kept(o.clone())));
        }
        let got: serde_json::Value =
            serde_json::from_str(&doc.value().to_json_str().expect("json")).expect("parses");
        assert_eq!(
            got,
            json!({
                "cluster": {"v1": {"Namespace": {"prod": {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "prod", "labels": {"tier": "prod"}}}}}},
                "namespace": {"prod": {
                    "v1": {"Service": {"web": svc}},
                    "apps/v1": {"Deployment": {"web": deploy}}}}
            })
        );
        assert_eq!(doc.len(), 3);
        assert_eq!(
            doc.namespace_labels("prod"),
            Some(BTreeMap::from([("tier".into(), "prod".into())]))
        );
        assert_eq!(doc.namespace_labels("dev"), None);

        doc.remove(&place_of(&svc));
        doc.remove_kind("apps/v1", "Deployment");
        assert_eq!(doc.len(), 1);
        assert!(
            doc.value()
                .as_object()
                .expect("object")
                .get(&Value::from("namespace"))
                .is_none(),
            "emptied maps go too"
        );
    }

    #[test]
    fn documents_that_are_not_objects_stay_data() {
        assert!(objects(&json!({"cluster": {"v1": {}}})).is_none());
        assert!(
            objects(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}})).is_none()
        );
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}]});
        assert_eq!(objects(&list).expect("objects").len(), 2);
    }

    #[test]
    fn overlay_takes_whole_objects_from_the_top() {
        let a = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}});
        let a2 = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "a", "labels": {"x": "3"}}});
        let b = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}});
        let (mut base, mut top) = (Document::default(), Document::default());
        base.insert(&place_of(&a), Value::from(a.clone()));
        base.insert(&place_of(&b), Value::from(b.clone()));
        top.insert(&place_of(&a2), Value::from(a2.clone()));
        let merged = base.overlaid(&top);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged.namespace_labels("a"),
            Some(BTreeMap::from([("x".into(), "3".into())])),
            "not a field-by-field merge"
        );
    }
}
