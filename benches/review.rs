//! One full review, in process: decode -> images -> Rego (shipped policies) -> response.
//! Criterion reports the time per review and, as throughput, reviews per second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};
use verdict::admission::{self, Decoded};
use verdict::config::{PolicyConfig, RegistryConfig};
use verdict::metrics::Metrics;

fn full_review(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = PolicyConfig {
        policies: root.join("policies"),
        policy_timeout: Duration::from_secs(2),
    };
    let registry = RegistryConfig {
        trust_root: None,
        docker_config: None,
        registry_ca: None,
        insecure_registries: Vec::new(),
        mirrors: Vec::new(),
        registry_concurrency: 16,
        tag_cache_ttl: Duration::from_secs(10),
    };
    let (_, reviewer) =
        verdict::setup::reviewer(&policy, &registry, Metrics::unregistered()).unwrap();
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
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let raw = admission::parse_body(&body).unwrap();
                    let Decoded::Judge(review) = admission::decode(raw).unwrap() else {
                        unreachable!()
                    };
                    let verdict = reviewer
                        .judge(&review, Instant::now() + Duration::from_secs(10))
                        .await;
                    let response = admission::respond(
                        review.request.types.clone(),
                        &review.subject,
                        &verdict.messages,
                    );
                    serde_json::to_vec(&response).unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, full_review);
criterion_main!(benches);
