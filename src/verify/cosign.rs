//! Cosign signatures and attestations on the `.sig` / `.att` paths: reading a manifest's
//! layers and checking one layer against one authority. An attestation layer is a DSSE
//! envelope of an in-toto statement; it gets the same checks as a signature, over the
//! envelope's pre-authentication encoding, with the statement's subject as the digest.
//! Every rule of DESIGN.md's "easy to get wrong" list is here, including the two the
//! sigstore crate skips on this path (the signature over the payload with the
//! certificate's key, and the Rekor entry body matching this signature). The vocabulary it
//! answers in (`Proof`, `Rejection`, ...) is `proof`'s.

use super::identity::IdentityRule;
use super::proof::{accepted_identity, NotAnAttestation, Proof, PublicKey, Rejection, Statement};
use super::trust::TrustRoot;
use crate::decision::ReasonCode;
use crate::images::Digest;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use sigstore::crypto::{CosignVerificationKey, Signature};
use std::collections::BTreeMap;
use std::time::Duration;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// `critical.type` of cosign's simple-signing payload.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
/// Extended key usage Fulcio puts on signing certificates: id-kp-codeSigning.
const CODE_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// One layer of a signature manifest, before its payload is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: Digest,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ManifestJson {
    #[serde(default)]
    layers: Vec<LayerJson>,
}

#[derive(Deserialize)]
struct LayerJson {
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A signature manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the signature manifest is not valid: {0}")]
    Malformed(#[from] super::strict::Malformed),
    #[error("the signature manifest is not valid: {0}")]
    Digest(#[from] crate::images::InvalidDigest),
}

/// The layers of a cosign signature manifest (`sha256-<hex>.sig`).
pub fn parse_signature_manifest(bytes: &[u8]) -> Result<Vec<LayerRef>, ManifestError> {
    let manifest: ManifestJson = super::strict::from_slice(bytes)?;
    manifest
        .layers
        .into_iter()
        .map(|l| {
            Ok(LayerRef {
                digest: Digest::parse(&l.digest)?,
                size: l.size,
                annotations: l.annotations,
            })
        })
        .collect()
}

/// A Rekor inclusion promise as cosign stores it in the bundle annotation.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    pub signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    pub payload: RekorPayload,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct RekorPayload {
    pub body: String,
    #[serde(rename = "integratedTime")]
    pub integrated_time: i64,
    #[serde(rename = "logIndex")]
    pub log_index: i64,
    #[serde(rename = "logID")]
    pub log_id: String,
}

/// A signature with its payload, ready to check.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// The simple-signing payload, or the in-toto statement of a DSSE envelope.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub certificate: Option<CertificateDer<'static>>,
    pub bundle: Option<RekorBundle>,
    /// The envelope's `payloadType` when the layer is a DSSE envelope (an attestation).
    pub dsse_payload_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeJson {
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignatureJson>,
}

#[derive(Deserialize)]
struct EnvelopeSignatureJson {
    sig: String,
}

/// DSSE's pre-authentication encoding: what an envelope's signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl SignatureLayer {
    /// Builds a layer from its annotations and payload bytes (already digest-checked).
    pub fn new(layer: &LayerRef, payload: Vec<u8>) -> Result<Self, Rejection> {
        let malformed = |what: &str| {
            Rejection::new(
                ReasonCode::SignatureInvalid,
                format!("layer {}: {what}", layer.digest),
            )
        };
        let annotation = layer
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .ok_or_else(|| malformed("no signature annotation"))?;
        // Attestation layers carry an empty signature annotation and the signature inside
        // the DSSE envelope that is the layer's content.
        let (payload, signature, dsse_payload_type) = if annotation.trim().is_empty() {
            let envelope: EnvelopeJson = super::strict::from_slice(&payload)
                .map_err(|_| malformed("neither a signature annotation nor a DSSE envelope"))?;
            let [signature] = envelope.signatures.as_slice() else {
                return Err(malformed(
                    "the DSSE envelope must carry exactly one signature",
                ));
            };
            let statement = BASE64
                .decode(envelope.payload.trim())
                .map_err(|_| malformed("the DSSE payload is not base64"))?;
            let signature = BASE64
                .decode(signature.sig.trim())
                .map_err(|_| malformed("the DSSE signature is not base64"))?;
            (statement, signature, Some(envelope.payload_type))
        } else {
            let signature = BASE64
                .decode(annotation.trim())
                .map_err(|_| malformed("the signature is not base64"))?;
            (payload, signature, None)
        };
        let certificate = match layer
            .annotations
            .get(CERTIFICATE_ANNOTATION)
            .filter(|c| !c.trim().is_empty())
        {
            Some(pem) => Some(
                CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| malformed("the certificate is not PEM"))?,
            ),
            None => None,
        };
        let bundle = match layer
            .annotations
            .get(BUNDLE_ANNOTATION)
            .filter(|b| !b.trim().is_empty())
        {
            Some(json) => Some(
                super::strict::from_slice(json.as_bytes())
                    .map_err(|_| malformed("the Rekor bundle is not valid"))?,
            ),
            None => None,
        };
        Ok(Self {
            payload,
            signature,
            certificate,
            bundle,
            dsse_payload_type,
        })
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.dsse_payload_type {
            Some(payload_type) => pae(payload_type, &self.payload).into(),
            None => self.payload.as_slice().into(),
        }
    }

    /// The in-toto statement of an attestation layer; `None` for a simple signature.
    pub fn statement(&self) -> Option<Result<Statement, NotAnAttestation>> {
        let payload_type = self.dsse_payload_type.as_deref()?;
        Some(Statement::parse(payload_type, &self.payload))
    }
}

fn proven(identity: String, entry: Option<&RekorPayload>) -> Proof {
    Proof {
        identity,
        rekor_log_index: entry.map(|e| e.log_index),
        rekor_integrated_time: entry.map(|e| e.integrated_time),
    }
}

/// A public key authority: any of `keys`; with `tlog`, also a Rekor entry for the signature.
pub fn check_with_keys(
    layer: &SignatureLayer,
    keys: &[PublicKey],
    tlog: Option<&TrustRoot>,
    digest: &str,
) -> Result<Proof, Rejection> {
    let Some(key) = keys.iter().find(|k| {
        k.key
            .verify_signature(Signature::Raw(&layer.signature), &layer.signed_bytes())
            .is_ok()
    }) else {
        return Err(Rejection::new(
            ReasonCode::UntrustedKey,
            "the signature was not made by any of the authority's keys",
        ));
    };
    check_payload_digest(layer, digest)?;
    let entry = match tlog {
        Some(trust) => Some(check_tlog(layer, trust, &key.spki_der)?),
        None => None,
    };
    Ok(proven(key.name.clone(), entry.as_ref()))
}

/// A keyless authority: a Fulcio certificate for one of `identities`, logged in Rekor.
pub fn check_keyless(
    layer: &SignatureLayer,
    trust: &TrustRoot,
    identities: &[IdentityRule],
    digest: &str,
) -> Result<Proof, Rejection> {
    let Some(cert) = &layer.certificate else {
        return Err(Rejection::new(
            ReasonCode::UntrustedKey,
            "the signature carries no certificate (it was made with a key)",
        ));
    };
    let cert_key = certificate_key(cert)?;
    cert_key
        .verify_signature(Signature::Raw(&layer.signature), &layer.signed_bytes())
        .map_err(|_| {
            Rejection::new(
                ReasonCode::SignatureInvalid,
                "the signature does not verify with the certificate's key",
            )
        })?;
    check_payload_digest(layer, digest)?;
    let entry = check_tlog(layer, trust, cert.as_ref())?;
    check_chain(cert, trust, entry.integrated_time)?;
    let name = accepted_identity(cert, identities)?;
    Ok(proven(name, Some(&entry)))
}

fn certificate_key(cert: &CertificateDer<'_>) -> Result<CosignVerificationKey, Rejection> {
    use x509_cert::der::{Decode as _, Encode as _};
    let parsed = x509_cert::Certificate::from_der(cert).map_err(|e| {
        Rejection::new(
            ReasonCode::UntrustedRoot,
            format!("unreadable certificate: {e}"),
        )
    })?;
    let spki = parsed
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| {
            Rejection::new(
                ReasonCode::UntrustedRoot,
                format!("unreadable certificate key: {e}"),
            )
        })?;
    CosignVerificationKey::try_from_der(&spki).map_err(|e| {
        Rejection::new(
            ReasonCode::UntrustedRoot,
            format!("unsupported certificate key: {e}"),
        )
    })
}

/// The payload names exactly the digest being admitted: the simple-signing payload's
/// `docker-manifest-digest`, or one of the in-toto statement's subjects. Both are read
/// strictly, as cosign reads them: a simple-signing payload must say it is a cosign
/// container image signature and name a digest.
pub fn check_payload_digest(layer: &SignatureLayer, digest: &str) -> Result<(), Rejection> {
    let not_valid = |why: String| Rejection::new(ReasonCode::SignatureInvalid, why);
    if let Some(statement) = layer.statement() {
        let statement = statement.map_err(|e| not_valid(e.to_string()))?;
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
        let named = statement.subject_digests(algorithm);
        return if named.contains(&hex) {
            Ok(())
        } else {
            Err(Rejection::new(
                ReasonCode::DigestMismatch,
                format!(
                    "the attestation's subjects ({}) do not include the admitted digest {digest}",
                    named
                        .iter()
                        .map(|n| format!("{algorithm}:{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        };
    }
    let json = super::strict::parse(&layer.payload)
        .map_err(|e| not_valid(format!("the signed payload is not valid JSON: {e}")))?;
    let critical = &json["critical"];
    let payload_type = critical["type"].as_str();
    if payload_type != Some(SIMPLE_SIGNING_TYPE) {
        return Err(not_valid(format!(
            "the signed payload's critical.type is {payload_type:?}, not {SIMPLE_SIGNING_TYPE:?}"
        )));
    }
    let Some(signed) = critical["image"]["docker-manifest-digest"].as_str() else {
        return Err(not_valid(
            "the signed payload names no critical.image.docker-manifest-digest".to_string(),
        ));
    };
    if signed == digest {
        Ok(())
    } else {
        Err(Rejection::new(
            ReasonCode::DigestMismatch,
            format!("the signature is for {signed:?}, not for the admitted digest {digest}"),
        ))
    }
}

/// The Rekor bundle: a SET from a trusted log over an entry that records this payload's
/// hash, this signature and this certificate (or key).
fn check_tlog(
    layer: &SignatureLayer,
    trust: &TrustRoot,
    signer_der: &[u8],
) -> Result<RekorPayload, Rejection> {
    let Some(bundle) = &layer.bundle else {
        return Err(Rejection::new(
            ReasonCode::TlogMissing,
            "the signature has no Rekor bundle (transparency-log entry)",
        ));
    };
    let invalid = |why: &str| Rejection::new(ReasonCode::TlogInvalid, why.to_string());
    let log = trust
        .rekor
        .get(&bundle.payload.log_id)
        .ok_or_else(|| invalid("the Rekor entry is from a log that is not trusted"))?;
    if !log.validity.contains(bundle.payload.integrated_time) {
        return Err(invalid("the Rekor entry is outside the log key's validity"));
    }
    let canonical = serde_json_canonicalizer::to_vec(&bundle.payload)
        .map_err(|_| invalid("the Rekor entry cannot be canonicalized"))?;
    log.key
        .verify_signature(
            Signature::Base64Encoded(bundle.signed_entry_timestamp.as_bytes()),
            &canonical,
        )
        .map_err(|_| {
            invalid("the Rekor signed entry timestamp does not verify with the log key")
        })?;
    check_entry_body(&bundle.payload.body, layer, signer_der)?;
    Ok(bundle.payload.clone())
}

/// The logged entry records this layer: `hashedrekord` / `rekord` 0.0.1 for signatures,
/// `intoto` 0.0.2 / `dsse` 0.0.1 for attestations. Hash, signature and public key must all
/// be this layer's.
pub fn check_entry_body(
    body_b64: &str,
    layer: &SignatureLayer,
    signer_der: &[u8],
) -> Result<(), Rejection> {
    let mismatch = |why: &str| {
        Rejection::new(
            ReasonCode::TlogMismatch,
            format!("the Rekor entry does not match this signature: {why}"),
        )
    };
    let body = BASE64
        .decode(body_b64)
        .map_err(|_| mismatch("unreadable body"))?;
    let body =
        super::strict::parse(&body).map_err(|e| mismatch(&format!("unreadable body ({e})")))?;
    let kind = body["kind"].as_str().unwrap_or_default();
    let spec = &body["spec"];
    // (payload hash, [(signature, public key)]) as logged; signatures may be base64 once or,
    // in `intoto` 0.0.2, base64 of the envelope's base64.
    let (hash, signers): (&serde_json::Value, Vec<(&str, &str)>) =
        match (kind, layer.dsse_payload_type.is_some()) {
            ("hashedrekord" | "rekord", false) => (
                &spec["data"]["hash"],
                vec![(
                    spec["signature"]["content"].as_str().unwrap_or_default(),
                    spec["signature"]["publicKey"]["content"]
                        .as_str()
                        .unwrap_or_default(),
                )],
            ),
            ("intoto", true) => (
                &spec["content"]["payloadHash"],
                logged_signers(
                    &spec["content"]["envelope"]["signatures"],
                    "sig",
                    "publicKey",
                ),
            ),
            ("dsse", true) => (
                &spec["payloadHash"],
                logged_signers(&spec["signatures"], "signature", "verifier"),
            ),
            _ => return Err(mismatch(&format!("unexpected entry kind {kind:?}"))),
        };
    let payload_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, &layer.payload));
    if hash["algorithm"] != "sha256" || hash["value"].as_str() != Some(payload_hash.as_str()) {
        return Err(mismatch("the payload hash differs"));
    }
    let same_signature = |logged: &str| {
        let once = BASE64.decode(logged).ok();
        once.as_deref() == Some(layer.signature.as_slice())
            || once
                .and_then(|b| BASE64.decode(b).ok())
                .is_some_and(|twice| twice == layer.signature)
    };
    let Some((_, key)) = signers.iter().find(|(sig, _)| same_signature(sig)) else {
        return Err(mismatch("the signature differs"));
    };
    let logged_key = BASE64.decode(key).ok().and_then(|pem| pem_to_der(&pem));
    if logged_key.as_deref() != Some(signer_der) {
        return Err(mismatch("the certificate or key differs"));
    }
    Ok(())
}

fn logged_signers<'a>(
    signatures: &'a serde_json::Value,
    sig: &str,
    key: &str,
) -> Vec<(&'a str, &'a str)> {
    signatures
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s[sig].as_str().unwrap_or_default(),
                s[key].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::SubjectPublicKeyInfoDer;
    CertificateDer::from_pem_slice(pem)
        .map(|c| c.to_vec())
        .or_else(|_| SubjectPublicKeyInfoDer::from_pem_slice(pem).map(|k| k.to_vec()))
        .ok()
}

/// The certificate chains to a trusted Fulcio CA and was valid at `integrated_time`.
fn check_chain(
    cert: &CertificateDer<'_>,
    trust: &TrustRoot,
    integrated_time: i64,
) -> Result<(), Rejection> {
    let end_entity = webpki::EndEntityCert::try_from(cert).map_err(|e| {
        Rejection::new(
            ReasonCode::UntrustedRoot,
            format!("unreadable certificate: {e}"),
        )
    })?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(integrated_time).unwrap_or(0),
    ));
    let mut last = Rejection::new(
        ReasonCode::UntrustedRoot,
        "no Fulcio certificate authority is trusted",
    );
    for ca in trust
        .fulcio
        .iter()
        .filter(|ca| ca.validity.contains(integrated_time))
    {
        let Ok(anchor) = webpki::anchor_from_trusted_cert(&ca.root) else {
            continue;
        };
        let anchors = [anchor];
        let verified = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &ca.intermediates,
            at,
            webpki::KeyUsage::required(CODE_SIGNING_EKU),
            None,
            None,
        );
        match verified {
            Ok(_) => return Ok(()),
            Err(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
                last = Rejection::new(
                    ReasonCode::CertExpired,
                    format!("the certificate was not valid when the signature was logged (Rekor time {integrated_time})"),
                );
            }
            Err(e) if last.code != ReasonCode::CertExpired => {
                last = Rejection::new(
                    ReasonCode::UntrustedRoot,
                    format!("the certificate does not chain to a trusted Fulcio root: {e}"),
                );
            }
            Err(_) => {}
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
