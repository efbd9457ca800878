//! Building the judge from flags: trust root, registry client, verifier, policies.
//! Shared by `serve` and `check` so both judge through the same path.

use crate::cluster::InventorySync;
use crate::config::{ClusterConfig, PolicyConfig, RegistryConfig};
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::registry::auth::DockerConfig;
use crate::registry::{Registry, RegistrySettings};
use crate::review::{ReviewSettings, Reviewer};
use crate::verify::trust::TrustRoot;
use crate::verify::{CacheSettings, Verifier};
use anyhow::Context as _;
use std::sync::Arc;

/// The policy store and the judge built on it.
pub fn reviewer(
    policy: &PolicyConfig,
    registry: &RegistryConfig,
    metrics: Metrics,
) -> anyhow::Result<(Arc<PolicyStore>, Reviewer)> {
    let trust = match &registry.trust_root {
        Some(path) => TrustRoot::from_file(path)
            .with_context(|| format!("loading --trust-root {}", path.display()))?,
        None => TrustRoot::public_good(),
    };
    let policies = Arc::new(
        PolicyStore::load(&policy.policies, Arc::new(trust))
            .with_context(|| format!("loading policies from {}", policy.policies.display()))?,
    );
    let docker_config = match &registry.docker_config {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --docker-config {}", path.display()))?;
            DockerConfig::parse(&bytes)?
        }
        None => DockerConfig::default(),
    };
    let ca_bundle = match &registry.registry_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --registry-ca {}", path.display()))?,
        ),
        None => None,
    };
    let settings = RegistrySettings {
        insecure: registry.insecure_registries.clone(),
        ca_bundle,
        docker_config,
        mirrors: registry.mirrors.clone(),
        max_concurrent_per_registry: registry.registry_concurrency,
    };
    let client = Arc::new(Registry::new(settings, metrics.clone())?);
    let cache = CacheSettings {
        tag_ttl: registry.tag_cache_ttl,
        ..CacheSettings::default()
    };
    let verifier = Verifier::new(client, metrics.clone(), &cache, registry.platform.clone());
    let settings = ReviewSettings {
        policy_timeout: policy.policy_timeout,
        warn_only: policy.warn_only,
        no_match: policy.no_match_policy,
        ..ReviewSettings::default()
    };
    let reviewer = Reviewer::new(policies.clone(), verifier, metrics, settings);
    Ok((policies, reviewer))
}

/// Has `reviewer` judge with the cluster of `client`: each object's pull secrets (unless
/// `cluster.pull_secrets` is off), and the inventory synced into `policies`, reviews being
/// denied until its first copy is in. Shared by `serve` and `audit`.
pub fn attach_cluster(
    client: kube::Client,
    cluster: &ClusterConfig,
    policies: &Arc<PolicyStore>,
    reviewer: &Reviewer,
    metrics: Metrics,
) -> Arc<InventorySync> {
    if cluster.pull_secrets {
        let secrets = crate::cluster::PullSecrets::new(client.clone(), cluster.pull_secret_ttl);
        reviewer.attach_pull_secrets(Arc::new(secrets));
    }
    let store = policies.clone();
    let publish: crate::cluster::Publish =
        Arc::new(move |doc, listed| store.set_inventory(doc, listed).map_err(|e| e.to_string()));
    let sync = Arc::new(InventorySync::start(
        client,
        metrics,
        &policies.current().sync_kinds,
        publish,
    ));
    reviewer.attach_inventory(sync.clone());
    sync
}
