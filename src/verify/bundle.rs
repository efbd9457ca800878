//! Sigstore bundles (v0.1–v0.3, message signatures and DSSE envelopes), verified with the
//! `sigstore-verify` crate of sigstore/sigstore-rust, which was written against the Sigstore
//! conformance suite: certificate chain and validity at every verified time, SCTs, Rekor v1
//! inclusion promises and proofs, Rekor v2 checkpoints (including cosigned ones), RFC 3161
//! timestamps, and the log entry matching the signature. This module adds verdict's
//! identity rules and reason codes on top.

use super::identity::IdentityRule;
use super::proof::{PublicKey, Rejection};
use crate::decision::ReasonCode;
use crate::images::Digest;
use sigstore_verify::types::bundle::VerificationMaterialContent;
use sigstore_verify::types::{Bundle, DerPublicKey};
use sigstore_verify::{
    CertificateError, Error, PublicKeyVerificationPolicy, TransparencyLogError, VerificationPolicy,
};

pub use sigstore_verify::types::Artifact;

/// Media types of Sigstore bundles stored as OCI artifacts (cosign v3 writes v0.3).
pub fn is_bundle_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle") && media_type.contains("json")
}

/// The artifact named by an OCI digest (`sha256:<hex>`): bundles over an image sign its
/// manifest digest, or an in-toto statement whose subject is that digest.
pub fn digest_artifact(digest: &Digest) -> Result<Artifact<'static>, NotSha256> {
    let not_sha256 = || NotSha256(digest.to_string());
    if !digest.is_sha256() {
        return Err(not_sha256());
    }
    let hash =
        sigstore_verify::types::Sha256Hash::from_hex(digest.hex()).map_err(|_| not_sha256())?;
    Ok(Artifact::from_digest(hash))
}

/// A digest of another algorithm than SHA-256, which bundles over images do not use.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sha256 digest")]
pub struct NotSha256(pub String);

/// A `trusted_root.json` that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum TrustedRootError {
    #[error("invalid trusted_root.json: {0}")]
    Invalid(String),
    #[error("unusable trusted_root.json: {0}")]
    Unusable(String),
}

/// The trust a bundle is checked against: a parsed Sigstore `trusted_root.json`.
pub struct BundleTrust {
    verifier: sigstore_verify::Verifier,
    /// Trust roots without CT logs (private instances given as PEM) cannot check SCTs.
    check_sct: bool,
}

impl std::fmt::Debug for BundleTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleTrust")
            .field("check_sct", &self.check_sct)
            .finish_non_exhaustive()
    }
}

impl BundleTrust {
    pub fn from_trusted_root_json(json: &str) -> Result<Self, TrustedRootError> {
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(json)
            .map_err(|e| TrustedRootError::Invalid(e.to_string()))?;
        let check_sct = !root.ctlogs.is_empty();
        let verifier = sigstore_verify::Verifier::new(&root)
            .map_err(|e| TrustedRootError::Unusable(e.to_string()))?;
        Ok(Self {
            verifier,
            check_sct,
        })
    }

    /// Sigstore's staging instance, as built into `sigstore-trust-root`.
    pub fn staging() -> Result<Self, TrustedRootError> {
        Self::from_trusted_root_json(sigstore_verify::trust_root::SIGSTORE_STAGING_TRUSTED_ROOT)
    }
}

/// Who must have signed a bundle.
pub enum Signer<'a> {
    /// A Fulcio certificate for one of these identities.
    Keyless(&'a [IdentityRule]),
    /// One of these keys; `tlog` requires a transparency-log entry.
    Keys { keys: &'a [PublicKey], tlog: bool },
}

/// What a verified bundle proves.
#[derive(Debug, Clone)]
pub struct BundleProof {
    /// `subject (issuer)` of the certificate, or the key's name.
    pub identity: String,
    pub rekor_log_index: Option<i64>,
    pub rekor_integrated_time: Option<i64>,
}

impl From<BundleProof> for super::proof::Proof {
    fn from(proof: BundleProof) -> Self {
        Self {
            identity: proof.identity,
            rekor_log_index: proof.rekor_log_index,
            rekor_integrated_time: proof.rekor_integrated_time,
        }
    }
}

/// A Sigstore bundle, read strictly: neither the bundle nor a logged Rekor entry body may
/// repeat a key (see `strict`), so the log and verdict read the same entry.
pub fn parse(json: &[u8]) -> Result<Bundle, Rejection> {
    let invalid = |why: String| Rejection::new(ReasonCode::SignatureInvalid, why);
    super::strict::parse(json)
        .map_err(|e| invalid(format!("the Sigstore bundle is not valid: {e}")))?;
    let text = std::str::from_utf8(json).map_err(|_| invalid("the bundle is not UTF-8".into()))?;
    let bundle = Bundle::from_json(text)
        .map_err(|e| invalid(format!("the Sigstore bundle is not valid: {e}")))?;
    for entry in &bundle.verification_material.tlog_entries {
        super::strict::parse(entry.canonicalized_body.as_bytes()).map_err(|e| {
            Rejection::new(
                ReasonCode::TlogMismatch,
                format!("the Rekor entry body is not valid: {e}"),
            )
        })?;
    }
    Ok(bundle)
}

/// Verifies `bundle` over `artifact` (bytes, or the digest of the bytes) for `signer`.
pub fn verify(
    trust: &BundleTrust,
    bundle: &Bundle,
    artifact: Artifact<'_>,
    signer: &Signer<'_>,
) -> Result<BundleProof, Rejection> {
    let (identity, result) = match signer {
        Signer::Keyless(rules) => {
            let mut policy = VerificationPolicy::any_identity();
            if !trust.check_sct {
                policy = policy.skip_sct();
            }
            let result = trust
                .verifier
                .verify(artifact, bundle, &policy)
                .map_err(|e| keyless_rejection(bundle, e))?;
            (keyless_identity(bundle, rules)?, result)
        }
        Signer::Keys { keys, tlog } => {
            let mut last = Rejection::new(
                ReasonCode::UntrustedKey,
                "the bundle was not signed by any of the authority's keys",
            );
            let mut found = None;
            for key in keys.iter() {
                let mut policy =
                    PublicKeyVerificationPolicy::new(DerPublicKey::new(key.spki_der.clone()));
                if !tlog {
                    policy = policy.skip_tlog_unsafe();
                }
                match trust.verifier.verify(artifact.clone(), bundle, &policy) {
                    Ok(result) => {
                        found = Some((key.name.clone(), result));
                        break;
                    }
                    // A signature that does not verify with this key: try the next one.
                    Err(Error::SignatureInvalid(_)) => {}
                    Err(e) => last = rejection(e),
                }
            }
            found.ok_or(last)?
        }
    };
    let entry = bundle.verification_material.tlog_entries.first();
    Ok(BundleProof {
        identity,
        rekor_log_index: entry.map(|e| e.log_index.as_i64()),
        rekor_integrated_time: result.integrated_time().map(|t| t.as_second()),
    })
}

/// The certificate's identity, checked against the policy's rules (exact or regular
/// expression subjects and issuers, and GitHub claims) as for cosign signatures.
fn keyless_identity(bundle: &Bundle, rules: &[IdentityRule]) -> Result<String, Rejection> {
    let der = leaf_certificate(bundle).ok_or_else(|| {
        Rejection::new(
            ReasonCode::UntrustedKey,
            "the bundle was signed with a key, not a Fulcio certificate",
        )
    })?;
    super::proof::accepted_identity(der, rules)
}

fn leaf_certificate(bundle: &Bundle) -> Option<&[u8]> {
    match &bundle.verification_material.content {
        VerificationMaterialContent::Certificate(c) => Some(c.raw_bytes.as_bytes()),
        VerificationMaterialContent::X509CertificateChain { certificates } => {
            certificates.first().map(|c| c.raw_bytes.as_bytes())
        }
        _ => None,
    }
}

/// A keyless bundle's failure as a reason code. The chain is checked (by webpki) before
/// the certificate's own validity, so a leaf that had expired when the entry was logged
/// fails as an invalid chain; it is `CERT_EXPIRED`, as on the `.sig` path. The log times
/// were verified before the chain was looked at.
fn keyless_rejection(bundle: &Bundle, error: Error) -> Rejection {
    let mut rejection = rejection(error);
    if rejection.code == ReasonCode::UntrustedRoot && expired_at_log_time(bundle) {
        rejection.code = ReasonCode::CertExpired;
        rejection.detail = format!(
            "the certificate was not valid when the signature was logged ({})",
            rejection.detail
        );
    }
    rejection
}

/// Whether a logged time of the bundle falls outside its leaf certificate's validity.
fn expired_at_log_time(bundle: &Bundle) -> bool {
    use x509_cert::der::Decode as _;
    let Some(cert) =
        leaf_certificate(bundle).and_then(|der| x509_cert::Certificate::from_der(der).ok())
    else {
        return false;
    };
    let validity = cert.tbs_certificate().validity();
    let (not_before, not_after) = (
        validity.not_before.to_unix_duration().as_secs(),
        validity.not_after.to_unix_duration().as_secs(),
    );
    bundle
        .verification_material
        .tlog_entries
        .iter()
        .filter_map(|e| e.integrated_time)
        .filter_map(|t| u64::try_from(t.as_second()).ok())
        .any(|t| t < not_before || t > not_after)
}

/// sigstore-verify's reasons as verdict's reason codes.
fn rejection(error: Error) -> Rejection {
    let code = match &error {
        Error::IdentityMismatch { .. } | Error::IssuerMismatch { .. } => {
            ReasonCode::IdentityMismatch
        }
        Error::SignatureInvalid(_) => ReasonCode::SignatureInvalid,
        Error::ArtifactMismatch(_) | Error::UnsupportedArtifact(_) => ReasonCode::DigestMismatch,
        Error::Certificate(CertificateError::Expired { .. })
        | Error::Certificate(CertificateError::NotYetValid { .. }) => ReasonCode::CertExpired,
        Error::Certificate(_) => ReasonCode::UntrustedRoot,
        Error::TransparencyLog(TransparencyLogError::EntryMismatch(_)) => ReasonCode::TlogMismatch,
        Error::TransparencyLog(_) => ReasonCode::TlogInvalid,
        Error::Timestamp(_) => ReasonCode::TimestampInvalid,
        _ => ReasonCode::SignatureInvalid,
    };
    Rejection::new(code, error.to_string())
}
