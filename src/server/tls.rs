//! Serving TLS: rustls with TLS 1.2/1.3 and ALPN h2 + http/1.1, and a certificate that
//! can be replaced while running. New handshakes get the new pair; open connections keep
//! theirs. A broken new pair is refused and the old one stays.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no usable PEM private key: {message}")]
    BadKey { path: String, message: String },
    #[error("the certificate and key do not form a pair: {0}")]
    Mismatch(String),
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate files and the pair currently served.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Bytes of the last pair tried, so a broken pair is reported once, not every poll.
    last_seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl CertStore {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, &cert_pem, key_path, &key_pem)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(key),
            last_seen: Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Re-reads the files; `None` when unchanged, otherwise whether the new pair was taken.
    pub fn reload(&self) -> Option<Result<(), TlsError>> {
        let read = read_pair(&self.cert_path, &self.key_path);
        // An unreadable pair is remembered by its error, so it too is reported once.
        let fingerprint = match &read {
            Ok(pair) => pair.clone(),
            Err(e) => (Vec::new(), e.to_string().into_bytes()),
        };
        let mut last_seen = match self.last_seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *last_seen == fingerprint {
            return None;
        }
        *last_seen = fingerprint;
        let result = read
            .and_then(|(cert, key)| certified_key(&self.cert_path, &cert, &self.key_path, &key))
            .map(|key| self.current.store(Arc::new(key)));
        Some(result)
    }
}

impl CertStore {
    /// When the served certificate expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        let key = self.current.load();
        crate::certs::not_after(key.cert.first()?)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch(e.to_string()))
}
