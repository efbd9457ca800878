//! Pull secrets: the registry credentials an object may use, as the kubelet picks them, from
//! the object's own namespace only: the Secrets its pod spec names in `imagePullSecrets`,
//! then those its ServiceAccount (`serviceAccountName`, `default` when unset) names.
//! `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` Secrets are read; others
//! are not credentials. Read with `get` (never listed or watched) and kept for a while
//! (`--pull-secret-ttl`, 30 s), so a deleted or changed Secret stops working within it. No credential is ever logged: the
//! configs only say which hosts they hold.

use crate::registry::auth::{DockerConfig, Keyring};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failed read (the API server away, a timeout) is not retried by every review: for this
/// long the object counts as unreadable (no credentials from it).
const FAILED_TTL: Duration = Duration::from_secs(5);
/// One read waits at most this (and never past the review's deadline).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Secrets read for one object at most (named by it and by its ServiceAccount): the names
/// come from Pod authors, and each is a request to the API server.
const MAX_SECRETS: usize = 32;
/// Secrets and ServiceAccounts remembered at once.
const MAX_ENTRIES: usize = 10_000;

/// What one read found, and until when it is used.
#[derive(Clone)]
struct Read<T> {
    found: Option<T>,
    until: Instant,
}

/// Reads and keeps pull secrets.
pub struct PullSecrets {
    client: kube::Client,
    /// How long a read is used.
    ttl: Duration,
    secrets: moka::future::Cache<(String, String), Read<Arc<DockerConfig>>>,
    accounts: moka::future::Cache<(String, String), Read<Arc<Vec<String>>>>,
    /// The keyring of a (namespace, ServiceAccount, named Secrets) request, by a 128-bit
    /// keyed hash of it, and until when it is used: a review of a known object costs one
    /// read-locked lookup, no allocation and nothing async.
    keyrings: std::sync::RwLock<std::collections::HashMap<(u64, u64), (Keyring, Instant)>>,
    /// The hash keys, chosen at start.
    hashers: [std::collections::hash_map::RandomState; 2],
}

impl std::fmt::Debug for PullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSecrets").finish_non_exhaustive()
    }
}

impl PullSecrets {
    /// Reads are kept for half of `ttl` and the keyrings made from them for the other half,
    /// so nothing is used more than `ttl` after it was read.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        let ttl = (ttl / 2).max(Duration::from_millis(1));
        Self {
            client,
            ttl,
            secrets: cache(ttl),
            accounts: cache(ttl),
            keyrings: Default::default(),
            hashers: Default::default(),
        }
    }

    /// The credentials an object in `namespace` may pull with: the Secrets it names, then
    /// its ServiceAccount's, in that order (the first that has a host's credentials is used
    /// for that host). Secrets that are missing, unreadable or of another type are skipped,
    /// as the kubelet does: an image that needs them then fails with `REGISTRY_AUTH`.
    pub async fn keyring(
        &self,
        namespace: &str,
        named: &[String],
        service_account: Option<&str>,
        deadline: Instant,
    ) -> Keyring {
        let account = service_account.unwrap_or("default");
        // Names go into the API server's URL path unescaped: one that is not a Kubernetes
        // name (`../other/secrets/x`, `a?b`) could be read there as another object's.
        if !is_name(namespace, 63) || !is_name(account, 253) {
            return Keyring::default();
        }
        let named = &named[..named.len().min(MAX_SECRETS)];
        let request = (namespace, account, named);
        let key = (
            std::hash::BuildHasher::hash_one(&self.hashers[0], request),
            std::hash::BuildHasher::hash_one(&self.hashers[1], request),
        );
        let now = Instant::now();
        let known = self
            .keyrings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(_, until)| *until > now)
            .map(|(keyring, _)| keyring.clone());
        if let Some(keyring) = known {
            return keyring;
        }
        let keyring = self.read(namespace, account, named, deadline).await;
        let mut keyrings = self
            .keyrings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keyrings.len() >= MAX_ENTRIES {
            let now = Instant::now();
            keyrings.retain(|_, (_, until)| *until > now);
            if keyrings.len() >= MAX_ENTRIES {
                keyrings.clear();
            }
        }
        keyrings.insert(key, (keyring.clone(), Instant::now() + self.ttl));
        keyring
    }

    async fn read(
        &self,
        namespace: &str,
        account: &str,
        named: &[String],
        deadline: Instant,
    ) -> Keyring {
        let mut names: Vec<String> = named.to_vec();
        if let Some(listed) = self.account(namespace, account, deadline).await {
            names.extend(listed.iter().cloned());
        }
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| is_name(n, 253) && seen.insert(n.clone()));
        names.truncate(MAX_SECRETS);
        let reads = names
            .iter()
            .map(|name| self.secret(namespace, name, deadline));
        let configs = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        Keyring::new(configs)
    }

    async fn account(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Option<Arc<Vec<String>>> {
        let key = (namespace.to_string(), name.to_string());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let read = remembered(&self.accounts, key, self.ttl, deadline, || async move {
            let account = api.get_opt(name).await?;
            Ok(account.map(|a| {
                let names = a
                    .image_pull_secrets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                Arc::new(names)
            }))
        })
        .await;
        read.found
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Option<Arc<DockerConfig>> {
        let key = (namespace.to_string(), name.to_string());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let read = remembered(&self.secrets, key, self.ttl, deadline, || async move {
            let secret = api.get_opt(name).await?;
            Ok(secret.and_then(|s| credentials(&s, namespace, name).map(Arc::new)))
        })
        .await;
        read.found
    }
}

/// A Kubernetes object name: at most `max` lower-case letters, digits, `-` and `.`, starting
/// and ending with a letter or digit (a DNS subdomain; a namespace is a DNS label, `max`
/// 63, and has no dots either, which the API server checks when it is created).
fn is_name(name: &str, max: usize) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= max
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn cache<T: Clone + Send + Sync + 'static>(
    ttl: Duration,
) -> moka::future::Cache<(String, String), Read<T>> {
    moka::future::Cache::builder()
        .max_capacity(MAX_ENTRIES as u64)
        .time_to_live(ttl)
        .build()
}

/// The read kept under `key`, or a new one by `fetch` (once however many reviews ask at
/// the same time). A failed read is kept for `FAILED_TTL` as "nothing found".
async fn remembered<T, F, Fut>(
    cache: &moka::future::Cache<(String, String), Read<T>>,
    key: (String, String),
    ttl: Duration,
    deadline: Instant,
    fetch: F,
) -> Read<T>
where
    T: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, kube::Error>>,
{
    let now = Instant::now();
    if let Some(read) = cache.get(&key).await {
        if read.until > now {
            return read;
        }
        cache.invalidate(&key).await;
    }
    let what = format!("{}/{}", key.0, key.1);
    cache
        .get_with(key, async move {
            let limit = deadline.min(Instant::now() + READ_TIMEOUT);
            match tokio::time::timeout_at(limit.into(), fetch()).await {
                Ok(Ok(found)) => Read {
                    found,
                    until: Instant::now() + ttl,
                },
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(object = %what, error = %error, "reading a pull secret or ServiceAccount failed");
                    Read {
                        found: None,
                        until: Instant::now() + FAILED_TTL.min(ttl),
                    }
                }
            }
        })
        .await
}

/// The docker config a Secret holds, when it is a pull secret that parses.
fn credentials(secret: &Secret, namespace: &str, name: &str) -> Option<DockerConfig> {
    let data = secret.data.as_ref()?;
    let parsed = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => {
            DockerConfig::parse(&data.get(".dockerconfigjson")?.0)
        }
        Some("kubernetes.io/dockercfg") => DockerConfig::parse_legacy(&data.get(".dockercfg")?.0),
        _ => return None,
    };
    match parsed {
        Ok(config) => Some(config),
        Err(e) => {
            // The error names the registry host and what is wrong, never the secret's text.
            tracing::warn!(secret = %format!("{namespace}/{name}"), error = %e, "unusable pull secret");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_reach_the_api_server() {
        for good in ["regcred", "a", "my-secret.v2", "0abc"] {
            assert!(is_name(good, 253), "{good}");
        }
        for bad in [
            "",
            "../../ps-a/secrets/regcred",
            "a/b",
            "a?b",
            "a%2Fb",
            "REGCRED",
            "-a",
            "a-",
            ".a",
            "a b",
            "ré",
        ] {
            assert!(!is_name(bad, 253), "{bad}");
        }
        assert!(!is_name(&"a".repeat(64), 63));
    }
}
