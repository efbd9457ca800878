//! The Kubernetes API: which cluster (in-cluster, `--kubeconfig`, `KUBECONFIG`, or none),
//! the synced inventory (`sync`, in the layout of `inventory`) and pull secrets (`secrets`).
//! Reviews never wait on a list or watch: they read the last document `sync` handed on; a
//! pull secret is read with `get` and kept briefly.

pub mod inventory;
pub mod secrets;
mod sync;

pub use inventory::{Document, Gvk, Place};
pub use secrets::PullSecrets;
pub use sync::{InventorySync, KindStatus, Publish};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::Path;

/// The client for the cluster verdict runs in or is pointed at: `kubeconfig` when given,
/// else the file(s) `KUBECONFIG` names, else the in-cluster configuration of a Pod. None
/// when there is none of them: verdict then runs without a cluster (`~/.kube/config` is
/// never read by itself, so a developer's machine does not grow a cluster by accident).
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Option<kube::Client>> {
    let options = KubeConfigOptions::default();
    let config = if let Some(path) = kubeconfig {
        let file = Kubeconfig::read_from(path)
            .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
        kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .with_context(|| format!("using --kubeconfig {}", path.display()))?
    } else if let Some(file) = Kubeconfig::from_env().context("reading KUBECONFIG")? {
        kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .context("using KUBECONFIG")?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().context("reading the in-cluster configuration")?
    } else {
        return Ok(None);
    };
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok(Some(client))
}
