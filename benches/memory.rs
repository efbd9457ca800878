//! Resident memory of the release server after it has verified and cached many distinct
//! digests (VERDICT_BENCH_DIGESTS, 100,000 by default). Each digest gets a real cosign
//! signature in a local docker-registry; Pods pin 50 of them at a time, so nothing but the
//! signatures is fetched. Writes `target/bench/memory.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/registry/mod.rs"]
mod registry;
mod support;

use registry::{payload, sha256, TestKey, TestRegistry};
use serde_json::json;
use sigstore::crypto::SigningScheme;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_policies, client, drive, fixed, pod, rss_kib, start_verdict};

const PER_POD: usize = 50;

fn main() {
    support::bench_main("memory", run);
}

async fn run() {
    let total: usize = std::env::var("VERDICT_BENCH_DIGESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let certs = support::dev_certs(&certs_dir);
    let registry = Arc::new(TestRegistry::start().await);
    let key = Arc::new(TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1));

    // Signatures for `total` digests, pushed 32 at a time.
    let started = Instant::now();
    let repo = "mem/app";
    let reference = format!("{}/{repo}", registry.host);
    let digests: Vec<String> = (0..total)
        .map(|i| sha256(format!("image {i}").as_bytes()))
        .collect();
    registry.push_blob(repo, b"{}").await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let digests = Arc::new(digests);
    let pushers: Vec<_> = (0..32)
        .map(|_| {
            let (registry, key, next, digests, reference) = (
                registry.clone(),
                key.clone(),
                next.clone(),
                digests.clone(),
                reference.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(digest) = digests.get(i) else { break };
                    registry
                        .push_signatures(repo, digest, &[key.layer(payload(&reference, digest))])
                        .await;
                }
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await.unwrap();
    }
    println!("pushed {total} signatures in {:?}", started.elapsed());

    let policies = work.path().join("policies");
    bench_policies(&policies, &registry.host, &key.public_pem);
    let server = start_verdict(&certs_dir, &policies, &registry.host).await;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);

    let bodies: Vec<Vec<u8>> = digests
        .chunks(PER_POD)
        .enumerate()
        .map(|(i, chunk)| {
            pod(
                &chunk
                    .iter()
                    .map(|d| format!("{reference}@{d}"))
                    .collect::<Vec<_>>(),
                i,
            )
        })
        .collect();
    let reviews = bodies.len();
    let url = format!("https://localhost:{}/validate?timeout=30s", server.port);
    let started = Instant::now();
    let run = drive(
        &client(&certs.ca_pem, true),
        &url,
        fixed(bodies, true),
        reviews,
        8,
        pid,
    )
    .await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let misses = server
        .metric("verdict_verification_cache_total{result=\"miss\"}")
        .await;
    let summary = json!({
        "distinct_digests": total,
        "verifications": misses,
        "reviews": reviews,
        "errors": run.errors,
        "wrong_decisions": run.wrong,
        "verification_seconds": elapsed.as_secs_f64(),
        "idle_rss_mib": idle as f64 / 1024.0,
        "rss_after_mib": after as f64 / 1024.0,
        "peak_rss_mib": run.peak_rss_kib as f64 / 1024.0,
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("memory.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
}
