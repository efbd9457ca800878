//! Which replica audits: a `coordination.k8s.io/v1` Lease, as client-go's leader election
//! keeps one. The holder renews it every [`RETRY`]; a candidate takes it when it has no
//! holder, or when its record (holder, renew time) has not changed by the candidate's own
//! clock (so clocks need not agree) for the lease's duration less two tries: a candidate
//! sees a renewal up to one try late and acts on a try, so a hung holder's Lease is taken
//! within one lease duration of its last renewal. A holder that could not renew for
//! [`RENEW_DEADLINE`] counts itself out before that (it renews again just before it
//! writes, so it never writes after losing the Lease); one that stops releases the Lease,
//! so another takes it at its next try.

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};

/// The Lease's name, in the namespace verdict runs in.
pub const NAME: &str = "verdict-audit";
/// How long a silent holder keeps the Lease.
pub const DURATION: Duration = Duration::from_secs(15);
/// How long a holder goes on without a successful renewal.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and candidates try.
pub const RETRY: Duration = Duration::from_secs(2);

pub struct Lease {
    api: Api<LeaseObject>,
    namespace: String,
    identity: String,
    /// When this replica last renewed (or took) the Lease.
    renewed: Option<Instant>,
    /// Another holder's record and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

impl Lease {
    pub fn new(client: kube::Client, namespace: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            identity,
            renewed: None,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether this replica holds the Lease now: renewed within [`RENEW_DEADLINE`].
    pub fn held(&self) -> bool {
        self.renewed.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
    }

    /// Takes, keeps or waits for the Lease (one try); then whether it is held.
    pub async fn step(&mut self) -> bool {
        // A slow API server must not keep a holder believing past its renew deadline.
        match tokio::time::timeout(RETRY * 2, self.try_step()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = NAME, namespace = %self.namespace, error = %e, "the audit Lease could not be read or written");
            }
            Err(_) => {
                tracing::warn!(lease = NAME, namespace = %self.namespace, "the API server did not answer about the audit Lease in time");
            }
        }
        self.held()
    }

    async fn try_step(&mut self) -> Result<(), kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(NAME).await? else {
            let lease = LeaseObject {
                metadata: ObjectMeta {
                    name: Some(NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds(DURATION)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            self.api.create(&PostParams::default(), &lease).await?;
            self.took();
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.identity {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds(DURATION));
            self.api
                .replace(NAME, &PostParams::default(), &lease)
                .await?;
            self.renewed = Some(Instant::now());
            return Ok(());
        }
        // Another's, or no one's: it expires when its record stays the same for its duration.
        self.renewed = None;
        let record = format!(
            "{holder} {:?}",
            spec.renew_time.as_ref().map(|t| t.0.to_string())
        );
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record, Instant::now()));
                Instant::now()
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DURATION, Duration::from_secs);
        let silent = duration
            .saturating_sub(RETRY * 2)
            .max(RENEW_DEADLINE + Duration::from_secs(1));
        if !holder.is_empty() && seen_at.elapsed() < silent {
            return Ok(());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds(DURATION));
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        // The resourceVersion makes this fail if anyone wrote the Lease since it was read.
        self.api
            .replace(NAME, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = NAME, namespace = %self.namespace, identity = %self.identity, previous = %holder, "took the audit Lease");
        self.took();
        Ok(())
    }

    fn took(&mut self) {
        self.renewed = Some(Instant::now());
        self.observed = None;
    }

    /// Gives the Lease up (on shutdown), so another replica takes it at its next try.
    pub async fn release(&mut self) {
        if self.renewed.take().is_none() {
            return;
        }
        let released = async {
            let mut lease = self.api.get(NAME).await?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(&self.identity) {
                return Ok(());
            }
            spec.holder_identity = None;
            self.api
                .replace(NAME, &PostParams::default(), &lease)
                .await
                .map(drop)
        };
        match released.await {
            Ok(()) => tracing::info!(lease = NAME, "released the audit Lease"),
            Err(e) => tracing::warn!(lease = NAME, error = %e, "could not release the audit Lease"),
        }
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// This process's identity as a Lease holder: its host name (a Pod's name) and a random
/// suffix, so a restarted replica is a new holder.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "verdict".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{host}_{}_{nanos:08x}", std::process::id())
}
