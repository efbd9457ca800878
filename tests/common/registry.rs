//! A real OCI registry for tests: Debian's `docker-registry` (distribution v2) on a free
//! 127.0.0.1 port, plus helpers that push images and cosign-format signatures to it, and
//! a private Sigstore (a Fulcio-style CA and a Rekor key) as enterprises run their own.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
    SigningKey as _,
};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
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

/// An in-toto v1 statement about `digest` (`sha256:<hex>`).
pub fn statement(name: &str, digest: &str, predicate_type: &str, predicate: Value) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

pub const IN_TOTO: &str = "application/vnd.in-toto+json";

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signature layer as cosign writes it.
#[derive(Clone, Debug)]
pub struct SignatureLayer {
    pub payload: Vec<u8>,
    pub annotations: serde_json::Map<String, Value>,
}

/// The simple-signing payload cosign signs.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// A signing key of any type cosign supports, from the sigstore crate.
pub struct TestKey {
    signer: sigstore::crypto::SigStoreSigner,
    pub public_pem: String,
}

impl TestKey {
    pub fn generate(scheme: sigstore::crypto::SigningScheme) -> Self {
        let signer = scheme.create_signer().unwrap();
        let public_pem = signer
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        Self { signer, public_pem }
    }

    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.signer.sign(payload).unwrap()
    }

    /// A keyed cosign layer (no certificate, no bundle).
    pub fn layer(&self, payload: Vec<u8>) -> SignatureLayer {
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            "dev.cosignproject.cosign/signature".into(),
            json!(B64.encode(self.sign(&payload))),
        );
        SignatureLayer {
            payload,
            annotations,
        }
    }
}

/// A private Sigstore: a Fulcio-style CA that issues short-lived signing certificates with
/// OIDC issuer and subject, and a Rekor key that signs inclusion promises (SETs).
pub struct PrivateSigstore {
    ca: CertifiedIssuer<'static, KeyPair>,
    rekor: KeyPair,
    log_index: std::sync::atomic::AtomicI64,
}

/// What a keyless signing should look like; tests bend one field to make a bad case.
pub struct Keyless<'a> {
    pub subject: &'a str,
    pub issuer: &'a str,
    /// The legacy (v1) issuer extension, when it should differ from the v2 one.
    pub legacy_issuer: Option<&'a str>,
    pub github_repository: Option<&'a str>,
    pub github_ref: Option<&'a str>,
    /// Seconds from now of the Rekor integrated time.
    pub integrated_offset: i64,
    /// Certificate validity relative to now: (not_before, not_after) in seconds.
    pub validity: (i64, i64),
}

impl Default for Keyless<'_> {
    fn default() -> Self {
        Self {
            subject: "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1.0.0",
            issuer: "https://token.actions.githubusercontent.com",
            legacy_issuer: None,
            github_repository: Some("acme/app"),
            github_ref: Some("refs/tags/v1.0.0"),
            integrated_offset: -60,
            validity: (-120, 480),
        }
    }
}

pub struct KeylessSignature {
    pub layer: SignatureLayer,
    pub certificate_pem: String,
    pub bundle: Value,
}

impl PrivateSigstore {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "acme");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} fulcio"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            rekor: KeyPair::generate().unwrap(),
            log_index: std::sync::atomic::AtomicI64::new(1000),
        }
    }

    pub fn fulcio_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn rekor_pem(&self) -> String {
        let der = self.rekor.subject_public_key_info();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }

    pub fn log_id(&self) -> String {
        verdict::verify::trust::log_id(&self.rekor.subject_public_key_info())
    }

    /// Issues a certificate for a fresh key and returns (certificate PEM, the key).
    pub fn issue(&self, spec: &Keyless<'_>) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![if spec.subject.contains('@')
            && !spec.subject.contains("://")
        {
            SanType::Rfc822Name(spec.subject.try_into().unwrap())
        } else {
            SanType::URI(spec.subject.try_into().unwrap())
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(spec.validity.0);
        params.not_after = now + time::Duration::seconds(spec.validity.1);
        let utf8 = |s: &str| {
            let mut der = vec![0x0c, s.len() as u8];
            der.extend_from_slice(s.as_bytes());
            der
        };
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                spec.legacy_issuer
                    .unwrap_or(spec.issuer)
                    .as_bytes()
                    .to_vec(),
            ),
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], utf8(spec.issuer)),
        ];
        if let Some(repo) = spec.github_repository {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 5],
                    repo.as_bytes().to_vec(),
                ));
        }
        if let Some(r) = spec.github_ref {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, 6],
                    r.as_bytes().to_vec(),
                ));
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key)
    }

    /// A Rekor bundle whose entry records `recorded_payload`, `recorded_signature` and `recorded_signer_pem`.
    pub fn bundle(
        &self,
        recorded_payload: &[u8],
        recorded_signature: &[u8],
        recorded_signer_pem: &str,
        integrated_time: i64,
    ) -> Value {
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": sha256(recorded_payload).trim_start_matches("sha256:")}},
                "signature": {"content": B64.encode(recorded_signature), "publicKey": {"content": B64.encode(recorded_signer_pem)}}
            }
        });
        self.rekor_bundle(&body, integrated_time)
    }

    /// A Rekor bundle as cosign stores it: the next log index, and a SET over the entry.
    fn rekor_bundle(&self, body: &Value, integrated_time: i64) -> Value {
        let log_index = self
            .log_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body_b64 = B64.encode(serde_json::to_vec(body).unwrap());
        let set = self.set(&body_b64, log_index, integrated_time);
        json!({
            "SignedEntryTimestamp": B64.encode(set),
            "Payload": {"body": body_b64, "integratedTime": integrated_time, "logIndex": log_index, "logID": self.log_id()},
        })
    }

    /// A complete keyless signature of `payload` as cosign would push it.
    pub fn sign(&self, payload: Vec<u8>, spec: &Keyless<'_>) -> KeylessSignature {
        let (certificate_pem, key) = self.issue(spec);
        let signature = key.sign(&payload).unwrap();
        let integrated = time::OffsetDateTime::now_utc().unix_timestamp() + spec.integrated_offset;
        let bundle = self.bundle(&payload, &signature, &certificate_pem, integrated);
        let annotations = keyless_annotations(&B64.encode(&signature), &certificate_pem, &bundle);
        KeylessSignature {
            layer: SignatureLayer {
                payload,
                annotations,
            },
            certificate_pem,
            bundle,
        }
    }
}

impl PrivateSigstore {
    fn rekor_spki(&self) -> Vec<u8> {
        self.rekor.subject_public_key_info()
    }

    /// A Rekor v1 SET over an entry with `body` at `integrated_time`.
    fn set(&self, body_b64: &str, log_index: i64, integrated_time: i64) -> Vec<u8> {
        let payload = json!({
            "body": body_b64,
            "integratedTime": integrated_time,
            "logIndex": log_index,
            "logID": self.log_id(),
        });
        let canonical = serde_json_canonicalizer::to_vec(&payload).unwrap();
        self.rekor.sign(&canonical).unwrap()
    }

    /// A cosign attestation layer (`.att`): a DSSE envelope of `statement` signed with a fresh
    /// certificate for `spec`, and a Rekor `intoto` 0.0.2 entry recording it.
    pub fn attest(&self, statement: &[u8], spec: &Keyless<'_>) -> SignatureLayer {
        self.attest_as(IN_TOTO, statement, spec)
    }

    /// `attest`, with the envelope's `payloadType` (and the logged one) set to `payload_type`.
    pub fn attest_as(
        &self,
        payload_type: &str,
        statement: &[u8],
        spec: &Keyless<'_>,
    ) -> SignatureLayer {
        let (certificate_pem, key) = self.issue(spec);
        let signature = key.sign(&pae(payload_type, statement)).unwrap();
        let envelope = json!({
            "payloadType": payload_type,
            "payload": B64.encode(statement),
            "signatures": [{"keyid": "", "sig": B64.encode(&signature)}],
        });
        let envelope_bytes = serde_json::to_vec(&envelope).unwrap();
        let body = json!({
            "apiVersion": "0.0.2",
            "kind": "intoto",
            "spec": {"content": {
                "envelope": {"payloadType": payload_type, "signatures": [{
                    "publicKey": B64.encode(&certificate_pem),
                    "sig": B64.encode(B64.encode(&signature)),
                }]},
                "hash": {"algorithm": "sha256", "value": sha256(&envelope_bytes).trim_start_matches("sha256:")},
                "payloadHash": {"algorithm": "sha256", "value": sha256(statement).trim_start_matches("sha256:")},
            }}
        });
        let integrated = time::OffsetDateTime::now_utc().unix_timestamp() + spec.integrated_offset;
        let bundle = self.rekor_bundle(&body, integrated);
        let predicate_type: Value = serde_json::from_slice::<Value>(statement)
            .ok()
            .and_then(|s| s.get("predicateType").cloned())
            .unwrap_or_default();
        // Attestation layers carry the signature inside the envelope, not in the annotation.
        let mut annotations = keyless_annotations("", &certificate_pem, &bundle);
        annotations.insert("predicateType".into(), predicate_type);
        SignatureLayer {
            payload: envelope_bytes,
            annotations,
        }
    }

    /// A Sigstore bundle v0.3 as cosign v3 writes it: a DSSE envelope of `statement` signed
    /// with a fresh certificate for `spec`, and a Rekor v1 `dsse` 0.0.1 entry with its SET and
    /// a one-leaf inclusion proof under a checkpoint signed by the log key.
    pub fn dsse_bundle(&self, statement: &[u8], spec: &Keyless<'_>) -> Value {
        self.dsse_bundle_as(IN_TOTO, statement, spec)
    }

    /// `dsse_bundle`, with the envelope's `payloadType` set to `payload_type`.
    pub fn dsse_bundle_as(
        &self,
        payload_type: &str,
        statement: &[u8],
        spec: &Keyless<'_>,
    ) -> Value {
        let (certificate_pem, key) = self.issue(spec);
        let signature = key.sign(&pae(payload_type, statement)).unwrap();
        let envelope = json!({
            "payload": B64.encode(statement),
            "payloadType": payload_type,
            "signatures": [{"sig": B64.encode(&signature), "keyid": ""}],
        });
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": sha256(&serde_json::to_vec(&envelope).unwrap()).trim_start_matches("sha256:")},
                "payloadHash": {"algorithm": "sha256", "value": sha256(statement).trim_start_matches("sha256:")},
                "signatures": [{"signature": B64.encode(&signature), "verifier": B64.encode(&certificate_pem)}],
            }
        });
        let body_bytes = serde_json::to_vec(&body).unwrap();
        let body_b64 = B64.encode(&body_bytes);
        let integrated = time::OffsetDateTime::now_utc().unix_timestamp() + spec.integrated_offset;
        let set = self.set(&body_b64, 0, integrated);
        // A tree of one leaf: the root is the leaf hash, SHA-256(0x00 || body).
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(&body_bytes);
        let root = B64.encode(ring::digest::digest(&ring::digest::SHA256, &leaf));
        let origin = "rekor.acme.test - 1";
        let note = format!("{origin}\n1\n{root}\n");
        let key_id = ring::digest::digest(&ring::digest::SHA256, &self.rekor_spki());
        let mut note_signature = key_id.as_ref()[..4].to_vec();
        note_signature.extend_from_slice(&self.rekor.sign(note.as_bytes()).unwrap());
        let checkpoint = format!(
            "{note}\n\u{2014} rekor.acme.test {}\n",
            B64.encode(note_signature)
        );
        let cert_der = pem_to_der(&certificate_pem);
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": B64.encode(cert_der)},
                "tlogEntries": [{
                    "logIndex": "0",
                    "logId": {"keyId": B64.encode(ring::digest::digest(&ring::digest::SHA256, &self.rekor_spki()))},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": integrated.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": B64.encode(set)},
                    "inclusionProof": {
                        "logIndex": "0", "rootHash": root, "treeSize": "1", "hashes": [],
                        "checkpoint": {"envelope": checkpoint},
                    },
                    "canonicalizedBody": body_b64,
                }],
            },
            "dsseEnvelope": envelope,
        })
    }
}

/// The annotations of a keyless cosign layer.
fn keyless_annotations(
    signature_b64: &str,
    certificate_pem: &str,
    bundle: &Value,
) -> serde_json::Map<String, Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "dev.cosignproject.cosign/signature".into(),
        json!(signature_b64),
    );
    annotations.insert(
        "dev.sigstore.cosign/certificate".into(),
        json!(certificate_pem),
    );
    annotations.insert(
        "dev.sigstore.cosign/bundle".into(),
        json!(bundle.to_string()),
    );
    annotations
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(body).unwrap()
}

/// A token issuer for docker-registry's `auth: token` mode: it mints ES256 JWTs whose `x5c`
/// is a self-signed certificate listed in the registry's `rootcertbundle`, and serves the
/// distribution token endpoint for clients with the right basic credentials.
pub struct TokenIssuer {
    key: std::sync::Arc<KeyPair>,
    cert_der: Vec<u8>,
    pub cert_pem: String,
    pub realm: String,
    pub service: String,
    task: tokio::task::JoinHandle<()>,
}

impl TokenIssuer {
    pub async fn start(user: &str, password: &str) -> Self {
        let key = std::sync::Arc::new(KeyPair::generate().unwrap());
        let mut params = CertificateParams::new(vec!["token-issuer".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "token-issuer");
        let cert = params.self_signed(key.as_ref()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let expected = format!("Basic {}", B64.encode(format!("{user}:{password}")));
        let (signing_key, cert_der) = (key.clone(), cert.der().to_vec());
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (signing_key, cert_der, expected) =
                    (signing_key.clone(), cert_der.clone(), expected.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let authorized = request.lines().any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:")
                            && l.ends_with(&expected)
                    });
                    let path = request
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let url = reqwest::Url::parse(&format!("http://x{path}")).unwrap();
                    let scope = url
                        .query_pairs()
                        .find(|(k, _)| k == "scope")
                        .map(|(_, v)| v.to_string());
                    let answer = if authorized {
                        let repo = scope
                            .as_deref()
                            .and_then(|s| s.split(':').nth(1))
                            .unwrap_or_default();
                        let body = json!({"token": mint(&signing_key, &cert_der, repo, &["pull"]), "expires_in": 300}).to_string();
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            realm,
            service: "test-registry".into(),
            task,
        }
    }

    /// A token for the test itself (pushing).
    pub fn token(&self, repos: &[&str], actions: &[&str]) -> String {
        let mut tokens = Vec::new();
        for repo in repos {
            tokens.push(mint(&self.key, &self.cert_der, repo, actions));
        }
        tokens
            .into_iter()
            .next()
            .unwrap_or_else(|| mint(&self.key, &self.cert_der, "", actions))
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mint(key: &KeyPair, cert_der: &[u8], repo: &str, actions: &[&str]) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [B64.encode(cert_der)]});
    let access: Vec<Value> = if repo.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "repository", "name": repo, "actions": actions})]
    };
    let claims = json!({
        "iss": "test-issuer", "sub": "puller", "aud": "test-registry", "exp": now + 300, "nbf": now - 60,
        "iat": now, "jti": format!("{now}-{repo}"), "access": access
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let der = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", url.encode(der_to_raw_p256(&der)))
}

/// ECDSA signatures in JWTs are r || s, 32 bytes each, not ASN.1.
fn der_to_raw_p256(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2; // SEQUENCE tag and length (short form for P-256)
    for _ in 0..2 {
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = if int.len() > 32 {
            &int[int.len() - 32..]
        } else {
            int
        };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}
