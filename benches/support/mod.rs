//! What the load benchmark and the soak share: starting the release server, HTTPS
//! clients, review bodies, a concurrent driver that checks every decision, and RSS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/fs.rs"]
mod fs;

use fs::copy_dir;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat` (in clock ticks of
/// 10 ms, the fixed `USER_HZ` of Linux's process accounting).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Busy and total clock ticks of all CPUs together, from the first line of `/proc/stat`
/// (busy: everything but `idle` and `iowait`).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

pub struct Process {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub ready_after: Duration,
}

impl Process {
    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample of the server's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        sample(&self.metrics().await, name)
    }
}

/// The value of one sample in a `/metrics` text (0 when absent).
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A harness-less bench's `main`: runs `body` on a multi-threaded runtime under
/// `cargo bench`; under `cargo test --all-targets` (no `--bench` argument) it only says how
/// to run it.
pub fn bench_main<F: std::future::Future>(
    name: &str,
    body: impl FnOnce() -> F,
) -> Option<F::Output> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench {name}`");
        return None;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `body` is called inside the runtime: it may make timers (`tokio::time::timeout`).
    Some(runtime.block_on(async { body().await }))
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn wait_ready(url: &str, started: Instant) -> Duration {
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

/// The release `verdict serve` on free loopback ports; ready when `/readyz` answers.
pub async fn start_verdict(certs: &Path, policies: &Path, registry_host: &str) -> Process {
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

/// An AdmissionReview for a Pod with `images` (containers c0, c1, ...).
pub fn pod(images: &[String], uid: usize) -> Vec<u8> {
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

pub fn client(ca_pem: &str, http2: bool) -> reqwest::Client {
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

/// Request `i` of a run: its body and the decision it must get (`true` = allowed).
pub type Bodies = Arc<dyn Fn(usize) -> (Vec<u8>, bool) + Send + Sync>;

pub struct RunStats {
    pub latency_us: Histogram<u64>,
    /// Answers that were not HTTP 200 with a review (transport or server errors).
    pub errors: usize,
    /// Reviews whose decision was not the expected one.
    pub wrong: usize,
    pub elapsed: Duration,
    pub peak_rss_kib: u64,
    /// CPU time the server used during the run.
    pub server_cpu: Duration,
    /// CPU time this process (the load generator) used during the run.
    pub client_cpu: Duration,
    /// Share of all CPUs' time that was busy during the run, 0 to 1: near 1, the machine was
    /// saturated and every thread waited for a core now and then.
    pub machine_busy: f64,
}

impl RunStats {
    /// Adds another run of the same load (a later round) to this one.
    pub fn add(&mut self, other: RunStats) {
        let busy = |r: &RunStats| r.machine_busy * r.elapsed.as_secs_f64();
        let elapsed = self.elapsed + other.elapsed;
        self.machine_busy = (busy(self) + busy(&other)) / elapsed.as_secs_f64().max(1e-9);
        self.latency_us.add(other.latency_us).unwrap();
        self.errors += other.errors;
        self.wrong += other.wrong;
        self.elapsed = elapsed;
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
    }
}

/// Latencies and outcomes of the reviews of one run.
struct Tally {
    latency_us: Histogram<u64>,
    errors: usize,
    wrong: usize,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            errors: 0,
            wrong: 0,
        }
    }

    fn add(&mut self, other: Tally) {
        self.latency_us.add(other.latency_us).unwrap();
        self.errors += other.errors;
        self.wrong += other.wrong;
    }

    fn record(&mut self, (latency_us, outcome): (u64, Outcome)) {
        self.latency_us.record(latency_us.max(1)).unwrap();
        match outcome {
            Outcome::Right => {}
            Outcome::Error => self.errors += 1,
            Outcome::Wrong => self.wrong += 1,
        }
    }
}

enum Outcome {
    Right,
    /// Not an HTTP 200 with a review: a transport or server error.
    Error,
    /// A review with the other decision than expected.
    Wrong,
}

/// Sends one review and checks its decision; returns its latency in µs.
async fn review(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    expect: bool,
) -> (u64, Outcome) {
    let sent = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let verdict = match response {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        _ => None,
    };
    let latency_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
    let outcome = match verdict {
        None => Outcome::Error,
        Some(v) if v["response"]["allowed"] != expect => Outcome::Wrong,
        Some(_) => Outcome::Right,
    };
    (latency_us, outcome)
}

/// Runs `load`, sampling the server's (`pid`) RSS as it goes and taking the CPU time of the
/// server and of this process, and how busy the machine was.
async fn measured(pid: u32, load: impl std::future::Future<Output = Tally>) -> RunStats {
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let cpu_before = cpu_time(pid);
    let client_before = cpu_time(std::process::id());
    let machine_before = machine_ticks();
    let started = Instant::now();
    let tally = load.await;
    let elapsed = started.elapsed();
    let machine_after = machine_ticks();
    sampler.abort();
    RunStats {
        latency_us: tally.latency_us,
        errors: tally.errors,
        wrong: tally.wrong,
        elapsed,
        peak_rss_kib: peak.load(Ordering::Relaxed),
        server_cpu: cpu_time(pid).saturating_sub(cpu_before),
        client_cpu: cpu_time(std::process::id()).saturating_sub(client_before),
        machine_busy: (machine_after.0 - machine_before.0) as f64
            / (machine_after.1 - machine_before.1).max(1) as f64,
    }
}

/// Closed loop: `concurrency` clients each send the next of requests `0..total` as soon as
/// their previous answer is in, checking every decision.
pub async fn drive(
    client: &reqwest::Client,
    url: &str,
    bodies: Bodies,
    total: usize,
    concurrency: usize,
    pid: u32,
) -> RunStats {
    let next = Arc::new(AtomicUsize::new(0));
    measured(pid, async {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, url, bodies, next) = (
                    client.clone(),
                    url.to_string(),
                    bodies.clone(),
                    next.clone(),
                );
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break tally;
                        }
                        let (body, expect) = bodies(i);
                        tally.record(review(&client, &url, body, expect).await);
                    }
                })
            })
            .collect();
        let mut tally = Tally::new();
        for worker in workers {
            tally.add(worker.await.unwrap());
        }
        tally
    })
    .await
}

/// Open loop: sends requests `0..total` at `per_sec`, whether or not earlier answers are in
/// (as the API server does), checking every decision. Requests are sent on the runtime's
/// 1 ms timer ticks, so at 5,000/s they leave in groups of five.
pub async fn pace(
    client: &reqwest::Client,
    url: &str,
    bodies: Bodies,
    total: usize,
    per_sec: u32,
    pid: u32,
) -> RunStats {
    measured(pid, async {
        let started = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(total);
        for i in 0..total {
            tokio::time::sleep_until(started + Duration::from_secs(i as u64) / per_sec).await;
            let (body, expect) = bodies(i);
            let (client, url) = (client.clone(), url.to_string());
            sent.push(tokio::spawn(async move {
                review(&client, &url, body, expect).await
            }));
        }
        let mut tally = Tally::new();
        for request in sent {
            tally.record(request.await.unwrap());
        }
        tally
    })
    .await
}

/// Bodies that are each sent as given, all expecting `expect`.
pub fn fixed(bodies: Vec<Vec<u8>>, expect: bool) -> Bodies {
    let bodies = Arc::new(bodies);
    Arc::new(move |i| (bodies[i % bodies.len()].clone(), expect))
}

/// The shipped policies, with `registry_host` allowed and an image policy requiring
/// signatures by `public_pem` for every image of that registry.
pub fn bench_policies(dir: &Path, registry_host: &str, public_pem: &str) {
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), dir);
    let registries = dir.join("settings/registries.yaml");
    let text = std::fs::read_to_string(&registries).unwrap();
    std::fs::write(&registries, format!("{text}  - \"{registry_host}\"\n")).unwrap();
    std::fs::write(dir.join("k.pub"), public_pem).unwrap();
    std::fs::write(
        dir.join("images.yaml"),
        format!(
            "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: bench}}\nspec:\n  images: [{{glob: '{registry_host}/**'}}]\n  authorities:\n  - key: {{file: k.pub}}\n"
        ),
    )
    .unwrap();
}
