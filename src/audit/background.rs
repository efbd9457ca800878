//! The background audit of `serve --audit-interval`: the replica holding the audit
//! [`Lease`](super::lease) judges what runs every interval, at a bounded pace beside
//! admission ([`PACE`]), publishes PolicyReports and sets the `verdict_audit_*` metrics.
//! It starts once the inventory is synced; a failed audit is tried again after a minute
//! (or the interval, when shorter). Losing the Lease stops an audit before it publishes.

use super::lease::{self, Lease, RETRY};
use super::{reports, Judged, Selection};
use crate::metrics::Metrics;
use crate::review::Reviewer;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The share of its time an audit spends judging (the rest it rests) while admission runs
/// beside it. Measured by `make bench` (benches/audit.rs) on 2 cores at 16 reviews in
/// flight: at 0.5, admission p99 went from 2.2 to 5.3 ms during an audit.
pub const PACE: f64 = 0.25;
/// How soon a failed audit is tried again, at most.
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// Runs until `stop` turns true, then releases the Lease.
pub async fn run(
    client: kube::Client,
    reviewer: Arc<Reviewer>,
    metrics: Metrics,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let namespace = client.default_namespace().to_string();
    let mut lease = Lease::new(client.clone(), &namespace, lease::identity());
    tracing::info!(interval = ?interval, lease = lease::NAME, namespace = %namespace, identity = %lease.identity(), "background audit on");
    metrics
        .audit_interval
        .set(i64::try_from(interval.as_secs()).unwrap_or(i64::MAX));
    metrics.audit_last_success.set(unix_now());
    let mut ticker = tokio::time::interval(RETRY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = Instant::now();
    'outer: loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        if !leading(&mut lease, &metrics).await || Instant::now() < next {
            continue;
        }
        if let Some(why) = reviewer.inventory_gap(&reviewer.policies().current()) {
            tracing::debug!(reason = %why, "the audit waits for the inventory");
            continue;
        }
        let started = Instant::now();
        let everything = Selection::default();
        let judging = super::judge_all(
            &client,
            &reviewer,
            &everything,
            started + super::DEADLINE,
            Some(PACE),
        );
        tokio::pin!(judging);
        metrics.audit_running.set(1);
        let _running = Running(&metrics);
        let judged = loop {
            tokio::select! {
                judged = &mut judging => break judged,
                _ = ticker.tick() => if !leading(&mut lease, &metrics).await {
                    tracing::warn!("lost the audit Lease: the audit in progress stops unpublished");
                    continue 'outer;
                },
                _ = stop.changed() => break 'outer,
            }
        };
        // Renewed just before writing: a replica that was paused past the Lease writes nothing.
        let outcome = match judged {
            Ok(judged) if leading(&mut lease, &metrics).await => {
                publish(&client, judged, reviewer.policies().root(), &metrics).await
            }
            Ok(_) => continue,
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        metrics.audit_duration.set(took.as_secs_f64());
        match outcome {
            Ok(()) => {
                metrics.audit_runs.with_label_values(&["success"]).inc();
                metrics.audit_last_success.set(unix_now());
                next = started + interval;
            }
            Err(e) => {
                metrics.audit_runs.with_label_values(&["failure"]).inc();
                tracing::error!(error = format!("{e:#}"), "background audit failed");
                next = Instant::now() + interval.min(RETRY_FAILED);
            }
        }
    }
    lease.release().await;
    metrics.audit_leader.set(0);
}

/// Sets `verdict_audit_running` back to 0 however the audit ends.
struct Running<'a>(&'a Metrics);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.audit_running.set(0);
    }
}

/// One Lease step; a replica that does not lead shows no violations of its own.
async fn leading(lease: &mut Lease, metrics: &Metrics) -> bool {
    let held = lease.step().await;
    if metrics.audit_leader.get() == 1 && !held {
        metrics.audit_violations.reset();
    }
    metrics.audit_leader.set(i64::from(held));
    held
}

/// Writes the reports of one audit and sets its metrics.
async fn publish(
    client: &kube::Client,
    judged: Vec<Judged>,
    root: &std::path::Path,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let objects = judged.len();
    let judged = super::folded(judged);
    let desired = reports::desired(&judged, root);
    let written = reports::publish(client, desired, unix_now()).await?;
    metrics
        .audit_objects
        .set(i64::try_from(objects).unwrap_or(i64::MAX));
    metrics.audit_violations.reset();
    let mut findings = 0;
    for object in &judged {
        let namespace = object.reference["namespace"].as_str().unwrap_or_default();
        for finding in &object.report.verdict.messages.0 {
            let (policy, _) = reports::policy_and_rule(finding, root);
            metrics
                .audit_violations
                .with_label_values(&[policy.as_str(), namespace, finding.code.as_str()])
                .inc();
            findings += 1;
        }
    }
    tracing::info!(
        objects,
        reported = judged.len(),
        findings,
        created = written.created,
        updated = written.updated,
        deleted = written.deleted,
        unchanged = written.unchanged,
        foreign = written.foreign,
        skipped = written.skipped,
        "background audit done"
    );
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
