//! Reading the policies folder: which files are policies, tests and data.
//! Owns the folder layout rules; not compiling or evaluating.

use super::PolicyError;
use std::path::{Path, PathBuf};

/// Deeper than this is treated as a symlink loop.
const MAX_DEPTH: usize = 16;

/// One file read from the policies folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as shown in messages: the folder as given, joined with the file's place in it.
    pub path: String,
    /// Folders between the policies root and the file: a data document is merged at `data.<dir...>`.
    pub dir: Vec<String>,
    pub contents: String,
}

/// Everything in a policies folder, grouped by role. Equality means "nothing changed".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySources {
    /// `*.rego` except tests.
    pub rego: Vec<SourceFile>,
    /// `*_test.rego`, only for `verdict test`.
    pub tests: Vec<SourceFile>,
    /// `*.json`, `*.yaml`, `*.yml` data documents.
    pub data: Vec<SourceFile>,
    /// Every other file (the keys and trust roots image policies read), by path, only so
    /// that replacing one is a change: a rotated key takes effect like an edited policy.
    pub other: Vec<(String, Vec<u8>)>,
}

impl PolicySources {
    /// Reads `root` recursively. Names starting with `.` are skipped, which also skips the
    /// `..data` / `..2024_...` folders of a mounted ConfigMap (its files are reached through
    /// the top-level symlinks instead). Symlinks are followed.
    pub fn read(root: &Path) -> Result<Self, PolicyError> {
        let mut sources = Self::default();
        if !root.is_dir() {
            return Err(PolicyError::Io {
                path: root.display().to_string(),
                message: "not a folder".to_string(),
            });
        }
        walk(root, &mut Vec::new(), &mut sources)?;
        for list in [&mut sources.rego, &mut sources.tests, &mut sources.data] {
            list.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Ok(sources)
    }
}

fn walk(dir: &Path, rel: &mut Vec<String>, out: &mut PolicySources) -> Result<(), PolicyError> {
    if rel.len() > MAX_DEPTH {
        return Err(PolicyError::Io {
            path: dir.display().to_string(),
            message: format!("nested deeper than {MAX_DEPTH} folders (a symlink loop?)"),
        });
    }
    let io = |path: &Path, e: std::io::Error| PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // metadata() follows symlinks; a dangling link is skipped like a missing file.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            rel.push(name);
            walk(&path, rel, out)?;
            rel.pop();
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let list = if name.ends_with("_test.rego") {
            &mut out.tests
        } else if name.ends_with(".rego") {
            &mut out.rego
        } else if name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml") {
            &mut out.data
        } else {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            out.other.push((path.display().to_string(), bytes));
            continue;
        };
        let contents = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        list.push(SourceFile {
            path: path.display().to_string(),
            dir: rel.clone(),
            contents,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_files_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        for (path, text) in [
            ("a.rego", "package a"),
            ("a_test.rego", "package a"),
            ("sub/deeper/b.rego", "package b"),
            ("sub/list.yaml", "x: 1"),
            ("README.md", "# hi"),
            (".git/c.rego", "package c"),
            (".hidden.rego", "package h"),
        ] {
            std::fs::write(root.join(path), text).expect("write");
        }
        let sources = PolicySources::read(root).expect("reads");
        let names = |l: &[SourceFile]| l.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        let at = |p: &str| root.join(p).display().to_string();
        assert_eq!(
            names(&sources.rego),
            [at("a.rego"), at("sub/deeper/b.rego")]
        );
        assert_eq!(names(&sources.tests), [at("a_test.rego")]);
        assert_eq!(names(&sources.data), [at("sub/list.yaml")]);
        assert_eq!(sources.data[0].dir, ["sub"]);
        assert_eq!(sources.other, [(at("README.md"), b"# hi".to_vec())]);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let err = PolicySources::read(Path::new("/nonexistent/policies")).expect_err("fails");
        assert!(err.to_string().contains("/nonexistent/policies"), "{err}");
    }
}
