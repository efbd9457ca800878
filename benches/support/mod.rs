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
        // As recommended for deployments: caps glibc's per-thread arenas, which otherwise
        // fragment as policies recompile on blocking threads (RSS grows, measured by `make soak`).
        .env("MALLOC_ARENA_MAX", "2")
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

/// Sends requests `0..total` at `concurrency`, checking every decision, sampling the
/// server's RSS (`pid`) as it goes.
pub async fn drive(
    client: &reqwest::Client,
    url: &str,
    bodies: Bodies,
    total: usize,
    concurrency: usize,
    pid: u32,
) -> RunStats {
    let next = Arc::new(AtomicUsize::new(0));
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
                    if i >= total {
                        break;
                    }
                    let (body, expect) = bodies(i);
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let verdict = match response {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    hist.record(
                        u64::try_from(sent.elapsed().as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1),
                    )
                    .unwrap();
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
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut errors, mut wrong) = (0, 0);
    for worker in workers {
        let (hist, e, w) = worker.await.unwrap();
        latency_us.add(hist).unwrap();
        errors += e;
        wrong += w;
    }
    let elapsed = started.elapsed();
    let machine_after = machine_ticks();
    sampler.abort();
    RunStats {
        latency_us,
        errors,
        wrong,
        elapsed,
        peak_rss_kib: peak.load(Ordering::Relaxed),
        server_cpu: cpu_time(pid).saturating_sub(cpu_before),
        client_cpu: cpu_time(std::process::id()).saturating_sub(client_before),
        machine_busy: (machine_after.0 - machine_before.0) as f64
            / (machine_after.1 - machine_before.1).max(1) as f64,
    }
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
