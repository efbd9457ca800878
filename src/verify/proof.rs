//! The shared vocabulary of verification: what a check proves (`Proof`), why it refused
//! (`Rejection`, ordered by how far it got), an authority's `PublicKey`, the in-toto
//! `Statement` both cosign layers and Sigstore bundles carry, and which certificate
//! identities an authority accepts. Every checker (`cosign`, `bundle`, `authorities`)
//! speaks it; it imports none of them.

use super::identity::{CertIdentity, IdentityError, IdentityRule};
use crate::decision::ReasonCode;
use sigstore::crypto::CosignVerificationKey;

/// The predicate type cosign v3 gives the in-toto statement of a signature in bundle form.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE `payloadType` of an in-toto statement: the only one an attestation has.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The `_type`s of an in-toto Statement (v0.1 and v1).
pub const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

/// Why a DSSE envelope is not an attestation verdict can read.
#[derive(Debug, thiserror::Error)]
pub enum NotAnAttestation {
    #[error("the DSSE payloadType is {0:?}, not \"application/vnd.in-toto+json\"")]
    PayloadType(String),
    #[error("the in-toto statement is not valid JSON: {0}")]
    Json(super::strict::Malformed),
    #[error("the payload's _type is {0:?}, not an in-toto Statement (https://in-toto.io/Statement/v0.1 or https://in-toto.io/Statement/v1)")]
    StatementType(Option<String>),
    #[error("the in-toto statement has no predicateType")]
    NoPredicateType,
    #[error("the in-toto statement has no subject list")]
    NoSubjects,
}

/// An in-toto statement, read strictly: its predicate type, predicate and subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: serde_json::Value,
    subjects: Vec<serde_json::Value>,
}

impl Statement {
    /// The statement of a DSSE envelope, or why the envelope is not an attestation: its
    /// `payloadType` must be in-toto's and its payload an in-toto Statement (v0.1 or v1)
    /// without repeated keys, with a predicate type and a list of subjects.
    pub fn parse(payload_type: &str, payload: &[u8]) -> Result<Self, NotAnAttestation> {
        if payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(NotAnAttestation::PayloadType(payload_type.to_string()));
        }
        let json = super::strict::parse(payload).map_err(NotAnAttestation::Json)?;
        let statement_type = json.get("_type").and_then(|t| t.as_str());
        if !statement_type.is_some_and(|t| STATEMENT_TYPES.contains(&t)) {
            return Err(NotAnAttestation::StatementType(
                statement_type.map(str::to_string),
            ));
        }
        let predicate_type = json
            .get("predicateType")
            .and_then(|t| t.as_str())
            .ok_or(NotAnAttestation::NoPredicateType)?
            .to_string();
        let subjects = json
            .get("subject")
            .and_then(|s| s.as_array())
            .ok_or(NotAnAttestation::NoSubjects)?
            .clone();
        Ok(Self {
            predicate_type,
            predicate: json.get("predicate").cloned().unwrap_or_default(),
            subjects,
        })
    }

    /// The digests of `algorithm` that the statement's subjects name.
    pub(super) fn subject_digests(&self, algorithm: &str) -> Vec<&str> {
        self.subjects
            .iter()
            .filter_map(|s| s.get("digest")?.get(algorithm)?.as_str())
            .collect()
    }
}

/// Why a layer does not satisfy an authority. `stage` orders rejections by how many checks
/// passed, so the most telling reason of several layers is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ReasonCode,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// Later stages mean more checks passed before this one failed.
    pub fn stage(&self) -> u8 {
        stage(&self.code)
    }
}

/// How far verification got before failing with `code`: rejections (and cached
/// judgements) are compared by it, so the most telling reason of several is reported.
pub fn stage(code: &ReasonCode) -> u8 {
    match code {
        ReasonCode::SignatureInvalid | ReasonCode::UntrustedKey => 1,
        ReasonCode::DigestMismatch => 2,
        ReasonCode::TlogMissing => 3,
        ReasonCode::TlogInvalid => 4,
        ReasonCode::TlogMismatch => 5,
        ReasonCode::UntrustedRoot | ReasonCode::CertExpired => 6,
        ReasonCode::IdentityMismatch => 7,
        _ => 0,
    }
}

/// What a satisfied check proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub identity: String,
    pub rekor_log_index: Option<i64>,
    pub rekor_integrated_time: Option<i64>,
}

/// The certificate's identity if one of the rules accepts it, as `subject (issuer)`.
pub fn accepted_identity(cert_der: &[u8], rules: &[IdentityRule]) -> Result<String, Rejection> {
    let identity = CertIdentity::from_der(cert_der).map_err(|e| match e {
        IdentityError::Unreadable(_) => Rejection::new(ReasonCode::UntrustedRoot, e.to_string()),
        IdentityError::Ambiguous(_) => Rejection::new(ReasonCode::IdentityMismatch, e.to_string()),
    })?;
    if !rules.iter().any(|rule| rule.matches(&identity)) {
        let wanted: Vec<String> = rules.iter().map(IdentityRule::describe).collect();
        return Err(Rejection::new(
            ReasonCode::IdentityMismatch,
            format!(
                "signed by subject {:?} from issuer {:?}, but the policy accepts {}",
                identity.subject,
                identity.issuer.as_deref().unwrap_or("(none)"),
                wanted.join(" or ")
            ),
        ));
    }
    Ok(format!(
        "{} ({})",
        identity.subject,
        identity.issuer.unwrap_or_default()
    ))
}

/// A public key of an authority, with the name reports use.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: String,
    pub key: CosignVerificationKey,
    pub spki_der: Vec<u8>,
}
