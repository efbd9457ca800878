//! Registry credentials: a docker `config.json` (as mounted from a
//! `kubernetes.io/dockerconfigjson` Secret) and the token dance of the distribution spec.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `user:password` per registry host, from `auths` of a docker config. Its `Debug` names
/// the hosts only: a credential never reaches a log line or a message.
#[derive(Clone, Default)]
pub struct DockerConfig {
    credentials: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("hosts", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The credentials one object may pull with (its pull secrets, see `cluster::secrets`), in
/// order: for each host the first config that has credentials for it is used. `id`
/// identifies the credentials held (0 for none), so that nothing read with one keyring is
/// answered to a review that holds another (caches and registry tokens are keyed by it).
#[derive(Clone, Default)]
pub struct Keyring {
    configs: Vec<std::sync::Arc<DockerConfig>>,
    id: u64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("configs", &self.configs)
            .finish()
    }
}

/// Hashes credentials with keys chosen at start: an id says nothing about a password
/// outside this process.
fn secret_hash(value: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(value).max(1)
}

impl Keyring {
    pub fn new(configs: Vec<std::sync::Arc<DockerConfig>>) -> Self {
        let held: Vec<_> = configs.iter().map(|c| &c.credentials).collect();
        let id = if held.iter().all(|c| c.is_empty()) {
            0
        } else {
            secret_hash(&held)
        };
        Self { configs, id }
    }

    /// The credentials for `host`, and their id (never 0); none when no config has them.
    pub fn credentials(&self, host: &str) -> Option<(&(String, String), u64)> {
        let host = normalize_host(host);
        self.configs
            .iter()
            .find_map(|c| c.credentials.get(&host))
            .map(|pair| (pair, secret_hash(pair)))
    }

    /// Identifies the credentials held; 0 when there are none.
    pub fn id(&self) -> u64 {
        self.id
    }
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthJson>,
}

#[derive(Deserialize)]
struct AuthJson {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Why a docker config file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// serde's message is left out: it can quote the text, and the text holds passwords.
    #[error("invalid docker config: not the shape of a docker config.json ({category} error at line {line}, column {column})")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("invalid docker config: auth for {0} is not base64")]
    NotBase64(String),
    #[error("invalid docker config: auth for {0} is not text")]
    NotText(String),
    #[error("invalid docker config: auth for {0} is not user:password")]
    NotUserPassword(String),
}

impl From<serde_json::Error> for DockerConfigError {
    fn from(e: serde_json::Error) -> Self {
        let category = match e.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "type",
            serde_json::error::Category::Eof => "truncated",
        };
        Self::Json {
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

impl DockerConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, DockerConfigError> {
        let json: ConfigJson = serde_json::from_slice(bytes)?;
        Self::from_auths(json.auths)
    }

    /// The legacy `.dockercfg` form (a `kubernetes.io/dockercfg` Secret): the `auths` map
    /// itself, without the wrapper.
    pub fn parse_legacy(bytes: &[u8]) -> Result<Self, DockerConfigError> {
        Self::from_auths(serde_json::from_slice(bytes)?)
    }

    fn from_auths(auths: BTreeMap<String, AuthJson>) -> Result<Self, DockerConfigError> {
        let mut credentials = BTreeMap::new();
        for (key, entry) in auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| DockerConfigError::NotBase64(key.clone()))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| DockerConfigError::NotText(key.clone()))?;
                    let (user, password) = text
                        .split_once(':')
                        .ok_or_else(|| DockerConfigError::NotUserPassword(key.clone()))?;
                    (user.to_string(), password.to_string())
                }
                (None, Some(user), Some(password)) => (user, password),
                _ => continue,
            };
            credentials.insert(normalize_host(&key), pair);
        }
        Ok(Self { credentials })
    }

    pub fn credentials(&self, host: &str) -> Option<&(String, String)> {
        self.credentials.get(&normalize_host(host))
    }
}

/// The canonical registry host of a config key: `https://index.docker.io/v1/` is Docker
/// Hub, `docker.io`, and `GHCR.IO:443` is `ghcr.io`, as in image references. A key that
/// is no host stays as written (it matches no reference).
fn normalize_host(key: &str) -> String {
    let without_scheme = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = without_scheme.split('/').next().unwrap_or_default();
    crate::images::canonical_host(host).unwrap_or_else(|_| host.to_string())
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields = BTreeMap::new();
    // key="value" pairs; values may contain commas (scopes do), so split on `",`.
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = remaining.trim_start_matches(',').trim();
    }
    Some(Challenge::Bearer {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

#[derive(Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_credentials_in_both_forms_and_normalizes_docker_hub() {
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "registry.local:5000": {"username": "u", "password": "p:w"},
            "GHCR.IO:443": {"username": "g", "password": "h"}
        }}"#;
        let config = DockerConfig::parse(config).expect("parses");
        assert_eq!(
            config.credentials("docker.io"),
            Some(&("user".to_string(), "pass".to_string()))
        );
        assert_eq!(
            config.credentials("registry.local:5000"),
            Some(&("u".to_string(), "p:w".to_string()))
        );
        assert_eq!(
            config.credentials("ghcr.io"),
            Some(&("g".to_string(), "h".to_string()))
        );
        assert_eq!(config.credentials("quay.io"), None);
        assert!(DockerConfig::parse(br#"{"auths": {"x": {"auth": "%%%"}}}"#).is_err());
    }

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }
}
