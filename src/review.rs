//! Judging one review: images → facts (verification) → Rego → findings. The same path
//! serves `/validate`, `/v1/check` and `verdict check`. Owns the deadline and the
//! fail-closed rule: every error, timeout or panic becomes a denial.

use crate::admission::Review;
use crate::cluster::{InventorySync, PullSecrets};
use crate::config::NoMatchPolicy;
use crate::decision::{Decision, Finding, Findings, Origin, ReasonCode, Severity};
use crate::images;
use crate::metrics::Metrics;
use crate::policy::gatekeeper::Point;
use crate::policy::{EvalError, PolicySet, PolicyStore};
use crate::registry::auth::Keyring;
use crate::verify::imagepolicy::{Mode, Namespace};
use crate::verify::{ImageFacts, Verifier};
use serde::Serialize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long each stage took, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub images_us: u64,
    pub verify_us: u64,
    pub policy_us: u64,
    pub total_us: u64,
}

/// Everything decided about one object.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub decision: Decision,
    pub messages: Findings,
    pub images: Vec<Arc<ImageFacts>>,
    pub timings: Timings,
}

impl Verdict {
    /// The same verdict with every denial turned into a warning (`--warn-only`).
    fn into_warnings(mut self) -> Self {
        for finding in &mut self.messages.0 {
            if finding.severity == Severity::Deny {
                finding.severity = Severity::Warn;
                finding.message = format!("would deny: {}", finding.message);
            }
        }
        self.decision = self.messages.decision();
        self
    }

    fn from_parts(messages: Findings, images: Vec<Arc<ImageFacts>>, timings: Timings) -> Self {
        Self {
            decision: messages.decision(),
            messages,
            images,
            timings,
        }
    }
}

/// Settings of the judging path that a deployment may tune.
#[derive(Debug, Clone)]
pub struct ReviewSettings {
    /// Upper bound for Rego evaluation of one review.
    pub policy_timeout: Duration,
    /// Rego evaluations running at once; more wait (within their deadline).
    pub max_concurrent_evaluations: usize,
    /// Denials become warnings (roll-out): nothing is refused.
    pub warn_only: bool,
    /// What happens to an image that no image policy matches.
    pub no_match: NoMatchPolicy,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            policy_timeout: Duration::from_secs(2),
            max_concurrent_evaluations: cores * 2,
            warn_only: false,
            no_match: NoMatchPolicy::Allow,
        }
    }
}

/// The judge shared by all requests.
#[derive(Debug)]
pub struct Reviewer {
    policies: Arc<PolicyStore>,
    verifier: Verifier,
    metrics: Metrics,
    evaluation_slots: Arc<Semaphore>,
    policy_timeout: Duration,
    warn_only: bool,
    no_match: NoMatchPolicy,
    /// The cluster's inventory sync, when verdict runs with a cluster: until it has finished
    /// its first list every review is denied (policies would read a partial inventory).
    inventory: OnceLock<Arc<InventorySync>>,
    /// With a cluster: the pull secrets registries are read with.
    pull_secrets: OnceLock<Arc<PullSecrets>>,
}

impl Reviewer {
    pub fn new(
        policies: Arc<PolicyStore>,
        verifier: Verifier,
        metrics: Metrics,
        settings: ReviewSettings,
    ) -> Self {
        Self {
            policies,
            verifier,
            metrics,
            evaluation_slots: Arc::new(Semaphore::new(settings.max_concurrent_evaluations.max(1))),
            policy_timeout: settings.policy_timeout,
            warn_only: settings.warn_only,
            no_match: settings.no_match,
            inventory: OnceLock::new(),
            pull_secrets: OnceLock::new(),
        }
    }

    /// From now on, reviews wait for nothing but are denied while `sync` is not synced.
    pub fn attach_inventory(&self, sync: Arc<InventorySync>) {
        let _ = self.inventory.set(sync);
    }

    /// From now on, registries are read with each object's pull secrets (then --docker-config).
    pub fn attach_pull_secrets(&self, secrets: Arc<PullSecrets>) {
        let _ = self.pull_secrets.set(secrets);
    }

    /// The inventory sync attached, if any.
    pub fn inventory(&self) -> Option<&Arc<InventorySync>> {
        self.inventory.get()
    }

    /// Why `policy` cannot judge yet, with a cluster: its inventory lacks the first list
    /// of a kind it syncs. The policy set says what it lacks; the sync says why (the API
    /// server's error), when it knows. `/readyz` says the same.
    pub fn inventory_gap(&self, policy: &PolicySet) -> Option<String> {
        let sync = self.inventory.get()?;
        let gap = policy.inventory_gap()?;
        Some(sync.waiting().unwrap_or_else(|| gap.to_string()))
    }

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// Judges `review` with `policy` (the set its body was parsed for: the same set judges
    /// the whole review, even if a reload lands meanwhile) and answers by `deadline`
    /// whatever happens. Dry runs place Rego [`Placement::Offloaded`].
    pub async fn judge(
        &self,
        review: &Review<'_>,
        policy: Arc<PolicySet>,
        deadline: Instant,
        placement: Placement,
    ) -> Verdict {
        let verdict = self
            .judge_strictly(review, policy, deadline, placement)
            .await;
        if self.warn_only {
            return verdict.into_warnings();
        }
        verdict
    }

    async fn judge_strictly(
        &self,
        review: &Review<'_>,
        policy: Arc<PolicySet>,
        deadline: Instant,
        placement: Placement,
    ) -> Verdict {
        let started = Instant::now();
        let judged = tokio::time::timeout_at(
            deadline.into(),
            self.judge_within(review, policy, started, deadline, placement),
        )
        .await;
        judged.unwrap_or_else(|_| {
            let mut messages = Findings::default();
            messages.push(Finding::builtin(
                Severity::Deny,
                ReasonCode::Timeout,
                format!(
                    "verdict could not finish judging {} within the API server's deadline ({:?} left \
                     when it started), so nothing was admitted. Retry; if it persists, raise the \
                     webhook's timeoutSeconds or check what verdict waits on (registries, policies)",
                    review.subject.describe(),
                    deadline.saturating_duration_since(started),
                ),
            ));
            let timings = Timings { total_us: micros(started.elapsed()), ..Timings::default() };
            Verdict::from_parts(messages, Vec::new(), timings)
        })
    }

    /// Judges within `deadline`, from `started` on. The clock is read once per stage: on
    /// a remembered review the stages take a few microseconds each, and every read counts.
    async fn judge_within(
        &self,
        review: &Review<'_>,
        policy: Arc<PolicySet>,
        started: Instant,
        deadline: Instant,
        placement: Placement,
    ) -> Verdict {
        let refuse = |finding: Finding| {
            let timings = Timings {
                total_us: micros(started.elapsed()),
                ..Timings::default()
            };
            let mut findings = Findings::default();
            findings.push(finding);
            Verdict::from_parts(findings, Vec::new(), timings)
        };
        if let Some(why) = self.inventory_gap(&policy) {
            return refuse(Finding::builtin(
                Severity::Deny,
                ReasonCode::InventoryNotSynced,
                format!(
                    "verdict cannot judge {} yet: {why}. Policies would read an incomplete \
                     copy of the cluster, so nothing is admitted until it is synced; see \
                     /readyz, and grant verdict list and watch on the kinds named",
                    review.subject.describe()
                ),
            ));
        }
        // A DELETE runs nothing: its images are not judged.
        let extracted = if review.is_delete() {
            Ok(Vec::new())
        } else {
            images::extract(&review.subject.kind, review.object())
        };
        let occurrences = match extracted {
            Ok(occurrences) if occurrences.len() > MAX_IMAGES => {
                return refuse(Finding::builtin(
                    Severity::Deny,
                    ReasonCode::TooManyImages,
                    format!(
                        "{} has {} images; verdict judges at most {MAX_IMAGES} in one object, \
                         which bounds the work and memory of a review. Split the workload",
                        review.subject.describe(),
                        occurrences.len()
                    ),
                ))
            }
            Ok(occurrences) => occurrences,
            Err(malformed) => {
                return refuse(Finding::builtin(
                    Severity::Deny,
                    ReasonCode::InvalidRequest,
                    malformed.to_string(),
                ))
            }
        };
        let extracted = Instant::now();
        // Namespace labels are looked up only when some image policy is limited by them.
        let labels = policy
            .scoped_image_policies()
            .then(|| policy.namespace_labels(&review.subject.namespace));
        let namespace = labels.as_ref().map(|labels| Namespace {
            name: &review.subject.namespace,
            labels: labels.as_ref(),
        });
        let verify_by = verify_deadline(deadline, extracted);
        let keys = match self.pull_secrets.get() {
            Some(secrets) if !policy.image_policies.is_empty() && !occurrences.is_empty() => {
                let puller = images::puller(&review.subject.kind, review.object());
                secrets
                    .keyring(
                        &review.subject.namespace,
                        &puller.secrets,
                        puller.service_account.as_deref(),
                        verify_by,
                    )
                    .await
            }
            _ => Keyring::default(),
        };
        let facts = self
            .verifier
            .facts(
                &occurrences,
                &policy.image_policies,
                namespace.as_ref(),
                &keys,
                verify_by,
            )
            .await;
        let mut messages = Findings::default();
        for image in &facts {
            image_findings(
                image,
                &review.subject,
                self.no_match,
                placement.point(),
                &mut messages,
            );
        }
        let verified = Instant::now();

        for finding in self
            .evaluate_policies(review, &facts, policy, deadline, placement)
            .await
        {
            messages.push(finding);
        }
        let judged = Instant::now();
        let policy_elapsed = judged - verified;
        self.metrics
            .policy_eval_duration
            .observe(policy_elapsed.as_secs_f64());
        self.metrics
            .rego_duration
            .observe(policy_elapsed.as_secs_f64());
        let timings = Timings {
            images_us: micros(extracted - started),
            verify_us: micros(verified - extracted),
            policy_us: micros(policy_elapsed),
            total_us: micros(judged - started),
        };
        Verdict::from_parts(messages, facts, timings)
    }

    /// The findings of the policies for this review: remembered ones when the policy set has
    /// judged the same input before (see `PolicySet::recall`), else Rego within its time
    /// limit. Most evaluations take well under a millisecond, less than handing them to
    /// another thread costs (two thread wake-ups), so each starts right here. One that needs
    /// more than `INLINE_EVALUATION` is stopped and started again on the blocking pool
    /// (bounded in concurrency), where it cannot hold up other requests: a review that is
    /// slow to judge never delays one that is quick.
    async fn evaluate_policies(
        &self,
        review: &Review<'_>,
        facts: &[Arc<ImageFacts>],
        policy: Arc<PolicySet>,
        deadline: Instant,
        placement: Placement,
    ) -> Vec<Finding> {
        let empty = crate::json::Object::default();
        let raw = review.raw.as_object().unwrap_or(&empty);
        let key = policy.key(raw, facts, placement.point());
        if let Some(key) = &key {
            if let Some(findings) = policy.recall(key) {
                self.metrics.decision_cache_hits.inc();
                return findings;
            }
            self.metrics.decision_cache_misses.inc();
        }
        let input = match policy.input(raw, &facts) {
            Ok(input) => input.at(placement.point()),
            Err(e) => {
                return vec![internal_error(format!(
                    "building the policy input failed: {e}"
                ))]
            }
        };
        let remember = |findings: Vec<Finding>| {
            if let Some(key) = key {
                policy.remember(key, &findings);
            }
            findings
        };
        let limit = |now: Instant| {
            self.policy_timeout
                .min(deadline.saturating_duration_since(now))
        };
        if placement == Placement::InlineFirst {
            let quick = INLINE_EVALUATION.min(limit(Instant::now()));
            let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                policy.evaluate(input.clone(), quick)
            }));
            match evaluated {
                Ok(Err(EvalError::Timeout { .. })) if quick == INLINE_EVALUATION => {}
                Ok(Ok(findings)) => return remember(findings),
                Ok(Err(e)) => return vec![e.into_finding()],
                Err(_) => return vec![internal_error("policy evaluation crashed".to_string())],
            }
        }
        let Ok(_permit) = self.evaluation_slots.clone().acquire_owned().await else {
            return vec![internal_error(
                "the policy evaluator is shutting down".to_string(),
            )];
        };
        let limit = limit(Instant::now());
        let set = policy.clone();
        match tokio::task::spawn_blocking(move || set.evaluate(input, limit)).await {
            Ok(Ok(findings)) => remember(findings),
            Ok(Err(e)) => vec![e.into_finding()],
            Err(e) => vec![internal_error(format!("policy evaluation crashed: {e}"))],
        }
    }
}

/// The most images (containers, init and ephemeral containers) of one object verdict
/// judges: far more than any real Pod has, few enough that one review's facts, Rego input
/// and answer stay a few MiB. More is denied with `TOO_MANY_IMAGES`.
pub const MAX_IMAGES: usize = 256;

/// Where Rego runs for a review (see `Reviewer::evaluate_policies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the request's thread first, on the blocking pool past `INLINE_EVALUATION`: the
    /// API server's reviews, nearly all judged in microseconds.
    InlineFirst,
    /// On the blocking pool only: dry runs, which must never take an async worker from the
    /// API server's reviews.
    Offloaded,
    /// As `Offloaded`, for `verdict audit`: Gatekeeper constraints are enforced as at
    /// Gatekeeper's audit point (`audit.gatekeeper.sh`) rather than at admission.
    Audit,
}

impl Placement {
    /// The Gatekeeper enforcement point reviews placed so are judged at.
    fn point(self) -> Point {
        match self {
            Self::Audit => Point::Audit,
            Self::InlineFirst | Self::Offloaded => Point::Validation,
        }
    }
}

/// How long Rego may run on a request's own thread (see `Reviewer::evaluate_policies`).
const INLINE_EVALUATION: Duration = Duration::from_millis(2);

fn internal_error(detail: String) -> Finding {
    tracing::error!(detail = %detail, "internal error while judging");
    Finding::builtin(
        Severity::Deny,
        ReasonCode::InternalError,
        format!("verdict hit an internal error ({detail}) and denies what it could not judge; retry, and report it if it persists"),
    )
}

/// Registry work must stop a little before the review's deadline, so that a registry
/// timeout is reported as such (naming the registry) and Rego still gets to run.
fn verify_deadline(deadline: Instant, now: Instant) -> Instant {
    let remaining = deadline.saturating_duration_since(now);
    deadline - (remaining / 5).min(Duration::from_millis(250))
}

/// Built-in findings for one image: an invalid reference, no image policy where
/// `--no-match-policy` wants one, and every image policy it fails (`enforce` denies, `warn`
/// warns, `audit` only logs at admission and is a `dryrun` finding at the audit point).
fn image_findings(
    image: &ImageFacts,
    subject: &crate::admission::Subject,
    no_match: NoMatchPolicy,
    point: Point,
    out: &mut Findings,
) {
    let severity = match no_match {
        NoMatchPolicy::Allow => None,
        NoMatchPolicy::Warn => Some(Severity::Warn),
        NoMatchPolicy::Deny => Some(Severity::Deny),
    };
    if let (Some(severity), Some(normalized), true) =
        (severity, &image.normalized, image.policies.is_empty())
    {
        out.push(Finding {
            severity,
            code: ReasonCode::NoMatchingPolicy,
            origin: image_origin(image, None),
            message: format!(
                "{} {:?} image {:?} ({normalized}) matches no image policy, and verdict runs \
                 with --no-match-policy {}: nothing vouches for it. Add an image policy whose \
                 images cover {normalized}, or use an image from a registry that has one",
                describe_kind(image),
                image.container,
                image.reference,
                match no_match {
                    NoMatchPolicy::Warn => "warn",
                    _ => "deny",
                },
            ),
        });
    }
    for error in image
        .errors
        .iter()
        .filter(|e| e.code == ReasonCode::InvalidImageRef)
    {
        out.push(Finding {
            severity: Severity::Deny,
            code: ReasonCode::InvalidImageRef,
            origin: image_origin(image, None),
            message: format!(
                "{} {:?} image {:?} is not a valid image reference ({}). Fix {}: a reference \
                 looks like registry.example.com/team/app:1.2.3 or ...@sha256:<digest>",
                describe_kind(image),
                image.container,
                image.reference,
                error.message,
                image.path
            ),
        });
    }
    for outcome in image.policies.iter().filter(|o| !o.satisfied) {
        let Some(error) = &outcome.error else {
            continue;
        };
        let message = format!(
            "{} {:?} image {:?} ({}) does not satisfy image policy {:?} ({}): {}. Reproduce with: {}",
            describe_kind(image),
            image.container,
            image.reference,
            image.digest.as_deref().unwrap_or("digest unknown"),
            outcome.policy,
            outcome.file,
            error.message,
            outcome.reproduce,
        );
        let severity = match outcome.mode {
            Mode::Enforce => Severity::Deny,
            Mode::Warn => Severity::Warn,
            // The audit of what runs reports it; admission only logs it.
            Mode::Audit if point == Point::Audit => Severity::Dryrun,
            Mode::Audit => {
                tracing::info!(
                target: "verdict::audit",
                uid = %subject.uid,
                namespace = %subject.namespace,
                image = %image.reference,
                policy = %outcome.policy,
                code = %error.code,
                detail = %error.message,
                "image policy not satisfied (audit mode)"
                );
                continue;
            }
        };
        out.push(Finding {
            severity,
            code: error.code.clone(),
            message,
            origin: image_origin(image, Some(outcome)),
        });
    }
}

/// Where an image's finding comes from: the image, and the image policy that judged it.
fn image_origin(image: &ImageFacts, outcome: Option<&crate::verify::PolicyOutcome>) -> Origin {
    Origin::Image {
        container: image.container.clone(),
        image: image.reference.clone(),
        digest: image.digest.as_deref().map(str::to_string),
        policy: outcome.map(|o| o.policy.clone()),
        file: outcome.map(|o| o.file.clone()),
    }
}

fn describe_kind(image: &ImageFacts) -> &'static str {
    match image.kind {
        images::ContainerKind::Container => "container",
        images::ContainerKind::Init => "init container",
        images::ContainerKind::Ephemeral => "ephemeral container",
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{ImageError, PolicyOutcome};

    /// An image that fails an image policy in `mode`.
    fn failing(mode: Mode) -> ImageFacts {
        let occurrence = images::ImageOccurrence {
            container: "web".into(),
            kind: images::ContainerKind::Container,
            path: "spec.containers[0].image".into(),
            reference: "ghcr.io/acme/web:1".into(),
        };
        let mut facts = ImageFacts::from_parsed(&occurrence, occurrence.parse().as_ref());
        facts.policies.push(PolicyOutcome {
            policy: "release".into(),
            file: "/policies/images.yaml".into(),
            mode,
            satisfied: false,
            signature: None,
            error: Some(ImageError {
                code: ReasonCode::NoSignature,
                message: "no signature".into(),
            }),
            reproduce: "cosign verify ...".into(),
        });
        facts
    }

    fn findings(facts: &ImageFacts, point: Point) -> Vec<(Severity, String, Origin)> {
        let mut out = Findings::default();
        let subject = crate::admission::Subject::default();
        image_findings(facts, &subject, NoMatchPolicy::Allow, point, &mut out);
        out.0
            .into_iter()
            .map(|f| (f.severity, f.code.to_string(), f.origin))
            .collect()
    }

    #[test]
    fn an_audit_mode_image_policy_only_logs_at_admission_and_is_dryrun_at_the_audit_point() {
        let audit = failing(Mode::Audit);
        assert!(findings(&audit, Point::Validation).is_empty());
        let origin = Origin::Image {
            container: "web".into(),
            image: "ghcr.io/acme/web:1".into(),
            digest: None,
            policy: Some("release".into()),
            file: Some("/policies/images.yaml".into()),
        };
        assert_eq!(
            findings(&audit, Point::Audit),
            [(Severity::Dryrun, "NO_SIGNATURE".to_string(), origin.clone())]
        );
        // Enforced policies deny at both points, naming the image and the policy.
        for point in [Point::Validation, Point::Audit] {
            assert_eq!(
                findings(&failing(Mode::Enforce), point),
                [(Severity::Deny, "NO_SIGNATURE".to_string(), origin.clone())]
            );
        }
    }
}
