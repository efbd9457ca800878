//! The outcome of judging one object: reason codes, findings and the verdict.
//! Owns how findings become allowed/denied and the words a person reads;
//! not how findings are produced.

use serde::Serialize;
use std::fmt;

/// Stable reason codes. They are a public contract: users alert and grep on them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum ReasonCode {
    /// An image reference that the Docker reference grammar rejects.
    InvalidImageRef,
    /// A Rego `deny` or `violation` fired without naming a code of its own.
    PolicyDenied,
    /// A Rego `warn` fired without naming a code of its own.
    PolicyWarning,
    /// Policy evaluation ran past its time limit.
    PolicyTimeout,
    /// Policy evaluation failed (a runtime error in a policy).
    PolicyError,
    /// The review cannot be judged (no request, no object, malformed fields).
    InvalidRequest,
    /// The review's deadline ran out before a verdict was reached.
    Timeout,
    /// An unexpected internal failure; always a denial.
    InternalError,
    /// The image has no cosign signature at all.
    NoSignature,
    /// No signature was made by a key the policy trusts (keyed authorities), or a keyless
    /// authority met a signature without a certificate.
    UntrustedKey,
    /// The signature does not verify over its payload with the certificate's key.
    SignatureInvalid,
    /// The signed payload names another digest than the one being admitted.
    DigestMismatch,
    /// No Rekor transparency-log entry where one is required.
    TlogMissing,
    /// The Rekor entry's signed timestamp does not verify with a trusted log key.
    TlogInvalid,
    /// The Rekor entry records another payload, signature or certificate.
    TlogMismatch,
    /// The certificate does not chain to a trusted Fulcio root.
    UntrustedRoot,
    /// The certificate was not valid when the signature was logged.
    CertExpired,
    /// The signer is not an identity the policy accepts.
    IdentityMismatch,
    /// An RFC 3161 timestamp does not verify, or no trusted time of signing exists.
    TimestampInvalid,
    /// The image policy requires an attestation of a predicate type that no verified
    /// attestation has.
    AttestationMissing,
    /// The registry could not be reached (connection refused, DNS, TLS).
    RegistryUnreachable,
    /// The registry answered with an error, too much, or something unreadable.
    RegistryError,
    /// The registry refused the credentials (401/403).
    RegistryAuth,
    /// The image (tag or digest) does not exist in the registry.
    ImageNotFound,
    /// No image policy matches the image, and `--no-match-policy` is `deny` (or `warn`).
    NoMatchingPolicy,
    /// The object has more images than verdict judges in one review (`MAX_IMAGES`).
    TooManyImages,
    /// The cluster inventory has not finished its first list (or the policies have not
    /// received it yet): policies reading `data.inventory` cannot be trusted to judge.
    InventoryNotSynced,
    /// A Gatekeeper constraint's template found a violation (denied, warned or reported
    /// by its enforcement action).
    ConstraintViolation,
    /// A code chosen by a policy (`{"code": "...", "msg": "..."}`).
    Custom(String),
}

impl ReasonCode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidImageRef => "INVALID_IMAGE_REF",
            Self::PolicyDenied => "POLICY_DENIED",
            Self::PolicyWarning => "POLICY_WARNING",
            Self::PolicyTimeout => "POLICY_TIMEOUT",
            Self::PolicyError => "POLICY_ERROR",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::Timeout => "TIMEOUT",
            Self::InternalError => "INTERNAL_ERROR",
            Self::NoSignature => "NO_SIGNATURE",
            Self::UntrustedKey => "UNTRUSTED_KEY",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::DigestMismatch => "DIGEST_MISMATCH",
            Self::TlogMissing => "TLOG_MISSING",
            Self::TlogInvalid => "TLOG_INVALID",
            Self::TlogMismatch => "TLOG_MISMATCH",
            Self::UntrustedRoot => "UNTRUSTED_ROOT",
            Self::CertExpired => "CERT_EXPIRED",
            Self::IdentityMismatch => "IDENTITY_MISMATCH",
            Self::TimestampInvalid => "TIMESTAMP_INVALID",
            Self::AttestationMissing => "ATTESTATION_MISSING",
            Self::RegistryUnreachable => "REGISTRY_UNREACHABLE",
            Self::RegistryError => "REGISTRY_ERROR",
            Self::RegistryAuth => "REGISTRY_AUTH",
            Self::ImageNotFound => "IMAGE_NOT_FOUND",
            Self::NoMatchingPolicy => "NO_MATCHING_POLICY",
            Self::TooManyImages => "TOO_MANY_IMAGES",
            Self::InventoryNotSynced => "INVENTORY_NOT_SYNCED",
            Self::ConstraintViolation => "CONSTRAINT_VIOLATION",
            Self::Custom(code) => code,
        }
    }
}

impl From<ReasonCode> for String {
    fn from(code: ReasonCode) -> Self {
        code.as_str().to_string()
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a finding blocks admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Deny,
    Warn,
    /// Reported by dry runs (and audit) only: a Gatekeeper constraint with
    /// `enforcementAction: dryrun`. Never denies, never warns.
    Dryrun,
}

/// Where a finding came from: a policy rule, or verdict itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Origin {
    /// A Rego rule: the file(s) declaring it and its full path, e.g. `data.kubernetes.admission.deny`.
    Policy { files: Vec<String>, rule: String },
    /// A Gatekeeper constraint: its name and kind, its template, the file it is in, the
    /// enforcement action that gave the finding its severity, and the violation's
    /// `details`.
    Constraint {
        constraint: String,
        kind: String,
        template: String,
        file: String,
        #[serde(rename = "enforcementAction")]
        enforcement_action: String,
        #[serde(skip_serializing_if = "serde_json::Value::is_null")]
        details: serde_json::Value,
    },
    /// One image of the object: an image policy it does not satisfy (`policy`, `file`), or
    /// a check of verdict's on it (no image policy matches, an invalid reference).
    Image {
        container: String,
        image: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
    /// A check built into verdict (reference parsing, deadlines, request shape).
    Builtin,
}

/// One reason, good or bad, that a person should read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: ReasonCode,
    pub message: String,
    pub origin: Origin,
}

impl Finding {
    pub fn builtin(severity: Severity, code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            origin: Origin::Builtin,
        }
    }

    /// `[CODE] message`, the form shown to people.
    pub fn display(&self) -> String {
        format!("[{}] {}", self.code, self.message)
    }
}

/// The decision for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    /// `allow` or `deny`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// All findings for one object, and what they add up to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub fn push(&mut self, finding: Finding) {
        self.0.push(finding);
    }

    /// Denied as soon as one finding denies: there is no rule that overrides a denial.
    pub fn decision(&self) -> Decision {
        if self.denials().next().is_some() {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }

    pub fn denials(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter().filter(|f| f.severity == Severity::Deny)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter().filter(|f| f.severity == Severity::Warn)
    }

    /// Distinct reason codes of the denials, in order of first appearance.
    pub fn denial_codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = Vec::new();
        for f in self.denials() {
            if !codes.iter().any(|c| c == f.code.as_str()) {
                codes.push(f.code.to_string());
            }
        }
        codes
    }

    /// The text for `status.message`: what was denied, each reason on its own line, at most
    /// `MAX_LISTED` of them and how many more (an answer stays small whatever the policies
    /// find).
    pub fn denial_message(&self, subject: &str) -> String {
        let reasons = listed(self.denials().map(Finding::display), self.denials().count());
        format!("verdict denied {subject}:\n- {}", reasons.join("\n- "))
    }

    /// The admission warnings: at most `MAX_LISTED`, and how many more.
    pub fn warning_texts(&self) -> Vec<String> {
        listed(
            self.warnings().map(Finding::display),
            self.warnings().count(),
        )
    }
}

/// How many denials or warnings an answer lists; the rest are counted.
pub const MAX_LISTED: usize = 50;

fn listed(texts: impl Iterator<Item = String>, total: usize) -> Vec<String> {
    let mut out: Vec<String> = texts.take(MAX_LISTED).collect();
    if total > MAX_LISTED {
        out.push(format!(
            "... and {} more (run a dry run, POST /v1/check, for all of them)",
            total - MAX_LISTED
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_denial_denies_and_warnings_do_not() {
        let mut findings = Findings::default();
        findings.push(Finding::builtin(
            Severity::Warn,
            ReasonCode::PolicyWarning,
            "careful",
        ));
        assert_eq!(findings.decision(), Decision::Allow);
        findings.push(Finding::builtin(
            Severity::Deny,
            ReasonCode::InvalidImageRef,
            "bad ref",
        ));
        findings.push(Finding::builtin(
            Severity::Deny,
            ReasonCode::InvalidImageRef,
            "worse ref",
        ));
        assert_eq!(findings.decision(), Decision::Deny);
        assert_eq!(findings.denial_codes(), ["INVALID_IMAGE_REF"]);
        assert_eq!(
            findings.denial_message("Pod default/web"),
            "verdict denied Pod default/web:\n- [INVALID_IMAGE_REF] bad ref\n- [INVALID_IMAGE_REF] worse ref"
        );
    }

    #[test]
    fn answers_list_at_most_fifty_reasons_and_count_the_rest() {
        let mut findings = Findings::default();
        for i in 0..120 {
            findings.push(Finding::builtin(
                Severity::Deny,
                ReasonCode::PolicyDenied,
                format!("d{i}"),
            ));
            findings.push(Finding::builtin(
                Severity::Warn,
                ReasonCode::PolicyWarning,
                format!("w{i}"),
            ));
        }
        let message = findings.denial_message("Pod a/b");
        assert_eq!(message.lines().count(), 1 + MAX_LISTED + 1);
        assert!(
            message.ends_with("- ... and 70 more (run a dry run, POST /v1/check, for all of them)"),
            "{message}"
        );
        let warnings = findings.warning_texts();
        assert_eq!(warnings.len(), MAX_LISTED + 1);
        assert!(warnings[MAX_LISTED].starts_with("... and 70 more"));
    }

    #[test]
    fn codes_serialize_as_stable_strings() {
        let json = serde_json::to_string(&ReasonCode::PolicyTimeout).expect("serializes");
        assert_eq!(json, "\"POLICY_TIMEOUT\"");
        let json = serde_json::to_string(&ReasonCode::Custom("IMAGE_TAG_LATEST".into()))
            .expect("serializes");
        assert_eq!(json, "\"IMAGE_TAG_LATEST\"");
    }
}
