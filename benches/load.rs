//! `make bench` load benchmark: the release `verdict serve` over real TLS on 127.0.0.1,
//! driven by concurrent HTTP/2 and HTTP/1.1 clients, next to a no-op axum + rustls server
//! answering a fixed allowed review for the same bodies. Scenarios: (a) policies only,
//! (b) three images per Pod, all verified already, (c) cold verification against a local
//! docker-registry, (d) the twelve Gatekeeper library constraints of
//! `../shared/fixtures/gatekeeper-library` beside the shipped policies, each review evaluated
//! (a Pod of a name never sent before) or remembered (the same Pod again). Writes
//! `target/bench/results.json`, `results.md` and `latency.png`.
//!
//! verdict runs with a cluster: a real kube-apiserver (`../shared/k8s`) holding
//! `VERDICT_BENCH_NAMESPACES` (1,000) labelled namespaces, synced into its inventory, so the
//! remembered-review path is measured as a cluster runs it (0: no cluster). After the runs,
//! Services are created until verdict holds 10,000 synced objects, and its RSS is measured.
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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    bench_policies, client, copy_dir, fixed, free_port, pace, pod, rss_kib, start_verdict_with,
    wait_ready, Process, RunStats,
};

const BASELINE_ENV: &str = "VERDICT_BENCH_BASELINE";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Rounds of each closed-loop configuration, baseline and verdict taking turns; a row
/// pools its rounds. On these shared cores a round's throughput moves with what else the
/// host runs and its p99 with a single scheduler stall, so a row at concurrency 16 or 64
/// holds 128,000 reviews per server, two to four seconds of each.
const ROUNDS: usize = 8;
/// Reviews per round: a round at concurrency 16 or 64 lasts a quarter to half a second.
const PER_ROUND: usize = 16_000;
const PER_ROUND_SERIAL: usize = 1_000;
/// Offered rates of the open-loop runs of scenario (b), reviews per second: each runs for
/// `OPEN_ROUNDS` rounds of one second per server.
const RATES: [u32; 2] = [1000, 5000];
const OPEN_ROUNDS: usize = 3;

/// How a run loads the server.
#[derive(Clone, Copy)]
enum Load {
    /// This many clients, each sending its next review when its answer is in.
    Closed(usize),
    /// Reviews sent at this rate per second, whether or not earlier answers are in.
    Open(u32),
}

fn main() {
    // The baseline server: this binary re-executed by the benchmark.
    if let Ok(spec) = std::env::var(BASELINE_ENV) {
        return baseline_server(&spec);
    }
    support::bench_main("load", run_all);
}

#[derive(serde::Serialize, Clone)]
struct Row {
    server: String,
    scenario: String,
    protocol: String,
    /// Closed loop: clients each waiting for their answer before sending again.
    concurrency: Option<usize>,
    /// Open loop: reviews sent per second.
    offered_per_sec: Option<u32>,
    requests: usize,
    errors: usize,
    wrong_decisions: usize,
    reviews_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    peak_rss_mib: f64,
    /// Server CPU time (user + system) per review: the figure least moved by the shared cores.
    server_cpu_us_per_review: f64,
    /// The load generator's CPU time per review (this process).
    client_cpu_us_per_review: f64,
    /// Share of both cores busy during the run (server, load generator and the rest).
    machine_busy_pct: f64,
    throughput_vs_baseline: Option<f64>,
    p99_vs_baseline: Option<f64>,
}

impl Row {
    fn load(&self) -> String {
        match (self.concurrency, self.offered_per_sec) {
            (Some(c), _) => format!("c={c}"),
            (None, Some(rate)) => format!("{rate}/s"),
            (None, None) => String::new(),
        }
    }
}

fn row(server: &str, scenario: &str, http2: bool, load: Load, run: RunStats) -> Row {
    let RunStats {
        latency_us: hist,
        errors,
        wrong,
        elapsed,
        peak_rss_kib,
        server_cpu,
        client_cpu,
        machine_busy,
    } = run;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let per_review_us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / hist.len().max(1) as f64;
    Row {
        server: server.to_string(),
        scenario: scenario.to_string(),
        protocol: if http2 { "h2" } else { "http/1.1" }.to_string(),
        concurrency: match load {
            Load::Closed(c) => Some(c),
            Load::Open(_) => None,
        },
        offered_per_sec: match load {
            Load::Open(rate) => Some(rate),
            Load::Closed(_) => None,
        },
        requests: hist.len() as usize,
        errors,
        wrong_decisions: wrong,
        reviews_per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        server_cpu_us_per_review: per_review_us(server_cpu),
        client_cpu_us_per_review: per_review_us(client_cpu),
        machine_busy_pct: machine_busy * 100.0,
        throughput_vs_baseline: None,
        p99_vs_baseline: None,
    }
}

async fn run_all() {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let certs = support::dev_certs(&certs_dir);

    // The registry, signed images for (b), and a pool of cold signed images for (c).
    let registry = TestRegistry::start().await;
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let cold_per_run: usize = std::env::var("VERDICT_BENCH_COLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let mut signed = Vec::new();
    for i in 0..3 + cold_per_run * CONCURRENCY.len() * 2 {
        let repo = format!("bench/app{i}");
        signed.push(registry.push_signed(&key, &repo).await);
    }

    // Shipped policies, the local registry allowed, and an image policy for it.
    let policies = work.path().join("policies");
    bench_policies(&policies, &registry.host, &key.public_pem);

    let namespaces: usize = std::env::var("VERDICT_BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = (namespaces > 0).then(|| cluster_with_namespaces(namespaces));
    let mut flags = Vec::new();
    if let Some(kube) = &cluster {
        // Services are synced too (none yet): the 10,000-object measurement adds them.
        std::fs::write(
            policies.join("sync.yaml"),
            "apiVersion: syncset.gatekeeper.sh/v1alpha1\nkind: SyncSet\nmetadata: {name: bench}\nspec:\n  gvks: [{version: v1, kind: Service}]\n",
        )
        .unwrap();
        flags = vec![
            "--kubeconfig".to_string(),
            kube.kubeconfig.display().to_string(),
        ];
    }
    // More flags for verdict, to take a cost apart (e.g. `--pull-secrets=false`).
    if let Ok(more) = std::env::var("VERDICT_BENCH_FLAGS") {
        flags.extend(more.split_whitespace().map(String::from));
    }
    let verdict = start_verdict_with(&certs_dir, &policies, &registry.host, &flags).await;
    if cluster.is_some() {
        let synced = verdict
            .metric("verdict_inventory_objects{kind=\"v1/Namespace\"}")
            .await;
        println!("verdict synced {synced} namespaces");
        assert!(
            synced as usize >= namespaces,
            "{synced} of {namespaces} synced"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(verdict.child.id());
    let baseline = start_baseline(&certs_dir).await;
    let baseline_idle_rss = rss_kib(baseline.child.id());
    println!(
        "verdict ready after {:?}, idle RSS {:.1} MiB; baseline ready after {:?}",
        verdict.ready_after,
        idle_rss as f64 / 1024.0,
        baseline.ready_after
    );

    let policies_only: Vec<String> = [
        "ghcr.io/acme/app:v1.2.3",
        "docker.io/library/nginx:1.27",
        "registry.k8s.io/pause:3.9",
    ]
    .map(String::from)
    .to_vec();
    let warm: Vec<String> = signed[..3].to_vec();
    let mut cold = signed[3..]
        .chunks(cold_per_run)
        .map(<[String]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let n = |c: usize| if c == 1 { PER_ROUND_SERIAL } else { PER_ROUND };
    let mut rows = Vec::new();

    for http2 in [true, false] {
        let servers = [
            Target::new(&baseline, &certs.ca_pem, http2),
            Target::new(&verdict, &certs.ca_pem, http2),
        ];
        // Warm the three images of (b) and the connections of both clients.
        warm_up(&servers, &warm).await;
        for concurrency in CONCURRENCY {
            for (scenario, images) in [
                ("a-policies-only", &policies_only),
                ("b-3-images-cached", &warm),
            ] {
                let total = n(concurrency);
                let bodies = fixed((0..total).map(|i| pod(images, i)).collect(), true);
                let runs = rounds(ROUNDS, &servers, |server| {
                    server.drive(bodies.clone(), total, concurrency)
                })
                .await;
                rows.extend(pair(scenario, http2, Load::Closed(concurrency), runs));
            }
            let images = cold.next().unwrap();
            let bodies = fixed(
                images
                    .iter()
                    .enumerate()
                    .map(|(i, image)| pod(std::slice::from_ref(image), i))
                    .collect(),
                true,
            );
            let ours = &servers[1];
            let run = ours.drive(bodies, images.len(), concurrency).await;
            let ours = row(
                "verdict",
                "c-cold-verification",
                http2,
                Load::Closed(concurrency),
                run,
            );
            println!("{}", line(&ours));
            rows.push(ours);
        }
        for per_sec in RATES {
            let total = per_sec as usize;
            let bodies = fixed((0..total).map(|i| pod(&warm, i)).collect(), true);
            let runs = rounds(OPEN_ROUNDS, &servers, |server| {
                pace(
                    &server.client,
                    &server.url,
                    bodies.clone(),
                    total,
                    per_sec,
                    server.pid,
                )
            })
            .await;
            rows.extend(pair("b-3-images-cached", http2, Load::Open(per_sec), runs));
        }
    }
    let gatekeeper = gatekeeper_runs(
        &work.path().join("policies-gatekeeper"),
        &policies,
        &certs_dir,
        &registry.host,
        &flags,
        &baseline,
        &certs.ca_pem,
        &warm,
    )
    .await;
    rows.extend(gatekeeper.0);
    let loaded_rss = rss_kib(verdict.child.id());
    let synced_rss = match &cluster {
        Some(kube) => Some(rss_with_synced_objects(kube, &verdict, namespaces, 10_000).await),
        None => None,
    };
    let registry_requests = registry_requests(&verdict, &registry.host).await;
    let cold_images = cold_per_run * CONCURRENCY.len() * 2 + 3;
    let summary = json!({
        "verdict_start_to_ready_ms": verdict.ready_after.as_secs_f64() * 1000.0,
        "baseline_start_to_ready_ms": baseline.ready_after.as_secs_f64() * 1000.0,
        "verdict_idle_rss_mib": idle_rss as f64 / 1024.0,
        "baseline_idle_rss_mib": baseline_idle_rss as f64 / 1024.0,
        "verdict_rss_after_runs_mib": loaded_rss as f64 / 1024.0,
        "synced_namespaces": namespaces,
        "verdict_rss_10000_synced_objects_mib": synced_rss.map(|(rss, _)| rss as f64 / 1024.0),
        "seconds_to_sync_10000_objects": synced_rss.map(|(_, took)| took.as_secs_f64()),
        "cached_digests_after_runs": cold_images,
        "registry_requests_per_cold_image": registry_requests.values().sum::<u64>() as f64 / cold_images as f64,
        "registry_requests_by_status": registry_requests,
        "gatekeeper_constraints": gatekeeper.1,
        "gatekeeper_decision_cache_hits_evaluated_vs_remembered": gatekeeper.2,
        "rows": rows,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("results.md"), markdown(&summary, &rows)).unwrap();
    chart(&out.join("latency.png"), &rows);
    println!("{}", markdown(&summary, &rows));
    println!(
        "wrote {0}/results.json, {0}/results.md, {0}/latency.png",
        out.display()
    );
    let wrong: usize = rows.iter().map(|r| r.wrong_decisions).sum();
    assert_eq!(
        wrong, 0,
        "{wrong} answers were not the expected decision: these figures are not of the path they claim"
    );
}

/// Rounds and reviews per round of scenario (d): its evaluated runs are several times
/// slower than the others.
const GATEKEEPER_ROUNDS: usize = 4;
const GATEKEEPER_PER_ROUND: usize = 4_000;

/// Scenario (d): verdict with `policies` plus the twelve library constraints (the first test
/// of each suite), as `dryrun` so that the bench Pods stay admitted while every matching
/// constraint is evaluated, against the baseline over HTTP/2. Returns the rows, how many
/// constraints were loaded, and the decision cache hit ratio of the evaluated and the
/// remembered runs.
#[allow(clippy::too_many_arguments)]
async fn gatekeeper_runs(
    dir: &Path,
    policies: &Path,
    certs_dir: &Path,
    registry_host: &str,
    flags: &[String],
    baseline: &Process,
    ca_pem: &str,
    warm: &[String],
) -> (Vec<Row>, usize, [f64; 2]) {
    copy_dir(policies, dir);
    let constraints = library_constraints(&dir.join("gatekeeper"));
    let verdict = start_verdict_with(certs_dir, dir, registry_host, flags).await;
    let servers = [
        Target::new(baseline, ca_pem, true),
        Target::new(&verdict, ca_pem, true),
    ];
    warm_up(&servers, warm).await;
    let mut rows = Vec::new();
    let mut ratios = [0.0; 2];
    for concurrency in [16, 64] {
        for (i, scenario) in ["d-gatekeeper-evaluated", "d-gatekeeper-remembered"]
            .into_iter()
            .enumerate()
        {
            let total = GATEKEEPER_PER_ROUND;
            // Evaluated: every review a Pod of a new name, never sent before (built as it
            // is sent, for both servers alike). Remembered: the same Pod each time.
            let bodies: support::Bodies = if i == 0 {
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(1_000_000 * concurrency));
                let warm = warm.to_vec();
                Arc::new(move |_| {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (pod(&warm, n).into(), true)
                })
            } else {
                fixed((0..total).map(|_| pod(warm, 7)).collect(), true)
            };
            let hits =
                |m: &str| support::sample(m, "verdict_policy_decision_cache_total{result=\"hit\"}");
            let misses = |m: &str| {
                support::sample(m, "verdict_policy_decision_cache_total{result=\"miss\"}")
            };
            let before = verdict.metrics().await;
            let runs = rounds(GATEKEEPER_ROUNDS, &servers, |server| {
                server.drive(bodies.clone(), total, concurrency)
            })
            .await;
            let after = verdict.metrics().await;
            let (h, m) = (
                hits(&after) - hits(&before),
                misses(&after) - misses(&before),
            );
            ratios[i] = h / (h + m).max(1.0);
            println!(
                "{scenario} c={concurrency}: decision cache hit ratio {:.3}",
                ratios[i]
            );
            rows.extend(pair(scenario, true, Load::Closed(concurrency), runs));
        }
    }
    (rows, constraints, ratios)
}

/// Writes the template and first tested constraint of each library policy into `dir`,
/// the constraint as `dryrun`; returns how many.
fn library_constraints(dir: &Path) -> usize {
    let library =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gatekeeper-library");
    std::fs::create_dir_all(dir).unwrap();
    let mut count = 0;
    for group in ["general", "pod-security-policy"] {
        for entry in std::fs::read_dir(library.join(group)).unwrap() {
            let policy = entry.unwrap().path();
            let Ok(suite) = std::fs::read_to_string(policy.join("suite.yaml")) else {
                continue;
            };
            let suite: Value = yaml_serde::from_str(&suite).unwrap();
            let test = &suite["tests"][0];
            let name = policy.file_name().unwrap().to_string_lossy().to_string();
            std::fs::copy(
                policy.join(test["template"].as_str().unwrap()),
                dir.join(format!("{name}-template.yaml")),
            )
            .unwrap();
            let text =
                std::fs::read_to_string(policy.join(test["constraint"].as_str().unwrap())).unwrap();
            let mut constraint: Value = yaml_serde::from_str(&text).unwrap();
            constraint["spec"]["enforcementAction"] = json!("dryrun");
            std::fs::write(
                dir.join(format!("{name}-constraint.json")),
                constraint.to_string(),
            )
            .unwrap();
            count += 1;
        }
    }
    assert_eq!(count, 12, "the twelve library policies");
    count
}

/// A kube-apiserver with `n` labelled namespaces (`team-a`, the one bench Pods are in,
/// among them).
fn cluster_with_namespaces(n: usize) -> kube::Kube {
    let kube = kube::Kube::start();
    let started = Instant::now();
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let name = bench_namespace(i);
            // Labels no shipped policy acts on: the decisions stay those of scenario (b).
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                "labels": {"bench.verdict.dev/index": i.to_string(), "team": format!("team-{}", i % 50)}}})
        })
        .collect();
    create_all(&kube, &items, 500);
    println!("{n} namespaces created in {:?}", started.elapsed());
    kube
}

/// Namespace `i` of the bench cluster: `team-a` (where the bench Pods are) first.
fn bench_namespace(i: usize) -> String {
    if i == 0 {
        "team-a".to_string()
    } else {
        format!("ns-{i:05}")
    }
}

/// Creates `items` with kubectl, `chunk` of them per request.
fn create_all(kube: &kube::Kube, items: &[Value], chunk: usize) {
    for chunk in items.chunks(chunk) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        kube.kubectl(
            &["create", "-f", "-", "-o", "name"],
            Some(&list.to_string()),
        );
    }
}

/// Creates headless Services until verdict holds `total` synced objects (with the
/// `namespaces`), waits until it has them all, and gives its RSS then (KiB) and how long
/// the sync took from the first create.
async fn rss_with_synced_objects(
    kube: &kube::Kube,
    verdict: &Process,
    namespaces: usize,
    total: usize,
) -> (u64, Duration) {
    let services = total.saturating_sub(namespaces);
    let started = Instant::now();
    let items: Vec<Value> = (0..services)
        .map(|i| {
            let ns = bench_namespace(i % namespaces);
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{i}"), "namespace": ns, "labels": {"app": format!("app-{i}")}},
                "spec": {"clusterIP": "None", "selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]}})
        })
        .collect();
    create_all(kube, &items, 1000);
    loop {
        let held = verdict
            .metric("verdict_inventory_objects{kind=\"v1/Service\"}")
            .await;
        if held as usize >= services {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{held} of {services} Services synced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(verdict.child.id());
    println!(
        "{total} synced objects ({namespaces} namespaces, {services} Services) in {took:?}: RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    (rss, took)
}

/// One server under test, as the load generator reaches it.
struct Target {
    client: support::Client,
    url: String,
    pid: u32,
}

impl Target {
    fn new(server: &Process, ca_pem: &str, http2: bool) -> Self {
        Target {
            client: client(ca_pem, http2),
            url: format!("https://localhost:{}/validate?timeout=10s", server.port),
            pid: server.child.id(),
        }
    }

    /// A closed-loop run of `total` of `bodies` at `concurrency` (see `support::drive`).
    async fn drive(&self, bodies: support::Bodies, total: usize, concurrency: usize) -> RunStats {
        support::drive(
            &self.client,
            &self.url,
            bodies,
            total,
            concurrency,
            self.pid,
        )
        .await
    }
}

/// 64 reviews of Pods with `images` to each server: images verified, connections open.
async fn warm_up(servers: &[Target; 2], images: &[String]) {
    let warmup = fixed((0..64).map(|i| pod(images, i)).collect(), true);
    for server in servers {
        server.drive(warmup.clone(), 64, 64).await;
    }
}

/// `n` rounds of one load against the baseline and then verdict (`servers`, in that
/// order), pooled per server.
async fn rounds<'a, F>(
    n: usize,
    servers: &'a [Target; 2],
    mut run: impl FnMut(&'a Target) -> F,
) -> (RunStats, RunStats)
where
    F: std::future::Future<Output = RunStats>,
{
    let (mut base, mut ours) = (run(&servers[0]).await, run(&servers[1]).await);
    for _ in 1..n {
        base.add(run(&servers[0]).await);
        ours.add(run(&servers[1]).await);
    }
    (base, ours)
}

/// The baseline's and verdict's rows of one configuration, verdict's with its ratios.
fn pair(scenario: &str, http2: bool, load: Load, (base, ours): (RunStats, RunStats)) -> [Row; 2] {
    let base = row("baseline", scenario, http2, load, base);
    let mut ours = row("verdict", scenario, http2, load, ours);
    ours.throughput_vs_baseline = Some(ours.reviews_per_sec / base.reviews_per_sec);
    ours.p99_vs_baseline = Some(ours.p99_ms / base.p99_ms);
    println!("{}\n{}", line(&base), line(&ours));
    [base, ours]
}

async fn start_baseline(certs: &Path) -> Process {
    let port = free_port();
    let started = Instant::now();
    let spec = format!(
        "127.0.0.1:{port},{},{}",
        certs.join("tls.crt").display(),
        certs.join("tls.key").display()
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .env(BASELINE_ENV, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready_after = wait_ready(&format!("https://127.0.0.1:{port}/healthz"), started).await;
    Process {
        child,
        log_reader: None,
        port,
        metrics_port: 0,
        ready_after,
    }
}

/// The no-op baseline: axum behind rustls (the same TLS setup as verdict), reading each
/// body and answering a fixed allowed review.
fn baseline_server(spec: &str) {
    use axum::routing::{get, post};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let mut parts = spec.split(',');
    let (addr, cert, key) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(verdict::server::tls::CertStore::load(Path::new(&cert), Path::new(&key)).unwrap());
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(verdict::server::tls::server_config(store).unwrap()));
        let answer = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true,"status":{"metadata":{},"code":200}}}"#;
        let app = axum::Router::new()
            .route("/validate", post(move |_body: axum::body::Bytes| async move { ([("content-type", "application/json")], answer) }))
            .route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            // As verdict does: without it, Nagle and delayed ACKs add 40 ms stalls.
            let _ = stream.set_nodelay(true);
            let (tls, app) = (tls.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(stream).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Requests verdict made to the registry, by HTTP status.
async fn registry_requests(
    verdict: &Process,
    host: &str,
) -> std::collections::BTreeMap<String, u64> {
    verdict
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("verdict_registry_requests_total{") && l.contains(host))
        .filter_map(|l| {
            let status = l.split("status=\"").nth(1)?.split('"').next()?.to_string();
            Some((status, l.rsplit(' ').next()?.parse::<u64>().ok()?))
        })
        .collect()
}

fn line(r: &Row) -> String {
    format!(
        "{:8} {:22} {:8} {:<7} {:>8.0}/s p50 {:>7.2}ms p90 {:>7.2}ms p99 {:>7.2}ms p99.9 {:>7.2}ms errors {} wrong {} rss {:.1}MiB cpu {:.0}us/review (client {:.0}) busy {:.0}%{}",
        r.server, r.scenario, r.protocol, r.load(), r.reviews_per_sec, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.errors, r.wrong_decisions, r.peak_rss_mib, r.server_cpu_us_per_review,
        r.client_cpu_us_per_review, r.machine_busy_pct,
        r.throughput_vs_baseline.map(|t| format!(" | {t:.2}x baseline throughput, p99 {:.2}x", r.p99_vs_baseline.unwrap_or(0.0))).unwrap_or_default()
    )
}

fn markdown(summary: &Value, rows: &[Row]) -> String {
    let mut md = String::from("# verdict load benchmark\n\n");
    md.push_str(&format!(
        "start to ready: verdict {:.1} ms, baseline {:.1} ms; idle RSS: verdict {:.1} MiB, baseline {:.1} MiB; verdict RSS after the runs ({} cached digests): {:.1} MiB; registry requests per cold image: {:.2}\n\n",
        summary["verdict_start_to_ready_ms"].as_f64().unwrap_or(0.0),
        summary["baseline_start_to_ready_ms"].as_f64().unwrap_or(0.0),
        summary["verdict_idle_rss_mib"].as_f64().unwrap_or(0.0),
        summary["baseline_idle_rss_mib"].as_f64().unwrap_or(0.0),
        summary["cached_digests_after_runs"],
        summary["verdict_rss_after_runs_mib"].as_f64().unwrap_or(0.0),
        summary["registry_requests_per_cold_image"].as_f64().unwrap_or(0.0),
    ));
    md.push_str("| server | scenario | protocol | load | reviews/s | vs baseline | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 vs baseline | errors | wrong | peak RSS MiB | server CPU µs/review | load generator CPU µs/review | machine busy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0}% |\n",
            r.server, r.scenario, r.protocol, r.load(), r.reviews_per_sec,
            r.throughput_vs_baseline.map(|t| format!("{t:.2}x")).unwrap_or_default(),
            r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms,
            r.p99_vs_baseline.map(|t| format!("{t:.2}x")).unwrap_or_default(),
            r.errors, r.wrong_decisions, r.peak_rss_mib, r.server_cpu_us_per_review,
            r.client_cpu_us_per_review, r.machine_busy_pct
        ));
    }
    md
}

/// p50 and p99 per configuration as horizontal bars: cached scenarios (with the baseline)
/// on the left, cold verification on the right, each on its own scale.
fn chart(path: &Path, rows: &[Row]) {
    use plotters::prelude::*;
    if let Ok(font) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") {
        let font: &'static [u8] = Box::leak(font.into_boxed_slice());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    }
    let root = BitMapBackend::new(path, (1600, 1000)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let root = root
        .titled(
            "verdict vs no-op baseline: p50 (dark) and p99 (light) latency in ms",
            ("sans-serif", 26),
        )
        .unwrap();
    let (left, right) = root.split_horizontally(1000);
    let cached: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario != "c-cold-verification")
        .collect();
    let cold: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario == "c-cold-verification")
        .collect();
    for (area, rows, title) in [
        (
            left,
            cached,
            "policies only (a) and cached verification (b)",
        ),
        (right, cold, "cold verification (c)"),
    ] {
        let max = rows.iter().map(|r| r.p99_ms).fold(0.1, f64::max) * 1.1;
        let n = rows.len() as u32;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(230)
            .build_cartesian_2d(0f64..max, (0u32..n).into_segmented())
            .unwrap();
        let label = |i: &u32| {
            rows.get(*i as usize)
                .map(|r| {
                    format!(
                        "{} {} {} {}",
                        r.server,
                        &r.scenario[..1],
                        if r.protocol == "h2" { "h2" } else { "h1" },
                        r.load()
                    )
                })
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => label(i),
                SegmentValue::Last => String::new(),
            })
            .y_label_style(("sans-serif", 14))
            .x_desc("ms")
            .draw()
            .unwrap();
        for (i, r) in rows.iter().enumerate() {
            let i = i as u32;
            let color = if r.server == "baseline" { BLUE } else { RED };
            let bar = |to: f64, style: ShapeStyle| {
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (to, SegmentValue::Exact(i + 1)),
                    ],
                    style,
                )
            };
            chart
                .draw_series([bar(r.p99_ms, color.mix(0.3).filled())])
                .unwrap();
            chart.draw_series([bar(r.p50_ms, color.filled())]).unwrap();
        }
    }
    root.present().unwrap();
}
