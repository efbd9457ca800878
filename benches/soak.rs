//! `make soak`: one million reviews (SOAK_REVIEWS) at concurrency 64 against the release
//! server while the policies reload every 3 s and the serving certificate rotates every
//! 5 s. Passes only with zero transport errors, zero wrong decisions (every answer is
//! checked against the decision its body must get) and resident memory growth under 10%
//! from the end of warm-up (the first 10%) to the end. Bounded by SOAK_MAX_SECONDS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/registry/mod.rs"]
mod registry;
mod support;

use registry::{TestKey, TestRegistry};
use sigstore::crypto::SigningScheme;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_policies, client, drive, pod, rss_kib, sample, start_verdict, Bodies, Client};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let max = Duration::from_secs(env_or("SOAK_MAX_SECONDS", 1500) as u64);
    let Some(passed) = support::bench_main("soak", || tokio::time::timeout(max, soak())) else {
        return;
    };
    match passed {
        Ok(true) => println!("soak: PASS"),
        Ok(false) => {
            println!("soak: FAIL");
            std::process::exit(1);
        }
        Err(_) => {
            println!("soak: FAIL (did not finish within {max:?})");
            std::process::exit(1);
        }
    }
}

async fn soak() -> bool {
    let total = env_or("SOAK_REVIEWS", 1_000_000);
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let ca = verdict::certs::DevCa::new(1).unwrap();
    let names = (
        vec!["localhost".to_string()],
        vec!["127.0.0.1".parse().unwrap()],
    );
    let first = ca.issue(&names.0, &names.1, 1).unwrap();
    verdict::certs::write(&certs_dir, &first).unwrap();

    let registry = TestRegistry::start().await;
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let mut signed = Vec::new();
    for i in 0..3 {
        let repo = format!("soak/app{i}");
        signed.push(registry.push_signed(&key, &repo).await);
    }
    registry.push_image("soak/unsigned", "v1").await;
    let unsigned = format!("{}/soak/unsigned:v1", registry.host);
    let policies = work.path().join("policies");
    bench_policies(&policies, &registry.host, &key.public_pem);

    let server = start_verdict(&certs_dir, &policies, &registry.host).await;
    let pid = server.child.id();

    // Four kinds of review, each with the decision it must get.
    let allowed_policies_only = vec![
        "ghcr.io/acme/app:v1.2.3".to_string(),
        "registry.k8s.io/pause:3.9".to_string(),
    ];
    let kinds: Vec<(Vec<String>, bool)> = vec![
        (allowed_policies_only, true),
        (signed.clone(), true),
        (vec!["nginx:latest".to_string()], false),
        (vec![unsigned], false),
    ];
    let bodies: Bodies = Arc::new(move |i| {
        let (images, expect) = &kinds[i % kinds.len()];
        (pod(images, i).into(), *expect)
    });

    // Reload policies and rotate the certificate while the load runs (SOAK_CHURN=0 to stop that,
    // to tell its memory effect apart).
    let churn_enabled = env_or("SOAK_CHURN", 1) != 0;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut series = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                series.push((started.elapsed().as_secs(), rss_kib(pid) / 1024));
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            series
        })
    };
    let churn = {
        let (stop, policies, certs_dir) = (stop.clone(), policies.clone(), certs_dir.clone());
        tokio::spawn(async move {
            let lib = policies.join("lib/lib.rego");
            let original = std::fs::read_to_string(&lib).unwrap();
            let mut tick = 0u64;
            while churn_enabled && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tick += 1;
                if tick.is_multiple_of(3) {
                    // Replaced in one step, as a ConfigMap update is: a reload never sees
                    // half a file.
                    let next = policies.with_extension("next.rego");
                    std::fs::write(&next, format!("{original}\n# soak reload {tick}\n")).unwrap();
                    std::fs::rename(&next, &lib).unwrap();
                }
                if tick.is_multiple_of(5) {
                    let next = ca.issue(&names.0, &names.1, 1).unwrap();
                    verdict::certs::write(&certs_dir, &next).unwrap();
                }
            }
        })
    };

    // 80% over one HTTP/2 connection; 20% over HTTP/1.1 connections that churn, so new
    // handshakes keep meeting rotated certificates.
    let url = format!("https://localhost:{}/validate?timeout=10s", server.port);
    let h2 = client(&first.ca_pem, true);
    let h1 = Client::new(&first.ca_pem, false, 2);

    // Warm-up: 10% of the reviews, then the memory baseline.
    let warm = total / 10;
    let warmup = drive(&h2, &url, bodies.clone(), warm, 64, pid).await;
    let rss_after_warmup = rss_kib(pid);
    let started = Instant::now();
    let main_total = total - warm;
    let h1_total = main_total / 5;
    let (big, small) = tokio::join!(
        drive(&h2, &url, bodies.clone(), main_total - h1_total, 48, pid),
        drive(&h1, &url, bodies, h1_total, 16, pid),
    );
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    let rss_end = rss_kib(pid);
    let series = sampler.await.unwrap();
    let series: Vec<String> = series
        .iter()
        .map(|(t, mib)| format!("{t}s:{mib}MiB"))
        .collect();
    println!("soak: RSS every 10 s: {}", series.join(" "));

    let metrics = server.metrics().await;
    let reloads = sample(&metrics, "verdict_policy_reloads_total{result=\"success\"}");
    let failed_reloads = sample(&metrics, "verdict_policy_reloads_total{result=\"failure\"}");
    let rotations = sample(&metrics, "verdict_tls_reloads_total{result=\"success\"}");
    let errors = warmup.errors + big.errors + small.errors;
    let wrong = warmup.wrong + big.wrong + small.wrong;
    let sent = warm + main_total;
    let growth = rss_end as f64 / rss_after_warmup as f64 - 1.0;
    let mut latency = big.latency_us.clone();
    latency.add(&small.latency_us).unwrap();
    println!(
        "soak: {sent} reviews in {elapsed:.1?} ({:.0}/s), transport errors {errors}, wrong decisions {wrong}, \
         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; policy reloads {} (failed {}), certificate rotations {}; \
         RSS {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1}%), peak {:.1} MiB",
        main_total as f64 / elapsed.as_secs_f64(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.value_at_quantile(0.999) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
        reloads,
        failed_reloads,
        rotations,
        rss_after_warmup as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        growth * 100.0,
        big.peak_rss_kib.max(small.peak_rss_kib) as f64 / 1024.0,
    );
    errors == 0 && wrong == 0 && growth < 0.10
}
