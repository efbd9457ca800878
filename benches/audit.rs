//! `make bench` audit benchmark: a real kube-apiserver (`../shared/k8s`) holding
//! `VERDICT_BENCH_AUDIT_OBJECTS` (5,000) objects, Deployments and their Pods (four Pods
//! to a Deployment, owned by it, each as its template says) in 20 namespaces, using
//! `VERDICT_BENCH_AUDIT_IMAGES` (200) distinct images signed in a local docker-registry and
//! required to be by an image policy. Measures:
//!
//! 1. `verdict audit` (one shot, a fresh process: its first judgement of each image
//!    verifies it): wall time, objects judged per second, peak RSS;
//! 2. `verdict serve --audit-interval`: its first background audit (images verified on the
//!    way) and a later one (images known), objects per second at its bounded pace, peak RSS;
//! 3. admission beside it: p50/p99 of reviews at concurrency 16 while an audit runs and
//!    while none does (rounds are classed by `verdict_audit_running`).
//!
//! Writes `target/bench/audit.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/common/kube.rs"]
mod kube;
#[path = "../tests/common/registry/mod.rs"]
mod registry;
mod support;

use registry::{TestKey, TestRegistry};
use serde_json::{json, Value};
use sigstore::crypto::SigningScheme;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    bench_policies, client, drive, fixed, peak_rss_kib, pod, start_verdict_with, RunStats,
};

const NAMESPACES: usize = 20;
const PODS_PER_DEPLOYMENT: usize = 4;
/// Reviews per admission round, and rounds wanted of each class.
const PER_ROUND: usize = 2_000;
const ROUNDS: usize = 6;

fn main() {
    support::bench_main("audit", run);
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn run() {
    let objects = env("VERDICT_BENCH_AUDIT_OBJECTS", 5_000);
    let distinct = env("VERDICT_BENCH_AUDIT_IMAGES", 200);
    let deployments = objects / (1 + PODS_PER_DEPLOYMENT);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let certs = support::dev_certs(&certs_dir);

    let registry = TestRegistry::start().await;
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let mut images = Vec::new();
    for i in 0..distinct {
        let repo = format!("audit/app{i}");
        images.push(registry.push_signed(&key, &repo).await);
    }
    let policies = work.path().join("policies");
    bench_policies(&policies, &registry.host, &key.public_pem);

    let kube = kube::Kube::start();
    let started = Instant::now();
    kube.kubectl(
        &["create", "-f", "-"],
        Some(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds/wgpolicyk8s.io.yaml"),
            )
            .unwrap(),
        ),
    );
    let namespace = |i: usize| format!("team-{:02}", i % NAMESPACES);
    create_all(
        &kube,
        &(0..NAMESPACES)
            .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace(i)}}))
            .collect::<Vec<_>>(),
    );
    let template = |i: usize| {
        json!({"metadata": {"labels": {"app": format!("app{i}")}},
               "spec": {"containers": [{"name": "app", "image": images[i % distinct]}]}})
    };
    create_all(
        &kube,
        &(0..deployments)
            .map(|i| {
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": format!("app{i}"), "namespace": namespace(i)},
                       "spec": {"replicas": PODS_PER_DEPLOYMENT,
                                "selector": {"matchLabels": {"app": format!("app{i}")}},
                                "template": template(i)}})
            })
            .collect::<Vec<_>>(),
    );
    let listed: Value =
        serde_json::from_str(&kube.kubectl(&["get", "deployments", "-A", "-o", "json"], None))
            .unwrap();
    let uids: std::collections::HashMap<String, String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                d["metadata"]["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pods: Vec<Value> = (0..deployments * PODS_PER_DEPLOYMENT)
        .map(|p| {
            let i = p / PODS_PER_DEPLOYMENT;
            let owner = format!("app{i}");
            let mut pod = template(i);
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            pod["metadata"]["name"] = json!(format!("app{i}-{}", p % PODS_PER_DEPLOYMENT));
            pod["metadata"]["namespace"] = json!(namespace(i));
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": owner, "uid": uids[&owner], "controller": true}]);
            pod
        })
        .collect();
    create_all(&kube, &pods);
    let total = deployments * (1 + PODS_PER_DEPLOYMENT);
    println!(
        "{total} objects ({deployments} Deployments, {} Pods, {distinct} images) created in {:?}",
        pods.len(),
        started.elapsed()
    );

    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Audit benchmark\n\n{total} objects: {deployments} Deployments and {} Pods (owned by them) in \
         {NAMESPACES} namespaces, {distinct} distinct signed images, shipped policies plus an image \
         policy requiring a signature by a key.\n",
        pods.len()
    );

    // 1. verdict audit, one shot.
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["audit", "--output", "json", "--kubeconfig"])
        .arg(&kube.kubeconfig)
        .arg("--policies")
        .arg(&policies)
        .args(["--insecure-registry", &registry.host])
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut text).unwrap();
        text
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let printed: Value = serde_json::from_str(&reader.join().unwrap()).unwrap();
    let reported = printed["objects"].as_array().unwrap().len();
    let line = format!(
        "verdict audit (one shot, {distinct} images verified on the way): {total} objects in {took:.2?}, \
         {:.0} objects/s, {reported} reported (Pods folded into their Deployment), peak RSS {:.1} MiB",
        total as f64 / took.as_secs_f64(),
        mib(peak)
    );
    println!("{line}");
    let _ = writeln!(report, "- {line}");

    // 2. serve with the background audit.
    let verdict = start_verdict_with(
        &certs_dir,
        &policies,
        &registry.host,
        &[
            "--kubeconfig".to_string(),
            kube.kubeconfig.display().to_string(),
            "--audit-interval".to_string(),
            "10s".to_string(),
        ],
    )
    .await;
    let succeeded = |n: f64| {
        let verdict = &verdict;
        async move {
            let waited = Instant::now();
            while verdict
                .metric("verdict_audit_runs_total{result=\"success\"}")
                .await
                < n
            {
                assert!(
                    waited.elapsed() < Duration::from_secs(300),
                    "no audit finished"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (
                verdict.metric("verdict_audit_duration_seconds").await,
                verdict.metric("verdict_audit_objects").await,
            )
        }
    };
    for (n, what) in [
        (1.0, "first: images verified on the way"),
        (2.0, "images known"),
    ] {
        let (seconds, judged) = succeeded(n).await;
        let line = format!(
            "serve background audit ({what}): {judged} objects in {seconds:.2} s, {:.0} objects/s \
             (paced: a quarter of its time judging)",
            judged / seconds
        );
        println!("{line}");
        let _ = writeln!(report, "- {line}");
    }

    // 3. Admission beside it: rounds classed by whether an audit ran all through them.
    let client = client(&certs.ca_pem, true);
    let url = format!("https://127.0.0.1:{}/validate", verdict.port);
    let bodies = fixed(
        (0..64)
            .map(|i| pod(&[images[i % distinct].clone()], i))
            .collect(),
        true,
    );
    let round = || {
        drive(
            &client,
            &url,
            bodies.clone(),
            PER_ROUND,
            16,
            verdict.child.id(),
        )
    };
    round().await;
    let (mut quiet, mut during): (Option<RunStats>, Option<RunStats>) = (None, None);
    let (mut quiet_rounds, mut during_rounds) = (0, 0);
    let pool = |into: &mut Option<RunStats>, stats: RunStats| match into {
        Some(all) => all.add(stats),
        None => *into = Some(stats),
    };
    let started = Instant::now();
    while (quiet_rounds < ROUNDS || during_rounds < ROUNDS)
        && started.elapsed() < Duration::from_secs(180)
    {
        let before = verdict.metric("verdict_audit_running").await;
        let stats = round().await;
        let after = verdict.metric("verdict_audit_running").await;
        assert_eq!((stats.errors, stats.wrong), (0, 0));
        match (before, after) {
            (b, a) if b == 0.0 && a == 0.0 && quiet_rounds < ROUNDS => {
                pool(&mut quiet, stats);
                quiet_rounds += 1;
            }
            (b, a) if b == 1.0 && a == 1.0 && during_rounds < ROUNDS => {
                pool(&mut during, stats);
                during_rounds += 1;
            }
            _ => {}
        }
    }
    for (name, stats, rounds) in [
        ("no audit running", &quiet, quiet_rounds),
        ("during an audit", &during, during_rounds),
    ] {
        let Some(stats) = stats else {
            let line = format!("admission {name}: no round fell in this class");
            println!("{line}");
            let _ = writeln!(report, "- {line}");
            continue;
        };
        let line = format!(
            "admission {name} (h2, concurrency 16, {rounds} rounds, {} reviews): {:.0}/s, p50 {} µs, p99 {} µs",
            stats.latency_us.len(),
            stats.latency_us.len() as f64 / stats.elapsed.as_secs_f64(),
            stats.latency_us.value_at_quantile(0.5),
            stats.latency_us.value_at_quantile(0.99),
        );
        println!("{line}");
        let _ = writeln!(report, "- {line}");
    }
    let line = format!(
        "serve peak RSS through all of it: {:.1} MiB",
        mib(peak_rss_kib(verdict.child.id()))
    );
    println!("{line}");
    let _ = writeln!(report, "- {line}");
    std::fs::write(out.join("audit.md"), report).unwrap();
}

/// Creates `items` with kubectl, 500 to a request.
fn create_all(kube: &kube::Kube, items: &[Value]) {
    for chunk in items.chunks(500) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        kube.kubectl(
            &["create", "-f", "-", "-o", "name"],
            Some(&list.to_string()),
        );
    }
}
