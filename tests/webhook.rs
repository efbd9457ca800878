//! `/validate` and `/v1/check` through the real server over HTTPS (HTTP/2 and HTTP/1.1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{codes, fixture, pod_review, read_json, Options, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What the shipped policies must answer for each captured review.
/// `None` = not an AdmissionReview (HTTP 400).
/// (fixture, expected: (allowed, reason codes) or `None` for HTTP 400)
type Expectation = (&'static str, Option<(bool, &'static [&'static str])>);

fn expected_fixture_answers() -> Vec<Expectation> {
    vec![
        (
            "admission/apiserver-1.20/0006-Pod-CREATE.json",
            Some((true, &[])),
        ),
        (
            "admission/apiserver-1.20/0009-Pod-CREATE.json",
            Some((false, &["DIGEST_REQUIRED", "REGISTRY_NOT_ALLOWED"])),
        ),
        (
            "admission/apiserver-1.20/0015-Deployment-CREATE.json",
            Some((true, &[])),
        ),
        (
            "admission/apiserver-1.20/0025-CronJob-CREATE.json",
            Some((true, &[])),
        ),
        (
            "admission/kube-rs/gke_pod_create_admission_review.json",
            Some((false, &["IMAGE_TAG_LATEST"])),
        ),
        // Placeholder values everywhere (operation "operationValue"): cannot be judged.
        (
            "admission/kubernetes/admission.k8s.io.v1.AdmissionReview.json",
            Some((false, &["INVALID_REQUEST"])),
        ),
        (
            "admission/kubewarden/kwctl__privileged-pod-admission-review.json",
            Some((false, &["IMAGE_TAG_LATEST", "IMAGE_TAG_LATEST"])),
        ),
        (
            "admission/kubewarden/kwctl__unprivileged-pod-admission-review.json",
            Some((false, &["IMAGE_TAG_LATEST", "IMAGE_TAG_LATEST"])),
        ),
        // Bare AdmissionRequests, not reviews.
        (
            "admission/kubewarden/policy-evaluator__pod_creation_flux_cat.json",
            None,
        ),
        (
            "admission/kubewarden/policy-evaluator__pod_with_privileged_containers.json",
            None,
        ),
        (
            "admission/kubewarden/policy-evaluator__service_clusterip.json",
            None,
        ),
        (
            "admission/kubewarden/policy-server__deployment_admission_review.json",
            Some((true, &[])),
        ),
        (
            "admission/kubewarden/policy-server__pod_sleep_100ms.json",
            Some((false, &["IMAGE_TAG_LATEST"])),
        ),
        (
            "admission/kubewarden/policy-server__pod_with_privileged_containers.json",
            Some((false, &["IMAGE_TAG_LATEST", "IMAGE_TAG_LATEST"])),
        ),
        (
            "admission/kubewarden/policy-server__pod_without_privileged_containers.json",
            Some((false, &["IMAGE_TAG_LATEST", "IMAGE_TAG_LATEST"])),
        ),
    ]
}

#[tokio::test]
async fn answers_every_captured_review_under_shipped_policies_over_h2_and_h1() {
    // Namespace `prod` labelled as a synced cluster would have it, from an offline
    // inventory file (a Kubernetes object under inventory/).
    let policies = tempfile::tempdir().unwrap();
    common::copy_dir(&common::repo().join("policies"), policies.path());
    std::fs::create_dir_all(policies.path().join("inventory")).unwrap();
    std::fs::write(
        policies.path().join("inventory/namespaces.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels: {verdict.dev/require-digest: 'true'}\n",
    )
    .unwrap();
    let server = Server::start_with(common::Options {
        policies: policies.path().to_path_buf(),
        ..Default::default()
    });
    let expected = expected_fixture_answers();
    let listed: Vec<_> = expected.iter().map(|(f, _)| fixture(f)).collect();
    for dir in ["apiserver-1.20", "kube-rs", "kubernetes", "kubewarden"] {
        for entry in std::fs::read_dir(fixture(&format!("admission/{dir}"))).unwrap() {
            assert!(
                listed.contains(&entry.unwrap().path()),
                "a fixture has no expected answer in this test"
            );
        }
    }
    for http2 in [true, false] {
        let client = server.client(http2);
        for (file, want) in &expected {
            let review = read_json(&fixture(file));
            let (status, body) = server.validate(&client, &review).await;
            match want {
                None => {
                    assert_eq!(status, 400, "{file}: {body}");
                    assert!(
                        body["error"]
                            .as_str()
                            .unwrap()
                            .contains("not an AdmissionReview"),
                        "{file}: {body}"
                    );
                }
                Some((allowed, want_codes)) => {
                    assert_eq!(status, 200, "{file}: {body}");
                    assert_eq!(body["apiVersion"], review["apiVersion"], "{file}");
                    assert_eq!(body["kind"], "AdmissionReview");
                    let response = &body["response"];
                    assert_eq!(response["uid"], review["request"]["uid"], "{file}");
                    assert_eq!(response["allowed"], *allowed, "{file}: {body}");
                    assert_eq!(codes(&body), *want_codes, "{file}: {body}");
                    if !allowed {
                        assert_eq!(response["status"]["code"], 403, "{file}");
                        assert_eq!(response["status"]["reason"], "Forbidden", "{file}");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn denial_names_container_image_code_and_remedy() {
    let server = Server::start();
    let (_, body) = server
        .validate(&server.client(true), &pod_review("team-a", &["nginx"]))
        .await;
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("verdict denied Pod team-a/p:"),
        "{message}"
    );
    for part in [
        "container \"c0\"",
        "\"nginx\"",
        "[IMAGE_TAG_LATEST]",
        "Pin a version tag",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
}

#[tokio::test]
async fn denies_unparseable_image_references_with_invalid_image_ref() {
    let server = Server::start();
    let review = pod_review(
        "team-a",
        &["ghcr.io/acme/app:v1", "UPPER/Case:1", "nginx:-bad"],
    );
    let (status, body) = server.validate(&server.client(true), &review).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(codes(&body), ["INVALID_IMAGE_REF", "INVALID_IMAGE_REF"]);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("container \"c1\" image \"UPPER/Case:1\""),
        "{message}"
    );
    assert!(message.contains("spec.containers[2].image"), "{message}");
}

#[tokio::test]
async fn rejects_what_is_not_a_review_with_json_errors() {
    let server = Server::start_with(Options {
        extra_args: vec!["--read-timeout".into(), "1s".into()],
        ..Options::default()
    });
    let client = server.client(true);
    let post = |body: Vec<u8>, content_type: &'static str| {
        client
            .post(server.url("/validate"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            b"{not json".to_vec(),
            "application/json",
            400,
            "not valid JSON",
        ),
        (
            b"{\"kind\":\"Pod\"}".to_vec(),
            "application/json",
            400,
            "not an AdmissionReview",
        ),
        (b"{}".to_vec(), "text/plain", 415, "application/json"),
        (
            vec![b' '; 3 * 1024 * 1024 + 1],
            "application/json",
            413,
            "larger than",
        ),
    ];
    for (body, content_type, want_status, want_text) in cases {
        let response = post(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), want_status);
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(want_text),
            "{error}"
        );
        assert_eq!(error["status"], want_status);
    }

    // A body that never finishes is cut off by the read timeout.
    let (sender, body) = futures_channel();
    let slow = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    sender.send(Ok(bytes_of("{\"apiVersion\":"))).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status().as_u16(), 408);
    drop(sender);
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

fn futures_channel() -> (
    tokio::sync::mpsc::Sender<Chunk>,
    tokio_stream::wrappers::ReceiverStream<Chunk>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn bytes_of(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn refuses_reviews_without_request_or_object() {
    let server = Server::start();
    let client = server.client(false);
    let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let mut null_object = pod_review("team-a", &["nginx:1"]);
    null_object["request"]["object"] = Value::Null;
    let mut no_object = pod_review("team-a", &["nginx:1"]);
    no_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");
    for (review, want) in [
        (no_request, "no request"),
        (null_object, "request.object"),
        (no_object, "request.object"),
    ] {
        let (status, body) = server.validate(&client, &review).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], false, "{body}");
        assert_eq!(codes(&body), ["INVALID_REQUEST"]);
        assert!(
            body["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains(want),
            "{body}"
        );
    }
}

fn policies_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const CLASSIC_REGISTRY: &str = r#"package kubernetes.admission

deny[msg] {
  input.request.kind.kind == "Pod"
  image := input.request.object.spec.containers[_].image
  not startswith(image, "hooli.com/")
  msg := sprintf("image '%v' comes from untrusted registry", [image])
}
"#;

const CLASSIC_LABELS: &str = r#"package kubernetes.admission

import rego.v1

deny contains msg if {
  input.request.kind.kind == "Pod"
  not input.request.object.metadata.labels.team
  msg := "every Pod needs a team label"
}

warn contains msg if {
  input.request.kind.kind == "Pod"
  input.request.namespace == "default"
  msg := "the default namespace is for experiments"
}
"#;

#[tokio::test]
async fn classic_opa_admission_policies_work_unchanged() {
    let policies = policies_with(&[
        ("registry.rego", CLASSIC_REGISTRY),
        ("labels.rego", CLASSIC_LABELS),
    ]);
    let server = Server::start_with(Options {
        policies: policies.path().to_path_buf(),
        ..Options::default()
    });
    let client = server.client(true);

    let (_, body) = server
        .validate(&client, &pod_review("default", &["nginx:1"]))
        .await;
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        message.contains("image 'nginx:1' comes from untrusted registry"),
        "{message}"
    );
    assert!(
        message.contains("every Pod needs a team label"),
        "{message}"
    );
    assert_eq!(
        body["response"]["warnings"],
        json!(["[POLICY_WARNING] the default namespace is for experiments"])
    );

    let mut good = pod_review("team-a", &["hooli.com/app:1"]);
    good["request"]["object"]["metadata"]["labels"] = json!({"team": "a"});
    let (_, body) = server.validate(&client, &good).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"].get("warnings").is_none(), "{body}");
}

#[tokio::test]
async fn warn_only_admits_and_says_what_it_would_deny() {
    let server = Server::start_with(Options {
        extra_args: vec!["--warn-only".to_string()],
        ..Options::default()
    });
    let (status, body) = server
        .validate(
            &server.client(true),
            &pod_review("team-a", &["nginx:latest"]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let warnings = body["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.starts_with("[IMAGE_TAG_LATEST] would deny: ") && w.contains("nginx:latest")
        }),
        "{body}"
    );
}

#[tokio::test]
async fn kinds_without_images_are_judged_by_rego_alone() {
    let policy = "package cm\n\ndeny contains \"ConfigMaps named forbidden are forbidden\" if {\n  input.request.kind.kind == \"ConfigMap\"\n  input.request.object.metadata.name == \"forbidden\"\n  count(input.images) == 0\n}\n";
    let policies = policies_with(&[("cm.rego", policy)]);
    let server = Server::start_with(Options {
        policies: policies.path().to_path_buf(),
        ..Options::default()
    });
    let client = server.client(false);
    let review = |name: &str| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": name, "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": "team-a", "operation": "CREATE", "userInfo": {"username": "u"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}}})
    };
    let (_, denied) = server.validate(&client, &review("forbidden")).await;
    assert_eq!(denied["response"]["allowed"], false);
    assert_eq!(codes(&denied), ["POLICY_DENIED"]);
    let (_, allowed) = server.validate(&client, &review("fine")).await;
    assert_eq!(allowed["response"]["allowed"], true);
}

const RUNAWAY: &str = "package slow\n\ndeny contains \"never\" if {\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  i + j < 0\n}\n";

#[tokio::test]
async fn runaway_policy_is_denied_with_policy_timeout() {
    let policies = policies_with(&[("slow.rego", RUNAWAY)]);
    let server = Server::start_with(Options {
        policies: policies.path().to_path_buf(),
        extra_args: vec!["--policy-timeout".into(), "200ms".into()],
    });
    let (status, body) = server
        .validate(&server.client(true), &pod_review("team-a", &["nginx:1"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(codes(&body), ["POLICY_TIMEOUT"]);
}

/// Pods that differ only in what the policies never read (uid, name) reuse the findings of
/// the first; the answer still names each Pod. Anything read that differs is evaluated anew.
#[tokio::test]
async fn identical_inputs_reuse_findings_and_answers_stay_per_review() {
    let server = Server::start();
    let client = server.client(true);
    let pod = |uid: &str, name: &str, namespace: &str| {
        let mut review = pod_review(namespace, &["nginx:latest"]);
        review["request"]["uid"] = json!(uid);
        review["request"]["object"]["metadata"]["name"] = json!(name);
        review
    };
    let (_, first) = server
        .validate(&client, &pod("u1", "web-1", "team-a"))
        .await;
    let (_, second) = server
        .validate(&client, &pod("u2", "web-2", "team-a"))
        .await;
    let (_, elsewhere) = server
        .validate(&client, &pod("u3", "web-3", "team-b"))
        .await;
    for (review, uid, name, namespace) in [
        (&first, "u1", "web-1", "team-a"),
        (&second, "u2", "web-2", "team-a"),
        (&elsewhere, "u3", "web-3", "team-b"),
    ] {
        assert_eq!(review["response"]["uid"], uid);
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(codes(review), codes(&first), "{review}");
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("Pod {namespace}/{name}")),
            "{message}"
        );
    }
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("verdict_policy_decision_cache_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("verdict_policy_decision_cache_total{result=\"miss\"} 2"),
        "{metrics}"
    );
}

/// Decision lines are written in batches (handed to the log writer when a worker runs out of
/// work or 16 KB wait): after a burst of concurrent reviews, every review has exactly one
/// whole line.
#[tokio::test]
async fn every_review_of_a_burst_gets_one_whole_decision_line() {
    let server = Server::start();
    let client = server.client(false);
    const REVIEWS: usize = 300;
    let sent = futures_util::future::join_all((0..REVIEWS).map(|i| {
        let (server, client) = (&server, &client);
        async move {
            let mut review = pod_review("team-a", &["nginx:latest"]);
            review["request"]["uid"] = json!(format!("burst-{i}"));
            server.validate(client, &review).await.0
        }
    }))
    .await;
    assert!(sent.iter().all(|status| *status == 200), "{sent:?}");
    let uids: Vec<String> = server
        .decision_lines(REVIEWS)
        .await
        .iter()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            line["uid"].as_str().unwrap().to_string()
        })
        .filter(|uid| uid.starts_with("burst-"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = uids.iter().collect();
    assert_eq!(distinct.len(), uids.len(), "a review logged twice");
    assert_eq!(
        uids.len(),
        REVIEWS,
        "{} of {REVIEWS} decision lines",
        uids.len()
    );
}

/// A policy that is slow for some reviews runs on the blocking pool, so reviews it is quick
/// for are answered meanwhile, even with every worker thread's worth of slow ones in flight.
#[tokio::test]
async fn slow_evaluations_do_not_hold_up_quick_ones() {
    let slow = "package slow\n\ndeny contains \"never\" if {\n  input.request.namespace == \"slow\"\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  i + j < 0\n}\n";
    let policies = policies_with(&[("slow.rego", slow)]);
    let server = Server::start_with(Options {
        policies: policies.path().to_path_buf(),
        extra_args: vec!["--policy-timeout".into(), "3s".into()],
    });
    let client = server.client(true);
    let slow_reviews: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/validate?timeout=10s"));
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&pod_review("slow", &["nginx:1"]))
                    .send()
                    .await
                    .unwrap();
                response.json::<Value>().await.unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, quick) = server
        .validate(&client, &pod_review("team-a", &["nginx:1"]))
        .await;
    assert_eq!(
        (status, &quick["response"]["allowed"]),
        (200, &json!(true)),
        "{quick}"
    );
    assert!(
        slow_reviews.iter().all(|r| !r.is_finished()),
        "the quick review waited for the slow ones"
    );
    for review in slow_reviews {
        assert_eq!(codes(&review.await.unwrap()), ["POLICY_TIMEOUT"]);
    }
}

#[tokio::test]
async fn answers_before_the_api_server_timeout() {
    let policies = policies_with(&[("slow.rego", RUNAWAY)]);
    let server = Server::start_with(Options {
        policies: policies.path().to_path_buf(),
        extra_args: vec!["--policy-timeout".into(), "30s".into()],
    });
    let started = Instant::now();
    let response = server
        .client(true)
        .post(server.url("/validate?timeout=2s"))
        .header("content-type", "application/json")
        .json(&pod_review("team-a", &["nginx:1"]))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after the API server gave up"
    );
    assert_eq!(body["response"]["allowed"], false);
    let got = codes(&body);
    assert!(got == ["POLICY_TIMEOUT"] || got == ["TIMEOUT"], "{body}");
}

#[tokio::test]
async fn dry_run_reports_messages_images_and_timings() {
    let server = Server::start();
    let manifests = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team-a}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: app, image: nginx}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: ok, namespace: team-a}\nspec:\n  containers:\n  - {name: app, image: 'ghcr.io/acme/app:v1'}\n";
    let client = server.client(true);
    let report = server.dry_run(&client, manifests).await;
    assert_eq!(report["decision"], "deny");
    assert_eq!(report["allowed"], false);
    let web = &report["objects"][0];
    assert_eq!(web["object"], "Deployment team-a/web");
    assert_eq!(web["decision"], "deny");
    let message = &web["messages"][0];
    assert_eq!(message["code"], "IMAGE_TAG_LATEST");
    assert_eq!(message["origin"]["rule"], "data.verdict.images.tags.deny");
    assert!(message["origin"]["files"][0]
        .as_str()
        .unwrap()
        .ends_with("images/tags.rego"));
    let image = &web["images"][0];
    assert_eq!(image["path"], "spec.template.spec.containers[0].image");
    assert_eq!(image["registry"], "docker.io");
    assert_eq!(image["repository"], "library/nginx");
    assert_eq!(image["tag"], "latest");
    assert!(web["timings"]["total_us"].as_u64().is_some());
    assert_eq!(report["objects"][1]["decision"], "allow");

    let text = server.dry_run_text(&client, manifests).await;
    assert!(text.starts_with("DENIED (2 object(s), 1 denied)"), "{text}");
    assert!(
        text.contains("from data.verdict.images.tags.deny in"),
        "{text}"
    );

    let bad = client
        .post(server.url("/v1/check"))
        .body("a: [")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

#[tokio::test]
async fn exposes_metrics_health_and_readiness_on_the_plain_port() {
    let server = Server::start();
    let client = server.client(true);
    server
        .validate(&client, &pod_review("team-a", &["nginx"]))
        .await;
    server
        .validate(&client, &pod_review("team-a", &["nginx:1.27"]))
        .await;
    let metrics = server.metrics_text().await;
    for line in [
        "verdict_reviews_total{decision=\"deny\",kind=\"Pod\",operation=\"CREATE\"} 1",
        "verdict_reviews_total{decision=\"allow\",kind=\"Pod\",operation=\"CREATE\"} 1",
        "verdict_review_duration_seconds_count{endpoint=\"validate\"} 2",
        "verdict_policy_evaluation_duration_seconds_count 2",
        "verdict_reviews_in_flight 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    for (gauge, at_least_days) in [
        ("verdict_serving_certificate_expiry_timestamp_seconds ", 0.0),
        ("verdict_trust_root_expiry_timestamp_seconds ", 365.0),
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(gauge))
            .unwrap_or_else(|| panic!("{gauge} missing from\n{metrics}"))
            .parse()
            .unwrap();
        assert!(value > now + at_least_days * 86400.0, "{gauge}{value}");
    }
    let health: Value = reqwest::get(server.metrics_url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(server.metrics_url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["policies"]["files"].as_array().unwrap().len(), 5);
    // No plaintext admission: the TLS port does not speak HTTP.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/validate", server.admission))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status().as_u16() >= 400);
    // One JSON log line per decision.
    let decisions = server.decision_lines(2).await;
    assert_eq!(decisions.len(), 2, "{}", server.logs());
    let line = decisions
        .iter()
        .find(|l| l.contains("\"decision\":\"deny\""))
        .unwrap()
        .clone();
    let line: Value = serde_json::from_str(&line).unwrap();
    for field in [
        "uid",
        "namespace",
        "kind",
        "name",
        "operation",
        "reasons",
        "duration_ms",
    ] {
        assert!(!line[field].is_null(), "{field} missing from {line}");
    }
}

/// A client that connects and stalls (before or after its TLS handshake, part-way through
/// the HTTP/2 preface or a request's headers, or on the plain port) is disconnected once
/// the 10-second handshake limit passes, instead of holding its connection for good; and
/// the server still answers afterwards.
#[tokio::test]
async fn stalled_connections_are_closed() {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let server = Server::start();
    // Waits for the server to end the connection; what it sends first does not matter.
    async fn closed(mut stream: impl AsyncRead + Unpin) {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    }
    let after_handshake = |alpn: &'static [u8], sent: &'static [u8]| {
        let connector = common::tls::connector(&server.ca_pem, alpn);
        let addr = server.admission;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut stream = connector.connect(name, tcp).await.unwrap();
            stream.write_all(sent).await.unwrap();
            stream.flush().await.unwrap();
            closed(stream).await;
        }
    };
    let silent_tcp = |addr| async move { closed(TcpStream::connect(addr).await.unwrap()).await };
    let half_head = |addr| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        closed(tcp).await;
    };

    let started = Instant::now();
    let stalls: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = vec![
        Box::pin(silent_tcp(server.admission)),
        Box::pin(after_handshake(b"", b"")),
        Box::pin(after_handshake(b"http/1.1", b"")),
        Box::pin(after_handshake(b"h2", b"")),
        Box::pin(after_handshake(b"h2", b"PRI * HTTP/2.0\r\n")),
        Box::pin(after_handshake(
            b"http/1.1",
            b"POST /validate HTTP/1.1\r\nhost: x\r\n",
        )),
        Box::pin(silent_tcp(server.metrics)),
        Box::pin(half_head(server.metrics)),
    ];
    // Each stall is timed to its own close.
    let all = futures_util::future::join_all(stalls.into_iter().map(|stall| async move {
        stall.await;
        started.elapsed()
    }));
    let closed_after = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every stalled connection is closed within the handshake limit");
    for (i, after) in closed_after.iter().enumerate() {
        assert!(
            *after >= Duration::from_secs(9),
            "stall {i} was closed after {after:?}, before the 10-second limit"
        );
    }
    // Still serving.
    let (status, _) = server
        .validate(&server.client(true), &pod_review("team-a", &["nginx:1.27"]))
        .await;
    assert_eq!(status, 200);
}
