//! The deployment verdict ships: every manifest parses into the typed k8s-openapi structs,
//! the webhook covers exactly the kinds verdict reads images from, the Deployment is locked
//! down, and the policies ConfigMap carries the whole policies folder.
//!
//! The raw files of `deploy/base` are always checked. `make test` also renders every
//! kustomize overlay and the Helm chart (with Helm itself) and validates them against the
//! Kubernetes schemas (`deploy/test/render.py`), then points `VERDICT_DEPLOY_RENDERED` at
//! the output so the renderings are checked here too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One rendering: its name and its documents.
struct Rendering {
    name: String,
    docs: Vec<Value>,
}

fn yaml_docs(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

fn renderings() -> Vec<Rendering> {
    let base = common::repo().join("deploy/base");
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(&base).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            raw.extend(yaml_docs(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    let mut all = vec![Rendering {
        name: "deploy/base files".to_string(),
        docs: raw,
    }];
    match std::env::var_os("VERDICT_DEPLOY_RENDERED") {
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (run deploy/test/render.py)", dir.to_string_lossy()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(files.len() >= 8, "expected every overlay and chart rendering, got {files:?}");
            for path in files {
                all.push(Rendering {
                    name: path.file_stem().unwrap().to_string_lossy().to_string(),
                    docs: yaml_docs(&std::fs::read_to_string(&path).unwrap()),
                });
            }
        }
        None => eprintln!("VERDICT_DEPLOY_RENDERED unset: checking deploy/base files only (make test renders all)"),
    }
    all
}

fn of_kind<'a>(rendering: &'a Rendering, kind: &str) -> Vec<&'a Value> {
    rendering
        .docs
        .iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// Parses `doc` into `T`. kustomize wraps long base64 values (Secret data, caBundle) at 70
/// columns; the API server's decoder skips those newlines, k8s-openapi's does not, so they
/// are dropped first.
fn typed<T: serde::de::DeserializeOwned>(rendering: &Rendering, doc: &Value) -> T {
    let mut doc = doc.clone();
    let unwrap = |v: &mut Value| {
        if let Some(s) = v.as_str() {
            *v = Value::from(s.replace('\n', ""));
        }
    };
    if doc["kind"] == "Secret" {
        if let Some(data) = doc["data"].as_object_mut() {
            data.values_mut().for_each(unwrap);
        }
    }
    if let Some(webhooks) = doc["webhooks"].as_array_mut() {
        for webhook in webhooks {
            unwrap(&mut webhook["clientConfig"]["caBundle"]);
        }
    }
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: {} {} does not parse: {e}",
            rendering.name, doc["kind"], doc["metadata"]["name"]
        )
    })
}

#[test]
fn every_built_in_document_parses_into_its_typed_struct() {
    for rendering in renderings() {
        assert!(!rendering.docs.is_empty(), "{}", rendering.name);
        for doc in &rendering.docs {
            match doc["kind"].as_str().unwrap() {
                "Namespace" => drop(typed::<Namespace>(&rendering, doc)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(&rendering, doc)),
                "Deployment" => drop(typed::<Deployment>(&rendering, doc)),
                "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(&rendering, doc)),
                "Service" => drop(typed::<Service>(&rendering, doc)),
                "ConfigMap" => drop(typed::<ConfigMap>(&rendering, doc)),
                "Secret" => drop(typed::<Secret>(&rendering, doc)),
                "ClusterRole" => drop(typed::<ClusterRole>(&rendering, doc)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&rendering, doc)),
                "Role" => drop(typed::<Role>(&rendering, doc)),
                "RoleBinding" => drop(typed::<RoleBinding>(&rendering, doc)),
                "CustomResourceDefinition" => {
                    drop(typed::<CustomResourceDefinition>(&rendering, doc))
                }
                "ValidatingWebhookConfiguration" => {
                    drop(typed::<ValidatingWebhookConfiguration>(&rendering, doc))
                }
                // Custom resources: checked for shape by render.py.
                "Certificate" | "Issuer" | "ServiceMonitor" | "PrometheusRule" => {
                    assert!(doc["spec"].is_object(), "{}: {doc}", rendering.name)
                }
                other => panic!("{}: unexpected kind {other}", rendering.name),
            }
        }
    }
}

/// The resource each kind of `POD_SPEC_PATHS` arrives as.
fn resource_of(kind: &str) -> &'static str {
    match kind {
        "Pod" => "pods",
        "EphemeralContainers" => "pods/ephemeralcontainers",
        "PodTemplate" => "podtemplates",
        "ReplicationController" => "replicationcontrollers",
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "Job" => "jobs",
        "CronJob" => "cronjobs",
        other => {
            panic!("POD_SPEC_PATHS has {other}: add its resource here and to the webhook rules")
        }
    }
}

#[test]
fn the_webhook_covers_exactly_the_kinds_verdict_reads_images_from() {
    let wanted: BTreeSet<&str> = verdict::images::POD_SPEC_PATHS
        .iter()
        .map(|(kind, _)| resource_of(kind))
        .collect();
    let mut seen = 0;
    for rendering in renderings() {
        for doc in of_kind(&rendering, "ValidatingWebhookConfiguration") {
            seen += 1;
            let config: ValidatingWebhookConfiguration = typed(&rendering, doc);
            let webhooks = config.webhooks.unwrap();
            assert_eq!(webhooks.len(), 1, "{}", rendering.name);
            let webhook = &webhooks[0];
            let mut covered = BTreeSet::new();
            for rule in webhook.rules.as_ref().unwrap() {
                let operations: BTreeSet<&str> = rule
                    .operations
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                assert_eq!(
                    operations,
                    BTreeSet::from(["CREATE", "UPDATE"]),
                    "{}",
                    rendering.name
                );
                covered.extend(rule.resources.iter().flatten().map(String::as_str));
            }
            // Renderings that register more kinds (for Gatekeeper constraints) add exactly
            // Services, Namespaces and Ingresses.
            let mut expected = wanted.clone();
            if rendering.name.contains("more-kinds")
                || rendering.name == "helm-cert-manager-monitoring"
            {
                expected.extend(["services", "namespaces", "ingresses"]);
            }
            assert_eq!(covered, expected, "{}", rendering.name);
            assert_eq!(webhook.side_effects, "None");
            assert_eq!(webhook.admission_review_versions, ["v1"]);
            assert!(webhook
                .timeout_seconds
                .is_some_and(|t| (1..=30).contains(&t)));
            let policy = webhook.failure_policy.as_deref().unwrap();
            if rendering.name.contains("warn-only") {
                assert_eq!(policy, "Ignore", "{}", rendering.name);
            } else if !rendering.name.contains("monitoring") {
                assert_eq!(policy, "Fail", "{}", rendering.name);
            }
            let exempt: Vec<&str> = webhook
                .namespace_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref())
                .into_iter()
                .flatten()
                .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
                .flat_map(|e| e.values.iter().flatten().map(String::as_str))
                .collect();
            for namespace in ["verdict-system", "kube-system"] {
                assert!(
                    exempt.contains(&namespace),
                    "{}: {exempt:?}",
                    rendering.name
                );
            }
            let service = webhook.client_config.service.as_ref().unwrap();
            assert_eq!(service.path.as_deref(), Some("/validate"));
        }
    }
    assert!(seen > 0);
}

#[test]
fn the_deployment_is_locked_down_and_probed_on_the_metrics_port() {
    for rendering in renderings() {
        for doc in of_kind(&rendering, "Deployment") {
            let deployment: Deployment = typed(&rendering, doc);
            let spec = deployment.spec;
            let name = &rendering.name;
            assert!(spec.replicas.unwrap() >= 2, "{name}");
            let pod = spec.template.spec.unwrap();
            assert!(pod.affinity.unwrap().pod_anti_affinity.is_some(), "{name}");
            // The token is mounted exactly when verdict has a ClusterRole to use it with.
            let cluster = !of_kind(&rendering, "ClusterRole").is_empty();
            assert_eq!(pod.automount_service_account_token, Some(cluster), "{name}");
            let security = pod.security_context.unwrap();
            assert_eq!(security.run_as_non_root, Some(true), "{name}");
            assert_eq!(
                security.seccomp_profile.unwrap().type_,
                "RuntimeDefault",
                "{name}"
            );
            let container = &pod.containers[0];
            let context = container.security_context.as_ref().unwrap();
            assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(
                context.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..]),
                "{name}"
            );
            let resources = container.resources.as_ref().unwrap();
            for set in [&resources.requests, &resources.limits] {
                let set = set.as_ref().unwrap();
                assert!(
                    set.contains_key("cpu") && set.contains_key("memory"),
                    "{name}"
                );
            }
            for probe in [&container.liveness_probe, &container.readiness_probe] {
                let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
                assert_eq!(
                    get.port,
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "metrics".into()
                    ),
                    "{name}"
                );
            }
            assert!(
                of_kind(&rendering, "PodDisruptionBudget").len() == 1,
                "{name}"
            );
        }
    }
}

/// The non-test files of the shipped policies folder, relative to it.
fn shipped_policy_files() -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if !rel.ends_with("_test.rego") && !rel.ends_with(".md") {
                out.insert(rel);
            }
        }
    }
    let root = common::repo().join("policies");
    let mut files = BTreeSet::new();
    walk(&root, &root, &mut files);
    files
}

#[test]
fn the_policies_configmap_and_its_mount_carry_the_whole_policies_folder() {
    let shipped = shipped_policy_files();
    assert!(shipped.contains("images/tags.rego") && shipped.contains("settings/registries.yaml"));
    let kustomization: Value = yaml_docs(
        &std::fs::read_to_string(common::repo().join("deploy/base/kustomization.yaml")).unwrap(),
    )
    .remove(0);
    let generated: BTreeSet<String> = kustomization["configMapGenerator"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let (key, path) = f.as_str().unwrap().split_once('=').unwrap();
            let rel = path.strip_prefix("policies/").unwrap();
            assert_eq!(key, rel.replace('/', "."));
            rel.to_string()
        })
        .collect();
    assert_eq!(
        generated, shipped,
        "deploy/base/kustomization.yaml configMapGenerator"
    );
    for rendering in renderings() {
        for doc in of_kind(&rendering, "Deployment") {
            let deployment: Deployment = typed(&rendering, doc);
            let pod = deployment.spec.template.spec.unwrap();
            let volume = pod
                .volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "policies")
                .unwrap();
            let config_map = volume.config_map.unwrap();
            let mounted: BTreeSet<String> = config_map
                .items
                .unwrap()
                .into_iter()
                .map(|item| {
                    assert_eq!(item.key, item.path.replace('/', "."), "{}", rendering.name);
                    item.path
                })
                .collect();
            if rendering.name.contains("provided") {
                // That rendering replaces the shipped policies with its own file.
                assert_eq!(mounted, BTreeSet::from(["rules.rego".to_string()]));
                continue;
            }
            assert!(
                mounted.is_superset(&shipped),
                "{}: {mounted:?}",
                rendering.name
            );
            // Every mounted key exists in the ConfigMap (raw files have no ConfigMap).
            let name = config_map.name;
            for map in of_kind(&rendering, "ConfigMap") {
                let map: ConfigMap = typed(&rendering, map);
                if map.metadata.name.as_deref() == Some(name.as_str()) {
                    let keys: BTreeSet<String> = map.data.unwrap().into_keys().collect();
                    let wanted: BTreeSet<String> =
                        mounted.iter().map(|p| p.replace('/', ".")).collect();
                    assert_eq!(keys, wanted, "{}", rendering.name);
                }
            }
        }
    }
}

/// Every rendered Deployment starts `verdict serve` with flags it accepts (a flag renamed in
/// `config.rs` but not in a template fails here), and the chart's values reach them.
#[test]
fn every_rendered_deployment_starts_verdict_with_flags_it_accepts() {
    use clap::Parser as _;
    let mut seen = 0;
    for rendering in renderings() {
        for doc in of_kind(&rendering, "Deployment") {
            let deployment: Deployment = typed(&rendering, doc);
            let pod = deployment.spec.template.spec.unwrap();
            let args = pod.containers[0].args.clone().unwrap();
            let argv = std::iter::once("verdict".to_string()).chain(args.iter().cloned());
            if let Err(e) = verdict::cli::Cli::try_parse_from(argv) {
                panic!("{}: {args:?}: {e}", rendering.name);
            }
            if rendering.name == "helm-cert-manager-monitoring" {
                assert!(
                    args.contains(&"--no-match-policy=deny".to_string()),
                    "{args:?}"
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 0);
}

fn audit_role(doc: &Value) -> bool {
    doc["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("-audit"))
}

/// The rendered Deployments' `serve` arguments.
fn serve_args(rendering: &Rendering) -> Vec<String> {
    of_kind(rendering, "Deployment")
        .iter()
        .flat_map(|d| {
            let d: Deployment = typed(rendering, d);
            d.spec.template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap()
        })
        .collect()
}

/// The audit's rules exist exactly when the Deployment audits, and grant exactly what it
/// uses: list on every kind verdict reads images from (and the chart's listRules), list,
/// create, update and delete on PolicyReports, and the Lease by name (create by kind).
#[test]
fn the_audit_role_grants_exactly_what_the_background_audit_uses() {
    let mut seen = 0;
    for rendering in renderings() {
        let name = &rendering.name;
        let audits = serve_args(&rendering)
            .iter()
            .any(|a| a.starts_with("--audit-interval="));
        let roles: Vec<&Value> = of_kind(&rendering, "ClusterRole")
            .into_iter()
            .filter(|d| audit_role(d))
            .collect();
        let leases = of_kind(&rendering, "Role");
        assert_eq!(roles.len(), usize::from(audits), "{name}");
        assert_eq!(leases.len(), usize::from(audits), "{name}");
        assert_eq!(
            of_kind(&rendering, "RoleBinding").len(),
            usize::from(audits),
            "{name}"
        );
        if !audits {
            continue;
        }
        let role: ClusterRole = typed(&rendering, roles[0]);
        let mut listed = BTreeSet::new();
        for rule in role.rules.unwrap_or_default() {
            let resources = rule.resources.clone().unwrap_or_default();
            if rule.api_groups.as_deref() == Some(&["wgpolicyk8s.io".to_string()][..]) {
                assert_eq!(
                    resources,
                    ["policyreports", "clusterpolicyreports"],
                    "{name}"
                );
                assert_eq!(rule.verbs, ["list", "create", "update", "delete"], "{name}");
            } else {
                assert_eq!(rule.verbs, ["list"], "{name}: {resources:?}");
                assert!(!resources.iter().any(|r| r == "secrets"), "{name}");
                listed.extend(resources);
            }
        }
        // Ephemeral containers are listed with their Pods.
        for (kind, _) in verdict::images::POD_SPEC_PATHS
            .iter()
            .filter(|(k, _)| *k != "EphemeralContainers")
        {
            assert!(
                listed.contains(resource_of(kind)),
                "{name}: {kind} is not listed"
            );
        }
        let lease: Role = typed(&rendering, leases[0]);
        let rules = lease.rules.unwrap_or_default();
        assert_eq!(rules.len(), 2, "{name}");
        for rule in &rules {
            assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
            match rule.resource_names.as_deref() {
                None => assert_eq!(rule.verbs, ["create"], "{name}"),
                Some(names) => {
                    assert_eq!(names, ["verdict-audit"], "{name}");
                    assert_eq!(rule.verbs, ["get", "update"], "{name}");
                }
            }
        }
        seen += 1;
    }
    assert!(seen >= 2, "the audit overlay and the chart's audit values");
}

/// The ClusterRole grants exactly what verdict uses: list/watch on namespaces (and the
/// synced kinds the chart is given), get on secrets and serviceaccounts only while pull
/// secrets are on, and never list or watch on secrets.
#[test]
fn the_cluster_role_grants_exactly_what_verdict_uses() {
    let mut seen = 0;
    for rendering in renderings() {
        let Some(doc) = of_kind(&rendering, "ClusterRole")
            .into_iter()
            .find(|d| !audit_role(d))
        else {
            continue;
        };
        let role: ClusterRole = typed(&rendering, doc);
        let rules = role.rules.unwrap_or_default();
        let args = serve_args(&rendering);
        let pull_secrets = !args.contains(&"--pull-secrets=false".to_string());
        let name = &rendering.name;
        for rule in &rules {
            let resources = rule.resources.clone().unwrap_or_default();
            let verbs = &rule.verbs;
            if resources.iter().any(|r| r == "secrets") {
                assert!(pull_secrets, "{name}: secrets without pull secrets");
                assert_eq!(verbs, &["get"], "{name}: secrets are only read by name");
                assert_eq!(resources, ["secrets", "serviceaccounts"], "{name}");
            } else {
                assert_eq!(verbs, &["list", "watch"], "{name}: {resources:?}");
            }
        }
        assert!(
            rules
                .iter()
                .any(|r| r.resources.as_deref() == Some(&["namespaces".to_string()][..])),
            "{name}"
        );
        assert_eq!(
            rules.iter().any(|r| r
                .resources
                .as_ref()
                .is_some_and(|r| r.contains(&"secrets".to_string()))),
            pull_secrets,
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= 3);
}
