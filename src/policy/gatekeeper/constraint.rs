//! A Constraint: which template it instantiates, its parameters, what it matches
//! (`spec.match`) and what a violation does (`enforcementAction`), with Gatekeeper's
//! semantics (its `pkg/mutation/match`, `pkg/util/enforcement_action.go`).

use super::Template;
use super::{schema, strings};
use crate::verify::imagepolicy::Selector;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// Where a constraint is enforced (Gatekeeper's enforcement points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Admission: `validation.gatekeeper.sh`.
    Validation,
    /// Audit: `audit.gatekeeper.sh`.
    Audit,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Self::Validation => "validation.gatekeeper.sh",
            Self::Audit => "audit.gatekeeper.sh",
        }
    }
}

/// What a violation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Reported only (`/v1/check`, audit); never denies.
    DryRun,
    /// An admission warning.
    Warn,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DryRun => "dryrun",
            Self::Warn => "warn",
            Self::Deny => "deny",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "deny" => Some(Self::Deny),
            "warn" => Some(Self::Warn),
            "dryrun" => Some(Self::DryRun),
            _ => None,
        }
    }
}

/// `enforcementAction`, resolved per enforcement point.
#[derive(Debug, Clone)]
enum Enforcement {
    All(Action),
    /// `scoped`: each action with the points it applies at (`*` is every point).
    Scoped(Vec<(Action, Vec<String>)>),
}

/// A loaded constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub name: String,
    pub kind: String,
    pub file: String,
    pub line: usize,
    /// Index of its template in the set.
    pub(super) template: usize,
    /// `input.parameters`: `spec.parameters`, `{}` when absent.
    pub(super) parameters: regorus::Value,
    matcher: Match,
    enforcement: Enforcement,
}

/// Why a constraint cannot be loaded; `Schema` is what gator's `invalid: true` expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Its parameters or `spec.match` do not fit their schema.
    Schema(String),
    Other(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Schema(m) | Self::Other(m) => f.write_str(m),
        }
    }
}

impl Constraint {
    /// Reads one Constraint document; `templates` are the loaded templates.
    pub fn parse(
        doc: &Json,
        file: &str,
        line: usize,
        templates: &[Template],
    ) -> Result<Self, Invalid> {
        let other = |m: String| Invalid::Other(m);
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if !matches!(
            api_version,
            "constraints.gatekeeper.sh/v1beta1"
                | "constraints.gatekeeper.sh/v1alpha1"
                | "constraints.gatekeeper.sh/v1"
        ) {
            return Err(other(format!(
                "constraint apiVersion {api_version:?} is not supported (constraints.gatekeeper.sh/v1beta1)"
            )));
        }
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| other(format!("the {kind} constraint has no metadata.name")))?
            .to_string();
        let Some(template) = templates.iter().position(|t| t.kind == kind) else {
            let known: Vec<&str> = templates.iter().map(|t| t.kind.as_str()).collect();
            return Err(other(format!(
                "constraint {name} is of kind {kind}, which no ConstraintTemplate in the policies \
                 folder defines (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let spec = &doc["spec"];
        if !(spec.is_object() || spec.is_null()) {
            return Err(Invalid::Schema(format!(
                "constraint {name}: spec must be an object"
            )));
        }
        let parameters = match &spec["parameters"] {
            Json::Null => Json::Object(Default::default()),
            value => value.clone(),
        };
        let mut errors = Vec::new();
        if !parameters.is_object() {
            errors.push("spec.parameters: must be of type object".to_string());
        } else if let Some(schema) = &templates[template].schema {
            schema::check(&parameters, schema, "spec.parameters", &mut errors);
        }
        if !errors.is_empty() {
            return Err(Invalid::Schema(format!(
                "constraint {name}: its parameters do not fit the schema of template {}: {}",
                templates[template].name,
                errors.join("; ")
            )));
        }
        let matcher = Match::parse(&spec["match"])
            .map_err(|e| Invalid::Schema(format!("constraint {name}: spec.match: {e}")))?;
        let enforcement =
            enforcement(spec).map_err(|e| other(format!("constraint {name}: {e}")))?;
        Ok(Self {
            name,
            kind,
            file: file.to_string(),
            line,
            template,
            parameters: regorus::Value::from(parameters),
            matcher,
            enforcement,
        })
    }

    /// What a violation does at `point`; none when the constraint is not enforced there.
    pub fn action_at(&self, point: Point) -> Option<Action> {
        match &self.enforcement {
            Enforcement::All(action) => Some(*action),
            Enforcement::Scoped(entries) => entries
                .iter()
                .filter(|(_, points)| points.iter().any(|p| p == "*" || p == point.name()))
                .map(|(action, _)| *action)
                .max(),
        }
    }

    /// `spec.match.kinds`: `(apiGroups, kinds)` pairs; empty when it matches every kind.
    pub fn kinds(&self) -> &[(Vec<String>, Vec<String>)] {
        &self.matcher.kinds
    }

    /// Whether the constraint applies to the review (see [`Match::matches`]).
    pub fn matches(
        &self,
        subject: &Subject,
        namespaces: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    ) -> Result<bool, String> {
        self.matcher.matches(subject, namespaces)
    }
}

fn enforcement(spec: &Json) -> Result<Enforcement, String> {
    let written = spec["enforcementAction"].as_str().unwrap_or("deny");
    if written.eq_ignore_ascii_case("scoped") {
        let entries = spec["scopedEnforcementActions"]
            .as_array()
            .filter(|e| !e.is_empty())
            .ok_or("enforcementAction scoped needs scopedEnforcementActions")?;
        let mut out = Vec::new();
        for entry in entries {
            let action_text = entry["action"].as_str().unwrap_or_default();
            let action = Action::parse(action_text).ok_or_else(|| {
                format!(
                    "scopedEnforcementActions: unknown action {action_text:?} (deny, warn, dryrun)"
                )
            })?;
            let points: Vec<String> = entry["enforcementPoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect();
            if points.is_empty() {
                return Err(format!(
                    "scopedEnforcementActions: the {action_text} entry names no enforcementPoints"
                ));
            }
            out.push((action, points));
        }
        return Ok(Enforcement::Scoped(out));
    }
    Action::parse(written).map(Enforcement::All).ok_or_else(|| {
        format!("unknown enforcementAction {written:?} (deny, warn, dryrun or scoped)")
    })
}

/// What matching reads of a review: its kind and each of `object` and `oldObject`.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub group: String,
    pub kind: String,
    /// `request.namespace`, else the object's own.
    pub namespace: String,
    pub objects: Vec<ObjectMeta>,
}

/// What matching reads of one object.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    pub name: String,
    pub generate_name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// `spec.match`.
#[derive(Debug, Clone, Default)]
struct Match {
    /// `(apiGroups, kinds)`; empty matches every kind.
    kinds: Vec<(Vec<String>, Vec<String>)>,
    scope: Option<String>,
    namespaces: Vec<String>,
    excluded: Vec<String>,
    labels: Option<Selector>,
    namespace_selector: Option<Selector>,
    name: Option<String>,
}

impl Match {
    fn parse(spec: &Json) -> Result<Self, String> {
        if spec.is_null() {
            return Ok(Self::default());
        }
        if !spec.is_object() {
            return Err("must be an object".to_string());
        }
        let mut kinds = Vec::new();
        match &spec["kinds"] {
            Json::Null => {}
            Json::Array(entries) => {
                for entry in entries {
                    kinds.push((
                        strings(&entry["apiGroups"], "kinds[].apiGroups")?,
                        strings(&entry["kinds"], "kinds[].kinds")?,
                    ));
                }
            }
            _ => return Err("kinds must be a list".to_string()),
        }
        let text = |key: &str| -> Result<Option<String>, String> {
            match &spec[key] {
                Json::Null => Ok(None),
                Json::String(s) => Ok(Some(s.clone())),
                _ => Err(format!("{key} must be a string")),
            }
        };
        let selector = |key: &str| -> Result<Option<Selector>, String> {
            match &spec[key] {
                Json::Null => Ok(None),
                value => Selector::from_value(value.clone())
                    .map(Some)
                    .map_err(|e| format!("{key}: {e}")),
            }
        };
        Ok(Self {
            kinds,
            scope: text("scope")?,
            namespaces: strings(&spec["namespaces"], "namespaces")?,
            excluded: strings(&spec["excludedNamespaces"], "excludedNamespaces")?,
            labels: selector("labelSelector")?,
            namespace_selector: selector("namespaceSelector")?,
            name: text("name")?.filter(|n| !n.is_empty()),
        })
    }

    /// Whether `object` or `oldObject` of the review matches every criterion. The labels
    /// of a namespace come from `namespaces`; a `namespaceSelector` over a namespace that
    /// verdict does not know is an error (as in Gatekeeper), which the caller reports.
    fn matches(
        &self,
        subject: &Subject,
        namespaces: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    ) -> Result<bool, String> {
        if !self.kind_matches(subject) {
            return Ok(false);
        }
        let mut error = None;
        for object in &subject.objects {
            match self.object_matches(subject, object, namespaces) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => error = Some(e),
            }
        }
        error.map_or(Ok(false), Err)
    }

    fn kind_matches(&self, subject: &Subject) -> bool {
        self.kinds.is_empty()
            || self.kinds.iter().any(|(groups, kinds)| {
                let kind = kinds.is_empty() || kinds.iter().any(|k| k == "*" || *k == subject.kind);
                let group =
                    groups.is_empty() || groups.iter().any(|g| g == "*" || *g == subject.group);
                kind && group
            })
    }

    fn object_matches(
        &self,
        subject: &Subject,
        object: &ObjectMeta,
        namespaces: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    ) -> Result<bool, String> {
        let is_namespace = subject.group.is_empty() && subject.kind == "Namespace";
        let namespace = if is_namespace {
            object.name.as_str()
        } else if !subject.namespace.is_empty() {
            subject.namespace.as_str()
        } else {
            object.namespace.as_str()
        };
        let has_namespace = !is_namespace && !namespace.is_empty();
        let scope = match self.scope.as_deref() {
            Some("Cluster") => !has_namespace,
            Some("Namespaced") => has_namespace,
            _ => true,
        };
        // An object without a namespace (cluster-scoped, not a Namespace) is not judged by
        // namespaces or excludedNamespaces.
        let named = namespace.is_empty()
            || self.namespaces.is_empty()
            || self.namespaces.iter().any(|p| wildcard(p, namespace));
        let excluded =
            !namespace.is_empty() && self.excluded.iter().any(|p| wildcard(p, namespace));
        let labelled = self
            .labels
            .as_ref()
            .is_none_or(|s| s.matches(&object.labels));
        let name = self.name.as_ref().is_none_or(|pattern| {
            wildcard(pattern, &object.name)
                || (pattern.ends_with('*')
                    && !pattern.starts_with('*')
                    && !object.generate_name.is_empty()
                    && object
                        .generate_name
                        .starts_with(pattern.trim_end_matches('*')))
        });
        if !(scope && named && !excluded && labelled && name) {
            return Ok(false);
        }
        let Some(selector) = &self.namespace_selector else {
            return Ok(true);
        };
        if is_namespace {
            return Ok(selector.matches(&object.labels));
        }
        if namespace.is_empty() {
            return Ok(true);
        }
        match namespaces(namespace) {
            Some(labels) => Ok(selector.matches(&labels)),
            None => Err(format!(
                "its namespaceSelector needs the labels of namespace {namespace:?}, which \
                 verdict's inventory does not hold (sync Namespaces from the cluster, or put the \
                 Namespace under inventory/ in the policies folder)"
            )),
        }
    }
}

/// Gatekeeper's wildcards: `prefix*`, `*suffix`, `*contains*`, or an exact name.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') && !rest.is_empty() => {
            name.contains(rest.trim_end_matches('*'))
        }
        (Some(suffix), _) => name.ends_with(suffix),
        (None, Some(prefix)) => name.starts_with(prefix),
        (None, None) => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_gatekeepers() {
        assert!(wildcard("kube-*", "kube-system"));
        assert!(!wildcard("kube-*", "my-kube-system"));
        assert!(wildcard("*-system", "kube-system"));
        assert!(wildcard("*ube*", "kube-system"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("prod", "prod"));
        assert!(!wildcard("prod", "prod-2"));
    }
}
