//! Prometheus metrics, registered in an explicit registry (no globals).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100µs to 10s: reviews of known images are sub-millisecond,
/// the API server gives up at its webhook timeout (at most 30s).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Reviews answered, by decision, operation and kind.
    pub reviews: IntCounterVec,
    /// Time from body read to answer, by endpoint.
    pub review_duration: HistogramVec,
    /// Time spent evaluating Rego for one review.
    pub policy_eval_duration: Histogram,
    /// Policy reloads by result (`success`, `failure`).
    pub policy_reloads: IntCounterVec,
    /// Serving certificate reloads by result.
    pub tls_reloads: IntCounterVec,
    /// Reviews being judged right now.
    pub in_flight: IntGauge,
    /// Requests refused before judging (bad JSON, too large, wrong type), by HTTP status.
    pub rejected_requests: IntCounterVec,
    /// Requests to registries, by host and HTTP status (`error`, `timeout` when none).
    pub registry_requests: IntCounterVec,
    /// Image verification outcomes, by mode and reason code (`VERIFIED` when satisfied).
    pub verifications: IntCounterVec,
    /// Verification cache lookups: `hit`, `miss`, `coalesced` (joined a verification in flight).
    pub verify_cache: IntCounterVec,
    /// Reviews whose Rego findings were remembered from an identical input (`hit`) or not
    /// (`miss`); not counted for policy sets that call time, random or network builtins.
    pub decision_cache: IntCounterVec,
    /// Time per stage of a review: `resolve`, `fetch`, `verify`, `rego`.
    pub stage_duration: HistogramVec,
    /// When the serving certificate expires (Unix seconds).
    pub serving_cert_expiry: IntGauge,
    /// When the first Fulcio CA certificate of the trust roots in use expires (Unix seconds).
    pub trust_root_expiry: IntGauge,
    /// The series every review touches, looked up once here rather than by label per review
    /// (a lookup hashes the labels and takes a lock the workers share).
    pub validate_duration: Histogram,
    pub check_duration: Histogram,
    pub rego_duration: Histogram,
    pub verify_cache_hits: IntCounter,
    pub decision_cache_hits: IntCounter,
    pub decision_cache_misses: IntCounter,
    /// Log lines dropped because stdout was not read fast enough.
    pub log_lines_dropped: IntCounter,
    /// Connections open on the admission port.
    pub connections: IntGauge,
    /// TLS handshakes in progress on the admission port.
    pub handshakes: IntGauge,
    /// Objects of each synced kind (`apps/v1/Deployment`) in the inventory.
    pub inventory_objects: IntGaugeVec,
    /// Watch restarts of each synced kind: errors and relists after the first list.
    pub inventory_watch_restarts: IntCounterVec,
    /// Seconds since each synced kind's last event (a list, or a watch event).
    pub inventory_last_event_age: GaugeVec,
    /// Seconds each synced kind has been out of sync (its watch failing or its first list
    /// not finished); 0 while in sync.
    pub inventory_stale: GaugeVec,
    /// Findings of the last background audit, by policy, namespace (`""` for cluster-scoped
    /// objects) and reason code.
    pub audit_violations: IntGaugeVec,
    /// Background audits, by result (`success`, `failure`).
    pub audit_runs: IntCounterVec,
    /// How long the last background audit took.
    pub audit_duration: prometheus::Gauge,
    /// Objects the last background audit judged.
    pub audit_objects: IntGauge,
    /// When the last background audit succeeded (Unix seconds; the start of the process
    /// until one has).
    pub audit_last_success: IntGauge,
    /// `--audit-interval` in seconds (0: off), for the VerdictAuditStale alert.
    pub audit_interval: IntGauge,
    /// 1 while this replica holds the audit Lease.
    pub audit_leader: IntGauge,
    /// 1 while a background audit runs on this replica.
    pub audit_running: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let reviews = IntCounterVec::new(
            Opts::new("verdict_reviews_total", "Admission reviews answered"),
            &["decision", "operation", "kind"],
        )?;
        let review_duration = HistogramVec::new(
            HistogramOpts::new(
                "verdict_review_duration_seconds",
                "Time to answer one review",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint"],
        )?;
        let policy_eval_duration = Histogram::with_opts(
            HistogramOpts::new(
                "verdict_policy_evaluation_duration_seconds",
                "Rego evaluation time for one review",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "verdict_policy_reloads_total",
                "Policy folder reloads by result",
            ),
            &["result"],
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "verdict_tls_reloads_total",
                "Serving certificate reloads by result",
            ),
            &["result"],
        )?;
        let in_flight = IntGauge::new("verdict_reviews_in_flight", "Reviews being judged")?;
        let rejected_requests = IntCounterVec::new(
            Opts::new(
                "verdict_rejected_requests_total",
                "Requests refused before judging, by HTTP status",
            ),
            &["status"],
        )?;
        let registry_requests = IntCounterVec::new(
            Opts::new(
                "verdict_registry_requests_total",
                "Registry requests by host and status",
            ),
            &["host", "status"],
        )?;
        let verifications = IntCounterVec::new(
            Opts::new(
                "verdict_image_verifications_total",
                "Image policy outcomes by mode and reason code",
            ),
            &["mode", "code"],
        )?;
        let verify_cache = IntCounterVec::new(
            Opts::new(
                "verdict_verification_cache_total",
                "Verification cache lookups by result",
            ),
            &["result"],
        )?;
        let decision_cache = IntCounterVec::new(
            Opts::new(
                "verdict_policy_decision_cache_total",
                "Rego findings remembered from an identical input (hit) or evaluated (miss)",
            ),
            &["result"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new("verdict_stage_duration_seconds", "Time per review stage")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let serving_cert_expiry = IntGauge::new(
            "verdict_serving_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires",
        )?;
        let trust_root_expiry = IntGauge::new(
            "verdict_trust_root_expiry_timestamp_seconds",
            "When the first Fulcio CA certificate of the trust roots in use expires",
        )?;
        let log_lines_dropped = IntCounter::new(
            "verdict_log_lines_dropped_total",
            "Log lines dropped because stdout was not read (more than 1 MiB waiting)",
        )?;
        registry.register(Box::new(log_lines_dropped.clone()))?;
        let connections = IntGauge::new(
            "verdict_connections_open",
            "Connections open on the admission port",
        )?;
        let handshakes = IntGauge::new(
            "verdict_tls_handshakes_in_progress",
            "TLS handshakes in progress on the admission port",
        )?;
        registry.register(Box::new(connections.clone()))?;
        let inventory_objects = IntGaugeVec::new(
            Opts::new(
                "verdict_inventory_objects",
                "Objects of each synced kind in the inventory",
            ),
            &["kind"],
        )?;
        let inventory_watch_restarts = IntCounterVec::new(
            Opts::new(
                "verdict_inventory_watch_restarts_total",
                "Watch errors and relists of each synced kind",
            ),
            &["kind"],
        )?;
        let inventory_last_event_age = GaugeVec::new(
            Opts::new(
                "verdict_inventory_last_event_age_seconds",
                "Seconds since the last list or watch event of each synced kind",
            ),
            &["kind"],
        )?;
        let inventory_stale = GaugeVec::new(
            Opts::new(
                "verdict_inventory_stale_seconds",
                "Seconds each synced kind has been out of sync (0 while in sync)",
            ),
            &["kind"],
        )?;
        let audit_violations = IntGaugeVec::new(
            Opts::new(
                "verdict_audit_violations",
                "Findings of the last background audit, by policy, namespace and reason code",
            ),
            &["policy", "namespace", "code"],
        )?;
        let audit_runs = IntCounterVec::new(
            Opts::new("verdict_audit_runs_total", "Background audits, by result"),
            &["result"],
        )?;
        let audit_duration = prometheus::Gauge::new(
            "verdict_audit_duration_seconds",
            "How long the last background audit took",
        )?;
        let audit_objects = IntGauge::new(
            "verdict_audit_objects",
            "Objects the last background audit judged",
        )?;
        let audit_last_success = IntGauge::new(
            "verdict_audit_last_success_timestamp_seconds",
            "When the last background audit succeeded (Unix seconds; process start until then)",
        )?;
        let audit_interval = IntGauge::new(
            "verdict_audit_interval_seconds",
            "The background audit's interval (0: off)",
        )?;
        let audit_leader = IntGauge::new(
            "verdict_audit_leader",
            "1 while this replica holds the audit Lease",
        )?;
        registry.register(Box::new(audit_violations.clone()))?;
        registry.register(Box::new(audit_runs.clone()))?;
        registry.register(Box::new(audit_duration.clone()))?;
        registry.register(Box::new(audit_objects.clone()))?;
        registry.register(Box::new(audit_last_success.clone()))?;
        registry.register(Box::new(audit_interval.clone()))?;
        let audit_running = IntGauge::new(
            "verdict_audit_running",
            "1 while a background audit runs on this replica",
        )?;
        registry.register(Box::new(audit_leader.clone()))?;
        registry.register(Box::new(audit_running.clone()))?;
        registry.register(Box::new(inventory_objects.clone()))?;
        registry.register(Box::new(inventory_watch_restarts.clone()))?;
        registry.register(Box::new(inventory_last_event_age.clone()))?;
        registry.register(Box::new(inventory_stale.clone()))?;
        registry.register(Box::new(handshakes.clone()))?;
        registry.register(Box::new(serving_cert_expiry.clone()))?;
        registry.register(Box::new(trust_root_expiry.clone()))?;
        for metric in [
            &registry_requests,
            &verifications,
            &verify_cache,
            &decision_cache,
        ] {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(reviews.clone()))?;
        registry.register(Box::new(review_duration.clone()))?;
        registry.register(Box::new(policy_eval_duration.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(rejected_requests.clone()))?;
        Ok(Self {
            validate_duration: review_duration.with_label_values(&["validate"]),
            check_duration: review_duration.with_label_values(&["check"]),
            rego_duration: stage_duration.with_label_values(&["rego"]),
            verify_cache_hits: verify_cache.with_label_values(&["hit"]),
            decision_cache_hits: decision_cache.with_label_values(&["hit"]),
            decision_cache_misses: decision_cache.with_label_values(&["miss"]),
            log_lines_dropped,
            connections,
            handshakes,
            inventory_objects,
            inventory_watch_restarts,
            inventory_last_event_age,
            inventory_stale,
            audit_violations,
            audit_runs,
            audit_duration,
            audit_objects,
            audit_last_success,
            audit_interval,
            audit_leader,
            audit_running,
            reviews,
            review_duration,
            policy_eval_duration,
            policy_reloads,
            tls_reloads,
            in_flight,
            rejected_requests,
            registry_requests,
            verifications,
            verify_cache,
            decision_cache,
            stage_duration,
            serving_cert_expiry,
            trust_root_expiry,
        })
    }

    /// Metrics that nobody scrapes, for one-shot commands such as `verdict check`.
    pub fn unregistered() -> Self {
        #[allow(clippy::expect_used)]
        Self::register(&Registry::new()).expect("a fresh registry accepts every metric once")
    }
}

/// The `operation` label of a review: its operation if Kubernetes defines it, else `other`.
/// Label values taken from requests map to closed sets, so no request mints series.
pub fn operation_label(operation: &str) -> &'static str {
    ["CREATE", "UPDATE", "DELETE", "CONNECT"]
        .into_iter()
        .find(|o| *o == operation)
        .unwrap_or("other")
}

/// The `kind` label of a review: a kind verdict reads images from, else `other`.
pub fn kind_label(kind: &str) -> &'static str {
    crate::images::POD_SPEC_PATHS
        .iter()
        .map(|(k, _)| *k)
        .find(|k| *k == kind)
        .unwrap_or("other")
}

/// The `host` label of registry requests: the first `MAX_HOST_LABELS` hosts seen keep their
/// name, later ones are `other` (hosts come from Pod specs: a bound, not a closed set).
#[derive(Debug, Default)]
pub struct HostLabels(std::sync::Mutex<std::collections::HashSet<String>>);

/// How many registry hosts get a label of their own.
pub const MAX_HOST_LABELS: usize = 64;

impl HostLabels {
    pub fn label(&self, host: &str) -> String {
        let mut hosts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hosts.contains(host) {
            return host.to_string();
        }
        if hosts.len() < MAX_HOST_LABELS {
            hosts.insert(host.to_string());
            return host.to_string();
        }
        "other".to_string()
    }
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label values taken from requests fall into closed or bounded sets.
    #[test]
    fn label_values_from_requests_stay_in_bounded_sets() {
        assert_eq!(operation_label("CREATE"), "CREATE");
        assert_eq!(operation_label("create"), "other");
        assert_eq!(kind_label("Deployment"), "Deployment");
        assert_eq!(kind_label("Kind123"), "other");
        let hosts = HostLabels::default();
        let labels: std::collections::HashSet<String> = (0..10_000)
            .map(|i| hosts.label(&format!("registry{i}.example.com")))
            .collect();
        assert_eq!(labels.len(), MAX_HOST_LABELS + 1);
        assert!(labels.contains("other"));
        assert_eq!(
            hosts.label("registry0.example.com"),
            "registry0.example.com"
        );
    }
}
