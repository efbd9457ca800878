//! The `verdict` command line: check, test and certs, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, repo, BIN};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn verdict(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn check_exits_zero_when_allowed_and_one_when_denied() {
    let allowed = fixture("admission/apiserver-1.20/0015-Deployment-CREATE.json");
    let output = verdict(&["check", "-f", allowed.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).starts_with("ALLOWED"));

    let denied = fixture("admission/kube-rs/gke_pod_create_admission_review.json");
    let output = verdict(&["check", "-f", denied.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("[IMAGE_TAG_LATEST]"));
}

#[test]
fn check_reads_yaml_manifests_from_stdin_and_prints_json() {
    let manifest = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: team-a}\nspec:\n  template:\n    spec:\n      initContainers: [{name: i, image: 'busybox:1.36'}]\n      containers: [{name: c, image: 'evil.example.com/x:1'}]\n";
    let output = verdict(&["check", "-f", "-", "--output", "json"], Some(manifest));
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let object = &report["objects"][0];
    assert_eq!(object["object"], "Job team-a/j");
    assert_eq!(object["messages"][0]["code"], "REGISTRY_NOT_ALLOWED");
    assert_eq!(object["images"][0]["kind"], "init");
    assert_eq!(
        object["images"][1]["path"],
        "spec.template.spec.containers[0].image"
    );
}

#[test]
fn check_fails_clearly_on_unreadable_input_and_broken_policies() {
    let output = verdict(&["check", "-f", "/nonexistent.yaml"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.yaml"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rego"),
        "package bad\n\ndeny contains x if {\n",
    )
    .unwrap();
    let output = verdict(
        &[
            "check",
            "-f",
            "-",
            "--policies",
            dir.path().to_str().unwrap(),
        ],
        Some("{}"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.rego:"), "{stderr}");
}

#[test]
fn test_command_runs_shipped_policy_tests() {
    let output = verdict(&["test", "policies"], None);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("PASS: 26/26"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn test_command_reports_failures_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\n\nallow if input.ok\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\nimport data.p\n\ntest_allows if p.allow with input as {\"ok\": true}\n\ntest_wrong if p.allow with input as {\"ok\": false}\n",
    )
    .unwrap();
    let output = verdict(&["test", dir.path().to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "FAIL {}:7: data.p_test.test_wrong",
            dir.path().join("p_test.rego").display()
        )),
        "{text}"
    );
    assert!(
        text.contains("PASS: 1/2") && text.contains("FAIL: 1/2"),
        "{text}"
    );
}

#[test]
fn certs_command_writes_a_ca_and_a_serving_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = verdict(
        &[
            "certs",
            "--out",
            out.to_str().unwrap(),
            "--dns",
            "verdict.verdict-system.svc",
            "--ip",
            "127.0.0.1",
        ],
        None,
    );
    assert!(output.status.success());
    for name in ["ca.crt", "tls.crt", "tls.key"] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{name}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The pair is usable by the server's TLS loader.
    verdict::server::tls::CertStore::load(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
}
