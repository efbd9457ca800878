//! verdict with a real kube-apiserver (v1.20.2 built by `../shared/k8s`, etcd on loopback):
//! the synced inventory, readiness, the shipped RBAC used by a user named like verdict's
//! ServiceAccount, and the API server itself calling verdict through a
//! ValidatingWebhookConfiguration rendered from `deploy/`.
//!
//! One API server serves every scenario, so this binary has its own `main` (no libtest
//! harness): it starts the API server, runs each scenario (a failure is caught and
//! reported), and always stops the API server by PID before it exits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::kube::Kube;
use common::{codes, eventually, pod_review, Options, Server};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

type Scenario = fn(&Kube);

fn main() {
    let kube = Kube::start();
    let started = Instant::now();
    install_rbac(&kube);
    let scenarios: &[(&str, Scenario)] = &[
        (
            "shipped_rbac_is_enough_and_secrets_stay_forbidden",
            shipped_rbac,
        ),
        (
            "a_namespace_label_change_reaches_decisions_within_two_seconds",
            relabel,
        ),
        (
            "synced_kinds_of_a_syncset_reach_rego_at_gatekeepers_paths",
            syncset,
        ),
        (
            "a_kind_verdict_may_not_list_keeps_it_unready_and_denying",
            forbidden_kind,
        ),
        (
            "a_library_constraint_reads_ingresses_synced_by_its_sync_yaml",
            unique_ingress_host,
        ),
        ("verdict_audit_finds_what_already_runs", audit_one_shot),
        (
            "the_background_audit_writes_policy_reports_from_the_lease_holder",
            background_audit,
        ),
        (
            "image_policies_apply_in_the_namespaces_they_select",
            namespace_selector,
        ),
        (
            "pull_secrets_come_from_the_objects_own_namespace",
            pull_secrets,
        ),
        ("the_api_server_calls_verdict", webhook),
        // Last: it stops the API server.
        (
            "reviews_go_on_with_the_last_copy_when_the_api_server_goes_away",
            api_down,
        ),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let at = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&kube)));
        match outcome {
            Ok(()) => println!("test {name} ... ok ({:?})", at.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED ({:?})", at.elapsed());
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        let log = kube.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("kube-apiserver log (last lines):");
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
    drop(kube);
    println!(
        "cluster scenarios: {} passed, {} failed, {:?} with the API server",
        scenarios.len() - failed.len(),
        failed.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The renderings of `deploy/` that `make render-deploy` writes.
fn rendered(name: &str) -> Vec<Value> {
    let dir = std::env::var_os("VERDICT_DEPLOY_RENDERED")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join("target/deploy-rendered"));
    let path = dir.join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make render-deploy`)", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn apply(kube: &Kube, docs: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    kube.kubectl(&["apply", "-f", "-"], Some(&list.to_string()));
}

/// The shipped ClusterRole and its binding to verdict-system/verdict, as kustomize renders them.
fn install_rbac(kube: &Kube) {
    let rbac: Vec<Value> = rendered("kustomize-base")
        .into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ClusterRole" | "ClusterRoleBinding")
            )
        })
        .collect();
    assert_eq!(
        rbac.len(),
        2,
        "the base renders a ClusterRole and its binding"
    );
    kube.create_namespace("verdict-system");
    apply(kube, rbac);
}

/// verdict on the shipped policies (plus `extra` files), as the ServiceAccount-named user.
fn verdict(kube: &Kube, extra: &[(&str, &str)]) -> Server {
    verdict_with(kube, extra, &[])
}

fn verdict_with(kube: &Kube, extra: &[(&str, &str)], args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    common::copy_dir(&common::repo().join("policies"), &policies);
    for (path, text) in extra {
        let file = policies.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    Server::start_with(Options {
        policies,
        extra_args: [
            "--kubeconfig".to_string(),
            kube.kubeconfig_verdict.display().to_string(),
        ]
        .into_iter()
        .chain(args.iter().map(|a| a.to_string()))
        .collect(),
    })
}

async fn readyz(server: &Server) -> (u16, Value) {
    let Ok(response) = reqwest::get(server.metrics_url("/readyz")).await else {
        return (0, Value::Null);
    };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn wait_ready(server: &Server) {
    let ready = eventually(Duration::from_secs(30), || async {
        readyz(server).await.0 == 200
    })
    .await;
    assert!(
        ready,
        "not ready: {:?}\n{}",
        readyz(server).await,
        server.logs()
    );
}

/// The reason codes of the answer to `review` (empty when allowed).
async fn judged(server: &Server, review: &Value) -> Vec<String> {
    let (status, answer) = server.validate(&server.client(true), review).await;
    assert_eq!(status, 200, "{answer}");
    let allowed = answer["response"]["allowed"].as_bool().unwrap();
    let found = codes(&answer);
    assert_eq!(allowed, found.is_empty(), "{answer}");
    found
}

/// How long until `review` is judged with `want` codes; panics past `limit`.
async fn judged_within(
    server: &Server,
    review: &Value,
    want: &[&str],
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let found = judged(server, review).await;
        if found == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {found:?}, not {want:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shipped_rbac(kube: &Kube) {
    runtime().block_on(async {
        let server = verdict(kube, &[]);
        wait_ready(&server).await;
        let (_, status) = readyz(&server).await;
        let kinds = status["inventory"].as_array().unwrap();
        assert_eq!(kinds.len(), 1, "{status}");
        assert_eq!(kinds[0]["kind"], "v1/Namespace");
        assert!(kinds[0]["objects"].as_u64().unwrap() >= 4, "{status}");
        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains("verdict_inventory_objects{kind=\"v1/Namespace\"}"),
            "{metrics}"
        );
    });
    // What verdict is not granted stays refused: its user may not list Secrets.
    let (ok, out) = kube.try_kubectl(&kube.kubeconfig_verdict, &["get", "secrets", "-A"], None);
    assert!(!ok && out.contains("Forbidden"), "{out}");
    let (ok, out) = kube.try_kubectl(&kube.kubeconfig_verdict, &["get", "pods", "-A"], None);
    assert!(!ok && out.contains("Forbidden"), "{out}");
}

fn relabel(kube: &Kube) {
    kube.create_namespace("team-a");
    runtime().block_on(async {
        let server = verdict(kube, &[]);
        wait_ready(&server).await;
        let review = pod_review("team-a", &["docker.io/library/nginx:1.25"]);
        assert_eq!(judged(&server, &review).await, Vec::<String>::new());
        // Remembered: the same review again is answered from the decision cache.
        assert_eq!(judged(&server, &review).await, Vec::<String>::new());

        kube.label_namespace("team-a", "verdict.dev/require-digest=true");
        let took = judged_within(
            &server,
            &review,
            &["DIGEST_REQUIRED"],
            Duration::from_secs(2),
        )
        .await;
        println!("label added: the next decision changed within {took:?}");

        kube.label_namespace("team-a", "verdict.dev/require-digest-");
        let took = judged_within(&server, &review, &[], Duration::from_secs(2)).await;
        println!("label removed: the next decision changed within {took:?}");
    });
}

const SYNCSET: &str = "apiVersion: syncset.gatekeeper.sh/v1alpha1\nkind: SyncSet\nmetadata: {name: services}\nspec:\n  gvks:\n  - {group: '', version: v1, kind: Service}\n";

const BLOCKER_POLICY: &str = r#"package team.blockers

# A Service named "freeze" in the review's namespace stops new workloads there.
deny contains {"code": "NAMESPACE_FROZEN", "msg": msg} if {
	data.inventory.namespace[input.request.namespace].v1.Service.freeze
	msg := sprintf("namespace %s is frozen (Service freeze)", [input.request.namespace])
}
"#;

fn syncset(kube: &Kube) {
    // Services are granted the way the Helm chart's cluster.syncRules grants them.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "verdict-sync-services"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "verdict-sync-services"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "verdict-sync-services"},
        "subjects": [{"kind": "ServiceAccount", "name": "verdict", "namespace": "verdict-system"}]});
    apply(kube, vec![role, binding]);
    kube.create_namespace("team-b");
    runtime().block_on(async {
        let server = verdict(
            kube,
            &[
                ("sync/services.yaml", SYNCSET),
                ("team/blockers.rego", BLOCKER_POLICY),
            ],
        );
        wait_ready(&server).await;
        let (_, status) = readyz(&server).await;
        assert!(status.to_string().contains("v1/Service"), "{status}");
        let review = pod_review("team-b", &["docker.io/library/nginx:1.25"]);
        assert_eq!(judged(&server, &review).await, Vec::<String>::new());
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "freeze", "namespace": "team-b"},
            "spec": {"ports": [{"port": 80}]}});
        apply(kube, vec![service]);
        judged_within(
            &server,
            &review,
            &["NAMESPACE_FROZEN"],
            Duration::from_secs(2),
        )
        .await;
        kube.kubectl(&["-n", "team-b", "delete", "service", "freeze"], None);
        judged_within(&server, &review, &[], Duration::from_secs(2)).await;
    });
}

/// The Gatekeeper library's uniqueingresshost policy as it is: its template, its sample
/// constraint and its `sync.yaml` (a `Config` syncing Ingresses of three apiVersions), with
/// Ingresses granted the way Helm's cluster.syncRules grants them.
fn unique_ingress_host(kube: &Kube) {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "verdict-sync-ingresses"},
        "rules": [{"apiGroups": ["extensions", "networking.k8s.io"], "resources": ["ingresses"], "verbs": ["list", "watch"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "verdict-sync-ingresses"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "verdict-sync-ingresses"},
        "subjects": [{"kind": "ServiceAccount", "name": "verdict", "namespace": "verdict-system"}]});
    apply(kube, vec![role, binding]);
    kube.create_namespace("team-i");
    let library = common::fixture("gatekeeper-library/general/uniqueingresshost");
    let read = |rel: &str| std::fs::read_to_string(library.join(rel)).unwrap();
    let (template, constraint, sync) = (
        read("template.yaml"),
        read("samples/unique-ingress-host/constraint.yaml"),
        read("sync.yaml"),
    );
    let ingress = |name: &str, host: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "team-i"},
            "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
    };
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "ingress-1", "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "name": "second", "namespace": "team-i", "operation": "CREATE", "userInfo": {"username": "tester"},
            "object": ingress("second", "shop.example.com")}});
    runtime().block_on(async {
        let server = verdict(
            kube,
            &[
                ("gatekeeper/template.yaml", &template),
                ("gatekeeper/constraint.yaml", &constraint),
                ("gatekeeper/sync.yaml", &sync),
            ],
        );
        wait_ready(&server).await;
        let (_, status) = readyz(&server).await;
        assert!(status.to_string().contains("networking.k8s.io/v1/Ingress"), "{status}");
        assert_eq!(judged(&server, &review).await, Vec::<String>::new());
        apply(kube, vec![ingress("first", "shop.example.com")]);
        judged_within(&server, &review, &["CONSTRAINT_VIOLATION"], Duration::from_secs(2)).await;
        let (_, answer) = server.validate(&server.client(true), &review).await;
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("[unique-ingress-host] ingress host conflicts with an existing ingress <shop.example.com>"),
            "{message}"
        );
        kube.kubectl(&["-n", "team-i", "delete", "ingress", "first"], None);
        judged_within(&server, &review, &[], Duration::from_secs(2)).await;
    });
}

/// `verdict audit`: a Deployment created before any policy judged it is found; its
/// ReplicaSet and the Pod that is as its template says are reported under it, a Pod changed
/// since is reported on its own; `--selector` and `--kind` narrow it.
fn audit_one_shot(kube: &Kube) {
    kube.create_namespace("team-audit");
    let template = |image: &str| {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": image}]}})
    };
    apply(
        kube,
        vec![json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "team-audit", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template("nginx:latest")}})],
    );
    let uid = |kind: &str, name: &str| {
        kube.kubectl(
            &[
                "-n",
                "team-audit",
                "get",
                kind,
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .trim()
        .to_string()
    };
    let owner = |kind: &str, name: &str, api_version: &str| json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid(kind, name), "controller": true}]);
    apply(
        kube,
        vec![json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "team-audit", "labels": {"app": "web"},
                         "ownerReferences": owner("Deployment", "web", "apps/v1")},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template("nginx:latest")}})],
    );
    let pod = |name: &str, app: &str, image: &str, owners: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team-audit", "labels": {"app": app}, "ownerReferences": owners},
            "spec": {"containers": [{"name": "web", "image": image}]}})
    };
    let rs = owner("ReplicaSet", "web-1", "apps/v1");
    apply(
        kube,
        vec![
            pod("web-1-a", "web", "nginx:latest", rs.clone()),
            pod("web-1-b", "web", "nginx:1.27", rs),
            pod("db", "db", "postgres:16", json!([])),
        ],
    );
    let policies = common::repo().join("policies");
    let audit = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "--kubeconfig",
            kube.kubeconfig.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--namespace",
            "team-audit",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let output = std::process::Command::new(common::BIN)
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
        let found: Vec<(String, String)> = report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["object"].as_str().unwrap().to_string(),
                    o["decision"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (output.status.code(), found, report)
    };
    let (code, mut found, report) = audit(&[]);
    found.sort();
    assert_eq!(
        found,
        [
            ("Deployment team-audit/web".to_string(), "deny".to_string()),
            ("Pod team-audit/db".to_string(), "allow".to_string()),
            ("Pod team-audit/web-1-b".to_string(), "allow".to_string()),
        ],
        "{report}"
    );
    assert_eq!(code, Some(1));
    assert!(report.to_string().contains("IMAGE_TAG_LATEST"), "{report}");
    let (code, found, _) = audit(&["--selector", "app=db"]);
    assert_eq!((code, found.len()), (Some(0), 1), "{found:?}");
    let (code, found, _) = audit(&["--kind", "Deployment"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        found,
        [("Deployment team-audit/web".to_string(), "deny".to_string())]
    );
}

/// The audit's RBAC from `deploy/overlays/audit` and the PolicyReport CRDs from
/// `deploy/crds`, as kustomize renders them.
fn install_audit(kube: &Kube) {
    let rbac: Vec<Value> = rendered("kustomize-overlays-audit")
        .into_iter()
        .filter(|d| d["metadata"]["name"] == "verdict-audit")
        .collect();
    assert_eq!(rbac.len(), 4, "ClusterRole, Role and their bindings");
    apply(kube, rendered("kustomize-crds"));
    kube.kubectl(
        &[
            "wait",
            "--for=condition=established",
            "crd/policyreports.wgpolicyk8s.io",
            "crd/clusterpolicyreports.wgpolicyk8s.io",
        ],
        None,
    );
    apply(kube, rbac);
    // verdict's Lease lives in the namespace of its cluster configuration.
    let (ok, out) = kube.try_kubectl(
        &kube.kubeconfig_verdict,
        &[
            "config",
            "set-context",
            "--current",
            "--namespace=verdict-system",
        ],
        None,
    );
    assert!(ok, "{out}");
}

/// A report as JSON, `Null` when there is none.
fn report(kube: &Kube, namespace: Option<&str>) -> Value {
    let args: Vec<&str> = match namespace {
        Some(ns) => vec!["-n", ns, "get", "policyreport", "verdict", "-o", "json"],
        None => vec!["get", "clusterpolicyreport", "verdict", "-o", "json"],
    };
    let (ok, out) = kube.try_kubectl(&kube.kubeconfig, &args, None);
    if ok {
        serde_json::from_str(&out).unwrap()
    } else {
        Value::Null
    }
}

/// `(kind/name, policy, result, code)` of each result of a report.
fn results(report: &Value) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let resource = &r["resources"][0];
            (
                format!(
                    "{}/{}",
                    resource["kind"].as_str().unwrap(),
                    resource["name"].as_str().unwrap()
                ),
                r["policy"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
                r["properties"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The value of an unlabelled metric.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = server.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn lease_holder(kube: &Kube) -> String {
    let (_, out) = kube.try_kubectl(
        &kube.kubeconfig,
        &[
            "-n",
            "verdict-system",
            "get",
            "lease",
            "verdict-audit",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    out.trim().to_string()
}

/// `serve --audit-interval` on two replicas with the shipped audit RBAC: one holds the
/// Lease and writes PolicyReports (namespaced objects by namespace, Namespaces judged by a
/// library constraint in the ClusterPolicyReport); a fixed object's result clears, a deleted
/// one's goes, an unchanged report is not written again; when the holder hangs (SIGSTOP) the
/// other takes the Lease within its duration and audits, and when that one stops (SIGTERM)
/// it releases the Lease to the first at once.
fn background_audit(kube: &Kube) {
    install_audit(kube);
    kube.create_namespace("team-bg");
    let workload = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "team-bg"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}})
    };
    let pod = |name: &str, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team-bg"},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    };
    apply(
        kube,
        vec![
            workload("nginx:latest"),
            pod("ok", "nginx:1.27"),
            pod("temp", "nginx:latest"),
        ],
    );
    // Someone else's report named like verdict's, in a namespace with a finding: left alone,
    // and the audit goes on with every other namespace.
    kube.create_namespace("team-foreign");
    apply(
        kube,
        vec![
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "team-foreign"},
                   "spec": {"containers": [{"name": "c", "image": "nginx:latest"}]}}),
            json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                   "metadata": {"name": "verdict", "namespace": "team-foreign"}, "results": []}),
        ],
    );
    let library = common::fixture("gatekeeper-library/general/requiredlabels");
    let read = |rel: &str| std::fs::read_to_string(library.join(rel)).unwrap();
    let (template, constraint) = (
        read("template.yaml"),
        read("samples/all-must-have-owner/constraint.yaml"),
    );
    let extra = [
        ("gatekeeper/template.yaml", template.as_str()),
        ("gatekeeper/constraint.yaml", constraint.as_str()),
    ];
    let args = ["--audit-interval", "2s"];
    let latest = |name: &str| {
        (
            name.to_string(),
            "images/tags.rego".to_string(),
            "fail".to_string(),
            "IMAGE_TAG_LATEST".to_string(),
        )
    };
    runtime().block_on(async {
        let mut first = verdict_with(kube, &extra, &args);
        let mut second = verdict_with(kube, &extra, &args);
        let found = eventually(Duration::from_secs(30), || async {
            results(&report(kube, Some("team-bg"))) == [latest("Deployment/web"), latest("Pod/temp")]
        })
        .await;
        let namespaced = report(kube, Some("team-bg"));
        assert!(found, "{namespaced}\n{}\n{}", first.logs(), second.logs());
        assert_eq!(
            namespaced["summary"],
            json!({"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0})
        );
        let result = &namespaced["results"][0];
        assert_eq!(result["source"], "verdict");
        assert_eq!(result["resources"][0]["namespace"], "team-bg");
        assert!(result["resources"][0]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{result}");
        assert!(result["timestamp"]["seconds"].as_i64().unwrap() > 0, "{result}");
        assert!(result["message"].as_str().unwrap().contains("latest"), "{result}");
        let foreign = report(kube, Some("team-foreign"));
        assert!(foreign["summary"].is_null() && results(&foreign).is_empty(), "{foreign}");
        let cluster = report(kube, None);
        let team = (
            "Namespace/team-bg".to_string(),
            "K8sRequiredLabels/all-must-have-owner".to_string(),
            "fail".to_string(),
            "CONSTRAINT_VIOLATION".to_string(),
        );
        assert!(results(&cluster).contains(&team), "{cluster}");
        // One replica audits.
        let leaders = metric(&first, "verdict_audit_leader").await
            + metric(&second, "verdict_audit_leader").await;
        assert_eq!(leaders, 1.0);
        let (leader, other) = if metric(&first, "verdict_audit_leader").await == 1.0 {
            (&mut first, &mut second)
        } else {
            (&mut second, &mut first)
        };
        assert!(metric(leader, "verdict_audit_objects").await >= 3.0);
        let violations = leader.metrics_text().await;
        assert!(
            violations.contains(r#"verdict_audit_violations{code="IMAGE_TAG_LATEST",namespace="team-bg",policy="images/tags.rego"} 2"#),
            "{violations}"
        );

        // Fixed, deleted, relabelled: their results go.
        apply(kube, vec![workload("nginx:1.27")]);
        kube.kubectl(&["-n", "team-bg", "delete", "pod", "temp", "--wait=false"], None);
        kube.label_namespace("team-bg", "owner=alice.agilebank.demo");
        let cleared = eventually(Duration::from_secs(20), || async {
            let r = report(kube, Some("team-bg"));
            results(&r).is_empty() && r["summary"]["pass"] == 2
                && !results(&report(kube, None)).contains(&team)
        })
        .await;
        assert!(cleared, "{}\n{}", report(kube, Some("team-bg")), report(kube, None));

        // Nothing changed: two more audits write nothing.
        let version = report(kube, Some("team-bg"))["metadata"]["resourceVersion"].clone();
        let runs = metric(leader, "verdict_audit_runs_total{result=\"success\"}").await;
        let audited = eventually(Duration::from_secs(20), || async {
            metric(leader, "verdict_audit_runs_total{result=\"success\"}").await >= runs + 2.0
        })
        .await;
        assert!(audited, "{}", leader.logs());
        assert_eq!(report(kube, Some("team-bg"))["metadata"]["resourceVersion"], version);

        // The holder hangs: the other takes the Lease within its duration (15 s) and audits.
        let holder = lease_holder(kube);
        std::process::Command::new("kill").args(["-STOP", &leader.pid().to_string()]).status().unwrap();
        let hung = Instant::now();
        apply(kube, vec![pod("late", "nginx:latest")]);
        let took = eventually(Duration::from_secs(25), || async {
            results(&report(kube, Some("team-bg"))) == [latest("Pod/late")]
        })
        .await;
        let taken_after = hung.elapsed();
        std::process::Command::new("kill").args(["-CONT", &leader.pid().to_string()]).status().unwrap();
        assert!(took, "{}", other.logs());
        assert_ne!(lease_holder(kube), holder);
        // Taken within the 15 s lease duration, then one audit (about a second) published.
        assert!(taken_after < Duration::from_secs(15 + 3), "{taken_after:?}");
        println!("a hung holder's Lease was taken, and an audit published, within {taken_after:?}");
        assert_eq!(metric(other, "verdict_audit_leader").await, 1.0);
        // The resumed one finds the Lease taken, and stands by.
        let stood_by = eventually(Duration::from_secs(10), || async {
            metric(leader, "verdict_audit_leader").await == 0.0
        })
        .await;
        assert!(stood_by, "{}", leader.logs());

        // The new holder stops: it releases the Lease, and the first takes it at once.
        let runs = metric(leader, "verdict_audit_runs_total{result=\"success\"}").await;
        let stopped = Instant::now();
        assert!(other.terminate().success());
        let back = eventually(Duration::from_secs(10), || async {
            metric(leader, "verdict_audit_runs_total{result=\"success\"}").await > runs
        })
        .await;
        assert!(back, "{}", leader.logs());
        println!("a stopped holder's Lease was taken, and an audit published, within {:?}", stopped.elapsed());
    });
}

const CONFIG_SECRETS: &str = "apiVersion: config.gatekeeper.sh/v1alpha1\nkind: Config\nmetadata: {name: config, namespace: gatekeeper-system}\nspec:\n  sync:\n    syncOnly:\n    - {group: '', version: v1, kind: Namespace}\n    - {group: '', version: v1, kind: Secret}\n";

fn forbidden_kind(kube: &Kube) {
    runtime().block_on(async {
        let server = verdict(kube, &[("sync/config.yaml", CONFIG_SECRETS)]);
        let forbidden = eventually(Duration::from_secs(20), || async {
            readyz(&server).await.1.to_string().contains("forbidden")
        })
        .await;
        let (status, body) = readyz(&server).await;
        assert!(forbidden && status == 503, "{status} {body}");
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains("v1/Secret"), "{reason}");
        assert!(
            !reason.contains("v1/Namespace"),
            "namespaces are granted: {reason}"
        );
        let review = pod_review("team-a", &["docker.io/library/nginx:1.25"]);
        assert_eq!(judged(&server, &review).await, ["INVENTORY_NOT_SYNCED"]);
        let (_, answer) = server.validate(&server.client(true), &review).await;
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("v1/Secret") && message.contains("list"),
            "{message}"
        );
    });
    // A reload that adds such a kind: from the first review under the new policies on,
    // nothing is judged on a copy without it; removing it again brings reviews back.
    runtime().block_on(async {
        let server = verdict(kube, &[]);
        wait_ready(&server).await;
        let review = pod_review("team-a", &["docker.io/library/nginx:1.25"]);
        assert_eq!(judged(&server, &review).await, Vec::<String>::new());
        let declared = server.policies().join("sync/config.yaml");
        std::fs::create_dir_all(declared.parent().unwrap()).unwrap();
        std::fs::write(&declared, CONFIG_SECRETS).unwrap();
        let mut seen = Vec::new();
        let blocked = eventually(Duration::from_secs(10), || {
            let review = &review;
            let server = &server;
            async move { judged(server, review).await == ["INVENTORY_NOT_SYNCED"] }
        })
        .await;
        assert!(blocked, "the added kind was never waited for");
        // Never an allow in between: every answer from now on is the denial.
        for _ in 0..20 {
            seen.push(judged(&server, &review).await);
        }
        assert!(
            seen.iter().all(|c| c == &["INVENTORY_NOT_SYNCED"]),
            "{seen:?}"
        );
        assert_eq!(readyz(&server).await.0, 503);
        std::fs::remove_file(&declared).unwrap();
        judged_within(&server, &review, &[], Duration::from_secs(10)).await;
        wait_ready(&server).await;
    });
}

const SCOPED_POLICY: &str = r#"apiVersion: verdict.dev/v1alpha1
kind: ImagePolicy
metadata: {name: signed-teams}
spec:
  images: [{glob: "127.0.0.1:1/**"}]
  namespaces: ["team-*"]
  namespaceSelector:
    matchExpressions:
    - {key: verdict.dev/signed, operator: In, values: [required]}
  authorities:
  - key:
      data: |
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+
        kvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==
        -----END PUBLIC KEY-----
"#;

fn namespace_selector(kube: &Kube) {
    kube.create_namespace("team-d");
    kube.create_namespace("other-d");
    kube.label_namespace("other-d", "verdict.dev/signed=required");
    runtime().block_on(async {
        let server = verdict(
            kube,
            &[
                ("images/signed-teams.yaml", SCOPED_POLICY),
                (
                    "settings/registries.yaml",
                    "allowed_registries: ['127.0.0.1:1']\n",
                ),
            ],
        );
        wait_ready(&server).await;
        // Nothing listens on 127.0.0.1:1: where the policy applies, the image cannot be
        // verified; where it does not, no image policy matches and the image is admitted.
        let in_team = pod_review("team-d", &["127.0.0.1:1/acme/app:1"]);
        let elsewhere = pod_review("other-d", &["127.0.0.1:1/acme/app:1"]);
        assert_eq!(
            judged(&server, &in_team).await,
            Vec::<String>::new(),
            "not selected yet"
        );
        assert_eq!(
            judged(&server, &elsewhere).await,
            Vec::<String>::new(),
            "name not listed"
        );
        kube.label_namespace("team-d", "verdict.dev/signed=required");
        judged_within(
            &server,
            &in_team,
            &["REGISTRY_UNREACHABLE"],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(judged(&server, &elsewhere).await, Vec::<String>::new());
        // A namespace verdict has not seen is never exempt from a selector.
        let unknown = pod_review("team-unknown", &["127.0.0.1:1/acme/app:1"]);
        assert_eq!(judged(&server, &unknown).await, ["REGISTRY_UNREACHABLE"]);
    });
}

fn secret(namespace: &str, name: &str, kind: &str, key: &str, config: &Value) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(config.to_string());
    json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: data}})
}

fn with_pull(mut review: Value, secrets: &[&str], account: Option<&str>) -> Value {
    let spec = &mut review["request"]["object"]["spec"];
    spec["imagePullSecrets"] = json!(secrets
        .iter()
        .map(|s| json!({"name": s}))
        .collect::<Vec<_>>());
    if let Some(account) = account {
        spec["serviceAccountName"] = json!(account);
    }
    review["request"]["uid"] = json!(format!("{secrets:?}-{account:?}-{:?}", Instant::now()));
    review
}

fn pull_secrets(kube: &Kube) {
    use common::registry::{payload, RegistryOptions, TestKey, TestRegistry};
    runtime().block_on(async {
        let private = TestRegistry::start_with(RegistryOptions {
            basic_auth: Some(("puller".into(), "s3cret-pw".into())),
            ..Default::default()
        })
        .await;
        let public = TestRegistry::start().await;
        let key = TestKey::generate(sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1);
        for (registry, repo) in [(&private, "team/app"), (&public, "open/app")] {
            let digest = registry.push_image(repo, "v1").await;
            registry
                .push_signatures(repo, &digest, &[key.layer(payload("x", &digest))])
                .await;
        }
        let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret-pw");
        let config = json!({"auths": {private.host.clone(): {"auth": auth}}});
        let legacy = json!({format!("http://{}", private.host): {"auth": auth}});
        for ns in ["ps-a", "ps-b", "ps-c"] {
            kube.create_namespace(ns);
        }
        apply(
            kube,
            vec![
                secret("ps-a", "regcred", "kubernetes.io/dockerconfigjson", ".dockerconfigjson", &config),
                secret("ps-c", "oldcred", "kubernetes.io/dockercfg", ".dockercfg", &legacy),
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "builder", "namespace": "ps-a"},
                    "imagePullSecrets": [{"name": "regcred"}]}),
            ],
        );
        let policy = format!(
            "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: signed}}\nspec:\n  images: [{{glob: '{}/**'}}, {{glob: '{}/**'}}]\n  authorities:\n  - key: {{file: k.pub}}\n",
            private.host, public.host
        );
        let registries = format!("allowed_registries: ['{}', '{}']\n", private.host, public.host);
        let server = verdict_with(
            kube,
            &[
                ("images/signed.yaml", &policy),
                ("images/k.pub", &key.public_pem),
                ("settings/registries.yaml", &registries),
            ],
            &[
                "--insecure-registry",
                &private.host,
                "--insecure-registry",
                &public.host,
                "--pull-secret-ttl",
                "2s",
            ],
        );
        wait_ready(&server).await;
        let image = format!("{}/team/app:v1", private.host);
        let open = format!("{}/open/app:v1", public.host);
        let pod = |ns: &str, image: &str| pod_review(ns, &[image]);

        // A's Pod with A's secret, by name and through its ServiceAccount.
        assert_eq!(judged(&server, &with_pull(pod("ps-a", &image), &["regcred"], None)).await, Vec::<String>::new());
        assert_eq!(judged(&server, &with_pull(pod("ps-a", &image), &[], Some("builder"))).await, Vec::<String>::new());
        // The legacy dockercfg form.
        assert_eq!(judged(&server, &with_pull(pod("ps-c", &image), &["oldcred"], None)).await, Vec::<String>::new());
        // B naming A's secret: not in B, so no credentials, whatever A was allowed.
        assert_eq!(judged(&server, &with_pull(pod("ps-b", &image), &["regcred"], None)).await, ["REGISTRY_AUTH"]);
        assert_eq!(judged(&server, &pod("ps-a", &image)).await, ["REGISTRY_AUTH"], "no secret named");
        // Nor by a name that the API server would read as a path into A, or by a
        // ServiceAccount named that way: names that are not Kubernetes names name nothing.
        for name in ["../../ps-a/secrets/regcred", "..%2F..%2Fps-a%2Fsecrets%2Fregcred", "regcred?x=1", "REGCRED"] {
            let named = with_pull(pod("ps-b", &image), &[name], None);
            assert_eq!(judged(&server, &named).await, ["REGISTRY_AUTH"], "secret {name}");
        }
        let account = with_pull(pod("ps-b", &image), &[], Some("../../ps-a/serviceaccounts/builder"));
        assert_eq!(judged(&server, &account).await, ["REGISTRY_AUTH"], "account");
        // A public repository needs no secret.
        assert_eq!(judged(&server, &pod("ps-b", &open)).await, Vec::<String>::new());

        // A deleted secret stops working within --pull-secret-ttl.
        kube.kubectl(&["-n", "ps-a", "delete", "secret", "regcred"], None);
        let after = Instant::now();
        let gone = eventually(Duration::from_secs(10), || async {
            judged(&server, &with_pull(pod("ps-a", &image), &["regcred"], None)).await == ["REGISTRY_AUTH"]
        })
        .await;
        assert!(gone, "the deleted secret still works");
        println!("a deleted pull secret stopped working after {:?}", after.elapsed());

        // No credential in what verdict writes or exposes.
        let exposed = format!("{}{}", server.logs(), server.metrics_text().await);
        for secret in ["s3cret-pw", auth.as_str()] {
            assert!(!exposed.contains(secret), "a credential leaked");
        }
    });
}

/// Allowed unless the image's registry is not allowed (the shipped registries policy).
fn pod(name: &str, namespace: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image}]}})
}

fn deployment(name: &str, namespace: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}})
}

/// `kubectl create` of `doc` with `args`: (created, output).
fn create(kube: &Kube, doc: &Value, args: &[&str]) -> (bool, String) {
    let mut all = vec!["create", "-f", "-"];
    all.extend_from_slice(args);
    kube.try_kubectl(&kube.kubeconfig, &all, Some(&doc.to_string()))
}

/// The base's ValidatingWebhookConfiguration, pointed at `server` on loopback with its CA.
fn register(kube: &Kube, server: &Server) {
    let mut webhook = rendered("kustomize-base")
        .into_iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(&server.ca_pem);
    let url = format!("https://127.0.0.1:{}/validate", server.admission.port());
    for hook in webhook["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"] = json!({"url": url, "caBundle": ca});
    }
    apply(kube, vec![webhook]);
}

fn webhook(kube: &Kube) {
    kube.create_namespace("web");
    runtime().block_on(async {
        let server = verdict(kube, &[]);
        wait_ready(&server).await;
        register(kube, &server);
        // The API server picks the configuration up within a moment.
        let denied = pod("evil", "web", "evil.example/app:1");
        let mut out = String::new();
        let registered = eventually(Duration::from_secs(10), || {
            let (created, text) = create(kube, &denied, &["--dry-run=server"]);
            out = text;
            async move { !created }
        })
        .await;
        assert!(registered, "the API server never called verdict: {out}");
        assert!(
            out.contains("validate.verdict.dev") && out.contains("evil.example/app:1"),
            "verdict's message reaches the client: {out}"
        );
        assert!(out.contains("REGISTRY_NOT_ALLOWED"), "{out}");

        let (created, out) = create(kube, &pod("ok", "web", "docker.io/library/nginx:1.25"), &[]);
        assert!(created, "{out}");
        let app = deployment("app", "web", "docker.io/library/nginx:1.25");
        let (created, out) = create(kube, &app, &[]);
        assert!(created, "{out}");
        let (created, out) = create(kube, &denied, &[]);
        assert!(!created && out.contains("denied the request"), "{out}");

        // An UPDATE to a denied image is refused, the Deployment keeps its image.
        let (ok, out) = kube.try_kubectl(
            &kube.kubeconfig,
            &["-n", "web", "set", "image", "deployment/app", "app=evil.example/app:2"],
            None,
        );
        assert!(!ok && out.contains("evil.example/app:2"), "{out}");
        let image = kube.kubectl(
            &["-n", "web", "get", "deployment", "app", "-o", "jsonpath={.spec.template.spec.containers[0].image}"],
            None,
        );
        assert_eq!(image, "docker.io/library/nginx:1.25");

        // A server-side dry run is judged and creates nothing.
        let (created, out) = create(kube, &pod("dry", "web", "docker.io/library/nginx:1.25"), &["--dry-run=server"]);
        assert!(created, "{out}");
        let (found, _) = kube.try_kubectl(&kube.kubeconfig, &["-n", "web", "get", "pod", "dry"], None);
        assert!(!found, "a dry run created the Pod");

        // A namespace label policy, judged from the synced inventory.
        kube.label_namespace("web", "verdict.dev/require-digest=true");
        let tagged = pod("tagged", "web", "docker.io/library/nginx:1.25");
        let mut out = String::new();
        let applied = eventually(Duration::from_secs(2), || {
            let (created, text) = create(kube, &tagged, &["--dry-run=server"]);
            out = text;
            async move { !created }
        })
        .await;
        assert!(applied && out.contains("DIGEST_REQUIRED"), "{out}");
        let pinned = pod(
            "pinned",
            "web",
            "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        );
        let (created, out) = create(kube, &pinned, &[]);
        assert!(created, "{out}");
        kube.kubectl(&["delete", "validatingwebhookconfiguration", "verdict"], None);
    });
}

fn api_down(kube: &Kube) {
    kube.create_namespace("team-c");
    kube.label_namespace("team-c", "verdict.dev/require-digest=true");
    runtime().block_on(async {
        let server = verdict(kube, &[]);
        wait_ready(&server).await;
        let labelled = pod_review("team-c", &["docker.io/library/nginx:1.25"]);
        let plain = pod_review("team-a", &["docker.io/library/nginx:1.25"]);
        judged_within(
            &server,
            &labelled,
            &["DIGEST_REQUIRED"],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(judged(&server, &plain).await, Vec::<String>::new());

        kube.stop();
        // The watch fails and is retried; reviews go on with the last copy, unchanged.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for _ in 0..3 {
            assert_eq!(judged(&server, &labelled).await, ["DIGEST_REQUIRED"]);
            assert_eq!(judged(&server, &plain).await, Vec::<String>::new());
            let mut fresh = plain.clone();
            fresh["request"]["uid"] = json!(format!("{:?}", Instant::now()));
            assert_eq!(judged(&server, &fresh).await, Vec::<String>::new());
        }
        assert_eq!(
            readyz(&server).await.0,
            200,
            "the last copy keeps verdict ready"
        );
        let stale = eventually(Duration::from_secs(20), || async {
            let metrics = server.metrics_text().await;
            metrics.lines().any(|l| {
                l.starts_with("verdict_inventory_stale_seconds{kind=\"v1/Namespace\"}")
                    && !l.ends_with(" 0")
            }) && metrics.lines().any(|l| {
                l.starts_with("verdict_inventory_watch_restarts_total{kind=\"v1/Namespace\"}")
                    && !l.ends_with(" 0")
            })
        })
        .await;
        assert!(stale, "{}", server.metrics_text().await);
    });
}
