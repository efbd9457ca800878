//! AdmissionReview in, AdmissionReview out. Owns reading a review (v1 and v1beta1),
//! deciding whether it can be judged at all, and writing the response as kube's types do;
//! not the judging itself.

use crate::decision::{Findings, ReasonCode, Severity};
use crate::images;
use crate::json::{Node, Reads};
use kube::core::admission::Operation;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview at all: the HTTP layer answers 400.
#[derive(Debug, thiserror::Error)]
pub enum NotAReview {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body is not an AdmissionReview: expected kind \"AdmissionReview\" and apiVersion \"admission.k8s.io/v1\" or \"admission.k8s.io/v1beta1\"")]
    WrongType,
}

/// Who is being judged, for messages, logs and metrics.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
}

impl Subject {
    /// `Pod team-a/web`, or `Pod team-a/web-*` for a generated name.
    pub fn describe(&self) -> String {
        let kind = if self.kind.is_empty() {
            "the object"
        } else {
            &self.kind
        };
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (_, true) => kind.to_string(),
            (true, false) => format!("{kind} {}", self.name),
            (false, false) => format!("{kind} {}/{}", self.namespace, self.name),
        }
    }
}

/// A readable review: either one that can be judged, or one that must be refused as is.
#[derive(Debug)]
pub enum Decoded<'a> {
    Judge(Box<Review<'a>>),
    /// Readable as a review but not judgeable (no request, no object, malformed request).
    Refuse {
        /// The review's `apiVersion`, echoed in the response.
        api_version: &'static str,
        subject: Subject,
        problem: String,
    },
}

/// A review that can be judged.
#[derive(Debug)]
pub struct Review<'a> {
    /// The AdmissionReview as received, or as much of it as verdict and the policies read
    /// (see `PolicySet::parse_review`), borrowing from the body: the Rego input is built
    /// from it.
    pub raw: Node<'a>,
    /// The review's `apiVersion`, echoed in the response.
    pub api_version: &'static str,
    pub subject: Subject,
}

impl<'a> Review<'a> {
    /// The object under review (`request.object`); present by construction.
    pub fn object(&self) -> &Node<'a> {
        &self.raw["request"]["object"]
    }
}

/// The request envelope as kube's `AdmissionRequest` reads it (same name, fields, types and
/// defaults, so the same errors), checked without copying anything out of the parsed review (kube's copy took a
/// tenth of a remembered review's CPU). `object` and `oldObject` are not read at all: they
/// stay raw JSON for the policies, so a field verdict does not judge cannot make it refuse a
/// review. `envelope_is_checked_as_kube_checks_it` holds the two to the same answers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read only to be checked
struct AdmissionRequest {
    uid: Text,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<Text>,
    #[serde(default)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<Text>,
    #[serde(default)]
    name: Text,
    #[serde(default)]
    namespace: Option<Text>,
    operation: Operation,
    user_info: UserInfo,
    object: Option<IgnoredAny>,
    old_object: Option<IgnoredAny>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    options: Option<IgnoredAny>,
}

/// A string, checked and not kept.
#[derive(Default, PartialEq, Eq, PartialOrd, Ord)]
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl serde::de::Visitor<'_> for Any {
            type Value = Text;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        deserializer.deserialize_str(Any)
    }
}

/// kube's `GroupVersionKind`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct GroupVersionKind {
    group: Text,
    version: Text,
    kind: Text,
}

/// kube's `GroupVersionResource`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct GroupVersionResource {
    group: Text,
    version: Text,
    resource: Text,
    #[serde(default)]
    api_version: Text,
}

/// k8s-openapi's `UserInfo`: an object (never an array, as a derived struct could be) whose
/// known fields may be null.
struct UserInfo;

impl<'de> Deserialize<'de> for UserInfo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = UserInfo;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("UserInfo")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UserInfo, A::Error> {
                #[derive(Deserialize)]
                #[serde(field_identifier, rename_all = "lowercase")]
                enum Field {
                    Username,
                    Uid,
                    Groups,
                    Extra,
                    #[serde(other)]
                    Other,
                }
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Username | Field::Uid => {
                            map.next_value::<Option<Text>>()?;
                        }
                        Field::Groups => {
                            map.next_value::<Option<Vec<Text>>>()?;
                        }
                        Field::Extra => {
                            map.next_value::<Option<BTreeMap<Text, Vec<Text>>>>()?;
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(UserInfo)
            }
        }
        deserializer.deserialize_struct("UserInfo", &["extra", "groups", "uid", "username"], Fields)
    }
}

/// Parses a request body into a JSON value holding what is read of it: `reads` are the
/// policies' reads and [`own_reads`] (see `PolicySet::review_reads`).
pub fn parse_body<'a>(body: &'a [u8], reads: &Reads) -> Result<Node<'a>, NotAReview> {
    reads
        .parse(body)
        .map_err(|e| NotAReview::Json(crate::json::explain(&e)))
}

/// The fields kube's `AdmissionRequest` reads, which the envelope check needs whole.
const ENVELOPE: [&str; 13] = [
    "uid",
    "kind",
    "resource",
    "subResource",
    "requestKind",
    "requestResource",
    "requestSubResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "dryRun",
    "options",
];

/// Every path of a review that verdict's own code reads, whatever the policies read: the
/// review's type (`decode`), the request envelope (`AdmissionRequest`), and of the object
/// what `kind_disagreement`, `subject_of` and `images::extract` read (`request.oldObject`
/// is not among them). A body is parsed into these and the policies' reads only, so a read
/// missing here is a field verdict silently does not see:
/// `own_reads_keep_all_that_verdict_reads` holds each reader to its list.
pub fn own_reads() -> Vec<Vec<&'static str>> {
    let mut paths = vec![vec!["apiVersion"], vec!["kind"]];
    paths.extend(ENVELOPE.iter().map(|field| vec!["request", field]));
    let object = KIND_READS
        .iter()
        .chain(&SUBJECT_READS)
        .map(|path| path.to_vec())
        .chain(images::reads());
    for path in object {
        let mut full = vec!["request", "object"];
        full.extend(path);
        paths.push(full);
    }
    paths
}

/// Reads a review. Everything that claims to be an AdmissionReview gets a review answer.
pub fn decode(raw: Node<'_>) -> Result<Decoded<'_>, NotAReview> {
    let api_version = raw.get("apiVersion").and_then(Node::as_str);
    let api_version = API_VERSIONS
        .into_iter()
        .find(|known| Some(*known) == api_version)
        .filter(|_| raw.get("kind").and_then(Node::as_str) == Some("AdmissionReview"))
        .ok_or(NotAReview::WrongType)?;
    let refuse = |subject: Subject, problem: &str| {
        Ok(Decoded::Refuse {
            api_version,
            subject,
            problem: problem.to_string(),
        })
    };
    let request = &raw["request"];
    if !request.is_object() {
        return refuse(
            Subject::default(),
            "the AdmissionReview has no request, so there is nothing to judge",
        );
    }
    let subject = subject_of(request);
    // The envelope is checked as kube's types check it (uid, kind, operation, userInfo, ...).
    if let Err(e) = AdmissionRequest::deserialize(request) {
        return refuse(
            subject,
            &format!("the AdmissionReview request is malformed: {e}"),
        );
    }
    if !request["object"].is_object() {
        return refuse(
            subject,
            "request.object is missing or null; verdict judges the object being admitted and cannot \
             judge what it cannot see (register the webhook for CREATE and UPDATE only)",
        );
    }
    if let Some(problem) = kind_disagreement(request) {
        return refuse(subject, &problem);
    }
    Ok(Decoded::Judge(Box::new(Review {
        raw,
        api_version,
        subject,
    })))
}

/// Why `request.kind` and the object's own `kind` / `apiVersion` disagree, if they do:
/// images are found by the kind, so a review that says Deployment over a Pod object would
/// be read as having none.
/// What [`kind_disagreement`] reads of `request.object`, beside the envelope.
const KIND_READS: [&[&str]; 2] = [&["kind"], &["apiVersion"]];

fn kind_disagreement(request: &Node) -> Option<String> {
    let object = &request["object"];
    let said = &request["kind"];
    if let (Some(said), Some(own)) = (said["kind"].as_str(), object["kind"].as_str()) {
        if said != own {
            return Some(format!(
                "request.kind.kind is {said:?} but request.object.kind is {own:?}; a review \
                 must describe the object it carries"
            ));
        }
    }
    let (Some(version), Some(own)) = (said["version"].as_str(), object["apiVersion"].as_str())
    else {
        return None;
    };
    let group = said["group"].as_str().unwrap_or_default();
    let said_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    (said_version != own).then(|| {
        format!(
            "request.kind says {said_version:?} but request.object.apiVersion is {own:?}; a \
             review must describe the object it carries"
        )
    })
}

/// What [`subject_of`] reads of `request.object`, beside the envelope.
const SUBJECT_READS: [&[&str]; 4] = [
    &["kind"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "generateName"],
];

fn subject_of(request: &Node) -> Subject {
    let text = |v: &Node| v.as_str().unwrap_or_default().to_string();
    let object = &request["object"];
    let kind = match request["kind"]["kind"].as_str() {
        Some(kind) => kind.to_string(),
        None => text(&object["kind"]),
    };
    let metadata = &object["metadata"];
    let name = match (request["name"].as_str(), metadata["name"].as_str()) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(n)) if !n.is_empty() => n.to_string(),
        _ => metadata["generateName"]
            .as_str()
            .map(|g| format!("{g}*"))
            .unwrap_or_default(),
    };
    let namespace = match request["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => ns.to_string(),
        _ => text(&metadata["namespace"]),
    };
    Subject {
        uid: text(&request["uid"]),
        kind,
        namespace,
        name,
        operation: text(&request["operation"]),
    }
}

/// The response review: uid and apiVersion echoed; a denial carries code 403, reason
/// `Forbidden` and a message listing every reason; warnings go to `warnings`. Written as
/// kube's `AdmissionReview` with a response writes it (`answers_as_kube_writes_them`),
/// without building one.
pub fn respond<'a>(api_version: &'a str, subject: &'a Subject, findings: &Findings) -> Answer<'a> {
    let denied = findings.denials().next().is_some();
    let warnings = findings.warning_texts();
    Answer {
        api_version,
        kind: "AdmissionReview",
        response: Response {
            uid: &subject.uid,
            allowed: !denied,
            status: if denied {
                Status {
                    status: "Failure",
                    code: Some(403),
                    message: Some(findings.denial_message(&subject.describe())),
                    reason: Some("Forbidden"),
                }
            } else {
                Status {
                    status: "Success",
                    code: None,
                    message: None,
                    reason: None,
                }
            },
            audit_annotations: denied.then(|| AuditAnnotations {
                reasons: findings.denial_codes().join(","),
            }),
            warnings: (!warnings.is_empty()).then_some(warnings),
        },
    }
}

/// An AdmissionReview carrying a response (see [`respond`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_annotations: Option<AuditAnnotations>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
}

/// A `metav1.Status`, as much of it as verdict writes.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct AuditAnnotations {
    reasons: String,
}

/// Findings for a review that cannot be judged: one denial with `INVALID_REQUEST`.
pub fn refusal(problem: &str) -> Findings {
    let mut findings = Findings::default();
    findings.push(crate::decision::Finding::builtin(
        Severity::Deny,
        ReasonCode::InvalidRequest,
        problem,
    ));
    findings
}

/// The API server's `?timeout=` (a Go duration such as `10s` or `1m30s`).
/// Kubernetes allows 1s to 30s and uses 10s when unset.
pub fn parse_timeout(query: Option<&str>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(10);
    query.and_then(parse_go_duration).map_or(DEFAULT, |d| {
        d.clamp(Duration::from_millis(100), Duration::from_secs(30))
    })
}

/// Time kept back from the API server's timeout for writing the answer.
pub fn answer_margin(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
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
        let out = serde_json::to_value(respond(API_VERSIONS[0], &subject, &findings))
            .expect("serializes");
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
}
