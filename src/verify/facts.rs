//! The `input.images` contract: what verdict knows and has proven about each image of a
//! review (`ImageFacts` and the facts inside it, documented in `policies/README.md`), and
//! how the judgements of every matching image policy are assembled into them. Not how
//! judgements are made (`authorities`) or remembered (`cache`).

use super::identity;
use super::imagepolicy::{AuthorityKind, ImagePolicy, Mode};
use super::proof::Rejection;
use crate::decision::ReasonCode;
use crate::decision_key;
use crate::images::{ContainerKind, Digest, ImageOccurrence, ImageRef};
use serde::Serialize;

/// A problem with one image, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageError {
    pub code: ReasonCode,
    pub message: String,
}

/// A signature (or the attestations) that satisfied an authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFact {
    /// `policy/authority` that accepted it.
    pub authority: String,
    /// The signer: a key fingerprint, or the certificate's subject and issuer.
    pub identity: String,
    pub rekor_log_index: Option<i64>,
    pub rekor_integrated_time: Option<i64>,
    /// The digest that carries the proof: the admitted one, or for an image index with a
    /// `multiArch: platform|either` policy, the platform manifest's.
    pub digest: Digest,
    /// `cosign` (`.sig` / `.att` tags) or `bundle` (a Sigstore bundle found as an OCI referrer).
    pub format: Format,
    /// The verified attestations the authority required.
    pub attestations: Vec<AttestationFact>,
}

/// Where a proof was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// cosign's `.sig` / `.att` tags.
    Cosign,
    /// A Sigstore bundle found as an OCI referrer.
    Bundle,
}

/// A verified attestation; the entries of `input.images[*].attestations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationFact {
    /// The in-toto predicate type URI.
    #[serde(rename = "type")]
    pub predicate_type: String,
    /// The predicate, decoded JSON.
    pub predicate: serde_json::Value,
    /// Who signed it: a key fingerprint, or the certificate's subject and issuer.
    pub signer: String,
    /// `policy/authority` that required and accepted it.
    pub authority: String,
    /// The digest named as the statement's subject.
    pub digest: Digest,
    pub format: Format,
}

/// How one image fared against one image policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyOutcome {
    pub policy: String,
    pub file: String,
    pub mode: Mode,
    pub satisfied: bool,
    /// When satisfied, the signature that did it.
    pub signature: Option<SignatureFact>,
    /// When not, why.
    pub error: Option<ImageError>,
    /// A command that reproduces the check.
    pub reproduce: String,
}

/// One entry of `input.images`; the public contract documented in `policies/README.md`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFacts {
    pub container: String,
    pub kind: ContainerKind,
    pub path: String,
    pub reference: String,
    /// Normalized `registry/repository[:tag][@digest]`; null when the reference is invalid.
    pub normalized: Option<String>,
    pub registry: Option<String>,
    pub repository: Option<String>,
    /// The tag, `latest` when the reference names neither tag nor digest.
    pub tag: Option<String>,
    /// The digest, from the reference or resolved from the registry.
    pub digest: Option<Digest>,
    /// True when the reference itself names a digest.
    pub pinned: bool,
    /// At least one image policy matched and every matching one is satisfied.
    pub verified: bool,
    pub signatures: Vec<SignatureFact>,
    /// Verified attestations, from every satisfied policy.
    pub attestations: Vec<AttestationFact>,
    pub policies: Vec<PolicyOutcome>,
    pub errors: Vec<ImageError>,
    /// The SHA-256 of the JSON text, once a decision key needed it: the same facts serve
    /// every review of the image while its judgements stay cached.
    #[serde(skip)]
    text_digest: decision_key::Memo,
}

impl decision_key::Image for ImageFacts {
    fn text_digest(&self) -> Option<decision_key::Key> {
        self.text_digest.of(self)
    }
}

impl ImageFacts {
    /// Facts known from the (parsed) reference alone.
    pub(crate) fn from_parsed(
        occurrence: &ImageOccurrence,
        parsed: Result<&ImageRef, &crate::images::ReferenceError>,
    ) -> Self {
        let (parsed, errors) = match parsed {
            Ok(r) => (Some(r), Vec::new()),
            Err(e) => (
                None,
                vec![ImageError {
                    code: ReasonCode::InvalidImageRef,
                    message: e.to_string(),
                }],
            ),
        };
        Self {
            container: occurrence.container.clone(),
            kind: occurrence.kind,
            path: occurrence.path.clone(),
            reference: occurrence.reference.clone(),
            normalized: parsed.map(ToString::to_string),
            registry: parsed.map(|r| r.registry.clone()),
            repository: parsed.map(|r| r.repository.clone()),
            tag: parsed.and_then(|r| r.tag.clone()),
            digest: parsed.and_then(|r| r.digest.clone()),
            pinned: parsed.is_some_and(|r| r.digest.is_some()),
            verified: false,
            signatures: Vec::new(),
            attestations: Vec::new(),
            policies: Vec::new(),
            errors,
            text_digest: decision_key::Memo::default(),
        }
    }
}

/// How one image digest fared against one policy: the signature (or attestations) that
/// satisfied it, or why none did.
pub(super) type Judgement = Result<SignatureFact, ImageError>;

pub(super) fn rejected(rejection: Rejection) -> Judgement {
    Err(ImageError {
        code: rejection.code,
        message: rejection.detail,
    })
}

/// The facts of an image judged by `outcomes` (every matching policy and its judgement) at
/// `digest` (none when it could not be resolved).
pub(super) fn assemble<'p>(
    occurrence: &ImageOccurrence,
    image: &ImageRef,
    digest: Option<&Digest>,
    outcomes: impl Iterator<Item = (&'p ImagePolicy, Judgement)>,
) -> ImageFacts {
    let mut facts = ImageFacts::from_parsed(occurrence, Ok(image));
    facts.policies = outcomes
        .map(|(policy, judgement)| outcome_of(policy, image, digest, judgement))
        .collect();
    if let Some(digest) = digest {
        facts.digest = Some(digest.clone());
    }
    facts.verified = facts.policies.iter().all(|p| p.satisfied);
    facts.signatures = facts
        .policies
        .iter()
        .filter_map(|p| p.signature.clone())
        .collect();
    facts.attestations = facts
        .signatures
        .iter()
        .flat_map(|s| s.attestations.iter().cloned())
        .collect();
    facts
        .errors
        .extend(facts.policies.iter().filter_map(|p| p.error.clone()));
    facts
}

/// The outcome reported for `policy`: the judgement with the policy's names and the
/// command that reproduces it.
fn outcome_of(
    policy: &ImagePolicy,
    image: &ImageRef,
    digest: Option<&Digest>,
    judgement: Judgement,
) -> PolicyOutcome {
    let (signature, error) = match judgement {
        Ok(signature) => (Some(signature), None),
        Err(error) => (None, Some(error)),
    };
    PolicyOutcome {
        policy: policy.name.clone(),
        file: policy.file.clone(),
        mode: policy.mode,
        satisfied: error.is_none(),
        signature,
        error,
        reproduce: reproduce(policy, image, digest),
    }
}

/// The `cosign verify` (or `verify-attestation`) command that checks the same thing, for the
/// first authority.
fn reproduce(policy: &ImagePolicy, image: &ImageRef, digest: Option<&Digest>) -> String {
    let target = match digest {
        None => image.to_string(),
        Some(digest) => format!("{}@{digest}", image.name()),
    };
    let command = match policy
        .authorities
        .first()
        .and_then(|a| a.attestations.first())
    {
        Some(required) => format!(
            "cosign verify-attestation --type {}",
            required.predicate_type
        ),
        None => "cosign verify".to_string(),
    };
    match authority_flags(policy) {
        Some(flags) => format!("{command}{flags} {target}"),
        None => String::new(),
    }
}

/// cosign's flags for the first authority's key or identity.
fn authority_flags(policy: &ImagePolicy) -> Option<String> {
    Some(match &policy.authorities.first()?.kind {
        AuthorityKind::Key { tlog, .. } => {
            let tlog = if tlog.is_some() {
                ""
            } else {
                " --insecure-ignore-tlog"
            };
            format!(
                " --key <public key of {:?} in {}>{tlog}",
                policy.name, policy.file
            )
        }
        AuthorityKind::Keyless { identities, .. } => {
            let mut flags = String::new();
            if let Some(rule) = identities.first() {
                match &rule.subject {
                    identity::Matcher::Exact(s) => {
                        flags.push_str(&format!(" --certificate-identity '{s}'"))
                    }
                    identity::Matcher::Regex(r) => {
                        flags.push_str(&format!(" --certificate-identity-regexp '{}'", r.as_str()))
                    }
                }
                match &rule.issuer {
                    Some(identity::Matcher::Exact(s)) => {
                        flags.push_str(&format!(" --certificate-oidc-issuer '{s}'"))
                    }
                    Some(identity::Matcher::Regex(r)) => flags.push_str(&format!(
                        " --certificate-oidc-issuer-regexp '{}'",
                        r.as_str()
                    )),
                    None => flags.push_str(" --certificate-oidc-issuer-regexp '.*'"),
                }
            }
            flags
        }
    })
}
