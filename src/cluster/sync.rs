//! Keeping the inventory in step with the cluster: each synced kind is listed, then watched
//! (kube's watcher: relist on 410 Gone, backoff on errors), into one `Document` that is
//! handed on (debounced), with the kinds whose first list it holds, to whoever judges (the
//! judge tells from that whether it can). Reviews never wait here, they read the last
//! document handed on.

use super::inventory::{kept, Document, Gvk, Place};
use crate::metrics::Metrics;
use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Changes arriving within this of each other are handed on together.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the age and staleness gauges are brought up to date.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);
/// A failed list or watch is retried after this, doubling up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Hands a new inventory document, and the kinds whose first list it holds, to the judge;
/// an error keeps the judge's last one.
pub type Publish = Arc<dyn Fn(&Document, &BTreeSet<Gvk>) -> Result<(), String> + Send + Sync>;

/// One synced kind, as `/readyz` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindStatus {
    pub kind: String,
    /// Its first list has finished.
    pub synced: bool,
    pub objects: usize,
    /// Why it is not listed or watched right now, e.g. the API server's Forbidden.
    pub error: Option<String>,
    pub last_event_seconds_ago: Option<f64>,
}

struct Kind {
    task: JoinHandle<()>,
    listed: bool,
    /// Objects held, and the gauge that shows it.
    objects: usize,
    objects_gauge: prometheus::IntGauge,
    error: Option<String>,
    last_event: Option<Instant>,
    /// Since when it has been out of sync (not listed yet, or its watch failing).
    stale_since: Option<Instant>,
}

struct Inner {
    doc: Document,
    kinds: BTreeMap<Gvk, Kind>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    publish: Publish,
    metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running sync. Dropping it stops every watch.
pub struct InventorySync {
    client: kube::Client,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for InventorySync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySync").finish_non_exhaustive()
    }
}

impl InventorySync {
    /// Starts syncing Namespaces and `kinds`; `publish` gets every new document.
    pub fn start(client: kube::Client, metrics: Metrics, kinds: &[Gvk], publish: Publish) -> Self {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                doc: Document::default(),
                kinds: BTreeMap::new(),
            }),
            changed: Notify::new(),
            publish,
            metrics,
        });
        let tasks = vec![
            tokio::spawn(hand_on(shared.clone())),
            tokio::spawn(gauges(shared.clone())),
        ];
        let sync = Self {
            client,
            shared,
            tasks,
        };
        sync.set_kinds(kinds);
        sync
    }

    /// Syncs exactly Namespaces and `kinds` from now on: new kinds are listed and watched,
    /// kinds no longer named are stopped and their objects dropped.
    pub fn set_kinds(&self, kinds: &[Gvk]) {
        let wanted: BTreeSet<Gvk> = kinds.iter().cloned().chain([Gvk::namespace()]).collect();
        let mut inner = lock(&self.shared.inner);
        let gone: Vec<Gvk> = inner
            .kinds
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for gvk in gone {
            if let Some(kind) = inner.kinds.remove(&gvk) {
                kind.task.abort();
            }
            inner.doc.remove_kind(&gvk.api_version(), &gvk.kind);
            let label = gvk.to_string();
            let m = &self.shared.metrics;
            let _ = m.inventory_objects.remove_label_values(&[&label]);
            let _ = m.inventory_last_event_age.remove_label_values(&[&label]);
            let _ = m.inventory_stale.remove_label_values(&[&label]);
            self.shared.changed.notify_one();
        }
        for gvk in wanted {
            if inner.kinds.contains_key(&gvk) {
                continue;
            }
            let task = tokio::spawn(run_kind(
                self.shared.clone(),
                self.client.clone(),
                gvk.clone(),
            ));
            let objects_gauge = self
                .shared
                .metrics
                .inventory_objects
                .with_label_values(&[&gvk.to_string()]);
            inner.kinds.insert(
                gvk,
                Kind {
                    task,
                    listed: false,
                    objects: 0,
                    objects_gauge,
                    error: None,
                    last_event: None,
                    stale_since: Some(Instant::now()),
                },
            );
        }
    }

    /// Every synced kind and where it stands.
    pub fn status(&self) -> Vec<KindStatus> {
        let inner = lock(&self.shared.inner);
        inner
            .kinds
            .iter()
            .map(|(gvk, kind)| KindStatus {
                kind: gvk.to_string(),
                synced: kind.listed,
                objects: kind.objects,
                error: kind.error.clone(),
                last_event_seconds_ago: kind.last_event.map(|t| t.elapsed().as_secs_f64()),
            })
            .collect()
    }

    /// The kinds still to finish their first list, and why (the API server's error), if
    /// any: what a judge that lacks them says.
    pub fn waiting(&self) -> Option<String> {
        let waiting: Vec<String> = self
            .status()
            .into_iter()
            .filter(|k| !k.synced)
            .map(|k| match k.error {
                Some(e) => format!("{} ({e})", k.kind),
                None => k.kind,
            })
            .collect();
        (!waiting.is_empty())
            .then(|| format!("waiting for the first list of {}", waiting.join(", ")))
    }
}

impl Drop for InventorySync {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for kind in lock(&self.shared.inner).kinds.values() {
            kind.task.abort();
        }
    }
}

/// Hands the document on after each burst of changes. Handing on
/// rebuilds the policies' data (milliseconds with many objects, and it may wait for a reload
/// to finish compiling), so it runs on the blocking pool, never on a worker that serves
/// reviews.
async fn hand_on(shared: Arc<Shared>) {
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || publish_now(&shared)).await;
    }
}

fn publish_now(shared: &Shared) {
    let (doc, listed) = {
        let inner = lock(&shared.inner);
        let listed: BTreeSet<Gvk> = inner
            .kinds
            .iter()
            .filter(|(_, k)| k.listed)
            .map(|(gvk, _)| gvk.clone())
            .collect();
        (inner.doc.clone(), listed)
    };
    // On an error the judge keeps its last inventory, as when the API server is away.
    if let Err(e) = (shared.publish)(&doc, &listed) {
        tracing::error!(error = %e, "the synced inventory cannot be used");
    }
}

/// Keeps the age and staleness gauges current.
async fn gauges(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tick.tick().await;
        let inner = lock(&shared.inner);
        for (gvk, kind) in &inner.kinds {
            let label = gvk.to_string();
            if let Some(t) = kind.last_event {
                shared
                    .metrics
                    .inventory_last_event_age
                    .with_label_values(&[&label])
                    .set(t.elapsed().as_secs_f64());
            }
            let stale = kind.stale_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
            shared
                .metrics
                .inventory_stale
                .with_label_values(&[&label])
                .set(stale);
        }
    }
}

/// Lists and watches one kind for as long as it is synced. After an error the watch starts
/// over with a list (after a backoff), so its end is seen: the objects stay as they were
/// until that list has finished and replaces them.
async fn run_kind(shared: Arc<Shared>, client: kube::Client, gvk: Gvk) {
    let label = gvk.to_string();
    let restarts = shared
        .metrics
        .inventory_watch_restarts
        .with_label_values(&[&label]);
    let key = GroupVersionKind::gvk(&gvk.group, &gvk.version, &gvk.kind);
    let mut backoff = MIN_BACKOFF;
    loop {
        let error = match kube::discovery::pinned_kind(&client, &key).await {
            Ok((resource, _)) => {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                watch(&shared, &gvk, api, &restarts, &mut backoff).await
            }
            Err(e) => format!("discovery of {label} failed: {e}"),
        };
        restarts.inc();
        failed(&shared, &gvk, error);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One list-then-watch, until its first error (returned). A relist after 410 Gone happens
/// within (kube's watcher) and counts as a restart.
async fn watch(
    shared: &Shared,
    gvk: &Gvk,
    api: Api<DynamicObject>,
    restarts: &prometheus::IntCounter,
    backoff: &mut Duration,
) -> String {
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut listing: Option<Vec<(Place, serde_json::Value)>> = None;
    let mut lists = 0u64;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => {
                if lists > 0 {
                    restarts.inc();
                }
                listing = Some(Vec::new());
            }
            Ok(Event::InitApply(object)) => {
                if let (Some(list), Some(o)) = (&mut listing, object_of(gvk, &object)) {
                    list.push(o);
                }
            }
            Ok(Event::InitDone) => {
                lists += 1;
                *backoff = MIN_BACKOFF;
                let list = listing.take().unwrap_or_default();
                changed(shared, gvk, |kind, doc| {
                    doc.remove_kind(&gvk.api_version(), &gvk.kind);
                    kind.objects = 0;
                    for (place, object) in list {
                        kind.objects += usize::from(doc.insert(&place, object.into()));
                    }
                    kind.listed = true;
                });
            }
            Ok(Event::Apply(object)) => {
                if let Some((place, object)) = object_of(gvk, &object) {
                    changed(shared, gvk, |kind, doc| {
                        kind.objects += usize::from(doc.insert(&place, object.into()));
                    });
                }
            }
            Ok(Event::Delete(object)) => {
                if let Some((place, _)) = object_of(gvk, &object) {
                    changed(shared, gvk, |kind, doc| {
                        kind.objects -= usize::from(doc.remove(&place));
                    });
                }
            }
            Err(e) => return format!("listing or watching {gvk} failed: {e}"),
        }
    }
    format!("the watch of {gvk} ended")
}

/// Applies a change to one kind and its objects, records the event and wakes `hand_on`.
fn changed(shared: &Shared, gvk: &Gvk, change: impl FnOnce(&mut Kind, &mut Document)) {
    let mut inner = lock(&shared.inner);
    let Inner { doc, kinds } = &mut *inner;
    let Some(kind) = kinds.get_mut(gvk) else {
        return;
    };
    change(kind, doc);
    let now = Instant::now();
    kind.last_event = Some(now);
    if kind.listed {
        kind.error = None;
        kind.stale_since = None;
    }
    kind.objects_gauge.set(kind.objects as i64);
    shared.changed.notify_one();
}

fn failed(shared: &Shared, gvk: &Gvk, error: String) {
    tracing::warn!(kind = %gvk, error = %error, "inventory sync");
    let mut inner = lock(&shared.inner);
    if let Some(kind) = inner.kinds.get_mut(gvk) {
        kind.error = Some(error);
        kind.stale_since.get_or_insert_with(Instant::now);
    }
}

/// The object as the inventory keeps it, with `apiVersion` and `kind` set (list items come
/// without them).
fn object_of(gvk: &Gvk, object: &DynamicObject) -> Option<(Place, serde_json::Value)> {
    let mut value = serde_json::to_value(object).ok()?;
    let fields = value.as_object_mut()?;
    fields.insert("apiVersion".into(), gvk.api_version().into());
    fields.insert("kind".into(), gvk.kind.clone().into());
    let value = kept(value);
    Some((Place::of(&value)?, value))
}
