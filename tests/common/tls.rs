//! A TLS client for the test certificates, below HTTP: for the load generator's own HTTP
//! client and for tests that speak raw bytes over TLS.
#![allow(dead_code, clippy::unwrap_used)]

use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::sync::Arc;

/// A connector that trusts only the CAs in `ca_pem` and offers `alpn` (nothing if empty).
pub fn connector(ca_pem: &str, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
