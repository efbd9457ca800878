//! OCI documents read as what their media type says, and the manifests of an image index
//! a node may run. An image manifest is never read as an index (the CVE-2021-41190
//! class: a document with both `manifests` and `layers` means one thing to one reader and
//! another to the next), a `Content-Type` that disagrees with the body's `mediaType` is
//! refused, and every manifest a runtime could pick for the node's platform is returned,
//! not just the first. Owns those readings; not fetching.

use super::strict;
use crate::images::Digest;
use serde_json::{Map, Value};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const INDEX_TYPES: [&str; 2] = [OCI_INDEX, DOCKER_LIST];
const MANIFEST_TYPES: [&str; 2] = [OCI_MANIFEST, DOCKER_MANIFEST];

/// What a manifest document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// An image manifest (or another single artifact): it runs as it is.
    Image,
    /// An image index: its `manifests` entries.
    Index(Vec<Value>),
}

/// Reads `bytes` (sent with `content_type`) as an image manifest or an index, or says why
/// it is neither unambiguously.
pub fn classify(bytes: &[u8], content_type: Option<&str>) -> Result<Document, Ambiguous> {
    read_as(bytes, content_type).map_err(Ambiguous)
}

/// A document that cannot be read one way only, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Ambiguous(String);

/// A platform that is not `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not os/architecture[/variant]")]
pub struct InvalidPlatform(String);

fn read_as(bytes: &[u8], content_type: Option<&str>) -> Result<Document, String> {
    let json = strict::parse(bytes).map_err(|e| format!("the manifest is not valid JSON: {e}"))?;
    let Value::Object(object) = json else {
        return Err("the manifest is not a JSON object".to_string());
    };
    let body_type = match field(&object, "mediaType") {
        None => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err("its mediaType is not a string".to_string()),
    };
    // Registries send `application/json` and the like too: only a manifest type is a claim.
    let header_type = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| INDEX_TYPES.contains(&t.as_str()) || MANIFEST_TYPES.contains(&t.as_str()));
    if let (Some(body), Some(header)) = (body_type, &header_type) {
        if body != header {
            return Err(format!(
                "its mediaType is {body:?} but the registry sent it as {header:?}"
            ));
        }
    }
    let media_type = body_type.or(header_type.as_deref());
    let lists = field(&object, "manifests");
    let has_image_parts = field(&object, "layers").is_some() || field(&object, "config").is_some();
    match (lists, media_type) {
        (Some(_), _) if has_image_parts => Err(
            "it has both `manifests` (an index) and `layers` or `config` (an image manifest)"
                .to_string(),
        ),
        (Some(_), Some(t)) if !INDEX_TYPES.contains(&t) => {
            Err(format!("it lists `manifests` but its media type is {t:?}"))
        }
        (Some(Value::Array(entries)), _) => Ok(Document::Index(entries.clone())),
        (Some(_), _) => Err("its `manifests` is not a list".to_string()),
        (None, Some(t)) if INDEX_TYPES.contains(&t) => Err(format!(
            "its media type is {t:?} but it lists no `manifests`"
        )),
        (None, _) => Ok(Document::Image),
    }
}

/// A field by name as Go's `encoding/json` finds a struct field: exactly, or up to letter
/// case (`strict` has already refused two keys that fold together).
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| strict::fold(k) == strict::fold(name))
            .map(|(_, v)| v)
    })
}

/// The platform nodes run (`os/architecture[/variant]`), for choosing from image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".to_string(),
            architecture: "amd64".to_string(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(text: &str) -> Result<Self, InvalidPlatform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
                let (architecture, variant) = normalize_arch(arch, parts.get(2).copied());
                Ok(Self {
                    os: os.to_ascii_lowercase(),
                    architecture,
                    variant,
                })
            }
            _ => Err(InvalidPlatform(text.to_string())),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// Architecture names as containerd normalizes them (`x86_64` is `amd64`, `aarch64` is
/// `arm64`, ...), with the variant a bare name implies.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .filter(|v| !v.is_empty())
        .map(str::to_ascii_lowercase);
    match (arch.as_str(), variant.as_deref()) {
        ("i386", _) => ("386".into(), None),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64".into(), v.map(Into::into)),
        ("aarch64" | "arm64", Some("8" | "v8") | None) => ("arm64".into(), None),
        ("aarch64" | "arm64", v) => ("arm64".into(), v.map(Into::into)),
        ("armhf", _) => ("arm".into(), Some("v7".into())),
        ("armel", _) => ("arm".into(), Some("v6".into())),
        ("arm", None) => ("arm".into(), Some("v7".into())),
        ("arm", Some(v)) => (
            "arm".into(),
            Some(if v.starts_with('v') {
                v.into()
            } else {
                format!("v{v}")
            }),
        ),
        (other, v) => (other.into(), v.map(Into::into)),
    }
}

impl Platform {
    /// Whether an index entry's `platform` may be run by a node of this platform. Read
    /// generously (names normalized, a variant not asked for matches any), so that every
    /// manifest a runtime could pick is among those judged.
    fn admits(&self, platform: &Value) -> bool {
        let text = |name: &str| platform.get(name).and_then(Value::as_str);
        let (Some(os), Some(arch)) = (text("os"), text("architecture")) else {
            return false;
        };
        let (arch, variant) = normalize_arch(arch, text("variant"));
        os.eq_ignore_ascii_case(&self.os)
            && arch == self.architecture
            && match (&self.variant, &variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }

    /// The digests of every manifest of `entries` (an index's) that a node of this platform
    /// may run, in index order; an error when there is none or one is not an image
    /// manifest with a sha256 digest.
    pub fn manifests(&self, entries: &[Value]) -> Result<Vec<Digest>, Ambiguous> {
        self.runnable(entries).map_err(Ambiguous)
    }

    fn runnable(&self, entries: &[Value]) -> Result<Vec<Digest>, String> {
        let mut found: Vec<Digest> = Vec::new();
        for entry in entries
            .iter()
            .filter(|e| e.get("platform").is_some_and(|p| self.admits(p)))
        {
            let digest = entry
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| Digest::parse(d).ok())
                .filter(Digest::is_sha256)
                .ok_or_else(|| {
                    format!("the index lists a {self} manifest without a sha256 digest")
                })?;
            if let Some(t) = entry.get("mediaType").and_then(Value::as_str) {
                if !MANIFEST_TYPES.contains(&t) {
                    return Err(format!(
                        "the index lists {digest} for {self} as {t:?}, not an image manifest"
                    ));
                }
            }
            if !found.contains(&digest) {
                found.push(digest);
            }
        }
        if found.is_empty() {
            return Err(format!(
                "the image index has no manifest for platform {self}"
            ));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("a digest")
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("json")
    }

    #[test]
    fn reads_indexes_and_manifests_by_what_they_say_they_are() {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        assert_eq!(
            classify(&bytes(&index), Some(OCI_INDEX)),
            Ok(Document::Index(vec![]))
        );
        let bare_index = json!({"schemaVersion": 2, "manifests": []});
        assert_eq!(
            classify(&bytes(&bare_index), None),
            Ok(Document::Index(vec![]))
        );
        let manifest =
            json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []});
        assert_eq!(
            classify(
                &bytes(&manifest),
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            ),
            Ok(Document::Image)
        );
        assert_eq!(
            classify(&bytes(&manifest), Some("application/json")),
            Ok(Document::Image)
        );
    }

    #[test]
    fn refuses_documents_with_two_readings() {
        let entries =
            json!([{"digest": digest('a'), "platform": {"os": "linux", "architecture": "amd64"}}]);
        let cases = [
            (
                json!({"mediaType": OCI_MANIFEST, "config": {}, "layers": [], "manifests": entries}),
                None,
            ),
            (json!({"config": {}, "manifests": entries}), None),
            (json!({"Layers": [], "manifests": entries}), None),
            (
                json!({"mediaType": OCI_MANIFEST, "manifests": entries}),
                None,
            ),
            (json!({"manifests": entries}), Some(OCI_MANIFEST)),
            (
                json!({"mediaType": OCI_INDEX, "manifests": entries}),
                Some(DOCKER_LIST),
            ),
            (
                json!({"mediaType": OCI_MANIFEST, "layers": []}),
                Some(OCI_INDEX),
            ),
            (json!({"mediaType": OCI_INDEX, "layers": []}), None),
            (json!({"mediaType": 7, "manifests": entries}), None),
        ];
        for (document, content_type) in cases {
            assert!(
                classify(&bytes(&document), content_type).is_err(),
                "{document} as {content_type:?}"
            );
        }
        let repeated = br#"{"manifests": [], "Manifests": []}"#;
        assert!(classify(repeated, None).is_err());
    }

    #[test]
    fn every_manifest_a_runtime_may_pick_for_the_platform_is_returned() {
        let amd64: Platform = "linux/amd64".parse().expect("platform");
        let entries = json!([
            {"digest": digest('1'), "platform": {"os": "linux", "architecture": "x86_64"}},
            {"digest": digest('2'), "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": digest('3'), "mediaType": OCI_MANIFEST, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": digest('4'), "platform": {"os": "linux", "architecture": "amd64", "variant": "v3"}},
            {"digest": digest('5'), "platform": {"os": "windows", "architecture": "amd64"}},
            {"digest": digest('3'), "platform": {"os": "Linux", "architecture": "AMD64"}}
        ]);
        let entries = entries.as_array().expect("list");
        assert_eq!(
            amd64.manifests(entries),
            Ok(vec![digest('1'), digest('3'), digest('4')])
        );
        let arm: Platform = "linux/aarch64/v8".parse().expect("platform");
        assert_eq!(arm.to_string(), "linux/arm64");
        assert_eq!(arm.manifests(entries), Ok(vec![digest('2')]));
        let s390: Platform = "linux/s390x".parse().expect("platform");
        assert!(s390.manifests(entries).is_err());
        let nested = json!([{"digest": digest('6'), "mediaType": OCI_INDEX, "platform": {"os": "linux", "architecture": "amd64"}}]);
        assert!(amd64.manifests(nested.as_array().expect("list")).is_err());
        let bad_digest =
            json!([{"digest": "sha256:abc", "platform": {"os": "linux", "architecture": "amd64"}}]);
        assert!(amd64
            .manifests(bad_digest.as_array().expect("list"))
            .is_err());
    }
}
