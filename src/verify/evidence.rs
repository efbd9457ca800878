//! What the registry holds about one digest: the layers of cosign's `.sig` and `.att`
//! manifests, Sigstore bundles found as OCI referrers, and for an image index the platform
//! manifests a node may run. Fetched through `registry` (which only moves bytes) and
//! returned as evidence; never judged here.

use super::cosign::{self, SignatureLayer};
use super::oci::{self, Platform};
use super::proof::Rejection;
use super::{bundle, strict};
use crate::images::{Digest, ImageRef};
use crate::registry::auth::Keyring;
use crate::registry::{Registry, RegistryError};
use std::time::Instant;

/// For an image index, the digests of every manifest a node of this verifier's platform
/// may run; `None` for a single-platform image. The document is read as what it says it
/// is (see `oci`).
pub(super) async fn platform_digests(
    registry: &Registry,
    keys: &Keyring,
    platform: &Platform,
    image: &ImageRef,
    digest: &Digest,
    deadline: Instant,
) -> Result<Option<Vec<Digest>>, RegistryError> {
    let manifest = registry
        .manifest_by_digest(image, digest, keys, deadline)
        .await?;
    let invalid = |detail: oci::Ambiguous| RegistryError::Invalid {
        host: image.registry.clone(),
        what: format!("{}@{digest}", image.name()),
        detail: detail.to_string(),
    };
    match oci::classify(&manifest.bytes, manifest.content_type.as_deref()).map_err(invalid)? {
        oci::Document::Image => Ok(None),
        oci::Document::Index(entries) => platform.manifests(&entries).map(Some).map_err(invalid),
    }
}

/// The cosign evidence for `digest`: the `.sig` layers when an authority wants a signature,
/// the `.att` layers when one wants attestations.
pub(super) async fn cosign(
    registry: &Registry,
    keys: &Keyring,
    image: &ImageRef,
    digest: &Digest,
    wanted: Wanted,
    deadline: Instant,
) -> Result<Evidence, RegistryError> {
    let mut evidence = Evidence::default();
    if wanted.signatures {
        evidence.signatures = fetch_layers(registry, keys, image, digest, ".sig", deadline).await?;
    }
    if wanted.attestations {
        evidence.attestations =
            fetch_layers(registry, keys, image, digest, ".att", deadline).await?;
    }
    Ok(evidence)
}

/// Which cosign evidence a policy's authorities can use.
#[derive(Clone, Copy)]
pub(super) struct Wanted {
    pub signatures: bool,
    pub attestations: bool,
}

/// The layers of the cosign manifest tagged `sha256-<hex><suffix>`.
async fn fetch_layers(
    registry: &Registry,
    keys: &Keyring,
    image: &ImageRef,
    digest: &Digest,
    suffix: &str,
    deadline: Instant,
) -> Result<Vec<Result<SignatureLayer, Rejection>>, RegistryError> {
    let Some(manifest) = registry
        .companion_manifest(image, digest, suffix, keys, deadline)
        .await?
    else {
        return Ok(Vec::new());
    };
    let what = format!("{suffix} manifest");
    let refs = cosign::parse_signature_manifest(&manifest)
        .map_err(|detail| invalid(image, &what, detail))?;
    if refs.len() > MAX_LAYERS {
        return Err(invalid(
            image,
            &what,
            format!("more than {MAX_LAYERS} layers"),
        ));
    }
    let blobs = futures_util::future::join_all(
        refs.iter()
            .map(|r| registry.blob(image, &r.digest, keys, deadline)),
    )
    .await;
    let mut layers = Vec::new();
    for (layer, blob) in refs.iter().zip(blobs) {
        layers.push(SignatureLayer::new(layer, blob?));
    }
    Ok(layers)
}

/// Sigstore bundles that refer to `digest` (OCI referrers with a bundle artifact type).
pub(super) async fn bundles(
    registry: &Registry,
    keys: &Keyring,
    image: &ImageRef,
    digest: &Digest,
    deadline: Instant,
) -> Result<Vec<Result<sigstore_verify::types::Bundle, Rejection>>, RegistryError> {
    let Some(index) = registry.referrers(image, digest, keys, deadline).await? else {
        return Ok(Vec::new());
    };
    let index = strict::parse(&index).map_err(|e| invalid(image, "referrers index", e))?;
    let manifests: Vec<&str> = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m["artifactType"]
                .as_str()
                .is_some_and(bundle::is_bundle_media_type)
        })
        .filter_map(|m| m["digest"].as_str())
        .collect();
    if manifests.len() > MAX_LAYERS {
        return Err(invalid(
            image,
            "referrers index",
            format!("more than {MAX_LAYERS} bundles"),
        ));
    }
    let mut bundles = Vec::new();
    for manifest in manifests {
        let manifest = Digest::parse(manifest).map_err(|e| invalid(image, "referrers index", e))?;
        let manifest = registry
            .manifest_by_digest(image, &manifest, keys, deadline)
            .await?;
        let refs = cosign::parse_signature_manifest(&manifest.bytes)
            .map_err(|detail| invalid(image, "bundle manifest", detail))?;
        for layer in refs.iter().take(1) {
            let blob = registry.blob(image, &layer.digest, keys, deadline).await?;
            bundles.push(bundle::parse(&blob));
        }
    }
    Ok(bundles)
}

/// More layers (or bundles) than this is not something anyone made honestly.
const MAX_LAYERS: usize = 32;

fn invalid(image: &ImageRef, what: &str, detail: impl ToString) -> RegistryError {
    RegistryError::Invalid {
        host: image.registry.clone(),
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

/// What the registry holds about one digest.
#[derive(Default)]
pub(super) struct Evidence {
    /// Layers of the cosign `.sig` manifest.
    pub signatures: Vec<Result<SignatureLayer, Rejection>>,
    /// Layers of the cosign `.att` manifest (DSSE envelopes).
    pub attestations: Vec<Result<SignatureLayer, Rejection>>,
    /// Sigstore bundles found as OCI referrers.
    pub bundles: Vec<Result<sigstore_verify::types::Bundle, Rejection>>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty() && self.attestations.is_empty() && self.bundles.is_empty()
    }
}
