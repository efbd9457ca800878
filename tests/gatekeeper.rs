//! Gatekeeper policies as they are: the twelve library policies of
//! `../shared/fixtures/gatekeeper-library` under `verdict test` (their gator suites) and
//! `verdict check` (each case), and constraints enforced by the real server over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client_trusting, eventually, fixture, Options, Server, BIN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn verdict(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn library() -> PathBuf {
    fixture("gatekeeper-library")
}

fn yaml(path: &Path) -> Value {
    serde_json::to_value(
        yaml_serde::from_str::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap(),
    )
    .unwrap()
}

/// Every `suite.yaml` of the library.
fn suites() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for group in ["general", "pod-security-policy"] {
        for entry in std::fs::read_dir(library().join(group)).unwrap() {
            let suite = entry.unwrap().path().join("suite.yaml");
            if suite.exists() {
                found.push(suite);
            }
        }
    }
    found.sort();
    found
}

/// How many cases gator runs in `suites` (none is skipped in these).
fn case_count(suites: &[PathBuf]) -> usize {
    suites
        .iter()
        .map(|s| {
            yaml(s)["tests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["cases"].as_array().map_or(1, Vec::len))
                .sum::<usize>()
        })
        .sum()
}

#[test]
fn library_suites_pass_under_verdict_test() {
    let suites = suites();
    assert_eq!(suites.len(), 12, "{suites:?}");
    let output = verdict(&["test", library().to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let cases = case_count(&suites);
    assert!(cases >= 49, "{cases}");
    assert!(out.contains(&format!("PASS: {cases}/{cases}")), "{out}");
    assert!(!out.contains("FAIL") && !out.contains("ERROR"), "{out}");
}

/// The violations an assertion expects: `(at least, at most)` of the constraint findings
/// whose message (after `[name] `) matches.
fn expected(assertion: &Value) -> (usize, usize) {
    match &assertion["violations"] {
        Value::Null => (1, usize::MAX),
        Value::String(s) if s == "yes" => (1, usize::MAX),
        Value::String(s) if s == "no" => (0, 0),
        Value::Number(n) => {
            let n = n.as_u64().unwrap() as usize;
            (n, n)
        }
        other => panic!("assertion {other}"),
    }
}

/// `verdict check` of each case's object, with a policies folder of the test's template,
/// constraint and the case's inventory (under `inventory/`), agrees with the case.
#[test]
fn check_agrees_with_every_library_case() {
    let mut checked = 0;
    for suite_path in suites() {
        let dir = suite_path.parent().unwrap();
        let suite = yaml(&suite_path);
        for test in suite["tests"].as_array().unwrap() {
            let policies = tempfile::tempdir().unwrap();
            let copy = |rel: &str, to: &Path| {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(dir.join(rel), to).unwrap();
            };
            copy(
                test["template"].as_str().unwrap(),
                &policies.path().join("template.yaml"),
            );
            copy(
                test["constraint"].as_str().unwrap(),
                &policies.path().join("constraint.yaml"),
            );
            let constraint = yaml(&dir.join(test["constraint"].as_str().unwrap()));
            let name = constraint["metadata"]["name"].as_str().unwrap();
            for case in test["cases"].as_array().unwrap() {
                let inventory = policies.path().join("inventory");
                let _ = std::fs::remove_dir_all(&inventory);
                for (i, file) in case["inventory"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    copy(file.as_str().unwrap(), &inventory.join(format!("{i}.yaml")));
                }
                let object = dir.join(case["object"].as_str().unwrap());
                let output = verdict(&[
                    "check",
                    "--policies",
                    policies.path().to_str().unwrap(),
                    "-f",
                    object.to_str().unwrap(),
                    "--output",
                    "json",
                ]);
                let what = format!(
                    "{} / {} / {}",
                    suite_path.display(),
                    test["name"],
                    case["name"]
                );
                let report: Value = serde_json::from_slice(&output.stdout)
                    .unwrap_or_else(|_| panic!("{what}: {}", text(&output)));
                let findings: Vec<&Value> = report["objects"][0]["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["origin"]["type"] == "constraint")
                    .collect();
                for f in &findings {
                    assert_eq!(f["code"], "CONSTRAINT_VIOLATION", "{what}: {f}");
                    assert_eq!(f["severity"], "deny", "{what}: {f}");
                    assert_eq!(f["origin"]["constraint"], name, "{what}: {f}");
                    assert_eq!(f["origin"]["enforcementAction"], "deny", "{what}: {f}");
                    assert_eq!(f["origin"]["kind"], constraint["kind"], "{what}: {f}");
                    assert_eq!(
                        f["origin"]["template"],
                        constraint["kind"].as_str().unwrap().to_lowercase(),
                        "{what}: {f}"
                    );
                }
                let prefix = format!("[{name}] ");
                let messages: Vec<&str> = findings
                    .iter()
                    .map(|f| {
                        f["message"]
                            .as_str()
                            .unwrap()
                            .strip_prefix(&prefix)
                            .unwrap()
                    })
                    .collect();
                for assertion in case["assertions"].as_array().unwrap() {
                    let (least, most) = expected(assertion);
                    let matching = match assertion["message"].as_str() {
                        Some(p) => {
                            let re = regex::Regex::new(p).unwrap();
                            messages.iter().filter(|m| re.is_match(m)).count()
                        }
                        None => messages.len(),
                    };
                    assert!(
                        (least..=most).contains(&matching),
                        "{what}: {matching} matching of {messages:?} for {assertion}"
                    );
                }
                let denied = !findings.is_empty();
                assert_eq!(
                    output.status.code(),
                    Some(i32::from(denied)),
                    "{what}: {}",
                    text(&output)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, case_count(&suites()));
}

/// A case whose assertion does not hold fails, naming its file and line; `invalid` tests
/// pass only when the constraint is refused by the template's schema.
#[test]
fn failing_cases_and_invalid_constraints_are_reported_as_gator_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let policy = library().join("general/requiredlabels");
    common::fs::copy_dir(&policy, dir.path());
    let suite_path = dir.path().join("suite.yaml");
    let suite = std::fs::read_to_string(&suite_path).unwrap();
    // The first case (example-allowed) now wants a violation.
    let broken = suite.replacen("violations: no", "violations: yes", 1);
    assert_ne!(broken, suite);
    std::fs::write(&suite_path, broken).unwrap();
    std::fs::write(
        dir.path().join("bad-params.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {name: bad}\nspec:\n  parameters:\n    labels: owner\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("invalid_suite.yaml"),
        "kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\nmetadata: {name: invalid}\ntests:\n- name: refused\n  template: template.yaml\n  constraint: bad-params.yaml\n  invalid: true\n- name: accepted\n  template: template.yaml\n  constraint: samples/all-must-have-owner/constraint.yaml\n  invalid: true\n- name: skipped\n  skip: true\n",
    )
    .unwrap();
    // The folder itself holds the bad constraint: move it where `verdict test` does not
    // load the folder's constraints as one set (it runs each suite's own).
    let output = verdict(&["test", dir.path().to_str().unwrap()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let at = |line: usize| {
        format!(
            "{}:{line}: requiredlabels/must-have-owner/example-allowed",
            suite_path.display()
        )
    };
    assert!(out.contains(&format!("FAIL {}", at(10))), "{out}");
    assert!(
        out.contains("got 0 violations but want at least 1"),
        "{out}"
    );
    assert!(out.contains("invalid/accepted"), "{out}");
    assert!(!out.contains("invalid/refused"), "{out}");
    assert!(out.contains("FAIL: 1/"), "{out}");
    assert!(out.contains("ERROR: 1/"), "{out}");
    assert!(out.contains("SKIPPED: 1"), "{out}");
}

#[test]
fn a_bad_constraint_is_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        library().join("general/requiredlabels/template.yaml"),
        dir.path().join("template.yaml"),
    )
    .unwrap();
    let constraints = "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {name: good}\nspec: {parameters: {labels: [{key: owner}]}}\n---\n# a second one\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {name: bad}\nspec:\n  parameters:\n    labels: [{key: 1}]\n";
    std::fs::write(dir.path().join("constraints.yaml"), constraints).unwrap();
    let output = verdict(&[
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
        "-f",
        "-",
    ]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    let file = dir.path().join("constraints.yaml");
    assert!(out.contains(&format!("{}:7:", file.display())), "{out}");
    assert!(
        out.contains("spec.parameters.labels[0].key: must be of type string"),
        "{out}"
    );

    std::fs::write(
        dir.path().join("constraints.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNoSuchKind\nmetadata: {name: x}\n",
    )
    .unwrap();
    let out = text(&verdict(&[
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
        "-f",
        "-",
    ]));
    assert!(
        out.contains("K8sNoSuchKind, which no ConstraintTemplate"),
        "{out}"
    );
}

/// Writes `text` to `path` by a rename, so that the server's poll never reads it half
/// written.
fn write_atomically(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn namespace_review(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Namespace"},
            "resource": {"group": "", "version": "v1", "resource": "namespaces"},
            "name": name,
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        }
    })
}

fn constraint(name: &str, action: &str, label: &str) -> String {
    format!(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata:\n  name: {name}\nspec:\n  enforcementAction: {action}\n  match:\n    kinds: [{{apiGroups: [\"\"], kinds: [Namespace]}}]\n    excludedNamespaces: [\"kube-*\"]\n  parameters:\n    labels: [{{key: {label}}}]\n"
    )
}

/// The server judges with the folder's constraints: `deny` denies with the constraint's
/// name and `CONSTRAINT_VIOLATION`, `warn` warns, `dryrun` only shows in `/v1/check`; a
/// new constraint is live on reload, and a broken one is refused while the last good set
/// keeps judging.
#[tokio::test]
async fn the_server_enforces_constraints_by_their_action() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        library().join("general/requiredlabels/template.yaml"),
        dir.path().join("template.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("constraints.yaml"),
        [
            constraint("need-owner", "deny", "owner"),
            constraint("want-team", "warn", "team"),
            constraint("count-cost", "dryrun", "cost"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let server = Server::start_with(Options {
        policies: dir.path().to_path_buf(),
        ..Options::default()
    });
    let client = server.client(true);
    let (_, body) = server
        .validate(&client, &namespace_review("team-a", json!({})))
        .await;
    let response = &body["response"];
    assert_eq!(response["allowed"], false, "{body}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("[CONSTRAINT_VIOLATION] [need-owner] you must provide labels: {\"owner\"}"),
        "{message}"
    );
    assert!(
        !message.contains("count-cost") && !message.contains("want-team"),
        "{message}"
    );
    let warnings = response["warnings"].to_string();
    assert!(
        warnings.contains("[CONSTRAINT_VIOLATION] [want-team]"),
        "{warnings}"
    );
    assert!(!warnings.contains("count-cost"), "{warnings}");

    // Excluded namespaces (Gatekeeper's prefix glob) and labelled objects pass.
    let (_, body) = server
        .validate(&client, &namespace_review("kube-x", json!({})))
        .await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let all = json!({"owner": "a", "team": "b", "cost": "c"});
    let (_, body) = server
        .validate(&client, &namespace_review("team-b", all))
        .await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"].get("warnings").is_none(), "{body}");

    // The dry run reports every finding with its constraint.
    let report = server
        .dry_run(
            &client,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-c}\n",
        )
        .await;
    let messages = report["objects"][0]["messages"].as_array().unwrap();
    let by_name = |name: &str| {
        messages
            .iter()
            .find(|m| m["origin"]["constraint"] == name)
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    assert_eq!(by_name("need-owner")["severity"], "deny");
    assert_eq!(by_name("want-team")["severity"], "warn");
    let dry = by_name("count-cost");
    assert_eq!(dry["severity"], "dryrun");
    assert_eq!(
        dry["origin"],
        json!({"type": "constraint", "constraint": "count-cost", "kind": "K8sRequiredLabels",
               "template": "k8srequiredlabels", "file": server.policies().join("constraints.yaml").display().to_string(),
               "enforcementAction": "dryrun", "details": {"missing_labels": ["cost"]}})
    );
    let text_report = server
        .dry_run_text(
            &client,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-c}\n",
        )
        .await;
    assert!(
        text_report.contains("dryrun [CONSTRAINT_VIOLATION] [count-cost]")
            && text_report.contains("from constraint K8sRequiredLabels/count-cost (template k8srequiredlabels, enforcementAction dryrun)"),
        "{text_report}"
    );

    // A new constraint is live on reload; a broken one is refused and the last set stays.
    let client2 = client_trusting(&server.ca_pem, false);
    write_atomically(
        &server.policies().join("more.yaml"),
        &constraint("need-tier", "deny", "tier"),
    );
    let tiered = json!({"owner": "a", "team": "b", "cost": "c"});
    let live = eventually(Duration::from_secs(15), || async {
        let (_, body) = server
            .validate(&client2, &namespace_review("team-d", tiered.clone()))
            .await;
        body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[need-tier]")
    })
    .await;
    assert!(live, "the new constraint was not live");
    write_atomically(
        &server.policies().join("more.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {name: need-tier}\nspec: {enforcementAction: block}\n",
    );
    // The failure is counted, then logged: wait for both (the log line comes a little later).
    let refused = eventually(Duration::from_secs(15), || async {
        server
            .metrics_text()
            .await
            .contains("verdict_policy_reloads_total{result=\"failure\"} 1")
            && server
                .logs()
                .contains("unknown enforcementAction \\\"block\\\"")
    })
    .await;
    assert!(refused, "{}", server.logs());
    let (_, body) = server
        .validate(&client2, &namespace_review("team-e", tiered))
        .await;
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[need-tier]"),
        "{body}"
    );
}
