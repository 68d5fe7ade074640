//! The status byte budget. A ProcessWatch lives in etcd, whose objects are limited to about
//! 1.5 MiB, and every watcher of it gets the whole object on each write; so the status is kept
//! under a hard budget (256 KiB by default), cutting the least useful detail first:
//!
//! 1. processes, the least busy first, always from the container that lists the most;
//! 2. per-container lists (libraries, unreadable facts, listening sockets, files);
//! 3. whole pods, the least busy first.
//!
//! Each container that lost something is marked `truncated: true`. The summary, the counts and
//! `needsRestart` are never cut: they are small and cover every pod.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use procwatch_crds::{ContainerReport, PodReport, ProcessInfo, ProcessWatchStatus};

/// Default budget: well under etcd's limit, small enough to watch and `kubectl get` quickly.
pub const DEFAULT_STATUS_BUDGET_BYTES: usize = 256 * 1024;

/// What [`fit`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cuts {
    pub processes: usize,
    /// Containers whose libraries, sockets, files or unreadable facts were dropped.
    pub container_details: usize,
    pub pods: usize,
    /// False when even without any detail the status exceeds the budget (a huge summary).
    pub fits: bool,
}

impl Cuts {
    pub fn any(&self) -> bool {
        self.processes + self.container_details + self.pods > 0
    }
}

/// Size of the status as JSON, as the API server stores it.
pub fn size(status: &ProcessWatchStatus) -> usize {
    json_len(status).unwrap_or(usize::MAX)
}

/// Bytes of `value` as JSON, counted as written: a status is measured several times while it
/// is fitted, and holding each rendering would cost its size in memory every time.
fn json_len(value: &impl serde::Serialize) -> Option<usize> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.0)
}

/// Busier processes sort first: CPU, then memory, then the lower pid for a stable order.
pub fn busiest_first(a: &ProcessInfo, b: &ProcessInfo) -> std::cmp::Ordering {
    b.cpu_millicores
        .cmp(&a.cpu_millicores)
        .then(b.memory_bytes.cmp(&a.memory_bytes))
        .then(a.pid.cmp(&b.pid))
}

/// Cuts `status` down to at most `budget` bytes of JSON.
pub fn fit(status: &mut ProcessWatchStatus, budget: usize) -> Cuts {
    let mut cuts = Cuts::default();
    let mut current = size(status);
    if current <= budget {
        cuts.fits = true;
        return cuts;
    }
    // Measured before any cut, so pods are ranked by what they really do.
    let activity: HashMap<String, (u64, u64, u64)> = status
        .pods
        .iter()
        .map(|pod| (pod.name.clone(), pod_activity(pod)))
        .collect();
    while current > budget && cut_processes(status, current - budget, &mut cuts) {
        current = size(status);
    }
    for clear in DETAIL_CUTS {
        if current <= budget {
            break;
        }
        for pod in &mut status.pods {
            for container in &mut pod.containers {
                if clear(container) {
                    container.truncated = true;
                    cuts.container_details += 1;
                }
            }
        }
        current = size(status);
    }
    if current > budget {
        drop_pods(status, budget, &activity, &mut cuts);
        current = size(status);
    }
    cuts.fits = current <= budget;
    cuts
}

/// Removes processes worth about `excess` bytes; false when there was nothing left to remove.
fn cut_processes(status: &mut ProcessWatchStatus, excess: usize, cuts: &mut Cuts) -> bool {
    // Largest lists first: each container keeps its busiest processes, and no container
    // loses everything while another still lists many.
    let mut heap = BinaryHeap::new();
    for (p, pod) in status.pods.iter_mut().enumerate() {
        for (c, container) in pod.containers.iter_mut().enumerate() {
            container.processes.sort_by(busiest_first);
            if !container.processes.is_empty() {
                heap.push((container.processes.len(), Reverse((p, c))));
            }
        }
    }
    let mut removed_bytes = 0;
    let mut removed_any = false;
    while removed_bytes < excess {
        let Some((len, Reverse((p, c)))) = heap.pop() else {
            break;
        };
        let container = &mut status.pods[p].containers[c];
        if let Some(process) = container.processes.pop() {
            // The element and the comma that separated it.
            removed_bytes += json_len(&process).unwrap_or(0) + 1;
            container.truncated = true;
            cuts.processes += 1;
            removed_any = true;
        }
        if len > 1 {
            heap.push((len - 1, Reverse((p, c))));
        }
    }
    removed_any
}

type DetailCut = fn(&mut ContainerReport) -> bool;

/// Per-container lists in the order they are dropped; each returns whether it removed anything.
const DETAIL_CUTS: [DetailCut; 4] = [
    |c| !std::mem::take(&mut c.libraries).is_empty(),
    |c| !std::mem::take(&mut c.unreadable).is_empty(),
    |c| !std::mem::take(&mut c.listening).is_empty(),
    |c| !std::mem::take(&mut c.files).is_empty(),
];

fn drop_pods(
    status: &mut ProcessWatchStatus,
    budget: usize,
    activity: &HashMap<String, (u64, u64, u64)>,
    cuts: &mut Cuts,
) {
    // Keep the busiest pods; drop from the least busy end, then restore the name order.
    status
        .pods
        .sort_by_key(|pod| Reverse(activity.get(&pod.name).copied().unwrap_or_default()));
    let mut current = size(status);
    while current > budget {
        let Some(pod) = status.pods.pop() else {
            break;
        };
        current = current.saturating_sub(json_len(&pod).unwrap_or(0) + 1);
        cuts.pods += 1;
        if current <= budget {
            current = size(status);
        }
    }
    status.pods.sort_by(|a, b| a.name.cmp(&b.name));
}

fn pod_activity(pod: &PodReport) -> (u64, u64, u64) {
    pod.containers
        .iter()
        .fold((0, 0, 0), |(cpu, memory, count), c| {
            // Saturating: the figures come from the agent.
            c.processes.iter().fold(
                (
                    cpu,
                    memory,
                    count.saturating_add(u64::from(c.process_count)),
                ),
                |(cpu, memory, count), p| {
                    (
                        cpu.saturating_add(p.cpu_millicores),
                        memory.saturating_add(p.memory_bytes),
                        count,
                    )
                },
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch_crds::{ContainerSummary, FileFingerprint, ListeningSocket, SocketProtocol};

    fn process(pid: i32, cpu: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            command: format!("worker-{pid}"),
            args: format!("/usr/bin/worker --id {pid} {}", "x".repeat(200)),
            cpu_millicores: cpu,
            memory_bytes: 1_000_000 + u64::try_from(pid).unwrap(),
            threads: 4,
            capabilities: vec!["CHOWN".into(), "SETUID".into(), "NET_BIND_SERVICE".into()],
            environment: (0..20).map(|i| format!("VARIABLE_{i}")).collect(),
            ..ProcessInfo::default()
        }
    }

    fn container(name: &str, processes: usize, cpu_base: u64) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            container_id: Some(format!("containerd://{}", "a".repeat(64))),
            process_count: u32::try_from(processes).unwrap(),
            cpu_millicores: 1000,
            memory_bytes: 1 << 30,
            processes: (0..processes)
                .map(|i| {
                    process(
                        i32::try_from(i).unwrap() + 2,
                        cpu_base + u64::try_from(i % 50).unwrap(),
                    )
                })
                .collect(),
            listening: vec![ListeningSocket {
                protocol: SocketProtocol::Tcp,
                address: Some("0.0.0.0:80".into()),
                path: None,
                reachable_at: None,
                pid: Some(2),
            }],
            files: vec![FileFingerprint {
                path: "/etc/app.conf".into(),
                size: 10,
                mode: "0644".into(),
                sha256: "f".repeat(64),
            }],
            libraries: (0..50).map(|i| format!("/usr/lib/lib{i}.so.1")).collect(),
            truncated: false,
            unreadable: vec!["environ of pid 41: permission denied".into()],
        }
    }

    fn pod(name: &str, containers: Vec<ContainerReport>) -> PodReport {
        PodReport {
            name: name.into(),
            uid: Some("uid".into()),
            node_name: Some("node".into()),
            reported_at: None,
            containers,
            ..PodReport::default()
        }
    }

    fn big_status(pods: usize, containers: usize, processes: usize) -> ProcessWatchStatus {
        ProcessWatchStatus {
            summary: vec![ContainerSummary {
                container: "app".into(),
                pods: u32::try_from(pods).unwrap(),
                ..ContainerSummary::default()
            }],
            pods: (0..pods)
                .map(|p| {
                    pod(
                        &format!("pod-{p:03}"),
                        (0..containers)
                            .map(|c| {
                                container(&format!("c{c}"), processes, u64::try_from(p).unwrap())
                            })
                            .collect(),
                    )
                })
                .collect(),
            ..ProcessWatchStatus::default()
        }
    }

    #[test]
    fn small_status_is_untouched() {
        let mut status = big_status(2, 1, 3);
        let before = status.clone();
        let cuts = fit(&mut status, DEFAULT_STATUS_BUDGET_BYTES);
        assert_eq!(status, before);
        assert!(!cuts.any());
        assert!(cuts.fits);
    }

    #[test]
    fn hundred_pods_of_two_hundred_processes_fit_and_keep_the_busiest() {
        // 100 pods x 3 containers x 200 processes: about 40 MB of JSON before the cut.
        let mut status = big_status(100, 3, 200);
        assert!(size(&status) > 20 * DEFAULT_STATUS_BUDGET_BYTES);
        let cuts = fit(&mut status, DEFAULT_STATUS_BUDGET_BYTES);
        assert!(cuts.fits, "{cuts:?}");
        assert!(size(&status) <= DEFAULT_STATUS_BUDGET_BYTES);
        assert!(cuts.processes > 0);
        assert_eq!(status.summary.len(), 1, "the summary is never cut");
        for pod in &status.pods {
            for container in &pod.containers {
                assert!(container.truncated, "{}/{}", pod.name, container.name);
                assert_eq!(container.process_count, 200, "the count stays true");
                let cpus: Vec<u64> = container
                    .processes
                    .iter()
                    .map(|p| p.cpu_millicores)
                    .collect();
                assert!(
                    cpus.windows(2).all(|w| w[0] >= w[1]),
                    "busiest first: {cpus:?}"
                );
                if let Some(least) = cpus.last() {
                    // Everything dropped was at most as busy as the least busy kept.
                    assert!(
                        *least >= u64::try_from(pod.name[4..].parse::<usize>().unwrap()).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn processes_are_cut_evenly_across_containers() {
        let mut status = ProcessWatchStatus {
            pods: vec![pod(
                "a",
                vec![container("big", 100, 0), container("small", 5, 0)],
            )],
            ..ProcessWatchStatus::default()
        };
        let budget = size(&status) / 2;
        fit(&mut status, budget);
        let containers = &status.pods[0].containers;
        assert_eq!(
            containers[1].processes.len(),
            5,
            "the short list is untouched"
        );
        assert!(!containers[1].truncated);
        assert!(containers[0].truncated);
        assert!(containers[0].processes.len() < 100);
    }

    #[test]
    fn details_then_pods_go_when_processes_are_not_enough() {
        let mut status = big_status(40, 2, 0);
        let one_pod = size(&big_status(1, 2, 0));
        let cuts = fit(&mut status, 10 * one_pod);
        assert!(cuts.fits);
        assert!(cuts.container_details > 0);
        assert!(
            status
                .pods
                .iter()
                .flat_map(|p| &p.containers)
                .all(|c| c.truncated && c.libraries.is_empty())
        );
        // Detail alone made room for more than ten pods; whatever is over is whole pods.
        assert!(status.pods.len() >= 10);
        assert_eq!(status.pods.len() + cuts.pods, 40);
        let names: Vec<&str> = status.pods.iter().map(|p| p.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "pods stay in name order");
    }

    #[test]
    fn least_busy_pods_are_dropped_first() {
        let mut status = big_status(20, 1, 1);
        fit(&mut status, size(&big_status(20, 1, 0)) / 10);
        let kept = status.pods.len();
        assert!(kept > 0 && kept < 20);
        // cpu grows with the pod number, so the survivors are the highest numbers.
        let expected: Vec<String> = (20 - kept..20).map(|p| format!("pod-{p:03}")).collect();
        let names: Vec<String> = status.pods.iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn an_impossible_budget_is_reported() {
        let mut status = big_status(3, 1, 3);
        let cuts = fit(&mut status, 10);
        assert!(!cuts.fits);
        assert!(status.pods.is_empty());
    }
}
