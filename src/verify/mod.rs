//! Image facts: what verdict knows about each image of a review. Owns turning image
//! occurrences into the facts that reach Rego and the decision. Signature verification
//! against image policies plugs in here (it is async and deadline-bound); until image
//! policies exist, facts come from the reference alone and no image is `verified`.

pub mod cosign;
pub mod identity;
pub mod trust;

use crate::decision::ReasonCode;
use crate::images::{ContainerKind, ImageOccurrence};
use serde::Serialize;
use std::time::Instant;

/// A problem with one image, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageError {
    pub code: ReasonCode,
    pub message: String,
}

/// A signature that satisfied an authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFact {
    /// The image policy authority that accepted it.
    pub authority: String,
    /// The signer: a key name, or the certificate's issuer and subject.
    pub identity: String,
    pub rekor_log_index: Option<u64>,
    pub rekor_integrated_time: Option<i64>,
}

/// One entry of `input.images`; the public contract documented in `policies/README.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub digest: Option<String>,
    /// True when the reference itself names a digest.
    pub pinned: bool,
    pub verified: bool,
    pub signatures: Vec<SignatureFact>,
    pub errors: Vec<ImageError>,
}

impl ImageFacts {
    /// Facts known from the reference alone.
    pub fn from_reference(occurrence: &ImageOccurrence) -> Self {
        let (parsed, errors) = match &occurrence.parsed {
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
            errors,
        }
    }
}

/// Produces image facts for a review within its deadline.
#[derive(Debug, Default)]
pub struct Verifier {}

impl Verifier {
    pub async fn facts(&self, images: &[ImageOccurrence], _deadline: Instant) -> Vec<ImageFacts> {
        images.iter().map(ImageFacts::from_reference).collect()
    }
}
