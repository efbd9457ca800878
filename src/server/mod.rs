//! `verdict serve`: the TLS admission listener, the plain metrics listener, the reload
//! loop for policies and certificates, and graceful shutdown. Wiring only.

pub mod api;
mod guard;
pub mod tls;

use crate::cluster::InventorySync;
use crate::config::{ClusterMode, ServeConfig};
use crate::logging::DecisionLog;
use crate::metrics::Metrics;
use crate::policy::{PolicyStore, ReloadOutcome};
use anyhow::Context as _;
use api::AppState;
use axum::Router;
use guard::{Answers, Guarded, Tracked};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use prometheus::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tls::CertStore;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// How often the policies folder and certificate files are looked at.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);
/// A client must finish its TLS handshake and send the opening bytes of its first request
/// within this of connecting, and each later request's headers within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once on the metrics port (probes and scrapes need a few).
const MAX_METRICS_CONNECTIONS: usize = 64;

/// Everything a running server shares.
pub struct State {
    pub app: AppState,
    pub policies: Arc<PolicyStore>,
    pub certs: Arc<CertStore>,
}

/// Loads policies and certificates and builds the judge. Fails on anything unusable:
/// the server never starts half-configured.
pub fn build_state(config: &ServeConfig, log: DecisionLog) -> anyhow::Result<State> {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).context("registering metrics")?;
    log.count_dropped_lines_in(metrics.log_lines_dropped.clone());
    let certs = Arc::new(
        CertStore::load(&config.tls_cert, &config.tls_key)
            .context("loading the serving certificate")?,
    );
    let (policies, reviewer) =
        crate::setup::reviewer(&config.policy, &config.registry, metrics.clone())?;
    let reviewer = Arc::new(reviewer);
    set_expiry_gauges(&policies, &certs, &metrics);
    Ok(State {
        app: AppState {
            reviewer,
            metrics,
            registry,
            log,
            read_timeout: config.read_timeout,
            dry_runs: Arc::new(tokio::sync::Semaphore::new(api::MAX_DRY_RUNS)),
            large_reviews: Arc::new(tokio::sync::Semaphore::new(api::MAX_LARGE_REVIEWS)),
        },
        policies,
        certs,
    })
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish within `config.shutdown_timeout`, and returns.
pub async fn serve(
    config: ServeConfig,
    log: DecisionLog,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let state = build_state(&config, log)?;
    let admission = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding {}", config.metrics_listen))?;
    let tls = TlsAcceptor::from(Arc::new(tls::server_config(state.certs.clone())?));
    tracing::info!(
        admission = %admission.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        policies = state.policies.status().files.len(),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "listening"
    );

    let (client, inventory) = start_inventory(&config, &state).await?.unzip();
    let (audit_stop, audit_stopped) = watch::channel(false);
    let audit = match (config.audit_interval.filter(|d| !d.is_zero()), client) {
        (Some(interval), Some(client)) => Some(tokio::spawn(crate::audit::background::run(
            client,
            state.app.reviewer.clone(),
            state.app.metrics.clone(),
            interval,
            audit_stopped,
        ))),
        (Some(_), None) => anyhow::bail!(
            "--audit-interval audits a cluster, and there is none: give --kubeconfig, \
             KUBECONFIG or run in a cluster (and not --cluster off)"
        ),
        (None, _) => None,
    };
    let reload = tokio::spawn(reload_loop(
        state.policies.clone(),
        state.certs.clone(),
        state.app.metrics.clone(),
        inventory,
    ));
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Limits {
        connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
        handshakes: Arc::new(Semaphore::new(config.max_handshakes.max(1))),
        stall: config.stall_timeout.max(Duration::from_secs(1)),
        gauges: Some((
            state.app.metrics.connections.clone(),
            state.app.metrics.handshakes.clone(),
        )),
    };
    let admission_loop = tokio::spawn(accept_loop(
        admission,
        Some(tls),
        api::admission_router(state.app.clone()),
        graceful.clone(),
        stop_rx.clone(),
        limits.clone(),
    ));
    let metrics_loop = tokio::spawn(accept_loop(
        metrics_listener,
        None,
        api::metrics_router(state.app),
        graceful.clone(),
        stop_rx,
        Limits {
            connections: Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS)),
            gauges: None,
            ..limits
        },
    ));

    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight reviews");
    let _ = stop_tx.send(true);
    let _ = admission_loop.await;
    let _ = metrics_loop.await;
    reload.abort();
    // The audit stops and releases its Lease, so another replica takes it at once.
    let _ = audit_stop.send(true);
    if let Some(audit) = audit {
        let _ = tokio::time::timeout(Duration::from_secs(5), audit).await;
    }
    // The accept loops have returned, so this is the last handle.
    let drained = match Arc::try_unwrap(graceful) {
        Ok(graceful) => tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
            .await
            .is_ok(),
        Err(_) => false,
    };
    if !drained {
        tracing::warn!(timeout = ?config.shutdown_timeout, "some connections were still open at the shutdown deadline");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Bounds on the connections of one listener.
#[derive(Clone)]
struct Limits {
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    /// One permit per TLS handshake in progress.
    handshakes: Arc<Semaphore>,
    /// See `ServeConfig::stall_timeout`.
    stall: Duration,
    /// Gauges of open connections and handshakes in progress.
    gauges: Option<(prometheus::IntGauge, prometheus::IntGauge)>,
}

/// Holds one up on a gauge while it lives.
struct Counted(Option<prometheus::IntGauge>);

impl Counted {
    fn new(gauge: Option<&prometheus::IntGauge>) -> Self {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        Self(gauge.cloned())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.stall / 2));
    loop {
        // At the cap, nothing is accepted: new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = limits.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let (router, builder, watcher, tls, limits) = (
            router.clone(),
            builder.clone(),
            graceful.watcher(),
            tls.clone(),
            limits.clone(),
        );
        tokio::spawn(async move {
            let _connection = (permit, Counted::new(limits.gauges.as_ref().map(|g| &g.0)));
            let stall = limits.stall;
            let result = match tls {
                Some(tls) => {
                    let handshake = async {
                        let _turn = limits.handshakes.acquire().await;
                        let _counted = Counted::new(limits.gauges.as_ref().map(|g| &g.1));
                        tls.accept(stream).await
                    };
                    match tokio::time::timeout_at(deadline, handshake).await {
                        Ok(Ok(stream)) => {
                            serve_http(stream, deadline, stall, router, &builder, watcher).await
                        }
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_http(stream, deadline, stall, router, &builder, watcher).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP on an accepted connection (after its TLS handshake, if any) under the
/// connection guard, until it ends or the server shuts down. Every answer is tracked until
/// the client takes it (see `guard`).
async fn serve_http<S>(
    stream: S,
    opening_by: tokio::time::Instant,
    stall: Duration,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Request = axum::http::Request<hyper::body::Incoming>;
    let answers = Arc::new(Answers::default());
    let stream = TokioIo::new(Guarded::new(stream, opening_by, stall, answers.clone()));
    let router = tower::ServiceExt::<Request>::map_response(
        router,
        move |response: axum::response::Response| {
            response.map(|body| axum::body::Body::new(Tracked::new(body, answers.clone())))
        },
    );
    let service = TowerToHyperService::new(router);
    watcher
        .watch(builder.serve_connection(stream, service).into_owned())
        .await
}

/// With a cluster (`--cluster auto` and a kubeconfig or in-cluster configuration), starts
/// syncing the inventory into the policies and has the reviewer deny until it is synced.
async fn start_inventory(
    config: &ServeConfig,
    state: &State,
) -> anyhow::Result<Option<(kube::Client, Arc<InventorySync>)>> {
    if config.cluster.mode == ClusterMode::Off {
        return Ok(None);
    }
    let Some(client) = crate::cluster::client(config.cluster.kubeconfig.as_deref()).await? else {
        return Ok(None);
    };
    let sync = crate::setup::attach_cluster(
        client.clone(),
        &config.cluster,
        &state.policies,
        &state.app.reviewer,
        state.app.metrics.clone(),
    );
    tracing::info!("syncing the cluster inventory");
    Ok(Some((client, sync)))
}

/// Polls the policies folder and certificate files. Polling, rather than inotify, sees
/// a ConfigMap's `..data` symlink swap and a Secret update the same way as a plain edit.
/// The kinds the new policies sync are synced from then on.
async fn reload_loop(
    policies: Arc<PolicyStore>,
    certs: Arc<CertStore>,
    metrics: Metrics,
    inventory: Option<Arc<InventorySync>>,
) {
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (p, c, sync) = (policies.clone(), certs.clone(), inventory.clone());
        let reloaded = move || {
            let outcome = p.reload();
            // The kinds the new policies sync are synced from then on (off the workers:
            // it may wait for the inventory being handed on).
            if let (ReloadOutcome::Reloaded, Some(sync)) = (&outcome, &sync) {
                sync.set_kinds(&p.current().sync_kinds);
            }
            (outcome, c.reload())
        };
        let Ok((policy_outcome, cert_outcome)) = tokio::task::spawn_blocking(reloaded).await else {
            continue;
        };
        match policy_outcome {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Reloaded => {
                metrics.policy_reloads.with_label_values(&["success"]).inc();
                set_expiry_gauges(&policies, &certs, &metrics);
                let status = policies.status();
                tracing::info!(
                    revision = status.revision,
                    files = status.files.len(),
                    "policies reloaded"
                );
            }
            ReloadOutcome::Failed(e) => {
                metrics.policy_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "policies changed but cannot be used; the previous policies stay live");
            }
        }
        match cert_outcome {
            None => {}
            Some(Ok(())) => {
                metrics.tls_reloads.with_label_values(&["success"]).inc();
                set_expiry_gauges(&policies, &certs, &metrics);
                tracing::info!("serving certificate reloaded");
            }
            Some(Err(e)) => {
                metrics.tls_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(error = %e, "new certificate files cannot be used; the previous certificate stays");
            }
        }
    }
}

/// Publishes when the serving certificate and the trust roots in use expire.
fn set_expiry_gauges(policies: &PolicyStore, certs: &CertStore, metrics: &Metrics) {
    if let Some(at) = certs.not_after() {
        metrics.serving_cert_expiry.set(at);
    }
    if let Some(at) = policies.trust_expiry() {
        metrics.trust_root_expiry.set(at);
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
