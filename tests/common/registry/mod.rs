//! A real OCI registry for tests: Debian's `docker-registry` (distribution v2) on a free
//! 127.0.0.1 port, and pushing images, indexes, referrers and cosign-format signatures to
//! it. Its helpers, one room each:
//! - `keys`: what cosign writes (simple-signing payloads, in-toto statements, layers) and
//!   signing with a key;
//! - `sigstore`: a private Sigstore (a Fulcio-style CA and a Rekor key) for keyless
//!   signatures, attestations and bundles, as enterprises run their own;
//! - `tokens`: a token issuer for registries that want bearer tokens.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

mod keys;
mod sigstore;
mod tokens;

pub use keys::{pae, payload, statement, SignatureLayer, TestKey, B64, IN_TOTO};
pub use sigstore::{Keyless, KeylessSignature, PrivateSigstore};
pub use tokens::TokenIssuer;

use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub fn sha256(bytes: &[u8]) -> String {
    verdict::images::Digest::sha256_of(bytes).to_string()
}

pub struct TestRegistry {
    child: Child,
    pub host: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    scheme: &'static str,
}

/// Optional registry features: basic auth (htpasswd) and TLS.
#[derive(Default)]
pub struct RegistryOptions {
    pub basic_auth: Option<(String, String)>,
    /// (certificate PEM path, key PEM path, CA PEM) of the serving certificate.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf, String)>,
    /// Token auth: (realm, service, issuer certificate PEM, a push token for the test).
    pub token: Option<(String, String, String, String)>,
}

impl TestRegistry {
    pub async fn start() -> Self {
        Self::start_with(RegistryOptions::default()).await
    }

    pub async fn start_with(options: RegistryOptions) -> Self {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "Debian's docker-registry is required (apt-get install docker-registry); .ci/run installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key, _)) = &options.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = &options.basic_auth {
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if let Some((realm, service, cert, _)) = &options.token {
            std::fs::write(dir.path().join("token-root.pem"), cert).unwrap();
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                dir.path().join("token-root.pem").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut builder = reqwest::Client::builder();
        if let Some((_, _, ca)) = &options.tls {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        if let Some((user, password)) = &options.basic_auth {
            let mut headers = reqwest::header::HeaderMap::new();
            let value = format!("Basic {}", B64.encode(format!("{user}:{password}")));
            headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
            builder = builder.default_headers(headers);
        }
        if let Some((_, _, _, token)) = &options.token {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            builder = builder.default_headers(headers);
        }
        let http = builder.build().unwrap();
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let registry = Self {
            child,
            host,
            _dir: dir,
            http,
            scheme,
        };
        let start = Instant::now();
        while registry
            .http
            .get(registry.url("/v2/"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    /// `http[s]://host<path>`; the certificate of a TLS registry names localhost.
    fn url(&self, path: &str) -> String {
        if self.scheme == "https" {
            format!(
                "https://localhost:{}{path}",
                self.host.rsplit(':').next().unwrap()
            )
        } else {
            format!("http://{}{path}", self.host)
        }
    }

    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        // Already there (e.g. the shared empty config): uploading it again concurrently races.
        let head = self
            .http
            .head(self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await;
        if head.is_ok_and(|r| r.status().is_success()) {
            return digest;
        }
        let started = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status().as_u16(), 202, "blob upload start");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 201, "blob upload");
        digest
    }

    /// Pushes a manifest under `reference` (tag or digest); returns its digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, manifest: &Value) -> String {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let media_type = manifest["mediaType"].as_str().unwrap().to_string();
        let put = self
            .http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status().as_u16(),
            201,
            "manifest push: {}",
            put.text().await.unwrap()
        );
        sha256(&bytes)
    }

    /// A small, unique image under `repo:tag`; returns its digest.
    pub async fn push_image(&self, repo: &str, tag: &str) -> String {
        let config = self.push_blob(repo, b"{}").await;
        let layer_bytes = format!("layer of {repo}:{tag} {:?}", Instant::now()).into_bytes();
        let layer = self.push_blob(repo, &layer_bytes).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_bytes.len()}]
        });
        self.push_manifest(repo, tag, &manifest).await
    }

    /// A unique image `repo:v1` signed by `key` (payload identity `repo`); returns its
    /// reference `host/repo:v1`.
    #[allow(dead_code)]
    pub async fn push_signed(&self, key: &TestKey, repo: &str) -> String {
        let digest = self.push_image(repo, "v1").await;
        self.push_signatures(repo, &digest, &[key.layer(payload(repo, &digest))])
            .await;
        format!("{}/{repo}:v1", self.host)
    }

    /// Pushes cosign signature layers for `digest` as `sha256-<hex>.sig`.
    pub async fn push_signatures(&self, repo: &str, digest: &str, layers: &[SignatureLayer]) {
        let media_type = "application/vnd.dev.cosign.simplesigning.v1+json";
        self.push_cosign_manifest(repo, digest, ".sig", media_type, layers)
            .await;
    }

    /// Pushes cosign attestation layers (DSSE envelopes) for `digest` as `sha256-<hex>.att`.
    pub async fn push_attestations(&self, repo: &str, digest: &str, layers: &[SignatureLayer]) {
        let media_type = "application/vnd.dsse.envelope.v1+json";
        self.push_cosign_manifest(repo, digest, ".att", media_type, layers)
            .await;
    }

    async fn push_cosign_manifest(
        &self,
        repo: &str,
        digest: &str,
        suffix: &str,
        media_type: &str,
        layers: &[SignatureLayer],
    ) {
        let config = self.push_blob(repo, b"{}").await;
        let mut descriptors = Vec::new();
        for layer in layers {
            let blob = self.push_blob(repo, &layer.payload).await;
            descriptors.push(json!({
                "mediaType": media_type,
                "digest": blob,
                "size": layer.payload.len(),
                "annotations": layer.annotations,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": descriptors,
        });
        let tag = format!("{}{suffix}", digest.replace(':', "-"));
        self.push_manifest(repo, &tag, &manifest).await;
    }
}

impl TestRegistry {
    /// The size in bytes of the manifest (or index) `digest`.
    async fn manifest_size(&self, repo: &str, digest: &str) -> usize {
        self.manifest_bytes(repo, digest).await.len()
    }

    /// The manifest (or index) `reference` (a tag or digest) as the registry serves it.
    pub async fn manifest_bytes(&self, repo: &str, reference: &str) -> Vec<u8> {
        self.http
            .get(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Pushes a Sigstore bundle as cosign v3 does: an OCI artifact whose `subject` is
    /// `digest`, listed in the referrers tag schema index (`sha256-<hex>`), since Debian's
    /// docker-registry has no referrers API.
    pub async fn push_referrer(&self, repo: &str, digest: &str, bundle: &Value) -> String {
        const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
        let empty = self.push_blob(repo, b"{}").await;
        let bytes = serde_json::to_vec(bundle).unwrap();
        let blob = self.push_blob(repo, &bytes).await;
        let subject_size = self.manifest_size(repo, digest).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": BUNDLE_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": BUNDLE_TYPE, "digest": blob, "size": bytes.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": subject_size},
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = sha256(&manifest_bytes);
        self.push_manifest(repo, &manifest_digest, &manifest).await;
        let tag = digest.replace(':', "-");
        let existing = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("accept", "application/vnd.oci.image.index.v1+json")
            .send()
            .await
            .unwrap();
        let mut index: Value = if existing.status().is_success() {
            existing.json().await.unwrap()
        } else {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        };
        index["manifests"].as_array_mut().unwrap().push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "artifactType": BUNDLE_TYPE,
        }));
        self.push_manifest(repo, &tag, &index).await;
        manifest_digest
    }

    /// An image index of one fresh image per platform (`os/arch`) under `repo:tag`; returns
    /// (index digest, [(platform, manifest digest)]).
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        platforms: &[&str],
    ) -> (String, Vec<(String, String)>) {
        let mut entries = Vec::new();
        let mut digests = Vec::new();
        for platform in platforms {
            let digest = self
                .push_image(repo, &format!("{tag}-{}", platform.replace('/', "-")))
                .await;
            let (os, arch) = platform.split_once('/').unwrap();
            let size = self.manifest_size(repo, &digest).await;
            entries.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "platform": {"os": os, "architecture": arch},
            }));
            digests.push((platform.to_string(), digest));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        (self.push_manifest(repo, tag, &index).await, digests)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
