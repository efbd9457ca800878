//! A private Sigstore for keyless signing: a Fulcio-style CA that issues short-lived
//! certificates with OIDC claims, and a Rekor key that signs inclusion promises; keyless
//! cosign layers, attestations and Sigstore bundles made with them.

use super::keys::{pae, SignatureLayer, B64, IN_TOTO};
use super::sha256;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
    SigningKey as _,
};
use serde_json::{json, Value};

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
