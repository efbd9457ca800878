//! Certificates: `verdict certs` (a development CA and a serving certificate signed by it;
//! for clusters, use cert-manager or your own PKI, these are for `make run` and tests),
//! and reading when a certificate expires, for the served one and for trust roots alike.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// A certificate's notAfter in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let seconds = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(seconds).ok()
}

/// The PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh CA and a serving certificate for `dns` names and `ips`, valid for `days`.
pub fn generate(dns: &[String], ips: &[IpAddr], days: i64) -> anyhow::Result<DevCerts> {
    DevCa::new(days)?.issue(dns, ips, days)
}

/// A development CA that can issue several serving certificates (e.g. to rotate them).
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl DevCa {
    pub fn new(days: i64) -> anyhow::Result<Self> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "verdict development CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// A serving certificate for `dns` names and `ips` with a new key.
    pub fn issue(&self, dns: &[String], ips: &[IpAddr], days: i64) -> anyhow::Result<DevCerts> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(dns.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let common_name = dns
            .first()
            .map_or_else(|| "verdict".to_string(), Clone::clone);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DevCerts {
            ca_pem: self.issuer.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `out`.
pub fn write(out: &Path, certs: &DevCerts) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, pem) in [
        ("ca.crt", &certs.ca_pem),
        ("tls.crt", &certs.cert_pem),
        ("tls.key", &certs.key_pem),
    ] {
        let path = out.join(name);
        // Write then rename, so a server watching the files never reads half of one.
        let partial = out.join(format!(".{name}.partial"));
        std::fs::write(&partial, pem).with_context(|| format!("writing {}", partial.display()))?;
        if name.ends_with(".key") {
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
