//! Talking to OCI registries (distribution v2): resolving tags to digests and reading
//! cosign signature manifests and blobs. Owns auth, plain-HTTP and CA settings, mirrors,
//! size limits, per-registry concurrency, `Retry-After` and deadlines; not what the bytes mean.

pub mod auth;

use crate::decision::ReasonCode;
use crate::images::{Digest, ImageRef};
use crate::metrics::Metrics;
use auth::{Challenge, DockerConfig, Keyring, TokenResponse};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Manifests larger than this are refused (registries cap theirs at 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Signature payloads are a few hundred bytes, attestations (SBOMs, scans) can be a few
/// MiB; anything over this is refused.
pub const MAX_SIGNATURE_BLOB_BYTES: usize = 4 * 1024 * 1024;
const MAX_TOKEN_BYTES: usize = 64 * 1024;
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How one registry request failed. `code()` is the reason code denials carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("registry {host} answered HTTP {status} for {what}")]
    Status {
        host: String,
        status: u16,
        what: String,
    },
    #[error("registry {host} is rate limiting (HTTP 429) and asked to wait past the deadline")]
    RateLimited { host: String },
    #[error("registry {host} refused access (HTTP {status}) to {what}; check the pull secrets the Pod (or its ServiceAccount) names in its namespace, or --docker-config")]
    Auth {
        host: String,
        status: u16,
        what: String,
    },
    #[error("{what} was not found in registry {host}")]
    NotFound { host: String, what: String },
    #[error("registry {host} sent an unusable {what}: {detail}")]
    Invalid {
        host: String,
        what: String,
        detail: String,
    },
    #[error("registry {host} did not answer before the review's deadline")]
    Timeout { host: String },
}

impl RegistryError {
    pub fn code(&self) -> ReasonCode {
        match self {
            Self::Unreachable { .. } => ReasonCode::RegistryUnreachable,
            Self::Status { .. } | Self::RateLimited { .. } | Self::Invalid { .. } => {
                ReasonCode::RegistryError
            }
            Self::Auth { .. } => ReasonCode::RegistryAuth,
            Self::NotFound { .. } => ReasonCode::ImageNotFound,
            Self::Timeout { .. } => ReasonCode::Timeout,
        }
    }

    /// Worth trying again later (never cached as a verdict).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::NotFound { .. } | Self::Auth { .. })
    }
}

/// Registry settings shared by `serve` and `check`.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// `host[:port]` reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra PEM CA certificates to trust.
    pub ca_bundle: Option<Vec<u8>>,
    pub docker_config: DockerConfig,
    /// `(registry, mirror)`: fetch images of `registry` from `mirror` instead.
    pub mirrors: Vec<(String, String)>,
    /// Requests in flight to one registry at once.
    pub max_concurrent_per_registry: usize,
}

/// The most registry hosts (semaphores) and `(host, repository)` tokens remembered at once.
const MAX_REMEMBERED: usize = 4096;

/// `(host, scope, credential id)`: a repository's pull scope (empty for Basic auth), and
/// the id of the pull secret credentials it was answered with (0 for --docker-config's).
type TokenKey = (String, String, u64);

/// The registry client shared by all reviews.
pub struct Registry {
    http: reqwest::Client,
    settings: RegistrySettings,
    metrics: Metrics,
    /// `(host, scope, credential id)` → authorization: a token fetched with one pull
    /// secret is never sent for a review that does not hold it.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    host_labels: crate::metrics::HostLabels,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where requests for an image go, and with which credentials.
struct Endpoint {
    /// The host as configured (metrics, credentials, messages).
    host: String,
    base: String,
    repository: String,
    /// From the review's pull secrets, else from --docker-config.
    credentials: Option<(String, String)>,
    /// The pull secret credentials' id; 0 for --docker-config's or none.
    key: u64,
}

/// Why the registry client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid --registry-ca: {0}")]
    Ca(reqwest::Error),
    #[error("cannot build the registry client: {0}")]
    Build(reqwest::Error),
}

impl Registry {
    pub fn new(settings: RegistrySettings, metrics: Metrics) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(5))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = &settings.ca_bundle {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(ClientError::Ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(Self {
            http,
            settings,
            metrics,
            tokens: Mutex::default(),
            limits: Mutex::default(),
            host_labels: crate::metrics::HostLabels::default(),
        })
    }

    fn endpoint(&self, image: &ImageRef, keys: &Keyring) -> Endpoint {
        let mirror = self
            .settings
            .mirrors
            .iter()
            .find(|(from, _)| *from == image.registry)
            .map(|(_, to)| to.clone());
        let host = mirror.unwrap_or_else(|| image.registry.clone());
        let api_host = if host == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            host.clone()
        };
        let scheme = if self.settings.insecure.contains(&host) {
            "http"
        } else {
            "https"
        };
        let (credentials, key) = match keys.credentials(&host) {
            Some((pair, key)) => (Some(pair.clone()), key),
            None => (self.settings.docker_config.credentials(&host).cloned(), 0),
        };
        Endpoint {
            base: format!("{scheme}://{api_host}/v2/{}", image.repository),
            host,
            repository: image.repository.clone(),
            credentials,
            key,
        }
    }

    /// The digest a tag points to now: the SHA-256 of the manifest read (one GET). The
    /// digest is the hash of the bytes, never a header's word: a `Docker-Content-Digest`
    /// that disagrees with the body means the registry (or something on the way) serves
    /// two readings of the tag, and a runtime may run the one verdict did not judge.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Digest, RegistryError> {
        let endpoint = self.endpoint(image, keys);
        let tag = image.tag.as_deref().unwrap_or("latest");
        let what = format!("{}:{tag}", image.name());
        let url = format!("{}/manifests/{tag}", endpoint.base);
        let manifest = self.manifest(&endpoint, &url, &what, deadline).await?;
        let digest = Digest::sha256_of(&manifest.bytes);
        let told = |claimed: &str| {
            Digest::parse(claimed).is_ok_and(|claimed| claimed.is_digest_of(&manifest.bytes))
        };
        match manifest.digest_header {
            None => Ok(digest),
            Some(claimed) if told(&claimed) => Ok(digest),
            Some(claimed) => Err(RegistryError::Invalid {
                host: endpoint.host,
                what,
                detail: format!(
                    "its Docker-Content-Digest header says {claimed:?} but the manifest sent \
                     hashes to {digest}; verdict refuses a registry whose headers disagree with \
                     its bodies (check the registry and any proxy in front of it)"
                ),
            }),
        }
    }

    /// GETs a manifest within the size limit.
    async fn manifest(
        &self,
        endpoint: &Endpoint,
        url: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<Manifest, RegistryError> {
        let response = self
            .send(endpoint, Method::GET, url, MANIFEST_TYPES, what, deadline)
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = header("content-type");
        let digest_header = header("docker-content-digest");
        let bytes = read_limited(
            response,
            MAX_MANIFEST_BYTES,
            &endpoint.host,
            "manifest",
            deadline,
        )
        .await?;
        Ok(Manifest {
            bytes,
            content_type,
            digest_header,
        })
    }

    /// The manifest cosign stores next to `digest` under the tag `sha256-<hex><suffix>`
    /// (`.sig`, `.att`, or no suffix for the OCI referrers tag schema); `None` when absent.
    pub async fn companion_manifest(
        &self,
        image: &ImageRef,
        digest: &Digest,
        suffix: &str,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let endpoint = self.endpoint(image, keys);
        let tag = format!("{}-{}{suffix}", digest.algorithm(), digest.hex());
        let what = format!("{}:{tag}", image.name());
        let url = format!("{}/manifests/{tag}", endpoint.base);
        found(self.manifest(&endpoint, &url, &what, deadline).await).map(|m| m.map(|m| m.bytes))
    }

    /// The manifest (or index) with this digest, checked against it.
    pub async fn manifest_by_digest(
        &self,
        image: &ImageRef,
        digest: &Digest,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Manifest, RegistryError> {
        let endpoint = self.endpoint(image, keys);
        let what = format!("{}@{digest}", image.name());
        let url = format!("{}/manifests/{digest}", endpoint.base);
        let body = self.manifest(&endpoint, &url, &what, deadline).await?;
        if Digest::sha256_of(&body.bytes) != *digest {
            return Err(RegistryError::Invalid {
                host: endpoint.host,
                what,
                detail: "its content does not match its digest".to_string(),
            });
        }
        Ok(body)
    }

    /// The OCI 1.1 referrers index of `digest`: from the referrers API, or, when the registry
    /// lacks it (404), from the referrers tag schema (`sha256-<hex>`). `None` when neither has one.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let endpoint = self.endpoint(image, keys);
        let what = format!("referrers of {}@{digest}", image.name());
        let url = format!("{}/referrers/{digest}", endpoint.base);
        match found(self.manifest(&endpoint, &url, &what, deadline).await)? {
            Some(index) => Ok(Some(index.bytes)),
            None => {
                self.companion_manifest(image, digest, "", keys, deadline)
                    .await
            }
        }
    }

    /// A blob, checked against its digest.
    pub async fn blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
        keys: &Keyring,
        deadline: Instant,
    ) -> Result<Vec<u8>, RegistryError> {
        let endpoint = self.endpoint(image, keys);
        let url = format!("{}/blobs/{digest}", endpoint.base);
        let what = format!("blob {digest}");
        let response = self
            .send(&endpoint, Method::GET, &url, "*/*", &what, deadline)
            .await?;
        let body = read_limited(
            response,
            MAX_SIGNATURE_BLOB_BYTES,
            &endpoint.host,
            "signature blob",
            deadline,
        )
        .await?;
        if Digest::sha256_of(&body) != *digest {
            return Err(RegistryError::Invalid {
                host: endpoint.host,
                what: what.clone(),
                detail: "its content does not match its digest".to_string(),
            });
        }
        Ok(body)
    }

    /// The semaphore that bounds requests in flight to `host`. Hosts come from Pod specs:
    /// past `MAX_REMEMBERED` hosts, those with no request in flight are forgotten (the
    /// bound of the others holds), so the map never grows with what Pod authors name.
    fn limit(&self, host: &str) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if limits.len() >= MAX_REMEMBERED && !limits.contains_key(host) {
            limits.retain(|_, limit| Arc::strong_count(limit) > 1);
        }
        limits
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.settings.max_concurrent_per_registry.max(1),
                ))
            })
            .clone()
    }

    /// One request with auth challenges answered and 429 `Retry-After` honoured within the deadline.
    async fn send(
        &self,
        endpoint: &Endpoint,
        method: Method,
        url: &str,
        accept: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<reqwest::Response, RegistryError> {
        let scope = format!("repository:{}:pull", endpoint.repository);
        let mut authorization = self.cached_authorization(endpoint, &scope);
        let mut answered_challenge = false;
        let mut rate_limited = 0;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).unwrap_or(HeaderValue::from_static("*/*")),
            );
            if let Some(value) = &authorization {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(AUTHORIZATION, value);
                }
            }
            let response = self
                .request(endpoint, method.clone(), url, headers, deadline)
                .await?;
            match response.status() {
                s if s.is_success() => return Ok(response),
                StatusCode::UNAUTHORIZED if !answered_challenge => {
                    answered_challenge = true;
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(auth::parse_challenge);
                    authorization = Some(self.answer(endpoint, challenge, &scope, deadline).await?);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(RegistryError::Auth {
                        host: endpoint.host.clone(),
                        status: response.status().as_u16(),
                        what: what.to_string(),
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound {
                        host: endpoint.host.clone(),
                        what: what.to_string(),
                    })
                }
                StatusCode::TOO_MANY_REQUESTS if rate_limited < 3 => {
                    rate_limited += 1;
                    let wait = retry_after(response.headers())
                        .unwrap_or(Duration::from_millis(200 * rate_limited));
                    if Instant::now() + wait >= deadline {
                        return Err(RegistryError::RateLimited {
                            host: endpoint.host.clone(),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    return Err(RegistryError::RateLimited {
                        host: endpoint.host.clone(),
                    })
                }
                status => {
                    return Err(RegistryError::Status {
                        host: endpoint.host.clone(),
                        status: status.as_u16(),
                        what: what.to_string(),
                    })
                }
            }
        }
    }

    /// Sends one HTTP request under the registry's concurrency bound and the deadline.
    async fn request(
        &self,
        endpoint: &Endpoint,
        method: Method,
        url: &str,
        headers: HeaderMap,
        deadline: Instant,
    ) -> Result<reqwest::Response, RegistryError> {
        let timeout = || RegistryError::Timeout {
            host: endpoint.host.clone(),
        };
        let limit = self.limit(&endpoint.host);
        let _permit = tokio::time::timeout_at(deadline.into(), limit.acquire_owned())
            .await
            .map_err(|_| timeout())?;
        let sent = tokio::time::timeout_at(
            deadline.into(),
            self.http.request(method, url).headers(headers).send(),
        )
        .await;
        let status = match &sent {
            Ok(Ok(response)) => response.status().as_u16().to_string(),
            Ok(Err(_)) => "error".to_string(),
            Err(_) => "timeout".to_string(),
        };
        self.metrics
            .registry_requests
            .with_label_values(&[&self.host_labels.label(&endpoint.host), &status])
            .inc();
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(RegistryError::Unreachable {
                host: endpoint.host.clone(),
                detail: error_chain(&e),
            }),
            Err(_) => Err(timeout()),
        }
    }

    fn cached_authorization(&self, endpoint: &Endpoint, scope: &str) -> Option<String> {
        let host = &endpoint.host;
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires)) =
            tokens.get(&(host.to_string(), scope.to_string(), endpoint.key))
        {
            if *expires > Instant::now() {
                return Some(token.clone());
            }
        }
        drop(tokens);
        // Registries that use Basic auth accept it up front: one round trip fewer.
        let basic = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(host.to_string(), String::new(), endpoint.key))
            .map(|(t, _)| t.clone());
        basic
    }

    async fn answer(
        &self,
        endpoint: &Endpoint,
        challenge: Option<Challenge>,
        scope: &str,
        deadline: Instant,
    ) -> Result<String, RegistryError> {
        let credentials = endpoint.credentials.clone();
        let denied = || RegistryError::Auth {
            host: endpoint.host.clone(),
            status: 401,
            what: "the image".to_string(),
        };
        match challenge {
            Some(Challenge::Basic) => {
                let (user, password) = credentials.ok_or_else(denied)?;
                let value = basic(&user, &password);
                self.remember(endpoint, "", &value, Duration::from_secs(365 * 24 * 3600));
                Ok(value)
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: challenged_scope,
            }) => {
                let scope = challenged_scope.unwrap_or_else(|| scope.to_string());
                let mut url = reqwest::Url::parse(&realm).map_err(|_| RegistryError::Invalid {
                    host: endpoint.host.clone(),
                    what: "auth challenge".to_string(),
                    detail: format!("bad realm {realm:?}"),
                })?;
                if let Some(service) = &service {
                    url.query_pairs_mut().append_pair("service", service);
                }
                url.query_pairs_mut().append_pair("scope", &scope);
                let mut headers = HeaderMap::new();
                if let Some((user, password)) = &credentials {
                    if let Ok(value) = HeaderValue::from_str(&basic(user, password)) {
                        headers.insert(AUTHORIZATION, value);
                    }
                }
                let response = self
                    .request(endpoint, Method::GET, url.as_str(), headers, deadline)
                    .await?;
                if !response.status().is_success() {
                    return Err(RegistryError::Auth {
                        host: endpoint.host.clone(),
                        status: response.status().as_u16(),
                        what: "a pull token".to_string(),
                    });
                }
                let body =
                    read_limited(response, MAX_TOKEN_BYTES, &endpoint.host, "token", deadline)
                        .await?;
                let token: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                        host: endpoint.host.clone(),
                        what: "token".to_string(),
                        detail: e.to_string(),
                    })?;
                let token = token
                    .token
                    .or(token.access_token)
                    .map(|t| (t, token.expires_in))
                    .ok_or_else(denied)?;
                let value = format!("Bearer {}", token.0);
                // Keep a margin so a token never expires in flight.
                let lifetime =
                    Duration::from_secs(token.1.unwrap_or(60).saturating_sub(10).max(10));
                self.remember(endpoint, &scope, &value, lifetime);
                Ok(value)
            }
            None => Err(denied()),
        }
    }

    /// Keeps an authorization for `host` and `scope` (a repository; empty for Basic). Scopes
    /// come from Pod specs: past `MAX_REMEMBERED` entries the expired ones are dropped, and
    /// if that is not enough every bearer token (they are fetched again when needed).
    fn remember(&self, endpoint: &Endpoint, scope: &str, value: &str, lifetime: Duration) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            tokens.retain(|_, (_, expires)| *expires > now);
        }
        if tokens.len() >= MAX_REMEMBERED {
            tokens.retain(|(_, scope, _), _| scope.is_empty());
        }
        tokens.insert(
            (endpoint.host.clone(), scope.to_string(), endpoint.key),
            (value.to_string(), Instant::now() + lifetime),
        );
    }
}

/// A manifest as the registry sent it, with the headers that claim what it is.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    /// The `Content-Type` header: the media type the registry says the bytes have.
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header.
    digest_header: Option<String>,
}

/// A 404 as `None`: for things that may rightly be absent.
fn found<T>(response: Result<T, RegistryError>) -> Result<Option<T>, RegistryError> {
    match response {
        Ok(body) => Ok(Some(body)),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a body up to `max` bytes, within the deadline.
async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
    host: &str,
    what: &str,
    deadline: Instant,
) -> Result<Vec<u8>, RegistryError> {
    let invalid = |detail: String| RegistryError::Invalid {
        host: host.to_string(),
        what: what.to_string(),
        detail,
    };
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(invalid(format!("larger than {max} bytes")));
    }
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .map_err(|_| RegistryError::Timeout {
                host: host.to_string(),
            })?
            .map_err(|e| invalid(format!("the body was cut off ({})", error_chain(&e))))?;
        let Some(chunk) = chunk else { return Ok(body) };
        if body.len() + chunk.len() > max {
            return Err(invalid(format!("larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let settings = RegistrySettings {
            insecure: Vec::new(),
            ca_bundle: None,
            docker_config: DockerConfig::default(),
            mirrors: Vec::new(),
            max_concurrent_per_registry: 4,
        };
        Registry::new(settings, Metrics::unregistered()).expect("a client")
    }

    #[test]
    fn hosts_and_tokens_named_by_pods_stay_bounded() {
        let registry = registry();
        let busy = registry.limit("busy.example");
        let held = busy.clone().try_acquire_owned().expect("a permit");
        let at = |host: &str| {
            let image = ImageRef::parse(&format!("{host}/acme/app")).expect("a reference");
            registry.endpoint(&image, &Keyring::default())
        };
        registry.remember(
            &at("basic.example"),
            "",
            "Basic x",
            Duration::from_secs(3600),
        );
        let ghcr = at("ghcr.io");
        for i in 0..10_000 {
            registry.limit(&format!("r{i}.example"));
            let scope = format!("repository:acme/app{i}:pull");
            registry.remember(&ghcr, &scope, "Bearer t", Duration::from_secs(60));
        }
        let limits = registry.limits.lock().expect("not poisoned");
        assert!(limits.len() <= MAX_REMEMBERED, "{}", limits.len());
        // The host with a request in flight keeps its semaphore, and so its bound.
        assert!(Arc::ptr_eq(&limits["busy.example"], &busy));
        drop((limits, held));
        let tokens = registry.tokens.lock().expect("not poisoned");
        assert!(tokens.len() <= MAX_REMEMBERED, "{}", tokens.len());
        assert!(tokens.contains_key(&("basic.example".to_string(), String::new(), 0)));
    }
}
