//! The bypass classes of docs/security.md, each tried against the real server, a real
//! `docker-registry` (with a lying proxy in front where the registry is the attacker) and
//! signatures made with real keys: every one must be denied with its reason code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::faults::{Fault, FaultProxy};
use common::provenance::*;
use common::registry::{payload, statement, Keyless, PrivateSigstore, TestKey, TestRegistry};
use common::{codes, pod_review};
use serde_json::{json, Value};
use sigstore::crypto::SigningScheme;

const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

fn key_files(key: &TestKey) -> Vec<(&'static str, String)> {
    vec![("keys/cosign.pub", key.public_pem.clone())]
}

fn warnings(body: &Value) -> String {
    body["response"]["warnings"].to_string()
}

/// `GHCR.IO/acme/app` is `ghcr.io/acme/app` to a runtime: every spelling of the registry
/// meets the same image policy, whichever way the policy spells it.
#[tokio::test]
async fn every_spelling_of_a_registry_meets_the_same_image_policy() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let registry = TestRegistry::start().await;
    let port = registry.host.rsplit(':').next().unwrap().to_string();
    let policies = [
        key_policy(
            "by-name",
            &format!("LocalHost:{port}/canon/**"),
            "keys/cosign.pub",
            "",
        ),
        key_policy("by-ip", "HOST/ip/**", "keys/cosign.pub", ""),
    ]
    .join("---\n");
    let insecure = format!("localhost:{port}");
    let setup = Setup::with_registry(
        registry,
        &policies,
        &key_files(&key),
        &["--insecure-registry", &insecure],
    );
    setup.registry.push_image("canon/unsigned", "v1").await;
    setup.registry.push_image("ip/unsigned", "v1").await;
    setup.signed_image("canon/signed", |p| key.layer(p)).await;

    let unsigned = [
        format!("localhost:{port}/canon/unsigned:v1"),
        format!("LOCALHOST:{port}/canon/unsigned:v1"),
        format!("LocalHost:0{port}/canon/unsigned:v1"),
        format!("[::ffff:127.0.0.1]:{port}/ip/unsigned:v1"),
        format!("0x7f.0.0.1:{port}/ip/unsigned:v1"),
        format!("127.1:{port}/ip/unsigned:v1"),
    ];
    for image in &unsigned {
        let body = setup.review(&[image]).await;
        assert!(!allowed(&body), "{image}: {body}");
        assert_eq!(codes(&body), ["NO_SIGNATURE"], "{image}: {body}");
        assert!(
            message(&body).contains(image.as_str()),
            "{}",
            message(&body)
        );
    }
    for image in [
        format!("localhost:{port}/canon/signed:v1"),
        format!("LOCALHOST:{port}/canon/signed:v1"),
    ] {
        let body = setup.review(&[&image]).await;
        assert!(allowed(&body), "{image}: {body}");
        let facts = &setup.check(&[&image]).await["objects"][0]["images"][0];
        assert_eq!(
            facts["reference"],
            image.as_str(),
            "reference stays as written"
        );
        assert_eq!(facts["registry"], format!("localhost:{port}"));
        assert_eq!(
            facts["normalized"],
            format!("localhost:{port}/canon/signed:v1")
        );
        assert_eq!(facts["verified"], true, "{facts}");
    }
}

/// `--no-match-policy`: an image no image policy covers is admitted (the default), admitted
/// with a warning, or denied with NO_MATCHING_POLICY.
#[tokio::test]
async fn images_no_policy_matches_follow_the_no_match_policy() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    for (setting, admitted, warned) in [
        (None, true, false),
        (Some("warn"), true, true),
        (Some("deny"), false, false),
    ] {
        let extra: Vec<&str> = setting
            .map(|s| vec!["--no-match-policy", s])
            .unwrap_or_default();
        let setup = Setup::new(
            &key_policy("signed", "HOST/covered/**", "keys/cosign.pub", ""),
            &key_files(&key),
            &extra,
        )
        .await;
        setup.signed_image("covered/app", |p| key.layer(p)).await;
        setup.registry.push_image("stray/app", "v1").await;
        let stray = setup.image("stray/app", "v1");
        let covered = setup.image("covered/app", "v1");

        let body = setup.review(&[&covered, &stray]).await;
        assert_eq!(allowed(&body), admitted, "{setting:?}: {body}");
        assert_eq!(
            warnings(&body).contains("NO_MATCHING_POLICY"),
            warned,
            "{setting:?}: {body}"
        );
        if !admitted {
            assert_eq!(codes(&body), ["NO_MATCHING_POLICY"], "{body}");
            let text = message(&body);
            assert!(
                text.contains("container \"c1\"") && text.contains(&stray),
                "{text}"
            );
            assert!(
                !text.contains(&covered),
                "only the stray image is named: {text}"
            );
        }
        // A covered image is judged by its policy as before.
        assert!(allowed(&setup.review(&[&covered]).await), "{setting:?}");
    }
}

/// cosign checks the simple-signing payload's type and digest and reads each key once:
/// a signed payload that says anything else, or says it twice, is not a signature.
#[tokio::test]
async fn signed_payloads_are_read_strictly() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let setup = Setup::new(
        &key_policy("signed", "HOST/payload/**", "keys/cosign.pub", ""),
        &key_files(&key),
        &[],
    )
    .await;
    let host = setup.registry.host.clone();
    let other = format!("sha256:{}", "1".repeat(64));
    /// A payload from (docker reference, this image's digest, another digest).
    type Payload = fn(&str, &str, &str) -> String;
    let cases: [(&str, Payload); 4] = [
        ("payload/other-type", |r, d, _| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{r}"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"atomic container signature"}},"optional":null}}"#
            )
        }),
        ("payload/no-type", |r, d, _| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{r}"}},"image":{{"docker-manifest-digest":"{d}"}}}},"optional":null}}"#
            )
        }),
        ("payload/no-digest", |r, _, _| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{r}"}},"image":{{}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        }),
        // Another image's digest first, this one's last: a last-wins reader sees this one.
        ("payload/repeated-digest", |r, d, o| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"{r}"}},"image":{{"docker-manifest-digest":"{o}","docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        }),
    ];
    for (repo, make) in cases {
        let digest = setup.registry.push_image(repo, "v1").await;
        let signed = make(&format!("{host}/{repo}"), &digest, &other).into_bytes();
        setup
            .registry
            .push_signatures(repo, &digest, &[key.layer(signed)])
            .await;
        let body = setup.review(&[&setup.image(repo, "v1")]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(
            codes(&body),
            ["SIGNATURE_INVALID"],
            "{repo}: {}",
            message(&body)
        );
    }
    // The well-formed payload of the same key is a signature.
    setup.signed_image("payload/good", |p| key.layer(p)).await;
    assert!(allowed(
        &setup.review(&[&setup.image("payload/good", "v1")]).await
    ));
}

/// An attestation is a DSSE envelope of in-toto type over an in-toto Statement; anything
/// else never reaches Rego, and a bundle of anything else is no signature.
#[tokio::test]
async fn only_in_toto_statements_are_attestations() {
    let sigstore = PrivateSigstore::new("acme");
    let policies = format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: provenance}}\nspec:\n  images: [{{glob: 'HOST/att/**'}}]\n  authorities:\n  - name: builder\n    keyless:\n      trustRoot: {{fulcio: [trust/fulcio.pem], rekor: [trust/rekor.pub]}}\n      identities: [{RELEASE_IDENTITY}]\n    attestations:\n    - {{name: slsa, predicateType: slsaprovenance1}}\n---\n{}",
        keyless_policy(RELEASE_IDENTITY, "enforce").replace("HOST/keyless/**", "HOST/sig/**")
    );
    let setup = Setup::new(&policies, &trust_files(&sigstore), &[]).await;
    let spec = Keyless::default();

    let digest = setup.registry.push_image("att/good", "v1").await;
    let layer = sigstore.attest(&statement("app", &digest, SLSA_V1, json!({})), &spec);
    setup
        .registry
        .push_attestations("att/good", &digest, &[layer])
        .await;
    assert!(allowed(
        &setup.review(&[&setup.image("att/good", "v1")]).await
    ));

    let mut denied = Vec::new();
    for (repo, payload_type) in [
        ("att/text-plain", "text/plain"),
        (
            "att/simple-signing",
            "application/vnd.dev.cosign.simplesigning.v1+json",
        ),
    ] {
        let digest = setup.registry.push_image(repo, "v1").await;
        let layer = sigstore.attest_as(
            payload_type,
            &statement("app", &digest, SLSA_V1, json!({})),
            &spec,
        );
        setup
            .registry
            .push_attestations(repo, &digest, &[layer])
            .await;
        denied.push(repo);
    }
    let digest = setup.registry.push_image("att/not-a-statement", "v1").await;
    let mut other: Value =
        serde_json::from_slice(&statement("app", &digest, SLSA_V1, json!({}))).unwrap();
    other["_type"] = json!("https://example.com/Statement/v1");
    let layer = sigstore.attest(&serde_json::to_vec(&other).unwrap(), &spec);
    setup
        .registry
        .push_attestations("att/not-a-statement", &digest, &[layer])
        .await;
    denied.push("att/not-a-statement");
    // An SBOM statement with a second predicateType: a last-wins reader sees provenance.
    let digest = setup.registry.push_image("att/two-types", "v1").await;
    let sbom = String::from_utf8(statement(
        "app",
        &digest,
        "https://spdx.dev/Document",
        json!({}),
    ))
    .unwrap();
    let two_types = format!(
        "{},\"predicateType\":\"{SLSA_V1}\"}}",
        sbom.trim_end().trim_end_matches('}')
    );
    let layer = sigstore.attest(two_types.as_bytes(), &spec);
    setup
        .registry
        .push_attestations("att/two-types", &digest, &[layer])
        .await;
    denied.push("att/two-types");

    for repo in denied {
        let image = setup.image(repo, "v1");
        let body = setup.review(&[&image]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(
            codes(&body),
            ["ATTESTATION_MISSING"],
            "{repo}: {}",
            message(&body)
        );
        assert!(
            message(&body).contains("not an attestation"),
            "{repo}: {}",
            message(&body)
        );
        let report = setup.check(&[&image]).await;
        assert_eq!(
            report["objects"][0]["images"][0]["attestations"],
            json!([]),
            "{repo}"
        );
    }

    // A bundle signing cosign's sign statement under another payload type is no signature.
    let digest = setup.registry.push_image("sig/text-plain", "v1").await;
    let bundle = sigstore.dsse_bundle_as(
        "text/plain",
        &statement("app", &digest, COSIGN_SIGN, json!({})),
        &spec,
    );
    setup
        .registry
        .push_referrer("sig/text-plain", &digest, &bundle)
        .await;
    let body = setup.review(&[&setup.image("sig/text-plain", "v1")]).await;
    assert!(!allowed(&body), "{body}");
    assert_eq!(codes(&body), ["SIGNATURE_INVALID"], "{}", message(&body));
}

/// A certificate whose legacy issuer extension names another issuer than its v2 one is
/// read two ways by two verifiers; it matches no identity.
#[tokio::test]
async fn disagreeing_issuer_extensions_match_no_identity() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = Setup::keyless(&sigstore).await;
    for (repo, spec) in [
        (
            "keyless/legacy-evil",
            Keyless {
                legacy_issuer: Some("https://evil.example"),
                ..Keyless::default()
            },
        ),
        (
            "keyless/v2-evil",
            Keyless {
                issuer: "https://evil.example",
                legacy_issuer: Some("https://token.actions.githubusercontent.com"),
                ..Keyless::default()
            },
        ),
    ] {
        let digest = setup.registry.push_image(repo, "v1").await;
        let layer = sigstore.sign(payload("x", &digest), &spec).layer;
        setup
            .registry
            .push_signatures(repo, &digest, &[layer])
            .await;
        let body = setup.review(&[&setup.image(repo, "v1")]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(
            codes(&body),
            ["IDENTITY_MISMATCH"],
            "{repo}: {}",
            message(&body)
        );
        assert!(
            message(&body).contains("https://evil.example"),
            "{}",
            message(&body)
        );
    }
    let digest = setup.registry.push_image("keyless/agreeing", "v1").await;
    let layer = sigstore
        .sign(payload("x", &digest), &Keyless::default())
        .layer;
    setup
        .registry
        .push_signatures("keyless/agreeing", &digest, &[layer])
        .await;
    assert!(allowed(
        &setup
            .review(&[&setup.image("keyless/agreeing", "v1")])
            .await
    ));
}

/// A registry behind a proxy that can lie, and a server with a key policy for the proxy's
/// `repos` (a glob below its host), with `extra` flags.
async fn behind_a_proxy(
    key: &TestKey,
    repos: &str,
    policy_extra: &str,
    extra: &[&str],
) -> (Setup, FaultProxy) {
    let registry = TestRegistry::start().await;
    let proxy = FaultProxy::start(&registry.host).await;
    let policy = key_policy(
        "signed",
        &format!("{}/{repos}", proxy.host),
        "keys/cosign.pub",
        "",
    )
    .replace("  authorities:", &format!("{policy_extra}  authorities:"));
    let mut flags = vec!["--insecure-registry", proxy.host.as_str()];
    flags.extend_from_slice(extra);
    let setup = Setup::with_registry(registry, &policy, &key_files(key), &flags);
    (setup, proxy)
}

/// CVE-2021-41190: an image manifest that also lists `manifests` is not an index, however
/// well signed the platform manifest it lists is. docker-registry refuses to store such a
/// document, so a registry that lies (the proxy) serves it.
#[tokio::test]
async fn an_image_manifest_is_never_read_as_an_index() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let (setup, proxy) = behind_a_proxy(&key, "multi/**", "  multiArch: platform\n", &[]).await;
    let repo = "multi/app";
    let signer = |digest: &str| key.layer(payload(&format!("{}/{repo}", proxy.host), digest));
    let signed = setup.registry.push_image(repo, "v1").await;
    setup
        .registry
        .push_signatures(repo, &signed, &[signer(&signed)])
        .await;
    let unsigned = setup.registry.push_image(repo, "unsigned").await;
    let mut manifest: Value =
        serde_json::from_slice(&setup.registry.manifest_bytes(repo, &unsigned).await).unwrap();
    let size = setup.registry.manifest_bytes(repo, &signed).await.len();
    manifest["manifests"] = json!([{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": signed, "size": size,
        "platform": {"os": "linux", "architecture": "amd64"},
    }]);
    let confused = serde_json::to_vec(&manifest).unwrap();
    let confused_digest = common::registry::sha256(&confused);
    proxy.set(Fault::Lie {
        paths: vec![
            "/manifests/v2".to_string(),
            format!("/manifests/{confused_digest}"),
        ],
        body: confused,
        digest: Some(confused_digest),
    });
    setup.registry.push_image(repo, "v2").await;
    let image = format!("{}/{repo}:v2", proxy.host);
    let body = setup.review(&[&image]).await;
    assert!(!allowed(&body), "{body}");
    assert_eq!(codes(&body), ["REGISTRY_ERROR"], "{}", message(&body));
    assert!(
        message(&body).contains("both `manifests`"),
        "{}",
        message(&body)
    );

    // A real index whose amd64 entry is signed passes; so does the signed image itself.
    let (_, platforms) = setup
        .registry
        .push_index(repo, "index", &["linux/amd64", "linux/arm64"])
        .await;
    let amd64 = &platforms[0].1;
    setup
        .registry
        .push_signatures(repo, amd64, &[signer(amd64)])
        .await;
    for tag in ["index", "v1"] {
        let image = format!("{}/{repo}:{tag}", proxy.host);
        let body = setup.review(&[&image]).await;
        assert!(allowed(&body), "{tag}: {body}");
    }
}

/// A registry that answers a tag with one manifest under another's Docker-Content-Digest
/// is refused: verdict judges the hash of the bytes it read.
#[tokio::test]
async fn a_digest_header_that_disagrees_with_the_body_is_refused() {
    let key = TestKey::generate(SigningScheme::ECDSA_P256_SHA256_ASN1);
    let (setup, proxy) = behind_a_proxy(&key, "**", "", &["--tag-cache-ttl", "0"]).await;
    let repo = "lying/app";
    let digest = setup.registry.push_image(repo, "v1").await;
    let layer = key.layer(payload(&format!("{}/{repo}", proxy.host), &digest));
    setup
        .registry
        .push_signatures(repo, &digest, &[layer])
        .await;
    let unsigned = setup.registry.push_image(repo, "unsigned").await;
    let image = format!("{}/{repo}:v1", proxy.host);
    let review = pod_review("team-a", &[&image]);
    let client = setup.server.client(true);
    let validate = || setup.server.validate(&client, &review);

    let (_, body) = validate().await;
    assert!(allowed(&body), "an honest proxy passes: {body}");
    proxy.set(Fault::Lie {
        paths: vec!["/manifests/v1".to_string()],
        digest: None,
        body: setup.registry.manifest_bytes(repo, &unsigned).await,
    });
    let (_, body) = validate().await;
    assert!(!allowed(&body), "{body}");
    assert_eq!(codes(&body), ["REGISTRY_ERROR"], "{}", message(&body));
    let text = message(&body);
    assert!(
        text.contains(&proxy.host) && text.contains("Docker-Content-Digest"),
        "{text}"
    );
    assert!(
        text.contains(&unsigned),
        "the denial names what the bytes hash to: {text}"
    );
}

/// A Sigstore bundle whose certificate had expired when it was logged is CERT_EXPIRED, as a
/// `.sig` signature is.
#[tokio::test]
async fn an_expired_certificate_is_cert_expired_in_a_bundle_too() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = Setup::keyless(&sigstore).await;
    let expired = Keyless {
        validity: (-7200, -6600),
        integrated_offset: -60,
        ..Keyless::default()
    };
    let digest = setup
        .registry
        .push_image("keyless/bundle-expired", "v1")
        .await;
    let bundle = sigstore.dsse_bundle(&statement("app", &digest, COSIGN_SIGN, json!({})), &expired);
    setup
        .registry
        .push_referrer("keyless/bundle-expired", &digest, &bundle)
        .await;
    let digest = setup.registry.push_image("keyless/sig-expired", "v1").await;
    let layer = sigstore.sign(payload("x", &digest), &expired).layer;
    setup
        .registry
        .push_signatures("keyless/sig-expired", &digest, &[layer])
        .await;
    for repo in ["keyless/bundle-expired", "keyless/sig-expired"] {
        let body = setup.review(&[&setup.image(repo, "v1")]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(codes(&body), ["CERT_EXPIRED"], "{repo}: {}", message(&body));
    }
}
