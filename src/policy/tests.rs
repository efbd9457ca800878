use super::*;
use crate::cluster::Place;
use std::time::Instant;

fn sources(rego: &[(&str, &str)], data: &[(&str, &[&str], &str)]) -> PolicySources {
    let file = |path: &str, dir: &[&str], contents: &str| SourceFile {
        path: path.to_string(),
        dir: dir.iter().map(|s| s.to_string()).collect(),
        contents: contents.to_string(),
    };
    PolicySources {
        rego: rego.iter().map(|(p, c)| file(p, &[], c)).collect(),
        tests: Vec::new(),
        data: data.iter().map(|(p, d, c)| file(p, d, c)).collect(),
        other: Vec::new(),
    }
}

fn input(json: serde_json::Value) -> super::Input {
    Value::from(json).into()
}

const SECOND: Duration = Duration::from_secs(1);

impl PolicySet {
    fn compile_for_test(sources: &PolicySources) -> Result<Self, PolicyError> {
        Self::compile(sources, &Arc::new(TrustRoot::default()))
    }
}

#[test]
fn collects_deny_warn_and_violation_from_every_package() {
    let set = PolicySet::compile_for_test(&sources(
        &[
            ("a.rego", "package a\ndeny contains \"a-deny\" if input.x\nwarn contains \"a-warn\" if input.x\n"),
            ("b.rego", "package b.c\nviolation contains {\"msg\": \"b-violation\", \"code\": \"B_CODE\"} if input.x\n"),
            ("c.rego", "package c\nallow if input.x\n"),
        ],
        &[],
    ))
    .expect("compiles");
    let findings = set
        .evaluate(input(serde_json::json!({"x": true})), SECOND)
        .expect("evaluates");
    let got: Vec<_> = findings
        .iter()
        .map(|f| (f.severity, f.code.to_string(), f.message.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Severity::Deny,
                "POLICY_DENIED".to_string(),
                "a-deny".to_string()
            ),
            (
                Severity::Warn,
                "POLICY_WARNING".to_string(),
                "a-warn".to_string()
            ),
            (
                Severity::Deny,
                "B_CODE".to_string(),
                "b-violation".to_string()
            ),
        ]
    );
    assert_eq!(
        findings[2].origin,
        Origin::Policy {
            files: vec!["b.rego".into()],
            rule: "data.b.c.violation".into()
        }
    );
    let none = set
        .evaluate(input(serde_json::json!({"x": false})), SECOND)
        .expect("evaluates");
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn compile_errors_name_file_line_and_column() {
    let err = PolicySet::compile_for_test(&sources(
        &[(
            "policies/bad.rego",
            "package bad\n\ndeny contains msg if {\n  msg := \n}\n",
        )],
        &[],
    ))
    .expect_err("fails");
    let text = err.to_string();
    assert!(
        text.contains("policies/bad.rego:5:1") || text.contains("policies/bad.rego:4:"),
        "{text}"
    );
}

#[test]
fn loads_classic_v0_admission_policies_unchanged() {
    let classic = r#"package kubernetes.admission

deny[msg] {
  input.request.kind.kind == "Pod"
  image := input.request.object.spec.containers[_].image
  not startswith(image, "hooli.com/")
  msg := sprintf("image '%v' comes from untrusted registry", [image])
}
"#;
    let set =
        PolicySet::compile_for_test(&sources(&[("classic.rego", classic)], &[])).expect("compiles");
    let review = serde_json::json!({"request": {"kind": {"kind": "Pod"}, "object": {"spec": {"containers": [{"image": "nginx"}]}}}});
    let findings = set.evaluate(input(review), SECOND).expect("evaluates");
    assert_eq!(findings.len(), 1);
    assert_eq!(
        findings[0].message,
        "image 'nginx' comes from untrusted registry"
    );
}

#[test]
fn merges_data_documents_at_their_folder_path() {
    let set = PolicySet::compile_for_test(&sources(
        &[("p.rego", "package p\ndeny contains r if { some r in data.lists.registries; not r in data.allowed }\n")],
        &[
            ("lists/r.yaml", &["lists"], "registries: [a.io, b.io]\n"),
            ("root.json", &[], "{\"allowed\": [\"a.io\"]}"),
        ],
    ))
    .expect("compiles");
    let findings = set
        .evaluate(input(serde_json::json!({})), SECOND)
        .expect("evaluates");
    let messages: Vec<_> = findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(messages, ["b.io"]);
}

#[test]
fn rejects_data_documents_that_are_not_mappings() {
    let err = PolicySet::compile_for_test(&sources(&[], &[("list.yaml", &[], "- a\n- b\n")]))
        .expect_err("fails");
    assert!(err.to_string().contains("list.yaml"), "{err}");
    let err =
        PolicySet::compile_for_test(&sources(&[], &[("x.json", &[], "{nope")])).expect_err("fails");
    assert!(err.to_string().contains("x.json"), "{err}");
}

#[test]
fn runaway_policy_times_out_instead_of_allowing() {
    let runaway = "package slow\ndeny contains \"never\" if {\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  i + j < 0\n}\n";
    let set =
        PolicySet::compile_for_test(&sources(&[("slow.rego", runaway)], &[])).expect("compiles");
    let started = Instant::now();
    let err = set
        .evaluate(input(serde_json::json!({})), Duration::from_millis(100))
        .expect_err("times out");
    assert!(matches!(err, EvalError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let finding = err.into_finding();
    assert_eq!(finding.code, ReasonCode::PolicyTimeout);
    assert_eq!(finding.severity, Severity::Deny);
}

#[test]
fn runtime_errors_become_policy_error_denials() {
    let set = PolicySet::compile_for_test(&sources(
        &[(
            "e.rego",
            "package e\ndeny contains x if { x := to_number(input.s) }\n",
        )],
        &[],
    ))
    .expect("compiles");
    let err = set
        .evaluate(input(serde_json::json!({"s": "not a number"})), SECOND)
        .expect_err("fails");
    assert_eq!(err.into_finding().code, ReasonCode::PolicyError);
}

fn review(uid: &str, namespace: &str, image: &str) -> (serde_json::Value, serde_json::Value) {
    let raw = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "namespace": namespace, "name": format!("web-{uid}"),
            "object": {"metadata": {"name": format!("web-{uid}")}, "spec": {"containers": [{"name": "app", "image": image}]}}}});
    let images = serde_json::json!([{"container": "app", "reference": image}]);
    (raw, images)
}

fn key_of(set: &PolicySet, (raw, images): &(serde_json::Value, serde_json::Value)) -> Option<Key> {
    let raw = Node::from(raw);
    set.key(
        raw.as_object().expect("object"),
        images.as_array().expect("array"),
        gatekeeper::Point::Validation,
    )
}

const BY_IMAGE: &str = "package p\ndeny contains sprintf(\"%s in %s\", [i.reference, input.request.namespace]) if {\n  some i in input.images\n  endswith(i.reference, \":latest\")\n}\n";

#[test]
fn findings_are_remembered_by_what_the_policies_read() {
    let set =
        PolicySet::compile_for_test(&sources(&[("p.rego", BY_IMAGE)], &[])).expect("compiles");
    let first = key_of(&set, &review("1", "team-a", "nginx:latest")).expect("keyed");
    // Another Pod of the same Deployment: other uid and name, which the policy never reads.
    assert_eq!(
        key_of(&set, &review("2", "team-a", "nginx:latest")),
        Some(first)
    );
    for other in [
        review("1", "team-b", "nginx:latest"),
        review("1", "team-a", "nginx:1.27"),
    ] {
        assert_ne!(key_of(&set, &other), Some(first), "{other:?}");
    }
    assert_eq!(set.recall(&first), None);
    let (raw, images) = review("1", "team-a", "nginx:latest");
    let raw = Node::from(&raw);
    let input = set
        .input(raw.as_object().expect("object"), &images)
        .expect("input");
    let findings = set.evaluate(input, SECOND).expect("evaluates");
    assert_eq!(findings[0].message, "nginx:latest in team-a");
    set.remember(first, &findings);
    assert_eq!(set.recall(&first), Some(findings));
}

#[test]
fn findings_are_not_remembered_when_they_could_differ() {
    for rego in [
        // An answer that changes with time, chance or the network.
        "package p\ndeny contains \"old\" if time.now_ns() > 0\n",
        "package p\ndeny contains \"x\" if rand.intn(\"k\", 10) > 100\n",
        "package p\ndeny contains uuid.rfc4122(\"k\") if input.images\n",
        // Inputs that never come twice: the uid, or the whole review, is read.
        "package p\ndeny contains input.request.uid if false\n",
        "package p\ndeny contains \"x\" if count(input) > 100\n",
    ] {
        let set =
            PolicySet::compile_for_test(&sources(&[("p.rego", rego)], &[])).expect("compiles");
        assert_eq!(
            key_of(&set, &review("1", "team-a", "nginx")),
            None,
            "{rego}"
        );
    }
}

/// A body parsed into only what verdict and the policies read is decoded, extracted, keyed
/// and turned into input exactly as the whole body is: for every fixture review, an
/// UPDATE with an old object and the ephemeral-containers subresource, with the shipped
/// policies and with a set that reads the old object and annotations.
#[test]
fn reviews_parsed_for_a_policy_set_are_judged_as_whole_ones() {
    use crate::admission::{decode, Decoded};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = PolicySet::load(&root.join("policies"), &Arc::new(TrustRoot::default()))
        .expect("shipped policies load");
    let reader = PolicySet::compile_for_test(&sources(
        &[(
            "old.rego",
            r#"package old
deny contains "relabelled" if {
    input.request.oldObject.metadata.labels.tier != input.request.object.metadata.labels.tier
}
warn contains msg if {
    some key, value in input.request.object.metadata.annotations
    msg := sprintf("%s=%s", [key, value])
}
"#,
        )],
        &[],
    ))
    .expect("compiles");
    let mut bodies = Vec::new();
    let dir = root.join("../shared/fixtures/admission");
    for sub in std::fs::read_dir(dir).expect("fixtures") {
        for file in std::fs::read_dir(sub.expect("dir").path()).expect("fixtures") {
            bodies.push(std::fs::read(file.expect("file").path()).expect("fixture"));
        }
    }
    bodies.push(
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "prod", "operation": "UPDATE", "userInfo": {"username": "u"},
                "object": {"metadata": {"name": "web", "labels": {"tier": "b"}, "annotations": {"a": "1"},
                    "managedFields": [{"manager": "kubectl"}]},
                    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}],
                        "volumes": [{"name": "v"}]}}}},
                "oldObject": {"metadata": {"name": "web", "labels": {"tier": "a"}}}}
        }))
        .expect("serializes"),
    );
    bodies.push(
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {"uid": "e", "kind": {"group": "", "version": "v1", "kind": "EphemeralContainers"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "ephemeralcontainers",
                "namespace": "dev", "operation": "UPDATE", "userInfo": {"username": "u"},
                "object": {"metadata": {"name": "p"}, "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}
        }))
        .expect("serializes"),
    );
    bodies.push(
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "g", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {"username": "u"},
                "object": {"kind": "Pod", "metadata": {"generateName": "web-7d4f-", "namespace": "team-a"},
                    "spec": {"initContainers": [{"name": "i", "image": "busybox:1"}], "containers": []}}}
        }))
        .expect("serializes"),
    );
    let images =
        vec![serde_json::json!({"container": "c", "reference": "nginx:1", "signatures": []})];
    fn show(
        decoded: Result<Decoded<'_>, crate::admission::NotAReview>,
    ) -> (String, Option<Object<'_>>) {
        match decoded {
            Ok(Decoded::Judge(review)) => {
                let found = crate::images::extract(&review.subject.kind, review.object())
                    .expect("well formed");
                let raw = review.raw.as_object().cloned().unwrap_or_default();
                (
                    format!(
                        "judge {} {:?} {found:?}",
                        review.api_version, review.subject
                    ),
                    Some(raw),
                )
            }
            other => (format!("{other:?}"), None),
        }
    }
    let mut judged = 0;
    for set in [&shipped, &reader] {
        for body in &bodies {
            let whole: Node = serde_json::from_slice(body).expect("fixture is JSON");
            let parsed = set.review_reads().parse(body).expect("parses");
            let (whole, whole_raw) = show(decode(whole));
            let (parsed, parsed_raw) = show(decode(parsed));
            assert_eq!(parsed, whole);
            let (Some(whole_raw), Some(parsed_raw)) = (whole_raw, parsed_raw) else {
                continue;
            };
            let point = gatekeeper::Point::Validation;
            assert_eq!(
                set.key(&parsed_raw, &images, point),
                set.key(&whole_raw, &images, point)
            );
            let input = |raw| set.input(raw, &images).expect("input");
            assert_eq!(input(&parsed_raw).rego, input(&whole_raw).rego);
            let findings = |raw| {
                set.evaluate(input(raw), SECOND)
                    .expect("evaluates")
                    .iter()
                    .map(|f| f.message.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(findings(&parsed_raw), findings(&whole_raw));
            judged += 1;
        }
    }
    assert!(judged >= 24, "{judged}");
    let update = set_findings(&reader, bodies.len() - 3, &bodies);
    assert_eq!(update, ["relabelled", "a=1"]);
}

fn set_findings(set: &PolicySet, i: usize, bodies: &[Vec<u8>]) -> Vec<String> {
    let parsed = set.review_reads().parse(&bodies[i]).expect("parses");
    let raw = parsed.as_object().cloned().unwrap_or_default();
    let images: Vec<serde_json::Value> = Vec::new();
    set.evaluate(set.input(&raw, &images).expect("input"), SECOND)
        .expect("evaluates")
        .iter()
        .map(|f| f.message.clone())
        .collect()
}

const LABEL_POLICY: &str = "package p\ndeny contains \"labelled\" if data.inventory.cluster.v1.Namespace[input.ns].metadata.labels.x == \"1\"\n";

fn namespace(name: &str, x: &str) -> (Place, Value) {
    let object = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"x": x}, "managedFields": [{"manager": "m"}]}});
    let place = Place::of(&object).expect("an object");
    (place, Value::from(crate::cluster::inventory::kept(object)))
}

fn denied(set: &PolicySet, ns: &str) -> bool {
    let findings = set
        .evaluate(input(serde_json::json!({"ns": ns})), SECOND)
        .expect("evaluates");
    !findings.is_empty()
}

#[test]
fn inventory_files_and_the_synced_copy_reach_rego_at_the_same_paths() {
    let offline = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {x: '1'}}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: {x: '1'}}}\n";
    let set = PolicySet::compile_for_test(&sources(
        &[("p.rego", LABEL_POLICY)],
        &[
            ("inventory/ns.yaml", &["inventory"], offline),
            // Not Kubernetes objects: plain data at data.inventory.notes.
            ("inventory/notes.yaml", &["inventory"], "notes: {team: a}\n"),
            (
                "sync.yaml",
                &[],
                "apiVersion: syncset.gatekeeper.sh/v1alpha1\nkind: SyncSet\nmetadata: {name: s}\nspec:\n  gvks: [{version: v1, kind: Service}]\n",
            ),
        ],
    ))
    .expect("compiles");
    assert!(denied(&set, "a") && denied(&set, "b"));
    assert_eq!(set.sync_kinds.len(), 1);
    assert!(set.inventory_gap().is_some(), "no synced copy yet");

    // The cluster says `a` is no longer labelled and knows `c`: synced objects replace the
    // files' whole; `b` stays as the file has it.
    let mut synced = Document::default();
    for (place, object) in [namespace("a", "0"), namespace("c", "1")] {
        synced.insert(&place, object);
    }
    let listed: BTreeSet<Gvk> = [Gvk::namespace()].into();
    let with = set.with_inventory(&synced, &listed).expect("merges");
    assert!(!denied(&with, "a") && denied(&with, "b") && denied(&with, "c"));
    assert_eq!(
        with.namespace_labels("a"),
        Some(BTreeMap::from([("x".to_string(), "0".to_string())]))
    );
    assert!(
        with.inventory_gap()
            .is_some_and(|g| g.contains("v1/Service")),
        "the SyncSet's kind is not listed yet"
    );
    let all: BTreeSet<Gvk> = [
        Gvk::namespace(),
        Gvk {
            group: String::new(),
            version: "v1".into(),
            kind: "Service".into(),
        },
    ]
    .into();
    assert_eq!(
        set.with_inventory(&synced, &all)
            .expect("merges")
            .inventory_gap(),
        None
    );
    let notes = with
        .engine
        .clone()
        .eval_query("data.inventory.notes.team".to_string(), false)
        .expect("plain data stays");
    assert_eq!(notes.result[0].expressions[0].value, Value::from("a"));
}

#[test]
fn a_new_inventory_forgets_remembered_findings() {
    let set =
        PolicySet::compile_for_test(&sources(&[("p.rego", LABEL_POLICY)], &[])).expect("compiles");
    let listed: BTreeSet<Gvk> = [Gvk::namespace()].into();
    let mut synced = Document::default();
    let (place, object) = namespace("a", "1");
    synced.insert(&place, object);
    let before = set.with_inventory(&synced, &listed).expect("merges");
    let key: Key = [7; 32];
    before.remember(key, &[]);
    assert!(before.recall(&key).is_some());
    let after = before.with_inventory(&synced, &listed).expect("merges");
    assert!(
        after.recall(&key).is_none(),
        "findings from before the change are not answered"
    );
}

const LABELS_TEMPLATE: &str = "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {name: k8sneedsimage}\nspec:\n  crd: {spec: {names: {kind: K8sNeedsImage}}}\n  targets:\n  - target: admission.k8s.gatekeeper.sh\n    rego: |\n      package k8sneedsimage\n      violation[{\"msg\": msg}] {\n        c := input.review.object.spec.containers[_]\n        not startswith(c.image, input.parameters.prefix)\n        msg := sprintf(\"%v is not from %v\", [c.image, input.parameters.prefix])\n      }\n";

const LABELS_CONSTRAINT: &str = "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNeedsImage\nmetadata: {name: ours}\nspec:\n  match:\n    excludedNamespaces: [\"kube-*\"]\n    labelSelector: {matchLabels: {app: web}}\n  parameters: {prefix: ghcr.io/acme/}\n";

/// The decision key holds which constraints match, not what matching read: Pods that
/// differ in name, uid and labels no constraint selects on share a key, and one that a
/// constraint stops (or starts) matching does not.
#[test]
fn constraints_are_keyed_by_what_they_match() {
    let set = PolicySet::compile_for_test(&sources(
        &[],
        &[
            ("gk/template.yaml", &["gk"], LABELS_TEMPLATE),
            ("gk/constraint.yaml", &["gk"], LABELS_CONSTRAINT),
        ],
    ))
    .expect("compiles");
    let pod = |name: &str, namespace: &str, labels: serde_json::Value| {
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": format!("uid-{name}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
                "operation": "CREATE", "userInfo": {"username": "u"},
                "object": {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    };
    let images = serde_json::json!([]);
    let key = |review: &serde_json::Value| key_of(&set, &(review.clone(), images.clone()));
    let judged = |review: &serde_json::Value| {
        let raw = Node::from(review);
        let input = set
            .input(raw.as_object().expect("object"), &images)
            .expect("input");
        set.evaluate(input, SECOND).expect("evaluates").len()
    };
    let web = json_labels("web", "x");
    let first = pod("web-1", "team-a", web.clone());
    let second = pod("web-2", "team-a", json_labels("web", "y"));
    assert!(key(&first).is_some());
    assert_eq!(key(&first), key(&second));
    // Audit is another enforcement point: another key.
    let raw = Node::from(&first);
    let at_audit = set.key(
        raw.as_object().expect("object"),
        images.as_array().expect("array"),
        gatekeeper::Point::Audit,
    );
    assert_ne!(key(&first), at_audit);
    assert_eq!((judged(&first), judged(&second)), (1, 1));
    for other in [
        pod("web-1", "kube-system", web.clone()),
        pod("web-1", "team-a", json_labels("db", "x")),
    ] {
        assert_ne!(key(&first), key(&other), "{other}");
        assert_eq!(judged(&other), 0, "{other}");
    }
}

fn json_labels(app: &str, other: &str) -> serde_json::Value {
    serde_json::json!({"app": app, "pod-template-hash": other})
}

/// `kubectl get constrainttemplates,constraints -o yaml` writes one `v1 List`: its items
/// are read, status and all.
#[test]
fn templates_and_constraints_come_in_a_list() {
    let indent = |text: &str| {
        text.lines()
            .enumerate()
            .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect::<String>()
    };
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}{}",
        indent(&format!("{LABELS_TEMPLATE}status: {{created: true}}")),
        indent(&format!(
            "{LABELS_CONSTRAINT}status: {{totalViolations: 3}}"
        ))
    );
    let set =
        PolicySet::compile_for_test(&sources(&[], &[("gk.yaml", &[], &list)])).expect("compiles");
    assert_eq!(set.gatekeeper.constraints().len(), 1);
    assert_eq!(set.gatekeeper.constraints()[0].name, "ours");
}

/// The twelve library policies of `../shared/fixtures/gatekeeper-library` (template and the
/// first tested constraint of each): what their libraries read of `input.review` through
/// functions (`is_update(input.review)`, `object.get(input, "parameters", {})`) is known,
/// so they do not read the uid, and a Pod sent again is remembered.
#[test]
fn the_library_policies_leave_decisions_to_remember() {
    let library =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gatekeeper-library");
    let mut data = Vec::new();
    for group in ["general", "pod-security-policy"] {
        for entry in std::fs::read_dir(library.join(group)).expect("library") {
            let policy = entry.expect("entry").path();
            let Ok(suite) = std::fs::read_to_string(policy.join("suite.yaml")) else {
                continue;
            };
            let suite: serde_json::Value = yaml_serde::from_str(&suite).expect("suite");
            for key in ["template", "constraint"] {
                let path = policy.join(suite["tests"][0][key].as_str().expect(key));
                let text = std::fs::read_to_string(&path).expect("file");
                data.push((path.display().to_string(), text));
            }
        }
    }
    assert_eq!(data.len(), 24);
    let data: Vec<(&str, &[&str], &str)> = data
        .iter()
        .map(|(p, t)| (p.as_str(), &[][..], t.as_str()))
        .collect();
    let set = PolicySet::compile_for_test(&sources(&[], &data)).expect("compiles");
    assert_eq!(set.gatekeeper.constraints().len(), 12);
    assert!(set
        .key_reads
        .field("request")
        .and_then(|r| r.field("uid"))
        .is_none());
    let pod = |uid: &str| {
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default",
                "operation": "CREATE", "userInfo": {"username": "u"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    };
    let images = serde_json::json!([]);
    let first = key_of(&set, &(pod("a"), images.clone()));
    assert!(first.is_some());
    assert_eq!(first, key_of(&set, &(pod("b"), images)));
}
