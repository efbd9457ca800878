use super::*;
use serde_json::{json, Value};

/// What verdict's own code reads, as the pruned parse takes it.
fn own_reads_tree() -> Reads {
    let mut reads = Reads::Fields(BTreeMap::new());
    for path in own_reads() {
        reads.add(&path);
    }
    reads
}

/// Reviews whose objects carry far more than verdict reads: every admission fixture
/// from real clusters, and each kind with a pod spec wrapped around a full Pod's spec
/// and metadata.
fn rich_reviews() -> Vec<Value> {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission");
    let mut reviews: Vec<Value> = Vec::new();
    for dir in std::fs::read_dir(root).expect("fixtures") {
        for file in std::fs::read_dir(dir.expect("dir").path()).expect("fixtures") {
            let path = file.expect("file").path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("fixture");
                reviews.push(serde_json::from_str(&text).expect("json"));
            }
        }
    }
    let pod = reviews
        .iter()
        .find(|r| r["request"]["object"]["kind"] == "Pod")
        .map(|r| r["request"]["object"].clone())
        .expect("a Pod fixture");
    for (kind, path) in images::POD_SPEC_PATHS {
        let mut object = wrap_spec(path, &pod);
        object["kind"] = json!(kind);
        object["apiVersion"] = json!("v1");
        object["metadata"] = pod["metadata"].clone();
        reviews.push(review(
            "admission.k8s.io/v1",
            json!({
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "r"},
                "operation": "CREATE", "userInfo": {"username": "alice"},
                "object": object,
            }),
        ));
    }
    reviews
}

/// An object whose `path` (ending in `spec`) leads to the Pod's spec, with the Pod's
/// metadata beside every field on the way.
fn wrap_spec(path: &[&str], pod: &Value) -> Value {
    match path {
        [] => pod["spec"].clone(),
        [field, rest @ ..] => {
            json!({*field: wrap_spec(rest, pod), "metadata": pod["metadata"].clone()})
        }
    }
}

/// verdict's own readers see the same through the pruned parse as through the whole
/// body: a reader that starts reading a field missing from its declared reads fails
/// here (the rich reviews carry labels, annotations, volumes, resources, ...).
#[test]
fn own_reads_keep_all_that_verdict_reads() {
    let reads = own_reads_tree();
    let reviews = rich_reviews();
    assert!(reviews.len() > images::POD_SPEC_PATHS.len());
    let mut judged_with_images = 0;
    for review in &reviews {
        let body = serde_json::to_vec(review).expect("json");
        let pruned = parse_body(&body, &reads).expect("parses");
        let whole = Node::from(review);
        let describe = |raw: Node<'_>| match decode(raw) {
            Err(e) => format!("not a review: {e}"),
            Ok(Decoded::Judge(r)) => {
                let kind = r.subject.kind.clone();
                let found = images::extract(&kind, r.object());
                format!("judge {:?} {found:?}", r.subject)
            }
            Ok(Decoded::Refuse {
                subject, problem, ..
            }) => format!("refuse {subject:?} {problem}"),
        };
        let (pruned, whole) = (describe(pruned), describe(whole));
        assert_eq!(pruned, whole);
        if pruned.starts_with("judge") && pruned.contains("ImageOccurrence") {
            judged_with_images += 1;
        }
    }
    assert!(judged_with_images > images::POD_SPEC_PATHS.len());
}

/// `decode` of a review given as a `serde_json::Value`.
fn decoded(review: &Value) -> Result<Decoded<'_>, NotAReview> {
    decode(Node::from(review))
}

fn review(api_version: &str, request: Value) -> Value {
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": request})
}

fn pod_request() -> Value {
    json!({
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team-a", "operation": "CREATE", "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
                   "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}
    })
}

#[test]
fn decodes_v1_and_v1beta1_and_echoes_the_version() {
    for version in API_VERSIONS {
        let body = review(version, pod_request());
        let Ok(Decoded::Judge(review)) = decoded(&body) else {
            panic!("{version} should decode");
        };
        assert_eq!(review.subject.describe(), "Pod team-a/web-*");
        let mut findings = Findings::default();
        findings.push(crate::decision::Finding::builtin(
            Severity::Warn,
            ReasonCode::PolicyWarning,
            "hm",
        ));
        let out = serde_json::to_value(respond(review.api_version, &review.subject, &findings))
            .expect("serializes");
        assert_eq!(out["apiVersion"], version);
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["warnings"], json!(["[POLICY_WARNING] hm"]));
    }
}

/// `Pod ns/p` with this uid.
fn pod_p(uid: &str) -> Subject {
    Subject {
        uid: uid.into(),
        kind: "Pod".into(),
        namespace: "ns".into(),
        name: "p".into(),
        ..Default::default()
    }
}

#[test]
fn denial_carries_403_forbidden_and_every_reason() {
    let subject = pod_p("u-2");
    let findings = refusal("broken");
    let out =
        serde_json::to_value(respond(API_VERSIONS[0], &subject, &findings)).expect("serializes");
    let response = &out["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert_eq!(
        response["status"]["message"],
        "verdict denied Pod ns/p:\n- [INVALID_REQUEST] broken"
    );
    assert_eq!(response["auditAnnotations"]["reasons"], "INVALID_REQUEST");
}

#[test]
fn refuses_reviews_it_cannot_judge() {
    let cases = [
        (
            json!({"apiVersion": API_VERSIONS[0], "kind": "AdmissionReview"}),
            "no request",
        ),
        (review(API_VERSIONS[0], json!({"uid": "u-3"})), "malformed"),
        (
            review(API_VERSIONS[0], {
                let mut r = pod_request();
                r["object"] = Value::Null;
                r
            }),
            "request.object is missing",
        ),
        (
            review(API_VERSIONS[0], {
                let mut r = pod_request();
                r.as_object_mut().map(|o| o.remove("object"));
                r
            }),
            "request.object is missing",
        ),
    ];
    for (body, want) in cases {
        match decoded(&body) {
            Ok(Decoded::Refuse { problem, .. }) => assert!(problem.contains(want), "{problem}"),
            other => panic!("expected a refusal containing {want:?}, got {other:?}"),
        }
    }
}

/// The envelope is checked; the objects are the policies' business: fields kube's
/// `DynamicObject` would reject (a string `metadata`, a numeric `apiVersion`) must not
/// turn a review into a refusal.
#[test]
fn judges_objects_kube_could_not_read() {
    let mut request = pod_request();
    request["object"]["metadata"] = json!("not an object");
    request["object"]["apiVersion"] = json!(7);
    request["oldObject"] = json!({"metadata": [1, 2]});
    let body = review(API_VERSIONS[0], request);
    let Ok(Decoded::Judge(judged)) = decoded(&body) else {
        panic!("an odd object is judged, not refused");
    };
    assert_eq!(judged.object()["metadata"].as_str(), Some("not an object"));
    assert_eq!(
        judged.raw["request"]["oldObject"]["metadata"],
        Node::from(&json!([1, 2]))
    );
    // The envelope itself is still checked field by field.
    let mut request = pod_request();
    request["userInfo"]["groups"] = json!("admins");
    assert!(matches!(
        decoded(&review(API_VERSIONS[0], request)),
        Ok(Decoded::Refuse { .. })
    ));
}

/// kube's `AdmissionRequest` with `object` and `oldObject` unread: the oracle for ours.
#[derive(Clone, Debug, Default)]
struct Unread(kube::core::ObjectMeta);

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Self::default())
    }
}

impl kube::core::Resource for Unread {
    type DynamicType = ();
    type Scope = kube::core::DynamicResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn meta(&self) -> &kube::core::ObjectMeta {
        &self.0
    }
    fn meta_mut(&mut self) -> &mut kube::core::ObjectMeta {
        &mut self.0
    }
}

#[test]
fn envelope_is_checked_as_kube_checks_it() {
    let kube = |request: &Value| {
        kube::core::admission::AdmissionRequest::<Unread>::deserialize(request)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // Ours reads the request as `/validate` does: parsed from its text into a node.
    let ours = |request: &Value| {
        let text = request.to_string();
        let node: Node = serde_json::from_str(&text).expect("parses");
        AdmissionRequest::deserialize(&node)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let odd = [
        Value::Null,
        json!(5),
        json!(-1.5),
        json!(true),
        json!("x"),
        json!(""),
        json!([]),
        json!(["x"]),
        json!(["", "v1", "Pod"]),
        json!({}),
        json!({"x": 1}),
        json!("CREATE"),
        json!("PATCH"),
        json!("create"),
    ];
    let mut full = pod_request();
    full["requestKind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    full["requestResource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    full["subResource"] = json!("status");
    full["requestSubResource"] = json!("status");
    full["name"] = json!("web-1");
    full["oldObject"] = json!({"kind": "Pod"});
    full["dryRun"] = json!(false);
    full["options"] = json!({"kind": "CreateOptions"});
    full["userInfo"] =
        json!({"username": "alice", "uid": "1", "groups": ["a"], "extra": {"k": ["v"]}});
    // Every field and every field of a field: missing, or each odd value.
    let mut paths: Vec<Vec<&str>> = Vec::new();
    for (field, value) in full.as_object().expect("object") {
        paths.push(vec![field]);
        for inner in value.as_object().into_iter().flat_map(|o| o.keys()) {
            paths.push(vec![field, inner]);
        }
    }
    paths.push(vec!["userInfo", "extra", "k"]);
    paths.push(vec!["resource", "api_version"]);
    let mut checked = 0;
    for path in &paths {
        let (last, parents) = path.split_last().expect("a path");
        let mut cases = vec![None];
        cases.extend(odd.iter().cloned().map(Some));
        for case in cases {
            let mut request = full.clone();
            let mut parent = &mut request;
            for step in parents {
                parent = &mut parent[*step];
            }
            match &case {
                None => {
                    parent.as_object_mut().map(|o| o.remove(*last));
                }
                Some(value) => parent[*last] = value.clone(),
            }
            assert_eq!(ours(&request), kube(&request), "{path:?} = {case:?}");
            checked += 1;
        }
    }
    for request in [Value::Null, json!([]), json!("x"), json!({})] {
        assert_eq!(ours(&request), kube(&request), "{request}");
    }
    assert!(ours(&full).is_ok());
    assert!(checked > 400, "{checked}");
}

#[test]
fn answers_as_kube_writes_them() {
    use kube::core::admission::AdmissionResponse;
    let subject = pod_p("u-9");
    let finding =
        |severity, code, text: &str| crate::decision::Finding::builtin(severity, code, text);
    let mut cases = vec![Findings::default()];
    let mut warned = Findings::default();
    warned.push(finding(
        Severity::Warn,
        ReasonCode::PolicyWarning,
        "mind \"this\"",
    ));
    cases.push(warned.clone());
    let mut denied = warned;
    denied.push(finding(
        Severity::Deny,
        ReasonCode::InvalidRequest,
        "no\nway",
    ));
    denied.push(finding(
        Severity::Deny,
        ReasonCode::PolicyWarning,
        "nor this",
    ));
    cases.push(denied);
    for api_version in API_VERSIONS {
        for findings in &cases {
            let mut response = AdmissionResponse::invalid("");
            response.types = kube::core::TypeMeta {
                api_version: api_version.to_string(),
                kind: "AdmissionReview".to_string(),
            };
            response.uid = subject.uid.clone();
            response.allowed = true;
            response.result = kube::core::Status::success();
            if findings.denials().next().is_some() {
                response.allowed = false;
                response.result = kube::core::Status::failure(
                    &findings.denial_message(&subject.describe()),
                    "Forbidden",
                )
                .with_code(403);
                response
                    .audit_annotations
                    .insert("reasons".to_string(), findings.denial_codes().join(","));
            }
            let warnings = findings.warning_texts();
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            assert_eq!(
                serde_json::to_string(&respond(api_version, &subject, findings)).expect("ours"),
                serde_json::to_string(&response.into_review()).expect("kube's"),
            );
        }
    }
}

#[test]
fn rejects_what_is_not_a_review() {
    let reads = own_reads_tree();
    for body in [
        &b"{nope"[..],
        b"{\"kind\": \"AdmissionReview\", \"x\": [1,]}",
    ] {
        assert!(matches!(parse_body(body, &reads), Err(NotAReview::Json(_))));
    }
    for body in [
        json!({"kind": "Pod"}),
        json!([1]),
        json!({"kind": "AdmissionReview", "apiVersion": "v1"}),
    ] {
        assert!(matches!(decoded(&body), Err(NotAReview::WrongType)));
    }
}

#[test]
fn parses_api_server_timeouts() {
    assert_eq!(parse_timeout(Some("10s")), Duration::from_secs(10));
    assert_eq!(parse_timeout(Some("1m30s")), Duration::from_secs(30));
    assert_eq!(parse_timeout(Some("1500ms")), Duration::from_millis(1500));
    assert_eq!(parse_timeout(Some("2.5s")), Duration::from_millis(2500));
    assert_eq!(parse_timeout(Some("garbage")), Duration::from_secs(10));
    assert_eq!(parse_timeout(Some("5")), Duration::from_secs(10));
    assert_eq!(parse_timeout(None), Duration::from_secs(10));
    assert_eq!(
        answer_margin(Duration::from_secs(10)),
        Duration::from_secs(1)
    );
    assert_eq!(
        answer_margin(Duration::from_secs(1)),
        Duration::from_millis(100)
    );
}
