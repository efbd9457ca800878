//! Gatekeeper policies as they are: `ConstraintTemplate`s and their Constraints from the
//! policies folder, judged with Gatekeeper's semantics. `input.review` is the
//! AdmissionRequest (`object` is `oldObject` on DELETE), `input.parameters` the
//! constraint's `spec.parameters`; every element of a template's `violation` set is one
//! finding, `[<constraint>] <msg>`, of code `CONSTRAINT_VIOLATION`, whose severity is the
//! constraint's enforcement action at the admission point.

mod constraint;
mod fixes;
mod schema;
pub mod suite;
mod template;

pub use constraint::{Action, Constraint, Invalid, ObjectMeta, Point, Subject};
pub use template::Template;

use crate::cluster::Document;
use crate::decision::{Finding, Origin, ReasonCode, Severity};
use crate::json::{Node, Object, Reads};
use regorus::Value;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// What kind of Gatekeeper document a YAML document is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Template,
    Constraint,
    /// A gator `Suite`: read by `verdict test` only.
    Suite,
}

/// The Gatekeeper kind of `doc`, by its `apiVersion` group.
pub fn kind_of(doc: &serde_json::Value) -> Option<Kind> {
    let api_version = doc["apiVersion"].as_str()?;
    let group = api_version.split('/').next()?;
    match group {
        "templates.gatekeeper.sh" => Some(Kind::Template),
        "constraints.gatekeeper.sh" => Some(Kind::Constraint),
        "test.gatekeeper.sh" => Some(Kind::Suite),
        _ => None,
    }
}

/// A Gatekeeper document of a policies file.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    pub line: usize,
    pub doc: serde_json::Value,
}

/// Why the Gatekeeper documents cannot be loaded: the file and line of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The templates and constraints of a policies folder.
#[derive(Debug, Clone, Default)]
pub struct Gatekeeper {
    templates: Vec<Template>,
    constraints: Vec<Constraint>,
    /// What the templates with constraints read of `input.review`.
    review_reads: Reads,
}

/// `input.review` of one review and what matching reads of it.
#[derive(Debug, Clone)]
pub struct Review {
    value: Value,
    subject: Subject,
}

/// One element of a template's `violation` set.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub msg: String,
    pub details: serde_json::Value,
}

impl Gatekeeper {
    /// Compiles `templates` (with the text of their files) and loads `constraints`.
    pub fn load(templates: &[(Source, String)], constraints: &[Source]) -> Result<Self, LoadError> {
        let mut set = Self::default();
        for (source, text) in templates {
            let template = Template::parse(&source.doc, &source.file, source.line, text)
                .map_err(|message| source.error(message))?;
            if let Some(other) = set.templates.iter().find(|t| t.kind == template.kind) {
                return Err(source.error(format!(
                    "a second ConstraintTemplate for kind {} (the first is in {}:{})",
                    template.kind, other.file, other.line
                )));
            }
            set.templates.push(template);
        }
        for source in constraints {
            let constraint =
                Constraint::parse(&source.doc, &source.file, source.line, &set.templates)
                    .map_err(|e| source.error(e.to_string()))?;
            if let Some(other) = set
                .constraints
                .iter()
                .find(|c| c.kind == constraint.kind && c.name == constraint.name)
            {
                return Err(source.error(format!(
                    "a second {} constraint named {} (the first is in {}:{})",
                    constraint.kind, constraint.name, other.file, other.line
                )));
            }
            set.constraints.push(constraint);
        }
        Ok(Self::of(set.templates, set.constraints))
    }

    /// The set of these templates and constraints (each constraint's `template` indexes
    /// `templates`).
    fn of(templates: Vec<Template>, constraints: Vec<Constraint>) -> Self {
        let mut review_reads = Reads::Fields(BTreeMap::new());
        for constraint in &constraints {
            review_reads.graft(&[], &templates[constraint.template].review_reads);
        }
        Self {
            templates,
            constraints,
            review_reads,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// The names of the functions the templates with constraints call.
    pub fn calls(&self) -> impl Iterator<Item = &str> {
        self.constraints
            .iter()
            .flat_map(|c| self.templates[c.template].calls.iter().map(String::as_str))
    }

    /// What the templates read of an AdmissionReview: what they read of `input.review`, as
    /// `request`, and as `request.oldObject` for what they read of `object` (which DELETE
    /// reviews take from there). With the outcome of matching ([`Gatekeeper::match_key`])
    /// and the fixed parameters and inventory, this is all their findings depend on.
    pub fn reads(&self) -> Reads {
        let mut reads = Reads::Fields(BTreeMap::new());
        reads.graft(&["request"], &self.review_reads);
        if let Some(object) = self.review_reads.field("object") {
            reads.graft(&["request", "oldObject"], object);
        }
        reads
    }

    /// What matching reads of an AdmissionReview (see [`Subject::of`]).
    pub fn match_reads(&self) -> Reads {
        let mut reads = Reads::Fields(BTreeMap::new());
        if self.is_empty() {
            return reads;
        }
        for path in [
            &["request", "kind"][..],
            &["request", "namespace"],
            &["request", "operation"],
        ] {
            reads.add(path);
        }
        for object in ["object", "oldObject"] {
            for field in [
                &["apiVersion"][..],
                &["kind"],
                &["metadata", "name"],
                &["metadata", "generateName"],
                &["metadata", "namespace"],
                &["metadata", "labels"],
            ] {
                let mut path = vec!["request", object];
                path.extend_from_slice(field);
                reads.add(&path);
            }
        }
        reads
    }

    /// This set with `inventory` at `data.inventory` of the templates that read it.
    pub fn with_inventory(&self, inventory: &Value) -> Result<Self, String> {
        let templates = self
            .templates
            .iter()
            .map(|t| t.with_inventory(inventory))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            templates,
            ..self.clone()
        })
    }

    /// `input.review` of an AdmissionReview (`raw`, as parsed), if it has a request.
    pub fn review(&self, raw: &Object) -> Option<Review> {
        let request = raw.get("request")?;
        Some(Review::of(request, &self.review_reads))
    }

    /// The outcome of matching each constraint against the review `raw`, as bytes for a
    /// decision key: a tag per constraint (`0` no match, `1` match, `2` an error, then its
    /// length-prefixed text), so that the key need not hold the names, namespaces and
    /// labels matching reads, only what it made of them (the next Pod of a Deployment
    /// differs in name alone).
    pub fn match_key(&self, raw: &Object, inventory: &Document) -> Vec<u8> {
        let subject = Subject::of(raw.get("request").unwrap_or(&Node::Null));
        let labels = |name: &str| inventory.namespace_labels(name);
        let mut out = Vec::with_capacity(self.constraints.len());
        for constraint in &self.constraints {
            match constraint.matches(&subject, &labels) {
                Ok(false) => out.push(0),
                Ok(true) => out.push(1),
                Err(e) => {
                    out.push(2);
                    out.extend_from_slice(&(e.len() as u64).to_le_bytes());
                    out.extend_from_slice(e.as_bytes());
                }
            }
        }
        out
    }

    /// The findings of every constraint enforced at `point` that matches the review,
    /// within `deadline`. `Err` when the deadline passed: the caller retries or denies.
    pub fn evaluate(
        &self,
        review: &Review,
        point: Point,
        inventory: &Document,
        deadline: Instant,
    ) -> Result<Vec<Finding>, Duration> {
        let mut findings = Vec::new();
        for constraint in &self.constraints {
            let Some(action) = constraint.action_at(point) else {
                continue;
            };
            let severity = match action {
                Action::Deny => Severity::Deny,
                Action::Warn => Severity::Warn,
                Action::DryRun => Severity::Dryrun,
            };
            let template = &self.templates[constraint.template];
            let origin = |details: serde_json::Value| Origin::Constraint {
                constraint: constraint.name.clone(),
                kind: constraint.kind.clone(),
                template: template.name.clone(),
                file: constraint.file.clone(),
                enforcement_action: action.as_str().to_string(),
                details,
            };
            match self.violations(constraint, review, inventory, deadline) {
                Ok(violations) => {
                    for v in violations {
                        findings.push(Finding {
                            severity,
                            code: ReasonCode::ConstraintViolation,
                            message: format!("[{}] {}", constraint.name, v.msg),
                            origin: origin(v.details),
                        });
                    }
                }
                Err(Failure::Timeout(limit)) => return Err(limit),
                Err(Failure::Error(message)) => findings.push(Finding {
                    severity,
                    code: ReasonCode::PolicyError,
                    message: format!(
                        "[{}] constraint {} of template {} could not judge {}: {message}. \
                         It counts as a violation; ask the policy owners to fix it \
                         (`verdict test` runs its gator suite)",
                        constraint.name,
                        constraint.name,
                        template.name,
                        review.subject.describe()
                    ),
                    origin: origin(serde_json::Value::Null),
                }),
            }
        }
        Ok(findings)
    }

    /// The violations `constraint` finds in the review (none when it does not match it).
    fn violations(
        &self,
        constraint: &Constraint,
        review: &Review,
        inventory: &Document,
        deadline: Instant,
    ) -> Result<Vec<Violation>, Failure> {
        let labels = |name: &str| inventory.namespace_labels(name);
        if !constraint
            .matches(&review.subject, &labels)
            .map_err(Failure::Error)?
        {
            return Ok(Vec::new());
        }
        let template = &self.templates[constraint.template];
        let limit = deadline.saturating_duration_since(Instant::now());
        if limit.is_zero() {
            return Err(Failure::Timeout(limit));
        }
        let mut input = BTreeMap::new();
        input.insert(Value::from("review"), review.value.clone());
        input.insert(Value::from("parameters"), constraint.parameters.clone());
        let mut engine = template.engine.clone();
        engine.set_input(Value::from(input));
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        });
        let result = engine.eval_rule(template.rule.clone()).map_err(|e| {
            if crate::policy::is_time_limit(&e) {
                Failure::Timeout(limit)
            } else {
                Failure::Error(e.to_string())
            }
        })?;
        let items: Vec<Value> = match result {
            Value::Set(items) => items.iter().cloned().collect(),
            Value::Array(items) => items.iter().cloned().collect(),
            Value::Undefined => Vec::new(),
            other => {
                return Err(Failure::Error(format!(
                    "its violation rule is not a set but {}",
                    other.to_json_str().unwrap_or_default()
                )))
            }
        };
        Ok(items.iter().map(violation).collect())
    }

    /// The violations of the one constraint of a gator test, whatever its action.
    pub fn test_violations(
        &self,
        review: &Review,
        inventory: &Document,
        limit: Duration,
    ) -> Result<Vec<Violation>, String> {
        let mut all = Vec::new();
        for constraint in &self.constraints {
            match self.violations(constraint, review, inventory, Instant::now() + limit) {
                Ok(found) => all.extend(found),
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::Timeout(limit)) => {
                    return Err(format!("ran past its time limit of {limit:?}"))
                }
            }
        }
        Ok(all)
    }
}

enum Failure {
    Timeout(Duration),
    Error(String),
}

/// A list of strings (`null`: none), or why `v`, named `what`, is not one.
fn strings(v: &serde_json::Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{what} holds a non-string"))
            })
            .collect(),
        _ => Err(format!("{what} must be a list of strings")),
    }
}

/// One element of `violation`: `msg` and `details`; an element without a string `msg`
/// is shown whole.
fn violation(item: &Value) -> Violation {
    let field = |name: &str| match item {
        Value::Object(fields) => fields.get(&Value::from(name)).cloned(),
        _ => None,
    };
    let msg = match field("msg") {
        Some(Value::String(s)) => s.to_string(),
        _ => format!(
            "(a violation without a msg) {}",
            item.to_json_str().unwrap_or_default()
        ),
    };
    let details = field("details")
        .and_then(|d| d.to_json_str().ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null);
    Violation { msg, details }
}

impl Source {
    fn error(&self, message: String) -> LoadError {
        LoadError {
            file: self.file.clone(),
            line: self.line,
            message,
        }
    }
}

impl Review {
    /// `input.review` of `request`, holding what `reads` reads; on DELETE `object` is
    /// `oldObject`, as Gatekeeper's webhook sets it.
    pub fn of(request: &Node, reads: &Reads) -> Self {
        let mut value = crate::policy::input::select(reads, request);
        if crate::admission::is_delete(request) {
            if let (Some(old), Ok(fields)) = (
                reads
                    .field("object")
                    .map(|r| crate::policy::input::select(r, &request["oldObject"])),
                value.as_object_mut(),
            ) {
                fields.insert(Value::from("object"), old);
            }
        }
        Self {
            value,
            subject: Subject::of(request),
        }
    }
}

impl Subject {
    /// What matching reads of `request`: its kind (`request.kind`, else the object's
    /// apiVersion and kind; the object is `oldObject` on DELETE), its namespace, and the
    /// name, namespace and labels of `object` and `oldObject`.
    pub fn of(request: &Node) -> Self {
        let object = crate::admission::judged(request);
        let text = |v: &Node| v.as_str().unwrap_or_default().to_string();
        let (group, kind) = match request["kind"]["kind"].as_str() {
            Some(kind) => (text(&request["kind"]["group"]), kind.to_string()),
            None => {
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                (group.to_string(), text(&object["kind"]))
            }
        };
        let objects = [&request["object"], &request["oldObject"]]
            .into_iter()
            .filter(|o| o.is_object())
            .map(|o| {
                let metadata = &o["metadata"];
                ObjectMeta {
                    name: text(&metadata["name"]),
                    generate_name: text(&metadata["generateName"]),
                    namespace: text(&metadata["namespace"]),
                    labels: metadata["labels"]
                        .as_object()
                        .map(|labels| {
                            labels
                                .iter()
                                .filter_map(|(k, v)| Some((k.to_string(), v.as_str()?.to_string())))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Self {
            group,
            kind,
            namespace: text(&request["namespace"]),
            objects,
        }
    }

    /// `Pod team-a/web`, for messages.
    fn describe(&self) -> String {
        let object = self.objects.first();
        let name = object.map_or("", |o| o.name.as_str());
        let namespace = if self.namespace.is_empty() {
            object.map_or("", |o| o.namespace.as_str())
        } else {
            &self.namespace
        };
        match (namespace.is_empty(), name.is_empty()) {
            (_, true) => self.kind.clone(),
            (true, false) => format!("{} {name}", self.kind),
            (false, false) => format!("{} {namespace}/{name}", self.kind),
        }
    }
}

#[cfg(test)]
mod tests;
