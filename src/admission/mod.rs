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
    /// The object under review: `request.object`, or on DELETE `request.oldObject` (the
    /// object being deleted, as Gatekeeper judges it); present by construction.
    pub fn object(&self) -> &Node<'a> {
        judged(&self.raw["request"])
    }

    /// A DELETE: nothing will run, so images are not judged.
    pub fn is_delete(&self) -> bool {
        is_delete(&self.raw["request"])
    }
}

/// A DELETE request: no `object`, the object being deleted in `oldObject`.
pub fn is_delete(request: &Node) -> bool {
    request["operation"].as_str() == Some("DELETE") && !request["object"].is_object()
}

/// `request.object`, or `request.oldObject` for a DELETE.
pub fn judged<'r, 'a>(request: &'r Node<'a>) -> &'r Node<'a> {
    if is_delete(request) {
        &request["oldObject"]
    } else {
        &request["object"]
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
        full.extend(path.iter().copied());
        paths.push(full);
    }
    // A DELETE is judged on oldObject: its kind and name are read from there.
    for path in KIND_READS.iter().chain(&SUBJECT_READS) {
        let mut full = vec!["request", "oldObject"];
        full.extend(path.iter().copied());
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
    if !judged(request).is_object() {
        return refuse(
            subject,
            "request.object is missing or null (and this is not a DELETE with request.oldObject); \
             verdict judges the object being admitted and cannot judge what it cannot see",
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
    let object = judged(request);
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
    let object = judged(request);
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
mod tests;
