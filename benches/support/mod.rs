//! What the load benchmark and the soak share: starting the release server, HTTPS
//! clients, review bodies, a concurrent driver that checks every decision, and RSS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/fs.rs"]
mod fs;
#[path = "../../tests/common/tls.rs"]
mod tls;

use bytes::Bytes;
pub use fs::copy_dir;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// Development certificates for 127.0.0.1 and localhost, written to `dir` for `serve`.
pub fn dev_certs(dir: &Path) -> verdict::certs::DevCerts {
    let certs = verdict::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap();
    verdict::certs::write(dir, &certs).unwrap();
    certs
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a live process has had, KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
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
    /// What reads the server's stdout, if anything does.
    pub log_reader: Option<Child>,
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

/// A harness-less bench's `main`: runs `body` under `cargo bench`; under
/// `cargo test --all-targets` (no `--bench` argument) it only says how to run it.
///
/// The load generator runs on one thread, as `wrk -t1` and `h2load -t1` do: it shares the
/// two cores with the server it measures, and on one thread it never takes more than one
/// of them, nor wakes a second thread per answer.
pub fn bench_main<F: std::future::Future>(
    name: &str,
    body: impl FnOnce() -> F,
) -> Option<F::Output> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench {name}`");
        return None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
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
        // It ends with the server's stdout.
        if let Some(reader) = &mut self.log_reader {
            let _ = reader.wait();
        }
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
    start_verdict_with(certs, policies, registry_host, &[]).await
}

/// `start_verdict` with more flags (`--kubeconfig ...`).
pub async fn start_verdict_with(
    certs: &Path,
    policies: &Path,
    registry_host: &str,
    extra: &[String],
) -> Process {
    let (port, metrics_port) = (free_port(), free_port());
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
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
        .args(extra)
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The decision log goes into a pipe that another process reads, as a container
    // runtime reads a container's stdout: a `write` to /dev/null would cost next to nothing.
    let log_reader = Command::new("cat")
        .stdin(child.stdout.take().unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready_after = wait_ready(&format!("http://127.0.0.1:{metrics_port}/readyz"), started).await;
    Process {
        child,
        log_reader: Some(log_reader),
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
    pod_of(containers, uid)
}

/// An AdmissionReview for a Pod with these `containers`.
pub fn pod_of(containers: Vec<Value>, uid: usize) -> Vec<u8> {
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

/// A load client over HTTP/2 (every review on one shared connection, as reqwest and the
/// API server's Go client multiplex) or HTTP/1.1 (keep-alive connections, one per review in
/// flight).
pub fn client(ca_pem: &str, http2: bool) -> Client {
    Client::new(ca_pem, http2, usize::MAX)
}

/// The load generator's HTTPS client: hyper's connection API straight over rustls.
///
/// The load generator shares the two cores with the server it measures, so every
/// microsecond it spends is taken from the server. Through reqwest it spent 35-40 µs of CPU
/// per review (URL parsing, pool and retry machinery, glibc malloc, a JSON tree of every
/// answer), more than the no-op server's whole cost; this client spends 13-17 µs over
/// HTTP/1.1 and 22-28 µs over HTTP/2.
#[derive(Clone)]
pub struct Client(Arc<Connections>);

struct Connections {
    tls: tokio_rustls::TlsConnector,
    http2: bool,
    /// HTTP/1.1 connections not in use, at most `max_idle` (more are closed: `max_idle` 2
    /// under load keeps handshakes coming).
    idle: std::sync::Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    max_idle: usize,
    /// The one HTTP/2 connection, opened on first use and again if it closes.
    shared: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

/// Where one run sends its reviews: parsed once from its URL.
struct Endpoint {
    /// `host:port`, connected to and sent as the authority.
    authority: String,
    host: String,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Self {
        let uri: hyper::Uri = url.parse().unwrap();
        let authority = uri.authority().unwrap();
        Endpoint {
            authority: authority.to_string(),
            host: authority.host().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        }
    }
}

impl Client {
    pub fn new(ca_pem: &str, http2: bool, max_idle: usize) -> Self {
        let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
        Client(Arc::new(Connections {
            tls: tls::connector(ca_pem, alpn),
            http2,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
            shared: tokio::sync::Mutex::new(None),
        }))
    }

    async fn connect(
        &self,
        to: &Endpoint,
    ) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
        let tcp = tokio::net::TcpStream::connect(&to.authority).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(to.host.clone()).unwrap();
        Ok(TokioIo::new(self.0.tls.connect(name, tcp).await?))
    }

    /// POSTs `body` as JSON and reads the whole answer: its status and body, or None if the
    /// connection failed.
    async fn post(&self, to: &Endpoint, body: Bytes) -> Option<(hyper::StatusCode, Bytes)> {
        let request = hyper::Request::post(to.path.as_str())
            .header(hyper::header::HOST, to.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .unwrap();
        let read = |response: hyper::Response<hyper::body::Incoming>| async {
            let (head, body) = response.into_parts();
            Some((head.status, body.collect().await.ok()?.to_bytes()))
        };
        if self.0.http2 {
            let mut sender = self.http2(to).await?;
            return read(sender.send_request(request).await.ok()?).await;
        }
        // An HTTP/1.1 connection goes back to the pool once its answer is read whole. A
        // pooled one the server has closed meanwhile (verdict closes a connection idle for
        // 10 s) is dropped, and a request it could not take is sent on another, as
        // reqwest's pool does.
        let mut request = request;
        loop {
            let pooled = self.0.idle.lock().unwrap().pop();
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => {
                    let (sender, connection) =
                        http1::handshake(self.connect(to).await.ok()?).await.ok()?;
                    tokio::spawn(connection);
                    sender
                }
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return None;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let answer = read(response).await?;
                    let mut idle = self.0.idle.lock().unwrap();
                    if idle.len() < self.0.max_idle {
                        idle.push(sender);
                    }
                    return Some(answer);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return None,
                },
            }
        }
    }

    /// The shared HTTP/2 connection, opened if there is none or it has closed.
    async fn http2(&self, to: &Endpoint) -> Option<http2::SendRequest<Full<Bytes>>> {
        let mut shared = self.0.shared.lock().await;
        if let Some(sender) = shared.as_ref().filter(|s| !s.is_closed()) {
            return Some(sender.clone());
        }
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), self.connect(to).await.ok()?)
                .await
                .ok()?;
        tokio::spawn(connection);
        *shared = Some(sender.clone());
        Some(sender)
    }
}

/// Request `i` of a run: its body and the decision it must get (`true` = allowed).
pub type Bodies = Arc<dyn Fn(usize) -> (Bytes, bool) + Send + Sync>;

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
async fn review(client: &Client, to: &Endpoint, body: Bytes, expect: bool) -> (u64, Outcome) {
    /// What is checked of an answer: `response.allowed`.
    #[derive(serde::Deserialize)]
    struct Answer {
        response: Decision,
    }
    #[derive(serde::Deserialize)]
    struct Decision {
        allowed: bool,
    }
    let sent = Instant::now();
    let answer = match client.post(to, body).await {
        Some((status, body)) if status.is_success() => serde_json::from_slice::<Answer>(&body).ok(),
        _ => None,
    };
    let latency_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
    let outcome = match answer {
        None => Outcome::Error,
        Some(a) if a.response.allowed != expect => Outcome::Wrong,
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
    client: &Client,
    url: &str,
    bodies: Bodies,
    total: usize,
    concurrency: usize,
    pid: u32,
) -> RunStats {
    let next = Arc::new(AtomicUsize::new(0));
    let to = Arc::new(Endpoint::parse(url));
    measured(pid, async {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, to, bodies, next) =
                    (client.clone(), to.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break tally;
                        }
                        let (body, expect) = bodies(i);
                        tally.record(review(&client, &to, body, expect).await);
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
    client: &Client,
    url: &str,
    bodies: Bodies,
    total: usize,
    per_sec: u32,
    pid: u32,
) -> RunStats {
    let to = Arc::new(Endpoint::parse(url));
    measured(pid, async {
        let started = tokio::time::Instant::now();
        let mut sent = Vec::with_capacity(total);
        for i in 0..total {
            tokio::time::sleep_until(started + Duration::from_secs(i as u64) / per_sec).await;
            let (body, expect) = bodies(i);
            let (client, to) = (client.clone(), to.clone());
            sent.push(tokio::spawn(async move {
                review(&client, &to, body, expect).await
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
    let bodies: Arc<Vec<Bytes>> = Arc::new(bodies.into_iter().map(Bytes::from).collect());
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
