//! Image facts: what verdict knows and has proven about each image of a review. Owns
//! matching image policies, resolving tags, verifying signatures through the registry,
//! and the caches that make a known image cost nothing; not the decision.

pub mod bundle;
pub mod cosign;
pub mod identity;
pub mod oci;
pub mod strict;
pub mod trust;

use crate::decision::ReasonCode;
use crate::imagepolicy::{
    AttestationRequirement, Authority, AuthorityKind, ImagePolicy, Mode, MultiArch,
};
use crate::images::{ContainerKind, ImageOccurrence, ImageRef};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};
use bundle::{BundleProof, BundleTrust, Signer};
use cosign::{Proof, Rejection, SignatureLayer, Statement};
pub use oci::Platform;
use prometheus::IntCounter;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub digest: String,
    /// `cosign` (`.sig` / `.att` tags) or `bundle` (a Sigstore bundle found as an OCI referrer).
    pub format: &'static str,
    /// The verified attestations the authority required.
    pub attestations: Vec<AttestationFact>,
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
    pub digest: String,
    pub format: &'static str,
}

/// The predicate type cosign v3 gives the in-toto statement of a signature in bundle form.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

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
    pub digest: Option<String>,
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
    text_digest: std::sync::OnceLock<Option<crate::policy::Key>>,
}

impl crate::policy::Image for ImageFacts {
    fn text_digest(&self) -> Option<crate::policy::Key> {
        *self
            .text_digest
            .get_or_init(|| crate::policy::text_digest(self))
    }
}

impl ImageFacts {
    /// Facts known from the (parsed) reference alone.
    fn from_parsed(
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
            text_digest: std::sync::OnceLock::new(),
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

/// How one image digest fared against one policy: the signature (or attestations) that
/// satisfied it, or why none did.
type Judgement = Result<SignatureFact, ImageError>;

/// What the cache keeps of a judgement (it holds up to 100,000): a satisfied one without
/// what the key and the policy already say, or the rejection and when it was made (boxed:
/// rejections are few and short-lived). Names, files and the reproduce command are rebuilt
/// from the policy on each lookup.
type Cached = Result<CachedFact, Box<(ImageError, Instant)>>;

/// A `SignatureFact` in 48 bytes (with moka's own ~375 bytes per entry, about 500 bytes per
/// cached digest instead of ~775).
struct CachedFact {
    /// Index of the authority in the policy.
    authority: u16,
    bundle: bool,
    /// When it was judged, in whole seconds since `EPOCH` (rounded down, so never later
    /// than its insertion into the cache, from which its time to live counts).
    made: u32,
    /// Interned: a few signers sign most images.
    identity: Arc<str>,
    /// Rekor log index and integrated time; `NONE` when absent.
    rekor: [i64; 2],
    /// What few facts have: a proof on another digest than the admitted one (multi-arch),
    /// and attestations.
    extra: Option<Box<Extra>>,
}

struct Extra {
    other_digest: Option<String>,
    attestations: Vec<AttestationFact>,
}

/// `CachedFact::rekor` for "no such value" (log indexes and times are never negative).
const NONE: i64 = i64::MIN;

/// The origin of `CachedFact::made`.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// Signer identities are shared between cache entries; past this many distinct ones they
/// are no longer interned (the table never grows without bound).
const MAX_INTERNED: usize = 4096;

fn intern(identity: &str) -> Arc<str> {
    static TABLE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::LazyLock::new(Default::default);
    let Ok(mut table) = TABLE.lock() else {
        return Arc::from(identity);
    };
    if let Some(shared) = table.get(identity) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(identity);
    if table.len() < MAX_INTERNED {
        table.insert(shared.clone());
    }
    shared
}

fn compact(policy: &ImagePolicy, digest: &str, judgement: Judgement) -> Cached {
    let fact = judgement.map_err(|e| Box::new((e, Instant::now())))?;
    let other_digest = (fact.digest != digest).then_some(fact.digest);
    let extra = (other_digest.is_some() || !fact.attestations.is_empty()).then(|| {
        Box::new(Extra {
            other_digest,
            attestations: fact.attestations,
        })
    });
    Ok(CachedFact {
        authority: policy
            .authorities
            .iter()
            .position(|a| fact.authority == format!("{}/{}", policy.name, a.name))
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(0),
        bundle: fact.format == "bundle",
        made: u32::try_from(EPOCH.elapsed().as_secs()).unwrap_or(u32::MAX),
        identity: intern(&fact.identity),
        rekor: [
            fact.rekor_log_index.unwrap_or(NONE),
            fact.rekor_integrated_time.unwrap_or(NONE),
        ],
        extra,
    })
}

fn expand(policy: &ImagePolicy, digest: &str, cached: &Cached) -> Judgement {
    let fact = match cached {
        Err(rejection) => return Err(rejection.0.clone()),
        Ok(fact) => fact,
    };
    let extra = fact.extra.as_deref();
    let present = |v: i64| (v != NONE).then_some(v);
    Ok(SignatureFact {
        authority: format!(
            "{}/{}",
            policy.name,
            policy
                .authorities
                .get(usize::from(fact.authority))
                .map_or("", |a| a.name.as_str())
        ),
        identity: fact.identity.to_string(),
        rekor_log_index: present(fact.rekor[0]),
        rekor_integrated_time: present(fact.rekor[1]),
        digest: extra
            .and_then(|e| e.other_digest.as_deref())
            .unwrap_or(digest)
            .to_string(),
        format: if fact.bundle { "bundle" } else { "cosign" },
        attestations: extra.map(|e| e.attestations.clone()).unwrap_or_default(),
    })
}

/// Until when a cached judgement holds: the cache's time to live from when it was made,
/// or `rejected_ttl` for a rejection. A lifetime too long to represent counts as none.
fn fresh_until(cached: &Cached, verified_ttl: Duration, rejected_ttl: Duration) -> Instant {
    match cached {
        Ok(fact) => later(
            later(*EPOCH, Duration::from_secs(u64::from(fact.made))),
            verified_ttl,
        ),
        Err(rejection) => later(rejection.1, rejected_ttl),
    }
}

/// `at + after`, or `at` if that cannot be represented.
fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after).unwrap_or(at)
}

/// Whether a cached rejection has outlived `rejected_ttl` (verified entries live for the
/// cache's time to live).
fn is_stale(cached: &Cached, rejected_ttl: Duration) -> bool {
    cached
        .as_ref()
        .err()
        .is_some_and(|rejection| rejection.1.elapsed() > rejected_ttl)
}

/// SHA-256 of `registry/repository@digest` (collision-resistant: a cached verdict can never
/// be mistaken for another image's), and the policy's fingerprint.
type OutcomeKey = ([u8; 32], u64);

fn outcome_key(image: &ImageRef, digest: &str, policy: &ImagePolicy) -> OutcomeKey {
    let mut name = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&image.registry, "/", &image.repository, "@", digest] {
        name.update(part.as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(name.finish().as_ref());
    (key, policy.fingerprint)
}

/// Identifies a list of image policies: their fingerprints, in order.
fn policies_fingerprint(policies: &[ImagePolicy]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for policy in policies {
        policy.fingerprint.hash(&mut hasher);
    }
    hasher.finish()
}

/// The facts last assembled for recent image occurrences, and until when they hold: a known
/// image costs one lookup here, not its tag and verification cache lookups, policy globs,
/// and assembling and hashing its facts again (`ImageFacts::text_digest`). They hold while
/// everything they were made from is fresh in those caches: the tag's digest for the tag
/// TTL, each judgement for its time to live. After that, facts assembled from the very same
/// cache entries are reused. A small direct-mapped table: another occurrence landing in the
/// same slot replaces the one before.
struct Assembled {
    slots: crate::slots::Slots<Assembly>,
}

struct Assembly {
    /// The image policies in force (`policies_fingerprint`).
    policies: u64,
    /// The fingerprint of each matching policy and the cache entry it was judged from.
    /// Holding the entries keeps their addresses from being reused by newer ones.
    judged: Vec<(u64, Arc<Cached>)>,
    facts: Arc<ImageFacts>,
    /// None when nothing the facts depend on expires (no policy matches the image).
    fresh_until: Option<Instant>,
    /// The `verdict_image_verifications_total` series of the facts' outcomes, looked up
    /// once: every recall or reuse counts them again.
    counters: Vec<IntCounter>,
}

impl Assembly {
    fn describes(&self, occurrence: &ImageOccurrence, policies: u64) -> bool {
        let facts = &self.facts;
        self.policies == policies
            && facts.reference == occurrence.reference
            && facts.container == occurrence.container
            && facts.kind == occurrence.kind
            && facts.path == occurrence.path
    }
}

/// Enough for the images a cluster runs most; ~1.5 KB each when full.
const ASSEMBLED_SLOTS: usize = 256;

impl Assembled {
    fn new() -> Self {
        Self {
            slots: crate::slots::Slots::new(ASSEMBLED_SLOTS),
        }
    }

    fn slot(
        &self,
        occurrence: &ImageOccurrence,
    ) -> Option<std::sync::MutexGuard<'_, Option<Assembly>>> {
        use std::hash::BuildHasher;
        // Only to spread occurrences over the slots: foldhash costs a quarter of SipHash.
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one((
            &occurrence.reference,
            &occurrence.container,
            &occurrence.path,
        ));
        self.slots.lock(hash)
    }

    /// The facts of `occurrence` under the image policies `policies`, if they still hold
    /// `now`, their outcomes counted.
    fn recall(
        &self,
        occurrence: &ImageOccurrence,
        policies: u64,
        now: Instant,
    ) -> Option<Arc<ImageFacts>> {
        let slot = self.slot(occurrence)?;
        let known = slot.as_ref()?;
        let fresh = known.fresh_until.is_none_or(|t| now < t);
        if !fresh || !known.describes(occurrence, policies) {
            return None;
        }
        known.counters.iter().for_each(IntCounter::inc);
        Some(known.facts.clone())
    }

    /// The facts of `occurrence` at `digest` judged from exactly these cache entries, if
    /// known, their outcomes counted; they now hold until `fresh_until`.
    fn reuse(
        &self,
        occurrence: &ImageOccurrence,
        policies: u64,
        digest: &str,
        judged: &[(u64, Arc<Cached>)],
        fresh_until: Instant,
    ) -> Option<Arc<ImageFacts>> {
        let mut slot = self.slot(occurrence)?;
        let known = slot.as_mut()?;
        let same = known.describes(occurrence, policies)
            && known.facts.digest.as_deref() == Some(digest)
            && known.judged.len() == judged.len()
            && known
                .judged
                .iter()
                .zip(judged)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y));
        if !same {
            return None;
        }
        known.fresh_until = Some(fresh_until);
        known.counters.iter().for_each(IntCounter::inc);
        Some(known.facts.clone())
    }

    fn put(&self, occurrence: &ImageOccurrence, known: Assembly) {
        if let Some(mut slot) = self.slot(occurrence) {
            *slot = Some(known);
        }
    }
}

/// Produces image facts for a review within its deadline.
pub struct Verifier {
    registry: Arc<Registry>,
    metrics: Metrics,
    /// `(registry/repository@digest, policy fingerprint)` → judgement.
    outcomes: moka::future::Cache<OutcomeKey, Arc<Cached>>,
    /// Facts recently assembled from cached judgements.
    assembled: Assembled,
    /// `registry/repository:tag` → digest, and when it was looked up.
    tags: moka::future::Cache<String, (String, Instant)>,
    tag_ttl: Duration,
    /// How long a satisfied verification is reused.
    verified_ttl: Duration,
    /// How long a permanent failure is reused.
    rejected_ttl: Duration,
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
        let outcomes = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            .time_to_live(cache.verified_ttl)
            .build();
        let tags = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            .time_to_live(cache.tag_ttl.max(Duration::from_millis(1)))
            .build();
        Self {
            registry,
            metrics,
            outcomes,
            assembled: Assembled::new(),
            tags,
            tag_ttl: cache.tag_ttl,
            verified_ttl: cache.verified_ttl,
            rejected_ttl: cache.rejected_ttl,
            platform,
        }
    }

    /// Facts for every image, verified concurrently against the image policies that match.
    pub async fn facts(
        &self,
        images: &[ImageOccurrence],
        policies: &[ImagePolicy],
        deadline: Instant,
    ) -> Vec<Arc<ImageFacts>> {
        let set = policies_fingerprint(policies);
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
                None => self.image_facts(image, policies, set, deadline).await,
            }
        });
        futures_util::future::join_all(facts).await
    }

    /// The facts of an image judged before, while they hold (see `Assembled`).
    fn known(
        &self,
        occurrence: &ImageOccurrence,
        set: u64,
        now: Instant,
    ) -> Option<Arc<ImageFacts>> {
        let facts = self.assembled.recall(occurrence, set, now)?;
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
        set: u64,
        deadline: Instant,
    ) -> Arc<ImageFacts> {
        let parsed = occurrence.parse();
        let matching: Vec<&ImagePolicy> = match &parsed {
            Ok(image) => policies.iter().filter(|p| p.matches(image)).collect(),
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
            self.assembled.put(occurrence, known);
            return facts;
        };
        let (digest, tag_fresh_until) = match &image.digest {
            Some(digest) => (digest.clone(), None),
            None => match self.resolve(image, deadline).await {
                Ok((digest, until)) => (digest, Some(until)),
                Err(e) => {
                    let judgement = rejected(Rejection::new(e.code(), e.to_string()));
                    let judged = matching.iter().map(|p| (*p, judgement.clone()));
                    let facts = assemble(occurrence, image, "", judged);
                    self.counters(&facts).iter().for_each(IntCounter::inc);
                    return Arc::new(facts);
                }
            },
        };
        let mut judged = Vec::with_capacity(matching.len());
        for policy in &matching {
            judged.push(self.judgement(image, &digest, policy, deadline).await);
        }
        let entries: Option<Vec<(u64, Arc<Cached>)>> = matching
            .iter()
            .zip(&judged)
            .map(|(p, j)| Some((p.fingerprint, j.as_ref().ok()?.clone())))
            .collect();
        // Facts assembled from the same cache entries before are the same facts; they hold
        // until the first of those entries (or the tag's digest) is no longer fresh.
        let fresh = entries.as_ref().and_then(|entries| {
            entries
                .iter()
                .map(|(_, e)| fresh_until(e, self.verified_ttl, self.rejected_ttl))
                .chain(tag_fresh_until)
                .min()
        });
        if let (Some(entries), Some(fresh)) = (&entries, fresh) {
            if let Some(facts) = self
                .assembled
                .reuse(occurrence, set, &digest, entries, fresh)
            {
                return facts;
            }
        }
        let outcomes = matching.iter().zip(judged).map(|(policy, judged)| {
            let judgement = judged.and_then(|entry| expand(policy, &digest, &entry));
            (*policy, judgement)
        });
        let facts = Arc::new(assemble(occurrence, image, &digest, outcomes));
        let counters = self.counters(&facts);
        counters.iter().for_each(IntCounter::inc);
        if let (Some(judged), Some(fresh)) = (entries, fresh) {
            let known = Assembly {
                policies: set,
                judged,
                facts: facts.clone(),
                fresh_until: Some(fresh),
                counters,
            };
            self.assembled.put(occurrence, known);
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

    /// The digest a tag points to, and until when that is reused: cached for the tag TTL,
    /// and looked up once however many reviews ask at the same time. Failures are not cached.
    async fn resolve(
        &self,
        image: &ImageRef,
        deadline: Instant,
    ) -> Result<(String, Instant), RegistryError> {
        let lookup = async {
            let started = Instant::now();
            let digest = self.registry.resolve(image, deadline).await;
            self.metrics
                .stage_duration
                .with_label_values(&["resolve"])
                .observe(started.elapsed().as_secs_f64());
            digest.map(|digest| (digest, started))
        };
        let fresh = |(digest, looked_up)| (digest, later(looked_up, self.tag_ttl));
        if self.tag_ttl.is_zero() {
            return lookup.await.map(fresh);
        }
        self.tags
            .try_get_with(image.to_string(), lookup)
            .await
            .map(fresh)
            .map_err(|e| e.as_ref().clone())
    }

    /// The cached judgement of one image digest under one policy, made once however many
    /// reviews ask at the same time. Transient failures are never cached: they are `Err`.
    async fn judgement(
        &self,
        image: &ImageRef,
        digest: &str,
        policy: &ImagePolicy,
        deadline: Instant,
    ) -> Result<Arc<Cached>, ImageError> {
        let key = outcome_key(image, digest, policy);
        if let Some(hit) = self.outcomes.get(&key).await {
            if !is_stale(&hit, self.rejected_ttl) {
                self.metrics.verify_cache_hits.inc();
                return Ok(hit);
            }
            self.outcomes.invalidate(&key).await;
        }
        let entry = self
            .outcomes
            .entry(key)
            .or_try_insert_with(async {
                self.verify(image, digest, policy, deadline)
                    .await
                    .map(|judgement| Arc::new(compact(policy, digest, judgement)))
            })
            .await;
        let label = match &entry {
            Ok(entry) if !entry.is_fresh() => "coalesced",
            _ => "miss",
        };
        self.metrics.verify_cache.with_label_values(&[label]).inc();
        entry.map(moka::Entry::into_value).map_err(|e| ImageError {
            code: e.code(),
            message: e.to_string(),
        })
    }

    /// Fetches the evidence for `digest` (or its platform manifests) and checks it against
    /// the policy's authorities. `Err` only for transient registry trouble.
    async fn verify(
        &self,
        image: &ImageRef,
        digest: &str,
        policy: &ImagePolicy,
        deadline: Instant,
    ) -> Result<Judgement, RegistryError> {
        let platforms = match policy.multi_arch {
            MultiArch::Index => None,
            MultiArch::Platform | MultiArch::Either => {
                match self.platform_digests(image, digest, deadline).await {
                    Ok(platforms) => platforms,
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
                }
            }
        };
        let Some(platforms) = platforms else {
            // Not an index, or the policy wants the index itself signed.
            return self.verify_digest(image, digest, policy, deadline).await;
        };
        let index = match policy.multi_arch {
            MultiArch::Either => match self.verify_digest(image, digest, policy, deadline).await? {
                Ok(fact) => return Ok(Ok(fact)),
                Err(e) => Some(e),
            },
            _ => None,
        };
        // Every manifest a node of the platform may run must carry the proof.
        let mut proven = None;
        for platform in &platforms {
            match self
                .verify_digest(image, platform, policy, deadline)
                .await?
            {
                Ok(fact) => {
                    proven.get_or_insert(fact);
                }
                Err(e) => {
                    let told = |e: &ImageError| cosign::stage(&e.code);
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

    /// For an image index, the digests of every manifest a node of this verifier's platform
    /// may run; `None` for a single-platform image. The document is read as what it says it
    /// is (see `oci`).
    async fn platform_digests(
        &self,
        image: &ImageRef,
        digest: &str,
        deadline: Instant,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let manifest = self
            .registry
            .manifest_by_digest(image, digest, deadline)
            .await?;
        let invalid = |detail: String| RegistryError::Invalid {
            host: image.registry.clone(),
            what: format!("{}@{digest}", image.name()),
            detail,
        };
        match oci::classify(&manifest.bytes, manifest.content_type.as_deref()).map_err(invalid)? {
            oci::Document::Image => Ok(None),
            oci::Document::Index(entries) => {
                self.platform.manifests(&entries).map(Some).map_err(invalid)
            }
        }
    }

    /// Checks one digest: cosign `.sig` / `.att` first, Sigstore bundles found as OCI
    /// referrers when those do not satisfy the policy (so the common case costs no more
    /// requests).
    async fn verify_digest(
        &self,
        image: &ImageRef,
        digest: &str,
        policy: &ImagePolicy,
        deadline: Instant,
    ) -> Result<Judgement, RegistryError> {
        let started = Instant::now();
        let wants_signature = policy.authorities.iter().any(|a| a.attestations.is_empty());
        let wants_attestations = policy
            .authorities
            .iter()
            .any(|a| !a.attestations.is_empty());
        let mut evidence = Evidence::default();
        let fetched = async {
            if wants_signature {
                evidence.signatures = self.fetch_layers(image, digest, ".sig", deadline).await?;
            }
            if wants_attestations {
                evidence.attestations = self.fetch_layers(image, digest, ".att", deadline).await?;
            }
            Ok::<_, RegistryError>(())
        }
        .await;
        self.observe("fetch", started);
        match fetched {
            Ok(()) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
        }
        let started = Instant::now();
        let judgement = check_policy(policy, image, digest, &evidence);
        self.observe("verify", started);
        if judgement.is_ok() {
            return Ok(judgement);
        }
        let started = Instant::now();
        let bundles = self.fetch_bundles(image, digest, deadline).await;
        self.observe("fetch", started);
        evidence.bundles = match bundles {
            Ok(bundles) if bundles.is_empty() => return Ok(judgement),
            Ok(bundles) => bundles,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(rejected(Rejection::new(e.code(), e.to_string()))),
        };
        let started = Instant::now();
        let judgement = check_policy(policy, image, digest, &evidence);
        self.observe("verify", started);
        Ok(judgement)
    }

    fn observe(&self, stage: &str, started: Instant) {
        self.metrics
            .stage_duration
            .with_label_values(&[stage])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The layers of the cosign manifest tagged `sha256-<hex><suffix>`.
    async fn fetch_layers(
        &self,
        image: &ImageRef,
        digest: &str,
        suffix: &str,
        deadline: Instant,
    ) -> Result<Vec<Result<SignatureLayer, Rejection>>, RegistryError> {
        let Some(manifest) = self
            .registry
            .companion_manifest(image, digest, suffix, deadline)
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
                .map(|r| self.registry.blob(image, &r.digest, deadline)),
        )
        .await;
        let mut layers = Vec::new();
        for (layer, blob) in refs.iter().zip(blobs) {
            layers.push(SignatureLayer::new(layer, blob?));
        }
        Ok(layers)
    }

    /// Sigstore bundles that refer to `digest` (OCI referrers with a bundle artifact type).
    async fn fetch_bundles(
        &self,
        image: &ImageRef,
        digest: &str,
        deadline: Instant,
    ) -> Result<Vec<Result<sigstore_verify::types::Bundle, Rejection>>, RegistryError> {
        let Some(index) = self.registry.referrers(image, digest, deadline).await? else {
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
            let manifest = self
                .registry
                .manifest_by_digest(image, manifest, deadline)
                .await?;
            let refs = cosign::parse_signature_manifest(&manifest.bytes)
                .map_err(|detail| invalid(image, "bundle manifest", detail))?;
            for layer in refs.iter().take(1) {
                let blob = self.registry.blob(image, &layer.digest, deadline).await?;
                bundles.push(bundle::parse(&blob));
            }
        }
        Ok(bundles)
    }
}

/// More layers (or bundles) than this is not something anyone made honestly.
const MAX_LAYERS: usize = 32;

fn invalid(image: &ImageRef, what: &str, detail: String) -> RegistryError {
    RegistryError::Invalid {
        host: image.registry.clone(),
        what: what.to_string(),
        detail,
    }
}

/// What the registry holds about one digest.
#[derive(Default)]
struct Evidence {
    /// Layers of the cosign `.sig` manifest.
    signatures: Vec<Result<SignatureLayer, Rejection>>,
    /// Layers of the cosign `.att` manifest (DSSE envelopes).
    attestations: Vec<Result<SignatureLayer, Rejection>>,
    /// Sigstore bundles found as OCI referrers.
    bundles: Vec<Result<sigstore_verify::types::Bundle, Rejection>>,
}

impl Evidence {
    fn is_empty(&self) -> bool {
        self.signatures.is_empty() && self.attestations.is_empty() && self.bundles.is_empty()
    }
}

/// Any authority satisfied satisfies the policy (as in policy-controller). An authority
/// without `attestations` needs a signature; one with them needs a verified attestation of
/// each listed predicate type, all from that authority's signer(s).
fn check_policy(
    policy: &ImagePolicy,
    image: &ImageRef,
    digest: &str,
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
    fn format(self) -> &'static str {
        match self {
            Self::Cosign(_) => "cosign",
            Self::Bundle(_) => "bundle",
        }
    }

    /// The in-toto statement of a DSSE envelope, or why the envelope is not an attestation;
    /// `None` for a signature over a payload.
    fn statement(self) -> Option<Result<Statement, String>> {
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

    fn check(self, authority: &Authority, digest: &str) -> Result<Proof, Rejection> {
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
    digest: &str,
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
    digest: &str,
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
    digest: &str,
    evidence: &Evidence,
) -> Result<(Proof, AttestationFact), Rejection> {
    let mut best = Best::default();
    let mut seen_types = Vec::new();
    let attestation = |proof: &Proof, statement: Statement, format| AttestationFact {
        predicate_type: statement.predicate_type,
        predicate: statement.predicate,
        signer: proof.identity.clone(),
        authority: name.to_string(),
        digest: digest.to_string(),
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
    match best.0 {
        Some(rejection) if rejection.stage() > 0 => Err(rejection),
        _ => {
            seen_types.sort();
            seen_types.dedup();
            let seen = if seen_types.is_empty() {
                "none".to_string()
            } else {
                seen_types.join(", ")
            };
            Err(Rejection::new(
                ReasonCode::AttestationMissing,
                format!(
                    "no verified {:?} attestation ({}) for {digest}; attestations found: {seen}",
                    required.name, required.predicate_type
                ),
            ))
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
    digest: &str,
) -> Result<BundleProof, Rejection> {
    let artifact = bundle::digest_artifact(digest)
        .map_err(|e| Rejection::new(ReasonCode::DigestMismatch, e))?;
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

fn fact(authority: &str, proof: Proof, digest: &str, format: &'static str) -> SignatureFact {
    SignatureFact {
        authority: authority.to_string(),
        identity: proof.identity,
        rekor_log_index: proof.rekor_log_index,
        rekor_integrated_time: proof.rekor_integrated_time,
        digest: digest.to_string(),
        format,
        attestations: Vec::new(),
    }
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

/// The facts of an image judged by `outcomes` (every matching policy and its judgement) at
/// `digest` (empty when it could not be resolved).
fn assemble<'p>(
    occurrence: &ImageOccurrence,
    image: &ImageRef,
    digest: &str,
    outcomes: impl Iterator<Item = (&'p ImagePolicy, Judgement)>,
) -> ImageFacts {
    let mut facts = ImageFacts::from_parsed(occurrence, Ok(image));
    facts.policies = outcomes
        .map(|(policy, judgement)| outcome_of(policy, image, digest, judgement))
        .collect();
    if !digest.is_empty() {
        facts.digest = Some(digest.to_string());
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
    digest: &str,
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
fn reproduce(policy: &ImagePolicy, image: &ImageRef, digest: &str) -> String {
    let target = if digest.is_empty() {
        image.to_string()
    } else {
        format!("{}@{digest}", image.name())
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+\nkvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==\n-----END PUBLIC KEY-----\n";

    fn policy() -> ImagePolicy {
        let doc = serde_json::json!({
            "apiVersion": "verdict.dev/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": "release"},
            "spec": {
                "images": [{"glob": "ghcr.io/acme/**"}],
                "authorities": [
                    {"name": "first", "key": {"data": KEY}},
                    {"name": "second", "key": {"data": KEY}},
                ],
            },
        });
        crate::imagepolicy::parse(
            doc,
            "images.yaml",
            std::path::Path::new("."),
            &Arc::new(trust::TrustRoot::default()),
        )
        .expect("parses")
    }

    #[test]
    fn the_compact_cache_form_gives_back_the_same_judgement() {
        let policy = policy();
        let admitted = format!("sha256:{}", "a".repeat(64));
        let platform = format!("sha256:{}", "b".repeat(64));
        for digest in [&admitted, &platform] {
            let fact = SignatureFact {
                authority: "release/second".to_string(),
                identity: "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1 (https://token.actions.githubusercontent.com)".to_string(),
                rekor_log_index: Some(7),
                rekor_integrated_time: Some(1_700_000_000),
                digest: digest.clone(),
                format: "bundle",
                attestations: vec![AttestationFact {
                    predicate_type: "https://slsa.dev/provenance/v1".to_string(),
                    predicate: serde_json::json!({"builder": {"id": "x"}}),
                    signer: "s".to_string(),
                    authority: "release/second".to_string(),
                    digest: digest.clone(),
                    format: "bundle",
                }],
            };
            let cached = compact(&policy, &admitted, Ok(fact.clone()));
            assert_eq!(cached.as_ref().map(|c| c.authority).ok(), Some(1));
            let other = cached
                .as_ref()
                .ok()
                .and_then(|c| c.extra.as_ref())
                .and_then(|e| e.other_digest.clone());
            assert_eq!(other.is_some(), digest != &admitted);
            assert_eq!(expand(&policy, &admitted, &cached), Ok(fact));
        }
        let error = ImageError {
            code: ReasonCode::NoSignature,
            message: "none".to_string(),
        };
        let cached = compact(&policy, &admitted, Err(error.clone()));
        assert_eq!(expand(&policy, &admitted, &cached), Err(error));
        assert!(!is_stale(&cached, Duration::from_secs(30)));
        assert!(is_stale(&cached, Duration::ZERO));
    }

    fn occurrence(container: &str, reference: &str) -> ImageOccurrence {
        ImageOccurrence {
            container: container.to_string(),
            kind: ContainerKind::Container,
            path: "spec.containers[0].image".to_string(),
            reference: reference.to_string(),
        }
    }

    #[test]
    fn assembled_facts_hold_while_fresh_then_only_from_the_same_cache_entries() {
        let policy = policy();
        let set = policies_fingerprint(std::slice::from_ref(&policy));
        let digest = format!("sha256:{}", "a".repeat(64));
        let reference = "ghcr.io/acme/app:v1";
        let image = occurrence("app", reference);
        let parsed = image.parse().expect("valid reference");
        let error = ImageError {
            code: ReasonCode::NoSignature,
            message: "none".to_string(),
        };
        let entry = Arc::new(compact(&policy, &digest, Err(error.clone())));
        let judged = vec![(policy.fingerprint, entry.clone())];
        let facts = Arc::new(assemble(
            &image,
            &parsed,
            &digest,
            [(&policy, Err(error.clone()))].into_iter(),
        ));
        let assembled = Assembled::new();
        let put = |fresh_until| {
            let known = Assembly {
                policies: set,
                judged: judged.clone(),
                facts: facts.clone(),
                fresh_until,
                counters: Vec::new(),
            };
            assembled.put(&image, known);
        };
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(assembled.recall(&image, set, now).is_none());

        // While fresh: recalled without any lookup, for the same occurrence and policies.
        put(Some(now + hour));
        let recalled = assembled.recall(&image, set, now).expect("fresh");
        assert!(Arc::ptr_eq(&recalled, &facts));
        assert!(assembled.recall(&image, set ^ 1, now).is_none());
        assert!(assembled
            .recall(&occurrence("sidecar", reference), set, now)
            .is_none());
        assert!(assembled
            .recall(&occurrence("app", "ghcr.io/acme/app:v2"), set, now)
            .is_none());

        // No longer fresh: only reused from the very same cache entries at the same digest,
        // and then fresh again.
        put(Some(now));
        assert!(assembled.recall(&image, set, now).is_none());
        // An equal judgement in a new cache entry (the old one expired and was made again).
        let renewed = vec![(
            policy.fingerprint,
            Arc::new(compact(&policy, &digest, Err(error))),
        )];
        let other_digest = format!("sha256:{}", "b".repeat(64));
        let other_policy = vec![(policy.fingerprint ^ 1, entry)];
        for (digest, judged) in [
            (&digest, &renewed),
            (&other_digest, &judged),
            (&digest, &other_policy),
        ] {
            let reused = assembled.reuse(&image, set, digest, judged, now + hour);
            assert!(reused.is_none(), "{digest} {:?}", judged[0].0);
        }
        assert!(assembled.recall(&image, set, now).is_none());
        let reused = assembled
            .reuse(&image, set, &digest, &judged, now + hour)
            .expect("same entries");
        assert!(Arc::ptr_eq(&reused, &facts));
        assert!(assembled.recall(&image, set, now).is_some());

        // Facts that depend on no cache entry hold as long as the policies.
        put(None);
        assert!(assembled.recall(&image, set, now).is_some());
    }

    #[test]
    fn cached_judgements_are_fresh_for_their_time_to_live() {
        let policy = policy();
        let digest = format!("sha256:{}", "a".repeat(64));
        let fact = SignatureFact {
            authority: "release/first".to_string(),
            identity: "key sha256:0123456789abcdef".to_string(),
            rekor_log_index: None,
            rekor_integrated_time: None,
            digest: digest.clone(),
            format: "cosign",
            attestations: Vec::new(),
        };
        let (verified_ttl, rejected_ttl) = (Duration::from_secs(600), Duration::from_secs(30));
        let before = Instant::now();
        let verified = compact(&policy, &digest, Ok(fact));
        let until = fresh_until(&verified, verified_ttl, rejected_ttl);
        // Whole seconds, rounded down: never later than the cache's own expiry.
        assert!(until <= Instant::now() + verified_ttl);
        assert!(until + Duration::from_secs(1) > before + verified_ttl);
        let error = ImageError {
            code: ReasonCode::NoSignature,
            message: "none".to_string(),
        };
        let rejected = compact(&policy, &digest, Err(error));
        let until = fresh_until(&rejected, verified_ttl, rejected_ttl);
        assert!(until <= Instant::now() + rejected_ttl && until >= before + rejected_ttl);
    }

    #[test]
    fn a_cached_fact_stays_small() {
        // With moka's ~375 bytes per entry this keeps 100,000 cached digests near 50 MiB.
        assert!(std::mem::size_of::<CachedFact>() <= 48);
        assert!(std::mem::size_of::<Cached>() <= 48);
    }

    #[test]
    fn signer_identities_are_shared_between_entries() {
        let a = intern("key sha256:0123456789abcdef");
        let b = intern("key sha256:0123456789abcdef");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
