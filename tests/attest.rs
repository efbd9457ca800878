//! Attestations, Sigstore bundles and multi-arch images end to end: a real `docker-registry`,
//! attestations and bundles made by the tests with a private Sigstore, judged by the real
//! server over HTTPS (`/validate`, `/v1/check`) and by `verdict check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::codes;
use common::provenance::*;
use common::registry::{payload, statement, Keyless, PrivateSigstore, SignatureLayer, B64};
use serde_json::{json, Value};

const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const BUILDER: &str = "https://github.com/acme/builders/.github/workflows/build.yaml@refs/tags/v2";

fn provenance() -> Value {
    json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"repository": "https://github.com/acme/app", "ref": "refs/tags/v1.0.0"}},
        },
        "runDetails": {"builder": {"id": BUILDER}},
    })
}

/// An image policy whose authority requires a SLSA v1 provenance attestation by the release
/// identity, for `HOST/att/**`; and a signature policy for `HOST/sig/**`.
fn policies(multi_arch: &str) -> String {
    format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: provenance}}\nspec:\n  images: [{{glob: 'HOST/att/**'}}]\n  authorities:\n  - name: builder\n    keyless:\n      trustRoot: {{fulcio: [trust/fulcio.pem], rekor: [trust/rekor.pub]}}\n      identities: [{RELEASE_IDENTITY}]\n    attestations:\n    - {{name: slsa, predicateType: slsaprovenance1}}\n---\napiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: release}}\nspec:\n  images: [{{glob: 'HOST/sig/**'}}]\n  multiArch: {multi_arch}\n  authorities:\n  - name: github-release\n    keyless:\n      trustRoot: {{fulcio: [trust/fulcio.pem], rekor: [trust/rekor.pub]}}\n      identities: [{RELEASE_IDENTITY}]\n"
    )
}

async fn setup(sigstore: &PrivateSigstore, multi_arch: &str) -> Setup {
    Setup::new(&policies(multi_arch), &trust_files(sigstore), &[]).await
}

fn image_facts(report: &Value) -> &Value {
    &report["objects"][0]["images"][0]
}

#[tokio::test]
async fn cosign_attestation_satisfies_the_policy_and_reaches_rego() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = setup(&sigstore, "index").await;
    let digest = setup.registry.push_image("att/app", "v1").await;
    let layer = sigstore.attest(
        &statement("app", &digest, SLSA_V1, provenance()),
        &Keyless::default(),
    );
    setup
        .registry
        .push_attestations("att/app", &digest, &[layer])
        .await;
    let image = setup.image("att/app", "v1");
    let body = setup.review(&[&image]).await;
    assert!(allowed(&body), "{body}");

    let report = setup.check(&[&image]).await;
    let facts = image_facts(&report);
    assert_eq!(facts["verified"], true, "{facts}");
    let attestation = &facts["attestations"][0];
    assert_eq!(attestation["type"], SLSA_V1);
    assert_eq!(
        attestation["predicate"]["runDetails"]["builder"]["id"],
        BUILDER
    );
    assert_eq!(attestation["authority"], "provenance/builder");
    assert_eq!(attestation["digest"], digest);
    assert_eq!(attestation["format"], "cosign");
    assert!(attestation["signer"]
        .as_str()
        .unwrap()
        .contains("release.yaml@refs/tags/v1.0.0"));

    // `verdict check` goes through the same verification.
    let args = vec![
        "-o".to_string(),
        "json".to_string(),
        "--insecure-registry".to_string(),
        setup.registry.host.clone(),
        "--policies".to_string(),
        setup.policies_dir().to_string_lossy().to_string(),
    ];
    let output = verdict_check(&image, args).await;
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(image_facts(&report)["attestations"][0]["type"], SLSA_V1);
}

/// What an attestation negative case is made with.
struct Attesting {
    sigstore: PrivateSigstore,
    /// The digest of another image, `att/elsewhere`.
    elsewhere: String,
}

/// The attestation layer a negative case pushes for an image of this digest, if any.
type MakeAttestation = fn(&Attesting, &str) -> Option<SignatureLayer>;

#[tokio::test]
async fn attestation_negatives_each_get_their_reason_code() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = setup(&sigstore, "index").await;
    let elsewhere = setup.registry.push_image("att/elsewhere", "v1").await;
    let attesting = Attesting {
        sigstore,
        elsewhere,
    };
    // The detail each message names; `ELSEWHERE` stands for the other image's digest.
    let table: [(&str, &str, &str, MakeAttestation); 5] = [
        // Only an SBOM, no provenance.
        (
            "att/sbom-only",
            "ATTESTATION_MISSING",
            "https://spdx.dev/Document",
            |a, d| {
                let sbom = json!({"spdxVersion": "SPDX-2.3"});
                let sbom = statement("app", d, "https://spdx.dev/Document", sbom);
                Some(a.sigstore.attest(&sbom, &Keyless::default()))
            },
        ),
        // The statement is about another image.
        (
            "att/other-subject",
            "DIGEST_MISMATCH",
            "ELSEWHERE",
            |a, _| {
                let about = statement("app", &a.elsewhere, SLSA_V1, provenance());
                Some(a.sigstore.attest(&about, &Keyless::default()))
            },
        ),
        // Signed by someone the policy does not trust.
        ("att/stranger", "IDENTITY_MISMATCH", "mallory", |a, d| {
            let stranger = Keyless {
                subject:
                    "https://github.com/mallory/app/.github/workflows/release.yaml@refs/tags/v1.0.0",
                github_repository: Some("mallory/app"),
                ..Keyless::default()
            };
            Some(
                a.sigstore
                    .attest(&statement("app", d, SLSA_V1, provenance()), &stranger),
            )
        }),
        // The predicate was changed after signing.
        (
            "att/tampered",
            "SIGNATURE_INVALID",
            "does not verify",
            |a, d| {
                let signed = statement("app", d, SLSA_V1, provenance());
                let mut layer = a.sigstore.attest(&signed, &Keyless::default());
                let mut envelope: Value = serde_json::from_slice(&layer.payload).unwrap();
                let evil =
                    json!({"runDetails": {"builder": {"id": "https://evil.example/builder"}}});
                envelope["payload"] = json!(B64.encode(statement("app", d, SLSA_V1, evil)));
                layer.payload = serde_json::to_vec(&envelope).unwrap();
                Some(layer)
            },
        ),
        // No attestation at all.
        (
            "att/bare",
            "NO_SIGNATURE",
            "no cosign signature, attestation or Sigstore bundle",
            |_, _| None,
        ),
    ];
    let mut cases = Vec::new();
    for (repo, code, detail, make) in table {
        let digest = setup.registry.push_image(repo, "v1").await;
        if let Some(layer) = make(&attesting, &digest) {
            setup
                .registry
                .push_attestations(repo, &digest, &[layer])
                .await;
        }
        cases.push((
            repo,
            code,
            detail.replace("ELSEWHERE", &attesting.elsewhere),
        ));
    }
    let reproduce = "cosign verify-attestation --type https://slsa.dev/provenance/v1 --certificate-identity-regexp";

    for (repo, code, detail) in cases {
        let image = setup.image(repo, "v1");
        let body = setup.review(&[&image]).await;
        assert!(!allowed(&body), "{repo}: {body}");
        assert_eq!(codes(&body), [code], "{repo}: {body}");
        assert!(
            message(&body).contains(&detail),
            "{repo}: {}",
            message(&body)
        );
        assert!(
            message(&body).contains(reproduce),
            "{repo}: {}",
            message(&body)
        );
        let report = setup.check(&[&image]).await;
        assert_eq!(
            image_facts(&report)["attestations"],
            json!([]),
            "{repo}: unverified attestations never reach Rego"
        );
    }
}

#[tokio::test]
async fn sigstore_bundles_found_as_oci_referrers_satisfy_the_same_policies() {
    let sigstore = PrivateSigstore::new("acme");
    let setup = setup(&sigstore, "index").await;

    // A signature in cosign v3's bundle form: a DSSE statement of cosign's sign predicate.
    let digest = setup.registry.push_image("sig/bundled", "v1").await;
    let bundle = sigstore.dsse_bundle(
        &statement(
            "app",
            &digest,
            "https://sigstore.dev/cosign/sign/v1",
            json!({}),
        ),
        &Keyless::default(),
    );
    setup
        .registry
        .push_referrer("sig/bundled", &digest, &bundle)
        .await;
    let image = setup.image("sig/bundled", "v1");
    let body = setup.review(&[&image]).await;
    assert!(allowed(&body), "{body}");
    let report = setup.check(&[&image]).await;
    let signature = &image_facts(&report)["signatures"][0];
    assert_eq!(signature["format"], "bundle", "{report}");
    assert_eq!(signature["digest"], digest);
    assert_eq!(signature["rekor_log_index"], 0);

    // A provenance attestation in bundle form.
    let digest = setup.registry.push_image("att/bundled", "v1").await;
    let bundle = sigstore.dsse_bundle(
        &statement("app", &digest, SLSA_V1, provenance()),
        &Keyless::default(),
    );
    setup
        .registry
        .push_referrer("att/bundled", &digest, &bundle)
        .await;
    let image = setup.image("att/bundled", "v1");
    let body = setup.review(&[&image]).await;
    assert!(allowed(&body), "{body}");
    let report = setup.check(&[&image]).await;
    let attestation = &image_facts(&report)["attestations"][0];
    assert_eq!(attestation["type"], SLSA_V1);
    assert_eq!(attestation["format"], "bundle");
    assert_eq!(
        attestation["predicate"]["runDetails"]["builder"]["id"],
        BUILDER
    );

    // A provenance bundle does not count as a signature.
    let digest = setup.registry.push_image("sig/only-provenance", "v1").await;
    let bundle = sigstore.dsse_bundle(
        &statement("app", &digest, SLSA_V1, provenance()),
        &Keyless::default(),
    );
    setup
        .registry
        .push_referrer("sig/only-provenance", &digest, &bundle)
        .await;
    let body = setup
        .review(&[&setup.image("sig/only-provenance", "v1")])
        .await;
    assert_eq!(codes(&body), ["NO_SIGNATURE"], "{body}");

    // Tampered, and signed by a stranger.
    let digest = setup.registry.push_image("att/bundle-tampered", "v1").await;
    let mut bundle = sigstore.dsse_bundle(
        &statement("app", &digest, SLSA_V1, provenance()),
        &Keyless::default(),
    );
    let evil = statement(
        "app",
        &digest,
        SLSA_V1,
        json!({"runDetails": {"builder": {"id": "https://evil.example"}}}),
    );
    bundle["dsseEnvelope"]["payload"] = json!(B64.encode(evil));
    setup
        .registry
        .push_referrer("att/bundle-tampered", &digest, &bundle)
        .await;
    let body = setup
        .review(&[&setup.image("att/bundle-tampered", "v1")])
        .await;
    assert!(!allowed(&body), "{body}");
    assert!(
        ["SIGNATURE_INVALID", "TLOG_MISMATCH"].contains(&codes(&body)[0].as_str()),
        "{body}"
    );

    let digest = setup.registry.push_image("att/bundle-stranger", "v1").await;
    let stranger = Keyless {
        subject: "https://github.com/mallory/app/.github/workflows/release.yaml@refs/tags/v1.0.0",
        github_repository: Some("mallory/app"),
        ..Keyless::default()
    };
    let bundle = sigstore.dsse_bundle(&statement("app", &digest, SLSA_V1, provenance()), &stranger);
    setup
        .registry
        .push_referrer("att/bundle-stranger", &digest, &bundle)
        .await;
    let body = setup
        .review(&[&setup.image("att/bundle-stranger", "v1")])
        .await;
    assert_eq!(codes(&body), ["IDENTITY_MISMATCH"], "{body}");
}

/// Signs the linux/amd64 manifest of a two-platform index (as `cosign sign --recursive`
/// would, for that platform only) and returns (index digest, amd64 digest).
async fn platform_signed_index(
    setup: &Setup,
    sigstore: &PrivateSigstore,
    repo: &str,
) -> (String, String) {
    let (index, platforms) = setup
        .registry
        .push_index(repo, "v1", &["linux/amd64", "linux/arm64"])
        .await;
    let amd64 = platforms[0].1.clone();
    let signed = sigstore.sign(payload("x", &amd64), &Keyless::default());
    setup
        .registry
        .push_signatures(repo, &amd64, &[signed.layer])
        .await;
    (index, amd64)
}

#[tokio::test]
async fn multi_arch_policies_choose_which_digest_must_be_signed() {
    let sigstore = PrivateSigstore::new("acme");
    for (mode, admitted) in [("index", false), ("platform", true), ("either", true)] {
        let setup = setup(&sigstore, mode).await;
        let (index, amd64) = platform_signed_index(&setup, &sigstore, "sig/multi").await;
        let image = setup.image("sig/multi", "v1");
        let body = setup.review(&[&image]).await;
        assert_eq!(allowed(&body), admitted, "{mode}: {body}");
        let report = setup.check(&[&image]).await;
        let facts = image_facts(&report);
        assert_eq!(
            facts["digest"], index,
            "{mode}: the admitted digest is the index"
        );
        if admitted {
            assert_eq!(facts["signatures"][0]["digest"], amd64, "{mode}: {facts}");
        } else {
            assert_eq!(codes(&body), ["NO_SIGNATURE"], "{mode}: {body}");
        }
    }
    // The index itself signed: `index` and `either` admit; `platform` does not.
    for (mode, admitted) in [("index", true), ("platform", false), ("either", true)] {
        let setup = setup(&sigstore, mode).await;
        let (index, _) = setup
            .registry
            .push_index("sig/multi", "v1", &["linux/amd64", "linux/arm64"])
            .await;
        let signed = sigstore.sign(payload("x", &index), &Keyless::default());
        setup
            .registry
            .push_signatures("sig/multi", &index, &[signed.layer])
            .await;
        let body = setup.review(&[&setup.image("sig/multi", "v1")]).await;
        assert_eq!(allowed(&body), admitted, "{mode}: {body}");
    }
}

#[tokio::test]
async fn the_shipped_tier_policy_admits_prod_images_only_with_release_provenance() {
    let sigstore = PrivateSigstore::new("acme");
    let shipped = |path: &str| std::fs::read_to_string(common::repo().join(path)).unwrap();
    let audit_provenance = format!(
        "apiVersion: verdict.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {{name: provenance}}\nspec:\n  images: [{{glob: 'HOST/**'}}]\n  mode: audit\n  authorities:\n  - name: builder\n    keyless:\n      trustRoot: {{fulcio: [trust/fulcio.pem], rekor: [trust/rekor.pub]}}\n      identities: [{RELEASE_IDENTITY}]\n    attestations:\n    - {{name: slsa, predicateType: slsaprovenance1}}\n"
    );
    let mut files = trust_files(&sigstore);
    files.extend([
        ("lib/lib.rego", shipped("policies/lib/lib.rego")),
        ("images/tiers.rego", shipped("policies/images/tiers.rego")),
        (
            "inventory/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {verdict.dev/tier: prod}}\n"
                .to_string(),
        ),
        (
            "settings/tiers.yaml",
            format!(
                "tiers:\n  builders: ['{BUILDER}']\n  repositories: ['https://github.com/acme/app']\n  release_signers: ['^https://github\\.com/acme/app/\\.github/workflows/release\\.yaml@refs/tags/v.* \\(https://token\\.actions\\.githubusercontent\\.com\\)$']\n"
            ),
        ),
    ]);
    let setup = Setup::new(&audit_provenance, &files, &[]).await;

    let digest = setup.registry.push_image("tier/released", "v1").await;
    let layer = sigstore.attest(
        &statement("app", &digest, SLSA_V1, provenance()),
        &Keyless::default(),
    );
    setup
        .registry
        .push_attestations("tier/released", &digest, &[layer])
        .await;
    let body = setup.review(&[&setup.image("tier/released", "v1")]).await;
    assert!(allowed(&body), "{body}");

    // Provenance from another builder: verified, but not good enough for prod.
    let digest = setup.registry.push_image("tier/other-builder", "v1").await;
    let mut predicate = provenance();
    predicate["runDetails"]["builder"]["id"] = json!("https://ci.example/builder");
    let layer = sigstore.attest(
        &statement("app", &digest, SLSA_V1, predicate),
        &Keyless::default(),
    );
    setup
        .registry
        .push_attestations("tier/other-builder", &digest, &[layer])
        .await;
    let body = setup
        .review(&[&setup.image("tier/other-builder", "v1")])
        .await;
    assert_eq!(codes(&body), ["TIER_PROVENANCE_REQUIRED"], "{body}");
    assert!(
        message(&body).contains("https://ci.example/builder"),
        "{body}"
    );

    // Only a signature.
    let digest = setup.registry.push_image("tier/signed-only", "v1").await;
    let signed = sigstore.sign(payload("x", &digest), &Keyless::default());
    setup
        .registry
        .push_signatures("tier/signed-only", &digest, &[signed.layer])
        .await;
    let body = setup
        .review(&[&setup.image("tier/signed-only", "v1")])
        .await;
    assert_eq!(codes(&body), ["TIER_PROVENANCE_REQUIRED"], "{body}");
    assert!(message(&body).contains("provenance found: none"), "{body}");
}
