//! `verdict audit`: what already runs, judged with the same engine and policies as
//! admission. Lists every Pod and workload kind verdict judges, and every kind a loaded
//! Gatekeeper constraint names, from the cluster; judges each object as it stands (a
//! review of its CREATE, Gatekeeper constraints at the audit point `audit.gatekeeper.sh`,
//! so `dryrun` findings are reported); reports like `verdict check`. An object owned by
//! another that is judged too (a ReplicaSet of a Deployment, its Pods) is reported once,
//! under its owner, unless its pod template's images differ from the owner's.

use crate::report::{self, Report};
use crate::review::{Placement, Reviewer};
use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What to audit.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this namespace (cluster-scoped kinds are then left out).
    pub namespace: Option<String>,
    /// A label selector, as `kubectl get -l` takes it.
    pub selector: Option<String>,
    /// Only these kinds (names as `kubectl` prints them, e.g. `Deployment`; any case).
    pub kinds: Vec<String>,
}

/// The kinds verdict reads images from (`images::POD_SPEC_PATHS`), by API group.
const WORKLOADS: [(&str, &str); 9] = [
    ("", "Pod"),
    ("", "ReplicationController"),
    ("", "PodTemplate"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// Objects listed in one page.
const PAGE: u32 = 500;

/// Lists, judges and reports (see the module's description) by `deadline`.
pub async fn audit(
    client: &kube::Client,
    reviewer: &Reviewer,
    selection: &Selection,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let kinds = kinds(client, reviewer, selection).await?;
    let mut objects = Vec::new();
    for (resource, capabilities) in &kinds {
        objects.extend(list(client, resource, capabilities, selection).await?);
    }
    let kept = reported(&objects);
    let reviews: Vec<Value> = kept
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "request": crate::manifest::create_request(object.clone(), i)})
        })
        .collect();
    Ok(report::judge(reviewer, reviews, deadline, Placement::Audit).await)
}

/// The kinds to list: the workloads and what the constraints name (or `selection.kinds`),
/// each at the most stable version the API server serves; kinds it does not serve are
/// left out.
async fn kinds(
    client: &kube::Client,
    reviewer: &Reviewer,
    selection: &Selection,
) -> anyhow::Result<Vec<(ApiResource, ApiCapabilities)>> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the API server's kinds")?;
    let mut wanted: BTreeSet<(String, String)> = WORKLOADS
        .iter()
        .map(|(g, k)| (g.to_string(), k.to_string()))
        .collect();
    let policies = reviewer.policies().current();
    let mut any_group_kinds = BTreeSet::new();
    for constraint in policies.gatekeeper.constraints() {
        for (groups, kinds) in constraint.kinds() {
            for kind in kinds.iter().filter(|k| *k != "*") {
                if groups.is_empty() || groups.iter().any(|g| g == "*") {
                    any_group_kinds.insert(kind.clone());
                }
                for group in groups.iter().filter(|g| *g != "*") {
                    wanted.insert((group.clone(), kind.clone()));
                }
            }
        }
    }
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.resources_by_stability() {
            let named = if selection.kinds.is_empty() {
                wanted.contains(&(resource.group.clone(), resource.kind.clone()))
                    || any_group_kinds.contains(&resource.kind)
            } else {
                selection
                    .kinds
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&resource.kind) || *k == resource.plural)
            };
            if named && capabilities.supports_operation(kube::discovery::verbs::LIST) {
                found.push((resource, capabilities));
            }
        }
    }
    if !selection.kinds.is_empty() && found.is_empty() {
        anyhow::bail!(
            "the API server serves none of the kinds {:?}",
            selection.kinds
        );
    }
    Ok(found)
}

/// Every object of one kind in the selection, whole but for `metadata.managedFields`, with
/// `apiVersion` and `kind` set.
async fn list(
    client: &kube::Client,
    resource: &ApiResource,
    capabilities: &ApiCapabilities,
    selection: &Selection,
) -> anyhow::Result<Vec<Value>> {
    let namespaced = capabilities.scope == Scope::Namespaced;
    let api: Api<DynamicObject> = match (&selection.namespace, namespaced) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, resource),
        (Some(_), false) => return Ok(Vec::new()),
        (None, _) => Api::all_with(client.clone(), resource),
    };
    let mut params = ListParams::default().limit(PAGE);
    if let Some(selector) = &selection.selector {
        params = params.labels(selector);
    }
    let mut out = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .with_context(|| format!("listing {}", resource.plural))?;
        for item in page.items {
            let mut object = serde_json::to_value(&item)?;
            object["apiVersion"] = json!(resource.api_version);
            object["kind"] = json!(resource.kind);
            out.push(crate::cluster::inventory::kept(object));
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}

/// The objects to report: all but those whose controller is listed too and whose images
/// are its pod template's (they are reported once, under the owner).
fn reported(objects: &[Value]) -> Vec<&Value> {
    let by_uid: BTreeMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o["metadata"]["uid"].as_str()?, o)))
        .collect();
    objects
        .iter()
        .filter(|object| {
            let owner = object["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == true)
                .and_then(|r| by_uid.get(r["uid"].as_str().unwrap_or_default()));
            match owner {
                Some(owner) => images(object) != images(owner),
                None => true,
            }
        })
        .collect()
}

/// `(container name, image)` of every container of an object's pod spec, in order; for a
/// Pod its own, for a workload its template's.
fn images(object: &Value) -> Vec<(String, String)> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let node = crate::json::Node::from(object);
    crate::images::extract(kind, &node)
        .map(|found| {
            found
                .into_iter()
                .map(|o| (o.container, o.reference))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &str, uid: &str, owner: Option<&str>, image: &str) -> Value {
        let spec = json!({"containers": [{"name": "c", "image": image}]});
        let spec = if kind == "Pod" {
            spec
        } else {
            json!({"template": {"spec": spec}})
        };
        let owners: Vec<Value> = owner
            .map(|uid| json!({"uid": uid, "controller": true, "kind": "X", "name": "x", "apiVersion": "v1"}))
            .into_iter()
            .collect();
        json!({"apiVersion": "v1", "kind": kind,
               "metadata": {"name": uid, "uid": uid, "ownerReferences": owners}, "spec": spec})
    }

    #[test]
    fn owned_objects_are_reported_under_their_owner_unless_they_differ() {
        let objects = vec![
            object("Deployment", "d", None, "nginx:1"),
            object("ReplicaSet", "rs", Some("d"), "nginx:1"),
            object("Pod", "p1", Some("rs"), "nginx:1"),
            object("Pod", "p2", Some("rs"), "nginx:2"),
            object("Pod", "lonely", Some("gone"), "nginx:1"),
        ];
        let names: Vec<&str> = reported(&objects)
            .into_iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["d", "p2", "lonely"]);
    }
}
