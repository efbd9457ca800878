//! gator suites under `verdict test`: `Suite` files (`test.gatekeeper.sh/v1alpha1`) in the
//! policies folder, run as `gator verify` runs them (its `pkg/gator/verify`): each test
//! loads its template and constraint alone; an `invalid` test passes when the constraint
//! is refused by its schema; each case reviews one object (a bare object as a CREATE, or
//! an AdmissionReview's request) with its `inventory` objects at `data.inventory`, and
//! every assertion counts the violations (`violations: yes | no | N`, default `yes`),
//! only those whose message matches `message` when given.

use super::{Constraint, Gatekeeper, Invalid, Review, Template};
use crate::cluster::{inventory, Document};
use crate::json::Node;
use crate::policy::documents;
use crate::policy::testing::{Outcome, TestResult};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One case may take this long.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Whether `doc` is a gator suite.
pub fn is_suite(doc: &Json) -> bool {
    doc["kind"] == "Suite"
        && doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("test.gatekeeper.sh/"))
}

/// Runs the suite `doc` (at `line` of `file`, whose text is `text`).
pub fn run(file: &str, line: usize, doc: &Json, text: &str) -> Vec<TestResult> {
    let dir = Path::new(file)
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let suite = doc["metadata"]["name"].as_str().unwrap_or("suite");
    let place = |name: &str, after: usize| line_of(text, name, after).unwrap_or(line);
    let result = |name: String, line: usize, outcome: Outcome, started: Instant| TestResult {
        file: file.to_string(),
        line: line as u32,
        name,
        outcome,
        duration: started.elapsed(),
    };
    if doc["skip"] == true {
        return vec![result(
            suite.to_string(),
            line,
            Outcome::Skip,
            Instant::now(),
        )];
    }
    let mut out = Vec::new();
    for test in doc["tests"].as_array().into_iter().flatten() {
        let started = Instant::now();
        let test_name = test["name"].as_str().unwrap_or("test");
        let test_line = place(test_name, line);
        let full = format!("{suite}/{test_name}");
        if test["skip"] == true {
            out.push(result(full, test_line, Outcome::Skip, started));
            continue;
        }
        let set = match load(&dir, test) {
            Ok(set) => set,
            Err(Loaded::Constraint(Invalid::Schema(e))) if test["invalid"] == true => {
                let _ = e;
                out.push(result(full, test_line, Outcome::Pass, started));
                continue;
            }
            Err(e) => {
                out.push(result(
                    full,
                    test_line,
                    Outcome::Error(e.to_string()),
                    started,
                ));
                continue;
            }
        };
        if test["invalid"] == true {
            let outcome = Outcome::Error(
                "the constraint was accepted, but the test says it is invalid (its \
                 parameters should not fit the template's schema)"
                    .to_string(),
            );
            out.push(result(full, test_line, outcome, started));
            continue;
        }
        for case in test["cases"].as_array().into_iter().flatten() {
            let started = Instant::now();
            let case_name = case["name"].as_str().unwrap_or("case");
            let case_line = place(case_name, test_line);
            let name = format!("{full}/{case_name}");
            let outcome = if case["skip"] == true {
                Outcome::Skip
            } else {
                match run_case(&dir, &set, case) {
                    Ok(None) => Outcome::Pass,
                    Ok(Some(failure)) => Outcome::Fail(failure),
                    Err(e) => Outcome::Error(e),
                }
            };
            out.push(result(name, case_line, outcome, started));
        }
    }
    out
}

/// Why a test's template or constraint did not load.
enum Loaded {
    Template(String),
    Constraint(Invalid),
    Other(String),
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Template(e) => write!(f, "the template does not load: {e}"),
            Self::Constraint(e) => write!(f, "the constraint does not load: {e}"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// The test's template and constraint, alone in a set.
fn load(dir: &Path, test: &Json) -> Result<Gatekeeper, Loaded> {
    let read = |key: &str| -> Result<(PathBuf, String, Vec<documents::Document>), Loaded> {
        let rel = test[key]
            .as_str()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Loaded::Other(format!("the test has no {key}")))?;
        let path = dir.join(rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Loaded::Other(format!("{}: {e}", path.display())))?;
        let docs = documents::read(&text, rel.ends_with(".json"))
            .map_err(|e| Loaded::Other(format!("{}: {e}", path.display())))?;
        Ok((path, text, docs))
    };
    let (path, text, docs) = read("template")?;
    let doc = docs
        .iter()
        .find(|d| d.value["kind"] == "ConstraintTemplate")
        .ok_or_else(|| {
            Loaded::Template(format!("{} holds no ConstraintTemplate", path.display()))
        })?;
    let file = path.display().to_string();
    let template = Template::parse(&doc.value, &file, doc.line, &text).map_err(Loaded::Template)?;
    let (path, _, docs) = read("constraint")?;
    let doc = docs.first().ok_or_else(|| {
        Loaded::Constraint(Invalid::Other(format!("{} is empty", path.display())))
    })?;
    let templates = vec![template];
    let constraint = Constraint::parse(
        &doc.value,
        &path.display().to_string(),
        doc.line,
        &templates,
    )
    .map_err(Loaded::Constraint)?;
    Ok(Gatekeeper::of(templates, vec![constraint]))
}

/// `Ok(None)` when every assertion holds, `Ok(Some(why))` when one does not; `Err` when
/// the case cannot be run.
fn run_case(dir: &Path, set: &Gatekeeper, case: &Json) -> Result<Option<String>, String> {
    let object_path = case["object"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or("the case must name an object")?;
    let assertions = case["assertions"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("the case must have assertions")?;
    let objects = read_objects(&dir.join(object_path))?;
    let [object] = <[Json; 1]>::try_from(objects).map_err(|objects| {
        format!(
            "{object_path} holds {} objects; a case reviews exactly one",
            objects.len()
        )
    })?;
    let mut data = Document::default();
    for file in case["inventory"].as_array().into_iter().flatten() {
        let path = file.as_str().ok_or("inventory holds a non-string")?;
        for object in read_objects(&dir.join(path))? {
            let placed = inventory::objects(&object)
                .ok_or_else(|| format!("{path}: not a Kubernetes object"))?;
            for (place, object) in placed {
                data.insert(&place, regorus::Value::from(object));
            }
        }
    }
    let set = set.with_inventory(data.value())?;
    let request = review_request(object)?;
    let review = Review::of(&Node::from(&request), &set.review_reads);
    let violations = set.test_violations(&review, &data, CASE_TIME_LIMIT)?;
    let messages: Vec<&str> = violations.iter().map(|v| v.msg.as_str()).collect();
    for assertion in assertions {
        if let Some(failure) = check(assertion, &messages)? {
            return Ok(Some(failure));
        }
    }
    Ok(None)
}

/// The request a case reviews: an AdmissionReview's (filled in as the API server sends
/// it), or the CREATE of a bare object, as `verdict check` builds them.
fn review_request(object: Json) -> Result<Json, String> {
    let is_review = object["kind"] == "AdmissionReview"
        && object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("admission.k8s.io/"));
    if !is_review {
        return Ok(crate::manifest::create_request(object, 0));
    }
    let mut request = object
        .get("request")
        .filter(|r| r.is_object())
        .cloned()
        .ok_or("the AdmissionReview has no request")?;
    if !request["object"].is_object() && !request["oldObject"].is_object() {
        return Err("the AdmissionReview's request has neither object nor oldObject".to_string());
    }
    crate::manifest::complete_request(&mut request, 0);
    Ok(request)
}

/// One assertion against the messages found: `Some(why)` when it does not hold.
fn check(assertion: &Json, messages: &[&str]) -> Result<Option<String>, String> {
    let pattern = match &assertion["message"] {
        Json::Null => None,
        Json::String(p) => Some(
            regex::Regex::new(p)
                .map_err(|e| format!("assertion message {p:?} is not a regular expression: {e}"))?,
        ),
        other => return Err(format!("assertion message {other} is not a string")),
    };
    let matching = messages
        .iter()
        .filter(|m| pattern.as_ref().is_none_or(|p| p.is_match(m)))
        .count();
    let containing = pattern
        .as_ref()
        .map(|p| format!(" containing {:?}", p.as_str()))
        .unwrap_or_default();
    let got = format!("got {matching} violations{containing}");
    let failure = match &assertion["violations"] {
        Json::Null => (matching == 0).then(|| format!("{got} but want at least 1")),
        Json::String(s) if s == "yes" => {
            (matching == 0).then(|| format!("{got} but want at least 1"))
        }
        Json::String(s) if s == "no" => (matching > 0).then(|| format!("{got} but want none")),
        Json::Number(n) if n.as_u64().is_some() => {
            let want = n.as_u64().unwrap_or_default() as usize;
            (matching != want).then(|| format!("{got} but want exactly {want}"))
        }
        other => {
            return Err(format!(
                "assertion violations {other} must be a nonnegative integer, \"yes\", or \"no\""
            ))
        }
    };
    Ok(failure.map(|f| format!("{f}: got messages {messages:?}")))
}

/// The objects of a YAML or JSON file (a `v1 List` counts by its items).
fn read_objects(path: &Path) -> Result<Vec<Json>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs = documents::read(&text, path.extension().is_some_and(|e| e == "json"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in docs {
        match doc.value["items"].as_array() {
            Some(items) if doc.value["kind"] == "List" => out.extend(items.iter().cloned()),
            _ => out.push(doc.value),
        }
    }
    if out.is_empty() {
        return Err(format!("{} defines no objects", path.display()));
    }
    Ok(out)
}

/// The 1-based line of `name: <name>` in `text`, after line `after`.
fn line_of(text: &str, name: &str, after: usize) -> Option<usize> {
    let wanted = [
        format!("name: {name}"),
        format!("name: \"{name}\""),
        format!("name: '{name}'"),
    ];
    text.lines()
        .enumerate()
        .skip(after.saturating_sub(1))
        .find(|(_, l)| {
            let l = l.trim().trim_start_matches("- ").trim();
            wanted.iter().any(|w| l == w)
        })
        .map(|(i, _)| i + 1)
}
