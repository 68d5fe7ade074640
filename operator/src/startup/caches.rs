//! The caches every replica keeps: ProcessWatches (read by the webhook, the report endpoint
//! and the pod mapping), pods, and namespace metadata (the Pod Security level each enforces).

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use procwatch_crds::ProcessWatch;

use super::Shared;
use crate::cached_pod;
use crate::controller::triggers::PodEvents;
use crate::health::{Part, Readiness};
use crate::pod_security::Namespaces;
use crate::report::store::WatchKey;

/// The longest pause between two tries of a failed watch. kube's default waits up to 30 s,
/// kind to a struggling API server; but the webhook admits pods from these caches, so after
/// an outage they must be current again within seconds. The pod and namespace lists are
/// served from the API server's watch cache (`any_semantic`), cheap to repeat, and the
/// ProcessWatches are few.
const MAX_WATCH_RETRY: Duration = Duration::from_secs(5);

/// How a cache retries a failed watch: from 800 ms, doubling, jittered, at most
/// [`MAX_WATCH_RETRY`] apart.
fn watch_retry() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(MAX_WATCH_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

#[derive(Clone)]
pub struct Caches {
    pub watches: Store<ProcessWatch>,
    pub pods: Store<Pod>,
    pub namespaces: Namespaces,
}

/// Starts both caches; each marks its part of readiness on its first full list.
pub fn start_caches(client: &Client, shared: &Shared) -> Caches {
    let (watches, watch_writer) = reflector::store::<ProcessWatch>();
    let watch_stream = watcher(
        Api::<ProcessWatch>::all(client.clone()),
        watcher::Config::default(),
    )
    .backoff(watch_retry())
    .reflect(watch_writer);
    tokio::spawn(follow_watches(watch_stream, shared.clone()));

    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = PodEvents::new(
        shared.triggers.clone(),
        watches.clone(),
        shared.findings.clone(),
        shared.pod_names.clone(),
    );
    tokio::spawn(watch_pods(
        client.clone(),
        pod_writer,
        pod_events,
        shared.readiness.clone(),
    ));
    let (namespaces, namespace_writer) = reflector::store();
    // Metadata only: the labels are all the webhook reads.
    let namespace_stream = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .backoff(watch_retry())
    .modify(|ns| ns.managed_fields_mut().clear())
    .reflect(namespace_writer)
    .for_each(|event| async move {
        if let Err(error) = event {
            tracing::warn!(%error, "namespace watch failed; retrying");
        }
    });
    tokio::spawn(namespace_stream);
    Caches {
        watches,
        pods,
        namespaces,
    }
}

/// Follows ProcessWatch events (the reflector keeps the cache) to forget deleted watches.
pub async fn follow_watches(
    stream: impl Stream<Item = Result<watcher::Event<ProcessWatch>, watcher::Error>>,
    shared: Shared,
) {
    let key = |watch: &ProcessWatch| (watch.namespace().unwrap_or_default(), watch.name_any());
    let mut relisted = HashSet::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Delete(watch)) => {
                let (namespace, name) = key(&watch);
                shared.memory.forget(&namespace, &name);
                shared.metrics.forget_watch(&namespace, &name);
                shared.findings.forget_watch(&WatchKey::of(&watch));
            }
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(watch)) => {
                relisted.insert(key(&watch));
            }
            // Watches deleted while the watch stream was down get no Delete event.
            Ok(watcher::Event::InitDone) => {
                shared.memory.retain(&relisted);
                shared.metrics.retain_watches(&relisted);
                if !shared.readiness.is_set(Part::WatchesSynced) {
                    shared.readiness.set(Part::WatchesSynced);
                    tracing::info!(watches = relisted.len(), "ProcessWatch cache synced");
                }
            }
            Ok(watcher::Event::Apply(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "ProcessWatch watch failed (is the CRD installed?); retrying")
            }
        }
    }
}

/// Fills the pod cache once the watches are listed (pods are mapped to watches from the
/// start).
async fn watch_pods(
    client: Client,
    writer: reflector::store::Writer<Pod>,
    pod_events: PodEvents,
    readiness: std::sync::Arc<Readiness>,
) {
    readiness.wait_for(&[Part::WatchesSynced]).await;
    let stream = watcher(
        Api::<Pod>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .backoff(watch_retry())
    // Only what the operator reads enters the store: every pod of the cluster is cached.
    .modify(cached_pod::trim)
    .reflect(writer);
    follow_pods(stream, pod_events, &readiness).await;
}

/// Turns pod events into reconcile triggers, and marks the pod cache synced on its first
/// full list.
pub async fn follow_pods(
    stream: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
    mut pod_events: PodEvents,
    readiness: &Readiness,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                pod_events.handle(&event);
                let first_sync = matches!(event, watcher::Event::InitDone)
                    && !readiness.is_set(Part::PodsSynced);
                if first_sync {
                    readiness.set(Part::PodsSynced);
                    tracing::info!("pod cache synced");
                }
            }
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
    }
}
