//! The provenance test bed shared by the registry tests: a real `docker-registry`, a
//! policies folder with image policies, and the real server reading from both.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::registry::{payload, PrivateSigstore, SignatureLayer, TestRegistry};
use super::{pod_review, Options, Server};
use serde_json::Value;

pub struct Setup {
    pub registry: TestRegistry,
    pub server: Server,
    _policies: tempfile::TempDir,
}

impl Setup {
    /// A registry, and a server whose policies folder holds `images_yaml` and `files`.
    pub async fn new(images_yaml: &str, files: &[(&str, String)], extra: &[&str]) -> Self {
        let registry = TestRegistry::start().await;
        Self::with_registry(registry, images_yaml, files, extra)
    }

    pub fn with_registry(
        registry: TestRegistry,
        images_yaml: &str,
        files: &[(&str, String)],
        extra: &[&str],
    ) -> Self {
        let policies = tempfile::tempdir().unwrap();
        std::fs::write(
            policies.path().join("images.yaml"),
            images_yaml.replace("HOST", &registry.host),
        )
        .unwrap();
        for (name, text) in files {
            let path = policies.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut extra_args = vec!["--insecure-registry".to_string(), registry.host.clone()];
        extra_args.extend(extra.iter().map(|s| s.to_string()));
        let server = Server::start_with(Options {
            policies: policies.path().to_path_buf(),
            extra_args,
        });
        Self {
            registry,
            server,
            _policies: policies,
        }
    }

    /// A registry, and a server whose policies folder holds the keyless release policy and
    /// the trust material of `sigstore`.
    pub async fn keyless(sigstore: &PrivateSigstore) -> Self {
        Self::new(
            &keyless_policy(RELEASE_IDENTITY, "enforce"),
            &trust_files(sigstore),
            &[],
        )
        .await
    }

    pub fn policies_dir(&self) -> &std::path::Path {
        self._policies.path()
    }

    pub fn image(&self, repo: &str, reference: &str) -> String {
        if reference.starts_with("sha256:") {
            format!("{}/{repo}@{reference}", self.registry.host)
        } else {
            format!("{}/{repo}:{reference}", self.registry.host)
        }
    }

    pub async fn review(&self, images: &[&str]) -> Value {
        let (status, body) = self
            .server
            .validate(&self.server.client(true), &pod_review("team-a", images))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn check(&self, images: &[&str]) -> Value {
        let review = pod_review("team-a", images);
        self.server
            .dry_run(
                &self.server.client(true),
                serde_json::to_vec(&review).unwrap(),
            )
            .await
    }

    /// Pushes an image and signs it with a key-based layer built by `sign`.
    pub async fn signed_image(
        &self,
        repo: &str,
        sign: impl Fn(Vec<u8>) -> SignatureLayer,
    ) -> String {
        let digest = self.registry.push_image(repo, "v1").await;
        let layer = sign(payload(&format!("{}/{repo}", self.registry.host), &digest));
        self.registry.push_signatures(repo, &digest, &[layer]).await;
        digest
    }
}

pub fn allowed(body: &Value) -> bool {
    body["response"]["allowed"].as_bool().unwrap()
}

pub fn message(body: &Value) -> String {
    body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn key_policy(name: &str, glob: &str, key_file: &str, extra: &str) -> String {
    format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: {name}}}\nspec:\n  images: [{{glob: '{glob}'}}]\n  authorities:\n  - name: key\n    key: {{file: {key_file}{extra}}}\n"
    )
}

pub fn keyless_policy(identity: &str, mode: &str) -> String {
    format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: release}}\nspec:\n  images: [{{glob: 'HOST/keyless/**'}}]\n  mode: {mode}\n  authorities:\n  - name: github-release\n    keyless:\n      trustRoot: {{fulcio: [trust/fulcio.pem], rekor: [trust/rekor.pub]}}\n      identities:\n      - {identity}\n"
    )
}

pub const RELEASE_IDENTITY: &str = "{issuer: 'https://token.actions.githubusercontent.com', subjectRegExp: 'https://github.com/acme/app/\\.github/workflows/release\\.yaml@refs/tags/v.*', github: {repository: acme/app}}";

pub fn trust_files(sigstore: &PrivateSigstore) -> Vec<(&'static str, String)> {
    vec![
        ("trust/fulcio.pem", sigstore.fulcio_pem()),
        ("trust/rekor.pub", sigstore.rekor_pem()),
    ]
}

/// `verdict check -f - ARGS` on a Pod running `image`, from a blocking thread.
pub async fn verdict_check(image: &str, args: Vec<String>) -> std::process::Output {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c, image: '{image}'}}]\n"
    );
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(super::BIN)
            .args(["check", "-f", "-"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}
