//! The Rego `input` of one review, holding only what the policies can read.
//!
//! Converting a review into regorus values is a large share of the cost of a review that
//! Rego allows (a Pod of a real cluster is 5-15 KB of JSON, `managedFields` and all). When
//! loading a policy set, every use of `input` in its syntax trees is found (`syntax.rs`);
//! where all of them are static paths (`input.request.namespace`, `input.images`, `input["request"].object`),
//! only those subtrees are converted. Any other use (`input` as a value, `walk(input, ...)`,
//! `with input as ...`, a variable or number as the first key) means the whole document.
//! What a policy cannot name, it cannot observe, so the decision is the same.
//!
//! The same reads give the decision key of exactly what was kept (`decision_key`), under
//! which a policy set whose answers cannot change between calls remembers its findings.

use crate::json::{Node, Numeric, Object, Reads};
use regorus::Value;
use std::collections::BTreeMap;

/// `value` reduced to what `reads` reads, as a regorus value.
pub fn select(reads: &Reads, value: &Node) -> Value {
    match (reads, value) {
        (Reads::Fields(wanted), Node::Object(fields)) => Value::from(
            wanted
                .iter()
                .filter_map(|(key, reads)| {
                    let value = fields.get(key)?;
                    Some((Value::from(key.as_str()), select(reads, value)))
                })
                .collect::<BTreeMap<_, _>>(),
        ),
        _ => rego_value(value),
    }
}

/// The input of one review: the fields of the review as received (except `images`) and
/// `images`, holding what `reads` reads.
pub fn build(reads: &Reads, review: &Object, images: &Node) -> Value {
    let mut input = BTreeMap::new();
    for (key, value) in crate::decision_key::fields(review) {
        if let Some(reads) = reads.field(key) {
            input.insert(Value::from(key), select(reads, value));
        }
    }
    if let Some(reads) = reads.field("images") {
        input.insert(Value::from("images"), select(reads, images));
    }
    Value::from(input)
}

/// The regorus value of a JSON value, as `regorus::Value::from(serde_json::Value)` gives
/// it.
fn rego_value(value: &Node) -> Value {
    match value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Number(n) => match Numeric::from(n) {
            Numeric::Unsigned(u) => Value::from(u),
            Numeric::Signed(i) => Value::from(i),
            Numeric::Float(f) => Value::from(f),
        },
        Node::String(s) => Value::from(s.as_ref()),
        Node::Array(items) => Value::from(items.iter().map(rego_value).collect::<Vec<_>>()),
        Node::Object(fields) => Value::from(
            fields
                .iter()
                .map(|(key, value)| (Value::from(key), rego_value(value)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use crate::verify::trust::TrustRoot;
    use serde_json::{json, Value as Json};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    fn reads_of(rego: &str) -> Reads {
        let mut engine = crate::policy::new_engine();
        engine
            .add_policy("p.rego".to_string(), rego.to_string())
            .expect("compiles");
        crate::policy::syntax::analyze(&engine).map_or(Reads::All, |s| s.reads)
    }

    fn fields(entries: &[(&str, Reads)]) -> Reads {
        Reads::Fields(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn static_paths_are_read_and_the_rest_is_not() {
        let reads = reads_of(
            r#"package p
import input.request.userInfo as who
deny contains "x" if {
    some c in input.request.object.spec["containers"]
    c.image == input["request"].namespace
    count(input.images[0].signatures) == 0
    who.username == data.input.name
}
"#,
        );
        assert_eq!(
            reads,
            fields(&[
                ("images", Reads::All),
                (
                    "request",
                    fields(&[
                        ("namespace", Reads::All),
                        (
                            "object",
                            fields(&[("spec", fields(&[("containers", Reads::All)]))])
                        ),
                        ("userInfo", Reads::All),
                    ])
                ),
            ])
        );
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "request": {"namespace": "a", "uid": "1", "object": {"metadata": {}, "spec": {"containers": [{"image": "x"}], "volumes": []}}},
            "images": [{"signatures": []}],
        });
        assert_eq!(
            select(&reads, &Node::from(&review)),
            rego_value(&Node::from(&json!({
                "request": {"namespace": "a", "object": {"spec": {"containers": [{"image": "x"}]}}},
                "images": [{"signatures": []}],
            })))
        );
    }

    #[test]
    fn any_other_use_of_input_reads_all_of_it() {
        for rules in [
            "x := input",
            "x := walk(input)",
            "x if input[y].a",
            "x := object.get(input, [\"a\"], 1)",
            "x if input.a with input as {}",
            "import input\nx if input.a",
        ] {
            assert_eq!(
                reads_of(&format!("package p\n{rules}\n")),
                Reads::All,
                "{rules}"
            );
        }
        assert_eq!(
            reads_of("package p\nx if input.request[0]\n"),
            fields(&[("request", Reads::All)])
        );
        assert_eq!(reads_of("package p\nx := 1\n"), fields(&[]));
    }

    /// A reference passed to a function the policies define reads what that function
    /// reads of its parameter (in any function of that name, under any variable of the
    /// parameter's name); a builtin or a function that uses its parameter whole reads all.
    #[test]
    fn functions_read_what_they_read_of_their_parameters() {
        let lib = "package p.lib\nis_update(review) if review.operation == \"UPDATE\"\n";
        let policy = r#"package p
import data.p.lib.is_update
deny contains "x" if {
    not is_update(input.request)
    c := input.request.object.spec.containers[_]
    object.get(input, "parameters", {}).allowed[_] == c.image
}
"#;
        let mut engine = crate::policy::new_engine();
        for (path, text) in [("lib.rego", lib), ("p.rego", policy)] {
            engine
                .add_policy(path.to_string(), text.to_string())
                .expect("compiles");
        }
        let reads = crate::policy::syntax::analyze(&engine).map_or(Reads::All, |s| s.reads);
        assert_eq!(
            reads,
            fields(&[
                ("parameters", Reads::All),
                (
                    "request",
                    fields(&[
                        (
                            "object",
                            fields(&[("spec", fields(&[("containers", Reads::All)]))])
                        ),
                        ("operation", Reads::All),
                    ])
                ),
            ])
        );
        for rules in [
            // a builtin
            "x := count(input.request)",
            // a function that uses its parameter whole, or has a pattern for it
            "f(r) := r\nx := f(input.request)",
            "g(r) := h(r)\nh(r) := r.a\nx := g(input.request)",
            "k({\"a\": a}) := a\nx := k(input.request)",
            // a function nobody defines here
            "x := data.elsewhere.f(input.request)",
        ] {
            assert_eq!(
                reads_of(&format!(
                    "package p
{rules}
"
                )),
                fields(&[("request", Reads::All)]),
                "{rules}"
            );
        }
    }

    #[test]
    fn rego_value_is_regorus_own_conversion() {
        let mut compared = 0;
        for path in admission_fixtures() {
            let json = read(&path);
            assert_eq!(
                rego_value(&Node::from(&json)),
                Value::from(json.clone()),
                "{path:?}"
            );
            compared += 1;
        }
        let numbers = json!([0, -1, u64::MAX, i64::MIN, 1.5, -2.25e300, {"": null}]);
        assert_eq!(
            rego_value(&Node::from(&numbers)),
            Value::from(numbers.clone())
        );
        assert!(compared > 10, "{compared} fixtures");
    }

    /// The shipped policies decide every fixture review the same on the reduced input as on
    /// the whole one, in every namespace of the inventory.
    #[test]
    fn shipped_policies_decide_the_same_on_what_they_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let set = PolicySet::load(&root.join("policies"), &Arc::new(TrustRoot::default()))
            .expect("shipped policies load");
        assert!(!matches!(set.reads, Reads::All), "{:?}", set.reads);
        assert!(
            set.decisions.is_some(),
            "the shipped policies' findings can be remembered"
        );
        let images = json!([
            {"container": "a", "kind": "container", "reference": "nginx", "registry": "index.docker.io",
             "repository": "library/nginx", "tag": "latest", "pinned": false, "normalized": "index.docker.io/library/nginx:latest",
             "signatures": [], "attestations": []},
            {"container": "b", "kind": "init", "reference": "registry.k8s.io/pause:3.9", "registry": "registry.k8s.io",
             "repository": "pause", "tag": "3.9", "pinned": false, "normalized": "registry.k8s.io/pause:3.9",
             "signatures": [{"authority": "a", "signer": "s"}],
             "attestations": [{"type": "https://slsa.dev/provenance/v1", "predicate": {"runDetails": {"builder": {"id": "b"}}}, "signer": "s"}]},
        ]);
        let (mut compared, mut findings) = (0, 0);
        for path in admission_fixtures() {
            for namespace in ["default", "prod", "dev", "staging", "kube-system"] {
                let mut review = read(&path);
                if !review["request"].is_object() {
                    continue;
                }
                review["request"]["namespace"] = json!(namespace);
                review["images"] = images.clone();
                let review = Node::from(&review);
                let whole = set.evaluate(rego_value(&review).into(), Duration::from_secs(5));
                let reduced =
                    set.evaluate(select(&set.reads, &review).into(), Duration::from_secs(5));
                let show = |r: Result<Vec<crate::decision::Finding>, _>| {
                    r.map(|f| {
                        f.iter()
                            .map(|f| format!("{} {}", f.code, f.message))
                            .collect::<Vec<_>>()
                    })
                };
                let (whole, reduced) = (show(whole), show(reduced));
                assert_eq!(whole, reduced, "{path:?} in {namespace}");
                findings += whole.map_or(0, |f| f.len());
                compared += 1;
            }
        }
        assert!(
            compared > 50 && findings > compared,
            "{compared} reviews, {findings} findings"
        );
    }

    /// What `reads` keeps of a whole value, as a JSON value.
    fn pruned(reads: &Reads, value: &Json) -> Json {
        match (reads, value) {
            (Reads::Fields(wanted), Json::Object(fields)) => Json::Object(
                fields
                    .iter()
                    .filter_map(|(key, value)| Some((key.clone(), pruned(wanted.get(key)?, value))))
                    .collect(),
            ),
            _ => value.clone(),
        }
    }

    /// Parsing only what is read gives exactly what parsing everything and then dropping
    /// the rest gives, and fails exactly where the whole parse fails, for real reviews and
    /// for the corners of JSON (escaped and repeated names, a value that is not an object
    /// where one is read into, numbers of every kind, errors in parts nobody reads).
    #[test]
    fn parsing_what_is_read_equals_parsing_all_and_dropping_the_rest() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = PolicySet::load(&root.join("policies"), &Arc::new(TrustRoot::default()))
            .expect("shipped policies load");
        let nested = fields(&[
            ("a", fields(&[("b", Reads::All), ("name", fields(&[]))])),
            ("n", Reads::All),
            ("l", fields(&[("x", Reads::All)])),
        ]);
        let all_reads = [
            shipped.review_reads.clone(),
            nested,
            Reads::All,
            fields(&[]),
        ];
        let mut bodies: Vec<Vec<u8>> = admission_fixtures()
            .iter()
            .map(|path| std::fs::read(path).expect("fixture"))
            .collect();
        for text in [
            r#"{"a": {"b": [1, {"c": 2}], "skip": {"deep": [[[{"x": "\u00e9\n"}]]]}, "name": {"q": 1}}, "n": -1.5e3}"#,
            r#"{"\u0061": {"\u0062": true}, "n": 18446744073709551615, "o": -9223372036854775808}"#,
            r#"{"a": 1, "a": {"b": 2, "b": 3}, "n": null, "n": 0.1}"#,
            r#"{"a": "not an object", "l": [1, 2, {"x": 3}], "n": 1e300}"#,
            r#"{"a": [{"b": 1}], "l": {"x": {"y": "z"}, "w": 1}}"#,
            r#"[{"a": 1}, 2]"#,
            r#""just a string""#,
            r#"  {"n": 1}  "#,
            "{}",
            // Errors in kept and in skipped parts alike.
            r#"{"skip": [1, 2,], "n": 1}"#,
            r#"{"skip": {"x" 1}, "n": 1}"#,
            r#"{"skip": "\q", "n": 1}"#,
            r#"{"n": 1} trailing"#,
            r#"{"n": 1"#,
            r#"{"skip": tru, "n": 1}"#,
            r#"{"skip": 01, "n": 1}"#,
            "",
        ] {
            bodies.push(text.as_bytes().to_vec());
        }
        let mut kept = 0;
        for reads in &all_reads {
            for body in &bodies {
                let whole: serde_json::Result<Json> = serde_json::from_slice(body);
                let parsed = reads
                    .parse(body)
                    .map(|n| serde_json::to_value(n).expect("json"));
                let show = String::from_utf8_lossy(body);
                match (&whole, &parsed) {
                    (Ok(whole), Ok(parsed)) => {
                        assert_eq!(parsed, &pruned(reads, whole), "{reads:?} {show}");
                        kept += 1;
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{reads:?} {show}: whole {whole:?}, parsed {parsed:?}"),
                }
            }
        }
        assert!(kept > 40, "{kept}");
        // serde_json reads a first name of `$serde_json::private::RawValue` as its own
        // marker (and fails here); it is an ordinary name, as the API server sees it.
        let marker = br#"{"$serde_json::private::RawValue": "[1]", "n": 2}"#;
        assert!(serde_json::from_slice::<Json>(marker).is_err());
        let parsed = all_reads[1].parse(marker).expect("parses");
        assert_eq!(serde_json::to_value(parsed).expect("json"), json!({"n": 2}));
        // What is left out is checked as JSON syntax only: a number out of range fails where
        // it is read, not where it is left out. Text that is not UTF-8 fails anywhere.
        let body = br#"{"n": 1e400}"#;
        assert!(serde_json::from_slice::<Json>(body).is_err());
        assert!(all_reads[1].parse(body).is_err());
        assert_eq!(
            all_reads[3].parse(body).expect("left out"),
            Node::Object(Object::default())
        );
        for reads in &all_reads {
            let error = reads
                .parse(b"{\"n\": 1, \"skip\": \"\xff\"}")
                .expect_err("not UTF-8");
            assert!(error.to_string().contains("not UTF-8"), "{error}");
        }
        // The shipped set reads no managedFields, annotations or status: none are built.
        let fixture = admission_fixtures()
            .into_iter()
            .find(|p| p.ends_with("gke_pod_create_admission_review.json"))
            .expect("GKE fixture");
        let body = std::fs::read(&fixture).expect("fixture");
        let parsed = shipped.review_reads().parse(&body).expect("parses");
        let object = &parsed["request"]["object"];
        assert_eq!(object["metadata"]["name"].as_str(), Some("echo-pod"));
        assert!(object["metadata"].get("managedFields").is_none());
        assert!(object["metadata"].get("annotations").is_none());
        assert!(object["spec"]["containers"].as_array().is_some());
        assert!(object["spec"].get("volumes").is_none());
    }

    fn admission_fixtures() -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission");
        let mut files = Vec::new();
        for dir in std::fs::read_dir(root).expect("fixtures") {
            for file in std::fs::read_dir(dir.expect("dir").path()).expect("fixtures") {
                let path = file.expect("file").path();
                if path.extension().is_some_and(|e| e == "json") {
                    files.push(path);
                }
            }
        }
        files
    }

    fn read(path: &Path) -> Json {
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    }
}
