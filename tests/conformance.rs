//! `verdict verify-bundle` over every case of the Sigstore conformance suite's
//! `bundle-verify` assets (`../shared/fixtures/sigstore-bundles/conformance/bundle-verify`),
//! driven the way the suite drives a client: exit 0 means verified, non-zero rejected.
//! All cases pass; a case that stops passing fails this test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, BIN};
use std::path::Path;
use std::process::Command;

/// Defaults of the suite's README for cases without `identity` / `issuer` files.
const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs one case; `Ok` when the outcome matches what the case expects.
fn run_case(dir: &Path) -> Result<(), String> {
    let name = dir.file_name().unwrap().to_str().unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("verify-bundle")
        .arg("--bundle")
        .arg(dir.join("bundle.sigstore.json"));
    if dir.join("key.pub").exists() {
        command.arg("--key").arg(dir.join("key.pub"));
    } else {
        command
            .arg("--certificate-identity")
            .arg(read(dir, "identity").unwrap_or_else(|| IDENTITY.to_string()))
            .arg("--certificate-oidc-issuer")
            .arg(read(dir, "issuer").unwrap_or_else(|| ISSUER.to_string()));
    }
    if dir.join("trusted_root.json").exists() {
        command
            .arg("--trusted-root")
            .arg(dir.join("trusted_root.json"));
    }
    let artifact = if dir.join("artifact").exists() {
        dir.join("artifact")
    } else {
        dir.join("../a.txt")
    };
    let output = command.arg(artifact).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let expect_failure = name.ends_with("_fail");
    match (expect_failure, output.status.success()) {
        (false, true) => Ok(()),
        (true, false) if !stderr.is_empty() => Ok(()),
        (true, false) => Err(format!("{name}: rejected without a reason on stderr")),
        (true, true) => Err(format!("{name}: verified, but the case must be rejected")),
        (false, false) => Err(format!("{name}: rejected: {stderr}")),
    }
}

#[test]
fn every_bundle_verify_case_of_the_conformance_suite() {
    let root = fixture("sigstore-bundles/conformance/bundle-verify");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 70, "only {} cases found", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} conformance cases do not pass:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn rejections_name_a_reason_code() {
    let case = fixture("sigstore-bundles/conformance/bundle-verify/signature-mismatch_fail");
    let output = Command::new(BIN)
        .args(["verify-bundle", "--bundle"])
        .arg(case.join("bundle.sigstore.json"))
        .args([
            "--certificate-identity",
            IDENTITY,
            "--certificate-oidc-issuer",
            ISSUER,
        ])
        .arg(case.join("../a.txt"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("rejected: [SIGNATURE_INVALID]"),
        "{stderr}"
    );

    let happy = fixture("sigstore-bundles/conformance/bundle-verify/happy-path-v0.3");
    let output = Command::new(BIN)
        .args(["verify-bundle", "--bundle"])
        .arg(happy.join("bundle.sigstore.json"))
        .args(["--certificate-identity", "https://example.com/someone-else"])
        .args(["--certificate-oidc-issuer", ISSUER])
        .arg(happy.join("../a.txt"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("rejected: [IDENTITY_MISMATCH]"),
        "{stderr}"
    );
}
