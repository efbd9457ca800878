//! The `verdict` command line: `serve`, `check`, `test`, `certs`.

use crate::config::{ClusterConfig, PolicyConfig, RegistryConfig, ServeConfig};
use crate::metrics::Metrics;
use crate::policy::testing;
use crate::report;
use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "verdict",
    version,
    about = "Kubernetes admission webhook: image provenance and Rego policies"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the admission webhook (HTTPS) and the metrics endpoint.
    Serve(ServeConfig),
    /// Judge manifests or AdmissionReviews from files or stdin; exit 1 if any is denied.
    Check(CheckArgs),
    /// Run the Rego unit tests (`test_*` rules) of a policies folder, like `opa test`, and
    /// its gator suites, like `gator verify`.
    Test(TestArgs),
    /// Judge what already runs in the cluster (Pods, workloads, and the kinds constraints
    /// name) with the same engine and policies; exit 1 if anything is denied.
    Audit(AuditArgs),
    /// Verify a Sigstore bundle over a file or a `sha256:` digest, as the Sigstore
    /// conformance suite drives it: exit 0 when verified, 1 with the reason when rejected.
    VerifyBundle(VerifyBundleArgs),
    /// Write a development CA and a serving certificate (ca.crt, tls.crt, tls.key).
    Certs(CertsArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// File with manifests or AdmissionReviews (JSON or YAML, several documents); `-` for stdin.
    #[arg(short = 'f', long = "file", required = true)]
    files: Vec<String>,
    #[command(flatten)]
    policy: PolicyConfig,
    #[command(flatten)]
    registry: RegistryConfig,
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Only this namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Only objects with these labels (a label selector, as `kubectl get -l` takes it).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Only this kind (repeatable), e.g. `Deployment`.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    #[command(flatten)]
    cluster: ClusterConfig,
    #[command(flatten)]
    policy: PolicyConfig,
    #[command(flatten)]
    registry: RegistryConfig,
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// The policies folder.
    #[arg(default_value = "policies")]
    dir: PathBuf,
    /// Also list passing tests.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["certificate_identity", "key"])))]
struct VerifyBundleArgs {
    /// The Sigstore bundle (`*.sigstore.json`, v0.1 to v0.3).
    #[arg(long)]
    bundle: PathBuf,
    /// The certificate's SAN identity (email or URI), matched exactly.
    #[arg(long, requires = "certificate_oidc_issuer")]
    certificate_identity: Option<String>,
    /// The OIDC issuer recorded in the certificate, matched exactly.
    #[arg(long, requires = "certificate_identity")]
    certificate_oidc_issuer: Option<String>,
    /// A PEM public key, for bundles signed with a managed key.
    #[arg(long, conflicts_with = "certificate_identity")]
    key: Option<PathBuf>,
    /// A Sigstore `trusted_root.json` (default: the built-in public-good root).
    #[arg(long, conflicts_with = "staging")]
    trusted_root: Option<PathBuf>,
    /// Use Sigstore's staging instance as the trusted root.
    #[arg(long)]
    staging: bool,
    /// The signed file, or its digest as `sha256:<hex>`.
    artifact: String,
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// DNS names for the serving certificate (e.g. verdict.verdict-system.svc).
    #[arg(long, num_args = 1.., default_values = ["localhost"])]
    dns: Vec<String>,
    /// IP addresses for the serving certificate.
    #[arg(long, num_args = 1.., default_values = ["127.0.0.1"])]
    ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: i64,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both of rustls' providers are in the tree (sigstore's reqwest brings aws-lc-rs), so
    // clients that take the process default (kube's) need it named: ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve(config) => serve(config),
        Command::Check(args) => check(args),
        Command::Test(args) => test(&args),
        Command::Audit(args) => audit(args),
        Command::Certs(args) => certs(&args),
        Command::VerifyBundle(args) => verify_bundle(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("verdict: {e:#}");
        ExitCode::from(2)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(config: ServeConfig) -> anyhow::Result<ExitCode> {
    let log = crate::logging::DecisionLog::start();
    crate::logging::init(Some(&log));
    let runtime = runtime()?;
    let served = runtime.block_on(crate::server::serve(
        config,
        log.clone(),
        crate::server::shutdown_signal(),
    ));
    drop(runtime);
    log.finish();
    served?;
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(None);
    let mut body = Vec::new();
    for file in &args.files {
        let text = if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            text
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
        };
        // Documents of several files are judged as one multi-document stream.
        body.extend_from_slice(b"\n---\n");
        body.extend_from_slice(text.trim_start_matches("---").as_bytes());
    }
    let (_, reviewer) =
        crate::setup::reviewer(&args.policy, &args.registry, Metrics::unregistered())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = runtime()?.block_on(report::check(&reviewer, &body, deadline))?;
    print_report(&report, args.output)
}

/// Prints `report` as `output` asks; exit 0 when everything is allowed, else 1.
fn print_report(report: &report::Report, output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Text => print!("{}", report::render_text(report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(if report.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How long `verdict audit` waits for its first copy of the cluster.
const AUDIT_SYNC_WAIT: Duration = Duration::from_secs(60);

fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(None);
    let metrics = Metrics::unregistered();
    let (policies, reviewer) =
        crate::setup::reviewer(&args.policy, &args.registry, metrics.clone())?;
    let selection = crate::audit::Selection {
        namespace: args.namespace.clone(),
        selector: args.selector.clone(),
        kinds: args.kinds.clone(),
    };
    if args.cluster.mode == crate::config::ClusterMode::Off {
        anyhow::bail!("verdict audit judges what runs in a cluster: --cluster off leaves it none");
    }
    let report = runtime()?.block_on(async {
        let client = crate::cluster::client(args.cluster.kubeconfig.as_deref())
            .await?
            .context("verdict audit needs a cluster: --kubeconfig, KUBECONFIG or the in-cluster configuration")?;
        // The policies read the cluster as admission does: wait for the first copy.
        crate::setup::attach_cluster(client.clone(), &args.cluster, &policies, &reviewer, metrics);
        let waited = Instant::now();
        while let Some(why) = reviewer.inventory_gap(&policies.current()) {
            if waited.elapsed() > AUDIT_SYNC_WAIT {
                anyhow::bail!("the cluster's inventory did not sync within {AUDIT_SYNC_WAIT:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        crate::audit::audit(&client, &reviewer, &selection, Instant::now() + crate::audit::DEADLINE).await
    })?;
    print_report(&report, args.output)
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(None);
    let results = testing::run(&args.dir)?;
    print!("{}", testing::render(&results, args.verbose));
    let all_passed = results
        .iter()
        .all(|r| matches!(r.outcome, testing::Outcome::Pass | testing::Outcome::Skip));
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verify_bundle(args: &VerifyBundleArgs) -> anyhow::Result<ExitCode> {
    use crate::verify::bundle::{self, BundleTrust, Signer};
    use crate::verify::identity::{IdentityRule, Matcher};
    let trust = match (&args.trusted_root, args.staging) {
        (Some(path), _) => BundleTrust::from_trusted_root_json(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, true) => BundleTrust::staging(),
        (None, false) => BundleTrust::from_trusted_root_json(crate::verify::trust::PUBLIC_GOOD),
    }?;
    let keys;
    let rules;
    let signer = match (&args.key, &args.certificate_identity) {
        (Some(path), _) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            keys = crate::verify::imagepolicy::public_keys(&pem, None)?;
            Signer::Keys {
                keys: &keys,
                tlog: true,
            }
        }
        (None, identity) => {
            rules = [IdentityRule {
                subject: Matcher::Exact(identity.clone().unwrap_or_default()),
                issuer: args.certificate_oidc_issuer.clone().map(Matcher::Exact),
                claims: Vec::new(),
            }];
            Signer::Keyless(&rules)
        }
    };
    let bundle_json = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let blob;
    let artifact = if args.artifact.starts_with("sha256:") {
        bundle::digest_artifact(&crate::images::Digest::parse(&args.artifact)?)?
    } else {
        blob =
            std::fs::read(&args.artifact).with_context(|| format!("reading {}", args.artifact))?;
        bundle::Artifact::from_blob(&blob)
    };
    let verified = bundle::parse(&bundle_json)
        .and_then(|bundle| bundle::verify(&trust, &bundle, artifact, &signer));
    match verified {
        Ok(proof) => {
            println!("verified: signed by {}", proof.identity);
            Ok(ExitCode::SUCCESS)
        }
        Err(rejection) => {
            eprintln!("rejected: [{}] {}", rejection.code, rejection.detail);
            Ok(ExitCode::from(1))
        }
    }
}

fn certs(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let certs = crate::certs::generate(&args.dns, &args.ip, args.days)?;
    crate::certs::write(&args.out, &certs)?;
    println!(
        "wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
