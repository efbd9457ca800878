//! Command-line flags and their environment twins. Tests build these structs directly.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `verdict serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the HTTPS admission endpoint.
    #[arg(long, env = "VERDICT_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain served on --listen; re-read when it changes.
    #[arg(long, env = "VERDICT_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "VERDICT_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    #[command(flatten)]
    pub policy: PolicyConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub cluster: ClusterConfig,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "VERDICT_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// A client must send its whole request body within this.
    #[arg(long, env = "VERDICT_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub read_timeout: Duration,
    /// Connections open at once on --listen; past it, new ones wait in the kernel's backlog
    /// until one closes. API servers keep a few long-lived HTTP/2 connections.
    #[arg(long, env = "VERDICT_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// TLS handshakes in progress at once on --listen; more wait their turn (within the 10 s
    /// a client has to complete one).
    #[arg(long, env = "VERDICT_MAX_HANDSHAKES", default_value_t = 64)]
    pub max_handshakes: usize,
    /// A connection on which nothing moves, or whose oldest answer the client does not take,
    /// for this long is closed. HTTP/2 keep-alive pings go out at half of it.
    #[arg(long, env = "VERDICT_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// How long in-flight reviews may take to finish after SIGTERM.
    #[arg(long, env = "VERDICT_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Audit what runs in the cluster this often (e.g. `1h`), writing PolicyReports; off
    /// when absent or 0. One replica audits at a time, chosen with the Lease `verdict-audit`
    /// in the namespace of the cluster configuration (the one verdict runs in).
    #[arg(long, env = "VERDICT_AUDIT_INTERVAL", value_parser = parse_duration)]
    pub audit_interval: Option<Duration>,
}

/// Which Kubernetes cluster `serve` reads its inventory from.
#[derive(Debug, Clone, Args)]
pub struct ClusterConfig {
    /// `auto`: the cluster of --kubeconfig, else of `KUBECONFIG`, else the one verdict runs
    /// in (in-cluster configuration), else none. `off`: never talk to a cluster.
    #[arg(long = "cluster", env = "VERDICT_CLUSTER", value_enum, default_value_t = ClusterMode::Auto)]
    pub mode: ClusterMode,
    /// A kubeconfig file naming the cluster and the credentials to use.
    #[arg(long, env = "VERDICT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With a cluster, read registries with each object's pull secrets (its pod spec's
    /// `imagePullSecrets`, then its ServiceAccount's; `get` on Secrets and ServiceAccounts),
    /// before --docker-config. `false`: --docker-config only.
    #[arg(long, env = "VERDICT_PULL_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pull_secrets: bool,
    /// How long a pull secret (or ServiceAccount) read is used: a deleted or changed Secret
    /// stops working within it.
    #[arg(long, env = "VERDICT_PULL_SECRET_TTL", default_value = "30s", value_parser = parse_duration)]
    pub pull_secret_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterMode {
    Auto,
    Off,
}

/// Flags shared by every command that evaluates policies.
#[derive(Debug, Clone, Args)]
pub struct PolicyConfig {
    /// Folder of .rego policies, data documents and image policies; re-read when it changes.
    #[arg(long, env = "VERDICT_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Upper bound for evaluating all policies for one review; past it the review is denied.
    #[arg(long, env = "VERDICT_POLICY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub policy_timeout: Duration,
    /// Admit everything and turn each denial into a warning (`[CODE] would deny: ...`), to
    /// roll verdict out and see what it would block.
    #[arg(long, env = "VERDICT_WARN_ONLY")]
    pub warn_only: bool,
    /// What happens to an image that no image policy matches: `allow` it, admit it with a
    /// `warn`ing, or `deny` it (NO_MATCHING_POLICY), the defence in depth against a glob
    /// that misses what it was meant to cover.
    #[arg(
        long,
        env = "VERDICT_NO_MATCH_POLICY",
        value_enum,
        default_value = "allow"
    )]
    pub no_match_policy: NoMatchPolicy,
}

/// What happens to an image that no image policy matches (policy-controller's
/// `no-match-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NoMatchPolicy {
    /// Admit it: only Rego policies judge it.
    #[default]
    Allow,
    /// Admit it with a warning.
    Warn,
    /// Deny it with `NO_MATCHING_POLICY`.
    Deny,
}

/// Registry and trust flags shared by `serve` and `check`.
#[derive(Debug, Clone, Args)]
pub struct RegistryConfig {
    /// Sigstore trusted_root.json for keyless authorities that name no trust root
    /// (default: the Sigstore public-good root built into verdict).
    #[arg(long, env = "VERDICT_TRUST_ROOT")]
    pub trust_root: Option<PathBuf>,
    /// Docker config.json with registry credentials (e.g. a mounted dockerconfigjson Secret).
    #[arg(long, env = "VERDICT_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// Extra PEM CA bundle for registries.
    #[arg(long, env = "VERDICT_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Registry reached over plain HTTP (host[:port]); repeatable.
    #[arg(
        long = "insecure-registry",
        env = "VERDICT_INSECURE_REGISTRY",
        value_delimiter = ',',
        value_parser = parse_registry
    )]
    pub insecure_registries: Vec<String>,
    /// Fetch a registry's images from a mirror: REGISTRY=MIRROR (e.g. docker.io=registry.local:5000); repeatable.
    #[arg(long = "registry-mirror", env = "VERDICT_REGISTRY_MIRROR", value_delimiter = ',', value_parser = parse_mirror)]
    pub mirrors: Vec<(String, String)>,
    /// Requests in flight to one registry at once.
    #[arg(long, env = "VERDICT_REGISTRY_CONCURRENCY", default_value_t = 16)]
    pub registry_concurrency: usize,
    /// How long a tag's resolved digest is reused.
    #[arg(long, env = "VERDICT_TAG_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub tag_cache_ttl: Duration,
    /// The platform of the cluster's nodes (`os/arch[/variant]`): which manifest of an image
    /// index `multiArch: platform|either` image policies verify.
    #[arg(long, env = "VERDICT_PLATFORM", default_value = "linux/amd64")]
    pub platform: crate::verify::Platform,
}

/// A registry host in its canonical form, so that it names the same registry as the
/// references that spell it otherwise.
fn parse_registry(text: &str) -> Result<String, String> {
    crate::images::canonical_host(text).map_err(|e| e.to_string())
}

fn parse_mirror(text: &str) -> Result<(String, String), String> {
    let (from, to) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not REGISTRY=MIRROR"))?;
    Ok((parse_registry(from)?, parse_registry(to)?))
}

/// `500ms`, `2s`, `1m`: a number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        _ => Err(format!(
            "{text:?} is not a duration such as 500ms, 2s, 5m or 1h"
        )),
    }
}
