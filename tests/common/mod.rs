//! Test harness: starts the real `verdict serve` binary on 127.0.0.1 with generated
//! certificates and a private copy of a policies folder, and talks HTTPS to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod faults;
pub mod fs;
pub mod kube;
pub mod provenance;
pub mod registry;
pub mod tls;

pub const BIN: &str = env!("CARGO_BIN_EXE_verdict");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("../shared/fixtures").join(rel)
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub use fs::copy_dir;

/// Writes fresh dev certificates into `dir`; returns the CA PEM.
pub fn write_certs(dir: &Path) -> String {
    let certs = verdict::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap();
    verdict::certs::write(dir, &certs).unwrap();
    certs.ca_pem
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Server {
    child: Child,
    pub admission: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    logs: Arc<Mutex<String>>,
    /// While true, nobody reads the server's stdout (see `pause_stdout`).
    stdout_paused: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

pub struct Options {
    /// Policies folder to copy; the shipped `policies/` by default.
    pub policies: PathBuf,
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policies: repo().join("policies"),
            extra_args: Vec::new(),
        }
    }
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = write_certs(&dir.path().join("certs"));
        copy_dir(&options.policies, &dir.path().join("policies"));
        Self::spawn(dir, ca_pem, &options.extra_args)
    }

    /// Starts on an existing folder with `certs/` and the policies at `--policies` in `args`.
    pub fn spawn(dir: tempfile::TempDir, ca_pem: String, args: &[String]) -> Self {
        let d = dir.path();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(d.join("certs/tls.crt"))
            .arg("--tls-key")
            .arg(d.join("certs/tls.key"));
        if !args.iter().any(|a| a == "--policies") {
            command.arg("--policies").arg(d.join("policies"));
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info,verdict=debug")
            // No cluster unless a test names one (--kubeconfig).
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let stdout_paused = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        for (stream, gate) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Some(stdout_paused.clone()),
            ),
            (Box::new(child.stderr.take().unwrap()), None),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push_str(&(line + "\n"));
                    if let Some(gate) = &gate {
                        let (paused, resumed) = &**gate;
                        let mut paused = paused.lock().unwrap();
                        while *paused {
                            paused = resumed.wait(paused).unwrap();
                        }
                    }
                }
            });
        }
        let start = Instant::now();
        let (admission, metrics) = loop {
            let found = logs.lock().unwrap().lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                if v["message"] != "listening" {
                    return None;
                }
                let admission: SocketAddr = v["admission"].as_str()?.parse().ok()?;
                let metrics: SocketAddr = v["metrics"].as_str()?.parse().ok()?;
                Some((admission, metrics))
            });
            if let Some(found) = found {
                break found;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("verdict exited with {status}:\n{}", logs.lock().unwrap());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "verdict did not start:\n{}",
                logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            admission,
            metrics,
            dir,
            ca_pem,
            logs,
            stdout_paused,
        }
    }

    /// Stops reading the server's stdout (after the line being read): its pipe fills up, as
    /// when a node's log reader stalls.
    pub fn pause_stdout(&self) {
        *self.stdout_paused.0.lock().unwrap() = true;
    }

    /// Reads the server's stdout again.
    pub fn resume_stdout(&self) {
        *self.stdout_paused.0.lock().unwrap() = false;
        self.stdout_paused.1.notify_all();
    }

    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// `https://localhost:<port><path>`: the certificate names localhost and 127.0.0.1.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admission.port())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    pub fn client(&self, http2: bool) -> reqwest::Client {
        client_trusting(&self.ca_pem, http2)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The decision lines on the server's stdout, once there are `n` of them: they are
    /// written in batches, some milliseconds after the answer. Panics after 5 s.
    pub async fn decision_lines(&self, n: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines: Vec<String> = self
                .logs()
                .lines()
                .filter(|l| l.contains("\"message\":\"decision\""))
                .map(str::to_string)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} of {n} decision lines after 5 s:\n{}",
                lines.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "verdict did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POSTs a JSON review to `/validate` and returns (status, body).
    pub async fn validate(&self, client: &reqwest::Client, review: &Value) -> (u16, Value) {
        let response = client
            .post(self.url("/validate?timeout=10s"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(review).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The JSON report of a `/v1/check` dry run of `body`.
    pub async fn dry_run(&self, client: &reqwest::Client, body: impl Into<reqwest::Body>) -> Value {
        client
            .post(self.url("/v1/check"))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The text report of a `/v1/check?format=text` dry run of `body`.
    pub async fn dry_run_text(
        &self,
        client: &reqwest::Client,
        body: impl Into<reqwest::Body>,
    ) -> String {
        client
            .post(self.url("/v1/check?format=text"))
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Whether a log line with `text` appears within 5 s: lines are written in batches, and
    /// what is counted in metrics may be logged a moment later.
    pub async fn logged(&self, text: &str) -> bool {
        eventually(Duration::from_secs(5), || async {
            self.logs().contains(text)
        })
        .await
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.metrics_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.resume_stdout();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_trusting(ca_pem: &str, http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30));
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

/// A v1 Pod CREATE review with the given images (container names c0, c1, ...).
pub fn pod_review(namespace: &str, images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", images.join(",")),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
                       "spec": {"containers": containers}}
        }
    })
}

/// Reason codes in a response's status message, in order.
pub fn codes(review: &Value) -> Vec<String> {
    let message = review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    message
        .split("\n- [")
        .skip(1)
        .filter_map(|s| s.split_once(']').map(|(code, _)| code.to_string()))
        .collect()
}
