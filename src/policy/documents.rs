//! YAML and JSON files of the policies folder as documents, each with the line it starts
//! on, so that an error in the third document of a file names its line.

use serde::Deserialize as _;

/// One document of a file and the 1-based line of the file it starts on.
#[derive(Debug, Clone)]
pub struct Document {
    pub line: usize,
    pub value: serde_json::Value,
}

/// Every non-empty document of `text` (JSON when `json`, else YAML with `---` between
/// documents). The error names the line of the document that cannot be read.
pub fn read(text: &str, json: bool) -> Result<Vec<Document>, String> {
    if json {
        let value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        return Ok(vec![Document { line: 1, value }]);
    }
    let mut docs = Vec::new();
    for (line, chunk) in chunks(text) {
        let value = serde_json::Value::deserialize(yaml_serde::Deserializer::from_str(&chunk))
            .map_err(|e| format!("line {line}: {e}"))?;
        if !value.is_null() {
            docs.push(Document { line, value });
        }
    }
    Ok(docs)
}

/// The documents of a YAML stream: split at lines that start with `---` (a document
/// marker, which YAML allows only at the start of a line: block scalars are indented),
/// each with the line its text starts on. A chunk keeps its lines in place (blank lines
/// before it) so that a parser's line numbers are the file's.
fn chunks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let marker = line.strip_prefix("---").is_some_and(|rest| {
            rest.trim().is_empty() || rest.starts_with(' ') || rest.starts_with('\t')
        });
        if marker {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // What follows the marker on its line belongs to the next document.
            let rest = &line[3..];
            current.push_str(&"\n".repeat(i));
            current.push_str(rest);
            if !rest.ends_with('\n') {
                current.push('\n');
            }
            if !rest.trim().is_empty() {
                start = i + 1;
            }
            continue;
        }
        if current.is_empty() && i > 0 {
            current.push_str(&"\n".repeat(i));
        }
        current.push_str(line);
    }
    out.push((start, current));
    out.retain(|(_, text)| !text.trim().is_empty());
    // The line a document starts on is its first line with content.
    out.into_iter()
        .map(|(start, text)| {
            let first = text
                .lines()
                .enumerate()
                .find(|(_, l)| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#')
                })
                .map_or(start, |(i, _)| (i + 1).max(start));
            (first, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_know_their_lines() {
        let text = "a: 1\n---\n# note\n\nb: 2\n--- {c: 3}\n---\n\n";
        let docs = read(text, false).expect("reads");
        let lines: Vec<usize> = docs.iter().map(|d| d.line).collect();
        assert_eq!(lines, [1, 5, 6]);
        assert_eq!(docs[1].value["b"], 2);
        assert_eq!(docs[2].value["c"], 3);
        let err = read("a: 1\n---\nb: [\n", false).expect_err("bad");
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(err.contains("line 4") || err.contains("line 3"), "{err}");
    }
}
