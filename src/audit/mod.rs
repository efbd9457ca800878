//! The audit of what already runs: every Pod and workload kind verdict judges, and every
//! kind a loaded Gatekeeper constraint names, listed from the cluster and judged as it
//! stands with the same engine and policies as admission (a review of its CREATE,
//! Gatekeeper constraints at the audit point `audit.gatekeeper.sh`, so `dryrun` findings
//! are reported). `verdict audit` prints the result like `verdict check`; `serve
//! --audit-interval` runs it in the background ([`background`]) and writes PolicyReports
//! ([`reports`]). An object owned by another that is judged too (a ReplicaSet of a
//! Deployment, its Pods) is reported once, under its owner, unless its images or its
//! findings differ from the owner's.

pub mod background;
pub mod lease;
pub mod reports;

use crate::decision::{Finding, Origin};
use crate::report::{self, ObjectReport, Report};
use crate::review::{Placement, Reviewer};
use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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

/// How long one audit may take in all.
pub const DEADLINE: Duration = Duration::from_secs(600);

/// Objects listed in one page.
const PAGE: u32 = 500;

/// One object as the audit judged it.
#[derive(Debug)]
pub struct Judged {
    /// `apiVersion`, `kind`, `namespace` (absent for cluster-scoped objects), `name`, `uid`:
    /// the object reference of a PolicyReport result.
    pub reference: Value,
    /// The uid of its controller (`ownerReferences[].controller`), if any.
    pub controller: Option<String>,
    pub report: ObjectReport,
}

impl Judged {
    fn uid(&self) -> &str {
        self.reference["uid"].as_str().unwrap_or_default()
    }

    /// `(container, image)` of its pod spec, in order, as the review found them.
    fn images(&self) -> impl Iterator<Item = (&str, &str)> {
        self.report
            .verdict
            .images
            .iter()
            .map(|i| (i.container.as_str(), i.reference.as_str()))
    }
}

/// How fast the audit may go: `None` as fast as one task can; `Some(f)` at most the
/// fraction `f` of one worker's time (the background audit of `serve`, beside admission).
pub type Pace = Option<f64>;

/// Lists, judges and reports (see the module's description) by `deadline`.
pub async fn audit(
    client: &kube::Client,
    reviewer: &Reviewer,
    selection: &Selection,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let judged = judge_all(client, reviewer, selection, deadline, None).await?;
    let objects = folded(judged).into_iter().map(|j| j.report).collect();
    Ok(Report::of(objects, reviewer.policies().status().revision))
}

/// Lists every object of the selection, page by page, and judges each one as it stands.
pub async fn judge_all(
    client: &kube::Client,
    reviewer: &Reviewer,
    selection: &Selection,
    deadline: Instant,
    pace: Pace,
) -> anyhow::Result<Vec<Judged>> {
    let kinds = kinds(client, reviewer, selection).await?;
    let mut judged = Vec::new();
    let mut busy = Duration::ZERO;
    for (resource, capabilities) in &kinds {
        let Some(api) = api(client, resource, capabilities, selection) else {
            continue;
        };
        let mut first = ListParams::default().limit(PAGE);
        if let Some(selector) = &selection.selector {
            first = first.labels(selector);
        }
        let mut params = first.clone();
        let (kind_start, mut relists) = (judged.len(), 0);
        loop {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the audit ran past its deadline while judging {}",
                    resource.plural
                );
            }
            let page = match api.list(&params).await {
                Ok(page) => page,
                // The continue token expired (etcd compacted past it, a slow paced audit of a
                // large kind): list the kind again from its start, at most twice.
                Err(kube::Error::Api(s)) if s.code == 410 && relists < 2 => {
                    tracing::info!(kind = %resource.plural, "the list's continue token expired: listing the kind again");
                    judged.truncate(kind_start);
                    params = first.clone();
                    relists += 1;
                    continue;
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("listing {}", resource.plural))
                    )
                }
            };
            for item in page.items {
                let started = Instant::now();
                judged.push(judge_object(reviewer, resource, item, judged.len(), deadline).await?);
                busy += started.elapsed();
                // Paced: rest as long as the work took, times (1 - f) / f.
                if let Some(fraction) = pace {
                    if busy >= PACE_SLICE {
                        tokio::time::sleep(busy.mul_f64((1.0 - fraction) / fraction)).await;
                        busy = Duration::ZERO;
                    }
                } else {
                    // Between objects, the worker may serve others.
                    tokio::task::yield_now().await;
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
    }
    Ok(judged)
}

/// Work done between two rests of a paced audit.
const PACE_SLICE: Duration = Duration::from_millis(5);

/// One listed object, judged as a review of its CREATE.
async fn judge_object(
    reviewer: &Reviewer,
    resource: &ApiResource,
    item: DynamicObject,
    index: usize,
    deadline: Instant,
) -> anyhow::Result<Judged> {
    let mut object = serde_json::to_value(&item)?;
    object["apiVersion"] = json!(resource.api_version);
    object["kind"] = json!(resource.kind);
    let object = crate::cluster::inventory::kept(object);
    let metadata = &object["metadata"];
    let mut reference = json!({"apiVersion": resource.api_version, "kind": resource.kind,
                               "name": metadata["name"], "uid": metadata["uid"]});
    if let Some(namespace) = metadata["namespace"].as_str() {
        reference["namespace"] = json!(namespace);
    }
    let controller = metadata["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
        .map(str::to_string);
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "request": crate::manifest::create_request(object, index)});
    let report = report::judge_one(reviewer, &review, deadline, Placement::Audit).await;
    Ok(Judged {
        reference,
        controller,
        report,
    })
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

/// The API of one kind in the selection; `None` for a cluster-scoped kind when the
/// selection is one namespace.
fn api(
    client: &kube::Client,
    resource: &ApiResource,
    capabilities: &ApiCapabilities,
    selection: &Selection,
) -> Option<Api<DynamicObject>> {
    let namespaced = capabilities.scope == Scope::Namespaced;
    match (&selection.namespace, namespaced) {
        (Some(ns), true) => Some(Api::namespaced_with(client.clone(), ns, resource)),
        (Some(_), false) => None,
        (None, _) => Some(Api::all_with(client.clone(), resource)),
    }
}

/// The objects to report: all but those whose controller was judged too with the same
/// images and the same findings (they are reported once, under the owner). Findings are
/// compared by severity, reason code and origin, not by message, which names the object.
/// Nothing an author writes can hide an object: ownerReferences only fold an object into
/// one that says the same.
pub fn folded(judged: Vec<Judged>) -> Vec<Judged> {
    let by_uid: BTreeMap<&str, &Judged> = judged
        .iter()
        .filter(|j| !j.uid().is_empty())
        .map(|j| (j.uid(), j))
        .collect();
    let hidden: BTreeSet<usize> = judged
        .iter()
        .enumerate()
        .filter(|(_, j)| {
            j.controller
                .as_deref()
                .and_then(|uid| by_uid.get(uid))
                .is_some_and(|owner| {
                    owner.uid() != j.uid()
                        && owner.images().eq(j.images())
                        && outcome(&owner.report) == outcome(&j.report)
                })
        })
        .map(|(i, _)| i)
        .collect();
    judged
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !hidden.contains(i))
        .map(|(_, j)| j)
        .collect()
}

/// What an object's findings say, without the words.
fn outcome(report: &ObjectReport) -> BTreeSet<(String, String, String)> {
    report
        .verdict
        .messages
        .0
        .iter()
        .map(|f: &Finding| {
            let origin = match &f.origin {
                Origin::Image {
                    container,
                    image,
                    policy,
                    ..
                } => {
                    format!("{container} {image} {policy:?}")
                }
                Origin::Constraint {
                    constraint,
                    kind,
                    enforcement_action,
                    ..
                } => format!("{kind}/{constraint} {enforcement_action}"),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            (format!("{:?}", f.severity), f.code.to_string(), origin)
        })
        .collect()
}

#[cfg(test)]
impl Judged {
    /// A judged object for tests: `kind` `name` (also its uid) in `namespace`, with `findings`.
    pub(crate) fn sample(
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        findings: Vec<Finding>,
    ) -> Self {
        let mut reference = json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": name});
        if let Some(ns) = namespace {
            reference["namespace"] = json!(ns);
        }
        let messages = crate::decision::Findings(findings);
        Judged {
            reference,
            controller: None,
            report: ObjectReport {
                object: format!("{kind} {name}"),
                kind: kind.to_string(),
                namespace: namespace.unwrap_or_default().to_string(),
                name: name.to_string(),
                operation: "CREATE".to_string(),
                verdict: crate::review::Verdict {
                    decision: messages.decision(),
                    messages,
                    images: Vec::new(),
                    timings: crate::review::Timings::default(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Decision, ReasonCode, Severity};

    fn judged(kind: &str, uid: &str, owner: Option<&str>, image: &str, codes: &[&str]) -> Judged {
        let findings = codes
            .iter()
            .map(|code| {
                Finding::builtin(
                    Severity::Deny,
                    ReasonCode::Custom(code.to_string()),
                    format!("{kind} {uid} is wrong"),
                )
            })
            .collect();
        let occurrence = crate::images::ImageOccurrence {
            container: "c".into(),
            kind: crate::images::ContainerKind::Container,
            path: "spec.containers[0].image".into(),
            reference: image.into(),
        };
        let facts =
            crate::verify::ImageFacts::from_parsed(&occurrence, occurrence.parse().as_ref());
        let mut judged = Judged {
            controller: owner.map(str::to_string),
            ..Judged::sample(kind, None, uid, findings)
        };
        judged.report.verdict.images = vec![std::sync::Arc::new(facts)];
        judged
    }

    #[test]
    fn owned_objects_are_reported_under_their_owner_unless_they_differ() {
        let objects = vec![
            judged("Deployment", "d", None, "nginx:1", &["LATEST"]),
            judged("ReplicaSet", "rs", Some("d"), "nginx:1", &["LATEST"]),
            judged("Pod", "p1", Some("rs"), "nginx:1", &["LATEST"]),
            // Other images, or the same images with other findings, are not the owner's.
            judged("Pod", "p2", Some("rs"), "nginx:2", &["LATEST"]),
            judged(
                "Pod",
                "p3",
                Some("rs"),
                "nginx:1",
                &["LATEST", "PRIVILEGED"],
            ),
            judged("Pod", "p4", Some("rs"), "nginx:1", &[]),
            judged("Pod", "lonely", Some("gone"), "nginx:1", &["LATEST"]),
            judged("Pod", "itself", Some("itself"), "nginx:1", &[]),
        ];
        assert_eq!(objects[3].report.verdict.decision, Decision::Deny);
        let names: Vec<String> = folded(objects).into_iter().map(|j| j.report.name).collect();
        assert_eq!(names, ["d", "p2", "p3", "p4", "lonely", "itself"]);
    }
}
