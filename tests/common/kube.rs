//! A real kube-apiserver with etcd on free loopback ports, from `../shared/k8s` (built once
//! into `/var/tmp/verdict-k8s`, or `$K8S_HOME`). Stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

pub struct Kube {
    run: tempfile::TempDir,
    kit: PathBuf,
    ports: [u16; 3],
    /// User `admin` (group system:masters).
    pub kubeconfig: PathBuf,
    /// User `system:serviceaccount:verdict-system:verdict`: only what RBAC grants.
    pub kubeconfig_verdict: PathBuf,
}

/// The repository (this file is also a module of the benches, which have no `common`).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Kube {
    /// Starts etcd and kube-apiserver (building them on first use) and waits for `/readyz`.
    pub fn start() -> Self {
        let kit = repo().join("../shared/k8s");
        let run = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let kube = Self {
            kubeconfig: run.path().join("kubeconfig"),
            kubeconfig_verdict: run.path().join("kubeconfig-verdict"),
            run,
            kit,
            ports,
        };
        let started = Instant::now();
        let out = kube.script("start.sh");
        assert!(
            out.status.success(),
            "start.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("kube-apiserver ready in {:?}", started.elapsed());
        kube
    }

    fn script(&self, name: &str) -> Output {
        Command::new("bash")
            .arg(self.kit.join(name))
            .env(
                "K8S_HOME",
                std::env::var("K8S_HOME").unwrap_or_else(|_| "/var/tmp/verdict-k8s".into()),
            )
            .env("K8S_RUN", self.run.path())
            .env("APISERVER_PORT", self.ports[0].to_string())
            .env("ETCD_CLIENT_PORT", self.ports[1].to_string())
            .env("ETCD_PEER_PORT", self.ports[2].to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Stops etcd and the API server (by the PIDs start.sh wrote).
    pub fn stop(&self) {
        let out = self.script("stop.sh");
        assert!(
            out.status.success(),
            "stop.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The API server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run.path().join("run/kube-apiserver.log")).unwrap_or_default()
    }

    /// Runs kubectl as `admin` with `stdin`; panics when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.try_kubectl(&self.kubeconfig, args, stdin);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }

    pub fn create_namespace(&self, name: &str) {
        self.kubectl(&["create", "namespace", name], None);
    }

    /// Sets (`key=value`) or removes (`key-`) a label of namespace `name`.
    pub fn label_namespace(&self, name: &str, label: &str) {
        self.kubectl(&["label", "namespace", name, label], None);
    }

    /// Runs kubectl with `kubeconfig`; (success, stdout and stderr).
    pub fn try_kubectl(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String) {
        let mut child = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (make render-deploy installs it)",
                    kubectl().display()
                )
            });
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            input
                .write_all(stdin.unwrap_or_default().as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// kubectl: `$KUBECTL`, else the one `make render-deploy` installs into target/venv.
fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/kubectl"))
}

impl Drop for Kube {
    fn drop(&mut self) {
        let out = self.script("stop.sh");
        if !out.status.success() {
            eprintln!("stop.sh: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
