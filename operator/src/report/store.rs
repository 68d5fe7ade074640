//! The latest findings of every reporting pod: one entry per pod, replaced by each report and
//! dropped when the pod is deleted, so memory stays bounded by the pods that run an agent.
//!
//! Only the pods a status lists in detail keep their whole report; every other pod keeps what
//! the summary, the counts and the metrics need ([`compact`]): a few hundred bytes per
//! container instead of its processes' arguments, environments, capabilities, sockets and
//! libraries. Which pods those are, each watch's last reconcile says ([`FindingsStore::list`]);
//! a pod that would enter a watch's list keeps its detail from its first report on, and takes
//! its place in the list at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use procwatch_crds::report::PidCursor;
use procwatch_crds::{ContainerReport, ProcessInfo, ProcessWatch, SkippedProcesses};

use crate::controller::status::{container_totals, stale_after};
use crate::{read, write};

/// A pod by namespace and name, as reports and the pod cache name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        PodKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The key of a pod from the cache.
    pub fn of(pod: &Pod) -> Self {
        PodKey {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
        }
    }
}

/// A watch by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    pub namespace: String,
    pub name: String,
}

impl WatchKey {
    pub fn of(watch: &ProcessWatch) -> Self {
        WatchKey {
            namespace: watch.namespace().unwrap_or_default(),
            name: watch.name_any(),
        }
    }
}

/// The pods one watch lists in detail: the first `max_pods` reporting pods by name.
#[derive(Clone, Debug, Default, PartialEq)]
struct Listing {
    pods: BTreeSet<String>,
    max_pods: usize,
}

impl Listing {
    /// Whether `pod` is listed or would be, were it reporting: the list has room, or the pod
    /// sorts before its last entry.
    fn would_list(&self, pod: &str) -> bool {
        self.pods.len() < self.max_pods
            || self.pods.contains(pod)
            || self.pods.last().is_some_and(|last| pod < last.as_str())
    }

    /// Takes `pod` into the list if it would be listed, ahead of the watch's next reconcile,
    /// pushing out the last entry when full; whether it is listed. A burst of first reports
    /// then keeps about `max_pods` of them whole per watch, not every one that came before
    /// the reconcile.
    fn claim(&mut self, pod: &str) -> bool {
        if !self.would_list(pod) {
            return false;
        }
        if self.pods.insert(pod.to_string()) && self.pods.len() > self.max_pods {
            self.pods.pop_last();
        }
        true
    }
}

/// One pod's last report, its containers already named from the pod's statuses.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFindings {
    /// The pod the report came from; a pod recreated under the same name has another uid.
    pub uid: String,
    /// When the operator received it, by the operator's clock (agents' clocks may drift).
    pub received_at: Timestamp,
    pub containers: Vec<ContainerReport>,
    pub skipped: SkippedProcesses,
    /// The last pid allocated in the pod's PID namespace at the scan, when the agent sent it.
    pub pids: Option<PidCursor>,
    /// The containers are as reported; otherwise [`compact`]: not for a status's pod detail.
    pub detailed: bool,
}

impl PodFindings {
    /// Whether a status built from `other` shows what one built from these shows, but for
    /// times and pid counts (which move with every report and are refreshed on their own
    /// schedule).
    fn shows_the_same(&self, other: &PodFindings) -> bool {
        self.uid == other.uid
            && self.detailed == other.detailed
            && self.skipped == other.skipped
            && self.containers == other.containers
    }
}

/// What keeping a report changed, for the watches selecting its pod to tell whether they have
/// anything to look at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kept {
    /// The findings differ from the pod's previous ones, or it had none.
    pub changed: bool,
    pub previous_at: Option<Timestamp>,
    pub received_at: Timestamp,
}

impl Kept {
    /// Whether `watch` should be reconciled for this report: it changed what the pod shows, or
    /// it ends a silence long enough for the watch to have called the pod stale. Otherwise the
    /// watch's periodic reconcile, once per interval, takes the new times and pid counts: at
    /// rest every report would cost a status rebuild for nothing.
    pub fn concerns(&self, watch: &ProcessWatch) -> bool {
        self.changed
            || self.previous_at.is_none_or(|previous| {
                self.received_at.duration_since(previous).unsigned_abs() >= stale_after(watch)
            })
    }
}

#[derive(Clone, Default)]
pub struct FindingsStore {
    pods: Arc<RwLock<HashMap<PodKey, Arc<PodFindings>>>>,
    listings: Arc<RwLock<HashMap<WatchKey, Listing>>>,
}

impl FindingsStore {
    /// Keeps `findings` as the pod's latest: whole when one of `watches` (those selecting the
    /// pod) lists it, would, or judges every process; else [`compact`].
    pub fn keep<'a>(
        &self,
        pod: PodKey,
        mut findings: PodFindings,
        watches: impl IntoIterator<Item = &'a ProcessWatch>,
    ) -> Kept {
        findings.detailed = self.claim_detail(&pod, watches);
        if !findings.detailed {
            findings.containers = compact(findings.containers);
        }
        let findings = Arc::new(findings);
        let previous = write(&self.pods).insert(pod, findings.clone());
        Kept {
            changed: previous
                .as_deref()
                .is_none_or(|previous| !previous.shows_the_same(&findings)),
            previous_at: previous.map(|previous| previous.received_at),
            received_at: findings.received_at,
        }
    }

    /// Whether one of `watches` judges every process of every pod it selects, or lists the pod
    /// or would; each watch that would list it takes it into its list ([`Listing::claim`]).
    pub fn claim_detail<'a>(
        &self,
        pod: &PodKey,
        watches: impl IntoIterator<Item = &'a ProcessWatch>,
    ) -> bool {
        let mut listings = write(&self.listings);
        let mut detailed = false;
        for watch in watches {
            let listing = listings
                .entry(WatchKey::of(watch))
                .or_insert_with(|| Listing {
                    pods: BTreeSet::new(),
                    max_pods: usize::try_from(watch.spec.report.max_pods).unwrap_or(usize::MAX),
                });
            detailed |= listing.claim(&pod.name) || judges_every_process(watch);
        }
        detailed
    }

    /// What `watch` lists in detail now (its first `max_pods` reporting pods by name), for
    /// the next reports to keep their detail or not.
    pub fn list(&self, watch: WatchKey, pods: BTreeSet<String>, max_pods: usize) {
        write(&self.listings).insert(watch, Listing { pods, max_pods });
    }

    /// Forgets what a deleted watch listed.
    pub fn forget_watch(&self, watch: &WatchKey) {
        write(&self.listings).remove(watch);
    }

    pub fn insert(&self, pod: PodKey, findings: PodFindings) {
        write(&self.pods).insert(pod, Arc::new(findings));
    }

    pub fn get(&self, pod: &PodKey) -> Option<Arc<PodFindings>> {
        read(&self.pods).get(pod).cloned()
    }

    pub fn contains(&self, pod: &PodKey) -> bool {
        read(&self.pods).contains_key(pod)
    }

    pub fn remove(&self, pod: &PodKey) {
        write(&self.pods).remove(pod);
    }

    pub fn len(&self) -> usize {
        read(&self.pods).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `watch` needs every selected pod's processes whole, listed or not: its expectations
/// and its process events judge each report's processes, users, sockets and capabilities.
fn judges_every_process(watch: &ProcessWatch) -> bool {
    !watch.spec.expect.is_empty() || !watch.spec.report.process_events.is_none()
}

/// What the summary, the counts and the metrics read of a container, and no more: its name,
/// ID, counts and totals (the listed processes' figures added in), each distinct command once
/// (as a process with only its command and the pid of its first process: a status keys
/// processes by pid) and its file fingerprints; not the processes' detail, sockets, libraries
/// or notes.
pub fn compact(containers: Vec<ContainerReport>) -> Vec<ContainerReport> {
    containers
        .into_iter()
        .map(|container| {
            let (cpu_millicores, memory_bytes) = container_totals(&container);
            let mut commands: BTreeMap<String, i32> = BTreeMap::new();
            for process in container.processes {
                commands.entry(process.command).or_insert(process.pid);
            }
            ContainerReport {
                name: container.name,
                container_id: container.container_id,
                process_count: container.process_count,
                cpu_millicores,
                memory_bytes,
                processes: commands
                    .into_iter()
                    .map(|(command, pid)| ProcessInfo {
                        pid,
                        command,
                        ..ProcessInfo::default()
                    })
                    .collect(),
                listening: Vec::new(),
                files: container.files,
                libraries: Vec::new(),
                truncated: container.truncated,
                unreadable: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{nginx, process, watch};

    fn reported(containers: Vec<ContainerReport>) -> PodFindings {
        PodFindings {
            uid: "u".into(),
            received_at: Timestamp::UNIX_EPOCH,
            containers,
            skipped: Default::default(),
            pids: None,
            detailed: true,
        }
    }

    fn container() -> ContainerReport {
        let processes = vec![
            process(1, "nginx", 5),
            process(2, "nginx", 3),
            process(3, "sh", 1),
        ];
        nginx(processes, "sha")
    }

    #[test]
    fn one_entry_per_pod_replaced_and_removed() {
        let store = FindingsStore::default();
        let key = PodKey::new("shop", "web-1");
        let findings = |uid: &str| PodFindings {
            uid: uid.into(),
            received_at: Timestamp::UNIX_EPOCH,
            containers: vec![],
            skipped: Default::default(),
            pids: None,
            detailed: true,
        };
        store.insert(key.clone(), findings("a"));
        store.insert(key.clone(), findings("b"));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&key).unwrap().uid, "b");
        store.remove(&key);
        assert!(store.is_empty());
    }

    #[test]
    fn detail_only_for_pods_a_watch_lists_or_would() {
        let store = FindingsStore::default();
        let web = watch("web");
        let pod = |name: &str| PodKey::new("shop", name);
        // Not reconciled yet: the first pods take the list's room.
        assert!(store.claim_detail(&pod("web-9"), [&web]));
        store.list(
            WatchKey::of(&web),
            ["web-2".to_string(), "web-5".to_string()].into(),
            2,
        );
        assert!(store.claim_detail(&pod("web-2"), [&web]));
        assert!(
            store.claim_detail(&pod("web-1"), [&web]),
            "sorts before web-5, which leaves the list"
        );
        assert!(!store.claim_detail(&pod("web-5"), [&web]));
        assert!(!store.claim_detail(&pod("web-9"), [&web]));
        store.keep(pod("web-9"), reported(vec![container()]), [&web]);
        let kept = store.get(&pod("web-9")).unwrap();
        assert!(!kept.detailed);
        assert_eq!(kept.containers, compact(vec![container()]));
        // Room in the list again: detail.
        store.list(WatchKey::of(&web), ["web-2".to_string()].into(), 2);
        assert!(store.claim_detail(&pod("web-9"), [&web]));
    }

    #[test]
    fn a_burst_of_first_reports_keeps_max_pods_whole_per_watch() {
        let store = FindingsStore::default();
        let mut web = watch("web");
        web.spec.report.max_pods = 10;
        // 100 pods report before the watch's first reconcile, in no order of their names.
        let names: Vec<String> = (0..100)
            .map(|i| format!("web-{:03}", i * 37 % 100))
            .collect();
        let whole = names
            .iter()
            .filter(|name| {
                store.keep(
                    PodKey::new("shop", name),
                    reported(vec![container()]),
                    [&web],
                );
                store.get(&PodKey::new("shop", name)).unwrap().detailed
            })
            .count();
        // Each pod that entered the list stays whole until its next report; past the first 10,
        // entering takes sorting before the list's last entry.
        assert!((10..=40).contains(&whole), "{whole} of 100 kept whole");
        let listed: Vec<String> = read(&store.listings)[&WatchKey::of(&web)]
            .pods
            .iter()
            .cloned()
            .collect();
        let mut first: Vec<String> = names.clone();
        first.sort();
        first.truncate(10);
        assert_eq!(
            listed, first,
            "the first 10 by name, as a reconcile would list"
        );
    }

    #[test]
    fn watches_that_judge_processes_keep_every_pod_whole() {
        let store = FindingsStore::default();
        let full = ["web-1".to_string()].into();
        let mut expecting = watch("expecting");
        expecting.spec.expect = vec![Default::default()];
        let mut announcing = watch("announcing");
        announcing.spec.report.process_events = procwatch_crds::ProcessEvents::New;
        for judging in [&expecting, &announcing] {
            store.list(WatchKey::of(judging), BTreeSet::clone(&full), 1);
            store.keep(
                PodKey::new("shop", "web-9"),
                reported(vec![container()]),
                [judging],
            );
            let kept = store.get(&PodKey::new("shop", "web-9")).unwrap();
            assert!(kept.detailed, "{}", judging.name_any());
            assert_eq!(kept.containers, [container()]);
        }
    }

    #[test]
    fn only_reports_that_change_what_a_status_shows_or_end_a_silence_concern_a_watch() {
        let store = FindingsStore::default();
        let web = watch("web");
        let key = PodKey::new("shop", "web-1");
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).unwrap();
        let report = |second: i64, last_pid: u32, container: ContainerReport| PodFindings {
            received_at: at(second),
            pids: Some(PidCursor {
                last_pid,
                pid_max: None,
            }),
            ..reported(vec![container])
        };
        let first = store.keep(key.clone(), report(0, 400, container()), [&web]);
        assert_eq!(first.previous_at, None);
        assert!(first.changed && first.concerns(&web));

        // The same facts, a later time and a few pids more: nothing to rebuild a status for.
        let again = store.keep(key.clone(), report(15, 403, container()), [&web]);
        assert_eq!(again.previous_at, Some(at(0)));
        assert!(!again.changed && !again.concerns(&web));

        let mut busier = container();
        busier.processes[0].cpu_millicores += 1;
        assert!(
            store
                .keep(key.clone(), report(30, 404, busier.clone()), [&web])
                .concerns(&web)
        );

        // Silent for the watch's stale time: the watch may show the pod stale.
        let silence = i64::try_from(stale_after(&web).as_secs()).unwrap();
        let late = store.keep(key.clone(), report(30 + silence, 405, busier), [&web]);
        assert!(!late.changed && late.concerns(&web));

        // Another pod under the same name.
        let recreated = PodFindings {
            uid: "v".into(),
            ..report(31 + silence, 1, container())
        };
        assert!(store.keep(key, recreated, [&web]).changed);
    }

    #[test]
    fn compact_keeps_what_the_summary_and_metrics_read() {
        let full = container();
        let (cpu, memory) = container_totals(&full);
        let small = compact(vec![full.clone()]).remove(0);
        assert_eq!(
            (
                small.name.as_str(),
                small.process_count,
                small.cpu_millicores,
                small.memory_bytes
            ),
            (full.name.as_str(), full.process_count, cpu, memory)
        );
        assert_eq!(container_totals(&small), (cpu, memory));
        assert_eq!(small.files, full.files);
        let commands: BTreeSet<&str> = full.processes.iter().map(|p| p.command.as_str()).collect();
        let kept: Vec<&str> = small.processes.iter().map(|p| p.command.as_str()).collect();
        assert_eq!(kept, commands.into_iter().collect::<Vec<_>>());
        assert!(
            small
                .processes
                .iter()
                .all(|p| p.args.is_empty() && p.environment.is_empty())
        );
        assert!(small.listening.is_empty() && small.libraries.is_empty());
    }
}
