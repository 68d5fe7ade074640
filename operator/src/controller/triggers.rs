//! Reconcile requests from outside the controller's own watch of ProcessWatches: pod changes
//! and report arrivals. Requests for one watch collapse into one until the controller takes
//! them, so producers never block (a standby replica takes none) and memory is bounded by the
//! number of watches. The controller takes them at most once per [`BATCH_EVERY`]: a watch of
//! N pods on an interval T gets N/T reports a second, and each would otherwise cost a rebuild
//! of its status; the first request after a quiet spell is taken at once.
//!
//! Pod changes come from the operator's one pod reflector, after its store is updated, so a
//! reconcile never sees an older pod than the event that woke it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use procwatch_crds::ProcessWatch;
use tokio::sync::Notify;

use super::namespaces::PodNames;
use super::status::selects;
use crate::lock;
use crate::report::store::{FindingsStore, PodKey};

/// How often the controller takes the requests gathered meanwhile.
pub const BATCH_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Triggers {
    pending: Arc<Mutex<HashSet<ObjectRef<ProcessWatch>>>>,
    notify: Arc<Notify>,
}

impl Triggers {
    pub fn fire(&self, watches: impl IntoIterator<Item = ObjectRef<ProcessWatch>>) {
        let mut pending = lock(&self.pending);
        let before = pending.len();
        pending.extend(watches);
        if pending.len() > before {
            self.notify.notify_one();
        }
    }

    /// Takes the pending requests, sorted by name (for tests).
    #[cfg(test)]
    pub(crate) fn take(&self) -> Vec<ObjectRef<ProcessWatch>> {
        let mut pending: Vec<_> = lock(&self.pending).drain().collect();
        pending.sort_by(|a, b| a.name.cmp(&b.name));
        pending
    }

    /// The requests, for `Controller::reconcile_on`: each watch at most once per
    /// [`BATCH_EVERY`].
    pub fn stream(&self) -> impl Stream<Item = ObjectRef<ProcessWatch>> + Send + 'static {
        stream::unfold((self.clone(), false), |(triggers, taken)| async move {
            if taken {
                tokio::time::sleep(BATCH_EVERY).await;
            }
            loop {
                let batch: Vec<_> = lock(&triggers.pending).drain().collect();
                if !batch.is_empty() {
                    return Some((stream::iter(batch), (triggers, true)));
                }
                triggers.notify.notified().await;
            }
        })
        .flatten()
    }
}

/// Maps pod events to the watches that select the pod, now or before the change (a pod
/// relabelled out of a watch must still update that watch), and drops the findings of
/// deleted pods. Keeps the namespace index of the pod cache.
pub struct PodEvents {
    triggers: Triggers,
    watches: Store<ProcessWatch>,
    findings: FindingsStore,
    names: PodNames,
    selected_by: HashMap<PodKey, Vec<ObjectRef<ProcessWatch>>>,
    /// Pods seen during a relist; the others were deleted while the watch was down.
    relisted: Option<HashSet<PodKey>>,
}

impl PodEvents {
    pub fn new(
        triggers: Triggers,
        watches: Store<ProcessWatch>,
        findings: FindingsStore,
        names: PodNames,
    ) -> Self {
        PodEvents {
            triggers,
            watches,
            findings,
            names,
            selected_by: HashMap::new(),
            relisted: None,
        }
    }

    fn selecting(&self, pod: &Pod) -> Vec<ObjectRef<ProcessWatch>> {
        self.watches
            .state()
            .iter()
            .filter(|watch| selects(watch, pod))
            .map(|watch| ObjectRef::from_obj(&**watch))
            .collect()
    }

    pub fn handle(&mut self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => {
                let key = PodKey::of(pod);
                self.names.insert(&key);
                let now = self.selecting(pod);
                let before = self.selected_by.remove(&key).unwrap_or_default();
                self.triggers
                    .fire(before.into_iter().chain(now.iter().cloned()));
                if !now.is_empty() {
                    self.selected_by.insert(key, now);
                }
            }
            watcher::Event::Delete(pod) => {
                let key = PodKey::of(pod);
                self.names.remove(&key);
                let before = self.selected_by.remove(&key).unwrap_or_default();
                self.triggers
                    .fire(before.into_iter().chain(self.selecting(pod)));
                self.findings.remove(&key);
            }
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                let key = PodKey::of(pod);
                self.names.insert(&key);
                let now = self.selecting(pod);
                if let Some(seen) = &mut self.relisted {
                    seen.insert(key.clone());
                }
                // After a relist the controller reconciles every watch anyway.
                if now.is_empty() {
                    self.selected_by.remove(&key);
                } else {
                    self.selected_by.insert(key, now);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisted.take() {
                    self.names.retain(&seen);
                    let gone: Vec<PodKey> = self
                        .selected_by
                        .keys()
                        .filter(|key| !seen.contains(*key))
                        .cloned()
                        .collect();
                    for key in gone {
                        if let Some(watches) = self.selected_by.remove(&key) {
                            self.triggers.fire(watches);
                        }
                        self.findings.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pod, watch};
    use crate::report::store::PodFindings;
    use futures::FutureExt;
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::reflector;

    fn drain(triggers: &Triggers) -> Vec<String> {
        triggers.take().into_iter().map(|r| r.name).collect()
    }

    #[tokio::test]
    async fn requests_for_one_watch_collapse() {
        let triggers = Triggers::default();
        let web = ObjectRef::<ProcessWatch>::new("web").within("shop");
        triggers.fire([web.clone(), web.clone()]);
        triggers.fire([web.clone()]);
        let mut stream = Box::pin(triggers.stream());
        assert_eq!(stream.next().now_or_never(), Some(Some(web)));
        assert_eq!(
            stream.next().now_or_never(),
            None,
            "nothing else is pending"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_taken_at_most_once_per_batch_interval() {
        let triggers = Triggers::default();
        let web = ObjectRef::<ProcessWatch>::new("web").within("shop");
        let mut stream = Box::pin(triggers.stream());
        triggers.fire([web.clone()]);
        assert_eq!(stream.next().await, Some(web.clone()), "the first at once");
        let taken = tokio::time::Instant::now();
        for _ in 0..10 {
            triggers.fire([web.clone()]);
        }
        assert_eq!(stream.next().await, Some(web.clone()), "ten become one");
        assert!(taken.elapsed() >= BATCH_EVERY);
        assert_eq!(stream.next().now_or_never(), None);
    }

    #[test]
    fn pod_changes_wake_the_watches_selecting_it_before_and_after() {
        let (store, mut writer) = reflector::store::<ProcessWatch>();
        let mut db = watch("db");
        db.spec.selector.match_labels = Some([("app".to_string(), "db".to_string())].into());
        writer.apply_watcher_event(&watcher::Event::Apply(watch("web")));
        writer.apply_watcher_event(&watcher::Event::Apply(db));
        let triggers = Triggers::default();
        let findings = FindingsStore::default();
        let mut events = PodEvents::new(
            triggers.clone(),
            store,
            findings.clone(),
            PodNames::default(),
        );

        events.handle(&watcher::Event::Apply(pod("p", "web", true)));
        assert_eq!(drain(&triggers), ["web"]);
        // Relabelled from web to db: both must recount.
        events.handle(&watcher::Event::Apply(pod("p", "db", true)));
        assert_eq!(drain(&triggers), ["db", "web"]);

        findings.insert(
            PodKey::new("shop", "p"),
            PodFindings {
                uid: "uid-p".into(),
                received_at: Timestamp::UNIX_EPOCH,
                containers: vec![],
                skipped: Default::default(),
                pids: None,
                detailed: true,
            },
        );
        events.handle(&watcher::Event::Delete(pod("p", "db", true)));
        assert_eq!(drain(&triggers), ["db"]);
        assert!(findings.is_empty(), "a deleted pod's findings are dropped");
    }

    #[test]
    fn pods_missing_from_a_relist_are_forgotten() {
        let (store, mut writer) = reflector::store::<ProcessWatch>();
        writer.apply_watcher_event(&watcher::Event::Apply(watch("web")));
        let triggers = Triggers::default();
        let findings = FindingsStore::default();
        let mut events = PodEvents::new(
            triggers.clone(),
            store,
            findings.clone(),
            PodNames::default(),
        );
        events.handle(&watcher::Event::Apply(pod("gone", "web", true)));
        events.handle(&watcher::Event::Apply(pod("kept", "web", true)));
        drain(&triggers);
        findings.insert(
            PodKey::new("shop", "gone"),
            PodFindings {
                uid: "uid-gone".into(),
                received_at: Timestamp::UNIX_EPOCH,
                containers: vec![],
                skipped: Default::default(),
                pids: None,
                detailed: true,
            },
        );
        events.handle(&watcher::Event::Init);
        events.handle(&watcher::Event::InitApply(pod("kept", "web", true)));
        events.handle(&watcher::Event::InitDone);
        assert_eq!(drain(&triggers), ["web"]);
        assert!(findings.is_empty());
    }
}
