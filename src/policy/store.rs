//! The live policy set: loaded once, swapped atomically when the folder changes.
//! A set that fails to compile never replaces the working one.

use super::{PolicyError, PolicySet, PolicySources};
use crate::cluster::{Document, Gvk};
use crate::verify::trust::TrustRoot;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What one look at the folder did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded,
    /// The folder changed but cannot be used; the previous set stays live.
    Failed(PolicyError),
}

/// Shown on `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyStatus {
    pub revision: u64,
    pub files: Vec<String>,
    /// Why the newest folder contents are not live, if they are not.
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct PolicyStore {
    root: PathBuf,
    trust: Arc<TrustRoot>,
    current: ArcSwap<PolicySet>,
    /// The last folder contents tried, so an unchanged folder is not recompiled
    /// and a broken one is reported once.
    last_seen: Mutex<Result<PolicySources, PolicyError>>,
    last_error: ArcSwapOption<String>,
    revision: AtomicU64,
    /// The cluster's objects last handed over, put into every set made live; none without
    /// a cluster. Its lock is held while a set is made live, so a reload and a sync never
    /// undo each other.
    synced: Mutex<Option<(Document, BTreeSet<Gvk>)>>,
}

impl PolicyStore {
    /// `trust` is the keyless trust root for image policies that name none.
    pub fn load(root: &Path, trust: Arc<TrustRoot>) -> Result<Self, PolicyError> {
        let sources = PolicySources::read(root)?;
        let set = PolicySet::compile(&sources, &trust)?;
        Ok(Self {
            root: root.to_path_buf(),
            trust,
            current: ArcSwap::from_pointee(set),
            last_seen: Mutex::new(Ok(sources)),
            last_error: ArcSwapOption::empty(),
            revision: AtomicU64::new(1),
            synced: Mutex::new(None),
        })
    }

    /// The policies folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// When the first Fulcio CA certificate of the trust roots in use (the default one and
    /// those the image policies name) expires, in Unix seconds.
    pub fn trust_expiry(&self) -> Option<i64> {
        let current = self.current();
        let named = current
            .image_policies
            .iter()
            .flat_map(|p| &p.authorities)
            .filter_map(|a| match &a.kind {
                crate::verify::imagepolicy::AuthorityKind::Keyless { trust, .. } => {
                    trust.earliest_expiry()
                }
                crate::verify::imagepolicy::AuthorityKind::Key { .. } => None,
            });
        self.trust.earliest_expiry().into_iter().chain(named).min()
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Reads the folder and, if it changed, compiles and swaps in the new set.
    pub fn reload(&self) -> ReloadOutcome {
        let read = PolicySources::read(&self.root);
        let mut last_seen = lock(&self.last_seen);
        if *last_seen == read {
            return ReloadOutcome::Unchanged;
        }
        *last_seen = read.clone();
        let synced = lock(&self.synced);
        let compiled = read
            .and_then(|sources| PolicySet::compile(&sources, &self.trust))
            .and_then(|set| match &*synced {
                Some((doc, listed)) => set.with_inventory(doc, listed),
                None => Ok(set),
            });
        match compiled {
            Ok(set) => {
                self.current.store(Arc::new(set));
                self.revision.fetch_add(1, Ordering::Relaxed);
                self.last_error.store(None);
                ReloadOutcome::Reloaded
            }
            Err(e) => {
                self.last_error.store(Some(Arc::new(e.to_string())));
                ReloadOutcome::Failed(e)
            }
        }
    }

    /// Makes `synced` (the cluster's objects; `listed` the kinds whose first list it holds)
    /// what the policies see at `data.inventory`, from the next review on. The remembered
    /// decisions start over.
    pub fn set_inventory(
        &self,
        synced: &Document,
        listed: &BTreeSet<Gvk>,
    ) -> Result<(), PolicyError> {
        let mut held = lock(&self.synced);
        let set = self.current().with_inventory(synced, listed)?;
        self.current.store(Arc::new(set));
        *held = Some((synced.clone(), listed.clone()));
        Ok(())
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            revision: self.revision.load(Ordering::Relaxed),
            files: self.current().files.clone(),
            last_error: self.last_error.load_full().map(|e| e.to_string()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_old_policy_when_new_one_fails_to_compile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.rego");
        std::fs::write(&file, "package p\ndeny contains \"v1\" if true\n").expect("write");
        let store = PolicyStore::load(dir.path(), Arc::new(TrustRoot::default())).expect("loads");
        assert!(matches!(store.reload(), ReloadOutcome::Unchanged));

        std::fs::write(&file, "package p\ndeny contains \"v1\" if {\n").expect("write");
        assert!(matches!(store.reload(), ReloadOutcome::Failed(_)));
        assert!(
            matches!(store.reload(), ReloadOutcome::Unchanged),
            "a broken folder is reported once"
        );
        let status = store.status();
        assert_eq!(status.revision, 1);
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("p.rego")),
            "{status:?}"
        );
        let findings = store
            .current()
            .evaluate(
                regorus::Value::new_object().into(),
                std::time::Duration::from_secs(1),
            )
            .expect("old set still evaluates");
        assert_eq!(findings[0].message, "v1");

        std::fs::write(&file, "package p\ndeny contains \"v2\" if true\n").expect("write");
        assert!(matches!(store.reload(), ReloadOutcome::Reloaded));
        assert_eq!(store.status().revision, 2);
        assert_eq!(store.status().last_error, None);
    }
}
