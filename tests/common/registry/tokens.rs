//! A token issuer for docker-registry's `auth: token` mode.

use super::keys::B64;
use base64::Engine as _;
use rcgen::{CertificateParams, DnType, KeyPair, SigningKey as _};
use serde_json::{json, Value};

/// A token issuer for docker-registry's `auth: token` mode: it mints ES256 JWTs whose `x5c`
/// is a self-signed certificate listed in the registry's `rootcertbundle`, and serves the
/// distribution token endpoint for clients with the right basic credentials.
pub struct TokenIssuer {
    key: std::sync::Arc<KeyPair>,
    cert_der: Vec<u8>,
    pub cert_pem: String,
    pub realm: String,
    pub service: String,
    task: tokio::task::JoinHandle<()>,
}

impl TokenIssuer {
    pub async fn start(user: &str, password: &str) -> Self {
        let key = std::sync::Arc::new(KeyPair::generate().unwrap());
        let mut params = CertificateParams::new(vec!["token-issuer".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "token-issuer");
        let cert = params.self_signed(key.as_ref()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let expected = format!("Basic {}", B64.encode(format!("{user}:{password}")));
        let (signing_key, cert_der) = (key.clone(), cert.der().to_vec());
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (signing_key, cert_der, expected) =
                    (signing_key.clone(), cert_der.clone(), expected.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let authorized = request.lines().any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:")
                            && l.ends_with(&expected)
                    });
                    let path = request
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let url = reqwest::Url::parse(&format!("http://x{path}")).unwrap();
                    let scope = url
                        .query_pairs()
                        .find(|(k, _)| k == "scope")
                        .map(|(_, v)| v.to_string());
                    let answer = if authorized {
                        let repo = scope
                            .as_deref()
                            .and_then(|s| s.split(':').nth(1))
                            .unwrap_or_default();
                        let body = json!({"token": mint(&signing_key, &cert_der, repo, &["pull"]), "expires_in": 300}).to_string();
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            realm,
            service: "test-registry".into(),
            task,
        }
    }

    /// A token for the test itself (pushing).
    pub fn token(&self, repos: &[&str], actions: &[&str]) -> String {
        let mut tokens = Vec::new();
        for repo in repos {
            tokens.push(mint(&self.key, &self.cert_der, repo, actions));
        }
        tokens
            .into_iter()
            .next()
            .unwrap_or_else(|| mint(&self.key, &self.cert_der, "", actions))
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mint(key: &KeyPair, cert_der: &[u8], repo: &str, actions: &[&str]) -> String {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [B64.encode(cert_der)]});
    let access: Vec<Value> = if repo.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "repository", "name": repo, "actions": actions})]
    };
    let claims = json!({
        "iss": "test-issuer", "sub": "puller", "aud": "test-registry", "exp": now + 300, "nbf": now - 60,
        "iat": now, "jti": format!("{now}-{repo}"), "access": access
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let der = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", url.encode(der_to_raw_p256(&der)))
}

/// ECDSA signatures in JWTs are r || s, 32 bytes each, not ASN.1.
fn der_to_raw_p256(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2; // SEQUENCE tag and length (short form for P-256)
    for _ in 0..2 {
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = if int.len() > 32 {
            &int[int.len() - 32..]
        } else {
            int
        };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}
