//! `make bench` load benchmark: the release `verdict serve` over real TLS on 127.0.0.1,
//! driven by concurrent HTTP/2 and HTTP/1.1 clients, next to a no-op axum + rustls server
//! answering a fixed allowed review for the same bodies. Scenarios: (a) policies only,
//! (b) three images per Pod, all verified already, (c) cold verification against a local
//! docker-registry. Writes `target/bench/results.json`, `results.md` and `latency.png`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/registry.rs"]
mod registry;

use hdrhistogram::Histogram;
use registry::{payload, TestKey, TestRegistry};
use serde_json::{json, Value};
use sigstore::crypto::SigningScheme;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASELINE_ENV: &str = "VERDICT_BENCH_BASELINE";
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    if let Ok(spec) = std::env::var(BASELINE_ENV) {
        return baseline_server(&spec);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_all());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Process {
    child: Child,
    port: u16,
    metrics_port: u16,
    ready_after: Duration,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(url: &str, started: Instant) -> Duration {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn start_verdict(certs: &Path, policies: &Path, registry_host: &str) -> Process {
    let (port, metrics_port) = (free_port(), free_port());
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .arg("--policies")
        .arg(policies)
        .args([
            "--insecure-registry",
            registry_host,
            "--tag-cache-ttl",
            "10m",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready_after = wait_ready(&format!("http://127.0.0.1:{metrics_port}/readyz"), started).await;
    Process {
        child,
        port,
        metrics_port,
        ready_after,
    }
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

fn pod(images: &[String], uid: usize) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("bench-{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "team-a",
            "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{uid}"), "namespace": "team-a"},
                       "spec": {"containers": containers}}}
    }))
    .unwrap()
}

fn client(ca_pem: &str, http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30));
    if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    }
    .build()
    .unwrap()
}

#[derive(serde::Serialize, Clone)]
struct Row {
    server: String,
    scenario: String,
    protocol: String,
    concurrency: usize,
    requests: usize,
    errors: usize,
    wrong_decisions: usize,
    reviews_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    peak_rss_mib: f64,
    throughput_vs_baseline: Option<f64>,
    p99_vs_baseline: Option<f64>,
}

/// Sends `bodies` (in order, each once) at `concurrency`; every answer must be HTTP 200 with `allowed == expect`.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    expect: bool,
    pid: u32,
) -> (Histogram<u64>, usize, usize, Duration, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, bodies, next) = (
                client.clone(),
                url.to_string(),
                bodies.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut errors, mut wrong) = (0, 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let verdict = match response {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    hist.record(sent.elapsed().as_micros() as u64).unwrap();
                    match verdict {
                        None => errors += 1,
                        Some(v) if v["response"]["allowed"] != expect => wrong += 1,
                        Some(_) => {}
                    }
                }
                (hist, errors, wrong)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut errors, mut wrong) = (0, 0);
    for worker in workers {
        let (hist, e, w) = worker.await.unwrap();
        total.add(hist).unwrap();
        errors += e;
        wrong += w;
    }
    let elapsed = started.elapsed();
    sampler.abort();
    (total, errors, wrong, elapsed, peak.load(Ordering::Relaxed))
}

fn row(
    server: &str,
    scenario: &str,
    http2: bool,
    concurrency: usize,
    run: (Histogram<u64>, usize, usize, Duration, u64),
) -> Row {
    let (hist, errors, wrong, elapsed, peak) = run;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Row {
        server: server.to_string(),
        scenario: scenario.to_string(),
        protocol: if http2 { "h2" } else { "http/1.1" }.to_string(),
        concurrency,
        requests: hist.len() as usize,
        errors,
        wrong_decisions: wrong,
        reviews_per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        peak_rss_mib: peak as f64 / 1024.0,
        throughput_vs_baseline: None,
        p99_vs_baseline: None,
    }
}

async fn run_all() {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let certs = verdict::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap();
    verdict::certs::write(&certs_dir, &certs).unwrap();

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
        let digest = registry.push_image(&repo, "v1").await;
        registry
            .push_signatures(&repo, &digest, &[key.layer(payload(&repo, &digest))])
            .await;
        signed.push(format!("{}/{repo}:v1", registry.host));
    }

    // Shipped policies, the local registry allowed, and an image policy for it.
    let policies = work.path().join("policies");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies"),
        &policies,
    );
    let registries = policies.join("settings/registries.yaml");
    let text = std::fs::read_to_string(&registries).unwrap();
    std::fs::write(&registries, format!("{text}  - \"{}\"\n", registry.host)).unwrap();
    std::fs::write(policies.join("k.pub"), &key.public_pem).unwrap();
    std::fs::write(
        policies.join("images.yaml"),
        format!("apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: bench}}\nspec:\n  images: [{{glob: '{}/**'}}]\n  authorities:\n  - key: {{file: k.pub}}\n", registry.host),
    )
    .unwrap();

    let verdict = start_verdict(&certs_dir, &policies, &registry.host).await;
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
        .map(|c| c.to_vec())
        .collect::<Vec<_>>()
        .into_iter();
    let n = |c: usize| if c == 1 { 400 } else { 3000 };
    let mut rows = Vec::new();

    for http2 in [true, false] {
        let verdict_client = client(&certs.ca_pem, http2);
        let baseline_client = client(&certs.ca_pem, http2);
        let verdict_url = format!("https://localhost:{}/validate?timeout=10s", verdict.port);
        let baseline_url = format!("https://localhost:{}/validate?timeout=10s", baseline.port);
        // Warm the three images of (b) and the connections of both clients.
        let warmup = Arc::new((0..64).map(|i| pod(&warm, i)).collect::<Vec<_>>());
        drive(
            &verdict_client,
            &verdict_url,
            warmup.clone(),
            64,
            true,
            verdict.child.id(),
        )
        .await;
        drive(
            &baseline_client,
            &baseline_url,
            warmup,
            64,
            true,
            baseline.child.id(),
        )
        .await;
        for concurrency in CONCURRENCY {
            for (scenario, images) in [
                ("a-policies-only", &policies_only),
                ("b-3-images-cached", &warm),
            ] {
                let bodies = Arc::new(
                    (0..n(concurrency))
                        .map(|i| pod(images, i))
                        .collect::<Vec<_>>(),
                );
                let base = row(
                    "baseline",
                    scenario,
                    http2,
                    concurrency,
                    drive(
                        &baseline_client,
                        &baseline_url,
                        bodies.clone(),
                        concurrency,
                        true,
                        baseline.child.id(),
                    )
                    .await,
                );
                let mut ours = row(
                    "verdict",
                    scenario,
                    http2,
                    concurrency,
                    drive(
                        &verdict_client,
                        &verdict_url,
                        bodies,
                        concurrency,
                        true,
                        verdict.child.id(),
                    )
                    .await,
                );
                ours.throughput_vs_baseline = Some(ours.reviews_per_sec / base.reviews_per_sec);
                ours.p99_vs_baseline = Some(ours.p99_ms / base.p99_ms);
                println!("{}", line(&ours));
                rows.push(base);
                rows.push(ours);
            }
            let images = cold.next().unwrap();
            let bodies = Arc::new(
                images
                    .iter()
                    .enumerate()
                    .map(|(i, image)| pod(std::slice::from_ref(image), i))
                    .collect::<Vec<_>>(),
            );
            let ours = row(
                "verdict",
                "c-cold-verification",
                http2,
                concurrency,
                drive(
                    &verdict_client,
                    &verdict_url,
                    bodies,
                    concurrency,
                    true,
                    verdict.child.id(),
                )
                .await,
            );
            println!("{}", line(&ours));
            rows.push(ours);
        }
    }
    let loaded_rss = rss_kib(verdict.child.id());
    let registry_requests = registry_requests(verdict.metrics_port, &registry.host).await;
    let cold_images = cold_per_run * CONCURRENCY.len() * 2 + 3;
    let summary = json!({
        "verdict_start_to_ready_ms": verdict.ready_after.as_secs_f64() * 1000.0,
        "baseline_start_to_ready_ms": baseline.ready_after.as_secs_f64() * 1000.0,
        "verdict_idle_rss_mib": idle_rss as f64 / 1024.0,
        "baseline_idle_rss_mib": baseline_idle_rss as f64 / 1024.0,
        "verdict_rss_after_runs_mib": loaded_rss as f64 / 1024.0,
        "cached_digests_after_runs": cold_images,
        "registry_requests_per_cold_image": registry_requests as f64 / cold_images as f64,
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
}

async fn registry_requests(metrics_port: u16, host: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("verdict_registry_requests_total{") && l.contains(host))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn line(r: &Row) -> String {
    format!(
        "{:8} {:22} {:8} c={:<3} {:>8.0}/s p50 {:>7.2}ms p90 {:>7.2}ms p99 {:>7.2}ms p99.9 {:>7.2}ms errors {} wrong {} rss {:.1}MiB{}",
        r.server, r.scenario, r.protocol, r.concurrency, r.reviews_per_sec, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.errors, r.wrong_decisions, r.peak_rss_mib,
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
    md.push_str("| server | scenario | protocol | conc. | reviews/s | vs baseline | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 vs baseline | errors | wrong | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.1} |\n",
            r.server, r.scenario, r.protocol, r.concurrency, r.reviews_per_sec,
            r.throughput_vs_baseline.map(|t| format!("{t:.2}x")).unwrap_or_default(),
            r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms,
            r.p99_vs_baseline.map(|t| format!("{t:.2}x")).unwrap_or_default(),
            r.errors, r.wrong_decisions, r.peak_rss_mib
        ));
    }
    md
}

/// p50 and p99 per configuration, as bars.
fn chart(path: &Path, rows: &[Row]) {
    use plotters::prelude::*;
    if let Ok(font) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") {
        let font: &'static [u8] = Box::leak(font.into_boxed_slice());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, font);
    }
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario != "c-cold-verification" || r.server == "verdict")
        .collect();
    let max = rows.iter().map(|r| r.p99_ms).fold(1.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (1600, 900)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "verdict vs no-op baseline: p50 (dark) and p99 (light) latency, ms",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(220)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..rows.len() as f64, 0f64..max)
        .unwrap();
    chart
        .configure_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| {
            rows.get(*x as usize)
                .map(|r| {
                    format!(
                        "{} {} {} c{}",
                        r.server,
                        &r.scenario[..1],
                        if r.protocol == "h2" { "h2" } else { "h1" },
                        r.concurrency
                    )
                })
                .unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("ms")
        .draw()
        .unwrap();
    for (i, r) in rows.iter().enumerate() {
        let x = i as f64;
        let color = if r.server == "baseline" { BLUE } else { RED };
        chart
            .draw_series([Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, r.p99_ms)],
                color.mix(0.3).filled(),
            )])
            .unwrap();
        chart
            .draw_series([Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, r.p50_ms)],
                color.filled(),
            )])
            .unwrap();
    }
    root.present().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
