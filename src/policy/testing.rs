//! `verdict test`: runs the `test_*` rules of a policies folder, like `opa test`.

use super::gatekeeper::suite;
use super::{add_data, add_module, documents, new_engine, PolicyError, PolicySources};
use crate::verify::trust::TrustRoot;
use regorus::unstable::{Rule, RuleHead};
use regorus::Value;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One test must finish within this; a runaway test is an error, not a hang.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The rule was false or undefined, or a gator assertion did not hold (why).
    Fail(String),
    /// Evaluation failed (runtime error or time limit), or a gator test or case could not
    /// be run.
    Error(String),
    /// A gator suite, test or case marked `skip`.
    Skip,
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: String,
    pub line: u32,
    /// Full rule path, e.g. `data.verdict.tags.test_denies_latest`.
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
}

/// Compiles every policy, test and data file under `root`, runs each `test_*` rule, then
/// every gator suite (`Suite` of `test.gatekeeper.sh`) in the folder.
pub fn run(root: &Path) -> Result<Vec<TestResult>, PolicyError> {
    let sources = PolicySources::read(root)?;
    let mut engine = new_engine();
    let mut packages = Vec::new();
    for file in sources.rego.iter().chain(&sources.tests) {
        packages.push((file.path.clone(), add_module(&mut engine, file)?));
    }
    // Image policies are not needed to run Rego tests; their trust root does not matter here.
    add_data(&mut engine, &sources.data, &Arc::new(TrustRoot::default()))?;
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: TEST_TIME_LIMIT,
        check_interval: NonZeroU32::MIN.saturating_add(63),
    });
    let tests = discover(&mut engine, &packages);
    let mut results = Vec::new();
    for (file, line, name) in tests {
        let started = Instant::now();
        let outcome = match engine.eval_rule(name.clone()) {
            Ok(Value::Bool(true)) => Outcome::Pass,
            Ok(_) => Outcome::Fail(String::new()),
            Err(e) => Outcome::Error(e.to_string()),
        };
        results.push(TestResult {
            file,
            line,
            name,
            outcome,
            duration: started.elapsed(),
        });
    }
    for file in &sources.data {
        let Ok(docs) = documents::read(&file.contents, file.path.ends_with(".json")) else {
            continue;
        };
        for doc in docs.iter().filter(|d| suite::is_suite(&d.value)) {
            results.extend(suite::run(&file.path, doc.line, &doc.value, &file.contents));
        }
    }
    Ok(results)
}

/// `(file, line, rule path)` of every rule whose name starts with `test_`, once per name.
fn discover(
    engine: &mut regorus::Engine,
    packages: &[(String, String)],
) -> Vec<(String, u32, String)> {
    let mut found: Vec<(String, u32, String)> = Vec::new();
    for module in engine.get_modules().iter() {
        let file = module.package.span.source.get_path().clone();
        let Some((_, package)) = packages.iter().find(|(f, _)| *f == file) else {
            continue;
        };
        for rule in &module.policy {
            let Rule::Spec {
                span,
                head: RuleHead::Compr { refr, .. },
                ..
            } = rule.as_ref()
            else {
                continue;
            };
            let name = refr.span().text();
            if !name.starts_with("test_") {
                continue;
            }
            let path = format!("{package}.{name}");
            if !found.iter().any(|(_, _, p)| *p == path) {
                found.push((file.clone(), span.line, path));
            }
        }
    }
    found
}

/// The report `verdict test` prints, in the manner of `opa test`.
pub fn render(results: &[TestResult], verbose: bool) -> String {
    let mut out = String::new();
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .count();
    let skipped = results
        .iter()
        .filter(|r| r.outcome == Outcome::Skip)
        .count();
    let errors = results.len() - passed - failed - skipped;
    for r in results {
        let location = format!("{}:{}", r.file, r.line);
        match &r.outcome {
            Outcome::Pass if verbose => {
                let _ = writeln!(out, "PASS {location}: {} ({:?})", r.name, r.duration);
            }
            Outcome::Pass => {}
            Outcome::Skip if verbose => {
                let _ = writeln!(out, "SKIP {location}: {}", r.name);
            }
            Outcome::Skip => {}
            Outcome::Fail(why) => {
                let _ = writeln!(out, "FAIL {location}: {} ({:?})", r.name, r.duration);
                if !why.is_empty() {
                    let _ = writeln!(out, "  {}", why.replace('\n', "\n  "));
                }
            }
            Outcome::Error(e) => {
                let _ = writeln!(
                    out,
                    "ERROR {location}: {}\n  {}",
                    r.name,
                    e.replace('\n', "\n  ")
                );
            }
        }
    }
    let _ = writeln!(out, "{}", "-".repeat(80));
    let total = results.len() - skipped;
    let _ = writeln!(out, "PASS: {passed}/{total}");
    if failed > 0 {
        let _ = writeln!(out, "FAIL: {failed}/{total}");
    }
    if errors > 0 {
        let _ = writeln!(out, "ERROR: {errors}/{total}");
    }
    if skipped > 0 {
        let _ = writeln!(out, "SKIPPED: {skipped}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_tests_and_reports_failures_with_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("p.rego"),
            "package p\n\ndeny contains \"no\" if input.x == 1\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("p_test.rego"),
            "package p\n\ntest_denies if {\n  deny with input as {\"x\": 1}\n}\n\n\
             test_wrong if {\n  count(deny) == 1 with input as {\"x\": 2}\n}\n",
        )
        .expect("write");
        let results = run(dir.path()).expect("runs");
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].outcome, Outcome::Pass);
        assert_eq!(results[1].outcome, Outcome::Fail(String::new()));
        assert_eq!(results[1].line, 7);
        let text = render(&results, false);
        let want = format!(
            "FAIL {}:7: data.p.test_wrong",
            dir.path().join("p_test.rego").display()
        );
        assert!(text.contains(&want), "{text}");
        assert!(
            text.contains("PASS: 1/2") && text.contains("FAIL: 1/2"),
            "{text}"
        );
    }
}
