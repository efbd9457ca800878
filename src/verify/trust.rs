//! Trust material for keyless verification: Fulcio certificate authorities and Rekor log
//! keys, from a Sigstore `trusted_root.json` or from PEM files. Offline: nothing is fetched.

use super::bundle::BundleTrust;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use serde::Deserialize;
use sigstore::crypto::CosignVerificationKey;
use std::collections::BTreeMap;
use std::sync::Arc;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The Sigstore public-good (production) trusted root as shipped by the `sigstore-trust-root`
/// crate: Fulcio CAs, Rekor v1 and v2 logs, CT logs and the timestamp authority. Built in so
/// nothing is fetched at start-up; `--trust-root FILE` follows a newer root.
pub const PUBLIC_GOOD: &str = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid trusted_root.json: {0}")]
    Json(String),
    #[error("invalid trust material: {0}")]
    Material(String),
}

/// A window of validity; `None` ends mean open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Validity {
    pub fn contains(&self, unix_seconds: i64) -> bool {
        self.start.is_none_or(|s| unix_seconds >= s) && self.end.is_none_or(|e| unix_seconds <= e)
    }
}

/// One Fulcio CA: its root and the intermediates below it.
#[derive(Debug, Clone)]
pub struct FulcioCa {
    pub root: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub validity: Validity,
}

/// A Rekor log key, looked up by log ID (hex SHA-256 of its DER public key).
#[derive(Debug, Clone)]
pub struct RekorKey {
    pub key: CosignVerificationKey,
    pub validity: Validity,
}

#[derive(Debug, Clone, Default)]
pub struct TrustRoot {
    pub fulcio: Vec<FulcioCa>,
    pub rekor: BTreeMap<String, RekorKey>,
    /// The same trust for Sigstore bundles (sigstore-verify's form, which also holds CT logs
    /// and timestamp authorities); `None` only for the empty default.
    pub bundle: Option<Arc<BundleTrust>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedRootJson {
    #[serde(default)]
    tlogs: Vec<TlogJson>,
    #[serde(default)]
    certificate_authorities: Vec<CaJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogJson {
    public_key: PublicKeyJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyJson {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaJson {
    cert_chain: CertChainJson,
    #[serde(default)]
    valid_for: Option<ValidForJson>,
}

#[derive(Deserialize)]
struct CertChainJson {
    certificates: Vec<RawBytesJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytesJson {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ValidForJson {
    start: Option<String>,
    end: Option<String>,
}

impl TrustRoot {
    /// The built-in Sigstore public-good root.
    pub fn public_good() -> Self {
        // The embedded file is checked by a unit test; an error here cannot happen at runtime.
        Self::from_trusted_root_json(PUBLIC_GOOD.as_bytes()).unwrap_or_default()
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, TrustError> {
        let bytes = std::fs::read(path).map_err(|e| TrustError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_trusted_root_json(&bytes)
    }

    /// Parses a Sigstore `trusted_root.json` (Fulcio CAs and Rekor tlogs; CT logs are not used).
    pub fn from_trusted_root_json(bytes: &[u8]) -> Result<Self, TrustError> {
        let json: TrustedRootJson =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Json(e.to_string()))?;
        let text = std::str::from_utf8(bytes).map_err(|e| TrustError::Json(e.to_string()))?;
        let mut root = Self {
            bundle: Some(Arc::new(
                BundleTrust::from_trusted_root_json(text)
                    .map_err(|e| TrustError::Json(e.to_string()))?,
            )),
            ..Self::default()
        };
        for ca in json.certificate_authorities {
            let mut chain = Vec::new();
            for cert in ca.cert_chain.certificates {
                chain.push(CertificateDer::from(decode_b64(&cert.raw_bytes)?));
            }
            // The chain runs from the issuing CA up to the root.
            let Some(ca_root) = chain.pop() else {
                return Err(TrustError::Json(
                    "a certificate authority has an empty chain".to_string(),
                ));
            };
            root.fulcio.push(FulcioCa {
                root: ca_root,
                intermediates: chain,
                validity: validity(ca.valid_for)?,
            });
        }
        for tlog in json.tlogs {
            let der = decode_b64(&tlog.public_key.raw_bytes)?;
            root.add_rekor_key(&der, validity(tlog.public_key.valid_for)?)?;
        }
        Ok(root)
    }

    /// Trust from PEM: each Fulcio file holds a root and optionally intermediates (any order);
    /// each Rekor file holds one public key.
    pub fn from_pem(fulcio: &[Vec<u8>], rekor: &[Vec<u8>]) -> Result<Self, TrustError> {
        let mut root = Self::default();
        for pem in fulcio {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| TrustError::Material(e.to_string()))?;
            let (roots, intermediates): (Vec<_>, Vec<_>) =
                certs.into_iter().partition(is_self_signed);
            if roots.is_empty() {
                return Err(TrustError::Material(
                    "a Fulcio PEM file has no self-signed root certificate".to_string(),
                ));
            }
            for ca_root in roots {
                root.fulcio.push(FulcioCa {
                    root: ca_root,
                    intermediates: intermediates.clone(),
                    validity: Validity::default(),
                });
            }
        }
        let mut rekor_keys = Vec::new();
        for pem in rekor {
            let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
                .map_err(|e| TrustError::Material(e.to_string()))?;
            root.add_rekor_key(spki.as_ref(), Validity::default())?;
            rekor_keys.push(spki.to_vec());
        }
        let json = trusted_root_json(&root.fulcio, &rekor_keys)?;
        root.bundle = Some(Arc::new(
            BundleTrust::from_trusted_root_json(&json)
                .map_err(|e| TrustError::Material(e.to_string()))?,
        ));
        Ok(root)
    }

    /// When the first certificate of a current Fulcio CA (one without an end of validity)
    /// expires, in Unix seconds.
    pub fn earliest_expiry(&self) -> Option<i64> {
        self.fulcio
            .iter()
            .filter(|ca| ca.validity.end.is_none())
            .flat_map(|ca| std::iter::once(&ca.root).chain(&ca.intermediates))
            .filter_map(|cert| crate::certs::not_after(cert))
            .min()
    }

    fn add_rekor_key(&mut self, spki_der: &[u8], validity: Validity) -> Result<(), TrustError> {
        let key = CosignVerificationKey::try_from_der(spki_der)
            .map_err(|e| TrustError::Material(e.to_string()))?;
        self.rekor
            .insert(log_id(spki_der), RekorKey { key, validity });
        Ok(())
    }
}

/// A `trusted_root.json` holding the given Fulcio CAs and Rekor keys (no CT logs, no
/// timestamp authorities), so PEM trust serves bundles too.
pub fn trusted_root_json(fulcio: &[FulcioCa], rekor: &[Vec<u8>]) -> Result<String, TrustError> {
    const ALWAYS: &str = "1970-01-01T00:00:00Z";
    let mut tlogs = Vec::new();
    for der in rekor {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        tlogs.push(serde_json::json!({
            "baseUrl": "https://rekor.invalid",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": BASE64.encode(der), "keyDetails": key_details(der)?, "validFor": {"start": ALWAYS}},
            "logId": {"keyId": BASE64.encode(digest)},
        }));
    }
    let cas: Vec<serde_json::Value> = fulcio
        .iter()
        .map(|ca| {
            let chain: Vec<serde_json::Value> = ca
                .intermediates
                .iter()
                .chain(std::iter::once(&ca.root))
                .map(|c| serde_json::json!({"rawBytes": BASE64.encode(c)}))
                .collect();
            serde_json::json!({
                "subject": {}, "uri": "https://fulcio.invalid",
                "certChain": {"certificates": chain}, "validFor": {"start": ALWAYS},
            })
        })
        .collect();
    Ok(serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs, "certificateAuthorities": cas, "ctlogs": [], "timestampAuthorities": [],
    })
    .to_string())
}

/// The `keyDetails` name of a DER public key.
fn key_details(spki_der: &[u8]) -> Result<&'static str, TrustError> {
    use x509_cert::der::Decode as _;
    let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| TrustError::Material(format!("unreadable Rekor key: {e}")))?;
    let curve = spki
        .algorithm
        .parameters_oid()
        .map(|o| o.to_string())
        .unwrap_or_default();
    match (spki.algorithm.oid.to_string().as_str(), curve.as_str()) {
        ("1.2.840.10045.2.1", "1.2.840.10045.3.1.7") => Ok("PKIX_ECDSA_P256_SHA_256"),
        ("1.2.840.10045.2.1", "1.3.132.0.34") => Ok("PKIX_ECDSA_P384_SHA_384"),
        ("1.2.840.10045.2.1", "1.3.132.0.35") => Ok("PKIX_ECDSA_P521_SHA_512"),
        ("1.3.101.112", _) => Ok("PKIX_ED25519"),
        ("1.2.840.113549.1.1.1", _) => Ok("PKIX_RSA_PKCS1V15_2048_SHA256"),
        (oid, _) => Err(TrustError::Material(format!(
            "unsupported Rekor key algorithm {oid}"
        ))),
    }
}

/// A Rekor log ID: hex SHA-256 of the log's DER public key.
pub fn log_id(spki_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    use x509_cert::der::Decode as _;
    x509_cert::Certificate::from_der(cert)
        .map(|c| c.tbs_certificate().subject() == c.tbs_certificate().issuer())
        .unwrap_or(false)
}

fn decode_b64(text: &str) -> Result<Vec<u8>, TrustError> {
    BASE64
        .decode(text)
        .map_err(|e| TrustError::Json(format!("bad base64: {e}")))
}

fn validity(valid_for: Option<ValidForJson>) -> Result<Validity, TrustError> {
    let Some(v) = valid_for else {
        return Ok(Validity::default());
    };
    let parse = |t: Option<String>| -> Result<Option<i64>, TrustError> {
        t.map(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map(|d| d.unix_timestamp())
                .map_err(|e| TrustError::Json(format!("bad time {t:?}: {e}")))
        })
        .transpose()
    };
    Ok(Validity {
        start: parse(v.start)?,
        end: parse(v.end)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_good_root_has_fulcio_cas_and_the_rekor_key() {
        let root = TrustRoot::from_trusted_root_json(PUBLIC_GOOD.as_bytes())
            .expect("the embedded root parses");
        assert_eq!(root.fulcio.len(), 2);
        assert_eq!(root.fulcio[1].intermediates.len(), 1);
        assert!(root
            .rekor
            .contains_key("c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"));
        let v1 = root.fulcio[0].validity;
        assert!(v1.contains(1_634_714_717) && !v1.contains(1_700_000_000));
    }

    #[test]
    fn pem_trust_matches_the_json_root() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/trust/prod");
        let read = |name: &str| std::fs::read(dir.join(name)).expect("fixture");
        let mut v2 = read("fulcio_v2_intermediate.pem");
        v2.extend(read("fulcio_v2_root.pem"));
        let root = TrustRoot::from_pem(&[read("fulcio_v1_root.pem"), v2], &[read("rekor.pub")])
            .expect("parses");
        assert_eq!(root.fulcio.len(), 2);
        assert_eq!(root.fulcio[1].intermediates.len(), 1);
        let want = String::from_utf8(read("rekor.logid.hex")).expect("text");
        assert!(root.rekor.contains_key(want.trim()));
    }

    #[test]
    fn rejects_broken_material() {
        assert!(TrustRoot::from_trusted_root_json(b"{nope").is_err());
        assert!(TrustRoot::from_pem(&[b"not pem".to_vec()], &[]).is_err());
        assert!(TrustRoot::from_pem(
            &[],
            &[b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec()]
        )
        .is_err());
    }
}
