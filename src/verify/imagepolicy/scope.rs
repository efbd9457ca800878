//! Where an `ImagePolicy` applies: `spec.namespaces` (names and `*` globs) and
//! `spec.namespaceSelector` (a Kubernetes label selector over the namespace's labels in the
//! inventory). verdict's extension; a `ClusterImagePolicy` applies everywhere, as in
//! policy-controller.

use super::InvalidPolicy;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The namespace of the object under review, as far as verdict knows it.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    /// Empty for an object without a namespace.
    pub name: &'a str,
    /// Its labels; none when the inventory does not hold the namespace (not synced yet,
    /// or no cluster and no `inventory/` file names it).
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// `spec.namespaces` and `spec.namespaceSelector`; both must hold when both are given.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    names: Vec<String>,
    selector: Option<Selector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SelectorSpec {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<ExpressionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpressionSpec {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

/// A Kubernetes label selector (`matchLabels`, `matchExpressions`).
#[derive(Debug, Clone)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<Expression>,
}

#[derive(Debug, Clone)]
enum Expression {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Scope {
    pub(super) fn parse(
        names: Vec<String>,
        selector: Option<SelectorSpec>,
    ) -> Result<Self, InvalidPolicy> {
        if let Some(bad) = names.iter().find(|n| n.is_empty()) {
            return Err(format!("spec.namespaces holds an empty name {bad:?}").into());
        }
        let selector = selector.map(Selector::parse).transpose()?;
        Ok(Self { names, selector })
    }

    /// Limited to some namespaces at all.
    pub fn is_scoped(&self) -> bool {
        !self.names.is_empty() || self.selector.is_some()
    }

    /// Whether a policy with this scope applies in `namespace`. Where verdict cannot tell
    /// (an object without a namespace, a namespace whose labels it does not know), a
    /// scoped policy applies: not knowing never exempts an image from a policy.
    pub fn applies_in(&self, namespace: &Namespace<'_>) -> bool {
        if namespace.name.is_empty() {
            return true;
        }
        let named = self.names.is_empty() || self.names.iter().any(|n| glob(n, namespace.name));
        let selected = match (&self.selector, namespace.labels) {
            (None, _) => true,
            (Some(_), None) => true,
            (Some(selector), Some(labels)) => selector.matches(labels),
        };
        named && selected
    }
}

impl Selector {
    /// A selector from its YAML/JSON form; unknown fields and bad operators are refused.
    pub fn from_value(value: serde_json::Value) -> Result<Self, String> {
        let spec = SelectorSpec::deserialize(value).map_err(|e| e.to_string())?;
        Self::parse(spec).map_err(|e| e.to_string())
    }

    fn parse(spec: SelectorSpec) -> Result<Self, InvalidPolicy> {
        let expressions = spec
            .match_expressions
            .into_iter()
            .map(|e| {
                let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
                if needs_values == e.values.is_empty() {
                    return Err(InvalidPolicy::from(format!(
                        "namespaceSelector: operator {} on {:?} {}",
                        e.operator,
                        e.key,
                        if needs_values { "needs values" } else { "takes no values" }
                    )));
                }
                Ok(match e.operator.as_str() {
                    "In" => Expression::In(e.key, e.values),
                    "NotIn" => Expression::NotIn(e.key, e.values),
                    "Exists" => Expression::Exists(e.key),
                    "DoesNotExist" => Expression::DoesNotExist(e.key),
                    other => {
                        return Err(format!(
                            "namespaceSelector: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                        )
                        .into())
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            labels: spec.match_labels,
            expressions,
        })
    }

    /// Kubernetes' semantics: every term holds; an empty selector selects everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                Expression::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// `*` matches any run of characters (namespace names have no `/`); the rest is literal.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn scope(names: &[&str], selector: serde_json::Value) -> Scope {
        let selector =
            (!selector.is_null()).then(|| serde_json::from_value(selector).expect("a selector"));
        Scope::parse(names.iter().map(|n| n.to_string()).collect(), selector)
            .expect("a valid scope")
    }

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name, want) in [
            ("team-*", "team-a", true),
            ("team-*", "team-", true),
            ("team-*", "xteam-a", false),
            ("*-prod", "web-prod", true),
            ("*-prod", "web-prod-2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("prod", "prod", true),
            ("prod", "production", false),
            ("*", "anything", true),
        ] {
            assert_eq!(glob(pattern, name), want, "{pattern} {name}");
        }
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let prod = labels(&[("tier", "prod"), ("team", "a")]);
        let dev = labels(&[("tier", "dev")]);
        let s = scope(&[], serde_json::json!({"matchLabels": {"tier": "prod"}}));
        let at = |name, l: &BTreeMap<String, String>| {
            s.applies_in(&Namespace {
                name,
                labels: Some(l),
            })
        };
        assert!(at("a", &prod));
        assert!(!at("a", &dev));
        let s = scope(
            &[],
            serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"}]}),
        );
        assert!(s.applies_in(&Namespace {
            name: "a",
            labels: Some(&prod)
        }));
        assert!(!s.applies_in(&Namespace {
            name: "a",
            labels: Some(&dev)
        }));
        let everything = scope(&[], serde_json::json!({}));
        assert!(everything.applies_in(&Namespace {
            name: "a",
            labels: Some(&dev)
        }));
    }

    #[test]
    fn not_knowing_never_exempts() {
        let s = scope(
            &["team-*"],
            serde_json::json!({"matchLabels": {"tier": "prod"}}),
        );
        assert!(s.applies_in(&Namespace {
            name: "team-x",
            labels: None
        }));
        assert!(s.applies_in(&Namespace {
            name: "",
            labels: None
        }));
        assert!(!s.applies_in(&Namespace {
            name: "other",
            labels: None
        }));
        assert!(!Scope::default().is_scoped());
    }

    #[test]
    fn bad_selectors_are_refused() {
        for bad in [
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        ] {
            let spec = serde_json::from_value(bad.clone()).expect("a selector");
            assert!(Scope::parse(Vec::new(), Some(spec)).is_err(), "{bad}");
        }
        assert!(
            serde_json::from_value::<SelectorSpec>(serde_json::json!({"matchLabel": {}})).is_err()
        );
    }
}
