//! Image facts: what verdict knows and has proven about each image of a review. Owns
//! matching image policies, resolving tags, verifying signatures through the registry,
//! and the caches that make a known image cost nothing; not the decision.

pub mod bundle;
pub mod cosign;
pub mod identity;
pub mod trust;

use crate::decision::ReasonCode;
use crate::imagepolicy::{Authority, AuthorityKind, ImagePolicy, Mode};
use crate::images::{ContainerKind, ImageOccurrence, ImageRef};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};
use cosign::{Proof, Rejection, SignatureLayer};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A problem with one image, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageError {
    pub code: ReasonCode,
    pub message: String,
}

/// A signature that satisfied an authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFact {
    /// `policy/authority` that accepted it.
    pub authority: String,
    /// The signer: a key fingerprint, or the certificate's subject and issuer.
    pub identity: String,
    pub rekor_log_index: Option<i64>,
    pub rekor_integrated_time: Option<i64>,
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
    /// At least one image policy matched and every matching one is satisfied.
    pub verified: bool,
    pub signatures: Vec<SignatureFact>,
    pub policies: Vec<PolicyOutcome>,
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
            policies: Vec::new(),
            errors,
        }
    }
}

/// Cache lifetimes and bounds.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// How long a satisfied verification is reused.
    pub verified_ttl: Duration,
    /// How long a permanent failure (`NO_SIGNATURE`, `IDENTITY_MISMATCH`, ...) is reused.
    pub rejected_ttl: Duration,
    /// How long a tag → digest resolution is reused.
    pub tag_ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            verified_ttl: Duration::from_secs(600),
            rejected_ttl: Duration::from_secs(30),
            tag_ttl: Duration::from_secs(10),
            max_entries: 100_000,
        }
    }
}

/// Per-entry lifetimes: satisfied outcomes live long, permanent failures briefly.
struct OutcomeExpiry {
    verified: Duration,
    rejected: Duration,
}

impl moka::Expiry<OutcomeKey, Arc<Judgement>> for OutcomeExpiry {
    fn expire_after_create(
        &self,
        _: &OutcomeKey,
        value: &Arc<Judgement>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_ok() {
            self.verified
        } else {
            self.rejected
        })
    }
}

/// What is cached per (image, policy): the signature that satisfied it, or why none did.
/// Names, files and the reproduce command are rebuilt from the policy on each lookup, which
/// keeps an entry small (the cache holds up to 100,000).
type Judgement = Result<SignatureFact, ImageError>;

/// SHA-256 of `registry/repository@digest` (collision-resistant: a cached verdict can never
/// be mistaken for another image's), and the policy's fingerprint.
type OutcomeKey = ([u8; 32], u64);

fn outcome_key(image: &ImageRef, digest: &str, policy: &ImagePolicy) -> OutcomeKey {
    let name = format!("{}@{digest}", image.name());
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref());
    (key, policy.fingerprint)
}

/// Produces image facts for a review within its deadline.
pub struct Verifier {
    registry: Arc<Registry>,
    metrics: Metrics,
    /// `(registry/repository@digest, policy fingerprint)` → judgement.
    outcomes: moka::future::Cache<OutcomeKey, Arc<Judgement>>,
    /// `registry/repository:tag` → digest.
    tags: moka::future::Cache<String, String>,
    tag_ttl: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(registry: Arc<Registry>, metrics: Metrics, cache: &CacheSettings) -> Self {
        let outcomes = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            .expire_after(OutcomeExpiry {
                verified: cache.verified_ttl,
                rejected: cache.rejected_ttl,
            })
            .build();
        let tags = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            .time_to_live(cache.tag_ttl.max(Duration::from_millis(1)))
            .build();
        Self {
            registry,
            metrics,
            outcomes,
            tags,
            tag_ttl: cache.tag_ttl,
        }
    }

    /// Facts for every image, verified concurrently against the image policies that match.
    pub async fn facts(
        &self,
        images: &[ImageOccurrence],
        policies: &[ImagePolicy],
        deadline: Instant,
    ) -> Vec<ImageFacts> {
        futures_util::future::join_all(
            images
                .iter()
                .map(|image| self.image_facts(image, policies, deadline)),
        )
        .await
    }

    async fn image_facts(
        &self,
        occurrence: &ImageOccurrence,
        policies: &[ImagePolicy],
        deadline: Instant,
    ) -> ImageFacts {
        let mut facts = ImageFacts::from_reference(occurrence);
        let Ok(image) = &occurrence.parsed else {
            return facts;
        };
        let matching: Vec<&ImagePolicy> = policies.iter().filter(|p| p.matches(image)).collect();
        if matching.is_empty() {
            return facts;
        }
        let digest = match &image.digest {
            Some(digest) => Ok(digest.clone()),
            None => self.resolve(image, deadline).await,
        };
        for policy in matching {
            let outcome = match &digest {
                Ok(digest) => self.outcome(image, digest, policy, deadline).await,
                Err(e) => outcome_of(
                    policy,
                    image,
                    "",
                    &rejected(Rejection::new(e.code(), e.to_string())),
                ),
            };
            let code = outcome
                .error
                .as_ref()
                .map_or("VERIFIED", |e| e.code.as_str());
            self.metrics
                .verifications
                .with_label_values(&[policy.mode.as_str(), code])
                .inc();
            facts.policies.push(outcome);
        }
        facts.digest = digest.ok().or(facts.digest);
        facts.verified = facts.policies.iter().all(|p| p.satisfied);
        facts.signatures = facts
            .policies
            .iter()
            .filter_map(|p| p.signature.clone())
            .collect();
        facts
            .errors
            .extend(facts.policies.iter().filter_map(|p| p.error.clone()));
        facts
    }

    /// The digest a tag points to: cached for the tag TTL, and looked up once however many
    /// reviews ask at the same time. Failures are not cached.
    async fn resolve(&self, image: &ImageRef, deadline: Instant) -> Result<String, RegistryError> {
        let lookup = async {
            let started = Instant::now();
            let digest = self.registry.resolve(image, deadline).await;
            self.metrics
                .stage_duration
                .with_label_values(&["resolve"])
                .observe(started.elapsed().as_secs_f64());
            digest
        };
        if self.tag_ttl.is_zero() {
            return lookup.await;
        }
        self.tags
            .try_get_with(image.to_string(), lookup)
            .await
            .map_err(|e| e.as_ref().clone())
    }

    /// The outcome for one image digest and policy: cached, and computed once however many
    /// reviews ask at the same time. Transient failures are never cached.
    async fn outcome(
        &self,
        image: &ImageRef,
        digest: &str,
        policy: &ImagePolicy,
        deadline: Instant,
    ) -> PolicyOutcome {
        let key = outcome_key(image, digest, policy);
        if let Some(hit) = self.outcomes.get(&key).await {
            self.metrics.verify_cache.with_label_values(&["hit"]).inc();
            return outcome_of(policy, image, digest, &hit);
        }
        let entry = self
            .outcomes
            .entry(key)
            .or_try_insert_with(async {
                self.verify(image, digest, policy, deadline)
                    .await
                    .map(Arc::new)
            })
            .await;
        match entry {
            Ok(entry) => {
                let label = if entry.is_fresh() {
                    "miss"
                } else {
                    "coalesced"
                };
                self.metrics.verify_cache.with_label_values(&[label]).inc();
                outcome_of(policy, image, digest, &entry.into_value())
            }
            Err(e) => {
                self.metrics.verify_cache.with_label_values(&["miss"]).inc();
                outcome_of(
                    policy,
                    image,
                    digest,
                    &rejected(Rejection::new(e.code(), e.to_string())),
                )
            }
        }
    }

    /// Fetches the signatures of `digest` and checks them against the policy's authorities.
    /// `Err` only for transient registry trouble.
    async fn verify(
        &self,
        image: &ImageRef,
        digest: &str,
        policy: &ImagePolicy,
        deadline: Instant,
    ) -> Result<Judgement, RegistryError> {
        let started = Instant::now();
        let layers = self.fetch_layers(image, digest, deadline).await;
        self.metrics
            .stage_duration
            .with_label_values(&["fetch"])
            .observe(started.elapsed().as_secs_f64());
        let layers = match layers {
            Ok(layers) => layers,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
        };
        let started = Instant::now();
        let outcome = check_policy(policy, image, digest, &layers);
        self.metrics
            .stage_duration
            .with_label_values(&["verify"])
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    async fn fetch_layers(
        &self,
        image: &ImageRef,
        digest: &str,
        deadline: Instant,
    ) -> Result<Vec<Result<SignatureLayer, Rejection>>, RegistryError> {
        /// More layers than this is not a signature manifest anyone made honestly.
        const MAX_LAYERS: usize = 32;
        let Some(manifest) = self
            .registry
            .signature_manifest(image, digest, deadline)
            .await?
        else {
            return Ok(Vec::new());
        };
        let host = image.registry.clone();
        let refs = cosign::parse_signature_manifest(&manifest).map_err(|detail| {
            RegistryError::Invalid {
                host: host.clone(),
                what: "signature manifest".to_string(),
                detail,
            }
        })?;
        if refs.len() > MAX_LAYERS {
            return Err(RegistryError::Invalid {
                host,
                what: "signature manifest".to_string(),
                detail: format!("more than {MAX_LAYERS} layers"),
            });
        }
        let blobs = futures_util::future::join_all(
            refs.iter()
                .map(|r| self.registry.blob(image, &r.digest, deadline)),
        )
        .await;
        let mut layers = Vec::new();
        for (layer, blob) in refs.iter().zip(blobs) {
            layers.push(SignatureLayer::new(layer, blob?));
        }
        Ok(layers)
    }
}

/// Any authority satisfied by any layer satisfies the policy (as in policy-controller).
fn check_policy(
    policy: &ImagePolicy,
    image: &ImageRef,
    digest: &str,
    layers: &[Result<SignatureLayer, Rejection>],
) -> Judgement {
    if layers.is_empty() {
        let rejection = Rejection::new(
            ReasonCode::NoSignature,
            format!("no cosign signature found for {}@{digest}", image.name()),
        );
        return rejected(rejection);
    }
    let mut best: Option<Rejection> = None;
    for authority in &policy.authorities {
        for layer in layers {
            let result = match layer {
                Ok(layer) => check_authority(authority, layer, digest),
                Err(rejection) => Err(rejection.clone()),
            };
            match result {
                Ok(proof) => {
                    return Ok(SignatureFact {
                        authority: format!("{}/{}", policy.name, authority.name),
                        identity: proof.identity,
                        rekor_log_index: proof.rekor_log_index,
                        rekor_integrated_time: proof.rekor_integrated_time,
                    })
                }
                Err(rejection) => {
                    if best.as_ref().is_none_or(|b| rejection.stage() > b.stage()) {
                        best = Some(rejection);
                    }
                }
            }
        }
    }
    let rejection = best
        .unwrap_or_else(|| Rejection::new(ReasonCode::NoSignature, "no signature could be read"));
    rejected(rejection)
}

fn check_authority(
    authority: &Authority,
    layer: &SignatureLayer,
    digest: &str,
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

fn rejected(rejection: Rejection) -> Judgement {
    Err(ImageError {
        code: rejection.code,
        message: rejection.detail,
    })
}

/// The outcome reported for `policy`: the judgement with the policy's names and the
/// command that reproduces it.
fn outcome_of(
    policy: &ImagePolicy,
    image: &ImageRef,
    digest: &str,
    judgement: &Judgement,
) -> PolicyOutcome {
    PolicyOutcome {
        policy: policy.name.clone(),
        file: policy.file.clone(),
        mode: policy.mode,
        satisfied: judgement.is_ok(),
        signature: judgement.as_ref().ok().cloned(),
        error: judgement.as_ref().err().cloned(),
        reproduce: reproduce(policy, image, digest),
    }
}

/// The `cosign verify` command that checks the same thing, for the first authority.
fn reproduce(policy: &ImagePolicy, image: &ImageRef, digest: &str) -> String {
    let target = if digest.is_empty() {
        image.to_string()
    } else {
        format!("{}@{digest}", image.name())
    };
    match policy.authorities.first().map(|a| &a.kind) {
        Some(AuthorityKind::Key { tlog, .. }) => {
            let tlog = if tlog.is_some() {
                ""
            } else {
                " --insecure-ignore-tlog"
            };
            format!(
                "cosign verify --key <public key of {:?} in {}>{tlog} {target}",
                policy.name, policy.file
            )
        }
        Some(AuthorityKind::Keyless { identities, .. }) => {
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
            format!("cosign verify{flags} {target}")
        }
        None => String::new(),
    }
}
