//! A `ConstraintTemplate`: its kind, its parameters' schema and its Rego, compiled into an
//! engine of its own (its `libs` are visible to it alone, as Gatekeeper rewrites them per
//! template).

use super::fixes;
use crate::json::Reads;
use crate::policy::syntax;
use regorus::{Engine, Value};
use serde_json::Value as Json;

/// The only target Gatekeeper's validating webhook knows.
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// `spec.crd.spec.names.kind`: the kind of its constraints.
    pub kind: String,
    pub file: String,
    pub line: usize,
    /// `spec.crd.spec.validation.openAPIV3Schema`, for `spec.parameters`.
    pub schema: Option<Json>,
    pub(super) engine: Engine,
    /// `data.<package>.violation`.
    pub(super) rule: String,
    /// What the Rego reads of `input.review`.
    pub(super) review_reads: Reads,
    /// Whether it reads `data.inventory`.
    pub(super) reads_inventory: bool,
    /// Names of the functions it calls.
    pub(super) calls: std::collections::BTreeSet<String>,
}

/// The Rego of a template and how to read it.
struct Source {
    rego: String,
    libs: Vec<String>,
    v1: bool,
}

impl Template {
    /// Reads and compiles one `ConstraintTemplate` document of `file` (starting at `line`;
    /// `text` is the whole file, to place the Rego's lines).
    pub fn parse(doc: &Json, file: &str, line: usize, text: &str) -> Result<Self, String> {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if !matches!(
            api_version,
            "templates.gatekeeper.sh/v1" | "templates.gatekeeper.sh/v1beta1"
        ) {
            return Err(format!(
                "ConstraintTemplate apiVersion {api_version:?} is not supported \
                 (templates.gatekeeper.sh/v1 or v1beta1)"
            ));
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("a ConstraintTemplate needs metadata.name")?
            .to_string();
        let kind = doc["spec"]["crd"]["spec"]["names"]["kind"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("ConstraintTemplate {name} has no spec.crd.spec.names.kind"))?
            .to_string();
        if name != kind.to_lowercase() {
            return Err(format!(
                "ConstraintTemplate {name}: metadata.name must be its kind {kind:?} in lower \
                 case ({:?}), as Gatekeeper requires",
                kind.to_lowercase()
            ));
        }
        let schema = doc["spec"]["crd"]["spec"]["validation"]
            .get("openAPIV3Schema")
            .cloned();
        let targets = doc["spec"]["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("ConstraintTemplate {name} has no spec.targets"))?;
        if targets.len() != 1 {
            return Err(format!(
                "ConstraintTemplate {name} has {} targets; Gatekeeper takes exactly one ({TARGET})",
                targets.len()
            ));
        }
        let target = &targets[0];
        if target["target"].as_str() != Some(TARGET) {
            return Err(format!(
                "ConstraintTemplate {name}: target {} is not {TARGET}",
                target["target"]
            ));
        }
        let source = source_of(target, &name)?;
        let mut engine = crate::policy::new_engine();
        engine.set_rego_v0(!source.v1);
        fixes::register(&mut engine).map_err(|e| e.to_string())?;
        let package = add(&mut engine, file, &source.rego, text, line)?;
        if !package.starts_with("data.") {
            return Err(format!(
                "ConstraintTemplate {name}: unexpected package {package}"
            ));
        }
        for (i, lib) in source.libs.iter().enumerate() {
            let path = format!("{file}#libs[{i}]");
            let lib_package = add(&mut engine, &path, lib, text, line)?;
            if !lib_package.starts_with("data.lib.") && lib_package != "data.lib" {
                return Err(format!(
                    "{path}: a template's libs must be in packages under lib (package \
                     lib.<name>), not {}",
                    lib_package.trim_start_matches("data.")
                ));
            }
        }
        let declared = engine
            .has_declared_rule_rooted_at(file, "violation")
            .map_err(|e| format!("{file}: {e}"))?;
        if !declared {
            return Err(format!(
                "ConstraintTemplate {name}: its Rego (package {}) has no violation rule",
                package.trim_start_matches("data.")
            ));
        }
        engine
            .eval_bool_query("true".to_string(), false)
            .map_err(|e| e.to_string())?;
        let found = syntax::analyze(&engine)
            .ok_or_else(|| format!("ConstraintTemplate {name}: its syntax cannot be analyzed"))?;
        if let Some(call) = found.calls.iter().find(|c| c.as_str() == "external_data") {
            return Err(format!(
                "ConstraintTemplate {name} calls {call}: verdict does not run Gatekeeper's \
                 external data providers (a request to another service in the admission \
                 path); resolve that data into the policies folder or an image policy instead"
            ));
        }
        if let Some(root) = found
            .data
            .iter()
            .find(|root| !matches!(root.as_str(), "lib" | "inventory"))
        {
            let what = if root.is_empty() {
                "data".to_string()
            } else {
                format!("data.{root}")
            };
            return Err(format!(
                "ConstraintTemplate {name} reads {what}; a template may read only data.lib \
                 (its libs) and data.inventory, as in Gatekeeper"
            ));
        }
        let review_reads = found
            .reads
            .field("review")
            .cloned()
            .unwrap_or_else(|| Reads::Fields(Default::default()));
        Ok(Self {
            name,
            kind,
            file: file.to_string(),
            line,
            schema,
            engine,
            rule: format!("{package}.violation"),
            review_reads,
            reads_inventory: found.data.contains("inventory"),
            calls: found.calls,
        })
    }

    /// This template with `inventory` at `data.inventory`.
    /// A template that does not read it is the same template.
    pub(super) fn with_inventory(&self, inventory: &Value) -> Result<Self, String> {
        if !self.reads_inventory {
            return Ok(self.clone());
        }
        let mut engine = self.engine.clone();
        engine.clear_data();
        let mut root = Value::new_object();
        root.as_object_mut()
            .map_err(|e| e.to_string())?
            .insert(Value::from("inventory"), inventory.clone());
        engine.add_data(root).map_err(|e| e.to_string())?;
        engine
            .eval_bool_query("true".to_string(), false)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            engine,
            ..self.clone()
        })
    }
}

/// The Rego entry of a target: `code[]`'s `engine: Rego` (`source.rego`, `source.libs`,
/// `source.version`), else the legacy `rego` and `libs` (Rego v0).
fn source_of(target: &Json, name: &str) -> Result<Source, String> {
    let strings = |v: &Json, what: &str| {
        super::strings(v, what).map_err(|e| format!("ConstraintTemplate {name}: {e}"))
    };
    let code = target["code"].as_array().cloned().unwrap_or_default();
    if let Some(entry) = code.iter().find(|c| c["engine"] == "Rego") {
        let source = &entry["source"];
        let rego = source["rego"].as_str().ok_or_else(|| {
            format!("ConstraintTemplate {name}: the Rego code entry has no source.rego")
        })?;
        return Ok(Source {
            rego: rego.to_string(),
            libs: strings(&source["libs"], "source.libs")?,
            v1: source["version"] == "v1",
        });
    }
    if let Some(rego) = target["rego"].as_str() {
        return Ok(Source {
            rego: rego.to_string(),
            libs: strings(&target["libs"], "libs")?,
            v1: false,
        });
    }
    let engines: Vec<&str> = code.iter().filter_map(|c| c["engine"].as_str()).collect();
    if engines.is_empty() {
        return Err(format!("ConstraintTemplate {name} has no Rego (spec.targets[0].rego or a code entry with engine: Rego)"));
    }
    Err(format!(
        "ConstraintTemplate {name} has only {} code; verdict runs Rego, not CEL \
         (K8sNativeValidation). Add an `engine: Rego` entry, or keep this template in \
         Gatekeeper or a ValidatingAdmissionPolicy",
        engines.join(", ")
    ))
}

/// Adds one Rego text of the template, padded so that regorus' line numbers are the
/// file's (the text is found in `file_text` after `doc_line`), with verdict's fixes for
/// where regorus reads Rego v0 differently from OPA (`fixes`). Returns its package.
fn add(
    engine: &mut Engine,
    path: &str,
    rego: &str,
    file_text: &str,
    doc_line: usize,
) -> Result<String, String> {
    let offset = line_of(rego, file_text, doc_line).unwrap_or(0);
    let fixed = fixes::apply(rego);
    let padded = format!("{}{}", "\n".repeat(offset), fixed);
    engine
        .add_policy(path.to_string(), padded)
        .map_err(|e| e.to_string())
}

/// How many lines of `file_text` come before the first line of `rego` (searched from
/// `doc_line` on); none when it cannot be found (a quoted or JSON string).
fn line_of(rego: &str, file_text: &str, doc_line: usize) -> Option<usize> {
    let first = rego.lines().position(|l| !l.trim().is_empty())?;
    let wanted = rego.lines().nth(first)?.trim();
    let found = file_text
        .lines()
        .enumerate()
        .skip(doc_line.saturating_sub(1))
        .find(|(_, l)| l.trim() == wanted)?
        .0;
    found.checked_sub(first)
}
