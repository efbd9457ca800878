//! Image provenance end to end: a real `docker-registry`, signatures made by the tests with
//! real keys and a private Sigstore, and the real server judging over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::provenance::*;
use common::registry::{
    payload, Keyless, PrivateSigstore, SignatureLayer, TestKey, TestRegistry, B64,
};
use common::{codes, eventually, pod_review, Options, Server};
use serde_json::{json, Value};
use sigstore::crypto::SigningScheme;
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn admits_images_signed_with_every_supported_key_type() {
    let schemes = [
        ("p256", SigningScheme::ECDSA_P256_SHA256_ASN1, ""),
        ("p384", SigningScheme::ECDSA_P384_SHA384_ASN1, ""),
        ("rsa-pkcs1", SigningScheme::RSA_PKCS1_SHA256(2048), ""),
        (
            "rsa-pss",
            SigningScheme::RSA_PSS_SHA256(2048),
            ", signingScheme: RSA_PSS_SHA256",
        ),
        ("ed25519", SigningScheme::ED25519, ""),
    ];
    let keys: Vec<(&str, TestKey, &str)> = schemes
        .into_iter()
        .map(|(n, s, extra)| (n, TestKey::generate(s), extra))
        .collect();
    let policies: Vec<String> = keys
        .iter()
        .map(|(n, _, extra)| {
            key_policy(
                n,
                &format!("HOST/keyed/{n}"),
                &format!("keys/{n}.pub"),
                extra,
            )
        })
        .collect();
    let files: Vec<(String, String)> = keys
        .iter()
        .map(|(n, k, _)| (format!("keys/{n}.pub"), k.public_pem.clone()))
        .collect();
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let setup = Setup::new(&policies.join("---\n"), &files, &[]).await;
    let mut images = Vec::new();
    for (name, key, _) in &keys {
        let repo = format!("keyed/{name}");
        setup.signed_image(&repo, |p| key.layer(p)).await;
        images.push(setup.image(&repo, "v1"));
    }
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let body = setup.review(&images).await;
    assert!(allowed(&body), "{body}");
    let report = setup.check(&images).await;
    for (i, image) in report["objects"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(image["verified"], true, "{}: {image}", keys[i].0);
        assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(
            image["signatures"][0]["authority"],
            format!("{}/key", keys[i].0)
        );
    }
}

/// The keys of the keyed negative cases: the policy trusts `key` only.
struct Keys {
    key: TestKey,
    other: TestKey,
}

/// The signature layer a keyed case pushes for an image (its reference and digest), if any.
type MakeKeyed = fn(&Keys, &str, &str) -> Option<SignatureLayer>;

#[tokio::test]
async fn denies_unsigned_wrong_key_tampered_and_mismatched_signatures() {
    let keys = Keys {
        key: TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1),
        other: TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1),
    };
    let setup = Setup::new(
        &key_policy("signed", "HOST/app/**", "keys/cosign.pub", ""),
        &[("keys/cosign.pub", keys.key.public_pem.clone())],
        &[],
    )
    .await;
    let cases: [(&str, &str, MakeKeyed); 4] = [
        ("app/unsigned", "NO_SIGNATURE", |_, _, _| None),
        ("app/wrong-key", "UNTRUSTED_KEY", |k, r, d| {
            Some(k.other.layer(payload(r, d)))
        }),
        ("app/tampered", "UNTRUSTED_KEY", |k, r, d| {
            let mut layer = k.key.layer(payload(r, d));
            layer.payload = String::from_utf8(layer.payload)
                .unwrap()
                .replace("null", "{\"evil\":true}")
                .into_bytes();
            Some(layer)
        }),
        // A signature over another digest than the image's.
        ("app/mismatch", "DIGEST_MISMATCH", |k, r, _| {
            let elsewhere = format!("sha256:{}", "1".repeat(64));
            Some(k.key.layer(payload(r, &elsewhere)))
        }),
    ];
    for (repo, _, make) in &cases {
        let digest = setup.registry.push_image(repo, "v1").await;
        let reference = format!("{}/{repo}", setup.registry.host);
        if let Some(layer) = make(&keys, &reference, &digest) {
            setup
                .registry
                .push_signatures(repo, &digest, &[layer])
                .await;
        }
    }

    for (repo, want, _) in cases {
        let image = setup.image(repo, "v1");
        let body = setup.review(&[&image]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(codes(&body), [want], "{repo}: {body}");
        let text = message(&body);
        assert!(
            text.contains("container \"c0\"") && text.contains(&image),
            "{text}"
        );
        assert!(
            text.contains("sha256:") && text.contains("Reproduce with: cosign verify"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn admits_keyless_signature_from_release_workflow() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = Setup::new(
        &keyless_policy(RELEASE_IDENTITY, "enforce"),
        &trust_files(&sigstore),
        &[],
    )
    .await;
    let digest = setup.registry.push_image("keyless/app", "v1").await;
    let signed = sigstore.sign(payload("x", &digest), &Keyless::default());
    setup
        .registry
        .push_signatures("keyless/app", &digest, &[signed.layer])
        .await;
    let image = setup.image("keyless/app", "v1");
    let body = setup.review(&[&image]).await;
    assert!(allowed(&body), "{body}");
    let report = setup.check(&[&image]).await;
    let facts = &report["objects"][0]["images"][0];
    assert_eq!(facts["verified"], true);
    assert_eq!(facts["digest"], digest);
    let signature = &facts["signatures"][0];
    assert_eq!(signature["authority"], "release/github-release");
    assert!(signature["identity"]
        .as_str()
        .unwrap()
        .contains("refs/tags/v1.0.0"));
    assert!(signature["rekor_log_index"].as_i64().is_some());
    assert!(signature["rekor_integrated_time"].as_i64().unwrap() > 1_700_000_000);
}

/// The signers of the keyless negative cases: the policy trusts `sigstore` only.
struct Signers {
    sigstore: PrivateSigstore,
    stranger: PrivateSigstore,
    key: TestKey,
}

/// The signature layer a keyless case pushes for an image of this digest.
type MakeKeyless = fn(&Signers, &str) -> SignatureLayer;

/// A layer whose certificate is issued by `ca`, logged in `sigstore`'s Rekor for `logged`.
fn logged_layer(
    ca: &PrivateSigstore,
    sigstore: &PrivateSigstore,
    digest: &str,
    logged: Option<&[u8]>,
) -> SignatureLayer {
    let (cert, cert_key) = ca.issue(&Keyless::default());
    let p = payload("x", digest);
    let signature = rcgen::SigningKey::sign(&cert_key, &p).unwrap();
    let bundle = sigstore.bundle(
        logged.unwrap_or(&p),
        &signature,
        &cert,
        time::OffsetDateTime::now_utc().unix_timestamp() - 60,
    );
    layer_of(p, &signature, Some(&cert), Some(&bundle))
}

#[tokio::test]
async fn keyless_negative_cases_each_get_their_reason_code() {
    let signers = Signers {
        sigstore: PrivateSigstore::new("acme"),
        stranger: PrivateSigstore::new("stranger"),
        key: TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1),
    };
    let setup = Setup::new(
        &keyless_policy(RELEASE_IDENTITY, "enforce"),
        &trust_files(&signers.sigstore),
        &[],
    )
    .await;
    let cases: [(&str, &str, MakeKeyless); 9] = [
        // Another workflow of the same repository.
        ("keyless/identity", "IDENTITY_MISMATCH", |s, d| {
            let spec = Keyless {
                subject:
                    "https://github.com/acme/app/.github/workflows/nightly.yaml@refs/heads/main",
                ..Keyless::default()
            };
            s.sigstore.sign(payload("x", d), &spec).layer
        }),
        // The policy's regular expression appears inside the subject, but the subject is not it.
        ("keyless/anchoring", "IDENTITY_MISMATCH", |s, d| {
            let spec = Keyless {
                subject: "https://evil.example/https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1.0.0",
                ..Keyless::default()
            };
            s.sigstore.sign(payload("x", d), &spec).layer
        }),
        // A GitHub claim that differs (another repository) with a matching subject.
        ("keyless/claims", "IDENTITY_MISMATCH", |s, d| {
            let spec = Keyless {
                github_repository: Some("acme/fork"),
                ..Keyless::default()
            };
            s.sigstore.sign(payload("x", d), &spec).layer
        }),
        // A certificate from another CA.
        ("keyless/root", "UNTRUSTED_ROOT", |s, d| {
            logged_layer(&s.stranger, &s.sigstore, d, None)
        }),
        // A valid SET over an entry for another payload.
        ("keyless/rekor-body", "TLOG_MISMATCH", |s, d| {
            logged_layer(&s.sigstore, &s.sigstore, d, Some(b"another payload"))
        }),
        // A real certificate and Rekor bundle carrying a signature made by another key.
        ("keyless/other-key", "SIGNATURE_INVALID", |s, d| {
            let good = s.sigstore.sign(payload("x", d), &Keyless::default());
            let mut layer = good.layer.clone();
            layer.annotations.insert(
                "dev.cosignproject.cosign/signature".into(),
                json!(B64.encode(s.key.sign(&good.layer.payload))),
            );
            layer
        }),
        // A tampered payload under a valid certificate.
        ("keyless/tampered", "SIGNATURE_INVALID", |s, d| {
            let mut layer = s.sigstore.sign(payload("x", d), &Keyless::default()).layer;
            layer.payload = String::from_utf8(layer.payload)
                .unwrap()
                .replace("null", "{\"evil\":1}")
                .into_bytes();
            layer
        }),
        // A certificate that expired long ago, with no transparency-log entry to prove when
        // it signed.
        ("keyless/expired-no-tlog", "TLOG_MISSING", |s, d| {
            let spec = Keyless {
                validity: (-7200, -6600),
                ..Keyless::default()
            };
            let mut layer = s.sigstore.sign(payload("x", d), &spec).layer;
            layer.annotations.remove("dev.sigstore.cosign/bundle");
            layer
        }),
        // Logged after the certificate had expired.
        ("keyless/expired", "CERT_EXPIRED", |s, d| {
            let spec = Keyless {
                validity: (-7200, -6600),
                integrated_offset: -60,
                ..Keyless::default()
            };
            s.sigstore.sign(payload("x", d), &spec).layer
        }),
    ];
    for (repo, _, make) in &cases {
        let digest = setup.registry.push_image(repo, "v1").await;
        let layer = make(&signers, &digest);
        setup
            .registry
            .push_signatures(repo, &digest, &[layer])
            .await;
    }

    for (repo, want, _) in cases {
        let image = setup.image(repo, "v1");
        let body = setup.review(&[&image]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(codes(&body), [want], "{repo}: {}", message(&body));
    }
    assert!(message(
        &setup
            .review(&[&setup.image("keyless/identity", "v1")])
            .await
    )
    .contains("nightly.yaml"));
}

fn layer_of(
    payload: Vec<u8>,
    signature: &[u8],
    cert: Option<&str>,
    bundle: Option<&Value>,
) -> SignatureLayer {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "dev.cosignproject.cosign/signature".into(),
        json!(B64.encode(signature)),
    );
    if let Some(cert) = cert {
        annotations.insert("dev.sigstore.cosign/certificate".into(), json!(cert));
    }
    if let Some(bundle) = bundle {
        annotations.insert(
            "dev.sigstore.cosign/bundle".into(),
            json!(bundle.to_string()),
        );
    }
    SignatureLayer {
        payload,
        annotations,
    }
}

#[tokio::test]
async fn warn_mode_warns_and_audit_mode_only_counts() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let policies = format!(
        "{}  mode: warn\n---\n{}  mode: audit\n",
        key_policy("warned", "HOST/warn/**", "k.pub", ""),
        key_policy("audited", "HOST/audit/**", "k.pub", "")
    );
    let setup = Setup::new(&policies, &[("k.pub", key.public_pem.clone())], &[]).await;
    setup.registry.push_image("warn/app", "v1").await;
    setup.registry.push_image("audit/app", "v1").await;
    let body = setup
        .review(&[
            &setup.image("warn/app", "v1"),
            &setup.image("audit/app", "v1"),
        ])
        .await;
    assert!(allowed(&body), "{body}");
    let warnings = body["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(warnings[0].as_str().unwrap().starts_with("[NO_SIGNATURE]"));
    let metrics = setup.server.metrics_text().await;
    assert!(
        metrics
            .contains("verdict_image_verifications_total{code=\"NO_SIGNATURE\",mode=\"audit\"} 1"),
        "{metrics}"
    );
    assert!(
        setup
            .server
            .logged("image policy not satisfied (audit mode)")
            .await,
        "{}",
        setup.server.logs()
    );
}

/// A server requiring a signature by `key` for every image of the test registry.
async fn signed_by(key: &TestKey, extra: &[&str]) -> Setup {
    Setup::new(
        &key_policy("signed", "HOST/**", "k.pub", ""),
        &[("k.pub", key.public_pem.clone())],
        extra,
    )
    .await
}

#[tokio::test]
async fn concurrent_reviews_of_a_cold_image_share_one_verification_of_three_requests() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = signed_by(&key, &[]).await;
    setup.signed_image("cold/app", |p| key.layer(p)).await;
    let image = setup.image("cold/app", "v1");
    let client = setup.server.client(true);
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let url = setup.server.url("/validate");
            let review = pod_review("team-a", &[&image]);
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
        })
        .collect();
    for request in requests {
        assert!(allowed(&request.await.unwrap()));
    }
    let metrics = setup.server.metrics_text().await;
    let requests: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("verdict_registry_requests_total{") && l.contains(&setup.registry.host)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    // One resolution, one signature manifest, one blob: for all hundred reviews.
    assert_eq!(requests, 3, "{metrics}");
    assert!(
        metrics.contains("verdict_verification_cache_total{result=\"miss\"} 1"),
        "{metrics}"
    );

    // Warm: a new review costs no registry request for the signature.
    let before = requests;
    assert!(allowed(&setup.review(&[&image]).await));
    let after: u64 = setup
        .server
        .metrics_text()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("verdict_registry_requests_total{") && l.contains(&setup.registry.host)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        after, before,
        "a cached image needs no registry request within the tag TTL"
    );
    // Every review counts its image's outcome once, verified or recalled.
    let metrics = setup.server.metrics_text().await;
    assert!(
        metrics
            .contains("verdict_image_verifications_total{code=\"VERIFIED\",mode=\"enforce\"} 101"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cold_image_costs_three_registry_requests() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = signed_by(&key, &[]).await;
    setup.signed_image("three/app", |p| key.layer(p)).await;
    assert!(allowed(
        &setup.review(&[&setup.image("three/app", "v1")]).await
    ));
    let metrics = setup.server.metrics_text().await;
    let line = format!(
        "verdict_registry_requests_total{{host=\"{}\",status=\"200\"}} 3",
        setup.registry.host
    );
    assert!(metrics.contains(&line), "{metrics}");
}

#[tokio::test]
async fn judges_the_digest_a_moved_tag_points_to() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = signed_by(&key, &["--tag-cache-ttl", "0"]).await;
    setup.signed_image("moving/app", |p| key.layer(p)).await;
    let image = setup.image("moving/app", "v1");
    assert!(allowed(&setup.review(&[&image]).await));
    // Someone pushes an unsigned image under the same tag.
    let moved = setup.registry.push_image("moving/app", "v1").await;
    let body = setup.review(&[&image]).await;
    assert!(!allowed(&body), "{body}");
    assert_eq!(codes(&body), ["NO_SIGNATURE"]);
    assert!(
        message(&body).contains(&moved),
        "the denial names the new digest: {}",
        message(&body)
    );
}

/// Known images are answered from facts kept between reviews; those must not outlive the
/// tag TTL: once it has passed, a moved tag is judged at its new digest.
#[tokio::test]
async fn known_images_are_judged_again_when_their_tag_ttl_has_passed() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = signed_by(&key, &["--tag-cache-ttl", "1s"]).await;
    setup.signed_image("ttl/app", |p| key.layer(p)).await;
    let image = setup.image("ttl/app", "v1");
    for _ in 0..3 {
        assert!(allowed(&setup.review(&[&image]).await));
    }
    let moved = setup.registry.push_image("ttl/app", "v1").await;
    let judged_again = eventually(Duration::from_secs(4), || async {
        let body = setup.review(&[&image]).await;
        !allowed(&body) && message(&body).contains(&moved)
    })
    .await;
    assert!(
        judged_again,
        "the moved tag was not judged again after its TTL"
    );
}

/// Rotating a compromised key means replacing the key file; the policy document stays the
/// same. Verifications cached under the old key must not outlive the reload.
#[tokio::test]
async fn a_replaced_key_file_revokes_cached_verifications() {
    let old = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let new = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = signed_by(&old, &[]).await;
    let digest = setup.signed_image("rotated/app", |p| old.layer(p)).await;
    let image = setup.image("rotated/app", &digest);
    assert!(allowed(&setup.review(&[&image]).await));

    std::fs::write(setup.server.policies().join("k.pub"), &new.public_pem).unwrap();
    let revoked = eventually(Duration::from_secs(5), || async {
        !allowed(&setup.review(&[&image]).await)
    })
    .await;
    assert!(
        revoked,
        "an image signed only by the replaced key is still admitted"
    );
    let body = setup.review(&[&image]).await;
    assert_eq!(codes(&body), ["UNTRUSTED_KEY"], "{body}");
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_denial() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = Setup::new(
        &key_policy("signed", "127.0.0.1:1/**", "k.pub", ""),
        &[("k.pub", key.public_pem.clone())],
        &["--insecure-registry", "127.0.0.1:1"],
    )
    .await;
    let body = setup.review(&["127.0.0.1:1/app:v1"]).await;
    assert!(!allowed(&body));
    assert_eq!(codes(&body), ["REGISTRY_UNREACHABLE"]);
    assert!(message(&body).contains("127.0.0.1:1"), "{}", message(&body));
}

/// Pushes a production cosign signature set from the fixtures under `digest` in `repo`.
async fn push_fixture(registry: &TestRegistry, repo: &str, dir: &Path, digest: &str) {
    let payload = std::fs::read(dir.join("payload.json")).unwrap();
    let layers: Vec<SignatureLayer> = match std::fs::read(dir.join("sig_manifest.json")) {
        Ok(manifest) => {
            let manifest: Value = serde_json::from_slice(&manifest).unwrap();
            manifest["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| SignatureLayer {
                    payload: payload.clone(),
                    annotations: l["annotations"].as_object().unwrap().clone(),
                })
                .collect()
        }
        Err(_) => {
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            let mut annotations = serde_json::Map::new();
            annotations.insert(
                "dev.cosignproject.cosign/signature".into(),
                json!(read("signature.b64").unwrap()),
            );
            if let Some(cert) = read("certificate.pem") {
                annotations.insert("dev.sigstore.cosign/certificate".into(), json!(cert));
            }
            if let Some(bundle) = read("bundle.json") {
                annotations.insert("dev.sigstore.cosign/bundle".into(), json!(bundle));
            }
            vec![SignatureLayer {
                payload,
                annotations,
            }]
        }
    };
    registry.push_signatures(repo, digest, &layers).await;
}

#[tokio::test]
async fn verifies_real_production_signatures_with_the_production_trust_root() {
    let fixtures = common::fixture("cosign");
    let registry = TestRegistry::start().await;
    let sets = [
        ("keyed-ecdsa-sigstore-rs-busybox", "prod/busybox"),
        ("keyed-rsa-suse-obs-sle-micro-toolbox", "prod/suse"),
        ("keyless-email-2021-sigstore-rs", "prod/email"),
        ("keyless-gha-2026-salrashid123-server_image", "prod/gha"),
        ("gcp-2023-salrashid123-securebuild-bazel", "prod/gcp"),
    ];
    let mut digests = Vec::new();
    for (set, repo) in sets {
        let expected: Value = serde_json::from_slice(
            &std::fs::read(fixtures.join(set).join("expected.json")).unwrap(),
        )
        .unwrap();
        let digest = expected["image_digest"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                expected["image"]
                    .as_str()
                    .unwrap()
                    .rsplit_once('@')
                    .unwrap()
                    .1
                    .to_string()
            });
        push_fixture(&registry, repo, &fixtures.join(set), &digest).await;
        digests.push(digest);
    }
    let key = |f: &str| std::fs::read_to_string(fixtures.join(f)).unwrap();
    let policy = |name: &str, repo: &str, authority: &str| {
        format!("apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: {name}}}\nspec:\n  images: [{{glob: 'HOST/{repo}'}}]\n  authorities:\n{authority}")
    };
    let policies = [
        policy("busybox", "prod/busybox", "  - key: {file: keys/busybox.pub}\n"),
        policy("busybox-wrong", "prod/busybox-wrong", "  - key: {file: keys/wrong.pub}\n"),
        policy("suse", "prod/suse", "  - key: {file: keys/suse.pub}\n"),
        policy("email", "prod/email", "  - keyless:\n      identities: [{subject: flavio@castelli.me}]\n"),
        policy("email-wrong", "prod/email-wrong", "  - keyless:\n      identities: [{subject: someone@else.example}]\n"),
        policy(
            "gha",
            "prod/gha",
            "  - keyless:\n      identities: [{issuer: 'https://token.actions.githubusercontent.com', subjectRegExp: 'https://github\\.com/salrashid123/go-bazel-github-workflow/\\.github/workflows/release\\.yaml@refs/tags/v.*', github: {repository: salrashid123/go-bazel-github-workflow, ref: '/refs/tags/v.*/'}}]\n",
        ),
        policy(
            "gha-wrong",
            "prod/gha-wrong",
            "  - keyless:\n      identities: [{issuer: 'https://token.actions.githubusercontent.com', subjectRegExp: 'https://github\\.com/acme/.*'}]\n",
        ),
        policy(
            "gcp",
            "prod/gcp",
            "  - keyless:\n      identities: [{issuer: 'https://accounts.google.com', subject: cosign-svc-account@mineral-minutia-820.iam.gserviceaccount.com}]\n",
        ),
    ];
    let files = vec![
        (
            "keys/busybox.pub",
            key("keyed-ecdsa-sigstore-rs-busybox/cosign.pub"),
        ),
        (
            "keys/wrong.pub",
            key("keyed-ecdsa-sigstore-rs-busybox/wrong_key.pub"),
        ),
        (
            "keys/suse.pub",
            key("keyed-rsa-suse-obs-sle-micro-toolbox/rsa.pub"),
        ),
    ];
    let trust = common::fixture("trust/prod/trusted_root.json");
    let setup = Setup::with_registry(
        registry,
        &policies.join("---\n"),
        &files,
        &["--trust-root", trust.to_str().unwrap()],
    );
    // The wrong-key and wrong-identity variants look at the same signatures.
    for (from, to, digest) in [
        ("busybox", "busybox-wrong", &digests[0]),
        ("email", "email-wrong", &digests[2]),
        ("gha", "gha-wrong", &digests[3]),
    ] {
        let (set, _) = sets.iter().find(|(_, r)| r.ends_with(from)).unwrap();
        push_fixture(
            &setup.registry,
            &format!("prod/{to}"),
            &fixtures.join(set),
            digest,
        )
        .await;
    }
    for (i, (set, repo)) in sets.iter().enumerate() {
        let image = setup.image(repo, &digests[i]);
        let body = setup.review(&[&image]).await;
        assert!(allowed(&body), "{set}: {body}");
        let report = setup.check(&[&image]).await;
        assert_eq!(
            report["objects"][0]["images"][0]["verified"], true,
            "{set}: {report}"
        );
    }
    for (repo, digest, want) in [
        ("prod/busybox-wrong", &digests[0], "UNTRUSTED_KEY"),
        ("prod/email-wrong", &digests[2], "IDENTITY_MISMATCH"),
        ("prod/gha-wrong", &digests[3], "IDENTITY_MISMATCH"),
    ] {
        let body = setup.review(&[&setup.image(repo, digest)]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(codes(&body), [want], "{repo}");
    }
}

#[tokio::test]
async fn verdict_check_verifies_through_the_same_path() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let registry = TestRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("images.yaml"),
        key_policy("signed", &format!("{}/**", registry.host), "k.pub", ""),
    )
    .unwrap();
    std::fs::write(dir.path().join("k.pub"), &key.public_pem).unwrap();
    let digest = registry.push_image("cli/app", "v1").await;
    registry
        .push_signatures("cli/app", &digest, &[key.layer(payload("x", &digest))])
        .await;
    registry.push_image("cli/unsigned", "v1").await;
    let args = vec![
        "--policies".to_string(),
        dir.path().to_string_lossy().to_string(),
        "--insecure-registry".to_string(),
        registry.host.clone(),
    ];
    let ok = verdict_check(&format!("{}/cli/app:v1", registry.host), args.clone()).await;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("verified: yes"));
    let denied = verdict_check(&format!("{}/cli/unsigned:v1", registry.host), args).await;
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).contains("[NO_SIGNATURE]"));
}

#[tokio::test]
async fn reads_a_tls_registry_with_basic_auth_through_docker_config_and_registry_ca() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = verdict::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap();
    verdict::certs::write(certs_dir.path(), &certs).unwrap();
    let options = common::registry::RegistryOptions {
        basic_auth: Some(("puller".into(), "s3cret".into())),
        tls: Some((
            certs_dir.path().join("tls.crt"),
            certs_dir.path().join("tls.key"),
            certs.ca_pem.clone(),
        )),
        token: None,
    };
    let registry = TestRegistry::start_with(options).await;
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let digest = registry.push_image("private/app", "v1").await;
    registry
        .push_signatures("private/app", &digest, &[key.layer(payload("x", &digest))])
        .await;
    let host = registry.host.clone();
    let docker_config = json!({"auths": {host.clone(): {"auth": B64.encode("puller:s3cret")}}});
    let files = vec![
        ("k.pub", key.public_pem.clone()),
        ("../docker-config.json", docker_config.to_string()),
        ("../registry-ca.pem", certs.ca_pem.clone()),
    ];
    let policy = key_policy("private", "HOST/private/**", "k.pub", "");
    let policies = tempfile::tempdir().unwrap();
    let root = policies.path().join("policies");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("images.yaml"), policy.replace("HOST", &host)).unwrap();
    for (name, text) in &files {
        std::fs::write(root.join(name), text).unwrap();
    }
    let image = format!("{host}/private/app:v1");
    let with_credentials = Server::start_with(Options {
        policies: root.clone(),
        extra_args: vec![
            "--docker-config".into(),
            policies
                .path()
                .join("docker-config.json")
                .display()
                .to_string(),
            "--registry-ca".into(),
            policies
                .path()
                .join("registry-ca.pem")
                .display()
                .to_string(),
        ],
    });
    let (_, body) = with_credentials
        .validate(
            &with_credentials.client(true),
            &pod_review("team-a", &[&image]),
        )
        .await;
    assert!(allowed(&body), "{body}");

    let without = Server::start_with(Options {
        policies: root,
        extra_args: vec![
            "--registry-ca".into(),
            policies
                .path()
                .join("registry-ca.pem")
                .display()
                .to_string(),
        ],
    });
    let (_, body) = without
        .validate(&without.client(true), &pod_review("team-a", &[&image]))
        .await;
    assert!(!allowed(&body));
    assert_eq!(codes(&body), ["REGISTRY_AUTH"], "{body}");
}

#[tokio::test]
async fn fetches_docker_hub_images_from_a_configured_mirror() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let registry = TestRegistry::start().await;
    let digest = registry.push_image("acme/app", "v1").await;
    registry
        .push_signatures(
            "acme/app",
            &digest,
            &[key.layer(payload("docker.io/acme/app", &digest))],
        )
        .await;
    registry.push_image("acme/unsigned", "v1").await;
    // The mirror is configured under an alias of Docker Hub: it serves every spelling.
    let mirror = format!("Index.Docker.IO={}", registry.host);
    let setup = Setup::with_registry(
        registry,
        &key_policy("hub", "docker.io/acme/**", "k.pub", ""),
        &[("k.pub", key.public_pem.clone())],
        &["--registry-mirror", &mirror],
    );
    for spelling in [
        "acme/app:v1",
        "docker.io/acme/app:v1",
        "DOCKER.IO/acme/app:v1",
        "index.docker.io/acme/app:v1",
        "registry-1.docker.io:443/acme/app:v1",
    ] {
        let body = setup.review(&[spelling]).await;
        assert!(allowed(&body), "{spelling}: {body}");
        let report = setup.check(&[spelling]).await;
        let facts = &report["objects"][0]["images"][0];
        assert_eq!(facts["digest"], digest, "{spelling}");
        assert_eq!(facts["registry"], "docker.io", "{spelling}");
        let unsigned = spelling.replace("/app", "/unsigned");
        let body = setup.review(&[&unsigned]).await;
        assert_eq!(codes(&body), ["NO_SIGNATURE"], "{unsigned}: {body}");
    }
}

#[tokio::test]
async fn reads_a_registry_with_bearer_token_auth() {
    let issuer = common::registry::TokenIssuer::start("puller", "s3cret").await;
    let push = issuer.token(&["tokened/app"], &["pull", "push"]);
    let options = common::registry::RegistryOptions {
        token: Some((
            issuer.realm.clone(),
            issuer.service.clone(),
            issuer.cert_pem.clone(),
            push,
        )),
        ..Default::default()
    };
    let registry = TestRegistry::start_with(options).await;
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let digest = registry.push_image("tokened/app", "v1").await;
    registry
        .push_signatures("tokened/app", &digest, &[key.layer(payload("x", &digest))])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let docker_config =
        json!({"auths": {registry.host.clone(): {"username": "puller", "password": "s3cret"}}});
    std::fs::write(dir.path().join("config.json"), docker_config.to_string()).unwrap();
    let config_path = dir.path().join("config.json").display().to_string();
    let setup = Setup::with_registry(
        registry,
        &key_policy("tokened", "HOST/tokened/**", "k.pub", ""),
        &[("k.pub", key.public_pem.clone())],
        &["--docker-config", &config_path],
    );
    let image = setup.image("tokened/app", "v1");
    let body = setup.review(&[&image]).await;
    assert!(allowed(&body), "{body}");
    // Token fetch + resolve/manifest/blob retries: the token is reused within the review and after.
    assert!(allowed(&setup.review(&[&image]).await));
}
