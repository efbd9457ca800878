//! Abuse, measured on the release server: resident memory under the worst reviews and dry
//! runs (three 3 MiB reviews at once whose whole object a policy reads, Pods of 30,000
//! containers, 3 MiB dry-run streams), and the latency `/validate` keeps while the worst
//! dry runs are sent. Writes `target/bench/abuse.json`. Figures, not assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_policies, rss_kib, start_verdict};

fn main() {
    support::bench_main("abuse", run);
}

/// A Pod review just under 3 MiB: 256 containers (the most verdict judges), each with 11 KiB
/// of environment.
fn worst_review(uid: usize) -> Vec<u8> {
    let env: Vec<Value> = (0..85)
        .map(|e| json!({"name": format!("VAR_{e}"), "value": "x".repeat(100)}))
        .collect();
    let containers = (0..256)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.example.com/app{i}:1.0"), "env": env}))
        .collect();
    support::pod_of(containers, uid)
}

/// A Pod review of 30,000 containers (1.2 MiB).
fn many_containers(uid: usize) -> Vec<u8> {
    support::pod(&vec!["nginx:latest".to_string(); 30_000], uid)
}

/// Samples RSS every 5 ms while `work` runs; returns (peak KiB, its result).
async fn peak_during<F: std::future::Future>(pid: u32, work: F) -> (u64, F::Output) {
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (peak.load(Ordering::Relaxed), out)
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u16 {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

async fn run() {
    let work = tempfile::tempdir().unwrap();
    let certs_dir = work.path().join("certs");
    let certs = support::dev_certs(&certs_dir);
    let policies = work.path().join("policies");
    bench_policies(&policies, "registry.invalid", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+\nkvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==\n-----END PUBLIC KEY-----\n");
    // A policy that reads every object whole: the review is built, and given to Rego, entire.
    std::fs::write(
        policies.join("whole.rego"),
        "package bench.whole\n\ndeny contains \"never\" if {\n\tcount(input.request.object.spec.containers) < 0\n}\n\nwarn contains \"seen\" if {\n\tsome c in input.request.object.spec.containers\n\tcount(c.env) > 1000\n}\n",
    )
    .unwrap();
    let server = start_verdict(&certs_dir, &policies, "registry.invalid").await;
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let validate = format!("https://localhost:{}/validate?timeout=30s", server.port);
    let check = format!("https://localhost:{}/v1/check", server.port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);
    println!("idle RSS {} MiB", mib(idle));

    let mut rounds = Vec::new();
    for (name, body) in [
        (
            "three 3 MiB reviews read whole",
            worst_review as fn(usize) -> Vec<u8>,
        ),
        ("three 30,000-container reviews", many_containers),
    ] {
        let bodies: Vec<Vec<u8>> = (0..3).map(body).collect();
        let size = bodies[0].len();
        let mut peaks = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let (peak, answered) = peak_during(pid, async {
                let sent = bodies.iter().map(|b| post(&client, &validate, b.clone()));
                futures_util::future::join_all(sent).await
            })
            .await;
            peaks.push(mib(peak));
            statuses = answered;
        }
        // jemalloc returns freed pages after their decay time (1 s, .cargo/config.toml).
        tokio::time::sleep(Duration::from_secs(15)).await;
        let after = rss_kib(pid);
        println!("{name} ({size} bytes each): peaks {peaks:?} MiB, RSS 15 s later {} MiB, statuses {statuses:?}", mib(after));
        rounds.push(json!({"case": name, "body_bytes": size, "peak_rss_mib": peaks, "rss_after_15s_mib": mib(after), "statuses": statuses}));
    }

    // Dry runs: a 3 MiB stream of Pods, and flow nesting 100,000 deep; three at once.
    let stream: String = (0..24_000)
        .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  containers: [{{name: c, image: nginx}}]\n---\n"))
        .collect();
    let deep = format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let (peak, statuses) = peak_during(pid, async {
        let sent = [stream.clone(), deep.clone(), stream.clone()]
            .into_iter()
            .map(|b| post(&client, &check, b.into_bytes()));
        futures_util::future::join_all(sent).await
    })
    .await;
    println!(
        "three worst dry runs: peak {} MiB, statuses {statuses:?}",
        mib(peak)
    );
    rounds.push(
        json!({"case": "three worst dry runs", "peak_rss_mib": [mib(peak)], "statuses": statuses}),
    );

    // /validate latency while the worst dry runs keep coming (8 senders, each again as soon
    // as it is answered or turned away).
    let review = support::pod(&["nginx:1.27".to_string()], 0);
    let mut quiet = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        post(&client, &validate, review.clone()).await;
        quiet.push(started.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0
    };
    let mut latency =
        json!({"quiet_p50_ms": pct(&mut quiet, 0.5), "quiet_p99_ms": pct(&mut quiet, 0.99)});
    // Two people sending big dry runs, then a flood of eight senders (whose uploads alone
    // take much of the two cores the server shares with this load generator).
    for senders in [2, 8] {
        let stop = Arc::new(AtomicBool::new(false));
        let running: Vec<_> = (0..senders)
            .map(|i| {
                let (client, check, stop) = (client.clone(), check.clone(), stop.clone());
                let body = if i % 2 == 0 {
                    deep.clone()
                } else {
                    stream[..600_000].to_string()
                };
                tokio::spawn(async move {
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        post(&client, &check, body.clone().into_bytes()).await;
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let mut busy = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            post(&client, &validate, review.clone()).await;
            busy.push(started.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        let mut dry_runs = 0;
        for sender in running {
            dry_runs += sender.await.unwrap();
        }
        latency[format!("senders_{senders}")] = json!({
            "p50_ms": pct(&mut busy, 0.5), "p99_ms": pct(&mut busy, 0.99), "dry_runs_sent": dry_runs,
        });
    }
    println!("/validate latency: {latency}");
    let summary = json!({"idle_rss_mib": mib(idle), "memory": rounds, "validate_latency": latency});
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("abuse.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
}
