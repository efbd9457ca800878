//! Abuse the real server must hold under: a stdout nobody reads, label values chosen by the
//! requester, pod specs of the wrong shape, a body announced larger than any review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{codes, pod_review, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// With stdout on a pipe nobody reads, lines past the buffer are dropped and counted and
/// every review is still answered; once the reader is back, logging resumes.
#[tokio::test]
async fn a_stdout_nobody_reads_never_stops_admission() {
    let server = Server::start();
    let client = server.client(true);
    server.pause_stdout();
    let started = Instant::now();
    let mut answered = 0;
    loop {
        let batch: Vec<_> = (0..64)
            .map(|i| {
                let mut review = pod_review("team-a", &["ghcr.io/acme/app:v1"]);
                review["request"]["uid"] = json!(format!("stalled-{answered}-{i}"));
                let client = client.clone();
                let url = server.url("/validate");
                tokio::spawn(async move {
                    client
                        .post(url)
                        .json(&review)
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        for request in batch {
            assert_eq!(request.await.unwrap(), 200);
            answered += 1;
        }
        let dropped = counter(
            &server.metrics_text().await,
            "verdict_log_lines_dropped_total",
        );
        if dropped > 0 {
            break;
        }
        assert!(
            answered < 60_000 && started.elapsed() < Duration::from_secs(120),
            "{answered} reviews answered and no line dropped"
        );
    }
    // Reviews still flow while lines are being dropped.
    let (status, body) = server
        .validate(&client, &pod_review("team-a", &["nginx:1.27"]))
        .await;
    assert_eq!(status, 200, "{body}");

    server.resume_stdout();
    let mut review = pod_review("team-a", &["ghcr.io/acme/app:v1"]);
    review["request"]["uid"] = json!("after-the-stall");
    let logged = common::eventually(Duration::from_secs(20), || {
        let server = &server;
        let client = client.clone();
        let review = review.clone();
        async move {
            server.validate(&client, &review).await;
            server.logs().contains("\"uid\":\"after-the-stall\"")
        }
    })
    .await;
    assert!(logged, "logging did not resume after the reader came back");
}

/// Label values taken from requests map to closed sets: many distinct kinds and operations
/// make no new series.
#[tokio::test]
async fn label_values_from_requests_mint_no_series() {
    let server = Server::start();
    let client = server.client(true);
    for i in 0..200 {
        let mut review = pod_review("team-a", &["nginx:1.27"]);
        review["request"]["kind"]["kind"] = json!(format!("Kind{i}"));
        review["request"]["object"]["kind"] = json!(format!("Kind{i}"));
        review["request"]["operation"] = json!(format!("OP{i}"));
        let (status, _) = server.validate(&client, &review).await;
        assert_eq!(status, 200);
    }
    let metrics = server.metrics_text().await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("verdict_reviews_total{"))
        .collect();
    assert!(series.len() <= 2, "{series:#?}");
    assert!(
        series
            .iter()
            .all(|l| l.contains("kind=\"other\"") && l.contains("operation=\"other\"")),
        "{series:#?}"
    );
    assert_eq!(counter(&metrics, "verdict_reviews_total{"), 200);
}

/// A pod spec of another shape than Kubernetes defines is denied with INVALID_REQUEST
/// naming the field, never judged as having no images.
#[tokio::test]
async fn malformed_pod_specs_are_denied_naming_the_field() {
    let server = Server::start();
    let client = server.client(true);
    let deployment = |spec: Value| {
        let mut review = pod_review("team-a", &[]);
        review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        review["request"]["object"] = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": spec});
        review
    };
    let pod = |spec: Value| {
        let mut review = pod_review("team-a", &[]);
        review["request"]["object"]["spec"] = spec;
        review
    };
    let mut over_a_pod = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    over_a_pod["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let mut wrong_version = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    wrong_version["request"]["object"]["apiVersion"] = json!("apps/v1");
    let cases = [
        (pod(Value::Null), "spec is not an object"),
        (
            pod(json!({"containers": "nginx:latest"})),
            "spec.containers is not a list",
        ),
        (
            pod(json!({"containers": ["nginx:latest"]})),
            "spec.containers[0] is not a container",
        ),
        (
            pod(json!({"containers": [{"name": "c", "image": ["nginx"]}]})),
            "spec.containers[0].image is not a string",
        ),
        (
            deployment(json!({"template": null})),
            "spec.template is not an object",
        ),
        (
            deployment(json!({"template": {"spec": {"initContainers": {"name": "i"}}}})),
            "spec.template.spec.initContainers is not a list",
        ),
        (
            over_a_pod,
            "request.kind.kind is \"Deployment\" but request.object.kind is \"Pod\"",
        ),
        (wrong_version, "request.object.apiVersion is \"apps/v1\""),
    ];
    for (review, want) in cases {
        let (status, body) = server.validate(&client, &review).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], false, "{want}: {body}");
        assert_eq!(codes(&body), ["INVALID_REQUEST"], "{want}: {body}");
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{want}: {message}");
    }
}

/// A body announced larger than the limit is refused before a byte of it is read.
#[tokio::test]
async fn an_oversized_content_length_is_refused_at_once() {
    let server = Server::start();
    for http2 in [false, true] {
        let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let response = server
            .client(http2)
            .post(server.url("/validate"))
            .header("content-type", "application/json")
            .header("content-length", "10000000000")
            .body(reqwest::Body::wrap_stream(never))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "http2: {http2}");
    }
}
