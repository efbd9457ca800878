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

/// An HTTPS POST of `review` over a fresh client that gives up after `limit`.
async fn validate_within(server: &Server, review: &Value, limit: Duration) -> Option<u16> {
    let client = common::client_trusting(&server.ca_pem, true);
    let sent = client
        .post(server.url("/validate"))
        .json(review)
        .timeout(limit)
        .send();
    sent.await.ok().map(|r| r.status().as_u16())
}

/// At `--max-connections`, new connections wait until one closes; at `--max-handshakes`,
/// new handshakes wait until one finishes.
#[tokio::test]
async fn connections_and_handshakes_are_capped() {
    use tokio::net::TcpStream;
    let review = pod_review("team-a", &["nginx:1.27"]);
    for (flag, held) in [("--max-connections", 3), ("--max-handshakes", 2)] {
        let server = Server::start_with(common::Options {
            extra_args: vec![flag.into(), held.to_string()],
            ..Default::default()
        });
        assert_eq!(
            validate_within(&server, &review, Duration::from_secs(10)).await,
            Some(200)
        );
        // Connections that never start their TLS handshake hold every slot.
        let mut idle = Vec::new();
        for _ in 0..held {
            idle.push(TcpStream::connect(server.admission).await.unwrap());
        }
        let gauge = if flag == "--max-connections" {
            "verdict_connections_open"
        } else {
            "verdict_tls_handshakes_in_progress"
        };
        let holding = common::eventually(Duration::from_secs(10), || async {
            counter(&server.metrics_text().await, gauge) == held as u64
        })
        .await;
        assert!(holding, "{gauge}: {}", server.metrics_text().await);
        let waited = validate_within(&server, &review, Duration::from_secs(2)).await;
        assert_eq!(
            waited, None,
            "{flag} {held}: a request got through past the cap"
        );
        drop(idle);
        assert_eq!(
            validate_within(&server, &review, Duration::from_secs(10)).await,
            Some(200),
            "{flag}: served again once the slots are free"
        );
    }
}

/// An HTTP/2 client that keeps its flow-control window shut but answers pings holds an
/// answer forever; the connection is closed after `--stall-timeout`.
#[tokio::test]
async fn an_answer_held_back_by_a_shut_window_closes_the_connection() {
    use rustls::pki_types::ServerName;
    let server = Server::start_with(common::Options {
        extra_args: vec!["--stall-timeout".into(), "2s".into()],
        ..Default::default()
    });
    let tcp = tokio::net::TcpStream::connect(server.admission)
        .await
        .unwrap();
    let tls = common::tls::connector(&server.ca_pem, b"h2")
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    // The connection task answers the server's pings all along.
    let connection = tokio::spawn(connection);
    let body = serde_json::to_vec(&pod_review("team-a", &["nginx:1.27"])).unwrap();
    let request = axum::http::Request::post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the headers pass; the body waits for the window"
    );
    let closed = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(closed.is_ok(), "the connection was still open after 30 s");
}

/// JSON and YAML nested past the limit are refused with 400 naming it, wherever the
/// nesting is and however deep.
#[tokio::test]
async fn nesting_past_the_limit_is_refused_naming_it() {
    let server = Server::start();
    let client = server.client(true);
    for depth in [200, 100_000] {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for path in ["annotations", "name"] {
            let mut review = pod_review("team-a", &["nginx:1.27"]);
            review["request"]["object"]["metadata"][path] = json!("PLACEHOLDER");
            let text = review.to_string().replace("\"PLACEHOLDER\"", &deep);
            let response = client
                .post(server.url("/validate"))
                .header("content-type", "application/json")
                .body(text)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path} {depth}");
            let error = response.text().await.unwrap();
            assert!(
                error.contains("more than 127 levels"),
                "{path} {depth}: {error}"
            );
        }
    }
    for body in [
        format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("x: {}1{}\n", "{a: ".repeat(50_000), "}".repeat(50_000)),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    ] {
        let response = client
            .post(server.url("/v1/check"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error = response.text().await.unwrap();
        assert!(error.contains("more than 127 levels"), "{error}");
    }
}

/// Reviews past the per-object image cap are denied with TOO_MANY_IMAGES; answers list at
/// most 50 reasons; a dry run of too many objects is refused unjudged.
#[tokio::test]
async fn work_per_request_is_capped() {
    let server = Server::start();
    let client = server.client(true);
    let many: Vec<String> = (0..30_000)
        .map(|i| format!("registry.example.com/app{i}:1.0"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, body) = server.validate(&client, &pod_review("team-a", &many)).await;
    assert_eq!(status, 200);
    assert_eq!(
        codes(&body),
        ["TOO_MANY_IMAGES"],
        "{}",
        body["response"]["status"]
    );

    // 200 images, each denied by the shipped tag policy: 50 listed, the rest counted.
    let latest: Vec<String> = (0..200).map(|i| format!("nginx{i}")).collect();
    let latest: Vec<&str> = latest.iter().map(String::as_str).collect();
    let (_, body) = server
        .validate(&client, &pod_review("team-a", &latest))
        .await;
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(codes(&body).len(), 50, "{message}");
    assert!(message.contains("more (run a dry run"), "{message}");

    let pods: String = (0..1500)
        .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  containers: [{{name: c, image: nginx}}]\n---\n"))
        .collect();
    let response = client
        .post(server.url("/v1/check"))
        .body(pods)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.text().await.unwrap().contains("at most 1000"));
}

/// The worst dry runs at once: some are turned away (429), and /validate keeps answering
/// meanwhile. The latency it keeps is a benchmark figure, printed here, not asserted.
#[tokio::test]
async fn dry_runs_never_starve_admission() {
    let server = Server::start();
    let client = server.client(true);
    let worst = [
        format!("x: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        (0..900)
            .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  containers: [{{name: c, image: 'nginx:1.{i}'}}]\n---\n"))
            .collect(),
    ];
    let dry_runs: Vec<_> = (0..6)
        .map(|i| {
            let client = client.clone();
            let url = server.url("/v1/check");
            let body = worst[i % worst.len()].clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let review = pod_review("team-a", &["nginx:1.27"]);
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let (status, _) = server.validate(&client, &review).await;
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
    }
    let statuses: Vec<u16> = futures_util::future::join_all(dry_runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        statuses.iter().all(|s| [200, 400, 429].contains(s)),
        "{statuses:?}"
    );
    println!("slowest of 50 /validate reviews during 6 worst-case dry runs: {slowest:?}; dry runs: {statuses:?}");
}
