//! The module layering written in `src/lib.rs` holds: no module imports one of its own
//! layer or above (outside its tests), and the rooms of `verify/` import each other
//! without a cycle. Reads the source, so a new upward arrow fails here, not in review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `src/lib.rs`'s layers, bottom first.
const LAYERS: &[&[&str]] = &[
    &["json", "decision", "certs", "slots"],
    &["decision_key", "images", "logging"],
    &["metrics", "admission", "manifest"],
    &["registry"],
    &["cluster"],
    &["verify"],
    &["policy"],
    &["config"],
    &["review"],
    &["report", "setup"],
    &["audit"],
    &["server"],
    &["cli"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of src/lib.rs"))
}

/// The source of every file under `dir`, without its `#[cfg(test)]` part, by path.
fn sources(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            found.insert(path.display().to_string(), code.to_string());
        }
    }
    found
}

/// The names `crate::<name>` in `code`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(i, _)| {
            code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_arrow_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (path, code) in sources(&root) {
        let relative = path.trim_start_matches(&format!("{}/", root.display()));
        let module = relative
            .split(['/', '.'])
            .next()
            .unwrap_or_default()
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        for import in crate_imports(&code) {
            if import != module && layer(&import) >= layer(&module) {
                wrong.push(format!("{relative} imports crate::{import}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that do not point down:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_rooms_of_verify_import_each_other_without_a_cycle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/verify");
    let rooms: BTreeMap<String, String> = sources(&dir)
        .into_iter()
        .filter_map(|(path, code)| {
            // A room is `verify/<room>.rs` or `verify/<room>/mod.rs`.
            let path = Path::new(&path);
            let (room, parent) = match path.file_stem()?.to_str()? {
                "mod" => (path.parent()?, path.parent()?.parent()?),
                _ => (path, path.parent()?),
            };
            let name = room.file_stem()?.to_str()?.to_string();
            (parent == dir && name != "verify").then_some((name, code))
        })
        .collect();
    assert!(rooms.len() >= 12, "{:?}", rooms.keys());
    let edges: BTreeMap<&str, BTreeSet<&str>> = rooms
        .iter()
        .map(|(name, code)| {
            let uses = rooms
                .keys()
                .filter(|other| *other != name)
                .filter(|other| {
                    code.contains(&format!("super::{other}"))
                        || code.contains(&format!("crate::verify::{other}"))
                })
                .map(String::as_str)
                .collect();
            (name.as_str(), uses)
        })
        .collect();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = edges[start].iter().copied().collect();
        while let Some(room) = todo.pop() {
            assert_ne!(room, *start, "verify/{start}.rs is part of an import cycle");
            if seen.insert(room) {
                todo.extend(edges[room].iter().copied());
            }
        }
    }
}
