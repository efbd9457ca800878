//! Finding container images in Kubernetes objects. Owns where images live in
//! each kind and how references are parsed; not what is done with them.

mod digest;
mod host;
mod reference;

pub use digest::{Digest, InvalidDigest};
pub use host::{canonical_host, DOCKER_HUB};
pub use reference::{ImageRef, ReferenceError};

use crate::json::Node;
use serde::Serialize;

/// Which list of a pod spec an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    Container,
    Init,
    Ephemeral,
}

impl ContainerKind {
    pub const LISTS: [(&'static str, ContainerKind); 3] = [
        ("initContainers", ContainerKind::Init),
        ("containers", ContainerKind::Container),
        ("ephemeralContainers", ContainerKind::Ephemeral),
    ];
}

/// One image field of an object, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOccurrence {
    /// Container name (empty when the object has none).
    pub container: String,
    pub kind: ContainerKind,
    /// JSON path of the image field, e.g. `spec.template.spec.containers[0].image`.
    pub path: String,
    /// The reference as written.
    pub reference: String,
}

impl ImageOccurrence {
    /// The parsed reference, or why it cannot be parsed. Parsed on demand: the facts of a
    /// known image are reused without it.
    pub fn parse(&self) -> Result<ImageRef, ReferenceError> {
        ImageRef::parse(&self.reference)
    }
}

/// Kinds whose objects carry pod specs, with the path to the pod spec.
/// The webhook configuration in `deploy/` must cover exactly these.
pub const POD_SPEC_PATHS: &[(&str, &[&str])] = &[
    ("Pod", &["spec"]),
    ("PodTemplate", &["template", "spec"]),
    ("ReplicationController", &["spec", "template", "spec"]),
    ("Deployment", &["spec", "template", "spec"]),
    ("ReplicaSet", &["spec", "template", "spec"]),
    ("StatefulSet", &["spec", "template", "spec"]),
    ("DaemonSet", &["spec", "template", "spec"]),
    ("Job", &["spec", "template", "spec"]),
    (
        "CronJob",
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ),
    // The `pods/ephemeralcontainers` subresource before Kubernetes 1.22.
    ("EphemeralContainers", &[]),
];

/// A pod spec that is not the shape Kubernetes defines: it cannot be judged, so it is never
/// read as "no images".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} {problem}: a {kind} is judged by the images of its pod spec, and this one cannot be read")]
pub struct MalformedSpec {
    pub kind: String,
    /// The field, e.g. `spec.template.spec.containers[1].image`.
    pub path: String,
    pub problem: &'static str,
}

/// The pod spec fields [`puller`] reads.
const PULLER_FIELDS: [&str; 3] = ["imagePullSecrets", "serviceAccountName", "serviceAccount"];

/// What [`extract`] and [`puller`] read of an object: the container lists, pull secrets and
/// ServiceAccount of every kind that has a pod spec, whole (paths from the object's root).
pub fn reads() -> Vec<Vec<&'static str>> {
    let mut paths = Vec::new();
    for (_, spec) in POD_SPEC_PATHS {
        let fields = ContainerKind::LISTS.iter().map(|(list, _)| *list);
        for field in fields.chain(PULLER_FIELDS) {
            let mut path = spec.to_vec();
            path.push(field);
            paths.push(path);
        }
    }
    paths
}

/// Who pulls an object's images: the Secrets its pod spec names in `imagePullSecrets`
/// and its ServiceAccount (`serviceAccountName`, else the deprecated `serviceAccount`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Puller {
    pub secrets: Vec<String>,
    pub service_account: Option<String>,
}

/// The puller of `object`, a Kubernetes object of `kind`. What is not there, or not of
/// Kubernetes' shape, names nothing (no credentials come of it).
pub fn puller(kind: &str, object: &Node) -> Puller {
    let Some((_, path)) = POD_SPEC_PATHS.iter().find(|(k, _)| *k == kind) else {
        return Puller::default();
    };
    let Some(spec) = path.iter().try_fold(object, |node, key| node.get(key)) else {
        return Puller::default();
    };
    let secrets = spec
        .get("imagePullSecrets")
        .and_then(Node::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.get("name")?.as_str())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    let service_account = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|field| spec.get(field)?.as_str().filter(|s| !s.is_empty()))
        .map(str::to_string);
    Puller {
        secrets,
        service_account,
    }
}

/// Every image of `object`, a Kubernetes object of `kind`, in document order:
/// init containers, containers, then ephemeral containers. Kinds that carry no pod spec
/// yield nothing; a pod spec of another shape than Kubernetes defines (null or not an
/// object, a container list that is not a list of objects, a name or image that is not a
/// string) is an error naming the field.
pub fn extract(kind: &str, object: &Node) -> Result<Vec<ImageOccurrence>, MalformedSpec> {
    let Some((_, path)) = POD_SPEC_PATHS.iter().find(|(k, _)| *k == kind) else {
        return Ok(Vec::new());
    };
    let malformed = |path: String, problem| MalformedSpec {
        kind: kind.to_string(),
        path,
        problem,
    };
    let mut spec = object;
    for (depth, key) in path.iter().enumerate() {
        let here = || path[..=depth].join(".");
        spec = match spec.get(key) {
            Some(next) if next.is_object() => next,
            Some(_) => return Err(malformed(here(), "is not an object")),
            None => return Err(malformed(here(), "is missing")),
        };
    }
    let prefix = path.join(".");
    let mut found = Vec::new();
    for (list, container_kind) in ContainerKind::LISTS {
        let list_path = || {
            if prefix.is_empty() {
                list.to_string()
            } else {
                format!("{prefix}.{list}")
            }
        };
        let containers = match spec.get(list) {
            None => continue,
            Some(value) => value
                .as_array()
                .ok_or_else(|| malformed(list_path(), "is not a list of containers"))?,
        };
        for (i, container) in containers.iter().enumerate() {
            let at = |field: &str| format!("{}[{i}]{field}", list_path());
            if !container.is_object() {
                return Err(malformed(at(""), "is not a container object"));
            }
            let Some(image) = container.get("image") else {
                continue;
            };
            let reference = image
                .as_str()
                .ok_or_else(|| malformed(at(".image"), "is not a string"))?
                .to_string();
            let name = match container.get("name") {
                None => "",
                Some(name) => name
                    .as_str()
                    .ok_or_else(|| malformed(at(".name"), "is not a string"))?,
            };
            // Built piece by piece: `format!` costs more than the rest of extraction.
            let mut path = String::with_capacity(prefix.len() + list.len() + 12);
            if !prefix.is_empty() {
                path.push_str(&prefix);
                path.push('.');
            }
            path.push_str(list);
            path.push('[');
            path.push_str(itoa::Buffer::new().format(i));
            path.push_str("].image");
            found.push(ImageOccurrence {
                container: name.to_string(),
                kind: container_kind,
                path,
                reference,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pod_spec() -> Value {
        json!({
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [
                {"name": "app", "image": "ghcr.io/acme/app:v1"},
                {"name": "sidecar", "image": "envoyproxy/envoy:v1.30"}
            ],
            "ephemeralContainers": [{"name": "debug", "image": "nicolaka/netshoot"}]
        })
    }

    fn wrap(path: &[&str], spec: Value) -> Value {
        path.iter()
            .rev()
            .fold(spec, |inner, key| json!({ *key: inner }))
    }

    #[test]
    fn reads_pull_secrets_and_the_service_account_of_every_kind() {
        for (kind, path) in POD_SPEC_PATHS {
            if path.is_empty() {
                continue;
            }
            let spec = json!({"containers": [], "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "a"}, {"name": ""}, {"nom": "x"}, "b", {"name": "c"}]});
            let found = puller(kind, &Node::from(&wrap(path, spec)));
            assert_eq!(found.secrets, ["a", "c"], "{kind}");
            assert_eq!(found.service_account.as_deref(), Some("builder"), "{kind}");
        }
        let old = json!({"spec": {"serviceAccount": "legacy"}});
        assert_eq!(
            puller("Pod", &Node::from(&old)).service_account.as_deref(),
            Some("legacy")
        );
        assert_eq!(puller("Service", &Node::from(&old)), Puller::default());
    }

    #[test]
    fn extracts_every_list_of_every_kind_in_document_order() {
        for (kind, path) in POD_SPEC_PATHS {
            let object = wrap(path, pod_spec());
            let found = extract(kind, &Node::from(&object)).expect("well formed");
            let names: Vec<_> = found.iter().map(|o| o.container.as_str()).collect();
            assert_eq!(names, ["init", "app", "sidecar", "debug"], "kind {kind}");
            let kinds: Vec<_> = found.iter().map(|o| o.kind).collect();
            assert_eq!(
                kinds,
                [
                    ContainerKind::Init,
                    ContainerKind::Container,
                    ContainerKind::Container,
                    ContainerKind::Ephemeral
                ]
            );
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{}.", path.join("."))
            };
            assert_eq!(
                found[2].path,
                format!("{prefix}containers[1].image"),
                "kind {kind}"
            );
            assert!(found.iter().all(|o| o.parse().is_ok()));
        }
    }

    #[test]
    fn cronjob_path_goes_through_job_template() {
        let object = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "alpine:3"}]}}}}}});
        let found = extract("CronJob", &Node::from(&object)).expect("well formed");
        assert_eq!(
            found[0].path,
            "spec.jobTemplate.spec.template.spec.containers[0].image"
        );
        assert_eq!(found[0].reference, "alpine:3");
    }

    #[test]
    fn kinds_without_pod_specs_have_no_images() {
        let no_images = |kind: &str, object: Value| extract(kind, &Node::from(&object));
        assert_eq!(
            no_images("Service", json!({"spec": {"containers": [{"image": "x"}]}})),
            Ok(Vec::new())
        );
        assert_eq!(no_images("ConfigMap", json!({"data": {}})), Ok(Vec::new()));
        assert_eq!(no_images("Pod", json!({"spec": {}})), Ok(Vec::new()));
    }

    /// A pod spec Kubernetes would not accept is never "no images": the field is named.
    #[test]
    fn malformed_pod_specs_name_the_field() {
        let cases = [
            ("Pod", json!({}), "spec is missing"),
            ("Pod", json!({"spec": null}), "spec is not an object"),
            (
                "Pod",
                json!({"spec": {"containers": "nginx:latest"}}),
                "spec.containers is not a list",
            ),
            (
                "Pod",
                json!({"spec": {"containers": null}}),
                "spec.containers is not a list",
            ),
            (
                "Pod",
                json!({"spec": {"containers": ["nginx:latest"]}}),
                "spec.containers[0] is not a container",
            ),
            (
                "Pod",
                json!({"spec": {"initContainers": [{"name": "i", "image": 42}]}}),
                "spec.initContainers[0].image is not a string",
            ),
            (
                "Pod",
                json!({"spec": {"containers": [{"name": 7, "image": "x"}]}}),
                "spec.containers[0].name is not a string",
            ),
            (
                "Deployment",
                json!({"spec": {}}),
                "spec.template is missing",
            ),
            (
                "Deployment",
                json!({"spec": {"template": null}}),
                "spec.template is not an object",
            ),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": []}}}}}),
                "spec.jobTemplate.spec.template.spec is not an object",
            ),
            (
                "EphemeralContainers",
                json!({"ephemeralContainers": {}}),
                "ephemeralContainers is not a list",
            ),
        ];
        for (kind, object, want) in cases {
            let err = extract(kind, &Node::from(&object)).expect_err(want);
            assert!(err.to_string().starts_with(want), "{kind}: {err}");
        }
    }

    #[test]
    fn keeps_unparseable_images_as_errors() {
        let object = json!({"spec": {"containers": [
            {"name": "bad", "image": "UPPER/case"},
            {"name": "empty", "image": ""},
            {"name": "none"}
        ]}});
        let found = extract("Pod", &Node::from(&object)).expect("well formed");
        assert_eq!(found.len(), 2);
        assert!(found[0].parse().is_err());
        assert_eq!(found[1].parse(), Err(ReferenceError::Empty));
    }
}
