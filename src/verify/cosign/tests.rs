//! Checks against real production signatures from `../shared/fixtures/cosign`.

use super::*;
use crate::verify::identity::Matcher;
use crate::verify::proof::IN_TOTO_PAYLOAD_TYPE;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/cosign")
        .join(name)
}

fn read(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(dir(name).join(file)).expect("fixture")
}

fn text(name: &str, file: &str) -> String {
    String::from_utf8(read(name, file))
        .expect("utf-8")
        .trim()
        .to_string()
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_slice(&read(name, "expected.json")).expect("json")
}

fn key(name: &str, file: &str) -> PublicKey {
    let pem = read(name, file);
    let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem).expect("pem");
    PublicKey {
        name: file.to_string(),
        key: CosignVerificationKey::try_from_der(spki.as_ref()).expect("key"),
        spki_der: spki.to_vec(),
    }
}

/// A layer as cosign would push it, from a fixture's loose files.
fn layer(name: &str, with_certificate: bool, with_bundle: bool) -> SignatureLayer {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        SIGNATURE_ANNOTATION.to_string(),
        text(name, "signature.b64"),
    );
    if with_certificate {
        annotations.insert(
            CERTIFICATE_ANNOTATION.to_string(),
            text(name, "certificate.pem"),
        );
    }
    if with_bundle {
        annotations.insert(BUNDLE_ANNOTATION.to_string(), text(name, "bundle.json"));
    }
    let layer = LayerRef {
        digest: Digest::sha256_of(b"x"),
        size: 0,
        annotations,
    };
    SignatureLayer::new(&layer, read(name, "payload.json")).expect("layer")
}

fn email_rule(subject: &str) -> IdentityRule {
    IdentityRule {
        issuer: None,
        subject: Matcher::Exact(subject.into()),
        claims: Vec::new(),
    }
}

fn gha_rule() -> IdentityRule {
    IdentityRule {
        issuer: Some(Matcher::Exact("https://token.actions.githubusercontent.com".into())),
        subject: Matcher::regex(r"https://github\.com/salrashid123/go-bazel-github-workflow/\.github/workflows/release\.yaml@refs/tags/v.*")
            .expect("regex"),
        claims: vec![("workflow_repository".into(), Matcher::Exact("salrashid123/go-bazel-github-workflow".into()))],
    }
}

const BUSYBOX: &str = "keyed-ecdsa-sigstore-rs-busybox";
const SUSE: &str = "keyed-rsa-suse-obs-sle-micro-toolbox";
const EMAIL_2021: &str = "keyless-email-2021-sigstore-rs";
const GHA_2026: &str = "keyless-gha-2026-salrashid123-server_image";
const GCP_2023: &str = "gcp-2023-salrashid123-securebuild-bazel";

fn digest_of(name: &str) -> String {
    let e = expected(name);
    e["image_digest"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            e["image"]
                .as_str()
                .expect("image")
                .rsplit_once('@')
                .expect("digest")
                .1
                .to_string()
        })
}

#[test]
fn keyed_ecdsa_signature_verifies_with_its_key_only() {
    let layer = layer(BUSYBOX, false, false);
    let digest = digest_of(BUSYBOX);
    let proof =
        check_with_keys(&layer, &[key(BUSYBOX, "cosign.pub")], None, &digest).expect("valid");
    assert_eq!(proof.identity, "cosign.pub");
    let wrong = check_with_keys(&layer, &[key(BUSYBOX, "wrong_key.pub")], None, &digest)
        .expect_err("wrong key");
    assert_eq!(wrong.code, ReasonCode::UntrustedKey);
}

#[test]
fn keyed_signature_for_another_digest_is_rejected() {
    let layer = layer(BUSYBOX, false, false);
    let other = format!("sha256:{}", "0".repeat(64));
    let err =
        check_with_keys(&layer, &[key(BUSYBOX, "cosign.pub")], None, &other).expect_err("mismatch");
    assert_eq!(err.code, ReasonCode::DigestMismatch);
}

#[test]
fn tampered_payload_fails_the_key() {
    let mut layer = layer(BUSYBOX, false, false);
    layer.payload = String::from_utf8(layer.payload)
        .expect("utf-8")
        .replace("null", "{\"x\":1}")
        .into_bytes();
    let err = check_with_keys(
        &layer,
        &[key(BUSYBOX, "cosign.pub")],
        None,
        &digest_of(BUSYBOX),
    )
    .expect_err("tampered");
    assert_eq!(err.code, ReasonCode::UntrustedKey);
}

#[test]
fn keyed_rsa_signature_from_suse_verifies() {
    check_with_keys(
        &layer(SUSE, false, false),
        &[key(SUSE, "rsa.pub")],
        None,
        &digest_of(SUSE),
    )
    .expect("valid");
}

#[test]
fn keyed_signature_without_a_required_tlog_entry_is_rejected() {
    let trust = TrustRoot::public_good();
    let err = check_with_keys(
        &layer(BUSYBOX, false, false),
        &[key(BUSYBOX, "cosign.pub")],
        Some(&trust),
        &digest_of(BUSYBOX),
    )
    .expect_err("no bundle");
    assert_eq!(err.code, ReasonCode::TlogMissing);
}

#[test]
fn keyless_2021_email_signature_verifies_against_the_public_good_root() {
    let proof = check_keyless(
        &layer(EMAIL_2021, true, true),
        &TrustRoot::public_good(),
        &[email_rule("flavio@castelli.me")],
        &digest_of(EMAIL_2021),
    )
    .expect("valid");
    assert_eq!(proof.rekor_log_index, Some(783_607));
    assert_eq!(proof.rekor_integrated_time, Some(1_634_714_717));
}

#[test]
fn keyless_2026_github_actions_signature_verifies_with_claims() {
    let e = expected(GHA_2026);
    let proof = check_keyless(
        &layer(GHA_2026, true, true),
        &TrustRoot::public_good(),
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect("valid");
    assert_eq!(proof.rekor_log_index, e["log_index"].as_i64());
    assert!(proof
        .identity
        .starts_with(e["san_uri"].as_str().expect("san")));
}

#[test]
fn keyless_identity_mismatch_names_signer_and_policy() {
    let err = check_keyless(
        &layer(EMAIL_2021, true, true),
        &TrustRoot::public_good(),
        &[email_rule("someone@else.example")],
        &digest_of(EMAIL_2021),
    )
    .expect_err("mismatch");
    assert_eq!(err.code, ReasonCode::IdentityMismatch);
    assert!(
        err.detail.contains("flavio@castelli.me") && err.detail.contains("someone@else.example"),
        "{}",
        err.detail
    );
}

#[test]
fn keyless_without_bundle_is_tlog_missing() {
    let err = check_keyless(
        &layer(GHA_2026, true, false),
        &TrustRoot::public_good(),
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("no tlog");
    assert_eq!(err.code, ReasonCode::TlogMissing);
}

#[test]
fn keyless_with_untrusted_fulcio_root_is_rejected() {
    let mut trust = TrustRoot::public_good();
    trust.fulcio.clear();
    let err = check_keyless(
        &layer(GHA_2026, true, true),
        &trust,
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("untrusted");
    assert_eq!(err.code, ReasonCode::UntrustedRoot);
}

#[test]
fn keyless_with_untrusted_rekor_key_is_rejected() {
    let mut trust = TrustRoot::public_good();
    trust.rekor.clear();
    let err = check_keyless(
        &layer(GHA_2026, true, true),
        &trust,
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("untrusted log");
    assert_eq!(err.code, ReasonCode::TlogInvalid);
}

#[test]
fn keyless_signature_not_made_by_the_certificate_key_is_rejected() {
    // The real GitHub certificate and bundle, carrying the busybox key's signature.
    let mut layer = layer(GHA_2026, true, true);
    layer.signature = BASE64.decode(text(BUSYBOX, "signature.b64")).expect("b64");
    let err = check_keyless(
        &layer,
        &TrustRoot::public_good(),
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("other key");
    assert_eq!(err.code, ReasonCode::SignatureInvalid);
}

#[test]
fn rekor_bundle_of_another_entry_is_a_mismatch() {
    // The 2021 bundle is a valid SET, but it records another signature and certificate.
    let mut layer = layer(GHA_2026, true, true);
    layer.bundle = Some(serde_json::from_slice(&read(EMAIL_2021, "bundle.json")).expect("bundle"));
    let err = check_keyless(
        &layer,
        &TrustRoot::public_good(),
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("mismatch");
    assert_eq!(err.code, ReasonCode::TlogMismatch);
}

#[test]
fn edited_rekor_bundle_fails_its_signed_timestamp() {
    let mut layer = layer(GHA_2026, true, true);
    if let Some(bundle) = layer.bundle.as_mut() {
        bundle.payload.integrated_time += 1;
    }
    let err = check_keyless(
        &layer,
        &TrustRoot::public_good(),
        &[gha_rule()],
        &digest_of(GHA_2026),
    )
    .expect_err("edited");
    assert_eq!(err.code, ReasonCode::TlogInvalid);
}

#[test]
fn gcp_manifest_has_a_kms_keyed_and_a_keyless_layer() {
    let manifest = read(GCP_2023, "sig_manifest.json");
    let layers = parse_signature_manifest(&manifest).expect("manifest");
    assert_eq!(layers.len(), 2);
    let digest = digest_of(GCP_2023);
    let payload = read(GCP_2023, "payload.json");
    let keyed = SignatureLayer::new(&layers[0], payload.clone()).expect("layer 0");
    check_with_keys(
        &keyed,
        &[key(GCP_2023, "keyed-kms/kms_pub.pem")],
        None,
        &digest,
    )
    .expect("KMS key verifies");
    let keyless = SignatureLayer::new(&layers[1], payload).expect("layer 1");
    let rule = email_rule("cosign-svc-account@mineral-minutia-820.iam.gserviceaccount.com");
    let rule = IdentityRule {
        issuer: Some(Matcher::Exact("https://accounts.google.com".into())),
        ..rule
    };
    let proof = check_keyless(&keyless, &TrustRoot::public_good(), &[rule], &digest)
        .expect("keyless verifies");
    assert_eq!(proof.rekor_log_index, Some(19_941_761));
}

fn unsigned(payload: &str, dsse_payload_type: Option<&str>) -> SignatureLayer {
    SignatureLayer {
        payload: payload.as_bytes().to_vec(),
        signature: Vec::new(),
        certificate: None,
        bundle: None,
        dsse_payload_type: dsse_payload_type.map(str::to_string),
    }
}

/// cosign reads the simple-signing payload strictly; so does verdict: the type must be
/// cosign's, the digest present, and no key may be read two ways.
#[test]
fn simple_signing_payloads_are_read_strictly() {
    let d = format!("sha256:{}", "a".repeat(64));
    let good = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"r"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    assert_eq!(check_payload_digest(&unsigned(&good, None), &d), Ok(()));
    let other = format!("sha256:{}", "b".repeat(64));
    let bad = [
        good.replace("cosign container image signature", "atomic container signature"),
        good.replace(r#","type":"cosign container image signature""#, ""),
        good.replace(&format!(r#""docker-manifest-digest":"{d}""#), r#""x":1"#),
        good.replace(r#""optional":null"#, &format!(r#""optional":null,"critical":{{"image":{{"docker-manifest-digest":"{other}"}},"type":"cosign container image signature"}}"#)),
        good.replace(r#""optional":null"#, r#""optional":null,"Critical":{}"#),
        good.replace(
            &format!(r#""docker-manifest-digest":"{d}""#),
            &format!(r#""docker-manifest-digest":"{other}","docker-manifest-digest":"{d}""#),
        ),
        "not json".to_string(),
    ];
    for payload in bad {
        let rejection = check_payload_digest(&unsigned(&payload, None), &d).expect_err(&payload);
        assert_eq!(
            rejection.code,
            ReasonCode::SignatureInvalid,
            "{payload}: {rejection:?}"
        );
    }
    let elsewhere = good.replace(&d, &other);
    assert_eq!(
        check_payload_digest(&unsigned(&elsewhere, None), &d).map_err(|r| r.code),
        Err(ReasonCode::DigestMismatch)
    );
}

#[test]
fn only_in_toto_statements_are_attestations() {
    let hex = "c".repeat(64);
    let d = format!("sha256:{hex}");
    let good = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"a","digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#
    );
    assert_eq!(
        check_payload_digest(&unsigned(&good, Some(IN_TOTO_PAYLOAD_TYPE)), &d),
        Ok(())
    );
    let v01 = good.replace("Statement/v1", "Statement/v0.1");
    assert_eq!(
        check_payload_digest(&unsigned(&v01, Some(IN_TOTO_PAYLOAD_TYPE)), &d),
        Ok(())
    );
    let cases = [
        (good.clone(), "text/plain"),
        (
            good.clone(),
            "application/vnd.dev.cosign.simplesigning.v1+json",
        ),
        (
            good.replace(
                "https://in-toto.io/Statement/v1",
                "https://example.com/Statement",
            ),
            IN_TOTO_PAYLOAD_TYPE,
        ),
        (
            good.replace(r#""_type":"https://in-toto.io/Statement/v1","#, ""),
            IN_TOTO_PAYLOAD_TYPE,
        ),
        (
            good.replace(
                r#""predicate":{}"#,
                r#""predicate":{},"predicateType":"https://evil.example""#,
            ),
            IN_TOTO_PAYLOAD_TYPE,
        ),
        (
            good.replace(r#""predicate":{}"#, r#""predicate":{},"subject":[]"#),
            IN_TOTO_PAYLOAD_TYPE,
        ),
    ];
    for (payload, payload_type) in cases {
        let layer = unsigned(&payload, Some(payload_type));
        assert!(
            layer.statement().is_some_and(|s| s.is_err()),
            "{payload_type}: {payload}"
        );
        let rejection = check_payload_digest(&layer, &d).expect_err(&payload);
        assert_eq!(rejection.code, ReasonCode::SignatureInvalid, "{payload}");
    }
}
