//! Image policies: which images need proof and what proof. One shape for verdict's own
//! `ImagePolicy` (`verdict.dev/v1alpha1`) and Sigstore policy-controller's
//! `ClusterImagePolicy` (`policy.sigstore.dev/v1beta1`, the supported subset), so users can
//! move over unchanged. Owns parsing and glob matching; not verification.

use super::proof::PublicKey;
use crate::images::ImageRef;
use crate::verify::identity::{IdentityRule, Matcher};
use crate::verify::trust::TrustRoot;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sigstore::crypto::{CosignVerificationKey, SigningScheme};
use std::path::Path;
use std::sync::Arc;

mod scope;
pub use scope::{Namespace, Scope, Selector};

pub const KINDS: [&str; 2] = ["ImagePolicy", "ClusterImagePolicy"];

/// What happens when an image does not satisfy the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny the review.
    #[default]
    Enforce,
    /// Admit with a warning.
    Warn,
    /// Admit; log and count only.
    Audit,
}

impl Mode {
    /// The name used in YAML and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
            Self::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone)]
pub enum AuthorityKind {
    /// Any of these keys; with `tlog`, a Rekor entry is required too.
    Key {
        keys: Vec<PublicKey>,
        tlog: Option<Arc<TrustRoot>>,
    },
    /// A Fulcio certificate for one of the identities, always with a Rekor entry.
    Keyless {
        trust: Arc<TrustRoot>,
        identities: Vec<IdentityRule>,
    },
}

#[derive(Debug, Clone)]
pub struct Authority {
    pub name: String,
    pub kind: AuthorityKind,
    /// When not empty, the authority is satisfied by verified attestations of each of these
    /// predicate types (as in policy-controller), not by a signature.
    pub attestations: Vec<AttestationRequirement>,
}

/// An attestation an authority requires: a name for messages and a full predicate type URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRequirement {
    pub name: String,
    pub predicate_type: String,
}

/// cosign's `--type` shorthands and the predicate types they stand for.
pub const PREDICATE_TYPES: [(&str, &str); 9] = [
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("link", "https://in-toto.io/Link/v1"),
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
];

/// Why an image policy document cannot be used: the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPolicy(String);

impl From<String> for InvalidPolicy {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// A predicate type as written in a policy: a shorthand or a URI.
pub fn predicate_type(written: &str) -> Result<String, InvalidPolicy> {
    if let Some((_, uri)) = PREDICATE_TYPES.iter().find(|(short, _)| *short == written) {
        return Ok((*uri).to_string());
    }
    if written.contains("://") {
        return Ok(written.to_string());
    }
    let known: Vec<&str> = PREDICATE_TYPES.iter().map(|(short, _)| *short).collect();
    Err(format!(
        "unknown predicateType {written:?}: give a URI or one of {}",
        known.join(", ")
    )
    .into())
}

/// Which digest of a multi-platform image (an image index) must carry the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MultiArch {
    /// The digest the Pod names (the index), as `cosign sign` of a multi-arch tag does.
    #[default]
    Index,
    /// The platform manifest the node will run (`cosign sign --recursive`).
    Platform,
    /// Either of them.
    Either,
}

#[derive(Debug, Clone)]
pub struct ImagePolicy {
    pub name: String,
    /// Where it was read from, for messages.
    pub file: String,
    pub globs: Vec<Glob>,
    pub authorities: Vec<Authority>,
    pub mode: Mode,
    pub multi_arch: MultiArch,
    /// The namespaces it applies in (`ImagePolicy` only); everywhere when not scoped.
    pub scope: Scope,
    /// Identifies the policy's content (its file, document, and the key and trust files it
    /// read); part of verification cache keys, so an edited policy or a replaced key never
    /// reuses results judged under the old one.
    pub fingerprint: u64,
}

impl ImagePolicy {
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.globs.iter().any(|g| g.matches(image))
    }

    /// Whether it applies in `namespace` (none: the caller knows no policy is scoped).
    pub fn applies_in(&self, namespace: Option<&Namespace<'_>>) -> bool {
        namespace.is_none_or(|ns| self.scope.applies_in(ns))
    }
}

/// An image glob: `*` within a path segment, `**` across segments. Its registry is read
/// as a reference's is (`GHCR.IO:443/` is `ghcr.io/`, `index.docker.io/` is `docker.io/`,
/// a glob without a registry such as `nginx` or `acme/*` is on Docker Hub), so a glob
/// matches every spelling of the images it names. A glob without tag or digest matches
/// the name only.
#[derive(Debug, Clone)]
pub struct Glob {
    pub pattern: String,
    regex: Regex,
    whole_reference: bool,
}

/// The glob with its registry canonical, as `ImageRef::parse` makes a reference's.
fn canonical_glob(pattern: &str) -> Result<String, InvalidPolicy> {
    let wild = |s: &str| s.contains(['*', '?']);
    let (first, rest) = match pattern.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (pattern, None),
    };
    let is_host =
        rest.is_some() && (first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost"));
    Ok(match rest {
        Some(rest) if is_host && !wild(first) => {
            let host = crate::images::canonical_host(first)
                .map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            format!("{host}/{rest}")
        }
        // A host with wildcards (`*.gcr.io`): its letters in lower case, `:443` dropped.
        Some(rest) if is_host => {
            let host = first.to_ascii_lowercase();
            let host = host.strip_suffix(":443").unwrap_or(&host);
            format!("{host}/{rest}")
        }
        _ if wild(first) => pattern.to_string(),
        Some(_) => format!("{}/{pattern}", crate::images::DOCKER_HUB),
        None => format!("{}/library/{pattern}", crate::images::DOCKER_HUB),
    })
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, InvalidPolicy> {
        let normalized = canonical_glob(pattern)?;
        let last_segment = normalized.rsplit('/').next().unwrap_or_default();
        let whole_reference = last_segment.contains(':') || normalized.contains('@');
        let mut regex = String::from("^");
        let mut chars = normalized.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    regex.push_str(".*");
                }
                '*' => regex.push_str("[^/]*"),
                '?' => regex.push_str("[^/]"),
                other => regex.push_str(&regex::escape(&other.to_string())),
            }
        }
        regex.push('$');
        let regex = Regex::new(&regex).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
        Ok(Self {
            pattern: pattern.to_string(),
            regex,
            whole_reference,
        })
    }

    pub fn matches(&self, image: &ImageRef) -> bool {
        if self.whole_reference {
            self.regex.is_match(&image.to_string())
        } else {
            self.regex.is_match(&image.name())
        }
    }
}

// ---- the YAML shape ----

#[derive(Deserialize)]
struct Document {
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    images: Vec<ImageGlob>,
    authorities: Vec<AuthoritySpec>,
    #[serde(default)]
    mode: Mode,
    /// verdict extension: for image indexes, which digest must be signed.
    #[serde(default)]
    multi_arch: MultiArch,
    /// `ImagePolicy` only: names and `*` globs of the namespaces it applies in.
    #[serde(default)]
    namespaces: Vec<String>,
    /// `ImagePolicy` only: a label selector over the namespace's labels.
    #[serde(default)]
    namespace_selector: Option<scope::SelectorSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageGlob {
    glob: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthoritySpec {
    #[serde(default)]
    name: Option<String>,
    key: Option<KeySpec>,
    keyless: Option<KeylessSpec>,
    /// policy-controller's transparency-log setting: its presence requires a Rekor entry
    /// for key authorities (keyless ones always need one).
    ctlog: Option<CtlogSpec>,
    /// Attestations required instead of a signature (policy-controller's shape; its `policy`
    /// field is not supported: write such checks in Rego over `input.images[*].attestations`).
    #[serde(default)]
    attestations: Vec<AttestationSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttestationSpec {
    #[serde(default)]
    name: Option<String>,
    predicate_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeySpec {
    data: Option<String>,
    /// verdict extension: a PEM file, relative to the policy file.
    file: Option<String>,
    #[serde(default)]
    hash_algorithm: Option<String>,
    /// verdict extension: `RSA_PSS_SHA256` for RSA-PSS keys (PKCS#1 v1.5 otherwise).
    #[serde(default)]
    signing_scheme: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeylessSpec {
    /// Accepted for compatibility; verdict never contacts Fulcio.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    identities: Vec<IdentitySpec>,
    /// verdict extension: trust material for this authority (default: `--trust-root`).
    #[serde(default)]
    trust_root: Option<TrustRootSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentitySpec {
    issuer: Option<String>,
    issuer_reg_exp: Option<String>,
    subject: Option<String>,
    subject_reg_exp: Option<String>,
    /// verdict extension: GitHub workflow claims from the certificate, each exact or
    /// `/regex/` (`repository`, `ref`, `trigger`, `sha`, `name`).
    #[serde(default)]
    github: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrustRootSpec {
    /// A Sigstore `trusted_root.json`.
    file: Option<String>,
    /// PEM files: Fulcio roots (with intermediates) and Rekor public keys.
    #[serde(default)]
    fulcio: Vec<String>,
    #[serde(default)]
    rekor: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CtlogSpec {
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
}

/// True when a YAML/JSON document is an image policy.
pub fn is_image_policy(doc: &serde_json::Value) -> bool {
    doc.get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| KINDS.contains(&k))
}

/// Parses one image policy document. `dir` resolves relative key and trust files.
pub fn parse(
    doc: serde_json::Value,
    file: &str,
    dir: &Path,
    default_trust: &Arc<TrustRoot>,
) -> Result<ImagePolicy, InvalidPolicy> {
    let text = doc.to_string();
    let doc: Document = serde_json::from_value(doc).map_err(|e| e.to_string())?;
    let mut files = Files::new(dir);
    let name = if doc.metadata.name.is_empty() {
        doc.kind.clone()
    } else {
        doc.metadata.name
    };
    let globs = doc
        .spec
        .images
        .iter()
        .map(|g| Glob::new(&g.glob))
        .collect::<Result<Vec<_>, _>>()?;
    if globs.is_empty() {
        return Err(format!("image policy {name:?} lists no images").into());
    }
    if doc.spec.authorities.is_empty() {
        return Err(format!("image policy {name:?} has no authorities").into());
    }
    let scoped = !doc.spec.namespaces.is_empty() || doc.spec.namespace_selector.is_some();
    if scoped && doc.kind != "ImagePolicy" {
        return Err(format!(
            "{} {name:?}: namespaces and namespaceSelector are fields of verdict's ImagePolicy; \
             a ClusterImagePolicy applies in every namespace, as in policy-controller",
            doc.kind
        )
        .into());
    }
    let scope = Scope::parse(doc.spec.namespaces, doc.spec.namespace_selector)
        .map_err(|e| format!("image policy {name:?}: {e}"))?;
    let mut authorities = Vec::new();
    for (i, spec) in doc.spec.authorities.into_iter().enumerate() {
        let authority_name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("authority-{i}"));
        let attestations = spec
            .attestations
            .iter()
            .map(|a| {
                Ok(AttestationRequirement {
                    name: a.name.clone().unwrap_or_else(|| a.predicate_type.clone()),
                    predicate_type: predicate_type(&a.predicate_type)?,
                })
            })
            .collect::<Result<Vec<_>, InvalidPolicy>>()
            .map_err(|e| format!("image policy {name:?}, {authority_name}: {e}"))?;
        let kind = authority(spec, &mut files, default_trust)
            .map_err(|e| format!("image policy {name:?}, {authority_name}: {e}"))?;
        authorities.push(Authority {
            name: authority_name,
            kind,
            attestations,
        });
    }
    Ok(ImagePolicy {
        name,
        file: file.to_string(),
        globs,
        authorities,
        mode: doc.spec.mode,
        multi_arch: doc.spec.multi_arch,
        scope,
        fingerprint: fingerprint(file, &text, files),
    })
}

fn authority(
    spec: AuthoritySpec,
    files: &mut Files,
    default_trust: &Arc<TrustRoot>,
) -> Result<AuthorityKind, InvalidPolicy> {
    match (spec.key, spec.keyless) {
        (Some(key), None) => {
            let pem = match (key.data, key.file) {
                (Some(data), None) => data.into_bytes(),
                (None, Some(file)) => files.read(&file)?,
                _ => {
                    return Err("a key needs exactly one of `data` (inline PEM) or `file`"
                        .to_string()
                        .into())
                }
            };
            if key.hash_algorithm.as_deref().is_some_and(|h| h != "sha256") {
                return Err("only hashAlgorithm sha256 is supported".to_string().into());
            }
            let keys = public_keys(&pem, key.signing_scheme.as_deref())?;
            let tlog = spec.ctlog.map(|_| default_trust.clone());
            Ok(AuthorityKind::Key { keys, tlog })
        }
        (None, Some(keyless)) => {
            let trust = match keyless.trust_root {
                None => default_trust.clone(),
                Some(t) => Arc::new(trust_root(t, files)?),
            };
            let identities = keyless
                .identities
                .into_iter()
                .map(identity)
                .collect::<Result<Vec<_>, _>>()?;
            if identities.is_empty() {
                return Err("a keyless authority needs at least one identity"
                    .to_string()
                    .into());
            }
            Ok(AuthorityKind::Keyless { trust, identities })
        }
        _ => Err("an authority needs exactly one of `key` or `keyless`"
            .to_string()
            .into()),
    }
}

/// Reads a policy's key and trust files, relative to its folder, and hashes what it read:
/// the files are part of the policy's content (replacing a key file must not let cached
/// verifications under the old key stand).
struct Files<'a> {
    dir: &'a Path,
    read: std::collections::hash_map::DefaultHasher,
}

impl<'a> Files<'a> {
    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            read: std::collections::hash_map::DefaultHasher::new(),
        }
    }

    fn read(&mut self, file: &str) -> Result<Vec<u8>, InvalidPolicy> {
        use std::hash::Hash;
        let path = self.dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        (file, &bytes).hash(&mut self.read);
        Ok(bytes)
    }
}

/// Every `PUBLIC KEY` block of `pem`.
pub fn public_keys(pem: &[u8], scheme: Option<&str>) -> Result<Vec<PublicKey>, InvalidPolicy> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::SubjectPublicKeyInfoDer;
    let mut keys = Vec::new();
    for spki in SubjectPublicKeyInfoDer::pem_slice_iter(pem) {
        let spki = spki.map_err(|e| format!("invalid PEM public key: {e}"))?;
        let key = match scheme {
            None => CosignVerificationKey::try_from_der(spki.as_ref()),
            Some(s) => {
                let scheme = SigningScheme::try_from(s)?;
                CosignVerificationKey::from_der(spki.as_ref(), &scheme)
            }
        }
        .map_err(|e| format!("unsupported public key: {e}"))?;
        let name = format!(
            "key sha256:{}",
            &crate::verify::trust::log_id(spki.as_ref())[..16]
        );
        keys.push(PublicKey {
            name,
            key,
            spki_der: spki.to_vec(),
        });
    }
    if keys.is_empty() {
        return Err("no PEM public key found".to_string().into());
    }
    Ok(keys)
}

fn trust_root(spec: TrustRootSpec, files: &mut Files) -> Result<TrustRoot, InvalidPolicy> {
    match spec.file {
        Some(file) => TrustRoot::from_trusted_root_json(&files.read(&file)?)
            .map_err(|e| InvalidPolicy(e.to_string())),
        None => {
            let fulcio = spec
                .fulcio
                .iter()
                .map(|f| files.read(f))
                .collect::<Result<Vec<_>, _>>()?;
            let rekor = spec
                .rekor
                .iter()
                .map(|f| files.read(f))
                .collect::<Result<Vec<_>, _>>()?;
            TrustRoot::from_pem(&fulcio, &rekor).map_err(|e| InvalidPolicy(e.to_string()))
        }
    }
}

fn matcher(
    exact: Option<String>,
    regex: Option<String>,
    what: &str,
) -> Result<Option<Matcher>, InvalidPolicy> {
    match (exact, regex) {
        (Some(e), None) => Ok(Some(Matcher::Exact(e))),
        (None, Some(r)) => Matcher::regex(&r)
            .map(Some)
            .map_err(|e| InvalidPolicy(format!("invalid {what} regular expression: {e}"))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("give either {what} or {what}RegExp, not both").into()),
    }
}

const GITHUB_CLAIMS: [(&str, &str); 5] = [
    ("repository", "workflow_repository"),
    ("ref", "workflow_ref"),
    ("trigger", "workflow_trigger"),
    ("sha", "workflow_sha"),
    ("name", "workflow_name"),
];

fn identity(spec: IdentitySpec) -> Result<IdentityRule, InvalidPolicy> {
    let issuer = matcher(spec.issuer, spec.issuer_reg_exp, "issuer")?;
    let subject = matcher(spec.subject, spec.subject_reg_exp, "subject")?
        .ok_or_else(|| "an identity needs subject or subjectRegExp".to_string())?;
    let mut claims = Vec::new();
    for (key, value) in spec.github {
        let Some((_, claim)) = GITHUB_CLAIMS.iter().find(|(k, _)| *k == key) else {
            return Err(format!(
                "unknown github claim {key:?} (known: repository, ref, trigger, sha, name)"
            )
            .into());
        };
        let m = match value.strip_prefix('/').and_then(|v| v.strip_suffix('/')) {
            Some(re) => Matcher::regex(re)
                .map_err(|e| format!("invalid github.{key} regular expression: {e}"))?,
            None => Matcher::Exact(value),
        };
        claims.push(((*claim).to_string(), m));
    }
    Ok(IdentityRule {
        issuer,
        subject,
        claims,
    })
}

/// Identifies everything a policy's outcomes depend on: its file, its document and the key
/// and trust files it read.
fn fingerprint(file: &str, doc: &str, files: Files) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (file, doc, files.read.finish()).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
