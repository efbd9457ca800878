//! Every cache of the verifier and its keys: tag → digest, (image digest, policy) →
//! judgement in a compact form, and the facts last assembled for an image occurrence. A
//! known image costs one lookup in the last; the others make sure a judgement is made once
//! however many reviews ask, and is kept no longer than its time to live. The signer
//! identities cached judgements share are interned here too.

use super::facts::{AttestationFact, Format, ImageError, ImageFacts, Judgement, SignatureFact};
use super::imagepolicy::ImagePolicy;
use crate::images::{Digest, ImageOccurrence, ImageRef};
use crate::registry::RegistryError;
use prometheus::IntCounter;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// What the cache keeps of a judgement (it holds up to 100,000): a satisfied one without
/// what the key and the policy already say, or the rejection and when it was made (boxed:
/// rejections are few and short-lived). Names, files and the reproduce command are rebuilt
/// from the policy on each lookup.
pub(super) type Cached = Result<CachedFact, Box<(ImageError, Instant)>>;

/// A `SignatureFact` in 48 bytes (with moka's own ~375 bytes per entry, about 500 bytes per
/// cached digest instead of ~775).
pub(super) struct CachedFact {
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

pub(super) struct Extra {
    other_digest: Option<Digest>,
    attestations: Vec<AttestationFact>,
}

/// `CachedFact::rekor` for "no such value" (log indexes and times are never negative).
const NONE: i64 = i64::MIN;

/// The origin of `CachedFact::made`.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// Signer identities are shared between cache entries; past this many distinct ones they
/// are no longer interned (the table never grows without bound).
const MAX_INTERNED: usize = 4096;

/// Signer identities shared between cache entries: a few signers sign most images.
#[derive(Default)]
pub(super) struct Interner(Mutex<std::collections::HashSet<Arc<str>>>);

impl Interner {
    fn intern(&self, identity: &str) -> Arc<str> {
        let Ok(mut table) = self.0.lock() else {
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
}

fn compact(
    policy: &ImagePolicy,
    digest: &Digest,
    judgement: Judgement,
    identities: &Interner,
) -> Cached {
    let fact = judgement.map_err(|e| Box::new((e, Instant::now())))?;
    let other_digest = (fact.digest != *digest).then_some(fact.digest);
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
        bundle: fact.format == Format::Bundle,
        made: u32::try_from(EPOCH.elapsed().as_secs()).unwrap_or(u32::MAX),
        identity: identities.intern(&fact.identity),
        rekor: [
            fact.rekor_log_index.unwrap_or(NONE),
            fact.rekor_integrated_time.unwrap_or(NONE),
        ],
        extra,
    })
}

pub(super) fn expand(policy: &ImagePolicy, digest: &Digest, cached: &Cached) -> Judgement {
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
            .and_then(|e| e.other_digest.as_ref())
            .unwrap_or(digest)
            .clone(),
        format: if fact.bundle {
            Format::Bundle
        } else {
            Format::Cosign
        },
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
pub(super) fn later(at: Instant, after: Duration) -> Instant {
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
pub(super) type OutcomeKey = ([u8; 32], u64);

pub(super) fn outcome_key(
    image: &ImageRef,
    digest: &Digest,
    policy: &ImagePolicy,
    keys: u64,
) -> OutcomeKey {
    let mut name = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&image.registry, "/", &image.repository, "@", digest] {
        name.update(part.as_bytes());
    }
    if keys != 0 {
        name.update(b" read with ");
        name.update(&keys.to_le_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(name.finish().as_ref());
    (key, policy.fingerprint)
}

/// `set` (or any cache key part) for a review that reads registries with the credentials
/// `keys` identifies: unchanged without pull secrets (`keys` 0).
pub(super) fn scoped(set: u64, keys: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    if keys == 0 {
        return set;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (set, keys).hash(&mut hasher);
    hasher.finish()
}

/// Identifies a list of image policies: their fingerprints, in order.
pub(super) fn policies_fingerprint<'a>(policies: impl Iterator<Item = &'a ImagePolicy>) -> u64 {
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
pub(super) struct Assembled {
    slots: crate::slots::Slots<Assembly>,
}

pub(super) struct Assembly {
    /// The image policies in force (`policies_fingerprint`).
    pub policies: u64,
    /// The fingerprint of each matching policy and the cache entry it was judged from.
    /// Holding the entries keeps their addresses from being reused by newer ones.
    pub judged: Vec<(u64, Arc<Cached>)>,
    pub facts: Arc<ImageFacts>,
    /// None when nothing the facts depend on expires (no policy matches the image).
    pub fresh_until: Option<Instant>,
    /// The `verdict_image_verifications_total` series of the facts' outcomes, looked up
    /// once: every recall or reuse counts them again.
    pub counters: Vec<IntCounter>,
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
    pub fn recall(
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
    pub fn reuse(
        &self,
        occurrence: &ImageOccurrence,
        policies: u64,
        digest: &Digest,
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

    pub fn put(&self, occurrence: &ImageOccurrence, known: Assembly) {
        if let Some(mut slot) = self.slot(occurrence) {
            *slot = Some(known);
        }
    }
}

/// How a judgement was found.
pub(super) enum Lookup {
    Hit,
    /// Made by this lookup.
    Miss,
    /// Made by another review's lookup at the same time.
    Coalesced,
}

/// The tag cache's key: the reference, and the credentials it was read with (if any).
fn tag_key(image: &ImageRef, keys: u64) -> String {
    if keys == 0 {
        image.to_string()
    } else {
        format!("{image} read with {keys:016x}")
    }
}

/// The verifier's caches.
pub(super) struct Caches {
    /// `(registry/repository@digest, policy fingerprint)` → judgement.
    outcomes: moka::future::Cache<OutcomeKey, Arc<Cached>>,
    /// Facts recently assembled from cached judgements.
    pub assembled: Assembled,
    /// `registry/repository:tag` → digest, and when it was looked up.
    tags: moka::future::Cache<String, (Digest, Instant)>,
    identities: Interner,
    tag_ttl: Duration,
    verified_ttl: Duration,
    rejected_ttl: Duration,
}

impl Caches {
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            outcomes: moka::future::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.verified_ttl)
                .build(),
            assembled: Assembled::new(),
            tags: moka::future::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(settings.tag_ttl.max(Duration::from_millis(1)))
                .build(),
            identities: Interner::default(),
            tag_ttl: settings.tag_ttl,
            verified_ttl: settings.verified_ttl,
            rejected_ttl: settings.rejected_ttl,
        }
    }

    /// Until when a judgement from this cache holds (see `fresh_until`).
    pub fn fresh_until(&self, cached: &Cached) -> Instant {
        fresh_until(cached, self.verified_ttl, self.rejected_ttl)
    }

    /// The digest a tag points to, and until when that is reused: cached for the tag TTL,
    /// and looked up once however many reviews ask at the same time. Failures are not
    /// cached. `lookup` gives the digest and when it was looked up.
    pub async fn digest(
        &self,
        image: &ImageRef,
        keys: u64,
        lookup: impl Future<Output = Result<(Digest, Instant), RegistryError>>,
    ) -> Result<(Digest, Instant), RegistryError> {
        let fresh = |(digest, looked_up)| (digest, later(looked_up, self.tag_ttl));
        if self.tag_ttl.is_zero() {
            return lookup.await.map(fresh);
        }
        self.tags
            .try_get_with(tag_key(image, keys), lookup)
            .await
            .map(fresh)
            .map_err(|e| e.as_ref().clone())
    }

    /// The judgement of one image digest under one policy, made by `judge` (called only
    /// on a miss) once however many reviews ask at the same time. `judge`'s errors
    /// (transient trouble) are never cached.
    pub async fn judgement<E: Send + Sync + 'static, F>(
        &self,
        image: &ImageRef,
        digest: &Digest,
        policy: &ImagePolicy,
        keys: u64,
        judge: impl FnOnce() -> F,
    ) -> Result<(Arc<Cached>, Lookup), Arc<E>>
    where
        F: Future<Output = Result<Judgement, E>>,
    {
        let key = outcome_key(image, digest, policy, keys);
        if let Some(hit) = self.outcomes.get(&key).await {
            if !is_stale(&hit, self.rejected_ttl) {
                return Ok((hit, Lookup::Hit));
            }
            self.outcomes.invalidate(&key).await;
        }
        let entry = self
            .outcomes
            .entry(key)
            .or_try_insert_with(async {
                judge()
                    .await
                    .map(|judgement| Arc::new(compact(policy, digest, judgement, &self.identities)))
            })
            .await?;
        let lookup = if entry.is_fresh() {
            Lookup::Miss
        } else {
            Lookup::Coalesced
        };
        Ok((entry.into_value(), lookup))
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::assemble;
    use super::*;
    use crate::decision::ReasonCode;
    use crate::images::ContainerKind;

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
        super::super::imagepolicy::parse(
            doc,
            "images.yaml",
            std::path::Path::new("."),
            &Arc::new(super::super::trust::TrustRoot::default()),
        )
        .expect("parses")
    }

    #[test]
    fn the_compact_cache_form_gives_back_the_same_judgement() {
        let policy = policy();
        let admitted = digest('a');
        let platform = digest('b');
        for digest in [&admitted, &platform] {
            let fact = SignatureFact {
                authority: "release/second".to_string(),
                identity: "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1 (https://token.actions.githubusercontent.com)".to_string(),
                rekor_log_index: Some(7),
                rekor_integrated_time: Some(1_700_000_000),
                digest: digest.clone(),
                format: Format::Bundle,
                attestations: vec![AttestationFact {
                    predicate_type: "https://slsa.dev/provenance/v1".to_string(),
                    predicate: serde_json::json!({"builder": {"id": "x"}}),
                    signer: "s".to_string(),
                    authority: "release/second".to_string(),
                    digest: digest.clone(),
                    format: Format::Bundle,
                }],
            };
            let cached = compact(&policy, &admitted, Ok(fact.clone()), &Interner::default());
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
        let cached = compact(&policy, &admitted, Err(error.clone()), &Interner::default());
        assert_eq!(expand(&policy, &admitted, &cached), Err(error));
        assert!(!is_stale(&cached, Duration::from_secs(30)));
        assert!(is_stale(&cached, Duration::ZERO));
    }

    fn digest(hex: char) -> Digest {
        Digest::parse(&format!("sha256:{}", hex.to_string().repeat(64))).expect("a digest")
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
        let set = policies_fingerprint(std::iter::once(&policy));
        let digest = digest('a');
        let reference = "ghcr.io/acme/app:v1";
        let image = occurrence("app", reference);
        let parsed = image.parse().expect("valid reference");
        let error = ImageError {
            code: ReasonCode::NoSignature,
            message: "none".to_string(),
        };
        let entry = Arc::new(compact(
            &policy,
            &digest,
            Err(error.clone()),
            &Interner::default(),
        ));
        let judged = vec![(policy.fingerprint, entry.clone())];
        let facts = Arc::new(assemble(
            &image,
            &parsed,
            Some(&digest),
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
            Arc::new(compact(&policy, &digest, Err(error), &Interner::default())),
        )];
        let other_digest = self::digest('b');
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
        let digest = digest('a');
        let fact = SignatureFact {
            authority: "release/first".to_string(),
            identity: "key sha256:0123456789abcdef".to_string(),
            rekor_log_index: None,
            rekor_integrated_time: None,
            digest: digest.clone(),
            format: Format::Cosign,
            attestations: Vec::new(),
        };
        let (verified_ttl, rejected_ttl) = (Duration::from_secs(600), Duration::from_secs(30));
        let before = Instant::now();
        let verified = compact(&policy, &digest, Ok(fact), &Interner::default());
        let until = fresh_until(&verified, verified_ttl, rejected_ttl);
        // Whole seconds, rounded down: never later than the cache's own expiry.
        assert!(until <= Instant::now() + verified_ttl);
        assert!(until + Duration::from_secs(1) > before + verified_ttl);
        let error = ImageError {
            code: ReasonCode::NoSignature,
            message: "none".to_string(),
        };
        let rejected = compact(&policy, &digest, Err(error), &Interner::default());
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
        let identities = Interner::default();
        let a = identities.intern("key sha256:0123456789abcdef");
        let b = identities.intern("key sha256:0123456789abcdef");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
