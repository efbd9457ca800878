//! Rego policies: compiling a policies folder with regorus into one prepared,
//! shareable policy set, and evaluating it for one review under a time limit.
//! Owns the `deny` / `warn` / `violation` conventions; not the HTTP side or reloads.

mod documents;
pub mod gatekeeper;
mod input;
mod memo;
mod sources;
mod store;
mod sync_kinds;
mod syntax;
pub mod testing;

pub use sources::{PolicySources, SourceFile};
pub use store::{PolicyStatus, PolicyStore, ReloadOutcome};

use crate::cluster::{inventory, Document, Gvk};
use crate::decision::{Finding, Origin, ReasonCode, Severity};
use crate::decision_key::{self, Image, Key};
use crate::json::{Node, Object, Reads};
use crate::verify::imagepolicy::{self, ImagePolicy};
use crate::verify::trust::TrustRoot;
use regorus::{Engine, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why a policies folder cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    /// regorus' message names `file:line:col` and shows the offending line.
    #[error("{0}")]
    Compile(String),
    #[error("{path}: invalid data document: {message}")]
    Data { path: String, message: String },
    #[error("{path}: invalid image policy: {message}")]
    ImagePolicy {
        path: String,
        message: imagepolicy::InvalidPolicy,
    },
    /// A ConstraintTemplate or Constraint that cannot be loaded, at the line its document
    /// starts on.
    #[error("{path}:{line}: {message}")]
    Gatekeeper {
        path: String,
        line: usize,
        message: String,
    },
}

/// Why one evaluation did not produce findings. Both become denials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("policy evaluation of {rule} ran past its time limit of {limit:?}")]
    Timeout { rule: String, limit: Duration },
    #[error("policy evaluation of {rule} failed: {message}")]
    Runtime { rule: String, message: String },
}

impl EvalError {
    /// The denial a failed evaluation becomes: never an allow.
    pub fn into_finding(self) -> Finding {
        let code = match self {
            Self::Timeout { .. } => ReasonCode::PolicyTimeout,
            Self::Runtime { .. } => ReasonCode::PolicyError,
        };
        let message = format!(
            "{self}; the request cannot be judged, so it is denied. Ask the policy owners to fix \
             the policy (`verdict test` reproduces it) or raise --policy-timeout"
        );
        Finding::builtin(Severity::Deny, code, message)
    }
}

/// The rule names collected from every package, and what they mean.
const TARGET_RULES: [(&str, Severity, ReasonCode); 3] = [
    ("deny", Severity::Deny, ReasonCode::PolicyDenied),
    ("violation", Severity::Deny, ReasonCode::PolicyDenied),
    ("warn", Severity::Warn, ReasonCode::PolicyWarning),
];

/// A rule to evaluate for every review, e.g. `data.kubernetes.admission.deny`.
#[derive(Debug, Clone)]
struct Target {
    rule: String,
    files: Vec<String>,
    severity: Severity,
    default_code: ReasonCode,
}

/// A compiled, prepared policy set. Cloning the engine per review is cheap: modules,
/// data and the analysis are shared.
#[derive(Debug, Clone)]
pub struct PolicySet {
    engine: Engine,
    targets: Vec<Target>,
    /// The `.rego` files in the set.
    pub files: Vec<String>,
    /// Which images need signatures, and whose.
    pub image_policies: Vec<ImagePolicy>,
    /// What the policies read of `input`; the rest is not converted for them.
    reads: Reads,
    /// What the decision depends on besides which constraints match: `reads`, and what the
    /// Gatekeeper templates read.
    key_reads: Reads,
    /// The Gatekeeper templates and constraints.
    pub gatekeeper: gatekeeper::Gatekeeper,
    /// What is parsed of a review body: what the policies read and what verdict reads.
    review_reads: Reads,
    /// Findings by input digest; none when the set calls a builtin whose answers change.
    decisions: Option<Arc<memo::Decisions>>,
    /// The kinds to sync into the inventory besides Namespaces (Gatekeeper `Config`, `SyncSet`).
    pub sync_kinds: Vec<Gvk>,
    /// The objects of `inventory/` files.
    offline: Document,
    /// What policies see at `data.inventory`: `offline` with the synced objects over it.
    inventory: Document,
    /// `data` without the inventory objects.
    base_data: Value,
    /// What `inventory` lacks to judge with a cluster (see `inventory_gap`), worked out
    /// once per set rather than per review.
    gap: Option<Arc<str>>,
}

impl PolicySet {
    /// Reads and compiles a policies folder.
    pub fn load(root: &Path, trust: &Arc<TrustRoot>) -> Result<Self, PolicyError> {
        Self::compile(&PolicySources::read(root)?, trust)
    }

    /// Compiles policies, data and image policies; test files are left out.
    /// `trust` is the keyless trust root for authorities that name none.
    pub fn compile(sources: &PolicySources, trust: &Arc<TrustRoot>) -> Result<Self, PolicyError> {
        let mut engine = new_engine();
        let mut packages = Vec::new();
        for file in &sources.rego {
            packages.push((file.path.clone(), add_module(&mut engine, file)?));
        }
        let data = add_data(&mut engine, &sources.data, trust)?;
        let gatekeeper =
            gatekeeper::Gatekeeper::load(&data.templates, &data.constraints).map_err(|e| {
                PolicyError::Gatekeeper {
                    path: e.file,
                    line: e.line,
                    message: e.message,
                }
            })?;
        // The templates read the objects of `inventory/` until a cluster's copy comes (none:
        // they are ready as loaded).
        let gatekeeper = if data.inventory.is_empty() {
            gatekeeper
        } else {
            gatekeeper
                .with_inventory(data.inventory.value())
                .map_err(|message| PolicyError::Data {
                    path: "inventory/".to_string(),
                    message,
                })?
        };
        let targets = discover_targets(&engine, &packages)?;
        if !targets.is_empty() {
            add_module(&mut engine, &collector_module(&targets))?;
        }
        // Preparing once here moves analysis errors to load time and lets every clone skip it.
        engine
            .eval_bool_query("true".to_string(), false)
            .map_err(|e| PolicyError::Compile(e.to_string()))?;
        let files = sources.rego.iter().map(|f| f.path.clone()).collect();
        let (reads, stable) = match syntax::analyze(&engine) {
            Some(syntax) => {
                let calls = |name: &&str| syntax.calls.contains(*name);
                let stable = !memo::UNSTABLE_BUILTINS.iter().any(calls);
                (syntax.reads, stable)
            }
            None => (Reads::All, false),
        };
        let gatekeeper_stable = {
            let calls: BTreeSet<&str> = gatekeeper.calls().collect();
            !memo::UNSTABLE_BUILTINS
                .iter()
                .any(|name| calls.contains(name))
        };
        let mut key_reads = reads.clone();
        key_reads.graft(&[], &gatekeeper.reads());
        // Findings are remembered only if an input can come twice (it cannot when it holds
        // the request's uid) and the same input always gets the same findings.
        let unique = key_reads
            .field("request")
            .and_then(|r| r.field("uid"))
            .is_some();
        let decisions = (stable && gatekeeper_stable && !unique).then(Arc::default);
        let mut review_reads = key_reads.clone();
        review_reads.graft(&[], &gatekeeper.match_reads());
        for path in crate::admission::own_reads() {
            review_reads.add(&path);
        }
        Ok(Self {
            engine,
            targets,
            files,
            image_policies: data.image_policies,
            reads,
            key_reads,
            gatekeeper,
            review_reads,
            decisions,
            sync_kinds: data.sync_kinds,
            inventory: data.inventory.clone(),
            offline: data.inventory,
            base_data: data.base,
            gap: Some(Arc::from(
                "the policies have no synced copy of the cluster yet",
            )),
        })
    }

    /// This set with `synced` (the cluster's objects) at `data.inventory`, over the objects
    /// of `inventory/` files, and nothing remembered: no finding reached under the old
    /// inventory is answered from.
    pub fn with_inventory(
        &self,
        synced: &Document,
        listed: &BTreeSet<Gvk>,
    ) -> Result<Self, PolicyError> {
        let inventory = self.offline.overlaid(synced);
        let mut engine = self.engine.clone();
        engine.clear_data();
        let failed = |message: String| PolicyError::Data {
            path: "the synced inventory".to_string(),
            message,
        };
        engine
            .add_data(self.base_data.clone())
            .map_err(|e| failed(e.to_string()))?;
        add_inventory(&mut engine, &inventory).map_err(failed)?;
        engine
            .eval_bool_query("true".to_string(), false)
            .map_err(|e| PolicyError::Compile(e.to_string()))?;
        let gatekeeper = self
            .gatekeeper
            .with_inventory(inventory.value())
            .map_err(failed)?;
        Ok(Self {
            engine,
            gatekeeper,
            inventory,
            decisions: self.decisions.as_ref().map(|_| Arc::default()),
            gap: gap(&self.sync_kinds, listed),
            ..self.clone()
        })
    }

    /// Some image policy applies only in some namespaces (`spec.namespaces`,
    /// `spec.namespaceSelector`).
    pub fn scoped_image_policies(&self) -> bool {
        self.image_policies.iter().any(|p| p.scope.is_scoped())
    }

    /// Why this set cannot judge with a cluster yet: its inventory lacks the first list of
    /// a kind it syncs (Namespaces, or a kind of its `Config`/`SyncSet`), or holds no synced
    /// copy at all. A reload that adds a kind is never judged on a copy without it.
    pub fn inventory_gap(&self) -> Option<&str> {
        self.gap.as_deref()
    }

    /// The labels of namespace `name` in the inventory (synced or from `inventory/`); none
    /// when the inventory does not hold that namespace.
    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.inventory.namespace_labels(name)
    }

    /// What is parsed of a review body: what verdict and these policies read of it. Each
    /// object holds only those fields, the rest is checked as JSON but not built (most of
    /// a Pod's text, `managedFields` and all, is read by neither). The input and key of the
    /// review are the same as from the whole body.
    pub fn review_reads(&self) -> &Reads {
        &self.review_reads
    }

    /// The input for one review: the review as received plus `images`, holding only what the
    /// policies read (`images` is not even serialized when they do not read it), and
    /// `input.review` for the Gatekeeper constraints.
    pub fn input(
        &self,
        review: &Object,
        images: &impl serde::Serialize,
    ) -> Result<Input, serde_json::Error> {
        let images = match self.reads.field("images") {
            Some(_) => serde_json::to_value(images)?,
            None => serde_json::Value::Null,
        };
        Ok(Input {
            rego: input::build(&self.reads, review, &Node::from(&images)),
            review: (!self.gatekeeper.is_empty())
                .then(|| self.gatekeeper.review(review))
                .flatten(),
            point: gatekeeper::Point::Validation,
        })
    }

    /// The key the findings for this review and images are remembered under; none when this
    /// set's answers may change between calls.
    /// With Gatekeeper constraints, the key also holds which constraints match the review
    /// (`Gatekeeper::match_key`), not the fields matching reads.
    /// The enforcement point counts too: a scoped constraint may act otherwise at audit.
    pub fn key(
        &self,
        review: &Object,
        images: &[impl Image],
        point: gatekeeper::Point,
    ) -> Option<Key> {
        self.decisions.as_ref()?;
        let key = decision_key::key(&self.key_reads, review, images)?;
        if self.gatekeeper.is_empty() {
            return Some(key);
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(&key);
        digest.update(&[point as u8]);
        digest.update(&self.gatekeeper.match_key(review, &self.inventory));
        digest.finish().as_ref().try_into().ok()
    }

    /// The findings of an earlier evaluation of the input with this key.
    pub fn recall(&self, key: &Key) -> Option<Vec<Finding>> {
        self.decisions.as_ref()?.recall(key)
    }

    /// Remembers the findings of a finished evaluation.
    pub fn remember(&self, key: Key, findings: &[Finding]) {
        if let Some(decisions) = &self.decisions {
            decisions.remember(key, findings);
        }
    }

    /// Evaluates every `deny`, `violation` and `warn` rule for `input` within `limit`, then
    /// every Gatekeeper constraint enforced at admission that matches the review. The
    /// rules are evaluated in one pass of one engine, so rules they share are computed once
    /// per review.
    pub fn evaluate(&self, input: Input, limit: Duration) -> Result<Vec<Finding>, EvalError> {
        let deadline = std::time::Instant::now() + limit;
        let mut findings = self.evaluate_rules(input.rego, limit)?;
        if let Some(review) = &input.review {
            let found = self
                .gatekeeper
                .evaluate(review, input.point, &self.inventory, deadline)
                .map_err(|_| EvalError::Timeout {
                    rule: "the Gatekeeper constraints".to_string(),
                    limit,
                })?;
            findings.extend(found);
        }
        Ok(findings)
    }

    fn evaluate_rules(&self, input: Value, limit: Duration) -> Result<Vec<Finding>, EvalError> {
        if self.targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        });
        let rule = "the policies".to_string();
        let results = engine
            .eval_rule(format!("data.{COLLECTOR_PACKAGE}.results"))
            .map_err(|e| {
                if is_time_limit(&e) {
                    EvalError::Timeout {
                        rule: rule.clone(),
                        limit,
                    }
                } else {
                    EvalError::Runtime {
                        rule: rule.clone(),
                        message: e.to_string(),
                    }
                }
            })?;
        let Value::Array(results) = results else {
            return Err(EvalError::Runtime {
                rule,
                message: "the collected results are not a list".to_string(),
            });
        };
        let mut findings = Vec::new();
        for (target, result) in self.targets.iter().zip(results.iter()) {
            if let Value::Array(defined) = result {
                if let Some(value) = defined.first() {
                    collect_findings(target, value, &mut findings);
                }
            }
        }
        Ok(findings)
    }
}

/// The input of one review: for the Rego policies and for the Gatekeeper constraints, and
/// the enforcement point the constraints are judged at (admission unless said otherwise).
#[derive(Debug, Clone)]
pub struct Input {
    rego: Value,
    review: Option<gatekeeper::Review>,
    point: gatekeeper::Point,
}

impl Input {
    /// This input judged at `point`.
    pub fn at(self, point: gatekeeper::Point) -> Self {
        Self { point, ..self }
    }
}

impl From<Value> for Input {
    /// An input for the Rego policies alone (no Gatekeeper review).
    fn from(rego: Value) -> Self {
        Self {
            rego,
            review: None,
            point: gatekeeper::Point::Validation,
        }
    }
}

/// The kinds of `sync_kinds` (and Namespaces) whose first list `listed` lacks, if any.
fn gap(sync_kinds: &[Gvk], listed: &BTreeSet<Gvk>) -> Option<Arc<str>> {
    let missing: Vec<String> = std::iter::once(Gvk::namespace())
        .chain(sync_kinds.iter().cloned())
        .filter(|k| !listed.contains(k))
        .map(|k| k.to_string())
        .collect();
    (!missing.is_empty()).then(|| {
        Arc::from(format!(
            "waiting for the first list of {}",
            missing.join(", ")
        ))
    })
}

/// The generated package that gathers every target rule in one evaluation.
const COLLECTOR_PACKAGE: &str = "__verdict_collect__";

/// `results[i]` is `[value]` when target `i` is defined, `[]` when it is not.
fn collector_module(targets: &[Target]) -> SourceFile {
    let entries: Vec<String> = targets
        .iter()
        .map(|t| format!("  [v | v := {}],", t.rule))
        .collect();
    SourceFile {
        path: format!("<verdict: {COLLECTOR_PACKAGE}>"),
        dir: Vec::new(),
        contents: format!(
            "package {COLLECTOR_PACKAGE}\n\nresults := [\n{}\n]\n",
            entries.join("\n")
        ),
    }
}

pub(crate) fn new_engine() -> Engine {
    let mut engine = Engine::new();
    engine.set_rego_v0(false);
    // A builtin that fails (e.g. a bad regex) is an error, not a silent undefined.
    engine.set_strict_builtin_errors(true);
    engine
}

pub(crate) fn is_time_limit(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::TimeLimitExceeded { .. })
        )
    }) || e.to_string().contains("exceeded time limit")
}

/// Adds one module as Rego v1. A file that is not valid v1 but is valid v0 (the syntax of
/// most policies written for OPA before 1.0 and for Gatekeeper) is loaded as v0, so such
/// policies work unchanged; the reported error is the v1 one.
pub(crate) fn add_module(engine: &mut Engine, file: &SourceFile) -> Result<String, PolicyError> {
    match engine.add_policy(file.path.clone(), file.contents.clone()) {
        Ok(package) => Ok(package),
        Err(v1_error) => {
            let mut probe = Engine::new();
            probe.set_rego_v0(true);
            if probe
                .add_policy(file.path.clone(), file.contents.clone())
                .is_err()
            {
                return Err(PolicyError::Compile(v1_error.to_string()));
            }
            engine.set_rego_v0(true);
            let added = engine.add_policy(file.path.clone(), file.contents.clone());
            engine.set_rego_v0(false);
            tracing::info!(file = %file.path, "loaded as Rego v0 (pre-1.0 syntax)");
            added.map_err(|e| PolicyError::Compile(e.to_string()))
        }
    }
}

/// What the data files of a policies folder hold besides plain data.
#[derive(Debug)]
pub(crate) struct Data {
    pub image_policies: Vec<ImagePolicy>,
    /// The kinds Gatekeeper `Config` and `SyncSet` documents name, Namespaces excluded.
    pub sync_kinds: Vec<Gvk>,
    /// The Kubernetes objects of files under `inventory/`, at their inventory paths.
    pub inventory: Document,
    /// `data` without those objects, to put a synced inventory over.
    pub base: Value,
    /// The Gatekeeper templates (with the text of their files) and constraints, loaded by
    /// `PolicySet::compile` (`verdict test` loads each suite's own instead).
    pub templates: Vec<(gatekeeper::Source, String)>,
    pub constraints: Vec<gatekeeper::Source>,
}

/// Merges each data document into `data` at the path of its folder, as `opa run` does.
/// Image policies and sync declarations (Gatekeeper `Config`, `SyncSet`) are returned as
/// such instead, and Kubernetes objects under `inventory/` go to their inventory paths.
pub(crate) fn add_data(
    engine: &mut Engine,
    data: &[SourceFile],
    trust: &Arc<TrustRoot>,
) -> Result<Data, PolicyError> {
    let mut found = Data {
        image_policies: Vec::new(),
        sync_kinds: Vec::new(),
        inventory: Document::default(),
        base: Value::new_object(),
        templates: Vec::new(),
        constraints: Vec::new(),
    };
    for file in data {
        let invalid = |message: String| PolicyError::Data {
            path: file.path.clone(),
            message,
        };
        let mut docs = Vec::new();
        for doc in documents::read(&file.contents, file.path.ends_with(".json")).map_err(invalid)? {
            // A `v1 List` (what `kubectl get ... -o yaml` writes) counts by its items.
            let (line, mut value) = (doc.line, doc.value);
            let values = if value["kind"] == "List"
                && value["apiVersion"] == "v1"
                && value["items"].is_array()
            {
                match value["items"].take() {
                    serde_json::Value::Array(items) => items,
                    _ => Vec::new(),
                }
            } else {
                vec![value]
            };
            let source = |doc| gatekeeper::Source {
                file: file.path.clone(),
                line,
                doc,
            };
            for value in values {
                match gatekeeper::kind_of(&value) {
                    Some(gatekeeper::Kind::Template) => {
                        found.templates.push((source(value), file.contents.clone()))
                    }
                    Some(gatekeeper::Kind::Constraint) => found.constraints.push(source(value)),
                    Some(gatekeeper::Kind::Suite) => {}
                    None => docs.push(value),
                }
            }
        }
        if docs.is_empty() {
            continue;
        }
        if docs.iter().any(imagepolicy::is_image_policy) {
            let dir = Path::new(&file.path).parent().unwrap_or(Path::new("."));
            for doc in docs {
                let policy =
                    imagepolicy::parse(doc, &file.path, dir, trust).map_err(|message| {
                        PolicyError::ImagePolicy {
                            path: file.path.clone(),
                            message,
                        }
                    })?;
                found.image_policies.push(policy);
            }
            continue;
        }
        if docs.iter().any(sync_kinds::is_declaration) {
            for doc in &docs {
                found
                    .sync_kinds
                    .extend(sync_kinds::kinds(doc).map_err(|e| invalid(e.to_string()))?);
            }
            continue;
        }
        if file.dir.first().is_some_and(|d| d == "inventory") {
            let objects: Option<Vec<_>> = docs.iter().map(inventory::objects).collect();
            if let Some(objects) = objects {
                for (place, object) in objects.into_iter().flatten() {
                    found.inventory.insert(&place, Value::from(object));
                }
                continue;
            }
        }
        // Kubernetes objects elsewhere (the samples and AdmissionReviews beside a gator
        // suite) are not data.
        if docs.iter().all(is_kubernetes_object) {
            tracing::debug!(file = %file.path, "Kubernetes objects outside inventory/: not data");
            continue;
        }
        let value = match <[serde_json::Value; 1]>::try_from(docs) {
            Ok([value]) => value,
            Err(docs) if docs.is_empty() => continue,
            Err(_) => {
                return Err(invalid(
                    "a data document must be a single YAML document".to_string(),
                ))
            }
        };
        if !value.is_object() {
            return Err(invalid("the top level must be a mapping".to_string()));
        }
        let nested = file
            .dir
            .iter()
            .rev()
            .fold(value, |inner, key| serde_json::json!({ key: inner }));
        engine
            .add_data(Value::from(nested))
            .map_err(|e| invalid(e.to_string()))?;
    }
    found.sync_kinds.sort();
    found.sync_kinds.dedup();
    found.sync_kinds.retain(|k| *k != Gvk::namespace());
    found.base = engine.get_data();
    add_inventory(engine, &found.inventory).map_err(|message| PolicyError::Data {
        path: "inventory/".to_string(),
        message,
    })?;
    Ok(found)
}

/// A document with a string `apiVersion` and `kind`: a Kubernetes object or review.
fn is_kubernetes_object(doc: &serde_json::Value) -> bool {
    doc["apiVersion"].is_string() && doc["kind"].is_string()
}

/// Merges `inventory` into the engine's data at `data.inventory`.
fn add_inventory(engine: &mut Engine, inventory: &Document) -> Result<(), String> {
    if inventory.is_empty() {
        return Ok(());
    }
    let mut root = Value::new_object();
    root.as_object_mut()
        .map_err(|e| e.to_string())?
        .insert(Value::from("inventory"), inventory.value().clone());
    engine
        .add_data(root)
        .map_err(|e| format!("the inventory objects clash with a data document: {e}"))
}

fn discover_targets(
    engine: &Engine,
    packages: &[(String, String)],
) -> Result<Vec<Target>, PolicyError> {
    let mut by_rule: BTreeMap<String, Target> = BTreeMap::new();
    for (file, package) in packages {
        for (name, severity, default_code) in &TARGET_RULES {
            let declared = engine
                .has_declared_rule_rooted_at(file, name)
                .map_err(|e| PolicyError::Compile(format!("{file}: {e}")))?;
            if !declared {
                continue;
            }
            let rule = format!("{package}.{name}");
            by_rule
                .entry(rule.clone())
                .or_insert_with(|| Target {
                    rule,
                    files: Vec::new(),
                    severity: *severity,
                    default_code: default_code.clone(),
                })
                .files
                .push(file.clone());
        }
    }
    Ok(by_rule.into_values().collect())
}

/// Turns a rule's value into findings. Sets and arrays give one finding per element;
/// an element is a string or an object with `msg` (and optionally `code`).
/// A complete rule that is simply `true` is one finding named after the rule.
fn collect_findings(target: &Target, value: &Value, out: &mut Vec<Finding>) {
    let mut push = |item: &Value| {
        let (message, code) = match item {
            Value::String(s) => (s.to_string(), None),
            Value::Object(fields) => {
                let text = |key: &str| match fields.get(&Value::from(key)) {
                    Some(Value::String(s)) => Some(s.to_string()),
                    _ => None,
                };
                let message = text("msg")
                    .or_else(|| text("message"))
                    .unwrap_or_else(|| item.to_json_str().unwrap_or_default());
                (message, text("code"))
            }
            Value::Bool(false) | Value::Null | Value::Undefined => return,
            Value::Bool(true) => (format!("{} is true", target.rule), None),
            other => (other.to_json_str().unwrap_or_default(), None),
        };
        out.push(Finding {
            severity: target.severity,
            code: code.map_or_else(|| target.default_code.clone(), ReasonCode::Custom),
            message,
            origin: Origin::Policy {
                files: target.files.clone(),
                rule: target.rule.clone(),
            },
        });
    };
    match value {
        Value::Set(items) => items.iter().for_each(&mut push),
        Value::Array(items) => items.iter().for_each(&mut push),
        other => push(other),
    }
}

#[cfg(test)]
mod tests;
