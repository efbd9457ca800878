//! Registry faults, injected by a proxy in front of the real registry: every failure is a
//! denial with its reason code, deadlines hold, and one bad registry slows nobody else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::faults::{Fault, FaultProxy};
use common::registry::{payload, TestKey, TestRegistry};
use common::{codes, pod_review, Options, Server};
use serde_json::Value;
use sigstore::crypto::SigningScheme;
use std::time::{Duration, Instant};

struct Setup {
    registry: TestRegistry,
    proxy: FaultProxy,
    server: Server,
    key: TestKey,
    _policies: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let registry = TestRegistry::start().await;
        let proxy = FaultProxy::start(&registry.host).await;
        let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
        let policies = tempfile::tempdir().unwrap();
        let policy = "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: signed}\nspec:\n  images: [{glob: '127.0.0.1:*/**'}]\n  authorities:\n  - key: {file: k.pub}\n";
        std::fs::write(policies.path().join("images.yaml"), policy).unwrap();
        std::fs::write(policies.path().join("k.pub"), &key.public_pem).unwrap();
        let server = Server::start_with(Options {
            policies: policies.path().to_path_buf(),
            extra_args: vec![
                "--insecure-registry".into(),
                format!("{},{}", proxy.host, registry.host),
                // Faults are per request: never reuse a resolution across cases.
                "--tag-cache-ttl".into(),
                "0".into(),
            ],
        });
        Self {
            registry,
            proxy,
            server,
            key,
            _policies: policies,
        }
    }

    /// A signed image in the registry, named through the proxy.
    async fn signed(&self, repo: &str) -> String {
        let digest = self.registry.push_image(repo, "v1").await;
        let layer = self.key.layer(payload(repo, &digest));
        self.registry.push_signatures(repo, &digest, &[layer]).await;
        format!("{}/{repo}:v1", self.proxy.host)
    }

    async fn review_within(&self, image: &str, timeout: &str) -> (Value, Duration) {
        let started = Instant::now();
        let body: Value = self
            .server
            .client(true)
            .post(self.server.url(&format!("/validate?timeout={timeout}")))
            .json(&pod_review("team-a", &[image]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (body, started.elapsed())
    }
}

fn message(body: &Value) -> String {
    body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_registry_failure_is_a_denial_with_its_reason_code() {
    let setup = Setup::new().await;
    let cases = [
        (Fault::Status(500), "REGISTRY_ERROR", "HTTP 500"),
        (Fault::Status(503), "REGISTRY_ERROR", "HTTP 503"),
        (Fault::Status(401), "REGISTRY_AUTH", "refused access"),
        (Fault::Reset, "REGISTRY_UNREACHABLE", "unreachable"),
        (
            Fault::TooManyRequests {
                retry_after_secs: 3600,
                times: 100,
            },
            "REGISTRY_ERROR",
            "rate limiting",
        ),
        (Fault::Truncate, "REGISTRY_ERROR", "cut off"),
        (
            Fault::Inflate(8 * 1024 * 1024),
            "REGISTRY_ERROR",
            "larger than",
        ),
        (Fault::Garble, "REGISTRY_ERROR", "unusable"),
    ];
    for (i, (fault, want, text)) in cases.into_iter().enumerate() {
        let image = setup.signed(&format!("faults/case{i}")).await;
        setup.proxy.set(fault.clone());
        let (body, _) = setup.review_within(&image, "10s").await;
        assert_eq!(body["response"]["allowed"], false, "{fault:?}: {body}");
        assert_eq!(codes(&body), [want], "{fault:?}: {}", message(&body));
        assert!(
            message(&body).contains(text),
            "{fault:?}: {}",
            message(&body)
        );
        assert!(
            message(&body).contains(&setup.proxy.host),
            "names the registry: {}",
            message(&body)
        );
        setup.proxy.set(Fault::Pass);
        let (body, _) = setup.review_within(&image, "10s").await;
        assert_eq!(
            body["response"]["allowed"], true,
            "after {fault:?} the failure is not cached: {body}"
        );
    }
}

#[tokio::test]
async fn honours_retry_after_within_the_deadline() {
    let setup = Setup::new().await;
    let image = setup.signed("faults/retry").await;
    setup.proxy.set(Fault::TooManyRequests {
        retry_after_secs: 1,
        times: 1,
    });
    let (body, _) = setup.review_within(&image, "10s").await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
}

#[tokio::test]
async fn a_slow_registry_becomes_a_timeout_denial_before_the_api_server_gives_up() {
    let setup = Setup::new().await;
    let image = setup.signed("faults/slow").await;
    setup.proxy.set(Fault::Delay(Duration::from_secs(8)));
    let (body, elapsed) = setup.review_within(&image, "2s").await;
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after the API server's timeout: {elapsed:?}"
    );
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(codes(&body), ["TIMEOUT"]);
    assert!(
        message(&body).contains(&setup.proxy.host),
        "the timeout names the registry: {}",
        message(&body)
    );
}

#[tokio::test]
async fn one_slow_registry_does_not_slow_reviews_of_images_elsewhere() {
    let setup = Setup::new().await;
    let slow_image = setup.signed("faults/slow-one").await;
    let repo = "faults/direct";
    let digest = setup.registry.push_image(repo, "v1").await;
    setup
        .registry
        .push_signatures(repo, &digest, &[setup.key.layer(payload(repo, &digest))])
        .await;
    let direct_image = format!("{}/{repo}:v1", setup.registry.host);
    setup.proxy.set(Fault::Delay(Duration::from_secs(6)));

    let slow = {
        let client = setup.server.client(true);
        let url = setup.server.url("/validate?timeout=5s");
        let review = pod_review("team-a", &[&slow_image]);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&review)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // While the slow review waits on its registry, reviews of other images are answered.
    for _ in 0..5 {
        let (body, _) = setup.review_within(&direct_image, "5s").await;
        assert_eq!(body["response"]["allowed"], true, "{body}");
        assert!(
            !slow.is_finished(),
            "the slow review should still be waiting on its registry"
        );
    }
    let slow = slow.await.unwrap();
    assert_eq!(codes(&slow), ["TIMEOUT"]);
}
