//! Who a Fulcio certificate speaks for: the subject (SAN email or URI), the OIDC issuer
//! and the GitHub workflow claims from Sigstore's extensions, and matching them against
//! what an image policy requires.

use regex::Regex;
use serde::Serialize;
use std::collections::BTreeMap;
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

/// Sigstore's OID arc 1.3.6.1.4.1.57264.1 (see sigstore/fulcio docs/oid-info.md).
/// `(name, v1 raw-string OID, v2 DER-UTF8String OID)`.
const CLAIMS: &[(&str, &str, Option<&str>)] = &[
    (
        "issuer",
        "1.3.6.1.4.1.57264.1.1",
        Some("1.3.6.1.4.1.57264.1.8"),
    ),
    (
        "workflow_trigger",
        "1.3.6.1.4.1.57264.1.2",
        Some("1.3.6.1.4.1.57264.1.20"),
    ),
    (
        "workflow_sha",
        "1.3.6.1.4.1.57264.1.3",
        Some("1.3.6.1.4.1.57264.1.13"),
    ),
    ("workflow_name", "1.3.6.1.4.1.57264.1.4", None),
    ("workflow_repository", "1.3.6.1.4.1.57264.1.5", None),
    (
        "workflow_ref",
        "1.3.6.1.4.1.57264.1.6",
        Some("1.3.6.1.4.1.57264.1.14"),
    ),
    ("source_repository_uri", "1.3.6.1.4.1.57264.1.12", None),
    ("build_signer_uri", "1.3.6.1.4.1.57264.1.9", None),
];

/// The identity facts of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertIdentity {
    /// SAN email or URI (the first one).
    pub subject: String,
    pub issuer: Option<String>,
    /// Other Sigstore claims by name (`workflow_repository`, `workflow_ref`, ...).
    pub claims: BTreeMap<String, String>,
}

impl CertIdentity {
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let tbs = cert.tbs_certificate();
        let subject = match tbs.get_extension::<SubjectAltName>() {
            Ok(Some((_, san))) => san.0.iter().find_map(|name| match name {
                GeneralName::Rfc822Name(email) => Some(email.to_string()),
                GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
                _ => None,
            }),
            _ => None,
        }
        .unwrap_or_default();
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for ext in tbs.extensions().into_iter().flatten() {
            raw.insert(ext.extn_id.to_string(), ext.extn_value.as_bytes().to_vec());
        }
        let mut claims = BTreeMap::new();
        for (name, v1, v2) in CLAIMS {
            // v2 extensions are DER UTF8Strings; v1 ones are the raw bytes of the value.
            let value = v2
                .and_then(|oid| raw.get(oid))
                .and_then(|bytes| {
                    Utf8StringRef::from_der(bytes)
                        .ok()
                        .map(|s| s.as_str().to_string())
                })
                .or_else(|| {
                    raw.get(*v1)
                        .and_then(|bytes| String::from_utf8(bytes.clone()).ok())
                });
            if let Some(value) = value {
                claims.insert((*name).to_string(), value);
            }
        }
        // Derive the v1 names from v2 claims so policies can use one set of names.
        if !claims.contains_key("workflow_repository") {
            if let Some(uri) = claims.get("source_repository_uri") {
                let repo = uri.trim_start_matches("https://github.com/").to_string();
                claims.insert("workflow_repository".to_string(), repo);
            }
        }
        let issuer = claims.remove("issuer");
        Ok(Self {
            subject,
            issuer,
            claims,
        })
    }
}

/// A string that must match exactly or by a regular expression. Regular expressions are
/// anchored at both ends: `https://github.com/acme/.*` does not match `https://evil.example/https://github.com/acme/x`.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Regex(Regex),
}

impl Matcher {
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Regex::new(&format!("^(?:{pattern})$")).map(Self::Regex)
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(want) => want == value,
            Self::Regex(re) => re.is_match(value),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Exact(want) => format!("{want:?}"),
            Self::Regex(re) => format!(
                "/{}/",
                re.as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$")
            ),
        }
    }
}

/// One accepted identity: subject, issuer (when given; certificates from before 2022 carry
/// none) and optional claims. Everything given must match.
#[derive(Debug, Clone)]
pub struct IdentityRule {
    pub issuer: Option<Matcher>,
    pub subject: Matcher,
    pub claims: Vec<(String, Matcher)>,
}

impl IdentityRule {
    pub fn matches(&self, identity: &CertIdentity) -> bool {
        self.subject.matches(&identity.subject)
            && self
                .issuer
                .as_ref()
                .is_none_or(|m| identity.issuer.as_deref().is_some_and(|i| m.matches(i)))
            && self
                .claims
                .iter()
                .all(|(name, m)| identity.claims.get(name).is_some_and(|v| m.matches(v)))
    }

    pub fn describe(&self) -> String {
        let issuer = self
            .issuer
            .as_ref()
            .map_or_else(|| "(any)".to_string(), Matcher::describe);
        let mut text = format!("issuer {issuer} subject {}", self.subject.describe());
        for (name, m) in &self.claims {
            text.push_str(&format!(" {name} {}", m.describe()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    fn fixture_cert(dir: &str) -> CertIdentity {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/cosign")
            .join(dir)
            .join("certificate.pem");
        let der = CertificateDer::from_pem_file(path).expect("fixture certificate");
        CertIdentity::from_der(&der).expect("parses")
    }

    #[test]
    fn reads_github_actions_identity_and_claims() {
        let id = fixture_cert("keyless-gha-2026-salrashid123-server_image");
        assert_eq!(
            id.subject,
            "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30"
        );
        assert_eq!(
            id.issuer.as_deref(),
            Some("https://token.actions.githubusercontent.com")
        );
        assert_eq!(
            id.claims["workflow_repository"],
            "salrashid123/go-bazel-github-workflow"
        );
        assert_eq!(id.claims["workflow_ref"], "refs/tags/v0.0.30");
        assert_eq!(id.claims["workflow_trigger"], "push");
        assert_eq!(
            id.claims["workflow_sha"],
            "7624bd5f279fb5d4700ea72c1b2373ee33960700"
        );
    }

    #[test]
    fn reads_2021_email_identity_without_issuer_extension() {
        let id = fixture_cert("keyless-email-2021-sigstore-rs");
        assert_eq!(id.subject, "flavio@castelli.me");
        assert_eq!(id.issuer, None);
    }

    #[test]
    fn regular_expressions_are_anchored() {
        let m = Matcher::regex("https://github.com/acme/.*").expect("valid");
        assert!(
            m.matches("https://github.com/acme/app/.github/workflows/release.yaml@refs/heads/main")
        );
        assert!(!m.matches("https://evil.example/https://github.com/acme/app"));
        assert!(!Matcher::regex("acme")
            .expect("valid")
            .matches("not-acme-really"));
        assert_eq!(m.describe(), "/https://github.com/acme/.*/");
    }

    #[test]
    fn every_claim_must_match() {
        let id = fixture_cert("keyless-gha-2026-salrashid123-server_image");
        let rule = IdentityRule {
            issuer: Some(Matcher::Exact(
                "https://token.actions.githubusercontent.com".into(),
            )),
            subject: Matcher::regex("https://github.com/salrashid123/.*").expect("valid"),
            claims: vec![(
                "workflow_ref".into(),
                Matcher::regex("refs/tags/v.*").expect("valid"),
            )],
        };
        assert!(rule.matches(&id));
        let wrong_ref = IdentityRule {
            claims: vec![(
                "workflow_ref".into(),
                Matcher::Exact("refs/heads/main".into()),
            )],
            ..rule.clone()
        };
        assert!(!wrong_ref.matches(&id));
        let wrong_issuer = IdentityRule {
            issuer: Some(Matcher::Exact("https://accounts.google.com".into())),
            ..rule
        };
        assert!(!wrong_issuer.matches(&id));
    }
}
