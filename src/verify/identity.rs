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
/// `(name, legacy OID whose value is the raw string, v2 OID whose value is a DER
/// UTF8String)`; Fulcio writes both for the claims that have both.
const CLAIMS: &[(&str, Option<&str>, Option<&str>)] = &[
    (
        "issuer",
        Some("1.3.6.1.4.1.57264.1.1"),
        Some("1.3.6.1.4.1.57264.1.8"),
    ),
    (
        "workflow_trigger",
        Some("1.3.6.1.4.1.57264.1.2"),
        Some("1.3.6.1.4.1.57264.1.20"),
    ),
    (
        "workflow_sha",
        Some("1.3.6.1.4.1.57264.1.3"),
        Some("1.3.6.1.4.1.57264.1.13"),
    ),
    ("workflow_name", Some("1.3.6.1.4.1.57264.1.4"), None),
    ("workflow_repository", Some("1.3.6.1.4.1.57264.1.5"), None),
    (
        "workflow_ref",
        Some("1.3.6.1.4.1.57264.1.6"),
        Some("1.3.6.1.4.1.57264.1.14"),
    ),
    (
        "source_repository_uri",
        None,
        Some("1.3.6.1.4.1.57264.1.12"),
    ),
    ("build_signer_uri", None, Some("1.3.6.1.4.1.57264.1.9")),
];

/// The identity facts of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertIdentity {
    /// The SAN email or URI (a Fulcio certificate has exactly one).
    pub subject: String,
    pub issuer: Option<String>,
    /// Other Sigstore claims by name (`workflow_repository`, `workflow_ref`, ...).
    pub claims: BTreeMap<String, String>,
}

/// Why a certificate names no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("unreadable certificate: {0}")]
    Unreadable(String),
    /// The certificate says two things about who it speaks for: no reading of it is the
    /// one its issuer meant, so it matches no identity.
    #[error("the certificate's identity is ambiguous: {0}")]
    Ambiguous(String),
}

impl CertIdentity {
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for ext in tbs.extensions().into_iter().flatten() {
            let oid = ext.extn_id.to_string();
            if raw
                .insert(oid.clone(), ext.extn_value.as_bytes().to_vec())
                .is_some()
            {
                return Err(IdentityError::Ambiguous(format!(
                    "extension {oid} appears twice"
                )));
            }
        }
        let subject = subject(tbs)?;
        let mut claims = BTreeMap::new();
        for (name, v1, v2) in CLAIMS {
            if let Some(value) = claim(&raw, name, *v1, *v2)? {
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

/// The one SAN email or URI; none gives an empty subject (which no rule matches).
fn subject(tbs: &x509_cert::TbsCertificate) -> Result<String, IdentityError> {
    let san = match tbs.get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san,
        Ok(None) => return Ok(String::new()),
        Err(e) => return Err(IdentityError::Unreadable(format!("its SAN: {e}"))),
    };
    let names: Vec<String> = san
        .0
        .iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(email) => Some(email.to_string()),
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [] => Ok(String::new()),
        [one] => Ok(one.clone()),
        more => Err(IdentityError::Ambiguous(format!(
            "it names {} subjects ({})",
            more.len(),
            more.join(", ")
        ))),
    }
}

/// One claim from its v1 extension (the value's raw bytes) and its v2 one (a DER
/// UTF8String). When both are there they must agree: cosign reads one, older tools the
/// other.
fn claim(
    raw: &BTreeMap<String, Vec<u8>>,
    name: &str,
    v1: Option<&str>,
    v2: Option<&str>,
) -> Result<Option<String>, IdentityError> {
    let v1_value = v1
        .and_then(|oid| raw.get(oid).map(|bytes| (oid, bytes)))
        .map(|(oid, bytes)| {
            String::from_utf8(bytes.clone()).map_err(|_| {
                IdentityError::Unreadable(format!("its {name} extension {oid} is not UTF-8"))
            })
        })
        .transpose()?;
    let v2_value = v2
        .and_then(|oid| raw.get(oid).map(|bytes| (oid, bytes)))
        .map(|(oid, bytes)| {
            Utf8StringRef::from_der(bytes)
                .map(|s| s.as_str().to_string())
                .map_err(|_| {
                    IdentityError::Unreadable(format!(
                        "its {name} extension {oid} is not a DER UTF8String"
                    ))
                })
        })
        .transpose()?;
    match (v1_value, v2_value) {
        (Some(old), Some(new)) if old != new => Err(IdentityError::Ambiguous(format!(
            "its {name} is {old:?} in extension {} but {new:?} in extension {}",
            v1.unwrap_or_default(),
            v2.unwrap_or_default()
        ))),
        (old, new) => Ok(new.or(old)),
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

    /// A self-signed certificate with these SANs and Sigstore extensions `(last arc, value)`.
    fn certificate(sans: &[&str], extensions: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans
            .iter()
            .map(|s| rcgen::SanType::URI((*s).try_into().expect("uri")))
            .collect();
        params.custom_extensions = extensions
            .iter()
            .map(|(arc, value)| {
                rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 57264, 1, *arc],
                    value.clone(),
                )
            })
            .collect();
        let key = rcgen::KeyPair::generate().expect("key");
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    fn utf8(s: &str) -> Vec<u8> {
        let mut der = vec![0x0c, s.len() as u8];
        der.extend_from_slice(s.as_bytes());
        der
    }

    const GITHUB: &str = "https://token.actions.githubusercontent.com";
    const SUBJECT: &str = "https://github.com/acme/app/.github/workflows/release.yaml@refs/tags/v1";

    #[test]
    fn issuer_extensions_that_agree_name_the_issuer() {
        let both = certificate(&[SUBJECT], &[(1, GITHUB.into()), (8, utf8(GITHUB))]);
        let id = CertIdentity::from_der(&both).expect("identity");
        assert_eq!(
            (id.subject.as_str(), id.issuer.as_deref()),
            (SUBJECT, Some(GITHUB))
        );
        // v2-only claims are DER: the repository is derived from the source repository URI.
        let v2 = certificate(
            &[SUBJECT],
            &[(8, utf8(GITHUB)), (12, utf8("https://github.com/acme/app"))],
        );
        let id = CertIdentity::from_der(&v2).expect("identity");
        assert_eq!(id.claims["workflow_repository"], "acme/app");
        let legacy = certificate(&[SUBJECT], &[(1, GITHUB.into())]);
        assert_eq!(
            CertIdentity::from_der(&legacy)
                .expect("identity")
                .issuer
                .as_deref(),
            Some(GITHUB)
        );
    }

    /// cosign reads the v2 extension, older verifiers the legacy one: when they disagree,
    /// no reading is safe, and the certificate matches no identity.
    #[test]
    fn a_certificate_that_names_itself_two_ways_has_no_identity() {
        let cases = [
            certificate(
                &[SUBJECT],
                &[(1, "https://evil.example".into()), (8, utf8(GITHUB))],
            ),
            certificate(
                &[SUBJECT],
                &[(1, GITHUB.into()), (8, utf8("https://evil.example"))],
            ),
            certificate(
                &[SUBJECT],
                &[(8, utf8(GITHUB)), (8, utf8("https://evil.example"))],
            ),
            certificate(
                &[SUBJECT],
                &[(6, b"refs/tags/v1".to_vec()), (14, utf8("refs/heads/evil"))],
            ),
            certificate(
                &[SUBJECT, "https://github.com/evil/app"],
                &[(8, utf8(GITHUB))],
            ),
        ];
        for der in cases {
            assert!(
                matches!(
                    CertIdentity::from_der(&der),
                    Err(IdentityError::Ambiguous(_))
                ),
                "{:?}",
                CertIdentity::from_der(&der)
            );
        }
        let malformed = certificate(&[SUBJECT], &[(1, GITHUB.into()), (8, GITHUB.into())]);
        assert!(matches!(
            CertIdentity::from_der(&malformed),
            Err(IdentityError::Unreadable(_))
        ));
    }
}
