//! What cosign writes: simple-signing payloads, in-toto statements and their DSSE
//! encoding, signature layers, and signing them with a key of any type cosign supports.

use base64::Engine as _;
use serde_json::{json, Value};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
