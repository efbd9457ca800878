//! The pure checks: given the evidence the registry holds for one digest and an image
//! policy, which authority it satisfies and with what proof, or the most telling reason
//! none does. No I/O, no caching.

use super::bundle::{self, BundleProof, BundleTrust, Signer};
use super::cosign::{self, SignatureLayer};
use super::evidence::Evidence;
use super::facts::{rejected, AttestationFact, Format, Judgement, SignatureFact};
use super::imagepolicy::{AttestationRequirement, Authority, AuthorityKind, ImagePolicy};
use super::proof::{NotAnAttestation, Proof, Rejection, Statement, COSIGN_SIGN_PREDICATE};
use super::trust;
use crate::decision::ReasonCode;
use crate::images::{Digest, ImageRef};

/// Any authority satisfied satisfies the policy (as in policy-controller). An authority
/// without `attestations` needs a signature; one with them needs a verified attestation of
/// each listed predicate type, all from that authority's signer(s).
pub(super) fn check_policy(
    policy: &ImagePolicy,
    image: &ImageRef,
    digest: &Digest,
    evidence: &Evidence,
) -> Judgement {
    if evidence.is_empty() {
        let rejection = Rejection::new(
            ReasonCode::NoSignature,
            format!(
                "no cosign signature, attestation or Sigstore bundle found for {}@{digest}",
                image.name()
            ),
        );
        return rejected(rejection);
    }
    let mut best = Best::default();
    for authority in &policy.authorities {
        let name = format!("{}/{}", policy.name, authority.name);
        let result = if authority.attestations.is_empty() {
            signature_fact(authority, &name, digest, evidence)
        } else {
            attestation_fact(authority, &name, digest, evidence)
        };
        match result {
            Ok(fact) => return Ok(fact),
            Err(rejection) => best.offer(rejection),
        }
    }
    rejected(best.into_rejection())
}

/// The most telling of several rejections: the one that got furthest.
#[derive(Default)]
struct Best(Option<Rejection>);

impl Best {
    fn offer(&mut self, rejection: Rejection) {
        if self
            .0
            .as_ref()
            .is_none_or(|b| rejection.stage() > b.stage())
        {
            self.0 = Some(rejection);
        }
    }

    fn into_rejection(self) -> Rejection {
        self.0.unwrap_or_else(|| {
            Rejection::new(ReasonCode::NoSignature, "no signature could be read")
        })
    }
}

/// One piece of evidence, from cosign's tags or a Sigstore bundle, checked the same way.
#[derive(Clone, Copy)]
enum Candidate<'a> {
    Cosign(&'a SignatureLayer),
    Bundle(&'a sigstore_verify::types::Bundle),
}

impl Candidate<'_> {
    fn format(self) -> Format {
        match self {
            Self::Cosign(_) => Format::Cosign,
            Self::Bundle(_) => Format::Bundle,
        }
    }

    /// The in-toto statement of a DSSE envelope, or why the envelope is not an attestation;
    /// `None` for a signature over a payload.
    fn statement(self) -> Option<Result<Statement, NotAnAttestation>> {
        match self {
            Self::Cosign(layer) => layer.statement(),
            Self::Bundle(bundle) => match &bundle.content {
                sigstore_verify::types::SignatureContent::DsseEnvelope(envelope) => Some(
                    Statement::parse(&envelope.payload_type, envelope.payload.as_bytes()),
                ),
                _ => None,
            },
        }
    }

    /// Why this is not a signature of the image, if it is not one: a DSSE envelope in the
    /// signature manifest, or a bundle of anything but an in-toto statement of cosign's
    /// sign predicate.
    fn not_a_signature(self) -> Option<Rejection> {
        let (code, detail) = match self {
            Self::Cosign(layer) if layer.dsse_payload_type.is_some() => (
                ReasonCode::NoSignature,
                "a DSSE envelope in the signature manifest is not a signature".to_string(),
            ),
            Self::Cosign(_) => return None,
            Self::Bundle(_) => match self.statement()? {
                Ok(s) if s.predicate_type == COSIGN_SIGN_PREDICATE => return None,
                Ok(_) => (
                    ReasonCode::NoSignature,
                    "the bundle is an attestation, not a signature".to_string(),
                ),
                Err(why) => (
                    ReasonCode::SignatureInvalid,
                    format!("the bundle's DSSE envelope is not a cosign signature: {why}"),
                ),
            },
        };
        Some(Rejection::new(code, detail))
    }

    fn check(self, authority: &Authority, digest: &Digest) -> Result<Proof, Rejection> {
        match self {
            Self::Cosign(layer) => check_authority(authority, layer, digest),
            Self::Bundle(bundle) => check_bundle(authority, bundle, digest).map(Proof::from),
        }
    }
}

/// A signature by the authority: a simple-signing layer, or a bundle whose message
/// signature or cosign-sign statement covers `digest`.
fn signature_fact(
    authority: &Authority,
    name: &str,
    digest: &Digest,
    evidence: &Evidence,
) -> Result<SignatureFact, Rejection> {
    let layers = evidence
        .signatures
        .iter()
        .map(|l| l.as_ref().map(Candidate::Cosign));
    let bundles = evidence
        .bundles
        .iter()
        .map(|b| b.as_ref().map(Candidate::Bundle));
    let mut best = Best::default();
    for candidate in layers.chain(bundles) {
        let result = candidate.map_err(Rejection::clone).and_then(|candidate| {
            match candidate.not_a_signature() {
                Some(rejection) => Err(rejection),
                None => candidate.check(authority, digest),
            }
            .map(|proof| (proof, candidate.format()))
        });
        match result {
            Ok((proof, format)) => return Ok(fact(name, proof, digest, format)),
            Err(rejection) => best.offer(rejection),
        }
    }
    Err(best.into_rejection())
}

/// Verified attestations of every predicate type the authority requires.
fn attestation_fact(
    authority: &Authority,
    name: &str,
    digest: &Digest,
    evidence: &Evidence,
) -> Result<SignatureFact, Rejection> {
    let mut found = Vec::new();
    let mut first_proof = None;
    for required in &authority.attestations {
        let (proof, attestation) =
            required_attestation(authority, name, required, digest, evidence)?;
        first_proof.get_or_insert(proof);
        found.push(attestation);
    }
    let proof = first_proof
        .ok_or_else(|| Rejection::new(ReasonCode::AttestationMissing, "no attestation required"))?;
    let mut fact = fact(name, proof, digest, found[0].format);
    fact.attestations = found;
    Ok(fact)
}

fn required_attestation(
    authority: &Authority,
    name: &str,
    required: &AttestationRequirement,
    digest: &Digest,
    evidence: &Evidence,
) -> Result<(Proof, AttestationFact), Rejection> {
    let mut best = Best::default();
    let mut seen_types = Vec::new();
    let attestation = |proof: &Proof, statement: Statement, format| AttestationFact {
        predicate_type: statement.predicate_type,
        predicate: statement.predicate,
        signer: proof.identity.clone(),
        authority: name.to_string(),
        digest: digest.clone(),
        format,
    };
    // Unreadable attestation layers count as rejections; unreadable bundles may be anything.
    let layers = evidence
        .attestations
        .iter()
        .map(|l| l.as_ref().map(Candidate::Cosign));
    let bundles = evidence
        .bundles
        .iter()
        .flatten()
        .map(|b| Ok(Candidate::Bundle(b)));
    for candidate in layers.chain(bundles) {
        let candidate = match candidate {
            Ok(candidate) => candidate,
            Err(rejection) => {
                best.offer(rejection.clone());
                continue;
            }
        };
        let statement = match candidate.statement() {
            None => continue,
            Some(Ok(statement)) => statement,
            Some(Err(why)) => {
                seen_types.push(format!("(not an attestation: {why})"));
                continue;
            }
        };
        if statement.predicate_type != required.predicate_type {
            seen_types.push(statement.predicate_type);
            continue;
        }
        match candidate.check(authority, digest) {
            Ok(proof) => {
                let fact = attestation(&proof, statement, candidate.format());
                return Ok((proof, fact));
            }
            Err(rejection) => best.offer(rejection),
        }
    }
    Err(missing(required, digest, best, seen_types))
}

/// Why no attestation satisfied `required`: the most telling rejection of one that had the
/// predicate type, or `ATTESTATION_MISSING` naming the types that were found.
fn missing(
    required: &AttestationRequirement,
    digest: &Digest,
    best: Best,
    mut seen_types: Vec<String>,
) -> Rejection {
    match best.0 {
        Some(rejection) if rejection.stage() > 0 => rejection,
        _ => {
            seen_types.sort();
            seen_types.dedup();
            let seen = if seen_types.is_empty() {
                "none".to_string()
            } else {
                seen_types.join(", ")
            };
            Rejection::new(
                ReasonCode::AttestationMissing,
                format!(
                    "no verified {:?} attestation ({}) for {digest}; attestations found: {seen}",
                    required.name, required.predicate_type
                ),
            )
        }
    }
}

/// Trust for key authorities without a transparency log: nothing but the key.
static KEY_ONLY: std::sync::LazyLock<Option<BundleTrust>> = std::sync::LazyLock::new(|| {
    trust::trusted_root_json(&[], &[])
        .ok()
        .and_then(|json| BundleTrust::from_trusted_root_json(&json).ok())
});

fn check_bundle(
    authority: &Authority,
    bundle: &sigstore_verify::types::Bundle,
    digest: &Digest,
) -> Result<BundleProof, Rejection> {
    let artifact = bundle::digest_artifact(digest)
        .map_err(|e| Rejection::new(ReasonCode::DigestMismatch, e.to_string()))?;
    let no_trust = || Rejection::new(ReasonCode::UntrustedRoot, "no trust root for bundles");
    match &authority.kind {
        AuthorityKind::Key { keys, tlog } => {
            let trust = match tlog {
                Some(trust) => trust.bundle.as_deref(),
                None => KEY_ONLY.as_ref(),
            }
            .ok_or_else(no_trust)?;
            let signer = Signer::Keys {
                keys,
                tlog: tlog.is_some(),
            };
            bundle::verify(trust, bundle, artifact, &signer)
        }
        AuthorityKind::Keyless { trust, identities } => {
            let trust = trust.bundle.as_deref().ok_or_else(no_trust)?;
            bundle::verify(trust, bundle, artifact, &Signer::Keyless(identities))
        }
    }
}

fn fact(authority: &str, proof: Proof, digest: &Digest, format: Format) -> SignatureFact {
    SignatureFact {
        authority: authority.to_string(),
        identity: proof.identity,
        rekor_log_index: proof.rekor_log_index,
        rekor_integrated_time: proof.rekor_integrated_time,
        digest: digest.clone(),
        format,
        attestations: Vec::new(),
    }
}

fn check_authority(
    authority: &Authority,
    layer: &SignatureLayer,
    digest: &Digest,
) -> Result<Proof, Rejection> {
    match &authority.kind {
        AuthorityKind::Key { keys, tlog } => {
            cosign::check_with_keys(layer, keys, tlog.as_deref(), digest)
        }
        AuthorityKind::Keyless { trust, identities } => {
            cosign::check_keyless(layer, trust, identities, digest)
        }
    }
}
