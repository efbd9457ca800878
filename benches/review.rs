//! In-process benchmarks of the judging path.
//! - `review/*`: one full review (decode -> images -> Rego with the shipped policies -> response),
//!   of the same review again (findings remembered) and `*_evaluated` (a new namespace each time).
//! - `verified/three_images_cache_hit`: a Pod of three signed images already verified.
//! - cold verification against a local docker-registry: time per image and registry requests
//!   per image, printed after the criterion groups.
//! - `decision_log/line`: what one review pays for its decision log line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/registry/mod.rs"]
mod registry;
mod support;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use registry::{TestKey, TestRegistry};
use sigstore::crypto::SigningScheme;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::pod;
use verdict::admission::{self, Decoded};
use verdict::config::{PolicyConfig, RegistryConfig};
use verdict::metrics::Metrics;
use verdict::review::{Placement, Reviewer};

fn reviewer(policies: PathBuf, insecure: Vec<String>, metrics: Metrics) -> Reviewer {
    let policy = PolicyConfig {
        policies,
        policy_timeout: Duration::from_secs(2),
        warn_only: false,
        no_match_policy: verdict::config::NoMatchPolicy::Allow,
    };
    let registry = RegistryConfig {
        trust_root: None,
        docker_config: None,
        registry_ca: None,
        insecure_registries: insecure,
        mirrors: Vec::new(),
        registry_concurrency: 16,
        tag_cache_ttl: Duration::from_secs(600),
        platform: Default::default(),
    };
    verdict::setup::reviewer(&policy, &registry, metrics)
        .unwrap()
        .1
}

async fn judge(reviewer: &Reviewer, body: &[u8]) -> Vec<u8> {
    let policy = reviewer.policies().current();
    let raw = admission::parse_body(body, policy.review_reads()).unwrap();
    let Decoded::Judge(review) = admission::decode(raw).unwrap() else {
        unreachable!()
    };
    let verdict = reviewer
        .judge(
            &review,
            policy,
            Instant::now() + Duration::from_secs(10),
            Placement::InlineFirst,
        )
        .await;
    let response = admission::respond(review.api_version, &review.subject, &verdict.messages);
    serde_json::to_vec(&response).unwrap()
}

fn full_review(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reviewer = reviewer(root.join("policies"), Vec::new(), Metrics::unregistered());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fixtures = root.join("../shared/fixtures/admission/apiserver-1.20");
    let mut group = c.benchmark_group("review");
    group.throughput(Throughput::Elements(1));
    for (name, file) in [
        ("pod_3_images_allowed", "0006-Pod-CREATE.json"),
        ("pod_2_images_denied_v1beta1", "0009-Pod-CREATE.json"),
    ] {
        let body = std::fs::read(fixtures.join(file)).unwrap();
        // The same review again: the policies' findings are remembered.
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(judge(&reviewer, &body)))
        });
        // A namespace never seen before each time: Rego evaluates every review.
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut fresh = 0u64;
        group.bench_function(format!("{name}_evaluated"), |b| {
            b.iter_batched(
                || {
                    fresh += 1;
                    let mut review = review.clone();
                    review["request"]["namespace"] = format!("ns-{fresh}").into();
                    serde_json::to_vec(&review).unwrap()
                },
                |body| runtime.block_on(judge(&reviewer, &body)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn sum(metrics: &Metrics, host: &str) -> u64 {
    ["200", "404", "401", "error"]
        .iter()
        .map(|s| {
            metrics
                .registry_requests
                .with_label_values(&[host, s])
                .get()
        })
        .sum()
}

fn verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = runtime.block_on(TestRegistry::start());
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let policies = tempfile::tempdir().unwrap();
    let policy = format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: signed}}\nspec:\n  images: [{{glob: '{}/**'}}]\n  authorities:\n  - key: {{file: k.pub}}\n",
        registry.host
    );
    std::fs::write(policies.path().join("images.yaml"), policy).unwrap();
    std::fs::write(policies.path().join("k.pub"), &key.public_pem).unwrap();
    let prometheus = prometheus::Registry::new();
    let metrics = Metrics::register(&prometheus).unwrap();
    let reviewer = reviewer(
        policies.path().to_path_buf(),
        vec![registry.host.clone()],
        metrics.clone(),
    );

    const COLD: usize = 60;
    let images: Vec<String> = runtime.block_on(async {
        let mut images = Vec::new();
        for i in 0..COLD + 3 {
            let repo = format!("bench/app{i}");
            images.push(registry.push_signed(&key, &repo).await);
        }
        images
    });

    // Warm three images, then measure reviews of a Pod that uses them.
    let warm = pod(&images[COLD..], 0);
    runtime.block_on(judge(&reviewer, &warm));
    let mut group = c.benchmark_group("verified");
    group.throughput(Throughput::Elements(1));
    group.bench_function("three_images_cache_hit", |b| {
        b.iter(|| runtime.block_on(judge(&reviewer, &warm)))
    });
    group.finish();

    // Cold: every image seen for the first time.
    let before = sum(&metrics, &registry.host);
    let mut times: Vec<Duration> = images[..COLD]
        .iter()
        .map(|image| {
            let body = pod(std::slice::from_ref(image), 0);
            let started = Instant::now();
            runtime.block_on(judge(&reviewer, &body));
            started.elapsed()
        })
        .collect();
    let requests = sum(&metrics, &registry.host) - before;
    times.sort();
    let mean = times.iter().sum::<Duration>() / COLD as u32;
    println!(
        "cold verification against a local docker-registry: {COLD} images, mean {mean:?}, p50 {:?}, p99 {:?}, \
         registry requests per cold image: {:.2} (target: at most 3)",
        times[COLD / 2],
        times[COLD * 99 / 100],
        requests as f64 / COLD as f64
    );
}

/// The cost a review pays for its decision log line: formatting it into the outbox the
/// log's writer thread empties (here into `io::sink()`). Lines are written in batches of
/// what a busy server logs between two writes (4,000 lines, 40,000 reviews/s for the
/// writer's 10 ms linger), and only the appending is timed.
fn decision_log(c: &mut Criterion) {
    const BATCH: u64 = 4_000;
    let log = verdict::logging::DecisionLog::start_on(Box::new(std::io::sink()));
    verdict::logging::init(Some(&log));
    let line = verdict::logging::Decision {
        uid: "705ab4f5-6393-11e8-b7cc-42010a800002",
        namespace: "team-a",
        kind: "Pod",
        name: "web-7d4b9c5f6-x2v9q",
        operation: "CREATE",
        decision: verdict::decision::Decision::Deny,
        reasons: "NO_SIGNATURE,POLICY_DENIED",
        warnings: 1,
        duration: Duration::from_micros(180),
    };
    let mut group = c.benchmark_group("decision_log");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("line", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let started = Instant::now();
                for _ in 0..n {
                    log.decision(&line);
                }
                spent += started.elapsed();
                left -= n;
                std::thread::sleep(Duration::from_millis(12));
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, full_review, verification, decision_log);
criterion_main!(benches);
