//! The audit's results as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno and
//! Kubewarden write and Policy Reporter reads: one `PolicyReport` named `verdict` in each
//! namespace with judged objects, one `ClusterPolicyReport` named `verdict` for
//! cluster-scoped objects. A result per finding (`fail`: a denial or a `dryrun` finding,
//! `warn`: a warning, `error`: the audit could not judge); objects without findings only
//! count as `pass` in the summary. Each run replaces a report's results and summary with a
//! resourceVersion-checked update, keeps the timestamp of results that did not change,
//! writes nothing when nothing changed, and deletes verdict's reports of namespaces where
//! nothing is judged any more.

use super::Judged;
use crate::decision::{Finding, Origin, ReasonCode, Severity};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::discovery::ApiResource;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The name of verdict's report in each namespace, and of its cluster report.
pub const NAME: &str = "verdict";
/// The label on every report verdict writes; only reports with it are changed or deleted.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "verdict");
/// The most results one report holds (etcd refuses objects over 1.5 MiB, see also
/// [`MAX_BYTES`]); the summary still counts every result. Failures and errors come first.
pub const MAX_RESULTS: usize = 1_000;
/// The most bytes of results one report holds: well under etcd's 1.5 MiB request limit.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The longest message a result carries, in bytes.
const MAX_MESSAGE: usize = 1_024;
/// The longest property value (an image reference, a file name), in bytes.
const MAX_PROPERTY: usize = 512;

/// The reports one audit wants: `results` and `summary` by namespace (`""`: the cluster
/// report).
pub type Desired = BTreeMap<String, Value>;

/// What [`publish`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Reports not written because one of the same name is not verdict's.
    pub foreign: usize,
    /// Reports not written this time: the namespace went or is going, or the report was
    /// changed since it was listed (the next audit writes it).
    pub skipped: usize,
}

/// A write refused for a passing reason: the namespace is gone or terminating, or the
/// report changed or went since it was listed.
fn passing(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            let passing = s.code == 404
                || (s.code == 409 && s.reason == "Conflict")
                || (s.code == 403 && s.message.contains("being terminated"));
            if passing {
                tracing::info!(code = s.code, message = %s.message, "a PolicyReport was not written this time");
            }
            passing
        }
        _ => false,
    }
}

/// The reports of the judged (and folded) objects. Results carry no timestamp yet; files
/// are named relative to the policies folder `root`.
pub fn desired(judged: &[Judged], root: &Path) -> Desired {
    let mut results: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut passed: BTreeMap<String, u64> = BTreeMap::new();
    for object in judged {
        let namespace = object.reference["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let findings = &object.report.verdict.messages.0;
        *passed.entry(namespace.clone()).or_default() += u64::from(findings.is_empty());
        let entry = results.entry(namespace).or_default();
        entry.extend(findings.iter().map(|f| result(f, &object.reference, root)));
    }
    passed
        .into_iter()
        .map(|(namespace, pass)| {
            let mut results = results.remove(&namespace).unwrap_or_default();
            let count = |r: &str| results.iter().filter(|x| x["result"] == r).count();
            let summary = json!({"pass": pass, "fail": count("fail"), "warn": count("warn"),
                                 "error": count("error"), "skip": 0});
            results.sort_by_cached_key(|r| {
                (
                    rank(r["result"].as_str().unwrap_or_default()),
                    r["resources"].to_string(),
                    r["policy"].to_string(),
                    r["rule"].to_string(),
                    r["message"].to_string(),
                )
            });
            results.dedup();
            // At most MAX_RESULTS, and MAX_BYTES of them (each with a timestamp to come).
            let mut bytes = 0;
            let kept = results
                .iter()
                .take(MAX_RESULTS)
                .take_while(|r| {
                    bytes += r.to_string().len() + 64;
                    bytes <= MAX_BYTES
                })
                .count();
            results.truncate(kept);
            (namespace, json!({"results": results, "summary": summary}))
        })
        .collect()
}

fn rank(result: &str) -> u8 {
    match result {
        "fail" => 0,
        "error" => 1,
        _ => 2,
    }
}

/// One finding as a PolicyReport result (without `timestamp`).
fn result(finding: &Finding, reference: &Value, root: &Path) -> Value {
    let mut properties = Map::new();
    // Values a Pod author writes (an image reference) are cut too: no result may crowd
    // the others out of the report's byte budget.
    let mut property = |key: &str, value: &str| {
        properties.insert(key.to_string(), json!(truncated(value, MAX_PROPERTY)));
    };
    property("code", finding.code.as_str());
    property(
        "severity",
        match finding.severity {
            Severity::Deny => "deny",
            Severity::Warn => "warn",
            Severity::Dryrun => "dryrun",
        },
    );
    match &finding.origin {
        Origin::Constraint {
            file,
            enforcement_action,
            ..
        } => {
            property("enforcementAction", enforcement_action);
            property("file", &relative(root, file));
        }
        Origin::Image {
            container,
            image,
            digest,
            file,
            ..
        } => {
            property("container", container);
            property("image", image);
            if let Some(digest) = digest {
                property("digest", digest);
            }
            if let Some(file) = file {
                property("file", &relative(root, file));
            }
        }
        Origin::Policy { .. } | Origin::Builtin => {}
    }
    let (policy, rule) = policy_and_rule(finding, root);
    let outcome = if errs(&finding.code) {
        "error"
    } else {
        match finding.severity {
            Severity::Deny | Severity::Dryrun => "fail",
            Severity::Warn => "warn",
        }
    };
    json!({
        "source": "verdict",
        "policy": policy,
        "rule": rule,
        "result": outcome,
        "message": truncated(&finding.message, MAX_MESSAGE),
        "properties": properties,
        "resources": [reference],
    })
}

/// A result's `policy` and `rule`: the policy file(s) and the Rego rule; the constraint
/// (`Kind/name`) and its template; the image policy; or `verdict` and the reason code for a
/// check of verdict's own.
pub fn policy_and_rule(finding: &Finding, root: &Path) -> (String, String) {
    match &finding.origin {
        Origin::Policy { files, rule } => (
            files
                .iter()
                .map(|f| relative(root, f))
                .collect::<Vec<_>>()
                .join(", "),
            rule.clone(),
        ),
        Origin::Constraint {
            constraint,
            kind,
            template,
            ..
        } => (format!("{kind}/{constraint}"), template.clone()),
        Origin::Image {
            policy: Some(policy),
            ..
        } => (policy.clone(), "image-policy".to_string()),
        Origin::Image { .. } | Origin::Builtin => ("verdict".to_string(), finding.code.to_string()),
    }
}

/// `file` relative to `root` when it is inside it.
fn relative(root: &Path, file: &str) -> String {
    Path::new(file)
        .strip_prefix(root)
        .map_or_else(|_| file.to_string(), |p| p.display().to_string())
}

/// Codes that say the audit could not judge, rather than that the object is wrong.
fn errs(code: &ReasonCode) -> bool {
    matches!(
        code,
        ReasonCode::PolicyError
            | ReasonCode::PolicyTimeout
            | ReasonCode::Timeout
            | ReasonCode::InternalError
            | ReasonCode::InventoryNotSynced
            | ReasonCode::RegistryUnreachable
            | ReasonCode::RegistryError
    )
}

/// `text` cut to at most `max` bytes (and `...`).
fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn resource(cluster: bool) -> ApiResource {
    let (kind, plural) = if cluster {
        ("ClusterPolicyReport", "clusterpolicyreports")
    } else {
        ("PolicyReport", "policyreports")
    };
    ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Writes `desired` (timestamps `now`, in seconds since the epoch, on new or changed
/// results) and deletes verdict's reports that it no longer holds.
pub async fn publish(client: &kube::Client, desired: Desired, now: i64) -> anyhow::Result<Written> {
    let selector = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let mut existing: BTreeMap<String, DynamicObject> = BTreeMap::new();
    for cluster in [false, true] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource(cluster));
        let listed = api.list(&selector).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
                "the API server does not serve {}s (wgpolicyk8s.io/v1alpha2): install the CRD \
                 from deploy/crds/wgpolicyk8s.io.yaml",
                resource(cluster).kind
            ),
            e => anyhow::Error::new(e).context(format!("listing {}s", resource(cluster).kind)),
        })?;
        for report in listed.items {
            let namespace = report.metadata.namespace.clone().unwrap_or_default();
            if report.metadata.name.as_deref() == Some(NAME) && cluster == namespace.is_empty() {
                existing.insert(namespace, report);
            }
        }
    }
    let mut written = Written::default();
    for (namespace, mut body) in desired {
        let cluster = namespace.is_empty();
        let api: Api<DynamicObject> = if cluster {
            Api::all_with(client.clone(), &resource(true))
        } else {
            Api::namespaced_with(client.clone(), &namespace, &resource(false))
        };
        let old = existing.remove(&namespace);
        stamp(&mut body, old.as_ref().map(|o| &o.data), now);
        match old {
            Some(old) if same(&old.data, &body) => written.unchanged += 1,
            Some(mut old) => {
                old.data["results"] = body["results"].take();
                old.data["summary"] = body["summary"].take();
                match api.replace(NAME, &PostParams::default(), &old).await {
                    Ok(_) => written.updated += 1,
                    Err(e) if passing(&e) => written.skipped += 1,
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("updating {}", described(&namespace))))
                    }
                }
            }
            None => {
                let report = DynamicObject {
                    types: Some(kube::api::TypeMeta {
                        api_version: resource(cluster).api_version,
                        kind: resource(cluster).kind,
                    }),
                    metadata: ObjectMeta {
                        name: Some(NAME.to_string()),
                        namespace: (!cluster).then(|| namespace.clone()),
                        labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
                        ..ObjectMeta::default()
                    },
                    data: body,
                };
                match api.create(&PostParams::default(), &report).await {
                    Ok(_) => written.created += 1,
                    // A report of that name without verdict's label: someone else's, left
                    // alone (and a namespace's user cannot fail the whole audit with one).
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        tracing::warn!(report = %described(&namespace), "a report of this name exists without the label app.kubernetes.io/managed-by=verdict: not written");
                        written.foreign += 1;
                    }
                    Err(e) if passing(&e) => written.skipped += 1,
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("creating {}", described(&namespace))))
                    }
                }
            }
        }
    }
    for (namespace, _) in existing {
        let api: Api<DynamicObject> = if namespace.is_empty() {
            Api::all_with(client.clone(), &resource(true))
        } else {
            Api::namespaced_with(client.clone(), &namespace, &resource(false))
        };
        match api.delete(NAME, &DeleteParams::default()).await {
            Ok(_) => written.deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("deleting {}", described(&namespace)))
                )
            }
        }
    }
    Ok(written)
}

fn described(namespace: &str) -> String {
    if namespace.is_empty() {
        format!("ClusterPolicyReport {NAME}")
    } else {
        format!("PolicyReport {namespace}/{NAME}")
    }
}

/// Gives each result of `body` the timestamp of the same result in `old`, else `now`.
fn stamp(body: &mut Value, old: Option<&Value>, now: i64) {
    let mut before: BTreeMap<String, Value> = BTreeMap::new();
    for result in old
        .and_then(|o| o["results"].as_array())
        .into_iter()
        .flatten()
    {
        let mut bare = result.clone();
        if let Some(at) = bare.as_object_mut().and_then(|o| o.remove("timestamp")) {
            before.insert(canonical(&bare), at);
        }
    }
    for result in body["results"].as_array_mut().into_iter().flatten() {
        let at = before
            .get(&canonical(result))
            .cloned()
            .unwrap_or_else(|| json!({"seconds": now, "nanos": 0}));
        result["timestamp"] = at;
    }
}

/// One text for equal values, whatever order the API server gives their keys in.
fn canonical(value: &Value) -> String {
    serde_json_canonicalizer::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// Whether a report already says what `body` says.
fn same(old: &Value, body: &Value) -> bool {
    let results = |v: &Value| v.get("results").cloned().unwrap_or_else(|| json!([]));
    results(old) == results(body) && old.get("summary") == body.get("summary")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(namespace: Option<&str>, name: &str, findings: Vec<Finding>) -> Judged {
        Judged::sample("Pod", namespace, name, findings)
    }

    #[test]
    fn findings_become_results_by_namespace_and_passes_are_counted() {
        let image = Finding {
            severity: Severity::Deny,
            code: ReasonCode::NoSignature,
            message: "no signature".into(),
            origin: Origin::Image {
                container: "web".into(),
                image: "nginx:1".into(),
                digest: Some("sha256:ab".into()),
                policy: Some("release".into()),
                file: Some("/policies/images/release.yaml".into()),
            },
        };
        let warn = Finding {
            severity: Severity::Warn,
            code: ReasonCode::Custom("TAG".into()),
            message: "tag".into(),
            origin: Origin::Policy {
                files: vec!["/policies/images/tags.rego".into()],
                rule: "data.tags.warn".into(),
            },
        };
        let error = Finding::builtin(Severity::Deny, ReasonCode::PolicyTimeout, "slow");
        let desired = desired(
            &[
                judged(Some("a"), "ok", Vec::new()),
                judged(Some("a"), "bad", vec![warn, image]),
                judged(None, "node-thing", vec![error]),
            ],
            Path::new("/policies"),
        );
        assert_eq!(desired.keys().collect::<Vec<_>>(), ["", "a"]);
        let a = &desired["a"];
        assert_eq!(
            a["summary"],
            json!({"pass": 1, "fail": 1, "warn": 1, "error": 0, "skip": 0})
        );
        let first = &a["results"][0];
        assert_eq!(
            (&first["policy"], &first["rule"], &first["result"]),
            (&json!("release"), &json!("image-policy"), &json!("fail"))
        );
        assert_eq!(
            first["properties"],
            json!({"code": "NO_SIGNATURE", "severity": "deny", "container": "web",
                   "image": "nginx:1", "digest": "sha256:ab", "file": "images/release.yaml"})
        );
        assert_eq!(first["resources"][0]["namespace"], "a");
        assert_eq!(a["results"][1]["result"], "warn");
        assert_eq!(desired[""]["results"][0]["result"], "error");
        assert_eq!(desired[""]["summary"]["pass"], 0);
    }

    #[test]
    fn unchanged_results_keep_their_timestamp() {
        let finding = Finding::builtin(Severity::Deny, ReasonCode::PolicyDenied, "no");
        let mut before = desired(
            &[judged(Some("a"), "p", vec![finding.clone()])],
            Path::new("/"),
        );
        let mut old = before.remove("a").expect("a report for a");
        stamp(&mut old, None, 100);
        let mut again = desired(&[judged(Some("a"), "p", vec![finding])], Path::new("/"))
            .remove("a")
            .expect("a report for a");
        stamp(&mut again, Some(&old), 200);
        assert!(same(&old, &again));
        assert_eq!(again["results"][0]["timestamp"]["seconds"], 100);
        let mut changed = desired(&[judged(Some("a"), "p", Vec::new())], Path::new("/"))
            .remove("a")
            .expect("a report for a");
        stamp(&mut changed, Some(&old), 200);
        assert!(!same(&old, &changed));
    }

    #[test]
    fn a_report_stays_under_etcds_limit_and_counts_every_result() {
        let objects: Vec<Judged> = (0..3_000)
            .map(|i| {
                let finding =
                    Finding::builtin(Severity::Deny, ReasonCode::PolicyDenied, "x".repeat(5_000));
                judged(Some("a"), &format!("pod-{i}"), vec![finding])
            })
            .collect();
        let mut report = desired(&objects, Path::new("/"))
            .remove("a")
            .expect("a report for a");
        assert_eq!(report["summary"]["fail"], 3_000);
        let kept = report["results"].as_array().expect("results").len();
        assert!(kept > 100 && kept < MAX_RESULTS, "{kept}");
        stamp(&mut report, None, 1_800_000_000);
        assert!(
            report.to_string().len() <= MAX_BYTES,
            "{}",
            report.to_string().len()
        );
    }

    #[test]
    fn a_pod_authors_long_image_reference_cannot_crowd_out_other_results() {
        let long = Finding {
            severity: Severity::Deny,
            code: ReasonCode::InvalidImageRef,
            message: "bad".into(),
            origin: Origin::Image {
                container: "c".into(),
                image: "a".repeat(2_000_000),
                digest: None,
                policy: None,
                file: None,
            },
        };
        let other = Finding::builtin(Severity::Deny, ReasonCode::PolicyDenied, "no");
        let report = desired(
            &[
                judged(Some("a"), "aaa", vec![long]),
                judged(Some("a"), "zzz", vec![other]),
            ],
            Path::new("/"),
        )
        .remove("a")
        .expect("a report for a");
        assert_eq!(report["results"].as_array().expect("results").len(), 2);
        let image = report["results"][0]["properties"]["image"]
            .as_str()
            .expect("image");
        assert!(image.len() <= MAX_PROPERTY + 3, "{}", image.len());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE);
        let cut = truncated(&message, MAX_MESSAGE);
        assert!(cut.len() <= MAX_MESSAGE + 3 && cut.ends_with("..."));
    }
}
