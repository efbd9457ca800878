//! Dry-run reports for `/v1/check` and `verdict check`: every object's decision,
//! messages with their policy, images and timings, as JSON or as text for people.

use crate::admission::{self, Decoded, Subject};
use crate::decision::{Decision, Origin, Severity};
use crate::manifest::{self, ManifestError};
use crate::review::{Placement, Reviewer, Timings, Verdict};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct ObjectReport {
    pub object: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `deny` when any object is denied.
    pub decision: Decision,
    pub allowed: bool,
    pub objects: Vec<ObjectReport>,
    pub policy_revision: u64,
}

/// Judges every document of a dry-run body with the same path as `/validate` (Rego on the
/// blocking pool only: [`Placement::Offloaded`]).
pub async fn check(
    reviewer: &Reviewer,
    body: &[u8],
    deadline: Instant,
) -> Result<Report, ManifestError> {
    Ok(judge(
        reviewer,
        manifest::reviews(body)?,
        deadline,
        Placement::Offloaded,
    )
    .await)
}

/// Judges dry-run reviews (from [`manifest::reviews`]) with the same path as `/validate`,
/// placed as `placement` says (`Offloaded` for dry runs, `Audit` for `verdict audit`).
pub async fn judge(
    reviewer: &Reviewer,
    reviews: Vec<serde_json::Value>,
    deadline: Instant,
    placement: Placement,
) -> Report {
    let mut objects = Vec::new();
    for review in reviews {
        // Between objects, the worker may serve others.
        tokio::task::yield_now().await;
        objects.push(judge_one(reviewer, &review, deadline, placement).await);
    }
    Report::of(objects, reviewer.policies().status().revision)
}

impl Report {
    /// The report of judged objects, denied when any is.
    pub fn of(objects: Vec<ObjectReport>, policy_revision: u64) -> Self {
        let allowed = objects
            .iter()
            .all(|o| o.verdict.decision == Decision::Allow);
        Report {
            decision: if allowed {
                Decision::Allow
            } else {
                Decision::Deny
            },
            allowed,
            objects,
            policy_revision,
        }
    }
}

/// Judges one dry-run review (see [`judge`]).
pub async fn judge_one(
    reviewer: &Reviewer,
    review: &serde_json::Value,
    deadline: Instant,
    placement: Placement,
) -> ObjectReport {
    let (subject, verdict) = match admission::decode(crate::json::Node::from(review)) {
        Ok(Decoded::Judge(review)) => {
            let verdict = reviewer
                .judge(&review, reviewer.policies().current(), deadline, placement)
                .await;
            (review.subject, verdict)
        }
        Ok(Decoded::Refuse {
            subject, problem, ..
        }) => (subject, refused(&problem)),
        Err(e) => (Subject::default(), refused(&e.to_string())),
    };
    ObjectReport {
        object: subject.describe(),
        kind: subject.kind,
        namespace: subject.namespace,
        name: subject.name,
        operation: subject.operation,
        verdict,
    }
}

fn refused(problem: &str) -> Verdict {
    let messages = admission::refusal(problem);
    Verdict {
        decision: messages.decision(),
        messages,
        images: Vec::new(),
        timings: Timings::default(),
    }
}

/// The report as people read it.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let denied = report
        .objects
        .iter()
        .filter(|o| o.verdict.decision == Decision::Deny)
        .count();
    let _ = writeln!(
        out,
        "{} ({} object(s), {denied} denied)",
        if report.allowed { "ALLOWED" } else { "DENIED" },
        report.objects.len()
    );
    for object in &report.objects {
        let v = &object.verdict;
        let _ = writeln!(
            out,
            "\n{}: {}",
            object.object,
            if v.decision == Decision::Allow {
                "allowed"
            } else {
                "DENIED"
            }
        );
        for m in &v.messages.0 {
            let severity = match m.severity {
                Severity::Deny => "deny",
                Severity::Warn => "warn",
                Severity::Dryrun => "dryrun",
            };
            let _ = writeln!(
                out,
                "  {severity:<5} [{}] {}",
                m.code,
                m.message.replace('\n', "\n        ")
            );
            match &m.origin {
                Origin::Policy { files, rule } => {
                    let _ = writeln!(out, "        from {rule} in {}", files.join(", "));
                }
                Origin::Constraint {
                    constraint,
                    kind,
                    template,
                    file,
                    enforcement_action,
                    details,
                } => {
                    let _ = writeln!(
                        out,
                        "        from constraint {kind}/{constraint} (template {template}, \
                         enforcementAction {enforcement_action}) in {file}"
                    );
                    if !details.is_null() {
                        let _ = writeln!(out, "        details: {details}");
                    }
                }
                Origin::Image {
                    policy: Some(policy),
                    file: Some(file),
                    ..
                } => {
                    let _ = writeln!(out, "        from image policy {policy} in {file}");
                }
                Origin::Image { .. } | Origin::Builtin => {}
            }
        }
        if !v.images.is_empty() {
            let _ = writeln!(out, "  images:");
        }
        for image in &v.images {
            let _ = writeln!(
                out,
                "    {} ({:?}) {} -> {}  digest: {}  verified: {}",
                image.container,
                image.kind,
                image.reference,
                image.normalized.as_deref().unwrap_or("(invalid)"),
                image.digest.as_deref().unwrap_or("-"),
                if image.verified { "yes" } else { "no" },
            );
            for error in &image.errors {
                let _ = writeln!(out, "      error [{}] {}", error.code, error.message);
            }
        }
        let t = &v.timings;
        let _ = writeln!(
            out,
            "  timings: images {}µs, verify {}µs, policy {}µs, total {}µs",
            t.images_us, t.verify_us, t.policy_us, t.total_us
        );
    }
    out
}
