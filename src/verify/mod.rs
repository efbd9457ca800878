//! Verification: what verdict proves about each image of a review. This file holds the
//! orchestrator, `Verifier`: for each image it matches the image policies, resolves the
//! tag, gathers the evidence and has it judged, within the review's deadline, through the
//! caches. The rooms it conducts:
//! - `facts`: the `input.images` contract, and assembling it from judgements;
//! - `cache`: every cache and its keys;
//! - `evidence`: what the registry holds about one digest;
//! - `authorities`: the pure checks of evidence against an image policy;
//! - `imagepolicy`: the `ImagePolicy` / `ClusterImagePolicy` documents, what is checked;
//! - `proof`: the shared vocabulary of the checkers; `cosign` (`.sig` / `.att` layers),
//!   `bundle` (Sigstore bundles), `identity` (Fulcio certificates), `trust` (trust roots),
//!   `oci` (OCI documents by media type), `strict` (signed JSON read one way only).

mod authorities;
pub mod bundle;
mod cache;
pub mod cosign;
mod evidence;
mod facts;
pub mod identity;
pub mod imagepolicy;
pub mod oci;
pub mod proof;
pub mod strict;
pub mod trust;

use crate::decision::ReasonCode;
use crate::images::{Digest, ImageOccurrence, ImageRef};
use crate::metrics::Metrics;
use crate::registry::auth::Keyring;
use crate::registry::{Registry, RegistryError};
pub use cache::CacheSettings;
use cache::{Assembly, Cached, Caches, Lookup};
use evidence::Wanted;
use facts::{assemble, rejected, Judgement};
pub use facts::{AttestationFact, Format, ImageError, ImageFacts, PolicyOutcome, SignatureFact};
use imagepolicy::{ImagePolicy, MultiArch, Namespace};
pub use oci::Platform;
use prometheus::IntCounter;
use proof::Rejection;
use std::sync::Arc;
use std::time::Instant;

/// An image occurrence judged at a digest under the image policies `set`.
struct Judged<'a> {
    occurrence: &'a ImageOccurrence,
    image: &'a ImageRef,
    digest: &'a Digest,
    set: u64,
    /// Until when the tag's digest holds, when it was resolved from a tag.
    tag_fresh_until: Option<Instant>,
}

/// Produces image facts for a review within its deadline.
pub struct Verifier {
    registry: Arc<Registry>,
    metrics: Metrics,
    caches: Caches,
    /// The platform nodes run, for `multiArch: platform|either` policies.
    platform: Platform,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Metrics,
        cache: &CacheSettings,
        platform: Platform,
    ) -> Self {
        Self {
            registry,
            metrics,
            caches: Caches::new(cache),
            platform,
        }
    }

    /// Facts for every image, verified concurrently against the image policies that match
    /// it and apply in `namespace` (none: no policy is limited to some namespaces).
    pub async fn facts(
        &self,
        images: &[ImageOccurrence],
        policies: &[ImagePolicy],
        namespace: Option<&Namespace<'_>>,
        keys: &Keyring,
        deadline: Instant,
    ) -> Vec<Arc<ImageFacts>> {
        let set = cache::policies_fingerprint(policies.iter().filter(|p| p.applies_in(namespace)));
        // What was read with other credentials is never answered from: a Pod without the
        // pull secret does not learn what a Pod with it was allowed.
        let set = cache::scoped(set, keys.id());
        // Known images first, without building a future per image (they are large).
        let now = Instant::now();
        let known: Vec<Option<Arc<ImageFacts>>> = images
            .iter()
            .map(|image| self.known(image, set, now))
            .collect();
        if known.iter().all(Option::is_some) {
            return known.into_iter().flatten().collect();
        }
        let facts = images.iter().zip(known).map(|(image, known)| async move {
            match known {
                Some(facts) => facts,
                None => {
                    self.image_facts(image, policies, namespace, keys, set, deadline)
                        .await
                }
            }
        });
        futures_util::future::join_all(facts).await
    }

    /// The facts of an image judged before, while they hold (see `cache::Assembled`).
    fn known(
        &self,
        occurrence: &ImageOccurrence,
        set: u64,
        now: Instant,
    ) -> Option<Arc<ImageFacts>> {
        let facts = self.caches.assembled.recall(occurrence, set, now)?;
        self.metrics
            .verify_cache_hits
            .inc_by(facts.policies.len() as u64);
        Some(facts)
    }

    /// The facts of an image that is not known: resolved, judged and assembled.
    async fn image_facts(
        &self,
        occurrence: &ImageOccurrence,
        policies: &[ImagePolicy],
        namespace: Option<&Namespace<'_>>,
        keys: &Keyring,
        set: u64,
        deadline: Instant,
    ) -> Arc<ImageFacts> {
        let parsed = occurrence.parse();
        let matching: Vec<&ImagePolicy> = match &parsed {
            Ok(image) => policies
                .iter()
                .filter(|p| p.applies_in(namespace) && p.matches(image))
                .collect(),
            Err(_) => Vec::new(),
        };
        let (Ok(image), false) = (&parsed, matching.is_empty()) else {
            // Nothing to verify: the facts hold as long as the image policies do.
            let facts = Arc::new(ImageFacts::from_parsed(occurrence, parsed.as_ref()));
            let known = Assembly {
                policies: set,
                judged: Vec::new(),
                facts: facts.clone(),
                fresh_until: None,
                counters: Vec::new(),
            };
            self.caches.assembled.put(occurrence, known);
            return facts;
        };
        let (digest, tag_fresh_until) = match &image.digest {
            Some(digest) => (digest.clone(), None),
            None => match self.resolve(image, keys, deadline).await {
                Ok((digest, until)) => (digest, Some(until)),
                Err(e) => {
                    let judgement = rejected(Rejection::new(e.code(), e.to_string()));
                    let judged = matching.iter().map(|p| (*p, judgement.clone()));
                    let facts = assemble(occurrence, image, None, judged);
                    self.counters(&facts).iter().for_each(IntCounter::inc);
                    return Arc::new(facts);
                }
            },
        };
        let mut judged = Vec::with_capacity(matching.len());
        for policy in &matching {
            judged.push(self.judgement(image, &digest, policy, keys, deadline).await);
        }
        let at = Judged {
            occurrence,
            image,
            digest: &digest,
            set,
            tag_fresh_until,
        };
        self.assemble_judged(&at, &matching, judged)
    }

    /// The facts of an image at a digest from the judgements of its matching policies:
    /// facts assembled from the very same cache entries before are reused, and they hold
    /// until the first of those entries (or the tag's digest) is no longer fresh.
    fn assemble_judged(
        &self,
        at: &Judged<'_>,
        matching: &[&ImagePolicy],
        judged: Vec<Result<Arc<Cached>, ImageError>>,
    ) -> Arc<ImageFacts> {
        let entries: Option<Vec<(u64, Arc<Cached>)>> = matching
            .iter()
            .zip(&judged)
            .map(|(p, j)| Some((p.fingerprint, j.as_ref().ok()?.clone())))
            .collect();
        let fresh = entries.as_ref().and_then(|entries| {
            entries
                .iter()
                .map(|(_, e)| self.caches.fresh_until(e))
                .chain(at.tag_fresh_until)
                .min()
        });
        if let (Some(entries), Some(fresh)) = (&entries, fresh) {
            let reused =
                self.caches
                    .assembled
                    .reuse(at.occurrence, at.set, at.digest, entries, fresh);
            if let Some(facts) = reused {
                return facts;
            }
        }
        let outcomes = matching.iter().zip(judged).map(|(policy, judged)| {
            let judgement = judged.and_then(|entry| cache::expand(policy, at.digest, &entry));
            (*policy, judgement)
        });
        let facts = Arc::new(assemble(at.occurrence, at.image, Some(at.digest), outcomes));
        let counters = self.counters(&facts);
        counters.iter().for_each(IntCounter::inc);
        if let (Some(judged), Some(fresh)) = (entries, fresh) {
            let known = Assembly {
                policies: at.set,
                judged,
                facts: facts.clone(),
                fresh_until: Some(fresh),
                counters,
            };
            self.caches.assembled.put(at.occurrence, known);
        }
        facts
    }

    /// The series that count the outcome of every policy an image was judged by.
    fn counters(&self, facts: &ImageFacts) -> Vec<IntCounter> {
        let series = |outcome: &PolicyOutcome| {
            let code = outcome
                .error
                .as_ref()
                .map_or("VERIFIED", |e| e.code.as_str());
            self.metrics
                .verifications
                .with_label_values(&[outcome.mode.as_str(), code])
        };
        facts.policies.iter().map(series).collect()
    }

    /// The digest a tag points to, and until when that is reused (see `Caches::digest`).
    async fn resolve(
        &self,
        image: &ImageRef,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<(Digest, Instant), RegistryError> {
        let lookup = async {
            let started = Instant::now();
            let digest = self.registry.resolve(image, keys, deadline).await;
            self.observe("resolve", started);
            digest.map(|digest| (digest, started))
        };
        self.caches.digest(image, keys.id(), lookup).await
    }

    /// The cached judgement of one image digest under one policy, made once however many
    /// reviews ask at the same time. Transient failures are never cached: they are `Err`.
    async fn judgement(
        &self,
        image: &ImageRef,
        digest: &Digest,
        policy: &ImagePolicy,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Arc<Cached>, ImageError> {
        let judge = || self.verify(image, digest, policy, keys, deadline);
        let found = self
            .caches
            .judgement(image, digest, policy, keys.id(), judge)
            .await;
        let label = match &found {
            Ok((_, Lookup::Hit)) => {
                self.metrics.verify_cache_hits.inc();
                None
            }
            Ok((_, Lookup::Coalesced)) => Some("coalesced"),
            _ => Some("miss"),
        };
        if let Some(label) = label {
            self.metrics.verify_cache.with_label_values(&[label]).inc();
        }
        found.map(|(entry, _)| entry).map_err(|e| ImageError {
            code: e.code(),
            message: e.to_string(),
        })
    }

    /// Fetches the evidence for `digest` (or its platform manifests) and checks it against
    /// the policy's authorities. `Err` only for transient registry trouble.
    async fn verify(
        &self,
        image: &ImageRef,
        digest: &Digest,
        policy: &ImagePolicy,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Judgement, RegistryError> {
        let platforms = match policy.multi_arch {
            MultiArch::Index => None,
            MultiArch::Platform | MultiArch::Either => {
                let found = evidence::platform_digests(
                    &self.registry,
                    keys,
                    &self.platform,
                    image,
                    digest,
                    deadline,
                );
                match found.await {
                    Ok(platforms) => platforms,
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
                }
            }
        };
        let Some(platforms) = platforms else {
            // Not an index, or the policy wants the index itself signed.
            return self
                .verify_digest(image, digest, policy, keys, deadline)
                .await;
        };
        let index = match policy.multi_arch {
            MultiArch::Either => match self
                .verify_digest(image, digest, policy, keys, deadline)
                .await?
            {
                Ok(fact) => return Ok(Ok(fact)),
                Err(e) => Some(e),
            },
            _ => None,
        };
        // Every manifest a node of the platform may run must carry the proof.
        let mut proven = None;
        for platform in &platforms {
            match self
                .verify_digest(image, platform, policy, keys, deadline)
                .await?
            {
                Ok(fact) => {
                    proven.get_or_insert(fact);
                }
                Err(e) => {
                    let told = |e: &ImageError| proof::stage(&e.code);
                    return Ok(Err(match index {
                        Some(index) if told(&index) > told(&e) => index,
                        _ => e,
                    }));
                }
            }
        }
        Ok(proven.ok_or_else(|| ImageError {
            code: ReasonCode::NoSignature,
            message: "nothing to verify".to_string(),
        }))
    }

    /// Checks one digest: cosign `.sig` / `.att` first, Sigstore bundles found as OCI
    /// referrers when those do not satisfy the policy (so the common case costs no more
    /// requests).
    async fn verify_digest(
        &self,
        image: &ImageRef,
        digest: &Digest,
        policy: &ImagePolicy,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Judgement, RegistryError> {
        let started = Instant::now();
        let wanted = Wanted {
            signatures: policy.authorities.iter().any(|a| a.attestations.is_empty()),
            attestations: policy
                .authorities
                .iter()
                .any(|a| !a.attestations.is_empty()),
        };
        let fetched = evidence::cosign(&self.registry, keys, image, digest, wanted, deadline).await;
        self.observe("fetch", started);
        let mut evidence = match fetched {
            Ok(evidence) => evidence,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
        };
        let started = Instant::now();
        let judgement = authorities::check_policy(policy, image, digest, &evidence);
        self.observe("verify", started);
        if judgement.is_ok() {
            return Ok(judgement);
        }
        let started = Instant::now();
        let bundles = evidence::bundles(&self.registry, keys, image, digest, deadline).await;
        self.observe("fetch", started);
        evidence.bundles = match bundles {
            Ok(bundles) if bundles.is_empty() => return Ok(judgement),
            Ok(bundles) => bundles,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
        };
        let started = Instant::now();
        let judgement = authorities::check_policy(policy, image, digest, &evidence);
        self.observe("verify", started);
        Ok(judgement)
    }

    fn observe(&self, stage: &str, started: Instant) {
        self.metrics
            .stage_duration
            .with_label_values(&[stage])
            .observe(started.elapsed().as_secs_f64());
    }
}
